//! One task per Modbus TCP device: connect (with backoff), poll on the
//! schedule, hand frames to the durable writer and events to the event
//! store.
//!
//! Failure isolation: each TCP device has its own task, connection and
//! timers, so a dead, slow or misbehaving device only ever delays itself.
//! A connection is dropped after any link fault (timeout, broken pipe,
//! malformed answer): a late answer on a kept connection could be taken as
//! the answer to the next request. Reconnection attempts back off
//! exponentially ([`Backoff`], pure) but never longer than half the poll
//! interval, so a device that comes back is read again at the next
//! scheduled poll (not up to 30 s later); while disconnected each scheduled
//! poll still yields an all-unavailable frame, so the gap is a recorded fact.

use super::config::ValidDevice;
use super::planner::ReadRequest;
use super::poll::DevicePoller;
use super::schedule::Schedule;
use super::status::ModbusStatus;
use super::transport::{ModbusReader, ReadError, RegisterReader};
use mrv_gateway_buffer::write_request::WriteRequest;
use mrv_shared::clock::Clock;
use mrv_shared::event::Event;
use mrv_shared::ids::SiteId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::Slave;

/// Reconnection backoff: 0.5 s doubling to 30 s (or to a lower ceiling,
/// [`Backoff::with_ceiling`]), reset by a success. Pure; times are ms of a
/// monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    not_before_ms: u64,
    ceiling_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            failures: 0,
            not_before_ms: 0,
            ceiling_ms: Self::MAX_MS,
        }
    }
}

impl Backoff {
    /// First delay.
    pub const INITIAL_MS: u64 = 500;
    /// Longest delay.
    pub const MAX_MS: u64 = 30_000;

    /// A backoff whose delay never exceeds `ceiling_ms` (nor [`Self::MAX_MS`]):
    /// half the poll interval, so that every scheduled poll tries again.
    pub fn with_ceiling(ceiling_ms: u64) -> Self {
        Backoff {
            ceiling_ms: ceiling_ms.min(Self::MAX_MS),
            ..Backoff::default()
        }
    }

    /// True when a connection attempt is allowed at `now_ms`.
    pub fn may_try(&self, now_ms: u64) -> bool {
        now_ms >= self.not_before_ms
    }

    /// When the next attempt is allowed.
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }

    /// Records a failed attempt at `now_ms`; returns the delay imposed.
    pub fn failed(&mut self, now_ms: u64) -> u64 {
        let delay = Self::INITIAL_MS
            .saturating_mul(1 << self.failures.min(16))
            .min(self.ceiling_ms);
        self.failures = self.failures.saturating_add(1);
        self.not_before_ms = now_ms + delay;
        delay
    }

    /// Records a success.
    pub fn succeeded(&mut self) {
        *self = Backoff::with_ceiling(self.ceiling_ms);
    }
}

/// A TCP device link that connects lazily, drops the connection on link
/// faults and honours the backoff.
#[derive(Debug)]
pub struct TcpReader {
    host: String,
    port: u16,
    unit: u8,
    timeout: Duration,
    conn: Option<ModbusReader>,
    backoff: Backoff,
    last_error: Option<ReadError>,
    epoch: Instant,
}

