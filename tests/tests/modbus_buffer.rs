//! Modbus frames enter the same durable buffer as MQTT frames, numbered by
//! the buffer: gap-free sequence numbers per device from 1, for good and
//! for all-unavailable polls alike, with the qualities kept.

use mrv_firmware::meters::{self, SimClock, SimMeter, din_meter::DinMeterParams};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use mrv_gateway::modbus::config::parse_section;
use mrv_gateway::modbus::spawn_pollers;
use mrv_gateway::modbus::status::ModbusStatus;
use mrv_shared::ids::SiteId;
use mrv_shared::reading::Quality;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[tokio::test]
async fn polls_are_stored_with_gap_free_gateway_sequence_numbers() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let meter = meters::serve(
        l,
        SimMeter::DinMeter(DinMeterParams::default()),
        1,
        SimClock::new(1_767_268_800_000, 1.0),
    )
    .expect("serve");
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let text = format!(
        "[[modbus.devices]]\nid = \"meter\"\nhost = \"127.0.0.1\"\nport = {}\nprofile = \"din_meter\"\npoll_interval_ms = 50\n\
         [[modbus.devices]]\nid = \"gone\"\nhost = \"127.0.0.1\"\nport = {dead_port}\nprofile = \"din_meter\"\npoll_interval_ms = 50\ntimeout_ms = 100\n",
        meter.addr.port()
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let cfg = parse_section(&text, &dir.join("gateway.toml"))
        .expect("parses")
        .validate(&dir)
        .expect("valid");
    let data = tempfile::tempdir().expect("tempdir");
    let buffer = Buffer::open(BufferConfig {
        path: data.path().join("buffer"),
        max_bytes: 64 << 20,
        cache_bytes: 1 << 20,
        keep_delivered: Duration::from_secs(3600),
    })
    .expect("buffer opens");

    let (wtx, mut wrx) = mpsc::channel(256);
    let (etx, _erx) = mpsc::channel(256);
    let tasks = spawn_pollers(
        &cfg,
        SiteId::new("site-b").expect("valid"),
        wtx,
        etx,
        ModbusStatus::new(),
    )
    .await;
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    while stored.values().filter(|n| **n >= 5).count() < 2 {
        let req = tokio::time::timeout(Duration::from_secs(20), wrx.recv())
            .await
            .expect("frames keep coming")
            .expect("pollers alive");
        let dev = req.incoming.frame.device.as_str().to_string();
        buffer.append(vec![req.incoming]).expect("durable append");
        *stored.entry(dev).or_default() += 1;
    }
    for t in tasks {
        t.abort();
    }

    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for f in buffer.scan(None) {
        let f = f.expect("readable");
        let dev = f.frame.device.as_str().to_string();
        let all_unavailable = f
            .frame
            .samples
            .iter()
            .all(|s| s.quality == Quality::UNAVAILABLE);
        assert_eq!(
            dev == "gone",
            all_unavailable,
            "{dev}: {:?}",
            f.frame.samples
        );
        assert_eq!(f.frame.firmware, "modbus");
        seqs.entry(dev).or_default().push(f.frame.seq);
    }
    for (dev, s) in &seqs {
        let want: Vec<u64> = (1..=s.len() as u64).collect();
        assert_eq!(s, &want, "{dev}: gap-free from 1");
        assert_eq!(s.len(), stored[dev]);
    }
}
