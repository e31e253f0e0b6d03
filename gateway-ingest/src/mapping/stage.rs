//! The mapping stage: one third-party MQTT message in, one [`Outcome`] out.
//! Pure (time comes in with the message), so both MQTT paths (the
//! external-broker subscription and the embedded endpoint's publish
//! handler) call the same code.
//!
//! Steps for a message: size check; the first mapping whose topic filter
//! matches; retained replays ignored; JSON parse; device id; every field
//! (exactly one match, a number, exact conversion, range); timestamp
//! (format, skew); dedup key; frame.
//!
//! Invariants:
//! - every message ends as exactly one of: a frame to store, a duplicate, a
//!   retained replay, a rejection with a reason code (quarantined by the
//!   caller with the raw payload), or "no mapping"; nothing is dropped
//!   silently, no value is guessed: a missing path, several matches, a
//!   string, `null` or a boolean where a number is expected, a value outside
//!   `i64` or outside the configured range, a `status` other than exactly 0
//!   or 1 (false/true), a missing or unparsable
//!   timestamp each reject the whole message (never a partial frame, never
//!   a string fallback, never the path text as a value);
//! - frames are gateway-sequenced (`seq` 0: the buffer assigns the device's
//!   next number), unsigned, and say where they came from:
//!   `firmware = "map:<mapping id>"`; `base_time_ms` is the payload time
//!   when one is configured and within `max_skew` of receipt, else `None`
//!   (the receipt time stands; samples flagged `clock_unsynced` when a
//!   payload time was present but too far off) — the source of every
//!   timestamp is in the frame itself;
//! - a dedup key is *pending* from the frame's creation until the caller
//!   [`MappingStage::settle`]s it: kept when stored, forgotten when the
//!   store failed (so a redelivery is stored, not dropped as a duplicate);
//!   a duplicate of a pending key says so ([`Outcome::Duplicate`]
//!   `pending`), so the caller acknowledges it only once the first copy is
//!   on disk;
//!   keys expire after the mapping's window; settled keys are kept within
//!   a byte budget ([`super::dedup_memory`]: per-device growing values
//!   delta-encoded, the others exact; beyond the budget the keys nearest
//!   to expiry are dropped and counted), pending keys are never dropped;
//! - values that do not fit the base unit are rounded (half away from zero)
//!   and flagged `rounded` ([`mrv_shared::conversion`]).

use super::chirpstack::{Envelope, EventType, FcntTracker, SessionReset, UplinksLost};
use super::config::{DedupKeyRule, PayloadFormat, TimeFormat, ValidDeviceSource, ValidMapping};
use mrv_shared::conversion::{ConversionError, Decimal};
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::Frame;
use serde_json::Value;
use serde_json_path::{ExactlyOneError, JsonPath};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

pub use super::dedup_memory::{DedupKey, DedupMemoryStats};
use super::dedup_memory::{DedupMemory, KeyForm, Seen, StreamId};

/// Most ChirpStack deduplication ids remembered at once.
pub const MAX_CHIRPSTACK_IDS: usize = 200_000;

/// One message as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its payload.
    pub payload: &'a [u8],
    /// True when the broker sent it because the gateway (re)subscribed (an
    /// MQTT retained message): old state, never new data.
    pub retained_replay: bool,
    /// Gateway receipt time, Unix ms.
    pub received_ms: u64,
}

/// Why a message was refused: a stable reason code and a detail naming the
/// path and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The mapping that matched.
    pub mapping: String,
    /// The device, when it could be determined.
    pub device: Option<DeviceId>,
    /// `too_large`, `not_json`, `bad_device_id`, `missing_path`,
    /// `multiple_matches`, `not_a_number`, `overflow`, `out_of_range`,
    /// `missing_timestamp`, `bad_timestamp`, `missing_sequence`.
    pub reason: &'static str,
    /// What and where.
    pub detail: String,
}

fn put_len_prefixed(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

/// The identity of a message: the first 128 bits of SHA-256 over (mapping,
/// device, value), each length-prefixed, and how the dedup memory keeps it.
fn dedup_key(mapping: usize, device: &DeviceId, value: &KeyValue) -> (DedupKey, KeyForm) {
    let mut h = Sha256::new();
    h.update((mapping as u64).to_le_bytes());
    put_len_prefixed(&mut h, device.as_str().as_bytes());
    match value {
        KeyValue::Sequence(v) => {
            h.update([0u8]);
            put_len_prefixed(&mut h, v.as_bytes());
        }
        KeyValue::Time(t) => {
            h.update([1u8]);
            h.update(t.to_le_bytes());
        }
        KeyValue::Hash(b) => {
            h.update([2u8]);
            h.update(b);
        }
        KeyValue::Fcnt(dev_eui, epoch, fcnt) => {
            h.update([3u8]);
            put_len_prefixed(&mut h, dev_eui.as_bytes());
            h.update(epoch.to_le_bytes());
            h.update(fcnt.to_le_bytes());
        }
    }
    let key = DedupKey::from_digest(&h.finalize());
    // The stream of a value that grows per device: the same digest
    // without the value (and a tag apart from every key's).
    let stream = |tag: u8, extra: &[u8]| {
        let mut h = Sha256::new();
        h.update(b"stream");
        h.update((mapping as u64).to_le_bytes());
        put_len_prefixed(&mut h, device.as_str().as_bytes());
        h.update([tag]);
        h.update(extra);
        StreamId::from_digest(&h.finalize())
    };
    let form = match value {
        // An integer sequence in canonical decimal (number or string: the
        // key is the text either way): ordered.
        KeyValue::Sequence(v) => match v.parse::<u64>() {
            Ok(n) if n.to_string() == *v => KeyForm::Ordered {
                stream: stream(0, &[]),
                value: n,
            },
            _ => KeyForm::Exact,
        },
        KeyValue::Time(t) => KeyForm::Ordered {
            stream: stream(1, &[]),
            value: *t,
        },
        KeyValue::Hash(_) => KeyForm::Exact,
        KeyValue::Fcnt(dev_eui, epoch, fcnt) => {
            let mut extra = Vec::with_capacity(dev_eui.len() + 12);
            extra.extend_from_slice(&(dev_eui.len() as u64).to_le_bytes());
            extra.extend_from_slice(dev_eui.as_bytes());
            extra.extend_from_slice(&epoch.to_le_bytes());
            KeyForm::Ordered {
                stream: stream(3, &extra),
                value: u64::from(*fcnt),
            }
        }
    };
    (key, form)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyValue {
    Sequence(String),
    Time(u64),
    Hash([u8; 16]),
    /// ChirpStack uplink: (devEui, epoch, fCnt). The devEui is kept besides
    /// the device id: two radios mapped to one id (a tag set twice) must
    /// not take each other's uplinks for duplicates.
    Fcnt(String, u32, u32),
}

/// Where a frame's time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The payload's timestamp (within the allowed skew).
    Payload,
    /// The gateway's receipt time (no timestamp configured).
    Receipt,
    /// The receipt time, because the payload's was off by this many ms.
    ReceiptSkewed(i64),
}

/// A frame to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The frame (`seq` 0).
    pub frame: Frame,
    /// Its dedup key, pending until settled.
    pub key: DedupKey,
    /// The mapping's id.
    pub mapping: String,
    /// Where its time came from.
    pub time: TimeSource,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Store it (gateway-sequenced), then [`MappingStage::settle`] its key.
    Frame(Box<Mapped>),
    /// Seen within the window: acknowledge, do not store.
    Duplicate {
        /// Mapping.
        mapping: String,
        /// Device.
        device: DeviceId,
        /// The first copy's key while its store has not answered yet: the
        /// caller waits for that key's settlement before it acknowledges
        /// (the first copy may still be refused for space).
        pending: Option<DedupKey>,
    },
    /// A retained message replayed at (re)subscription: acknowledge, ignore.
    RetainedReplay {
        /// Mapping.
        mapping: String,
    },
    /// Bad input: quarantine with the payload, count, acknowledge.
    Rejected(Rejection),
    /// A message that is not a reading but was handled (ChirpStack `join`,
    /// `log` and other event types): acknowledge; what it meant is in
    /// [`MappingStage::take_notices`].
    NotData {
        /// Mapping.
        mapping: String,
        /// What it was: `lorawan_join`, `lorawan_log`, `lorawan_duplicate`
        /// (an event seen before), `lorawan_other_event`.
        what: &'static str,
    },
    /// No mapping's filter matches the topic.
    NoMapping,
}

