//! `[[mapping]]`: how third-party MQTT payloads become readings. The section
//! as written ([`MappingSection`]) and its validation into [`ValidMapping`]
//! with every JSON path compiled (RFC 9535, `serde_json_path`) before
//! anything runs.
//!
//! ```toml
//! [[mapping]]
//! id = "tasmota-plug"              # names the mapping (provenance, counters)
//! topic = "tele/+/SENSOR"          # MQTT topic filter (+ and # wildcards)
//! device = { topic_level = 1 }     # or { path = "$.src" }
//! device_prefix = "tasmota-"       # optional, prepended to the id found
//!
//! [mapping.timestamp]              # optional; without it: receipt time
//! path = "$.Time"
//! format = "rfc3339"               # unix_s | unix_ms | rfc3339
//! max_skew_s = 300                 # beyond: receipt time, flagged clock_unsynced
//!
//! [mapping.dedup]                  # optional
//! sequence_path = "$.seq"          # else (device, timestamp), else payload hash
//! window_s = 600
//!
//! [[mapping.fields]]
//! channel = "power"
//! path = "$.ENERGY.Power"
//! quantity = "power"
//! unit = "W"                       # the payload's unit; exact factor to base
//! kind = "instant"                 # instant | counter | delta
//! min = 0                          # optional range, base units
//! max = 4000000
//! ```
//!
//! Invariants of a [`ValidMapping`]: the id is a valid channel-like id and
//! unique; the filter is a valid MQTT filter and is not the gateway's own
//! `mrv/...` tree; a topic level used as device id is a concrete level of
//! the filter (`+` or literal, not `#`); every path parses; channels are
//! unique; every `unit` is a unit of its quantity (power must state one).

use crate::config::ConfigError;
use mrv_gateway_modbus::register_map::Scale;
use mrv_shared::conversion::Conversion;
use mrv_shared::ids::ChannelId;
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::wire::frame::MAX_FIRMWARE_LEN;
use serde::Deserialize;
use serde_json_path::JsonPath;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Mapped frames' firmware version is this prefix and the mapping id.
pub const FIRMWARE_PREFIX: &str = "map:";

/// Longest mapping id: `map:<id>` must fit a frame's firmware field.
pub const MAX_ID_BYTES: usize = MAX_FIRMWARE_LEN - FIRMWARE_PREFIX.len();

/// `[[mapping]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSection {
    /// Mapping id (1-28 of `A-Za-z0-9_.-`, [`MAX_ID_BYTES`]): recorded as
    /// the frames' provenance (`map:<id>`, a frame's firmware field of at
    /// most 32 bytes) and in counters.
    pub id: String,
    /// What the payloads are: `plain` (default: any JSON, the fields'
    /// paths say everything) or `chirpstack_v4` (ChirpStack v4's MQTT
    /// integration events, JSON marshaler: `up` uplinks are mapped, with
    /// deduplication on `deduplicationId` and on (devEui, epoch, fCnt);
    /// `join` and `log` events are tracked; see `docs/LORAWAN.md`).
    #[serde(default)]
    pub format: PayloadFormat,
    /// MQTT topic filter the gateway subscribes to.
    pub topic: String,
    /// Where the device id comes from.
    pub device: DeviceSource,
    /// Prepended to the device id found (e.g. `shelly-`).
    #[serde(default)]
    pub device_prefix: String,
    /// Largest payload accepted, bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Payload timestamp; without it every reading gets the receipt time.
    #[serde(default)]
    pub timestamp: Option<TimestampSection>,
    /// Duplicate suppression.
    #[serde(default)]
    pub dedup: DedupSection,
    /// The values to take.
    pub fields: Vec<FieldSection>,
}

fn default_max_payload() -> usize {
    64 * 1024
}

/// The shape of a mapping's payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Any JSON document.
    #[default]
    Plain,
    /// ChirpStack v4 integration events (`application/<id>/device/<devEui>/event/<type>`).
    ChirpstackV4,
}

/// Where a mapping finds the device id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DeviceSource {
    /// A level of the topic, 0-based (`tele/<id>/SENSOR` is level 1).
    TopicLevel(usize),
    /// A JSON path in the payload to a string (or integer).
    Path(String),
}

