//! One client connection: the task that drives a [`Session`] over a socket.
//!
//! It reads only while the session wants to ([`Session::wants_read`]): when
//! the in-flight window is full or a publish waits for buffer space, the
//! socket is not read, TCP flow control pushes back to the client, and
//! nothing piles up in memory. An idle plain-TCP connection holds no read or
//! write buffer (they are allocated when bytes arrive and released when
//! drained).

use super::ack_routes::{AckRoutes, AckSlot};
use super::auth::Authenticator;
use super::codec::{self, Outbound, Qos, Version, WireError};
use super::session::{Action, CloseReason, Event, Limits, Note, Session};
use super::stats::{EndpointStats, RefusedLogin};
use crate::ingest::intake::{Disposition, PublishHandler};
use bytes::BytesMut;
use mrv_shared::ids::SiteId;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// A client that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Refusals (publish/subscribe) logged per connection; the rest are counted only.
const NOTES_LOGGED: u32 = 3;

/// What every connection shares.
pub(crate) struct Shared {
    pub site: SiteId,
    pub limits: Limits,
    pub auth: Authenticator,
    pub handler: Arc<dyn PublishHandler>,
    pub routes: Arc<AckRoutes>,
    pub stats: Arc<EndpointStats>,
    /// Client id -> (connection id, its take-over signal).
    pub clients: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    pub connect_timeout: Duration,
}

/// A plain or TLS socket.
pub(crate) enum Transport {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Transport {
    /// Reads at least one byte into `buf` (0 = closed). A plain socket waits
    /// for readability before a buffer is reserved.
    async fn read_into(&mut self, buf: &mut BytesMut, max_packet: usize) -> std::io::Result<usize> {
        match self {
            Transport::Tcp(s) => loop {
                s.readable().await?;
                buf.reserve(8192.min(max_packet + 8));
                match s.try_read_buf(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            },
            Transport::Tls(s) => {
                buf.reserve(4096);
                s.read_buf(buf).await
            }
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Transport::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Transport::Tcp(s) => s.shutdown().await,
            Transport::Tls(s) => s.shutdown().await,
        };
    }
}

type PendingOutcome = Pin<Box<dyn Future<Output = Disposition> + Send>>;

/// Runs one connection to its end.
pub(crate) async fn serve(
    mut io: Transport,
    peer: SocketAddr,
    conn_id: u64,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stats = shared.stats.clone();
    let mut session = Session::new(shared.site.clone(), shared.limits, Some(peer));
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let mut pending: VecDeque<(u64, PendingOutcome)> = VecDeque::new();
    let mut retries: Vec<(u64, Instant)> = Vec::new();
    let slot = Arc::new(AckSlot::default());
    let kick = Arc::new(Notify::new());
    let mut deadline = Instant::now() + shared.connect_timeout;
    let mut notes_logged = 0u32;
    let mut close: Option<CloseReason> = None;
    let max = shared.limits.max_packet_bytes;
    let reason = 'conn: loop {
        // Decode what is buffered while the session wants more.
        while close.is_none() && session.wants_read() && !rbuf.is_empty() {
            let decoded = match session.version() {
                None => codec::decode_connect(&mut rbuf, max),
                Some(v) => codec::decode(&mut rbuf, v, max),
            };
            let actions = match decoded {
                Ok(None) => break,
                Ok(Some(p)) => session.on(Event::Packet(p), &shared.auth),
                Err(e) => session.close(wire_close(e)),
            };
            run_actions(
                actions,
                &mut Ctx {
                    session: &session,
                    shared: &shared,
                    conn_id,
                    slot: &slot,
                    kick: &kick,
                    wbuf: &mut wbuf,
                    pending: &mut pending,
                    retries: &mut retries,
                    close: &mut close,
                    notes_logged: &mut notes_logged,
                },
            );
        }
        // An idle connection holds no buffers (memory per idle connection);
        // a busy one (outcomes pending) keeps them rather than allocating
        // them again for every read and write.
        let idle = pending.is_empty();
        if idle && rbuf.is_empty() && rbuf.capacity() > 0 {
            rbuf = BytesMut::new();
        }
        if !wbuf.is_empty() {
            match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(&wbuf)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break 'conn close.take().unwrap_or(CloseReason::PeerClosed),
                Err(_) => {
                    break 'conn close.take().unwrap_or(CloseReason::ProtocolError(
                        "client does not read its socket (write timed out)".into(),
                    ));
                }
            }
            if idle {
                wbuf = BytesMut::new();
            } else {
                wbuf.clear();
            }
        }
        if let Some(r) = close.take() {
            break r;
        }
        let reading = session.wants_read();
        let timer_on = reading && (session.version().is_none() || session.keep_alive().is_some());
        let next_retry = retries.iter().map(|r| r.1).min();
        let actions = tokio::select! {
            _ = shutdown.changed() => session.close(CloseReason::ShuttingDown),
            _ = kick.notified() => session.close(CloseReason::TakenOver),
            resolved = ready_outcomes(&mut pending), if !pending.is_empty() => {
                // Every outcome already decided (a group commit resolves a
                // whole run of them at once): their PUBACKs go out in one write.
                resolved
                    .into_iter()
                    .flat_map(|(token, disposition)| {
                        session.on(Event::Resolved { token, disposition }, &shared.auth)
                    })
                    .collect()
            }
            _ = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {
                let now = Instant::now();
                let due: Vec<u64> = retries.iter().filter(|r| r.1 <= now).map(|r| r.0).collect();
                retries.retain(|r| r.1 > now);
                due.into_iter()
                    .flat_map(|token| session.on(Event::RetryDue { token }, &shared.auth))
                    .collect()
            }
            _ = slot.notify.notified() => {
                let version = session.version().unwrap_or(Version::V311);
                for (topic, payload) in slot.take() {
                    codec::encode(&Outbound::Publish { topic, payload }, version, &mut wbuf);
                    EndpointStats::inc(&stats.app_acks_delivered);
                }
                Vec::new()
            }
            r = io.read_into(&mut rbuf, max), if reading => match r {
                Ok(0) | Err(_) => session.close(CloseReason::PeerClosed),
                Ok(_) => {
                    if let Some(k) = session.keep_alive() {
                        deadline = Instant::now() + k;
                    }
                    Vec::new()
                }
            },
            _ = tokio::time::sleep_until(deadline), if timer_on => {
                if session.version().is_none() {
                    session.close(CloseReason::ConnectTimeout)
                } else {
                    session.close(CloseReason::KeepAliveTimeout)
                }
            }
        };
        let was_connecting = session.client().is_none();
        run_actions(
            actions,
            &mut Ctx {
                session: &session,
                shared: &shared,
                conn_id,
                slot: &slot,
                kick: &kick,
                wbuf: &mut wbuf,
                pending: &mut pending,
                retries: &mut retries,
                close: &mut close,
                notes_logged: &mut notes_logged,
            },
        );
        if was_connecting && let Some(k) = session.keep_alive() {
            deadline = Instant::now() + k;
        }
    };
    // Last words (CONNACK refusal, MQTT 5 DISCONNECT) before closing.
    if !wbuf.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), io.write_all(&wbuf)).await;
    }
    io.shutdown().await;
    for d in session.routed() {
        shared.routes.unroute(d, conn_id);
    }
    if let Some(c) = session.client() {
        let mut clients = shared
            .clients
            .lock()
            .expect("clients lock is never poisoned");
        if clients
            .get(&c.client_id)
            .is_some_and(|(id, _)| *id == conn_id)
        {
            clients.remove(&c.client_id);
        }
    }
    EndpointStats::dec(&stats.connections_open);
    log_close(&reason, &session, peer, pending.len(), &stats);
}

