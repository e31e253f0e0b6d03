//! Endpoint counters, shared with diagnostics.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The newest refused login, for the technician (diagnostics' events list).
/// Never holds the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLogin {
    /// Where the connection came from.
    pub peer: SocketAddr,
    /// The client id the CONNECT carried (may be empty).
    pub client_id: String,
    /// The user name tried, if any.
    pub username: Option<String>,
    /// MQTT version of the CONNECT (`3.1.1`, `5`).
    pub version: String,
}

/// Counters of the embedded MQTT endpoint. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused_limit: AtomicU64,
    /// Logins refused (wrong user name or password, or none given).
    pub auth_failures: AtomicU64,
    /// The newest of them (`auth_failures` says how many there were).
    pub last_refused_login: Mutex<Option<RefusedLogin>>,
    /// Connections closed for bytes that are not MQTT or a malformed packet.
    pub malformed: AtomicU64,
    /// Connections closed for a packet over the size limit.
    pub oversized: AtomicU64,
    /// Connections closed for another protocol violation.
    pub protocol_errors: AtomicU64,
    /// Publishes refused because the credential does not allow the topic.
    pub publish_not_authorized: AtomicU64,
    /// Subscriptions refused (anything but the device's own ack topic).
    pub subscribe_refused: AtomicU64,
    /// Connections closed for keep-alive or connect timeout.
    pub timeouts: AtomicU64,
    /// Connections replaced by a new one with the same client id.
    pub taken_over: AtomicU64,
    /// QoS 0 publishes received (best effort: no PUBACK, not retried).
    pub qos0_received: AtomicU64,
    /// QoS 1 publishes received.
    pub qos1_received: AtomicU64,
    /// QoS 2 publishes received.
    pub qos2_received: AtomicU64,
    /// PUBACK / PUBREC sent (each after the frame's durable outcome).
    pub acks_sent: AtomicU64,
    /// Times a publish had to wait for buffer space (its PUBACK held, reading paused).
    pub waits_for_space: AtomicU64,
    /// Application acks written to device connections.
    pub app_acks_delivered: AtomicU64,
    /// Application acks for devices with no subscribed connection (the
    /// device gets a fresh one when it re-sends).
    pub app_acks_undeliverable: AtomicU64,
}

impl EndpointStats {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one (gauges).
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
