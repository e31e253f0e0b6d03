//! The UART bridge: what a node's network co-processor does, on the host.
//! It connects the node's modem UART (QEMU's socket chardev, connecting to
//! the bridge's TCP listener) to the gateway's MQTT endpoint:
//!
//! - type-1 link frames from the node ([`crate::serial_link`]) are
//!   published QoS 1 on `mrv/<site>/<device>/up`, byte for byte;
//! - acks on `mrv/<site>/<device>/ack` are written back to the node as
//!   type-2 link frames;
//! - noise, bad CRCs, cut frames and frames of another device are dropped
//!   and counted ([`BridgeStats`]), never published.
//!
//! The MQTT session outlives the UART connection, as on a board where the
//! modem stays powered while the node reboots: a new connection (QEMU
//! restarted) replaces the old one, and an ack that arrives while no node
//! is connected is counted as dropped (the node re-sends after booting).
//! A publish the MQTT client cannot queue is dropped and counted; the node
//! re-sends unacked frames after its ack timeout.
//!
//! Layout: [`link_rx`] is the pure byte-to-frame machine; this module is
//! the one task that owns the sockets (tokio, rumqttc via
//! [`crate::mqtt_link`], which the simulator's devices use too).

pub mod link_rx;

use crate::mqtt_link::{LinkEvent, decode_any_ack, device_options, poll_link};
use crate::serial_link::{LinkCounters, encode_ack_frame};
use link_rx::LinkReceiver;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::binary;
use mrv_shared::wire::topic::{ack_topic, up_topic};
use rumqttc::{AsyncClient, QoS};
use std::net::SocketAddr;
use std::string::String;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Largest payload a link frame can carry (its length field is a u16).
pub const MAX_LINK_PAYLOAD: usize = u16::MAX as usize;

/// What the bridge connects.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Where to listen for the node's UART (QEMU:
    /// `-chardev socket,host=..,port=..`); port 0 picks a free one.
    pub uart_listen: SocketAddr,
    /// MQTT broker host.
    pub broker_host: String,
    /// MQTT broker port.
    pub broker_port: u16,
    /// MQTT username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// The node's site.
    pub site: SiteId,
    /// The node's device id (also the MQTT client id).
    pub device: DeviceId,
    /// A partial frame with no new byte for this long is cut.
    pub line_idle: Duration,
}

/// What the bridge did since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// UART connections accepted (the node booted or reconnected).
    pub uart_connections: u64,
    /// True while a node is connected.
    pub uart_connected: bool,
    /// True while the MQTT session is up.
    pub mqtt_connected: bool,
    /// Frames published on the up topic.
    pub frames_published: u64,
    /// Frames the MQTT client could not queue (dropped; the node re-sends).
    pub publish_dropped: u64,
    /// Frames of another site or device (dropped).
    pub wrong_device: u64,
    /// Acks written to the node.
    pub acks_relayed: u64,
    /// Acks that arrived with no node connected (dropped).
    pub acks_dropped: u64,
    /// Messages on the ack topic that were not acks.
    pub bad_acks: u64,
    /// Highest acked seq relayed.
    pub highest_acked: u64,
    /// What the link layer dropped, by reason.
    pub link: LinkCounters,
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The UART listener could not bind.
    #[error("cannot listen for the node's UART on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// A running bridge.
