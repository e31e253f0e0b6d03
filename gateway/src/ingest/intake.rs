//! The publish-handling entry point: one MQTT publish in, its durable
//! outcome out.
//!
//! Both ways frames arrive call it: the embedded endpoint
//! ([`crate::endpoint`]) for every PUBLISH a device sends, and the external
//! broker client ([`super::mqtt_task`]) for every message of its
//! subscription. [`PublishHandler`] is the seam: a later mapping stage (third
//! party JSON on arbitrary topics) implements it, or wraps [`FrameIntake`].
//!
//! Invariant: a [`Receipt`] resolves to [`Disposition::Stored`] only after
//! the writer's group commit containing the frame returned from fdatasync
//! (the writer's oneshot reply), and to [`Disposition::WriteFailed`] when the
//! writer dropped the reply (the buffer failed; nothing may be acked).

use super::admit::{AdmissionRules, admit};
use super::quarantine::{Quarantine, Quarantined};
use super::reject_log::{LogDecision, RejectLog};
use super::stats::IngestStats;
use super::writer::WriteRequest;
use crate::buffer::AppendOutcome;
use crate::config::DeviceRegistry;
use bytes::Bytes;
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::{DeviceId, SiteId};
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
    /// Sender.
    pub client: Arc<ClientIdentity>,
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The buffer decided (after the flush): stored, duplicate, regressed or
    /// refused for space.
    Stored(AppendOutcome),
    /// Refused before the buffer (topic, size, decoding, registry,
    /// signature): counted under this reason, quarantined, logged.
    Refused(&'static str),
    /// The write failed; the frame is not durable. Nothing may be acked.
    WriteFailed,
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
}

impl FrameIntake {
    /// Builds the intake.
    pub fn new(p: FrameIntakeParts) -> Self {
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
        }
    }
}

impl PublishHandler for FrameIntake {
    fn handle(&self, p: Publish) -> Receipt {
        IngestStats::add(&self.stats.messages, 1);
        let now = (self.now_ms)();
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