impl TcpReader {
    /// A disconnected link to `host:port`, unit `unit`, retried at the
    /// latest every `retry_within` while down.
    pub fn new(
        host: String,
        port: u16,
        unit: u8,
        timeout: Duration,
        retry_within: Duration,
    ) -> Self {
        TcpReader {
            host,
            port,
            unit,
            timeout,
            conn: None,
            backoff: Backoff::with_ceiling(
                u64::try_from(retry_within.as_millis()).unwrap_or(u64::MAX),
            ),
            last_error: None,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn connect(&mut self) -> Result<(), ReadError> {
        let now = self.now_ms();
        if !self.backoff.may_try(now) {
            // Same text as the failure that started the backoff, so that
            // edge-triggered events do not fire on every skipped attempt.
            return Err(self
                .last_error
                .clone()
                .unwrap_or_else(|| ReadError::Link("disconnected".into())));
        }
        match connect(&self.host, self.port, self.unit, self.timeout).await {
            Ok(r) => {
                self.backoff.succeeded();
                self.last_error = None;
                self.conn = Some(r);
                Ok(())
            }
            Err(e) => {
                self.backoff.failed(now);
                self.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Drops the connection (the next read reconnects).
    pub fn drop_connection(&mut self) {
        self.conn = None;
    }
}

/// Connects to `host:port` within `timeout`; errors say what failed
/// (name resolution, connection refused, timeout).
pub async fn connect(
    host: &str,
    port: u16,
    unit: u8,
    timeout: Duration,
) -> Result<ModbusReader, ReadError> {
    let attempt = async {
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ReadError::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect();
        let mut last = ReadError::Unreachable(format!("{host} resolves to no address"));
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let ctx = tokio_modbus::client::tcp::attach_slave(s, Slave(unit));
                    return Ok(ModbusReader::new(ctx, timeout));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = ReadError::Unreachable(format!(
                        "connection refused by {addr} (nothing listens on that port)"
                    ));
                }
                Err(e) => last = ReadError::Unreachable(format!("cannot connect to {addr}: {e}")),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ReadError::Timeout(timeout)),
    }
}

impl RegisterReader for TcpReader {
    async fn read(&mut self, req: ReadRequest) -> Result<Vec<u16>, ReadError> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        let conn = self.conn.as_mut().expect("connected above");
        let r = conn.read(req).await;
        if r.as_ref().is_err_and(ReadError::is_link_fault) {
            self.conn = None;
        }
        r
    }
}

/// Where a poller sends its output.
#[derive(Clone)]
pub struct Sinks {
    /// The durable writer.
    pub writes: mpsc::Sender<WriteRequest>,
    /// The event store.
    pub events: mpsc::Sender<Event>,
    /// Diagnostics.
    pub status: ModbusStatus,
    /// Gateway wall clock (timestamps).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks").finish_non_exhaustive()
    }
}

impl Sinks {
    /// Delivers one poll's output; false when the writer is gone (shut down).
    pub async fn deliver(&self, out: super::poll::PollOutput, now_ms: u64) -> bool {
        for e in out.events {
            if self.events.send(e).await.is_err() {
                tracing::debug!("event store closed; Modbus event dropped");
            }
        }
        if let Some(frame) = out.frame
            && self
                .writes
                .send(WriteRequest::gateway_sequenced(frame, now_ms))
                .await
                .is_err()
        {
            return false;
        }
        true
    }
}

/// Runs one TCP device until the writer closes.
pub async fn run(site: SiteId, device: ValidDevice, sinks: Sinks) {
    let super::config::Link::Tcp { host, port } = device.link.clone() else {
        tracing::error!(device = %device.id, "not a TCP device");
        return;
    };
    let interval = u64::try_from(device.poll_interval.as_millis()).unwrap_or(u64::MAX);
    let mut reader = TcpReader::new(
        host,
        port,
        device.unit,
        device.timeout,
        Duration::from_millis(interval / 2),
    );
    let mut schedule = Schedule::new(&[interval], 0);
    let mut poller = DevicePoller::new(site, device);
    let epoch = Instant::now();
    let elapsed = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    loop {
        let (_, due) = schedule.next().expect("one device");
        tokio::time::sleep_until(epoch + Duration::from_millis(due)).await;
        let now_ms = sinks.clock.now_ms();
        let out = poller.poll(&mut reader, now_ms, &sinks.status).await;
        if out.link_fault {
            reader.drop_connection();
        }
        if !sinks.deliver(out, now_ms).await {
            return;
        }
        let c = schedule.completed(0, elapsed());
        if c.missed > 0 {
            tracing::debug!(device = %poller.device().id, missed = c.missed, "poll overran its interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::default();
        assert!(b.may_try(0));
        assert_eq!(b.failed(0), 500);
        assert!(!b.may_try(499));
        assert!(b.may_try(500));
        assert_eq!(b.failed(500), 1000);
        for _ in 0..10 {
            b.failed(0);
        }
        assert_eq!(b.failed(0), Backoff::MAX_MS);
        b.succeeded();
        assert_eq!(b.failed(0), 500);
    }

    #[test]
    fn a_ceiling_keeps_retries_within_the_poll_interval() {
        let mut b = Backoff::with_ceiling(2_000);
        for _ in 0..10 {
            b.failed(0);
        }
        assert_eq!(b.failed(10_000), 2_000);
        assert!(b.may_try(12_000));
        b.succeeded();
        for _ in 0..10 {
            b.failed(0);
        }
        assert_eq!(b.failed(0), 2_000, "the ceiling survives a success");
    }

    #[tokio::test]
    async fn connection_refused_says_so() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let e = connect("127.0.0.1", port, 1, Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert!(e.to_string().contains("connection refused"), "{e}");
    }
}
