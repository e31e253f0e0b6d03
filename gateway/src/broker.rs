//! The embedded MQTT broker (rumqttd 0.20), so a site runs one binary.
//!
//! Facts about rumqttd this wiring designs around (measured, see the
//! foundation issue):
//! - each subscription keeps an in-memory ring of `max_segment_size x
//!   max_segment_count` bytes; a subscriber that falls further behind loses
//!   the older messages with only a WARN ("Read cursor start jumped"). We size
//!   the ring from `mqtt.retention_bytes`, and the end-to-end application ack
//!   makes such a loss recoverable: devices keep frames until the gateway's
//!   ack says they are on disk, and re-send them;
//! - its PUBACK to a device means "in broker memory", never "stored": only
//!   our application ack means stored;
//! - it has no shutdown API and does not report the bound port of port 0, so
//!   [`start`] binds the configured address itself first to fail early with a
//!   clear error, and the broker lives until the process exits;
//! - username/password auth works; a failed login closes the connection.

use crate::config::MqttConfig;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours.
    #[error("embedded MQTT broker cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Most simultaneous MQTT connections. rumqttd sizes its connection tables
/// up front from this number, so it is kept to what a site needs (devices
/// plus technicians' tools), not rumqttd's example value of 10,000.
const MAX_CONNECTIONS: usize = 1024;

/// Segment size of the per-subscription ring.
const SEGMENT_BYTES: usize = 1 << 20;

/// Builds the rumqttd configuration for our settings.
pub fn broker_config(mqtt: &MqttConfig) -> Config {
    let auth = (!mqtt.users.is_empty()).then(|| {
        mqtt.users
            .iter()
            .map(|u| (u.username.clone(), u.password.clone()))
            .collect::<HashMap<_, _>>()
    });
    let server = ServerSettings {
        name: "devices".into(),
        listen: mqtt.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: mqtt.max_payload_bytes + 1024,
            max_inflight_count: 500,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 1000,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: (mqtt.retention_bytes / SEGMENT_BYTES).max(1),
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Starts the embedded broker on its own thread and waits until it accepts
/// connections. The broker runs until the process exits.
pub fn start(mqtt: &MqttConfig) -> Result<(), BrokerError> {
    let addr = mqtt.listen;
    // Fail early, with our own message, when the port is taken. SO_REUSEADDR
    // as rumqttd (tokio) sets it, so a restart after a crash can rebind while
    // old connections sit in TIME_WAIT.
    check_bindable(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    let config = broker_config(mqtt);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|source| BrokerError::Bind { addr, source })?;
    // Wait (bounded) until rumqttd has bound the port. Probing by binding
    // (not connecting) keeps rumqttd from logging an aborted connection.
    for _ in 0..400 {
        if check_bindable(addr).is_err() {
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(BrokerError::Bind {
        addr,
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "broker did not start listening within 2 s",
        ),
    })
}

fn check_bindable(addr: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    // Bind without listen: with SO_REUSEADDR this fails only while another
    // socket listens on the port, and never blocks rumqttd's own bind.
    socket.bind(&addr.into())?;
    Ok(())
}

/// Picks a free loopback port (bind to port 0, read it, release it). For
/// tests and the demo, since rumqttd cannot report the port it bound.
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
