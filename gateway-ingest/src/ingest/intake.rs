//! The publish-handling entry point: one MQTT publish in, its durable
//! outcome out.
//!
//! Both ways frames arrive call it: the embedded endpoint
//! ([`crate::endpoint`]) for every PUBLISH a device sends, and the external
//! broker client ([`super::mqtt_task`]) for every message of its
//! subscription. [`PublishHandler`] is the seam.
//!
//! Two kinds of publish:
//! - on the gateway's own tree (`mrv/<site>/<device>/up`): a device frame,
//!   through admission ([`super::admit`]) to the writer;
//! - on a topic a third-party mapping's filter matches (`[[mapping]]`, e.g.
//!   `shellies/.../status/switch:0`, `tele/<plug>/SENSOR`): through the
//!   mapping stage ([`crate::mapping::MappingStage`]) to a gateway-sequenced,
//!   unsigned frame. The mapped device must be in `[[devices]]` without a
//!   key (unless `mqtt.accept_unknown_devices`: then it is reported as
//!   `unregistered`), and a device-bound login may only send for its own
//!   device. Rejections (reason codes of the stage plus `unknown_device`,
//!   `signed_device`, `not_bound_device`) are quarantined with the raw
//!   payload, counted per device and reason, logged (rate-limited) and
//!   recorded as `frame_rejected` events (at most one per device and reason
//!   per hour). Duplicates (the mapping's dedup) resolve to
//!   `Stored(Duplicate)` (a duplicate of a first copy still being written
//!   waits for that copy's outcome, and is re-offered like a refused one if
//!   the copy was refused for space); retained replays from an external
//!   broker to [`Disposition::Ignored`]; both are counted.
//!
//! Invariants:
//! - a [`Receipt`] resolves to [`Disposition::Stored`] only after the
//!   writer's group commit containing the frame returned from fdatasync (the
//!   writer's oneshot reply), and to [`Disposition::WriteFailed`] when the
//!   writer dropped the reply (the buffer failed; nothing may be acked);
//! - a mapped frame's dedup key is settled *before* its receipt resolves:
//!   kept when the frame is on disk, forgotten otherwise, so a re-offer of a
//!   publish refused for space (both paths re-offer third-party publishes)
//!   is stored, not taken for a duplicate.

use super::admit::{AdmissionRules, admit};
use super::quarantine::{Quarantine, Quarantined};
use super::reject_log::{LogDecision, RejectLog};
use super::stats::IngestStats;
use super::writer::WriteRequest;
use crate::config::DeviceRegistry;
use crate::mapping::stage::{DedupKey, Rejection as MappingRejection};
use crate::mapping::{MappingStage, Message, Notice, Outcome, ValidMapping};
use bytes::Bytes;
use mrv_gateway_buffer::{AppendOutcome, Incoming};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::{DeviceId, SiteId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Who sent a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// MQTT client id (as sent, or assigned by the endpoint).
    pub client_id: String,
    /// User name it logged in with, if any.
    pub username: Option<String>,
    /// The device its credential is bound to, if the account is per device.
    pub bound_device: Option<DeviceId>,
    /// Network peer (for the external broker: the broker's address is not
    /// known per message, so `None`).
    pub peer: Option<SocketAddr>,
}

/// One publish to handle.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS level it was published with (0, 1, 2).
    pub qos: u8,
    /// Retain flag as sent (nothing is retained; see `docs/PROTOCOL.md`).
    pub retain: bool,
    /// True only when an external broker sent this as a retained message
    /// because the gateway (re)subscribed: old state, never new data
    /// (third-party mappings ignore it). The embedded endpoint never replays.
    pub retained_replay: bool,
    /// Sender.
    pub client: Arc<ClientIdentity>,
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The buffer decided (after the flush): stored, duplicate, regressed,
    /// refused for space, above a hole (out of order), or invalid (refused
    /// for good, see `AppendOutcome::Invalid`).
    Stored(AppendOutcome),
    /// Refused before the buffer (topic, size, decoding, registry,
    /// signature): counted under this reason, quarantined, logged.
    Refused(&'static str),
    /// The write failed; the frame is not durable. Nothing may be acked.
    WriteFailed,
    /// Handled and acknowledged, but not data (a retained message an
    /// external broker replayed at subscription); counted under this reason.
    Ignored(&'static str),
}

/// The outcome of a publish, now or later.
pub enum Receipt {
    /// Decided at once (refused).
    Ready(Disposition),
    /// Resolves once the frame's group commit returned.
    Pending(Pin<Box<dyn Future<Output = Disposition> + Send>>),
}

impl Receipt {
    /// Waits for the disposition.
    pub async fn wait(self) -> Disposition {
        match self {
            Receipt::Ready(d) => d,
            Receipt::Pending(f) => f.await,
        }
    }

    fn from_writer(rx: oneshot::Receiver<AppendOutcome>) -> Receipt {
        Receipt::Pending(Box::pin(async move {
            match rx.await {
                Ok(o) => Disposition::Stored(o),
                Err(_) => Disposition::WriteFailed,
            }
        }))
    }
}

/// Handles publishes: (topic, payload, qos, retain, client) -> durable outcome.
pub trait PublishHandler: Send + Sync + 'static {
    /// Takes one publish. Must not block: heavy work goes to the writer.
    fn handle(&self, publish: Publish) -> Receipt;
}