/// The resolved outcomes at the head of `pending`, in order: waits for the
/// first, then takes every following one that is already resolved
/// (the session orders acks anyway). Only the oldest registers a waker: the
/// writer resolves a commit's outcomes last to first, so this wakes once per
/// commit with all of them there.
fn ready_outcomes(
    pending: &mut VecDeque<(u64, PendingOutcome)>,
) -> impl Future<Output = Vec<(u64, Disposition)>> + '_ {
    std::future::poll_fn(move |cx| {
        let mut ready = Vec::new();
        while let Some((token, fut)) = pending.front_mut() {
            match fut.as_mut().poll(cx) {
                Poll::Ready(d) => {
                    ready.push((*token, d));
                    pending.pop_front();
                }
                Poll::Pending => break,
            }
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(ready)
        }
    })
}

fn wire_close(e: WireError) -> CloseReason {
    match e {
        WireError::TooLarge { size, max } => CloseReason::TooLarge { size, max },
        WireError::NotConnect => {
            CloseReason::Malformed("first bytes are not an MQTT CONNECT".into())
        }
        WireError::UnsupportedProtocol(d) => CloseReason::ProtocolError(d),
        WireError::Malformed(d) => CloseReason::Malformed(d),
    }
}

struct Ctx<'a> {
    session: &'a Session,
    shared: &'a Arc<Shared>,
    conn_id: u64,
    slot: &'a Arc<AckSlot>,
    kick: &'a Arc<Notify>,
    wbuf: &'a mut BytesMut,
    pending: &'a mut VecDeque<(u64, PendingOutcome)>,
    retries: &'a mut Vec<(u64, Instant)>,
    close: &'a mut Option<CloseReason>,
    notes_logged: &'a mut u32,
}

