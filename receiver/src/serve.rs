//! Serving connections: the accept loop and the HTTP/1 settings that keep a
//! hostile client from holding the receiver's memory or its connection
//! slots ([`crate::limits::Limits`]).
//!
//! - At most `max_connections` connections exist. At the cap, the oldest
//!   *idle* connection (one with no request in progress: kept alive between
//!   requests, or still dribbling its request head) is closed to make room,
//!   so a new client is served even when idle or slowloris connections fill
//!   every slot. When every connection is busy, the receiver stops accepting
//!   and new connections wait in the kernel's accept queue.
//! - hyper's HTTP/1 `header_read_timeout` closes a connection that does not
//!   finish a request head in `header_timeout`, including an idle kept-alive
//!   connection waiting for its next request; `max_buf_size` caps the head.
//! - Connections live in a `JoinSet` owned by the accept task: aborting it
//!   drops every connection at once (what a crash looks like to clients);
//!   a graceful stop lets requests in progress finish first.

use crate::limits::Limits;
use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;

/// Longest a graceful stop waits for requests in progress.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(30);

/// A live connection as the accept loop sees it.
struct Conn {
    /// Requests in progress on it.
    busy: Arc<AtomicUsize>,
    /// Told to close it.
    evict: Arc<Notify>,
}

/// Live connections by age (ids increase).
#[derive(Default)]
struct ConnTable {
    next: u64,
    conns: BTreeMap<u64, Conn>,
}

impl ConnTable {
    /// Closes the oldest connection with no request in progress; false
    /// when every connection is busy.
    fn evict_oldest_idle(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.conns.remove(&id)) {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counters of the accept loop.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections accepted.
    pub accepted: std::sync::atomic::AtomicU64,
    /// Idle connections closed to make room at the cap.
    pub evicted: std::sync::atomic::AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Arc<Limits>,
    stats: Arc<ServeStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Io: Send + Unpin + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let table = Arc::new(Mutex::new(ConnTable::default()));
    let mut conns: JoinSet<()> = JoinSet::new();
    let (stop_conns, _) = watch::channel(false);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let evicted = table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .evict_oldest_idle();
                if evicted {
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                // An evicted connection's task ends and frees its slot; with
                // none idle, wait for any connection to end.
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
        };
        let (io, _peer) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        let id = {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            let id = t.next;
            t.next += 1;
            t.conns.insert(
                id,
                Conn {
                    busy: busy.clone(),
                    evict: evict.clone(),
                },
            );
            id
        };
        let svc = {
            let (app, busy) = (app.clone(), busy.clone());
            hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (mut app, busy) = (app.clone(), busy.clone());
                busy.fetch_add(1, Ordering::SeqCst);
                async move {
                    let r = app.call(req.map(axum::body::Body::new)).await;
                    busy.fetch_sub(1, Ordering::SeqCst);
                    r
                }
            })
        };
        let (limits, table, stats) = (limits.clone(), table.clone(), stats.clone());
        let mut stop = stop_conns.subscribe();
        stats.open.fetch_add(1, Ordering::Relaxed);
        conns.spawn(async move {
            let _permit = permit;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(true);
            let conn = b.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let graceful = tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    false
                }
                _ = evict.notified() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if graceful {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .conns
                .remove(&id);
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    stop_conns.send_replace(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACEFUL_STOP, drain).await.is_err() {
        tracing::warn!("requests still in progress after the graceful stop period; dropped");
    }
    Ok(())
}