/// The device-frame intake: admission (topic, size, decode, registry,
/// signature), then the durable writer. Rejections are counted by reason,
/// quarantined, logged (rate-limited) and recorded as events.
pub struct FrameIntake {
    site: SiteId,
    registry: Arc<DeviceRegistry>,
    max_payload_bytes: usize,
    accept_unknown_devices: bool,
    writes: mpsc::UnboundedSender<WriteRequest>,
    stats: Arc<IngestStats>,
    quarantine: Arc<Mutex<Quarantine>>,
    events: mpsc::UnboundedSender<Event>,
    now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    reject_log: Mutex<RejectLog>,
    mapping: Option<Arc<Mutex<MappedState>>>,
    mapping_events: Mutex<HourlyEventGate>,
}

/// The mapping stage and the duplicates waiting for a pending first copy,
/// under one lock (a key is settled and its waiters woken atomically).
struct MappedState {
    stage: MappingStage,
    waiters: HashMap<DedupKey, Vec<oneshot::Sender<Disposition>>>,
}

impl MappedState {
    /// Settles `key` with what became of its first copy (kept if on disk,
    /// forgotten otherwise) and tells the duplicates that waited for it.
    fn settle(&mut self, key: &DedupKey, first: Disposition) {
        let on_disk = matches!(
            first,
            Disposition::Stored(AppendOutcome::Stored | AppendOutcome::Duplicate)
        );
        self.stage.settle(key, on_disk);
        for w in self.waiters.remove(key).unwrap_or_default() {
            let _ = w.send(first);
        }
    }
}

/// What a duplicate that waited for its pending first copy becomes, given
/// what became of that copy: a duplicate once the first is on disk; refused
/// for good with it if the buffer found it invalid (the same message would
/// be again); otherwise re-offered like a frame refused for space (the key
/// was forgotten, so the re-offer is stored).
fn waiting_duplicate(first: Disposition) -> Disposition {
    match first {
        Disposition::Stored(AppendOutcome::Stored | AppendOutcome::Duplicate) => {
            Disposition::Stored(AppendOutcome::Duplicate)
        }
        Disposition::Stored(AppendOutcome::Invalid) => Disposition::Stored(AppendOutcome::Invalid),
        _ => Disposition::Stored(AppendOutcome::BufferFull),
    }
}

/// The receipt of a mapped frame: settles the frame's dedup key when the
/// writer's outcome arrives (kept if on disk, forgotten otherwise), then
/// resolves. If it is dropped before that (the device's connection closed),
/// a task settles the key once the outcome arrives, so a redelivery is
/// judged right. No task and no second channel per message otherwise.
struct MappedReceipt {
    rx: Option<oneshot::Receiver<AppendOutcome>>,
    key: Option<DedupKey>,
    stage: Arc<Mutex<MappedState>>,
}

impl MappedReceipt {
    fn settle(stage: &Mutex<MappedState>, key: &DedupKey, d: Disposition) {
        stage
            .lock()
            .expect("mapping lock is never poisoned: no panics while held")
            .settle(key, d);
    }

    fn disposition(r: Result<AppendOutcome, oneshot::error::RecvError>) -> Disposition {
        match r {
            Ok(o) => Disposition::Stored(o),
            Err(_) => Disposition::WriteFailed,
        }
    }
}