/// Timestamp formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Unix seconds (integer or decimal).
    UnixS,
    /// Unix milliseconds (integer).
    UnixMs,
    /// RFC 3339 text with an offset (`2024-12-01T12:00:00+01:00`, `...Z`).
    Rfc3339,
}

/// `[mapping.timestamp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSection {
    /// JSON path to the timestamp.
    pub path: String,
    /// Its format (explicit: no guessing between seconds and milliseconds).
    pub format: TimeFormat,
    /// Largest accepted distance from the receipt time, s; beyond it the
    /// receipt time is used and the samples are flagged `clock_unsynced`.
    #[serde(default = "default_skew")]
    pub max_skew_s: u64,
}

fn default_skew() -> u64 {
    300
}

/// `[mapping.dedup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSection {
    /// JSON path to a per-device message sequence number; when absent the
    /// key is (device, payload timestamp) if a timestamp is configured, else
    /// a hash of the payload.
    #[serde(default)]
    pub sequence_path: Option<String>,
    /// How long a key is remembered, s.
    #[serde(default = "default_window")]
    pub window_s: u64,
}

impl Default for DedupSection {
    fn default() -> Self {
        DedupSection {
            sequence_path: None,
            window_s: default_window(),
        }
    }
}

fn default_window() -> u64 {
    600
}

/// `[[mapping.fields]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSection {
    /// Channel name of the reading.
    pub channel: String,
    /// JSON path to exactly one number (or boolean for `status`).
    pub path: String,
    /// What is measured.
    pub quantity: String,
    /// The payload's unit (`W`, `kWh`, `V`, ...); default: the base unit
    /// (power must state it).
    #[serde(default)]
    pub unit: Option<String>,
    /// Extra exact factor applied before the unit (e.g. `0.1` for a payload
    /// counting tenths).
    #[serde(default)]
    pub scale: Option<f64>,
    /// `instant` (default), `counter` or `delta`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Smallest plausible value, base units; below: the message is quarantined.
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest plausible value, base units; above: the message is quarantined.
    #[serde(default)]
    pub max: Option<i64>,
}

/// Where the device id is found, validated.
#[derive(Debug, Clone)]
pub enum ValidDeviceSource {
    /// Topic level.
    TopicLevel(usize),
    /// Compiled path.
    Path(JsonPath, String),
}

/// A validated field.
#[derive(Debug, Clone)]
pub struct ValidField {
    /// Channel.
    pub channel: ChannelId,
    /// Compiled path and its text.
    pub path: JsonPath,
    /// The path as written (for reasons).
    pub path_text: String,
    /// Quantity.
    pub quantity: Quantity,
    /// Kind.
    pub kind: ValueKind,
    /// Exact factor from the payload number to base units.
    pub conversion: Conversion,
    /// Range, base units.
    pub min: Option<i64>,
    /// Range, base units.
    pub max: Option<i64>,
}

/// A validated timestamp rule.
#[derive(Debug, Clone)]
pub struct ValidTimestamp {
    /// Compiled path.
    pub path: JsonPath,
    /// Text of the path.
    pub path_text: String,
    /// Format.
    pub format: TimeFormat,
    /// Largest skew.
    pub max_skew: Duration,
}

