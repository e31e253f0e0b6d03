//! # mrv-receiver: the reference MRV backend receiver
//!
//! What an MRV backend needs to accept the gateway's uploads, and what the
//! tests and the demo upload to. An axum service that
//!
//! - verifies each report's JWS and contents against registered gateway
//!   keys ([`mrv_shared::report::verify_report`]);
//! - checks each gateway's chain (gap-free seq, `prev_hash`, periods,
//!   counter baselines; [`mrv_shared::report::verify::check_link`]);
//! - accepts byte-identical duplicates idempotently, rejects and flags
//!   equivocations (same seq, different bytes);
//! - stores reports verbatim and durably (fsync before answering 2xx);
//! - serves listing, fetching and per-gateway chain status.
//!
//! Layout: [`archive`] (storage and chain decisions), [`routes`] (HTTP API,
//! see `docs/openapi.yaml`), [`tls`] (rustls with ring, optional mTLS), and
//! here [`start`], which serves on a given listener (the binary, the demo
//! and the tests all use it).
//!
//! Running it:
//!
//! ```text
//! mrv-receiver --listen 0.0.0.0:8443 --data-dir /var/lib/mrv-receiver \
//!     --gateway-key gw-th-01.pub.jwk --token "$TOKEN" \
//!     --tls-cert server.pem --tls-key server.key [--client-ca gateways-ca.pem]
//! ```
//!
//! It prints `listening on https://<addr>` once it accepts connections.

pub mod archive;
pub mod routes;
pub mod tls;

use archive::{Archive, ArchiveError};
use mrv_shared::report::KeySet;
use routes::{AppState, ReceiverStats};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The archive could not be opened.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// How to run a receiver.
#[derive(Debug)]
pub struct ReceiverConfig {
    /// Where reports are stored.
    pub data_dir: PathBuf,
    /// Registered gateway keys.
    pub keys: KeySet,
    /// Bearer token required on upload routes (`None`: open).
    pub token: Option<String>,
    /// TLS (`None`: plain HTTP, for local use only).
    pub tls: Option<tls::TlsSettings>,
}

/// Control of a running receiver. Cheap to clone.
#[derive(Clone)]
pub struct ReceiverHandle {
    addr: SocketAddr,
    state: AppState,
}

impl ReceiverHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The archive (read it to check what was stored).
    pub fn archive(&self) -> &Archive {
        &self.state.archive
    }
    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.state.stats
    }
    /// Maintenance mode: `Some(secs)` answers uploads `503` with
    /// `Retry-After: secs`; `None` ends it.
    pub fn set_maintenance(&self, retry_after_secs: Option<u64>) {
        *self
            .state
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = retry_after_secs;
    }
}

/// A receiver serving in the background.
pub struct RunningReceiver {
    /// Its control handle.
    pub handle: ReceiverHandle,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningReceiver {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }
    /// Stops accepting, lets requests in progress finish, and waits.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
    /// Stops at once, dropping connections (a crash, as far as clients see;
    /// what was acknowledged is on disk).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Opens the archive and serves on `listener` until stopped.
pub async fn start(
    listener: TcpListener,
    config: ReceiverConfig,
) -> Result<RunningReceiver, ReceiverError> {
    let dir = config.data_dir.clone();
    let archive = tokio::task::spawn_blocking(move || Archive::open(&dir))
        .await
        .map_err(std::io::Error::other)??;
    let state = AppState {
        archive: Arc::new(archive),
        keys: Arc::new(config.keys),
        token: config.token.map(Arc::from),
        maintenance: Arc::new(Mutex::new(None)),
        stats: Arc::new(ReceiverStats::default()),
    };
    if state.token.is_none() {
        tracing::warn!("no upload token configured: anyone who can connect may upload");
    }
    let addr = listener.local_addr()?;
    let app = routes::router(state.clone());
    let (shutdown, mut rx) = watch::channel(false);
    let signal = async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let task = match config.tls {
        Some(t) => {
            let l = tls::TlsListener::new(listener, t.server_config()?)?;
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(signal).await })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        }),
    };
    Ok(RunningReceiver {
        handle: ReceiverHandle { addr, state },
        shutdown,
        task,
    })
}