impl Future for MappedReceipt {
    type Output = Disposition;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Disposition> {
        let Some(rx) = self.rx.as_mut() else {
            return std::task::Poll::Ready(Disposition::WriteFailed);
        };
        let d = match Pin::new(rx).poll(cx) {
            std::task::Poll::Pending => return std::task::Poll::Pending,
            std::task::Poll::Ready(r) => Self::disposition(r),
        };
        self.rx = None;
        if let Some(key) = self.key.take() {
            Self::settle(&self.stage, &key, d);
        }
        std::task::Poll::Ready(d)
    }
}

impl Drop for MappedReceipt {
    fn drop(&mut self) {
        let (Some(rx), Some(key)) = (self.rx.take(), self.key.take()) else {
            return;
        };
        let stage = self.stage.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let d = Self::disposition(rx.await);
                    Self::settle(&stage, &key, d);
                });
            }
            // Outside a runtime nothing can await the writer: forget the
            // key (a redelivery is then stored, never lost).
            Err(_) => Self::settle(&stage, &key, Disposition::WriteFailed),
        }
    }
}

/// What [`FrameIntake`] needs.
pub struct FrameIntakeParts {
    /// This site.
    pub site: SiteId,
    /// Registered devices and keys.
    pub registry: Arc<DeviceRegistry>,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Accept devices missing from the registry.
    pub accept_unknown_devices: bool,
    /// To the writer.
    pub writes: mpsc::UnboundedSender<WriteRequest>,
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Rejected payloads.
    pub quarantine: Arc<Mutex<Quarantine>>,
    /// Events to record.
    pub events: mpsc::UnboundedSender<Event>,
    /// Wall clock, Unix ms.
    pub now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Third-party mappings (`[[mapping]]`), validated; may be empty.
    pub mappings: Vec<ValidMapping>,
    /// The mappings' dedup memory budget, bytes.
    pub mapping_dedup_memory_bytes: usize,
}

/// At most one event per (device, reason) per hour: for rejected
/// third-party messages (every one is counted and quarantined) and for
/// frames the buffer refuses as invalid (every one is counted; see
/// `writer`).
#[derive(Debug, Default)]
pub(crate) struct HourlyEventGate {
    last: HashMap<(String, &'static str), u64>,
}

impl HourlyEventGate {
    const EVERY_MS: u64 = 3_600_000;

    /// True the first time (device, reason) is seen, then once an hour.
    pub(crate) fn allow(&mut self, device: &str, reason: &'static str, now_ms: u64) -> bool {
        if self.last.len() > 10_000 {
            self.last.clear();
        }
        match self.last.get(&(device.to_string(), reason)) {
            Some(&t) if now_ms.saturating_sub(t) < Self::EVERY_MS => false,
            _ => {
                self.last.insert((device.to_string(), reason), now_ms);
                true
            }
        }
    }
}

impl FrameIntake {
    /// Builds the intake.
    pub fn new(p: FrameIntakeParts) -> Self {
        let mapping = (!p.mappings.is_empty()).then(|| {
            Arc::new(Mutex::new(MappedState {
                stage: MappingStage::with_dedup_budget(
                    p.site.clone(),
                    p.mappings,
                    p.mapping_dedup_memory_bytes,
                ),
                waiters: HashMap::new(),
            }))
        });
        Self {
            site: p.site,
            registry: p.registry,
            max_payload_bytes: p.max_payload_bytes,
            accept_unknown_devices: p.accept_unknown_devices,
            writes: p.writes,
            stats: p.stats,
            quarantine: p.quarantine,
            events: p.events,
            now_ms: p.now_ms,
            reject_log: Mutex::new(RejectLog::default()),
            mapping,
            mapping_events: Mutex::new(HourlyEventGate::default()),
        }
    }

    /// The third-party mappings' topic filters (what an external-broker
    /// client subscribes to besides the gateway's own tree).
    pub fn mapping_filters(&self) -> Vec<String> {
        self.mapping.as_ref().map_or_else(Vec::new, |m| {
            self.stage(m)
                .stage
                .filters()
                .into_iter()
                .map(str::to_string)
                .collect()
        })
    }

    /// The mapping filters a device-bound login of the embedded endpoint may
    /// publish on (`plain` mappings; a `chirpstack_v4` filter needs a site
    /// login: it speaks for the network server, about every device).
    pub fn device_mapping_filters(&self) -> Vec<String> {
        self.mapping.as_ref().map_or_else(Vec::new, |m| {
            self.stage(m)
                .stage
                .device_filters()
                .into_iter()
                .map(str::to_string)
                .collect()
        })
    }

