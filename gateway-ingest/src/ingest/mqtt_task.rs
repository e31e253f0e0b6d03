//! External-broker mode: the gateway's own rumqttc connection to a site
//! broker (mosquitto, ...).
//!
//! Three small tasks share one client:
//! - the event loop (this module's [`run_mqtt_ingest`]) reads publishes and
//!   hands them to the intake ([`super::intake`]); it never blocks on the
//!   writer (the broker's in-flight window bounds what is outstanding,
//!   because publishes are only PUBACKed after the write);
//! - the acker PUBACKs each publish, in order, once its write finished
//!   (manual acks), so a crash before the flush leaves the message with the
//!   broker;
//! - the ack publisher sends application acks (`mrv/<site>/<device>/ack`).
//!
//! The session is persistent (`clean_session = false`): after a reconnect the
//! broker redelivers what was not PUBACKed, *if it kept the gateway's
//! session*. The first reconnect is immediate and the subscription is renewed
//! at once on every CONNACK. A CONNACK with `session_present = false` after
//! the first connection means the broker lost the gateway's session: what
//! devices published in between was acknowledged to them by the broker and
//! not kept for the gateway. That is logged, counted
//! (`IngestStats::broker_sessions_lost`) and recorded as a
//! `broker_session_lost` event. See `docs/PROTOCOL.md` for what a site broker
//! needs (persistence, no expiry of the gateway's session).
//!
//! Third-party topics (`[[mapping]]`): on every CONNACK the client also
//! subscribes to each mapping's topic filter; those publishes go through the
//! same intake (mapping stage). A message the broker sends with the retain
//! flag is a retained replay (MQTT 3.1.1 §3.3.1.3: the flag is set only for
//! messages sent because of a new subscription) and is ignored and counted.
//! Third-party devices have no application ack, so a mapped publish is
//! PUBACKed only once its frame is on disk or it is refused for good (a
//! mapping rejection, quarantined; or `Invalid` at the buffer): when the buffer refuses it for
//! space the acker holds it (and every later PUBACK, which keeps their
//! order) and re-offers it every [`crate::endpoint::session::RETRY_AFTER`]
//! until it is stored.

