//! The device side of MQTT, shared by the host simulator's devices and the
//! UART bridge (the stand-in for a node's network co-processor): client
//! options, the event-loop poller that turns rumqttc events into
//! [`LinkEvent`]s, and ack decoding.
//!
//! Topics (`mrv_shared::wire::topic`): frames go QoS 1 to
//! `mrv/<site>/<device>/up`, acks come QoS 1 on `mrv/<site>/<device>/ack`.

use mrv_shared::wire::{Ack, binary, json};
use rumqttc::{Event, EventLoop, MqttOptions, Packet};
use std::string::String;
use std::time::Duration;
use std::vec::Vec;
use tokio::sync::mpsc;

/// Wait between reconnect attempts.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// What the MQTT link reports to the task that owns it.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the connection (subscribe again now).
    Connected,
    /// The connection broke; the poller reconnects by itself.
    Disconnected,
    /// A message on the ack topic.
    Ack(Vec<u8>),
}

/// Client options of a device: client id = device id, clean session,
/// 5 s keep-alive, packets up to 256 KiB.
pub fn device_options(
    client_id: &str,
    host: &str,
    port: u16,
    credentials: Option<&(String, String)>,
) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((u, p)) = credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    opts
}

/// Decodes an ack in either form (binary starts with "MA").
pub fn decode_any_ack(payload: &[u8]) -> Option<Ack> {
    if payload.starts_with(&binary::ACK_MAGIC) {
        binary::decode_ack(payload).ok()
    } else {
        json::decode_ack(payload).ok()
    }
}

/// Works around rumqttc 0.25.1 issue #1056 (bytebeamio/rumqtt, open): a
/// publish whose packet id was still in flight ("collision") is stashed in
/// `state.collision`, and the event loop takes no request while it is there;
/// only the ack of the colliding id releases it. `clean()` on a disconnect
/// does not touch it, so when the session is lost (clean session, as here)
/// that ack never comes: the client sends nothing but pings, fails with
/// `CollisionTimeout` after two keep-alives, reconnects, and loops so for
/// ever. A window with a gap (a SUBSCRIBE takes a packet id too) makes a
/// collision ordinary, and a gateway that closes connections (restart, a
/// failed buffer write) then wedges every device whose window was full.
///
/// Called after each connection error, i.e. after rumqttc's `clean()`: the
/// stashed publish joins the requests to send again (as the upstream fix
/// does), so with a lost session it is dropped with them and the device's
/// outbox re-sends its frame, and with a resumed one it is retransmitted.
fn release_stashed_collision(el: &mut EventLoop) {
    if let Some(p) = el.state.collision.take() {
        tracing::debug!(
            pkid = p.pkid,
            "stashed colliding publish released after a disconnect"
        );
        el.pending.push_back(rumqttc::Request::Publish(p));
    }
}

/// Polls `el` until `tx` closes: connections, breaks (then waits
/// [`RECONNECT_BACKOFF`]) and messages on the `ack` topic.
pub async fn poll_link(mut el: EventLoop, tx: mpsc::UnboundedSender<LinkEvent>, ack: String) {
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Some(LinkEvent::Connected),
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack => {
                Some(LinkEvent::Ack(p.payload.to_vec()))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "mqtt link down");
                release_stashed_collision(&mut el);
                if tx.send(LinkEvent::Disconnected).is_err() {
                    return;
                }
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                None
            }
        };
        if let Some(ev) = ev
            && tx.send(ev).is_err()
        {
            return;
        }
    }
}