    /// The LoRaWAN (ChirpStack) devices' frame-counter sessions (empty
    /// without `chirpstack_v4` mappings).
    pub fn lorawan_sessions(&self) -> Vec<crate::mapping::chirpstack::SessionView> {
        self.mapping
            .as_ref()
            .map_or_else(Vec::new, |m| self.stage(m).stage.lorawan_sessions())
    }

    /// The mapping stage's dedup memory (all zero without mappings).
    pub fn dedup_memory(&self) -> crate::mapping::stage::DedupMemoryStats {
        self.mapping
            .as_ref()
            .map_or_else(Default::default, |m| self.stage(m).stage.dedup_memory())
    }

    /// True when `topic` is handled by a third-party mapping (outside the
    /// gateway's `mrv/` tree and matched by a mapping's filter).
    pub fn is_mapped_topic(&self, topic: &str) -> bool {
        !topic.starts_with("mrv/")
            && self
                .mapping
                .as_ref()
                .is_some_and(|m| self.stage(m).stage.handles(topic))
    }

    fn stage<'a>(&self, m: &'a Mutex<MappedState>) -> std::sync::MutexGuard<'a, MappedState> {
        m.lock()
            .expect("mapping lock is never poisoned: no panics while held")
    }

    /// A third-party publish through the mapping stage.
    fn handle_mapped(&self, stage: &Arc<Mutex<MappedState>>, p: Publish, now: u64) -> Receipt {
        // Held through the frame's hand-over to the writer, so a duplicate
        // cannot slip between the key's creation and a refusal's settlement.
        let mut st = self.stage(stage);
        let outcome = st.stage.handle(&Message {
            topic: &p.topic,
            payload: &p.payload,
            retained_replay: p.retained_replay,
            received_ms: now,
        });
        for n in st.stage.take_notices() {
            self.record_notice(n, now);
        }
        match outcome {
            Outcome::NotData { mapping, what } => {
                tracing::debug!(%mapping, topic = %p.topic, what, "ChirpStack event handled (not a reading)");
                Receipt::Ready(Disposition::Ignored(what))
            }
            Outcome::Frame(m) => {
                let device = &m.frame.device;
                let refused = match self.registry.get(device) {
                    None if self.accept_unknown_devices => None,
                    None => Some((
                        "unknown_device",
                        format!("device {device} is not in [[devices]]"),
                    )),
                    Some(info) if info.public_key.is_some() => Some((
                        "signed_device",
                        format!(
                            "device {device} has a registered key; a mapped third-party message carries no signature"
                        ),
                    )),
                    Some(_) => None,
                }
                .or_else(|| {
                    p.client
                        .bound_device
                        .as_ref()
                        .filter(|b| *b != device)
                        .map(|b| {
                            (
                                "not_bound_device",
                                format!(
                                    "the login is bound to device {b}, the message maps to device {device}"
                                ),
                            )
                        })
                });
                if let Some((reason, detail)) = refused {
                    st.settle(&m.key, Disposition::Refused(reason));
                    drop(st);
                    return self.refuse_mapped(
                        &p,
                        now,
                        MappingRejection {
                            mapping: m.mapping,
                            device: Some(m.frame.device),
                            reason,
                            detail,
                        },
                    );
                }
                IngestStats::add(&self.stats.mapped_messages, 1);
                let (tx, rx) = oneshot::channel();
                let key = m.key;
                let sent = self.writes.send(WriteRequest {
                    incoming: Incoming {
                        frame: m.frame,
                        received_ms: now,
                    },
                    origin: super::writer::Origin::Gateway,
                    reply: Some(tx),
                });
                if sent.is_err() {
                    st.settle(&key, Disposition::WriteFailed);
                    return Receipt::Ready(Disposition::WriteFailed);
                }
                drop(st);
                Receipt::Pending(Box::pin(MappedReceipt {
                    rx: Some(rx),
                    key: Some(key),
                    stage: stage.clone(),
                }))
            }
            Outcome::Duplicate {
                mapping,
                device,
                pending,
            } => {
                IngestStats::add(&self.stats.mapped_duplicates, 1);
                tracing::debug!(%mapping, %device, topic = %p.topic, "third-party duplicate");
                let Some(key) = pending else {
                    return Receipt::Ready(Disposition::Stored(AppendOutcome::Duplicate));
                };
                // The first copy is still being written: acknowledge this one
                // only once that is on disk (see `waiting_duplicate`).
                let (tx, rx) = oneshot::channel();
                st.waiters.entry(key).or_default().push(tx);
                Receipt::Pending(Box::pin(async move {
                    match rx.await {
                        Ok(first) => waiting_duplicate(first),
                        Err(_) => Disposition::WriteFailed,
                    }
                }))
            }
            Outcome::RetainedReplay { mapping } => {
                IngestStats::add(&self.stats.retained_ignored, 1);
                tracing::debug!(%mapping, topic = %p.topic, "retained message replayed by the broker: not new data");
                Receipt::Ready(Disposition::Ignored("retained_replay"))
            }
            Outcome::Rejected(r) => {
                drop(st);
                self.refuse_mapped(&p, now, r)
            }
            Outcome::NoMapping => {
                // `is_mapped_topic` said a filter matches: cannot happen.
                self.stats.count_reject("no_mapping");
                Receipt::Ready(Disposition::Refused("no_mapping"))
            }
        }
    }

    /// Records, counts and logs what a ChirpStack event said about its
    /// device (`docs/LORAWAN.md`): a new frame-counter epoch and lost
    /// uplinks become recorded events (they travel in signed reports); a
    /// device `log` is counted and logged only (its codec errors also reject
    /// the uplink they concern, which records `frame_rejected`). Nothing is
    /// recorded for devices the registry does not accept (unknown, or
    /// registered with a key: their mapped uplinks are refused).
    fn record_notice(&self, n: Notice, now: u64) {
        let device = match &n {
            Notice::SessionReset { device, .. }
            | Notice::UplinksLost { device, .. }
            | Notice::DeviceLog { device, .. } => device.clone(),
        };
        match self.registry.get(&device) {
            None if !self.accept_unknown_devices => return,
            // Its mapped uplinks are refused (`signed_device`): no session
            // evidence about a device whose readings are not taken.
            Some(info) if info.public_key.is_some() => return,
            _ => {}
        }
        let fmt_ms = |ms: u64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| format!("{ms} ms"))
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let (kind, detail) = match n {
            Notice::SessionReset {
                mapping,
                device,
                dev_eui,
                reset,
            } => {
                IngestStats::add(&self.stats.lorawan_session_resets, 1);
                let detail = format!(
                    "{}: devEui {dev_eui}, epoch {}, last fCnt {}, {}, devAddr {} -> {} (mapping {mapping})",
                    reset.cause.name(),
                    reset.epoch,
                    reset.last_fcnt.map_or("none".into(), |f| f.to_string()),
                    reset
                        .fcnt
                        .map_or("new session".to_string(), |f| format!("now fCnt {f}")),
                    opt(&reset.old_dev_addr),
                    opt(&reset.dev_addr),
                );
                tracing::info!(%device, %detail, "LoRaWAN frame-counter session reset");
                (EventKind::LorawanSessionReset, detail)
            }
            Notice::UplinksLost {
                mapping,
                device,
                dev_eui,
                lost,
            } => {
                IngestStats::add(&self.stats.lorawan_uplinks_lost, lost.count());
                let detail = format!(
                    "fCnt {}..={} ({} uplink{}) lost: devEui {dev_eui}, epoch {}, between {} and {} (mapping {mapping})",
                    lost.first,
                    lost.last,
                    lost.count(),
                    if lost.count() == 1 { "" } else { "s" },
                    lost.epoch,
                    lost.after_ms
                        .map_or("the session start".to_string(), fmt_ms),
                    fmt_ms(lost.until_ms),
                );
                tracing::warn!(%device, %detail, "LoRaWAN uplinks lost");
                (EventKind::LorawanUplinksLost, detail)
            }
            Notice::DeviceLog {
                mapping,
                device,
                dev_eui,
                level,
                code,
                description,
            } => {
                IngestStats::add(&self.stats.lorawan_logs, 1);
                tracing::warn!(%device, %dev_eui, %mapping, %level, %code, %description, "ChirpStack device log");
                return;
            }
        };
        let _ = self
            .events
            .send(Event::new(now, kind, Some(device), detail));
    }

    /// Quarantines, counts, logs and records a refused third-party message.
    fn refuse_mapped(&self, p: &Publish, now: u64, r: MappingRejection) -> Receipt {
        let device = r.device.as_ref().map(|d| d.to_string());
        let dev = device.as_deref().unwrap_or("?");
        self.stats.count_device_reject(dev, r.reason);
        let decision = self
            .reject_log
            .lock()
            .expect("reject log lock is never poisoned")
            .decide(dev, r.reason, now);
        let client = p.client.client_id.as_str();
        match decision {
            LogDecision::Log { suppressed } => {
                tracing::warn!(device = dev, client, mapping = %r.mapping, topic = %p.topic, reason = r.reason, detail = %r.detail, suppressed, "third-party message rejected")
            }
            LogDecision::Suppress => {}
        }
        let event = self
            .mapping_events
            .lock()
            .expect("event gate lock is never poisoned")
            .allow(dev, r.reason, now);
        if event {
            let _ = self.events.send(Event {
                time_ms: now,
                kind: EventKind::FrameRejected,
                device: r.device.clone(),
                seqs: None,
                detail: format!(
                    "{} (mapping {}, topic {}): {}",
                    r.reason, r.mapping, p.topic, r.detail
                ),
            });
        }
        self.quarantine
            .lock()
            .expect("quarantine lock is never poisoned")
            .keep(Quarantined {
                received_ms: now,
                topic: p.topic.clone(),
                device,
                reason: r.reason,
                detail: format!("mapping {}: {}", r.mapping, r.detail),
                len: p.payload.len(),
                payload: p.payload.to_vec(),
            });
        Receipt::Ready(Disposition::Refused(r.reason))
    }
}