/// Something a message said about its device besides readings (ChirpStack
/// mappings): the caller records or shows it (see `docs/LORAWAN.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A new frame-counter epoch.
    SessionReset {
        /// Mapping.
        mapping: String,
        /// Device.
        device: DeviceId,
        /// Its devEui.
        dev_eui: String,
        /// What happened.
        reset: SessionReset,
    },
    /// Uplinks lost within an epoch.
    UplinksLost {
        /// Mapping.
        mapping: String,
        /// Device.
        device: DeviceId,
        /// Its devEui.
        dev_eui: String,
        /// Which.
        lost: UplinksLost,
    },
    /// A ChirpStack `log` event of the device.
    DeviceLog {
        /// Mapping.
        mapping: String,
        /// Device.
        device: DeviceId,
        /// Its devEui.
        dev_eui: String,
        /// `level` (`INFO`, `WARNING`, `ERROR`).
        level: String,
        /// `code` (`UPLINK_CODEC`, `UPLINK_F_CNT_RESET`, ...).
        code: String,
        /// `description`.
        description: String,
    },
}

/// A ChirpStack deduplication id seen recently.
#[derive(Debug, Clone, Default)]
struct SeenId {
    expires: u64,
    /// The uplink's (devEui, epoch, fCnt) key, once it became a frame.
    key: Option<(DedupKey, KeyForm)>,
    /// The codec error ChirpStack logged for this uplink.
    codec_error: Option<String>,
    /// A join event with this id was handled.
    join: bool,
}

/// ChirpStack state of the stage: frame-counter sessions and recent
/// deduplication ids.
#[derive(Debug, Default)]
struct ChirpstackState {
    fcnt: FcntTracker,
    ids: HashMap<(usize, String), SeenId>,
    order: VecDeque<(u64, (usize, String))>,
}

impl ChirpstackState {
    fn entry(&mut self, id: (usize, String), expires: u64) -> &mut SeenId {
        while self.ids.len() >= MAX_CHIRPSTACK_IDS {
            match self.order.pop_front() {
                Some((_, k)) => {
                    self.ids.remove(&k);
                }
                None => break,
            }
        }
        if !self.ids.contains_key(&id) {
            self.order.push_back((expires, id.clone()));
        }
        let e = self.ids.entry(id).or_default();
        e.expires = e.expires.max(expires);
        e
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((t, _)) = self.order.front() {
            if *t > now_ms {
                break;
            }
            let (_, k) = self.order.pop_front().expect("front exists");
            match self.ids.get(&k) {
                Some(e) if e.expires > now_ms => self.order.push_back((e.expires, k)),
                _ => {
                    self.ids.remove(&k);
                }
            }
        }
    }
}

/// The stage (see the module doc).
#[derive(Debug)]
pub struct MappingStage {
    site: SiteId,
    mappings: Vec<ValidMapping>,
    keys: DedupMemory,
    chirpstack: ChirpstackState,
    notices: Vec<Notice>,
}

fn nodes_err(e: ExactlyOneError) -> &'static str {
    match e {
        ExactlyOneError::Empty => "missing_path",
        _ => "multiple_matches",
    }
}

fn one<'v>(
    path: &JsonPath,
    v: &'v Value,
    text: &str,
    missing: &'static str,
) -> Result<&'v Value, (&'static str, String)> {
    path.query(v).exactly_one().map_err(|e| {
        let reason = match nodes_err(e) {
            "missing_path" => missing,
            r => r,
        };
        let what = if reason == "multiple_matches" {
            "matches several values"
        } else {
            "matches nothing"
        };
        (reason, format!("{text} {what}"))
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn decimal(n: &serde_json::Number) -> Result<Decimal, ConversionError> {
    if let Some(i) = n.as_i64() {
        Ok(Decimal::int(i128::from(i)))
    } else if let Some(u) = n.as_u64() {
        Ok(Decimal::int(i128::from(u)))
    } else {
        Decimal::from_f64(n.as_f64().ok_or(ConversionError::NotFinite)?)
    }
}

/// Parses a timestamp value per `format` into Unix ms.
fn parse_time(v: &Value, format: TimeFormat) -> Result<u64, String> {
    let ms = match (format, v) {
        (TimeFormat::UnixS | TimeFormat::UnixMs, Value::Number(n)) => {
            let d = decimal(n).map_err(|e| e.to_string())?;
            let factor = if format == TimeFormat::UnixS { 1000 } else { 1 };
            mrv_shared::conversion::Conversion::new(factor, 1)
                .expect("non-zero")
                .apply_decimal(d)
                .map_err(|e| e.to_string())?
                .value
        }
        (TimeFormat::Rfc3339, Value::String(s)) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("{s:?} is not RFC 3339 with an offset: {e}"))?;
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| format!("{s:?} is out of range"))?
        }
        (f, other) => {
            return Err(format!(
                "{} where {f:?} needs {}",
                kind_of(other),
                if f == TimeFormat::Rfc3339 {
                    "a string"
                } else {
                    "a number"
                }
            ));
        }
    };
    u64::try_from(ms).map_err(|_| format!("{ms} ms is before 1970"))
}

