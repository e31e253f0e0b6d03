//! A device that treats the MQTT PUBACK as its only commit point (no
//! application acks): a frame is forgotten once PUBACKed, everything else is
//! re-sent after a reconnect. Used by the endpoint crash and backend outage
//! tests, which differ in the frames they build, when frames become due and
//! what they record of an ack: that is the [`PubackDevice`] a test passes to
//! [`run`].
//!
//! The loop: connect (clean session, 20 in flight); on CONNACK re-send every
//! unacked seq, oldest first; map each `Outgoing::Publish` packet id to the
//! seqs in the order they were handed to the client; on a PUBACK report the
//! seq acked; on a tick publish what is newly due; after an error sleep the
//! reconnect delay and connect again; stop when the watch channel changes
//! (or is closed) or reads `true`.

use mrv_shared::ids::DeviceId;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::watch;

/// What a test's device knows and does; the loop holds no lock of its own
/// (an implementation that shares its state with the test locks inside,
/// never across an await).
pub trait PubackDevice {
    /// Every seq generated and not yet PUBACKed, oldest first (re-sent
    /// after each CONNACK).
    fn unacked(&self) -> Vec<u64>;
    /// On a tick: the seqs newly due, oldest first, already recorded as
    /// unacked by the implementation.
    fn due(&mut self) -> Vec<u64>;
    /// The broker PUBACKed `seq`.
    fn acked(&mut self, seq: u64);
}

/// Connection settings of one device.
#[derive(Debug, Clone)]
pub struct PubackOptions {
    /// Client id, and the device in the topic `mrv/demo-site/{device}/up`
    /// (the site of a [`crate::TestSite`]).
    pub device: DeviceId,
    /// The broker's port on 127.0.0.1.
    pub port: u16,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How often [`PubackDevice::due`] is asked (missed ticks delay).
    pub tick: Duration,
    /// Pause before reconnecting after a connection error.
    pub reconnect_delay: Duration,
    /// The encoded frame of `device` with sequence number `seq`.
    pub frame: fn(&DeviceId, u64) -> Vec<u8>,
}

/// Runs `device` against the broker until `stop` says so.
pub async fn run<D: PubackDevice>(opts: PubackOptions, mut device: D, stop: watch::Receiver<bool>) {
    let topic = format!("mrv/demo-site/{}/up", opts.device);
    let mut tick = tokio::time::interval(opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        let mut o = MqttOptions::new(opts.device.as_str(), "127.0.0.1", opts.port);
        o.set_keep_alive(opts.keep_alive)
            .set_clean_session(true)
            .set_inflight(20);
        let (client, mut el) = AsyncClient::new(o, 1000);
        // Order of publishes handed to this client; rumqttc reports their
        // packet ids in the same order (Outgoing::Publish).
        let mut sent: VecDeque<u64> = VecDeque::new();
        let mut by_pkid: HashMap<u16, u64> = HashMap::new();
        loop {
            tokio::select! {
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // Re-send everything not PUBACKed, oldest first.
                        for seq in device.unacked() {
                            sent.push_back(seq);
                            let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, false, (opts.frame)(&opts.device, seq));
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(seq) = sent.pop_front() {
                            by_pkid.insert(pkid, seq);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        if let Some(seq) = by_pkid.remove(&a.pkid) {
                            device.acked(seq);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = tick.tick() => {
                    for seq in device.due() {
                        sent.push_back(seq);
                        let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, false, (opts.frame)(&opts.device, seq));
                    }
                }
                _ = async {
                    let mut s = stop.clone();
                    let _ = s.changed().await;
                } => return,
            }
            if *stop.borrow() {
                return;
            }
        }
        tokio::time::sleep(opts.reconnect_delay).await;
    }
}