/// How duplicates are recognised.
#[derive(Debug, Clone)]
pub enum DedupKeyRule {
    /// A sequence number in the payload.
    Sequence(JsonPath, String),
    /// (device, payload timestamp).
    Timestamp,
    /// A hash of the payload bytes.
    PayloadHash,
    /// ChirpStack v4 uplinks: `deduplicationId`, then (devEui, epoch, fCnt).
    ChirpstackUplink,
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct ValidMapping {
    /// Id.
    pub id: String,
    /// Payload shape.
    pub format: PayloadFormat,
    /// Topic filter.
    pub topic: String,
    /// Device id source.
    pub device: ValidDeviceSource,
    /// Device id prefix.
    pub device_prefix: String,
    /// Largest payload.
    pub max_payload_bytes: usize,
    /// Timestamp rule.
    pub timestamp: Option<ValidTimestamp>,
    /// Dedup key rule.
    pub dedup: DedupKeyRule,
    /// Dedup window.
    pub dedup_window: Duration,
    /// Fields, in config order (channel order of the frames).
    pub fields: Vec<ValidField>,
}

fn compile(file: &Path, key: &str, text: &str) -> Result<JsonPath, ConfigError> {
    JsonPath::parse(text).map_err(|e| {
        ConfigError::new(
            file,
            key,
            format!("{text:?} is not an RFC 9535 JSON path: {e}"),
        )
    })
}

fn parse_kind(s: Option<&str>) -> Option<ValueKind> {
    Some(match s.unwrap_or("instant") {
        "instant" => ValueKind::Instant,
        "counter" => ValueKind::Counter,
        "delta" => ValueKind::Delta,
        _ => return None,
    })
}

impl MappingSection {
    fn validate(&self, file: &Path, key: &str) -> Result<ValidMapping, ConfigError> {
        let err = |sub: &str, p: String| ConfigError::new(file, format!("{key}.{sub}"), p);
        ChannelId::new(&self.id).map_err(|e| err("id", e.to_string()))?;
        if FIRMWARE_PREFIX.len() + self.id.len() > MAX_FIRMWARE_LEN {
            return Err(err(
                "id",
                format!(
                    "{:?} is {} bytes, at most {}: frames carry \"{FIRMWARE_PREFIX}<id>\" as their firmware version, at most {MAX_FIRMWARE_LEN} bytes",
                    self.id,
                    self.id.len(),
                    MAX_ID_BYTES
                ),
            ));
        }
        if !rumqttc::mqttbytes::valid_filter(&self.topic) {
            return Err(err(
                "topic",
                format!("{:?} is not a valid MQTT topic filter", self.topic),
            ));
        }
        if self.topic.starts_with("mrv/") || self.topic == "#" {
            return Err(err(
                "topic",
                "the mrv/ tree carries the gateway's own device protocol; map other topics".into(),
            ));
        }
        let device = match &self.device {
            DeviceSource::TopicLevel(n) => {
                let levels: Vec<&str> = self.topic.split('/').collect();
                match levels.get(*n) {
                    Some(&"#") | None => {
                        return Err(err(
                            "device.topic_level",
                            format!(
                                "level {n} of {:?} is not a single level of the filter",
                                self.topic
                            ),
                        ));
                    }
                    Some(_) => ValidDeviceSource::TopicLevel(*n),
                }
            }
            DeviceSource::Path(p) => {
                ValidDeviceSource::Path(compile(file, &format!("{key}.device.path"), p)?, p.clone())
            }
        };
        if self.format == PayloadFormat::ChirpstackV4 {
            self.check_chirpstack(file, key)?;
        }
        if self.fields.is_empty() {
            return Err(err("fields", "give at least one field".into()));
        }
        if self.fields.len() > 255 {
            return Err(err("fields", "at most 255 fields".into()));
        }
        let mut channels = BTreeSet::new();
        let mut fields = Vec::new();
        for (i, f) in self.fields.iter().enumerate() {
            let fk = format!("fields[{i}]");
            let fe = |sub: &str, p: String| err(&format!("{fk}.{sub}"), p);
            let channel = ChannelId::new(&f.channel).map_err(|e| fe("channel", e.to_string()))?;
            if !channels.insert(channel.clone()) {
                return Err(fe("channel", format!("channel {channel} appears twice")));
            }
            let quantity = Quantity::ALL
                .iter()
                .copied()
                .find(|q| q.name() == f.quantity)
                .ok_or_else(|| {
                    fe(
                        "quantity",
                        format!(
                            "unknown quantity {:?}; use one of {}",
                            f.quantity,
                            Quantity::ALL.map(|q| q.name()).join(", ")
                        ),
                    )
                })?;
            let kind = parse_kind(f.kind.as_deref())
                .ok_or_else(|| fe("kind", "use instant, counter or delta".into()))?;
            let names = || {
                quantity
                    .units()
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let unit = match f.unit.as_deref() {
                Some(u) => quantity.conversion_from(u).ok_or_else(|| {
                    fe(
                        "unit",
                        format!(
                            "{u:?} is not a unit of {}; use one of {}",
                            quantity.name(),
                            names()
                        ),
                    )
                })?,
                None if quantity == Quantity::Power => {
                    return Err(fe(
                        "unit",
                        format!(
                            "power is stored in mW: say which unit the payload uses (one of {})",
                            names()
                        ),
                    ));
                }
                None => Conversion::ONE,
            };
            let scale = match f.scale {
                None => Conversion::ONE,
                Some(x) => Scale::from_decimal(x)
                    .map(Scale::conversion)
                    .ok_or_else(|| {
                        fe(
                            "scale",
                            format!(
                                "{x} is not usable: a non-zero decimal with at most 9 decimals"
                            ),
                        )
                    })?,
            };
            let conversion = scale
                .then(unit)
                .ok_or_else(|| fe("scale", "scale times the unit factor is too large".into()))?;
            if let (Some(lo), Some(hi)) = (f.min, f.max)
                && lo > hi
            {
                return Err(fe("min", format!("min {lo} is above max {hi}")));
            }
            fields.push(ValidField {
                channel,
                path: compile(file, &format!("{key}.{fk}.path"), &f.path)?,
                path_text: f.path.clone(),
                quantity,
                kind,
                conversion,
                min: f.min,
                max: f.max,
            });
        }
        let chirpstack_time = TimestampSection {
            path: "$.time".into(),
            format: TimeFormat::Rfc3339,
            max_skew_s: default_skew(),
        };
        let timestamp = match &self.timestamp {
            None if self.format == PayloadFormat::ChirpstackV4 => Some(ValidTimestamp {
                path: compile(file, key, &chirpstack_time.path)?,
                path_text: chirpstack_time.path.clone(),
                format: chirpstack_time.format,
                max_skew: Duration::from_secs(chirpstack_time.max_skew_s),
            }),
            None => None,
            Some(t) => Some(ValidTimestamp {
                path: compile(file, &format!("{key}.timestamp.path"), &t.path)?,
                path_text: t.path.clone(),
                format: t.format,
                max_skew: Duration::from_secs(t.max_skew_s),
            }),
        };
        let dedup = match (&self.dedup.sequence_path, &timestamp) {
            _ if self.format == PayloadFormat::ChirpstackV4 => DedupKeyRule::ChirpstackUplink,
            (Some(p), _) => DedupKeyRule::Sequence(
                compile(file, &format!("{key}.dedup.sequence_path"), p)?,
                p.clone(),
            ),
            (None, Some(_)) => DedupKeyRule::Timestamp,
            (None, None) => DedupKeyRule::PayloadHash,
        };
        if self.dedup.window_s == 0 {
            return Err(err("dedup.window_s", "must be positive".into()));
        }
        Ok(ValidMapping {
            id: self.id.clone(),
            format: self.format,
            topic: self.topic.clone(),
            device,
            device_prefix: self.device_prefix.clone(),
            max_payload_bytes: self.max_payload_bytes,
            timestamp,
            dedup,
            dedup_window: Duration::from_secs(self.dedup.window_s),
            fields,
        })
    }
}

impl MappingSection {
    /// The extra rules of `format = "chirpstack_v4"`: the topic is
    /// ChirpStack's event tree with the event type as a wildcard (so `up`,
    /// `join` and `log` all arrive), the device id comes from `deviceInfo`
    /// (present in every event type), and dedup is ChirpStack's own.
    fn check_chirpstack(&self, file: &Path, key: &str) -> Result<(), ConfigError> {
        let err = |sub: &str, p: String| ConfigError::new(file, format!("{key}.{sub}"), p);
        let levels: Vec<&str> = self.topic.split('/').collect();
        let shape_ok = levels.len() == 6
            && levels[0] == "application"
            && levels[2] == "device"
            && levels[4] == "event"
            && levels[5] == "+"
            && !levels[1].is_empty()
            && !levels[3].is_empty();
        if !shape_ok {
            return Err(err(
                "topic",
                format!(
                    "{:?}: a chirpstack_v4 mapping subscribes to \"application/<application id or +>/device/<devEui or +>/event/+\" (the event type must be + so that up, join and log arrive)",
                    self.topic
                ),
            ));
        }
        match &self.device {
            DeviceSource::Path(p) if p.starts_with("$.deviceInfo.") => {}
            _ => {
                return Err(err(
                    "device",
                    "a chirpstack_v4 mapping takes the device id from deviceInfo: { path = \"$.deviceInfo.devEui\" }, \"$.deviceInfo.deviceName\" or a tag, \"$.deviceInfo.tags.<name>\"".into(),
                ));
            }
        }
        if self.dedup.sequence_path.is_some() {
            return Err(err(
                "dedup.sequence_path",
                "a chirpstack_v4 mapping deduplicates on deduplicationId and (devEui, epoch, fCnt); leave sequence_path out".into(),
            ));
        }
        Ok(())
    }
}

/// Validates every `[[mapping]]` of `file`.
pub fn validate_mappings(
    sections: &[MappingSection],
    file: &Path,
) -> Result<Vec<ValidMapping>, ConfigError> {
    let mut out: Vec<ValidMapping> = Vec::new();
    for (i, m) in sections.iter().enumerate() {
        let key = format!("mapping[{i}]");
        let v = m.validate(file, &key)?;
        if out.iter().any(|o| o.id == v.id) {
            return Err(ConfigError::new(
                file,
                format!("{key}.id"),
                format!("mapping {} is defined twice", v.id),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

/// Parses `[[mapping]]` sections from TOML text (for tests and tools).
pub fn parse_mappings(text: &str, file: &Path) -> Result<Vec<ValidMapping>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        #[serde(default)]
        mapping: Vec<MappingSection>,
    }
    // The same deserializer as the main config file, so that the sections
    // both read are compiled once (binary size, issue 11).
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        ConfigError::new(
            file,
            "",
            format!("not valid TOML: {}", e.to_string().trim_end()),
        )
    })?;
    let w: Wrapper = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::new(file, key, e.inner().message().to_string())
    })?;
    validate_mappings(&w.mapping, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ValidMapping>, ConfigError> {
        parse_mappings(text, Path::new("gateway.toml"))
    }

    const BASE: &str =
        "[[mapping]]\nid = \"m\"\ntopic = \"tele/+/SENSOR\"\ndevice = { topic_level = 1 }\n";

    #[test]
    fn the_shipped_examples_validate() {
        for text in [
            include_str!("../../../config/mappings/shelly_gen2_switch.toml"),
            include_str!("../../../config/mappings/tasmota_energy_plug.toml"),
            include_str!("../../../config/mappings/chirpstack_paddy_water_level.toml"),
        ] {
            let m = parse(text).expect("shipped example is valid");
            assert_eq!(m.len(), 1);
        }
    }

    #[test]
    fn paths_compile_at_load_and_errors_name_the_key() {
        let ok = format!(
            "{BASE}[[mapping.fields]]\nchannel = \"p\"\npath = \"$.ENERGY.Power\"\nquantity = \"power\"\nunit = \"W\"\n"
        );
        let m = parse(&ok).expect("valid");
        assert_eq!(
            m[0].fields[0].conversion,
            Conversion::new(1000, 1).expect("W")
        );
        assert!(matches!(m[0].dedup, DedupKeyRule::PayloadHash));
        let bad = ok.replace("$.ENERGY.Power", "$.ENERGY[");
        let e = parse(&bad).expect_err("bad path");
        assert_eq!(e.key, "mapping[0].fields[0].path");
        let e = parse(&ok.replace("unit = \"W\"\n", "")).expect_err("power needs a unit");
        assert_eq!(e.key, "mapping[0].fields[0].unit");
        let e = parse(&ok.replace("topic_level = 1", "topic_level = 5")).expect_err("level");
        assert_eq!(e.key, "mapping[0].device.topic_level");
        let e = parse(&ok.replace("tele/+/SENSOR", "mrv/site/+/up")).expect_err("own tree");
        assert_eq!(e.key, "mapping[0].topic");
        let e = parse(&format!("{ok}colour = 1\n")).expect_err("unknown key");
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_mapping_id_fits_the_frames_firmware_field() {
        // `map:<id>` is the mapped frames' firmware version, at most 32
        // bytes (a frame rule): a 29-byte id gave every message of the
        // mapping a frame the buffer refuses.
        let field = "[[mapping.fields]]\nchannel = \"p\"\npath = \"$.P\"\nquantity = \"power\"\nunit = \"W\"\n";
        let longest = "a".repeat(MAX_ID_BYTES);
        let ok = format!("{BASE}{field}").replace("id = \"m\"", &format!("id = \"{longest}\""));
        let m = parse(&ok).expect("a 28-byte id is valid");
        assert_eq!(
            format!("{FIRMWARE_PREFIX}{}", m[0].id).len(),
            MAX_FIRMWARE_LEN
        );
        let e = parse(&ok.replace(&longest, &format!("{longest}b"))).expect_err("29 bytes");
        assert_eq!(e.key, "mapping[0].id");
        assert!(e.problem.contains("at most 28"), "{e}");
    }
}