pub struct Bridge {
    /// Where the node's UART connects.
    pub uart_addr: SocketAddr,
    stats: Arc<Mutex<BridgeStats>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Bridge {
    /// Binds the UART listener and starts the bridge on the current tokio
    /// runtime.
    pub async fn start(cfg: BridgeConfig) -> Result<Bridge, BridgeError> {
        let listener =
            TcpListener::bind(cfg.uart_listen)
                .await
                .map_err(|source| BridgeError::Bind {
                    addr: cfg.uart_listen,
                    source,
                })?;
        let uart_addr = listener.local_addr().map_err(|source| BridgeError::Bind {
            addr: cfg.uart_listen,
            source,
        })?;
        let stats = Arc::new(Mutex::new(BridgeStats::default()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(cfg, listener, Arc::clone(&stats), stop_rx));
        Ok(Bridge {
            uart_addr,
            stats,
            stop,
            task,
        })
    }

    /// A copy of the counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats
            .lock()
            .expect("stats lock is never poisoned")
            .clone()
    }

    /// Stops the bridge (closes the UART and the MQTT session).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn update(stats: &Mutex<BridgeStats>, f: impl FnOnce(&mut BridgeStats)) {
    f(&mut stats.lock().expect("stats lock is never poisoned"));
}

/// Publishes each payload unless it names another device.
fn publish(
    client: &AsyncClient,
    cfg: &BridgeConfig,
    up: &str,
    payloads: std::vec::Vec<std::vec::Vec<u8>>,
    stats: &Mutex<BridgeStats>,
) {
    for p in payloads {
        // The co-processor does not need to understand frames; it checks
        // the identity of those it can read so that a mis-wired node is
        // told apart at once instead of being quarantined upstream.
        if let Ok(f) = binary::decode_frame_exact(&p)
            && (f.site != cfg.site || f.device != cfg.device)
        {
            tracing::warn!(site = %f.site, device = %f.device, seq = f.seq,
                "frame from another node on this bridge (configured for {}/{}); dropped",
                cfg.site, cfg.device);
            update(stats, |s| s.wrong_device += 1);
            continue;
        }
        match client.try_publish(up, QoS::AtLeastOnce, false, p) {
            Ok(()) => update(stats, |s| s.frames_published += 1),
            Err(e) => {
                tracing::debug!(error = %e, "publish not queued; the node re-sends");
                update(stats, |s| s.publish_dropped += 1);
            }
        }
    }
}

async fn run(
    cfg: BridgeConfig,
    listener: TcpListener,
    stats: Arc<Mutex<BridgeStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let up = up_topic(&cfg.site, &cfg.device);
    let ack = ack_topic(&cfg.site, &cfg.device);
    let opts = device_options(
        cfg.device.as_str(),
        &cfg.broker_host,
        cfg.broker_port,
        cfg.credentials.as_ref(),
    );
    let (client, el) = AsyncClient::new(opts, 1024);
    let (tx, mut mqtt) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_link(el, tx, ack.clone()));
    let mut rx = LinkReceiver::new(MAX_LINK_PAYLOAD);
    let mut uart: Option<TcpStream> = None;
    let mut buf = vec![0u8; 4096];
    loop {
        let idle = rx.has_partial();
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((s, peer)) => {
                    tracing::info!(%peer, "node UART connected");
                    let _ = s.set_nodelay(true);
                    // Whatever the last connection left half-sent is cut.
                    let frames = rx.line_idle();
                    publish(&client, &cfg, &up, frames, &stats);
                    uart = Some(s);
                    update(&stats, |st| {
                        st.uart_connections += 1;
                        st.uart_connected = true;
                        st.link = *rx.counters();
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accepting the node UART failed"),
            },
            n = async {
                match uart.as_mut() {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => match n {
                Ok(0) | Err(_) => {
                    tracing::info!("node UART closed");
                    uart = None;
                    update(&stats, |st| st.uart_connected = false);
                }
                Ok(n) => {
                    let frames = rx.push(&buf[..n]);
                    publish(&client, &cfg, &up, frames, &stats);
                    update(&stats, |st| st.link = *rx.counters());
                }
            },
            _ = tokio::time::sleep(cfg.line_idle), if idle => {
                let frames = rx.line_idle();
                publish(&client, &cfg, &up, frames, &stats);
                update(&stats, |st| st.link = *rx.counters());
            }
            ev = mqtt.recv() => match ev {
                Some(LinkEvent::Connected) => {
                    update(&stats, |s| s.mqtt_connected = true);
                    if client.try_subscribe(ack.clone(), QoS::AtLeastOnce).is_err() {
                        tracing::warn!("could not queue the ack subscription");
                    }
                }
                Some(LinkEvent::Disconnected) => update(&stats, |s| s.mqtt_connected = false),
                Some(LinkEvent::Ack(payload)) => match decode_any_ack(&payload) {
                    None => update(&stats, |s| s.bad_acks += 1),
                    Some(a) => {
                        let frame = encode_ack_frame(&a);
                        let sent = match uart.as_mut() {
                            Some(s) => s.write_all(&frame).await.is_ok(),
                            None => false,
                        };
                        update(&stats, |s| {
                            if sent {
                                s.acks_relayed += 1;
                                s.highest_acked = s.highest_acked.max(a.acked_seq);
                            } else {
                                s.acks_dropped += 1;
                            }
                        });
                    }
                },
                None => break,
            },
        }
    }
    poller.abort();
}
