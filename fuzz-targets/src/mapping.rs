//! The mapping stage: third-party MQTT payloads (JSON of the device's own
//! shape, ChirpStack v4 LoRaWAN events) to frames
//! ([`mrv_gateway::mapping::MappingStage::handle`]), with the shipped
//! example mappings (`config/mappings/`) and one more that
//! takes its device id, time (Unix seconds) and sequence number from the
//! payload.
//!
//! Input: a topic choice byte, a flags byte (bit 0: a retained replay),
//! then the payload (for topic choice 5 or more: the topic up to the first
//! NUL byte, then the payload).

use mrv_gateway::mapping::stage::{MappingStage, Message, Outcome};
use mrv_gateway::mapping::{ValidMapping, parse_mappings};
use mrv_shared::ids::SiteId;
use mrv_shared::wire::binary;
use std::path::Path;
use std::sync::OnceLock;

const MAPPINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/mappings");

/// Takes device, time and sequence from the payload, as data loggers do.
const LOGGER: &str = r#"
[[mapping]]
id = "fuzz-logger"
topic = "site/logger/+"
device = { path = "$.dev" }
device_prefix = "lg-"
[mapping.timestamp]
path = "$.ts"
format = "unix_s"
max_skew_s = 600
[mapping.dedup]
sequence_path = "$.n"
window_s = 60
[[mapping.fields]]
channel = "flow"
path = "$.vals[0]"
quantity = "energy"
unit = "kWh"
kind = "counter"
[[mapping.fields]]
channel = "temp"
path = "$.vals[1]"
quantity = "power"
unit = "W"
min = -1000
max = 1000000
"#;

/// Topics the mappings' filters match.
const TOPICS: [&str; 5] = [
    "shellyplusplugs-e465b8b2f0c4/status/switch:0",
    "tele/plug-1/SENSOR",
    "site/logger/north",
    "application/app-1/device/a84041000181c0d3/event/up",
    "application/app-1/device/a84041000181c0d3/event/join",
];

/// Receipt time of every message: 2025-12-01T12:00:00Z.
pub const RECEIVED_MS: u64 = 1_764_590_400_000;

fn mappings() -> &'static Vec<ValidMapping> {
    static M: OnceLock<Vec<ValidMapping>> = OnceLock::new();
    M.get_or_init(|| {
        let mut all = Vec::new();
        for f in [
            "shelly_gen2_switch.toml",
            "tasmota_energy_plug.toml",
            "chirpstack_paddy_water_level.toml",
        ] {
            let p = Path::new(MAPPINGS).join(f);
            let text = std::fs::read_to_string(&p).expect("example mapping");
            all.extend(parse_mappings(&text, &p).expect("the example mapping is valid"));
        }
        all.extend(parse_mappings(LOGGER, Path::new("fuzz.toml")).expect("valid mapping"));
        all
    })
}

/// The body of the `mapping_payload` target.
pub fn payload(data: &[u8]) {
    let [choice, flags] = [
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ];
    let rest = data.get(2..).unwrap_or_default();
    let (topic, payload) = match TOPICS.get(usize::from(choice)) {
        Some(t) => (*t, rest),
        None => {
            let mut it = rest.splitn(2, |b| *b == 0);
            let t = it.next().unwrap_or_default();
            let Ok(t) = core::str::from_utf8(t) else {
                return;
            };
            (t, it.next().unwrap_or_default())
        }
    };
    let mut stage = MappingStage::new(SiteId::new("site-a").expect("valid id"), mappings().clone());
    let msg = Message {
        topic,
        payload,
        retained_replay: flags & 1 != 0,
        received_ms: RECEIVED_MS,
    };
    let outcome = stage.handle(&msg);
    let _ = stage.take_notices();
    match outcome {
        Outcome::Frame(m) => {
            assert_eq!(m.frame.seq, 0, "the writer gives the sequence number");
            let mut sequenced = m.frame.clone();
            sequenced.seq = 1;
            let frame = &sequenced;
            frame
                .validate()
                .expect("a mapped frame, once sequenced, is valid");
            assert_eq!(frame.site.as_str(), "site-a");
            let bin = binary::encode_frame(frame);
            assert_eq!(
                binary::decode_frame_exact(&bin).as_ref(),
                Ok(frame),
                "a mapped frame survives the binary wire form"
            );
            // The same message again is a duplicate of a pending store,
            // and after the store answered, of a stored frame.
            match stage.handle(&msg) {
                Outcome::Duplicate { pending, .. } => assert_eq!(pending.as_ref(), Some(&m.key)),
                other => panic!("a repeated message was not a duplicate: {other:?}"),
            }
            stage.settle(&m.key, true);
            match stage.handle(&msg) {
                Outcome::Duplicate { pending, .. } => assert_eq!(pending, None),
                other => panic!("a repeated stored message was not a duplicate: {other:?}"),
            }
        }
        Outcome::Rejected(r) => {
            assert!(!r.reason.is_empty() && !r.detail.is_empty(), "{r:?}");
        }
        Outcome::RetainedReplay { .. } => assert!(msg.retained_replay),
        Outcome::NotData { what, .. } => assert!(!what.is_empty()),
        Outcome::Duplicate { .. } => panic!("a first message is not a duplicate"),
        Outcome::NoMapping => assert!(!stage.handles(topic)),
    }
}
