//! The I/O task of one simulated device: MQTT client, timers, fault
//! injection. All decisions are made by [`SimNode`]; this task only moves
//! bytes and ticks.
//!
//! One boot = one MQTT client. A simulated power cut drops the client (the
//! broker sees the socket close), calls [`SimNode::reboot`] and starts a
//! new client, so the boot counter and the reconnect path are both real.
//! A device switched off ([`Faults::powered_off`]) has its power cut the
//! same way, then stays silent (no client, no samples) until it is switched
//! on and reboots.

use super::node::SimNode;
use super::{Faults, Shared, SimConfig};
use crate::app::Uplink;
use crate::mqtt_link::{LinkEvent, decode_any_ack, device_options, poll_link};
use mrv_shared::wire::topic::{ack_topic, up_topic};
use rumqttc::{AsyncClient, QoS};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Model time at simulator start: 09:00 local, so that short runs see sun.
const MODEL_START_S: f64 = 9.0 * 3600.0;
enum BootEnd {
    Stop,
    PowerCut,
    SwitchedOff,
}

/// Waits while the device is switched off. False when the simulator stops
/// meanwhile.
async fn wait_switched_on(
    faults: &mut watch::Receiver<Faults>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        if !faults.borrow_and_update().powered_off {
            return true;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { return false; },
            changed = faults.changed() => if changed.is_err() { return false; },
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The MQTT client as the firmware's uplink: queue without waiting.
struct MqttUplink<'a> {
    client: &'a AsyncClient,
    topic: &'a str,
}

impl Uplink for MqttUplink<'_> {
    type Error = rumqttc::ClientError;
    fn send(&mut self, _seq: u64, payload: &[u8]) -> Result<(), Self::Error> {
        self.client
            .try_publish(self.topic, QoS::AtLeastOnce, false, payload.to_vec())
    }
}