fn run_actions(actions: Vec<Action>, c: &mut Ctx<'_>) {
    let stats = &c.shared.stats;
    let version = c.session.version().unwrap_or(Version::V311);
    let client_id = c
        .session
        .client()
        .map(|c| c.client_id.as_str())
        .unwrap_or("");
    for a in actions {
        match a {
            Action::Send(p) => {
                if matches!(p, Outbound::PubAck { .. } | Outbound::PubRec { .. }) {
                    EndpointStats::inc(&stats.acks_sent);
                }
                codec::encode(&p, version, c.wbuf);
            }
            Action::Accepted(client) => {
                let old = c
                    .shared
                    .clients
                    .lock()
                    .expect("clients lock is never poisoned")
                    .insert(client.client_id.clone(), (c.conn_id, c.kick.clone()));
                if let Some((_, old_kick)) = old {
                    old_kick.notify_one();
                }
                tracing::debug!(client = %client.client_id, user = client.username.as_deref().unwrap_or(""), version = version.name(), peer = ?client.peer, "MQTT client connected");
            }
            Action::Handle { token, publish } => {
                let receipt = c.shared.handler.handle(publish);
                c.pending.push_back((token, Box::pin(receipt.wait())));
            }
            Action::ArmRetry { token, after } => c.retries.push((token, Instant::now() + after)),
            Action::Route(d) => c.shared.routes.route(d, c.conn_id, c.slot),
            Action::Unroute(d) => c.shared.routes.unroute(&d, c.conn_id),
            Action::Note(n) => {
                let log = *c.notes_logged < NOTES_LOGGED;
                match n {
                    Note::Received(Qos::AtMostOnce) => EndpointStats::inc(&stats.qos0_received),
                    Note::Received(Qos::AtLeastOnce) => EndpointStats::inc(&stats.qos1_received),
                    Note::Received(Qos::ExactlyOnce) => EndpointStats::inc(&stats.qos2_received),
                    Note::WaitingForSpace => {
                        EndpointStats::inc(&stats.waits_for_space);
                        if log {
                            *c.notes_logged += 1;
                            tracing::warn!(
                                client = client_id,
                                "buffer full: the PUBACK waits and this connection is not read until the frame is stored"
                            );
                        }
                    }
                    Note::PublishRefused { topic } => {
                        EndpointStats::inc(&stats.publish_not_authorized);
                        if log {
                            *c.notes_logged += 1;
                            tracing::warn!(client = client_id, %topic, "publish refused: this credential may publish only on its own device's up topic (PUBACK 0x87)");
                        }
                    }
                    Note::SubscribeRefused { filter } => {
                        EndpointStats::inc(&stats.subscribe_refused);
                        if log {
                            *c.notes_logged += 1;
                            tracing::warn!(client = client_id, %filter, "subscription refused: only the device's own ack topic mrv/<site>/<device>/ack may be subscribed");
                        }
                    }
                }
            }
            Action::Close(r) => *c.close = Some(r),
        }
    }
}

fn log_close(
    reason: &CloseReason,
    session: &Session,
    peer: SocketAddr,
    unresolved: usize,
    stats: &EndpointStats,
) {
    let counter = match reason {
        CloseReason::AuthFailed { .. } => Some(&stats.auth_failures),
        CloseReason::Malformed(_) => Some(&stats.malformed),
        CloseReason::TooLarge { .. } => Some(&stats.oversized),
        CloseReason::ProtocolError(_) => Some(&stats.protocol_errors),
        CloseReason::NotAuthorized { .. } => Some(&stats.publish_not_authorized),
        CloseReason::KeepAliveTimeout | CloseReason::ConnectTimeout => Some(&stats.timeouts),
        CloseReason::TakenOver => Some(&stats.taken_over),
        _ => None,
    };
    let version = session.version().map(|v| v.name()).unwrap_or("?");
    let client = match reason {
        CloseReason::AuthFailed {
            client_id,
            username,
        } => {
            // Before the counter, so a reader that sees the count grow finds it.
            *stats
                .last_refused_login
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(RefusedLogin {
                peer,
                client_id: client_id.clone(),
                username: username.clone(),
                version: version.to_string(),
            });
            client_id.as_str()
        }
        _ => session.client().map(|c| c.client_id.as_str()).unwrap_or(""),
    };
    if let Some(c) = counter {
        EndpointStats::inc(c);
    }
    if reason.is_fault() {
        tracing::warn!(%peer, client, version, unacked = unresolved, "MQTT connection closed: {reason}");
    } else {
        tracing::info!(%peer, client, version, unacked = unresolved, "MQTT connection closed: {reason}");
    }
}