/// A duplicate outcome when `key` is remembered at `now_ms`.
fn duplicate(
    keys: &DedupMemory,
    mapping: &str,
    device: &DeviceId,
    key: &(DedupKey, KeyForm),
    now_ms: u64,
) -> Option<Outcome> {
    let seen = keys.lookup(&key.0, &key.1, now_ms)?;
    Some(Outcome::Duplicate {
        mapping: mapping.to_string(),
        device: device.clone(),
        pending: (seen == Seen::Pending).then_some(key.0),
    })
}

impl MappingStage {
    /// A stage for `site` with `mappings` (validated config order; the first
    /// matching filter wins).
    pub fn new(site: SiteId, mappings: Vec<ValidMapping>) -> Self {
        Self::with_dedup_budget(site, mappings, super::dedup_memory::DEFAULT_BUDGET_BYTES)
    }

    /// [`MappingStage::new`] with a dedup memory of `budget_bytes`.
    pub fn with_dedup_budget(
        site: SiteId,
        mappings: Vec<ValidMapping>,
        budget_bytes: usize,
    ) -> Self {
        MappingStage {
            site,
            mappings,
            keys: DedupMemory::new(budget_bytes),
            chirpstack: ChirpstackState::default(),
            notices: Vec::new(),
        }
    }

    /// The LoRaWAN (ChirpStack) frame-counter sessions, for diagnostics.
    pub fn lorawan_sessions(&self) -> Vec<super::chirpstack::SessionView> {
        self.chirpstack.fcnt.views(|m| {
            self.mappings
                .get(m)
                .map_or_else(String::new, |m| m.id.clone())
        })
    }

    /// What the messages handled since the last call said about their
    /// devices besides readings (ChirpStack sessions, lost uplinks, logs).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The topic filters to subscribe to.
    pub fn filters(&self) -> Vec<&str> {
        self.mappings.iter().map(|m| m.topic.as_str()).collect()
    }

    /// The filters a device-bound login may publish on: those of `plain`
    /// mappings. A `chirpstack_v4` filter carries the network server's
    /// events for every device (joins, sessions), so only a site login
    /// may publish there.
    pub fn device_filters(&self) -> Vec<&str> {
        self.mappings
            .iter()
            .filter(|m| m.format == PayloadFormat::Plain)
            .map(|m| m.topic.as_str())
            .collect()
    }

    /// True when some mapping's filter matches `topic`.
    pub fn handles(&self, topic: &str) -> bool {
        self.mappings
            .iter()
            .any(|m| crate::topic_filter::matches(topic, &m.topic))
    }

    /// Dedup keys remembered (pending or stored).
    pub fn remembered(&self) -> usize {
        self.keys.len()
    }

    /// The dedup memory's size, budget and drops.
    pub fn dedup_memory(&self) -> DedupMemoryStats {
        self.keys.stats()
    }

