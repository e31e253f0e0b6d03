//! Serving connections: the accept loop and the HTTP/1 settings that keep a
//! hostile client from holding the receiver's memory or its connection
//! slots ([`crate::limits::Limits`]).
//!
//! - A connection slot is taken *before* `accept`: at `max_connections`
//!   the receiver stops accepting and new connections wait in the kernel's
//!   queue; nothing is allocated for them.
//! - hyper's HTTP/1 `header_read_timeout` closes a connection that does not
//!   finish a request head in `header_timeout`, including an idle kept-alive
//!   connection waiting for its next request; `max_buf_size` caps the head.
//! - Connections live in a `JoinSet` owned by the accept task: aborting it
//!   drops every connection at once (what a crash looks like to clients);
//!   a graceful stop lets requests in progress finish first.

use crate::limits::Limits;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Longest a graceful stop waits for requests in progress.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Io: Send + Unpin + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns: JoinSet<()> = JoinSet::new();
    let (stop_conns, _) = watch::channel(false);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (io, _peer) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let svc = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        let mut stop = stop_conns.subscribe();
        conns.spawn(async move {
            let _permit = permit;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(true);
            let conn = b.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    let _ = stop_conns.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACEFUL_STOP, drain).await.is_err() {
        tracing::warn!("requests still in progress after the graceful stop period; dropped");
    }
    Ok(())
}
