//! The MQTT side of ingest: the gateway's own rumqttc connection.
//!
//! Three small tasks share one client:
//! - the event loop (this module's [`run_mqtt_ingest`]) reads publishes,
//!   admits them ([`super::admit`]) and hands frames to the writer; it never
//!   blocks on the writer (unbounded hand-off; the broker's in-flight window
//!   bounds it, because publishes are only PUBACKed after the write);
//! - the acker PUBACKs each publish, in order, once its write finished
//!   (manual acks), so a crash before the flush leaves the message with the
//!   broker;
//! - the ack publisher sends application acks (`mrv/<site>/<device>/ack`).
//!
//! The session is persistent (`clean_session = false`): after a reconnect the
//! broker redelivers what was not PUBACKed.

use super::admit::{AdmissionRules, WireFormat, admit};
use super::quarantine::{Quarantine, Quarantined};
use super::reject_log::{LogDecision, RejectLog};
use super::stats::IngestStats;
use super::writer::{AckOut, WriteRequest};
use crate::buffer::AppendOutcome;
use crate::config::{DeviceRegistry, MqttConfig};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::SiteId;
use mrv_shared::wire::{binary, json, topic};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS, Transport};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Everything the MQTT ingest needs.
pub struct MqttIngest {
    /// Connection settings.
    pub mqtt: MqttConfig,
    /// This site.
    pub site: SiteId,
    /// Registered devices and keys.
    pub registry: Arc<DeviceRegistry>,
    /// To the writer.
    pub writes: mpsc::UnboundedSender<WriteRequest>,
    /// From the writer: application acks to publish.
    pub acks: mpsc::UnboundedReceiver<AckOut>,
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Rejected payloads.
    pub quarantine: Arc<Mutex<Quarantine>>,
    /// Events to record (rejected frames, bad signatures).
    pub events: mpsc::UnboundedSender<Event>,
    /// Wall clock, Unix ms.
    pub now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// Why the MQTT ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttIngestError {
    /// The CA file could not be read.
    #[error("cannot read MQTT CA file {path}: {source}")]
    CaFile {
        /// Path.
        path: std::path::PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

fn options(cfg: &MqttConfig) -> Result<MqttOptions, MqttIngestError> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_manual_acks(true)
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(cfg.max_payload_bytes + 1024, 64 * 1024)
        .set_inflight(1000)
        .set_request_channel_capacity(10_000);
    if let Some((u, p)) = &cfg.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    if let Some(path) = &cfg.ca_file {
        let ca = std::fs::read(path).map_err(|source| MqttIngestError::CaFile {
            path: path.clone(),
            source,
        })?;
        o.set_transport(Transport::tls(ca, None, None));
    }
    Ok(o)
}

/// QoS of the gateway's own subscription.
///
/// With an external broker: QoS 1 with manual acks, so the broker keeps a
/// message until its frame is on disk. With the embedded broker the broker
/// lives in this process and dies with it, so a late PUBACK protects
/// nothing: durability comes from the application ack alone (devices keep
/// frames until acked). There QoS 0 is used, because rumqttd allows only
/// 100 unacked QoS 1 messages per subscriber, which caps ingest at about
/// 100 frames per flush (measured: ~2,700 one-reading messages/s).
pub fn subscription_qos(mqtt: &MqttConfig) -> QoS {
    match mqtt.mode {
        crate::config::BrokerMode::External => QoS::AtLeastOnce,
        crate::config::BrokerMode::Embedded => QoS::AtMostOnce,
    }
}

/// Runs until `shutdown` turns true.
pub async fn run_mqtt_ingest(
    ctx: MqttIngest,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MqttIngestError> {
    let (client, mut eventloop) = AsyncClient::new(options(&ctx.mqtt)?, 10_000);
    let (ack_queue, ack_rx) =
        mpsc::unbounded_channel::<(Publish, Option<oneshot::Receiver<AppendOutcome>>)>();
    let acker = tokio::spawn(run_acker(client.clone(), ack_rx));
    let publisher = tokio::spawn(run_ack_publisher(
        client.clone(),
        ctx.site.clone(),
        ctx.acks,
        ctx.stats.clone(),
    ));
    let filter = topic::up_filter(&ctx.site);
    let rules = AdmissionRules {
        site: &ctx.site,
        registry: &ctx.registry,
        max_payload_bytes: ctx.mqtt.max_payload_bytes,
        accept_unknown_devices: ctx.mqtt.accept_unknown_devices,
    };
    let mut backoff = Duration::from_millis(100);
    let mut reject_log = RejectLog::default();
    loop {
        let polled = tokio::select! {
            _ = shutdown.changed() => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                tracing::info!(host = %ctx.mqtt.host, port = ctx.mqtt.port, %filter, "connected to MQTT broker; subscribing");
                if let Err(e) = client
                    .subscribe(filter.clone(), subscription_qos(&ctx.mqtt))
                    .await
                {
                    tracing::error!(error = %e, "subscribe request failed");
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                IngestStats::add(&ctx.stats.subscribed, 1);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                IngestStats::add(&ctx.stats.messages, 1);
                let now = (ctx.now_ms)();
                match admit(&rules, &p.topic, &p.payload) {
                    Ok(a) => {
                        if a.signature_verified {
                            IngestStats::add(&ctx.stats.signatures_verified, 1);
                        }
                        let (tx, rx) = oneshot::channel();
                        let _ = ctx
                            .writes
                            .send(WriteRequest::from_device(a.frame, now, a.format, tx));
                        let _ = ack_queue.send((p, Some(rx)));
                    }
                    Err(r) => {
                        ctx.stats.count_reject(r.reason);
                        let device = r.device.as_ref().map(|d| d.to_string());
                        match reject_log.decide(device.as_deref().unwrap_or(""), r.reason, now) {
                            LogDecision::Log { suppressed: 0 } => {
                                tracing::warn!(device = device.as_deref().unwrap_or("?"), topic = %p.topic, reason = r.reason, detail = %r.detail, "frame rejected")
                            }
                            LogDecision::Log { suppressed } => {
                                tracing::warn!(device = device.as_deref().unwrap_or("?"), topic = %p.topic, reason = r.reason, detail = %r.detail, suppressed, "frame rejected (more of the same were counted but not logged)")
                            }
                            LogDecision::Suppress => {}
                        }
                        if matches!(r.reason, "bad_signature" | "missing_signature") {
                            let _ = ctx.events.send(Event {
                                time_ms: now,
                                kind: EventKind::SignatureRejected,
                                device: r.device.clone(),
                                seqs: None,
                                detail: r.detail.clone(),
                            });
                        } else if r.device.is_some() {
                            let _ = ctx.events.send(Event {
                                time_ms: now,
                                kind: EventKind::FrameRejected,
                                device: r.device.clone(),
                                seqs: None,
                                detail: format!("{}: {}", r.reason, r.detail),
                            });
                        }
                        ctx.quarantine
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
                        // Handled (refused for good): ack so the broker does not redeliver it.
                        let _ = ack_queue.send((p, None));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection problem; reconnecting");
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = client.disconnect().await;
    acker.abort();
    publisher.abort();
    Ok(())
}

async fn run_acker(
    client: AsyncClient,
    mut queue: mpsc::UnboundedReceiver<(Publish, Option<oneshot::Receiver<AppendOutcome>>)>,
) {
    while let Some((publish, outcome)) = queue.recv().await {
        if let Some(rx) = outcome {
            if rx.await.is_err() {
                // The write failed: leave the message un-acked so the broker redelivers it.
                continue;
            }
        }
        if let Err(e) = client.ack(&publish).await {
            tracing::warn!(error = %e, "could not PUBACK a publish");
        }
    }
}

async fn run_ack_publisher(
    client: AsyncClient,
    site: SiteId,
    mut acks: mpsc::UnboundedReceiver<AckOut>,
    stats: Arc<IngestStats>,
) {
    while let Some(out) = acks.recv().await {
        let payload = match out.format {
            WireFormat::Binary => binary::encode_ack(&out.ack).to_vec(),
            WireFormat::Json => json::encode_ack(&out.ack),
        };
        match client
            .publish(
                topic::ack_topic(&site, &out.device),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
        {
            Ok(()) => IngestStats::add(&stats.acks_published, 1),
            Err(e) => tracing::warn!(device = %out.device, error = %e, "could not publish ack"),
        }
    }
}