/// Runs device `index` of `cfg` until `stop` turns true.
pub(super) async fn run(
    cfg: Arc<SimConfig>,
    index: usize,
    shared: Arc<Shared>,
    mut faults: watch::Receiver<Faults>,
    mut stop: watch::Receiver<bool>,
) {
    let dev = &cfg.devices[index];
    let mut node = match SimNode::new(
        cfg.site.clone(),
        dev.id.clone(),
        dev.kind,
        dev.signing_key,
        cfg.format,
        cfg.samples_per_frame,
        cfg.max_outbox,
        cfg.max_frames,
    ) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(device = %dev.id, error = %e, "simulated device did not boot");
            return;
        }
    };
    let up = up_topic(&cfg.site, &dev.id);
    let ack = ack_topic(&cfg.site, &dev.id);
    let t0 = Instant::now();
    let ack_timeout_ms = cfg.ack_timeout.as_millis() as u64;
    let mut last_sample = t0;
    loop {
        let id = dev.id.clone();
        let boot = node.boot();
        shared.update(&id, |s| s.boots = u64::from(boot));
        let opts = device_options(
            dev.id.as_str(),
            &cfg.broker_host,
            cfg.broker_port,
            cfg.credentials.as_ref(),
        );
        let cap = (cfg.max_outbox + 16).min(10_000);
        let (client, el) = AsyncClient::new(opts, cap);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll_link(el, tx, ack.clone()));
        let mut sample_tick = tokio::time::interval(cfg.sample_interval);
        sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let resend_every = (cfg.ack_timeout / 4).max(Duration::from_millis(5));
        let mut resend_tick = tokio::time::interval(resend_every);
        resend_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut connected = false;

        // Returns false when the flash lost power (reboot).
        let send_due = |node: &mut SimNode, shared: &Shared| -> bool {
            let now_ms = t0.elapsed().as_millis() as u64;
            let mut up = MqttUplink {
                client: &client,
                topic: &up,
            };
            match node.service(&mut up, now_ms, ack_timeout_ms) {
                Some(r) => {
                    if r.sent + r.resent + r.refused > 0 {
                        shared.update(node.device(), |s| {
                            s.frames_sent += r.sent;
                            s.frames_resent += r.resent;
                            s.publish_refused += r.refused;
                        });
                    }
                    true
                }
                None => false,
            }
        };

        let end = loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break BootEnd::Stop;
                    }
                }
                changed = faults.changed() => {
                    if changed.is_err() {
                        break BootEnd::Stop;
                    }
                    if faults.borrow_and_update().powered_off {
                        node.power_cut();
                        break BootEnd::SwitchedOff;
                    }
                }
                ev = rx.recv() => match ev {
                    Some(LinkEvent::Connected) => {
                        connected = true;
                        shared.update(&id, |s| s.connected = 1);
                        if client.try_subscribe(ack.clone(), QoS::AtLeastOnce).is_err() {
                            tracing::warn!(device = %id, "could not queue the ack subscription");
                        }
                        node.mark_all_due();
                        if !send_due(&mut node, &shared) {
                            break BootEnd::PowerCut;
                        }
                    }
                    Some(LinkEvent::Disconnected) => {
                        if connected {
                            shared.update(&id, |s| s.connected = 0);
                        }
                        connected = false;
                    }
                    Some(LinkEvent::Ack(payload)) => {
                        match decode_any_ack(&payload) {
                            Some(a) => {
                                let r = node.on_ack(a);
                                if r.power_lost {
                                    break BootEnd::PowerCut;
                                }
                                let (len, hi, st, next) = (node.outbox_len() as u64, node.highest_acked(), node.last_status(), node.next_seq());
                                shared.update(&id, |s| {
                                    s.acks_received += 1;
                                    s.outbox_len = len;
                                    s.highest_acked_seq = hi;
                                    s.last_ack_status = st;
                                    s.frames_renumbered += r.renumbered;
                                    s.next_seq = next;
                                });
                                if r.renumbered > 0 && !send_due(&mut node, &shared) {
                                    break BootEnd::PowerCut;
                                }
                            }
                            None => tracing::warn!(device = %id, "undecodable ack ignored"),
                        }
                    }
                    None => break BootEnd::Stop,
                },
                _ = sample_tick.tick() => {
                    let now = Instant::now();
                    let dt = now.duration_since(last_sample).as_secs_f64();
                    last_sample = now;
                    let f = faults.borrow_and_update().clone();
                    if f.powered_off {
                        node.power_cut();
                        break BootEnd::SwitchedOff;
                    }
                    let model_t = MODEL_START_S + now.duration_since(t0).as_secs_f64();
                    let device_ms = wall_ms().saturating_add_signed(f.clock_skew_ms);
                    let out = node.sample(device_ms, model_t, dt, &f);
                    let (produced, len, next) = (node.produced(), node.outbox_len() as u64, node.next_seq());
                    shared.update(&id, |s| {
                        s.frames_produced = produced;
                        s.outbox_len = len;
                        s.samples_dropped += out.dropped;
                        s.next_seq = next;
                    });
                    if out.power_lost {
                        break BootEnd::PowerCut;
                    }
                    if out.sealed.is_none() {
                        continue;
                    }
                    if connected && !send_due(&mut node, &shared) {
                        break BootEnd::PowerCut;
                    }
                    if connected && f.garbage_every_frames.is_some_and(|n| n > 0 && produced % n == 0) {
                        let junk: Vec<u8> = b"MF\x01\x00garbage-on-the-wire".iter().map(|b| b ^ (produced as u8)).collect();
                        if client.try_publish(up.clone(), QoS::AtLeastOnce, false, junk).is_ok() {
                            shared.update(&id, |s| s.garbage_sent += 1);
                        }
                    }
                    if f.reboot_every_frames.is_some_and(|n| n > 0 && produced % n == 0) {
                        node.power_cut();
                        break BootEnd::PowerCut;
                    }
                }
                _ = resend_tick.tick() => {
                    if connected && !send_due(&mut node, &shared) {
                        break BootEnd::PowerCut;
                    }
                }
            }
        };
        poller.abort();
        // The poller is gone, so nothing will send a DISCONNECT: dropping
        // the client closes the socket, which is what a power cut looks like.
        drop(client);
        shared.update(&id, |s| s.connected = 0);
        match end {
            BootEnd::Stop => return,
            BootEnd::PowerCut | BootEnd::SwitchedOff => {
                if matches!(end, BootEnd::SwitchedOff) {
                    shared.update(&id, |s| s.power_offs += 1);
                    if !wait_switched_on(&mut faults, &mut stop).await {
                        return;
                    }
                    // The meter was off: nothing it could have counted
                    // meanwhile reaches its counters.
                    last_sample = Instant::now();
                }
                if let Err(e) = node.reboot() {
                    tracing::error!(device = %id, error = %e, "simulated device did not reboot");
                    return;
                }
                let (len, next) = (node.outbox_len() as u64, node.next_seq());
                shared.update(&id, |s| {
                    s.outbox_len = len;
                    s.next_seq = next;
                });
            }
        }
    }
}