    /// Maps one message.
    pub fn handle(&mut self, msg: &Message<'_>) -> Outcome {
        let Some(mi) = self
            .mappings
            .iter()
            .position(|m| crate::topic_filter::matches(msg.topic, &m.topic))
        else {
            return Outcome::NoMapping;
        };
        self.expire(msg.received_ms);
        let m = &self.mappings[mi];
        if msg.retained_replay {
            return Outcome::RetainedReplay {
                mapping: m.id.clone(),
            };
        }
        let reject = |device: Option<&DeviceId>, reason: &'static str, detail: String| {
            Outcome::Rejected(Rejection {
                mapping: m.id.clone(),
                device: device.cloned(),
                reason,
                detail,
            })
        };
        if msg.payload.len() > m.max_payload_bytes {
            return reject(
                None,
                "too_large",
                format!(
                    "{} bytes, at most {}",
                    msg.payload.len(),
                    m.max_payload_bytes
                ),
            );
        }
        // The device id first, so that every later rejection names it.
        let topic_device = match &m.device {
            ValidDeviceSource::TopicLevel(n) => Some(msg.topic.split('/').nth(*n).unwrap_or("")),
            ValidDeviceSource::Path(..) => None,
        };
        let v: Value = match serde_json::from_slice(msg.payload) {
            Ok(v) => v,
            Err(e) => {
                let device = topic_device
                    .and_then(|d| DeviceId::new(&format!("{}{d}", m.device_prefix)).ok());
                return reject(device.as_ref(), "not_json", format!("not JSON: {e}"));
            }
        };
        let raw_id = match (&m.device, topic_device) {
            (_, Some(d)) => d.to_string(),
            (ValidDeviceSource::Path(p, text), None) => match one(p, &v, text, "missing_path") {
                Ok(Value::String(s)) => s.clone(),
                Ok(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                Ok(other) => {
                    return reject(
                        None,
                        "bad_device_id",
                        format!("{text} is {}, not a string", kind_of(other)),
                    );
                }
                Err((reason, detail)) => return reject(None, reason, detail),
            },
            (ValidDeviceSource::TopicLevel(_), None) => unreachable!("topic levels give Some"),
        };
        let device = match DeviceId::new(&format!("{}{raw_id}", m.device_prefix)) {
            Ok(d) => d,
            Err(e) => {
                return reject(
                    None,
                    "bad_device_id",
                    format!("{:?}: {e}", format!("{}{raw_id}", m.device_prefix)),
                );
            }
        };
        let dev = Some(&device);
        let mut chirpstack_key = None;
        if m.format == PayloadFormat::ChirpstackV4 {
            let window = m.dedup_window.as_millis() as u64;
            let expires = msg.received_ms.saturating_add(window);
            let cs = &mut self.chirpstack;
            let ty = EventType::of_topic(msg.topic);
            let env = match Envelope::read(&v, ty) {
                Ok(e) => e,
                Err(e) => return reject(dev, e.reason, e.detail),
            };
            let not_data = |what| Outcome::NotData {
                mapping: m.id.clone(),
                what,
            };
            match ty {
                EventType::Other => return not_data("lorawan_other_event"),
                EventType::Join => {
                    if let Some(id) = &env.dedup_id {
                        let seen = cs.entry((mi, id.clone()), expires);
                        if seen.join {
                            return not_data("lorawan_duplicate");
                        }
                        seen.join = true;
                    }
                    let reset = cs.fcnt.join(
                        mi,
                        &env.dev_eui,
                        device.as_str(),
                        env.dev_addr.as_deref(),
                        msg.received_ms,
                    );
                    self.notices.push(Notice::SessionReset {
                        mapping: m.id.clone(),
                        device: device.clone(),
                        dev_eui: env.dev_eui,
                        reset,
                    });
                    return not_data("lorawan_join");
                }
                EventType::Log => {
                    let text = |k: &str| match v.get(k) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    let (level, code, description) =
                        (text("level"), text("code"), text("description"));
                    if let Some(id) = &env.dedup_id {
                        let seen = cs.entry((mi, id.clone()), expires);
                        if code == "UPLINK_CODEC" {
                            if seen.codec_error.is_some() {
                                return not_data("lorawan_duplicate");
                            }
                            seen.codec_error = Some(description.clone());
                        }
                    }
                    self.notices.push(Notice::DeviceLog {
                        mapping: m.id.clone(),
                        device: device.clone(),
                        dev_eui: env.dev_eui,
                        level,
                        code,
                        description,
                    });
                    return not_data("lorawan_log");
                }
                EventType::Up => {}
            }
            let id = (mi, env.dedup_id.clone().expect("read checks an up's id"));
            if let Some(k) = cs.ids.get(&id).and_then(|e| e.key.as_ref())
                && let Some(dup) = duplicate(&self.keys, &m.id, &device, k, msg.received_ms)
            {
                return dup;
            }
            let heard = v
                .get("time")
                .and_then(|t| parse_time(t, TimeFormat::Rfc3339).ok())
                .unwrap_or(msg.received_ms);
            let j = cs
                .fcnt
                .judge(mi, &env.dev_eui, env.dev_addr.as_deref(), env.fcnt, heard);
            let key = dedup_key(
                mi,
                &device,
                &KeyValue::Fcnt(env.dev_eui.clone(), j.epoch, env.fcnt),
            );
            if let Some(dup) = duplicate(&self.keys, &m.id, &device, &key, msg.received_ms) {
                // The same (devEui, epoch, fCnt) under another
                // deduplicationId: the same uplink delivered twice.
                return dup;
            }
            cs.fcnt.commit(mi, &j, device.as_str());
            if let Some(reset) = j.reset.clone() {
                self.notices.push(Notice::SessionReset {
                    mapping: m.id.clone(),
                    device: device.clone(),
                    dev_eui: env.dev_eui.clone(),
                    reset,
                });
            }
            if let Some(lost) = j.lost.clone() {
                self.notices.push(Notice::UplinksLost {
                    mapping: m.id.clone(),
                    device: device.clone(),
                    dev_eui: env.dev_eui.clone(),
                    lost,
                });
            }
            if !matches!(v.get("object"), Some(Value::Object(_))) {
                let seen = cs.ids.get(&id).and_then(|e| e.codec_error.clone());
                return match seen {
                    Some(why) => reject(
                        dev,
                        "codec_error",
                        format!(
                            "ChirpStack's codec failed on uplink fCnt {} (deduplicationId {}): {why}",
                            env.fcnt, id.1
                        ),
                    ),
                    None => reject(
                        dev,
                        "missing_object",
                        format!(
                            "uplink fCnt {} has no decoded $.object (the device profile has no codec, or its codec failed and the log event was not received)",
                            env.fcnt
                        ),
                    ),
                };
            }
            chirpstack_key = Some((id, key));
        }
        let mut channels = Vec::with_capacity(m.fields.len());
        let mut samples = Vec::with_capacity(m.fields.len());
        for (i, f) in m.fields.iter().enumerate() {
            let node = match one(&f.path, &v, &f.path_text, "missing_path") {
                Ok(n) => n,
                Err((reason, detail)) => return reject(dev, reason, detail),
            };
            let d = match node {
                Value::Number(n) => match decimal(n) {
                    Ok(d) => d,
                    Err(e) => return reject(dev, "overflow", format!("{}: {e}", f.path_text)),
                },
                Value::Bool(b) if f.quantity == Quantity::Status => Decimal::int(i128::from(*b)),
                other => {
                    return reject(
                        dev,
                        "not_a_number",
                        format!(
                            "{} is {}{}, not a number",
                            f.path_text,
                            kind_of(other),
                            match other {
                                Value::String(s) => format!(" ({s:?})"),
                                _ => String::new(),
                            }
                        ),
                    );
                }
            };
            let c = match f.conversion.apply_decimal(d) {
                Ok(c) => c,
                Err(e) => return reject(dev, "overflow", format!("{}: {e}", f.path_text)),
            };
            // A status is exactly 0 or 1 (the frame rule): any other number,
            // or one that only rounds to 0 or 1, is not guessed at.
            if f.quantity == Quantity::Status && (c.rounded || !(0..=1).contains(&c.value)) {
                return reject(
                    dev,
                    "out_of_range",
                    format!(
                        "{} = {node} is not a status: a status is 0 or 1 (or false/true)",
                        f.path_text
                    ),
                );
            }
            if f.min.is_some_and(|lo| c.value < lo) || f.max.is_some_and(|hi| c.value > hi) {
                return reject(
                    dev,
                    "out_of_range",
                    format!(
                        "{} = {} {} outside {}..{}",
                        f.path_text,
                        c.value,
                        f.quantity.unit(),
                        f.min.map_or("".into(), |x| x.to_string()),
                        f.max.map_or("".into(), |x| x.to_string())
                    ),
                );
            }
            channels.push(Channel {
                id: f.channel.clone(),
                quantity: f.quantity,
                kind: f.kind,
            });
            samples.push(Sample {
                channel: u8::try_from(i).expect("validated mappings have at most 255 fields"),
                offset_ms: 0,
                value: c.value,
                quality: if c.rounded {
                    Quality::ROUNDED
                } else {
                    Quality::GOOD
                },
            });
        }
        let mut time = TimeSource::Receipt;
        let mut payload_ms = None;
        if let Some(t) = &m.timestamp {
            let node = match one(&t.path, &v, &t.path_text, "missing_timestamp") {
                Ok(n) => n,
                Err((reason, detail)) => return reject(dev, reason, detail),
            };
            let ms = match parse_time(node, t.format) {
                Ok(ms) => ms,
                Err(e) => {
                    return reject(dev, "bad_timestamp", format!("{}: {e}", t.path_text));
                }
            };
            payload_ms = Some(ms);
            let skew = i64::try_from(ms).unwrap_or(i64::MAX)
                - i64::try_from(msg.received_ms).unwrap_or(i64::MAX);
            if skew.unsigned_abs() <= t.max_skew.as_millis() as u64 {
                time = TimeSource::Payload;
            } else {
                time = TimeSource::ReceiptSkewed(skew);
                for s in &mut samples {
                    s.quality = s.quality.with(Quality::CLOCK_UNSYNCED);
                }
            }
        }
        let key = match &m.dedup {
            DedupKeyRule::Sequence(p, text) => match one(p, &v, text, "missing_sequence") {
                Ok(Value::Number(n)) => dedup_key(mi, &device, &KeyValue::Sequence(n.to_string())),
                Ok(Value::String(s)) => dedup_key(mi, &device, &KeyValue::Sequence(s.clone())),
                Ok(other) => {
                    return reject(
                        dev,
                        "missing_sequence",
                        format!("{text} is {}, not a number or string", kind_of(other)),
                    );
                }
                Err((reason, detail)) => return reject(dev, reason, detail),
            },
            DedupKeyRule::Timestamp => dedup_key(
                mi,
                &device,
                &KeyValue::Time(payload_ms.expect("a timestamp rule gives a time")),
            ),
            DedupKeyRule::PayloadHash => {
                let h = Sha256::digest(msg.payload);
                let mut b = [0u8; 16];
                b.copy_from_slice(&h[..16]);
                dedup_key(mi, &device, &KeyValue::Hash(b))
            }
            DedupKeyRule::ChirpstackUplink => chirpstack_key
                .as_ref()
                .map(|(_, k)| *k)
                .expect("a chirpstack_v4 uplink got its key above"),
        };
        if let Some(dup) = duplicate(&self.keys, &m.id, &device, &key, msg.received_ms) {
            return dup;
        }
        let frame = Frame {
            site: self.site.clone(),
            device,
            seq: 0,
            boot: 0,
            firmware: format!("{}{}", super::config::FIRMWARE_PREFIX, m.id),
            base_time_ms: matches!(time, TimeSource::Payload)
                .then_some(payload_ms)
                .flatten(),
            channels,
            samples,
            signature: None,
        };
        let expires = msg
            .received_ms
            .saturating_add(m.dedup_window.as_millis() as u64);
        let mapping = m.id.clone();
        if let Some((id, _)) = chirpstack_key {
            self.chirpstack.entry(id, expires).key = Some(key);
        }
        self.keys.insert_pending(key.0, key.1, expires);
        Outcome::Frame(Box::new(Mapped {
            frame,
            key: key.0,
            mapping,
            time,
        }))
    }