impl PublishHandler for FrameIntake {
    fn handle(&self, p: Publish) -> Receipt {
        IngestStats::add(&self.stats.messages, 1);
        let now = (self.now_ms)();
        if let Some(stage) = &self.mapping
            && self.is_mapped_topic(&p.topic)
        {
            return self.handle_mapped(stage, p, now);
        }
        let rules = AdmissionRules {
            site: &self.site,
            registry: &self.registry,
            max_payload_bytes: self.max_payload_bytes,
            accept_unknown_devices: self.accept_unknown_devices,
        };
        match admit(&rules, &p.topic, &p.payload) {
            Ok(a) => {
                if a.signature_verified {
                    IngestStats::add(&self.stats.signatures_verified, 1);
                }
                let (tx, rx) = oneshot::channel();
                if self
                    .writes
                    .send(WriteRequest::from_device(a.frame, now, a.format, tx))
                    .is_err()
                {
                    return Receipt::Ready(Disposition::WriteFailed);
                }
                Receipt::from_writer(rx)
            }
            Err(r) => {
                self.stats.count_reject(r.reason);
                let device = r.device.as_ref().map(|d| d.to_string());
                let decision = self
                    .reject_log
                    .lock()
                    .expect("reject log lock is never poisoned")
                    .decide(device.as_deref().unwrap_or(""), r.reason, now);
                let client = p.client.client_id.as_str();
                match decision {
                    LogDecision::Log { suppressed: 0 } => {
                        tracing::warn!(device = device.as_deref().unwrap_or("?"), client, topic = %p.topic, reason = r.reason, detail = %r.detail, "frame rejected")
                    }
                    LogDecision::Log { suppressed } => {
                        tracing::warn!(device = device.as_deref().unwrap_or("?"), client, topic = %p.topic, reason = r.reason, detail = %r.detail, suppressed, "frame rejected (more of the same were counted but not logged)")
                    }
                    LogDecision::Suppress => {}
                }
                if matches!(r.reason, "bad_signature" | "missing_signature") {
                    let _ = self.events.send(Event {
                        time_ms: now,
                        kind: EventKind::SignatureRejected,
                        device: r.device.clone(),
                        seqs: None,
                        detail: r.detail.clone(),
                    });
                } else if r.device.is_some() {
                    let _ = self.events.send(Event {
                        time_ms: now,
                        kind: EventKind::FrameRejected,
                        device: r.device.clone(),
                        seqs: None,
                        detail: format!("{}: {}", r.reason, r.detail),
                    });
                }
                self.quarantine
                    .lock()
                    .expect("quarantine lock is never poisoned")
                    .keep(Quarantined {
                        received_ms: now,
                        topic: p.topic.clone(),
                        device,
                        reason: r.reason,
                        detail: r.detail,
                        len: p.payload.len(),
                        payload: p.payload.to_vec(),
                    });
                Receipt::Ready(Disposition::Refused(r.reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceKind, DeviceSection};
    use std::path::Path;

    #[test]
    fn a_duplicate_waiting_for_its_first_copy_follows_what_became_of_it() {
        use AppendOutcome as O;
        let d = |o| waiting_duplicate(Disposition::Stored(o));
        assert_eq!(d(O::Stored), Disposition::Stored(O::Duplicate));
        assert_eq!(d(O::Duplicate), Disposition::Stored(O::Duplicate));
        // Refused for good: the same message would be again, so not re-offered.
        assert_eq!(d(O::Invalid), Disposition::Stored(O::Invalid));
        // Not stored for a passing reason: re-offered (and then stored).
        assert_eq!(d(O::BufferFull), Disposition::Stored(O::BufferFull));
        assert_eq!(
            waiting_duplicate(Disposition::WriteFailed),
            Disposition::Stored(O::BufferFull)
        );
    }

    const MAPPING: &str = "[[mapping]]\nid = \"plug\"\ntopic = \"tele/+/SENSOR\"\ndevice = { topic_level = 1 }\n[[mapping.fields]]\nchannel = \"power\"\npath = \"$.Power\"\nquantity = \"power\"\nunit = \"W\"\n";

    /// An intake with one mapping and one registered unsigned plug; the test
    /// plays the writer through the returned receiver.
    fn intake() -> (FrameIntake, mpsc::UnboundedReceiver<WriteRequest>) {
        let registry = DeviceRegistry::from_sections(
            &[DeviceSection {
                id: "p1".into(),
                kind: DeviceKind::Other,
                serial: String::new(),
                meter_class: String::new(),
                calibration: None,
                public_key: None,
                channels: Vec::new(),
            }],
            Path::new("t"),
        )
        .expect("registry");
        let (writes, rx) = mpsc::unbounded_channel();
        let (events, _) = mpsc::unbounded_channel();
        let i = FrameIntake::new(FrameIntakeParts {
            site: SiteId::new("s").expect("id"),
            registry: Arc::new(registry),
            max_payload_bytes: 4096,
            accept_unknown_devices: false,
            writes,
            stats: Arc::new(IngestStats::default()),
            quarantine: Arc::new(Mutex::new(Quarantine::new(16))),
            events,
            now_ms: Arc::new(|| 1_000),
            mappings: crate::mapping::parse_mappings(MAPPING, Path::new("t")).expect("mapping"),
            mapping_dedup_memory_bytes: crate::mapping::dedup_memory::DEFAULT_BUDGET_BYTES,
        });
        (i, rx)
    }

    fn publish(topic: &str, payload: &str) -> Publish {
        Publish {
            topic: topic.into(),
            payload: Bytes::from(payload.to_string()),
            qos: 1,
            retain: false,
            retained_replay: false,
            client: Arc::new(ClientIdentity {
                client_id: "c".into(),
                username: None,
                bound_device: None,
                peer: None,
            }),
        }
    }

    #[tokio::test]
    async fn a_duplicate_of_a_copy_still_being_written_waits_for_it_and_is_retried_if_it_was_refused()
     {
        let (i, mut writer) = intake();
        let p = publish("tele/p1/SENSOR", r#"{"Power":1.5}"#);
        let first = i.handle(p.clone());
        let dup = i.handle(p.clone());
        let w = writer.recv().await.expect("the first copy is written");
        assert_eq!(w.incoming.frame.samples[0].value, 1_500);
        assert!(writer.try_recv().is_err(), "the duplicate is not written");
        // The buffer refuses the first copy for space: both are re-offered.
        let _ = w.reply.expect("reply").send(AppendOutcome::BufferFull);
        let full = Disposition::Stored(AppendOutcome::BufferFull);
        assert_eq!(first.wait().await, full);
        assert_eq!(dup.wait().await, full);
        // The re-offer is stored; a later copy is a duplicate of a stored one.
        let again = i.handle(p.clone());
        let w = writer.recv().await.expect("written again");
        let _ = w.reply.expect("reply").send(AppendOutcome::Stored);
        assert_eq!(
            again.wait().await,
            Disposition::Stored(AppendOutcome::Stored)
        );
        assert_eq!(
            i.handle(p).wait().await,
            Disposition::Stored(AppendOutcome::Duplicate)
        );
    }

    #[tokio::test]
    async fn a_key_is_settled_even_when_nobody_waits_for_the_receipt() {
        let (i, mut writer) = intake();
        let p = publish("tele/p1/SENSOR", r#"{"Power":2}"#);
        // The device's connection closed: its receipt is dropped unpolled.
        drop(i.handle(p.clone()));
        let w = writer.recv().await.expect("written");
        let _ = w.reply.expect("reply").send(AppendOutcome::BufferFull);
        // The settling task runs without anyone polling the receipt.
        let m = i.mapping.clone().expect("mapping");
        while i.stage(&m).stage.remembered() > 0 {
            tokio::task::yield_now().await;
        }
        // The redelivery after the reconnect is stored, not taken for a duplicate.
        let r = i.handle(p);
        let w = writer.recv().await.expect("the redelivery is written");
        let _ = w.reply.expect("reply").send(AppendOutcome::Stored);
        assert_eq!(r.wait().await, Disposition::Stored(AppendOutcome::Stored));
    }

    #[tokio::test]
    async fn mapped_devices_must_be_registered_unsigned_and_match_a_bound_login() {
        let (i, _writer) = intake();
        let d = i
            .handle(publish("tele/stranger/SENSOR", r#"{"Power":2}"#))
            .wait()
            .await;
        assert_eq!(d, Disposition::Refused("unknown_device"));
        let mut p = publish("tele/p1/SENSOR", r#"{"Power":3}"#);
        p.client = Arc::new(ClientIdentity {
            client_id: "c".into(),
            username: Some("other".into()),
            bound_device: Some(DeviceId::new("p2").expect("id")),
            peer: None,
        });
        assert_eq!(
            i.handle(p).wait().await,
            Disposition::Refused("not_bound_device")
        );
        assert_eq!(
            i.stats
                .device_rejects()
                .get(&("p1".into(), "not_bound_device")),
            Some(&1)
        );
    }

    #[tokio::test]
    async fn lorawan_events_are_recorded_only_for_devices_whose_uplinks_are_taken() {
        let dev = |id: &str, key: Option<&str>| DeviceSection {
            id: id.into(),
            kind: DeviceKind::PaddyWaterLevel,
            serial: String::new(),
            meter_class: String::new(),
            calibration: None,
            public_key: key.map(str::to_string),
            channels: Vec::new(),
        };
        let registry = DeviceRegistry::from_sections(
            &[
                dev("tube-a", None),
                dev(
                    "tube-signed",
                    Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
                ),
            ],
            Path::new("t"),
        )
        .expect("registry");
        let (writes, _writer) = mpsc::unbounded_channel();
        let (events, mut recorded) = mpsc::unbounded_channel();
        let i = FrameIntake::new(FrameIntakeParts {
            site: SiteId::new("s").expect("id"),
            registry: Arc::new(registry),
            max_payload_bytes: 4096,
            accept_unknown_devices: false,
            writes,
            stats: Arc::new(IngestStats::default()),
            quarantine: Arc::new(Mutex::new(Quarantine::new(16))),
            events,
            now_ms: Arc::new(|| 1_000),
            mappings: crate::mapping::parse_mappings(
                include_str!("../../../config/mappings/chirpstack_paddy_water_level.toml"),
                Path::new("t"),
            )
            .expect("mapping"),
            mapping_dedup_memory_bytes: crate::mapping::dedup_memory::DEFAULT_BUDGET_BYTES,
        });
        for (name, eui) in [
            ("tube-a", "a84041000181c0d3"),
            ("tube-signed", "a84041000181c0d4"),
            ("stranger", "a84041000181c0d5"),
        ] {
            let join = format!(
                r#"{{"deduplicationId":"j-{name}","time":"1970-01-01T00:00:01Z","deviceInfo":{{"deviceName":"{name}","devEui":"{eui}"}},"devAddr":"0a"}}"#
            );
            let d = i
                .handle(publish(
                    &format!("application/x/device/{eui}/event/join"),
                    &join,
                ))
                .wait()
                .await;
            assert_eq!(d, Disposition::Ignored("lorawan_join"));
        }
        let e = recorded.try_recv().expect("tube-a's join is recorded");
        assert_eq!(
            (e.kind, e.device.as_ref().map(|d| d.as_str())),
            (EventKind::LorawanSessionReset, Some("tube-a"))
        );
        assert!(
            e.detail.starts_with("join: devEui a84041000181c0d3"),
            "{}",
            e.detail
        );
        assert!(
            recorded.try_recv().is_err(),
            "nothing for signed or unknown devices"
        );
        assert_eq!(IngestStats::get(&i.stats.lorawan_session_resets), 1);
        assert_eq!(i.lorawan_sessions().len(), 3, "all are tracked");
        assert!(
            i.device_mapping_filters().is_empty(),
            "no device-bound publishing on ChirpStack topics"
        );
    }
}