use super::admit::WireFormat;
use super::intake::{
    ClientIdentity, Disposition, FrameIntake, Publish as IntakePublish, PublishHandler, Receipt,
};
use super::stats::IngestStats;
use super::writer::AckOut;
use crate::config::MqttConfig;
use mrv_gateway_buffer::AppendOutcome;
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::SiteId;
use mrv_shared::wire::{binary, json, topic};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS, Transport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Everything the external-broker ingest needs.
pub struct MqttIngest {
    /// Connection settings.
    pub mqtt: MqttConfig,
    /// This site.
    pub site: SiteId,
    /// Where publishes go (admission + writer).
    pub intake: Arc<FrameIntake>,
    /// From the writer: application acks to publish.
    pub acks: mpsc::UnboundedReceiver<AckOut>,
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Events to record (broker session lost).
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

/// Delay before the `attempt`-th reconnect in a row: the first is immediate
/// (a broker restart should cost devices nothing), then 50 ms doubling up to 5 s.
pub fn reconnect_delay(attempt: u32) -> Duration {
    match attempt {
        0 => Duration::ZERO,
        n => Duration::from_millis(50u64.saturating_mul(1 << (n - 1).min(7)))
            .min(Duration::from_secs(5)),
    }
}

/// Runs until `shutdown` turns true.
pub async fn run_mqtt_ingest(
    ctx: MqttIngest,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MqttIngestError> {
    let (client, mut eventloop) = AsyncClient::new(options(&ctx.mqtt)?, 10_000);
    let (ack_queue, ack_rx) = mpsc::unbounded_channel::<(Publish, Receipt)>();
    let map_filters = ctx.intake.mapping_filters();
    let acker = tokio::spawn(run_acker(client.clone(), ack_rx, ctx.intake.clone()));
    let publisher = tokio::spawn(run_ack_publisher(
        client.clone(),
        ctx.site.clone(),
        ctx.acks,
        ctx.stats.clone(),
    ));
    let filter = topic::up_filter(&ctx.site);
    let identity = Arc::new(ClientIdentity {
        client_id: ctx.mqtt.client_id.clone(),
        username: ctx.mqtt.credentials.as_ref().map(|(u, _)| u.clone()),
        bound_device: None,
        peer: None,
    });
    let mut failures = 0u32;
    let mut connacks = 0u64;
    loop {
        let polled = tokio::select! {
            _ = shutdown.changed() => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                connacks += 1;
                if !ack.session_present && connacks > 1 {
                    IngestStats::add(&ctx.stats.broker_sessions_lost, 1);
                    tracing::warn!(host = %ctx.mqtt.host, port = ctx.mqtt.port, "the MQTT broker lost the gateway's session (session_present = 0 on reconnect): messages devices published while the gateway was away were not kept for it; devices that wait for application acks re-send them, devices that trust the broker's PUBACK lost them. Enable broker persistence and keep the gateway's session (docs/PROTOCOL.md)");
                    let _ = ctx.events.send(Event {
                        time_ms: (ctx.now_ms)(),
                        kind: EventKind::BrokerSessionLost,
                        device: None,
                        seqs: None,
                        detail: format!(
                            "broker {}:{} answered session_present = 0 to client {}",
                            ctx.mqtt.host, ctx.mqtt.port, ctx.mqtt.client_id
                        ),
                    });
                } else if !ack.session_present {
                    tracing::info!(host = %ctx.mqtt.host, port = ctx.mqtt.port, "the MQTT broker has no earlier session for the gateway (first start, or the broker lost it)");
                }
                tracing::info!(host = %ctx.mqtt.host, port = ctx.mqtt.port, %filter, session_present = ack.session_present, "connected to MQTT broker; subscribing");
                if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                    tracing::error!(error = %e, "subscribe request failed");
                }
                for f in &map_filters {
                    tracing::info!(filter = %f, "subscribing to a third-party mapping's topic");
                    if let Err(e) = client.subscribe(f.clone(), QoS::AtLeastOnce).await {
                        tracing::error!(error = %e, filter = %f, "subscribe request failed");
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                IngestStats::add(&ctx.stats.subscribed, 1);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let receipt = ctx.intake.handle(IntakePublish {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    retained_replay: p.retain,
                    client: identity.clone(),
                });
                let _ = ack_queue.send((p, receipt));
            }
            Ok(_) => {}
            Err(e) => {
                let delay = reconnect_delay(failures);
                failures = failures.saturating_add(1);
                if let Some(why) = login_refusal(&e) {
                    let detail = format!(
                        "the MQTT broker {}:{} refused the gateway's login as {} (client id {:?}): {why}; check [mqtt] username and password",
                        ctx.mqtt.host,
                        ctx.mqtt.port,
                        identity
                            .username
                            .as_deref()
                            .map_or_else(|| "no user name".to_string(), |u| format!("{u:?}")),
                        ctx.mqtt.client_id,
                    );
                    tracing::warn!(retry_in_ms = delay.as_millis() as u64, "{detail}");
                    *ctx.stats
                        .last_broker_login_refusal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(detail);
                    IngestStats::add(&ctx.stats.broker_logins_refused, 1);
                } else {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT broker connection lost; reconnecting");
                }
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
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
    mut queue: mpsc::UnboundedReceiver<(Publish, Receipt)>,
    intake: Arc<FrameIntake>,
) {
    while let Some((publish, receipt)) = queue.recv().await {
        // (A device frame refused for space is acked too, as before: holding
        // it would fill the broker's in-flight window for the gateway and
        // stall every device until a reconnect. Our devices got a
        // `buffer_full` application ack and keep the frame.)
        let mut d = receipt.wait().await;
        // A third-party device keeps nothing: hold its PUBACK and re-offer
        // the message until the buffer has room.
        while d == Disposition::Stored(AppendOutcome::BufferFull)
            && intake.is_mapped_topic(&publish.topic)
        {
            tokio::time::sleep(crate::endpoint::session::RETRY_AFTER).await;
            d = intake
                .handle(IntakePublish {
                    topic: publish.topic.clone(),
                    payload: publish.payload.clone(),
                    qos: publish.qos as u8,
                    retain: publish.retain,
                    retained_replay: publish.retain,
                    client: Arc::new(ClientIdentity {
                        client_id: String::from("(re-offer)"),
                        username: None,
                        bound_device: None,
                        peer: None,
                    }),
                })
                .wait()
                .await;
        }
        if d == Disposition::WriteFailed {
            // The write failed: leave the message un-acked so the broker redelivers it.
            continue;
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

/// The broker's reason when it refused the gateway's login, else `None`.
fn login_refusal(e: &rumqttc::ConnectionError) -> Option<&'static str> {
    use rumqttc::ConnectReturnCode;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            Some("bad user name or password")
        }
        rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            Some("not authorised (brokers such as mosquitto also answer a wrong password so)")
        }
        _ => None,
    }
}