    /// Settles a frame's key once the store answered: kept when `stored`
    /// (also for a buffer duplicate), forgotten otherwise.
    pub fn settle(&mut self, key: &DedupKey, stored: bool) {
        self.keys.settle(key, stored);
    }

    fn expire(&mut self, now_ms: u64) {
        self.chirpstack.expire(now_ms);
        self.keys.expire(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::config::parse_mappings;
    use std::path::Path;

    const NOW: u64 = 1_764_590_400_000; // 2025-12-01T12:00:00Z

    fn stage(text: &str) -> MappingStage {
        MappingStage::new(
            SiteId::new("site-a").expect("id"),
            parse_mappings(text, Path::new("t.toml")).expect("valid"),
        )
    }

    fn msg<'a>(topic: &'a str, payload: &'a str) -> Message<'a> {
        Message {
            topic,
            payload: payload.as_bytes(),
            retained_replay: false,
            received_ms: NOW,
        }
    }

    #[test]
    fn a_topic_starting_with_a_multibyte_character_is_no_mapping_not_a_panic() {
        // Found by the mapping_payload fuzz target (issue 14): rumqttc's
        // matcher sliced `topic[..1]`, so one such publish aborted the gateway.
        let mut s = stage(TASMOTA);
        assert!(!s.handles("\u{7df}"));
        assert_eq!(s.handle(&msg("é/plug/SENSOR", "{}")), Outcome::NoMapping);
        assert!(s.handles("tele/é/SENSOR"));
    }

    const SHELLY: &str = include_str!("../../../config/mappings/shelly_gen2_switch.toml");
    const SHELLY_TOPIC: &str = "shellyplusplugs-e465b8b2f0c4/status/switch:0";

    fn shelly(output: &str) -> String {
        format!(
            r#"{{"id":0,"source":"init","output":{output},"apower":1500.25,"voltage":230.1,"freq":50.0,"current":6.523,"aenergy":{{"total":12345.678}},"temperature":{{"tC":41.2,"tF":106.2}}}}"#
        )
    }

    /// The frame the writer would store: the buffer gives seq 1 and checks
    /// the frame rules (`Frame::validate`) before it writes anything.
    fn valid_once_sequenced(m: &Mapped) -> Result<(), mrv_shared::wire::FrameError> {
        let mut f = m.frame.clone();
        f.seq = 1;
        f.validate()
    }

    #[test]
    fn a_status_other_than_0_or_1_is_rejected_never_an_invalid_frame() {
        // Found by the mapping_payload fuzz target (issue 14): `"output":1844`
        // on the Shelly mapping's status field became a frame with status
        // value 1844, which breaks the frame rules (status is 0 or 1); the
        // buffer refused it, and with it the whole group commit it was in.
        let crash = include_bytes!(
            "../../../fuzz/regressions/mapping_payload/crash-5653adee6fa77e712c24813b421ecf5c4ece1066"
        );
        let (topic_choice, payload) = (crash[0], &crash[2..]);
        assert_eq!(
            topic_choice, 0,
            "the fuzz target's topic 0 is the Shelly topic"
        );
        let mut s = stage(SHELLY);
        let r = rejected(s.handle(&Message {
            topic: SHELLY_TOPIC,
            payload,
            retained_replay: false,
            received_ms: NOW,
        }));
        assert_eq!(r.reason, "out_of_range", "{r:?}");
        assert!(r.detail.contains("$.output = 1844"), "{r:?}");
        assert_eq!(
            r.device.as_ref().map(|d| d.as_str()),
            Some("shellyplusplugs-e465b8b2f0c4")
        );
        assert_eq!(s.remembered(), 0, "a rejection keeps no dedup key");

        // Numbers that are not exactly 0 or 1 are refused, never rounded
        // into a status or carried over.
        for bad in ["2", "-1", "1844", "0.5", "0.7", "1.2", "-0.4", "1e3"] {
            let r = rejected(s.handle(&msg(SHELLY_TOPIC, &shelly(bad))));
            assert_eq!(r.reason, "out_of_range", "{bad}: {r:?}");
            assert!(r.detail.starts_with("$.output = "), "{bad}: {r:?}");
        }
        // true/false and the numbers 0 and 1 (also as 1.0) are statuses.
        for (good, value) in [
            ("true", 1),
            ("false", 0),
            ("1", 1),
            ("0", 0),
            ("1.0", 1),
            ("0.0", 0),
        ] {
            let m = frame(s.handle(&msg(SHELLY_TOPIC, &shelly(good))));
            let relay = m
                .frame
                .channels
                .iter()
                .position(|c| c.id.as_str() == "relay");
            let sample = m
                .frame
                .samples
                .iter()
                .find(|x| Some(usize::from(x.channel)) == relay);
            assert_eq!(
                sample.map(|x| (x.value, x.quality)),
                Some((value, Quality::GOOD)),
                "{good}"
            );
            assert_eq!(valid_once_sequenced(&m), Ok(()), "{good}");
            s.settle(&m.key, false);
        }
    }

    const TASMOTA: &str = r#"
[[mapping]]
id = "tasmota"
topic = "tele/+/SENSOR"
device = { topic_level = 1 }
device_prefix = "tas-"
[mapping.timestamp]
path = "$.Time"
format = "rfc3339"
max_skew_s = 60
[[mapping.fields]]
channel = "energy"
path = "$.ENERGY.Total"
quantity = "energy"
unit = "kWh"
kind = "counter"
[[mapping.fields]]
channel = "power"
path = "$.ENERGY.Power"
quantity = "power"
unit = "W"
min = 0
max = 4000000
"#;

    fn frame(o: Outcome) -> Mapped {
        match o {
            Outcome::Frame(m) => *m,
            other => panic!("not a frame: {other:?}"),
        }
    }

    fn rejected(o: Outcome) -> Rejection {
        match o {
            Outcome::Rejected(r) => r,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn a_tasmota_sensor_message_becomes_an_exact_gateway_sequenced_frame() {
        let mut s = stage(TASMOTA);
        let m = frame(s.handle(&msg(
            "tele/plug-7/SENSOR",
            r#"{"Time":"2025-12-01T12:59:30+01:00","ENERGY":{"Total":123.4565,"Power":45.5}}"#,
        )));
        let f = &m.frame;
        assert_eq!(f.device.as_str(), "tas-plug-7");
        assert_eq!((f.seq, f.firmware.as_str()), (0, "map:tasmota"));
        assert!(f.signature.is_none());
        assert_eq!(m.time, TimeSource::Payload);
        assert_eq!(f.base_time_ms, Some(NOW - 30_000));
        // 123.4565 kWh = 123456.5 Wh: rounded half away from zero, flagged.
        assert_eq!(
            (f.samples[0].value, f.samples[0].quality),
            (123_457, Quality::ROUNDED)
        );
        // 45.5 W = 45500 mW exactly.
        assert_eq!(
            (f.samples[1].value, f.samples[1].quality),
            (45_500, Quality::GOOD)
        );
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason_never_a_fallback() {
        let mut s = stage(TASMOTA);
        let t = "tele/plug-7/SENSOR";
        let cases = [
            (
                r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Power":45}}"#,
                "missing_path",
            ),
            (
                r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":"12.5","Power":45}}"#,
                "not_a_number",
            ),
            (
                r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":null,"Power":45}}"#,
                "not_a_number",
            ),
            (
                r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":1,"Power":-3}}"#,
                "out_of_range",
            ),
            (
                r#"{"Time":"2025-12-01T12:00:00","ENERGY":{"Total":1,"Power":3}}"#,
                "bad_timestamp",
            ),
            (r#"{"ENERGY":{"Total":1,"Power":3}}"#, "missing_timestamp"),
            (
                r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":1e300,"Power":3}}"#,
                "overflow",
            ),
            (r#"{"Time": NaN}"#, "not_json"),
            ("not json", "not_json"),
        ];
        for (payload, reason) in cases {
            let r = rejected(s.handle(&msg(t, payload)));
            assert_eq!(r.reason, reason, "{payload}: {r:?}");
            assert_eq!(r.device.as_ref().map(|d| d.as_str()), Some("tas-plug-7"));
            assert_eq!(r.mapping, "tasmota");
        }
        let r = rejected(s.handle(&msg(
            "tele/a b/SENSOR",
            r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":1,"Power":3}}"#,
        )));
        assert_eq!(r.reason, "bad_device_id");
        let several = "[[mapping]]\nid = \"m\"\ntopic = \"x/+\"\ndevice = { topic_level = 1 }\n[[mapping.fields]]\nchannel = \"t\"\npath = \"$..t\"\nquantity = \"temperature\"\nunit = \"degC\"\n";
        let r = rejected(stage(several).handle(&msg("x/d1", r#"{"a":{"t":1},"b":{"t":2}}"#)));
        assert_eq!(r.reason, "multiple_matches");
        assert_eq!(r.detail, "$..t matches several values");
    }

    #[test]
    fn a_far_off_payload_clock_gives_receipt_time_and_a_flag() {
        let mut s = stage(TASMOTA);
        let m = frame(s.handle(&msg(
            "tele/p/SENSOR",
            r#"{"Time":"1970-01-01T00:05:00Z","ENERGY":{"Total":1,"Power":2}}"#,
        )));
        assert!(matches!(m.time, TimeSource::ReceiptSkewed(s) if s < 0));
        assert_eq!(m.frame.base_time_ms, None);
        assert!(
            m.frame
                .samples
                .iter()
                .all(|s| s.quality.contains(Quality::CLOCK_UNSYNCED))
        );
    }

    #[test]
    fn duplicates_are_caught_by_timestamp_and_a_failed_store_forgets_the_key() {
        let mut s = stage(TASMOTA);
        let p = r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":1,"Power":2}}"#;
        let m = frame(s.handle(&msg("tele/p/SENSOR", p)));
        // A redelivery while the first is still being written: a duplicate
        // of a pending key.
        assert!(matches!(
            s.handle(&msg("tele/p/SENSOR", p)),
            Outcome::Duplicate { pending: Some(k), .. } if k == m.key
        ));
        // The store failed: the redelivery must be stored.
        s.settle(&m.key, false);
        let m2 = frame(s.handle(&msg("tele/p/SENSOR", p)));
        s.settle(&m2.key, true);
        assert!(matches!(
            s.handle(&msg("tele/p/SENSOR", p)),
            Outcome::Duplicate { pending: None, .. }
        ));
        // Same time from another device is not a duplicate.
        assert!(matches!(
            s.handle(&msg("tele/q/SENSOR", p)),
            Outcome::Frame(_)
        ));
        // After the window the key is gone.
        let mut late = msg("tele/p/SENSOR", p);
        late.received_ms = NOW + 601_000;
        assert!(matches!(
            s.handle(&late),
            Outcome::Frame(_) | Outcome::Rejected(_)
        ));
    }

    #[test]
    fn retained_replays_are_not_data_and_unknown_topics_have_no_mapping() {
        let mut s = stage(TASMOTA);
        let mut m = msg(
            "tele/p/SENSOR",
            r#"{"Time":"2025-12-01T12:00:00Z","ENERGY":{"Total":1,"Power":2}}"#,
        );
        m.retained_replay = true;
        assert_eq!(
            s.handle(&m),
            Outcome::RetainedReplay {
                mapping: "tasmota".into()
            }
        );
        assert_eq!(s.handle(&msg("stat/p/RESULT", "{}")), Outcome::NoMapping);
        assert_eq!(s.remembered(), 0);
    }

    #[test]
    fn without_a_timestamp_identical_payloads_are_deduplicated_by_hash() {
        let text = "[[mapping]]\nid = \"m\"\ntopic = \"x/+\"\ndevice = { path = \"$.src\" }\n[[mapping.fields]]\nchannel = \"on\"\npath = \"$.output\"\nquantity = \"status\"\n";
        let mut s = stage(text);
        let p = r#"{"src":"relay-1","output":true}"#;
        let m = frame(s.handle(&msg("x/1", p)));
        assert_eq!(m.frame.device.as_str(), "relay-1");
        assert_eq!(m.frame.samples[0].value, 1);
        assert_eq!(m.time, TimeSource::Receipt);
        s.settle(&m.key, true);
        assert!(matches!(
            s.handle(&msg("x/1", p)),
            Outcome::Duplicate { .. }
        ));
        assert!(matches!(
            s.handle(&msg("x/1", r#"{"src":"relay-1","output":false}"#)),
            Outcome::Frame(_)
        ));
        let r = rejected(s.handle(&msg("x/1", r#"{"src":{"id":1},"output":false}"#)));
        assert_eq!(r.reason, "bad_device_id");
    }

    const PADDY: &str = include_str!("../../../config/mappings/chirpstack_paddy_water_level.toml");
    const UP: &str = "application/app-1/device/a84041000181c0d3/event/up";

    fn cs_up(dedup: &str, addr: &str, fcnt: u32, level: &str) -> String {
        format!(
            r#"{{"deduplicationId":"{dedup}","time":"2025-12-01T12:00:00.482+00:00","deviceInfo":{{"applicationId":"app-1","deviceName":"awd-tube-3","devEui":"a84041000181c0d3","tags":{{}}}},"devAddr":"{addr}","fCnt":{fcnt},"fPort":2,"object":{{"water_level_cm":{level}}},"rxInfo":[{{"gatewayId":"0016c001f153a14c","rssi":-97,"snr":7.5}}]}}"#
        )
    }

    fn cs_stored(s: &mut MappingStage, payload: &str) -> Mapped {
        let m = frame(s.handle(&msg(UP, payload)));
        s.settle(&m.key, true);
        m
    }

    fn lost_of(n: &[Notice]) -> Vec<(u32, u32)> {
        n.iter()
            .filter_map(|n| match n {
                Notice::UplinksLost { lost, .. } => Some((lost.first, lost.last)),
                _ => None,
            })
            .collect()
    }

    fn resets_of(n: &[Notice]) -> Vec<(&'static str, u32)> {
        n.iter()
            .filter_map(|n| match n {
                Notice::SessionReset { reset, .. } => Some((reset.cause.name(), reset.epoch)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_chirpstack_uplink_maps_object_fields_with_the_event_time() {
        let mut s = stage(PADDY);
        let m = cs_stored(&mut s, &cs_up("d-1", "00e1a2b3", 10, "-3.5"));
        assert_eq!(m.frame.device.as_str(), "awd-tube-3");
        assert_eq!(m.frame.firmware, "map:paddy-awd");
        assert_eq!(m.time, TimeSource::Payload);
        assert_eq!(m.frame.base_time_ms, Some(NOW + 482));
        assert_eq!(
            (m.frame.samples[0].value, m.frame.samples[0].quality),
            (-35, Quality::GOOD)
        );
        assert!(
            s.take_notices().is_empty(),
            "the first uplink heard says nothing"
        );
    }

    #[test]
    fn chirpstack_duplicates_are_caught_by_deduplication_id_and_by_fcnt() {
        let mut s = stage(PADDY);
        let first = frame(s.handle(&msg(UP, &cs_up("d-1", "0a", 10, "1"))));
        // A redelivery while the first copy is being written: pending.
        assert!(matches!(
            s.handle(&msg(UP, &cs_up("d-1", "0a", 10, "1"))),
            Outcome::Duplicate { pending: Some(k), .. } if k == first.key
        ));
        s.settle(&first.key, true);
        assert!(matches!(
            s.handle(&msg(UP, &cs_up("d-1", "0a", 10, "1"))),
            Outcome::Duplicate { pending: None, .. }
        ));
        // The same (devEui, epoch, fCnt) under another deduplicationId.
        assert!(matches!(
            s.handle(&msg(UP, &cs_up("d-other", "0a", 10, "1"))),
            Outcome::Duplicate { pending: None, .. }
        ));
        // Refused for space: forgotten, so the re-offer is stored, no gap.
        let next = frame(s.handle(&msg(UP, &cs_up("d-2", "0a", 11, "1"))));
        s.settle(&next.key, false);
        let again = cs_stored(&mut s, &cs_up("d-2", "0a", 11, "1"));
        assert_eq!(again.key, next.key);
        assert!(s.take_notices().is_empty(), "no loss, no reset");
    }

    #[test]
    fn an_fcnt_jump_is_lost_uplinks_and_a_join_or_fall_starts_an_epoch() {
        let mut s = stage(PADDY);
        cs_stored(&mut s, &cs_up("d-1", "0a", 10, "1"));
        cs_stored(&mut s, &cs_up("d-2", "0a", 13, "1"));
        assert_eq!(lost_of(&s.take_notices()), [(11, 12)]);
        // A join: epoch 1, fCnt 0 expected; 0 is then not a duplicate of
        // anything in epoch 0.
        let join = r#"{"deduplicationId":"j-1","time":"2025-12-01T12:00:00Z","deviceInfo":{"deviceName":"awd-tube-3","devEui":"a84041000181c0d3"},"devAddr":"0b"}"#;
        let jt = "application/app-1/device/a84041000181c0d3/event/join";
        assert_eq!(
            s.handle(&msg(jt, join)),
            Outcome::NotData {
                mapping: "paddy-awd".into(),
                what: "lorawan_join"
            }
        );
        assert!(matches!(
            s.handle(&msg(jt, join)),
            Outcome::NotData {
                what: "lorawan_duplicate",
                ..
            }
        ));
        assert_eq!(resets_of(&s.take_notices()), [("join", 1)]);
        cs_stored(&mut s, &cs_up("d-3", "0b", 0, "1"));
        cs_stored(&mut s, &cs_up("d-4", "0b", 1, "1"));
        assert!(s.take_notices().is_empty());
        // fCnt back to 0 without a join (an ABP reset): epoch 2.
        cs_stored(&mut s, &cs_up("d-5", "0b", 0, "1"));
        assert_eq!(resets_of(&s.take_notices()), [("fcnt_backwards", 2)]);
        // A new devAddr without a join seen: epoch 3, no loss claimed.
        cs_stored(&mut s, &cs_up("d-6", "0c", 5, "1"));
        let n = s.take_notices();
        assert_eq!(resets_of(&n), [("dev_addr_change", 3)]);
        assert!(lost_of(&n).is_empty());
    }

    #[test]
    fn a_codec_failure_quarantines_the_uplink_with_chirpstacks_reason() {
        let mut s = stage(PADDY);
        let log = r#"{"time":"2025-12-01T12:00:00Z","deviceInfo":{"deviceName":"awd-tube-3","devEui":"a84041000181c0d3"},"level":"ERROR","code":"UPLINK_CODEC","description":"TypeError: bytes[3] is undefined","context":{"deduplication_id":"d-7"}}"#;
        let lt = "application/app-1/device/a84041000181c0d3/event/log";
        assert!(matches!(
            s.handle(&msg(lt, log)),
            Outcome::NotData {
                what: "lorawan_log",
                ..
            }
        ));
        let n = s.take_notices();
        assert!(matches!(&n[..], [Notice::DeviceLog { code, .. }] if code == "UPLINK_CODEC"));
        let no_object = cs_up("d-7", "0a", 3, "1").replace(r#""object":{"water_level_cm":1},"#, "");
        let r = rejected(s.handle(&msg(UP, &no_object)));
        assert_eq!(r.reason, "codec_error");
        assert!(r.detail.contains("bytes[3] is undefined"), "{}", r.detail);
        assert_eq!(r.device.as_ref().map(|d| d.as_str()), Some("awd-tube-3"));
        // Without a log: missing_object. The fCnt still counts as heard.
        let no_object = cs_up("d-8", "0a", 4, "1").replace(r#""object":{"water_level_cm":1},"#, "");
        assert_eq!(
            rejected(s.handle(&msg(UP, &no_object))).reason,
            "missing_object"
        );
        cs_stored(&mut s, &cs_up("d-9", "0a", 5, "1"));
        assert!(lost_of(&s.take_notices()).is_empty());
        // Bad values are rejected as in any mapping.
        for (payload, reason) in [
            (cs_up("d-10", "0a", 6, "\"-3.5 cm\""), "not_a_number"),
            (cs_up("d-11", "0a", 7, "-250"), "out_of_range"),
            (
                cs_up("d-12", "0a", 8, "1").replace("deduplicationId", "x"),
                "missing_path",
            ),
        ] {
            assert_eq!(
                rejected(s.handle(&msg(UP, &payload))).reason,
                reason,
                "{payload}"
            );
        }
        // Other event types are not data.
        assert!(matches!(
            s.handle(&msg(
                "application/app-1/device/a84041000181c0d3/event/status",
                r#"{"deviceInfo":{"deviceName":"awd-tube-3","devEui":"a84041000181c0d3"},"batteryLevel":90}"#
            )),
            Outcome::NotData { what: "lorawan_other_event", .. }
        ));
    }

    #[test]
    fn a_chirpstack_mapping_needs_the_event_tree_and_a_device_info_id() {
        let e = parse_mappings(&PADDY.replace("event/+", "event/up"), Path::new("t.toml"))
            .expect_err("event type fixed");
        assert_eq!(e.key, "mapping[0].topic");
        let e = parse_mappings(
            &PADDY.replace("$.deviceInfo.deviceName", "$.object.id"),
            Path::new("t.toml"),
        )
        .expect_err("device id outside deviceInfo");
        assert_eq!(e.key, "mapping[0].device");
    }

    #[test]
    fn the_device_id_can_come_from_a_chirpstack_tag() {
        let text = PADDY.replace("$.deviceInfo.deviceName", "$.deviceInfo.tags.mrv_device");
        let mut s = stage(&text);
        let tagged = cs_up("d-1", "0a", 1, "1")
            .replace(r#""tags":{}"#, r#""tags":{"mrv_device":"tube-n3"}"#);
        assert_eq!(
            frame(s.handle(&msg(UP, &tagged))).frame.device.as_str(),
            "tube-n3"
        );
        // No such tag: refused, naming the path (never the devEui as a fallback).
        let r = rejected(s.handle(&msg(UP, &cs_up("d-2", "0a", 2, "1"))));
        assert_eq!(r.reason, "missing_path");
        assert!(
            r.detail.contains("$.deviceInfo.tags.mrv_device"),
            "{}",
            r.detail
        );
        // Two radios with the same tag do not deduplicate each other by fCnt.
        let other = tagged
            .replace("a84041000181c0d3", "a84041000181c0d4")
            .replace("d-1", "d-3");
        assert!(matches!(s.handle(&msg(UP, &other)), Outcome::Frame(_)));
    }
}
