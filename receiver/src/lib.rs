//! # mrv-receiver: the reference MRV backend receiver
//!
//! What an MRV backend needs to accept the gateway's uploads, and what the
//! tests and the demo upload to. An axum service that
//!
//! - verifies each report's JWS and contents ([`verification`]: the one
//!   call into `mrv_shared::report` verification);
//! - decides on each gateway's chain (gap-free seq, `prev_hash`, periods,
//!   counter baselines), idempotent for byte-identical duplicates,
//!   rejecting and flagging equivocations with the evidence kept
//!   ([`archive::decision`]);
//! - stores reports verbatim and durably before answering `2xx`, in files
//!   (one process) or PostgreSQL (any number of stateless receivers on one
//!   database) behind one interface ([`archive`]);
//! - appends every accepted report's hash to its RFC 6962 log and answers
//!   every `2xx` with a receipt: inclusion proof plus a C2SP signed
//!   checkpoint ([`mrv_shared::tlog`], [`log_key`]);
//! - admits reports against its registry ([`registry`]): enrolled gateways
//!   with their site, project and keys (validity periods, rotation,
//!   revocation), each site's device registry, every change audited;
//! - indexes every accepted report's calculations in a crediting ledger
//!   and answers totals rounded down once ([`ledger`]);
//! - writes the auditor's pack for a project and period, signed by the
//!   log key ([`statement`]);
//! - keeps hostile clients from exhausting memory or connections
//!   ([`limits`], [`serve`]).
//!
//! Layout: [`archive`] (storage, chain decisions, the log), [`routes`]
//! (HTTP API, normative in `docs/RECEIVER-API.md` and
//! `docs/openapi.yaml`), [`serve`] (connections), [`tls`] (rustls with
//! ring, optional mTLS), [`throwaway_postgres`] (a private PostgreSQL for
//! tests and benchmarks), and here [`start`], which serves on a given
//! listener (the binary, the demo and the tests all use it).
//!
//! Running it:
//!
//! ```text
//! mrv-receiver --listen 0.0.0.0:8443 --data-dir /var/lib/mrv-receiver \
//!     --gateway-key gw-th-01.pub.jwk --token "$TOKEN" \
//!     --tls-cert server.pem --tls-key server.key [--client-ca gateways-ca.pem]
//!     [--database-url postgres://... --log-key log.jwk]
//! ```
//!
//! It prints `listening on https://<addr>` once it accepts connections.

pub mod archive;
pub mod ledger;
pub mod limits;
pub mod log_key;
pub mod registry;
pub mod routes;
pub mod serve;
pub mod statement;
pub mod throwaway_postgres;
pub mod tls;
pub mod verification;

use archive::file::FileArchive;
use archive::postgres::PgArchive;
use archive::{AnyArchive, ArchiveError, LogIdentity};
use limits::Limits;
use mrv_shared::report::{DeviceTrust, KeySet};
use routes::{AppState, ReceiverStats};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use verification::Trust;

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The archive could not be opened.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The log key could not be loaded or created.
    #[error(transparent)]
    LogKey(#[from] log_key::LogKeyError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Where reports are stored.
#[derive(Debug, Clone)]
pub enum Store {
    /// Files under this directory (one receiver process).
    Files(PathBuf),
    /// PostgreSQL at this connection string (`postgres://...` or
    /// `host=... port=... user=... dbname=...`), with at most `pool`
    /// connections from this process.
    Postgres {
        /// Connection string.
        url: String,
        /// Connection pool size.
        pool: usize,
    },
}

/// How to run a receiver.
#[derive(Debug)]
pub struct ReceiverConfig {
    /// Where reports are stored.
    pub store: Store,
    /// The log's identity; `None`: load or create `<dir>/log-key.jwk`
    /// (file store only).
    pub log: Option<LogIdentity>,
    /// Gateway keys given at start (bootstrap: used for key ids the
    /// registry does not know; [`registry`]).
    pub keys: KeySet,
    /// The device registry of sites the registry has no devices for
    /// (fails closed; an empty one admits no device);
    /// [`DeviceTrust::ReportListed`] only for exploration.
    pub devices: DeviceTrust,
    /// Bearer token required on upload routes (`None`: open).
    pub token: Option<String>,
    /// Admin tokens of the registry routes (empty: those routes are closed).
    pub admins: routes::AdminTokens,
    /// TLS (`None`: plain HTTP, for local use only).
    pub tls: Option<tls::TlsSettings>,
    /// Bounds on connections, bodies and work.
    pub limits: Limits,
}

impl ReceiverConfig {
    /// A file-store receiver under `data_dir` trusting gateway `keys` and
    /// the device registry `devices`: no token, no TLS, default limits, the
    /// log key in the data directory.
    pub fn files(
        data_dir: impl Into<PathBuf>,
        keys: KeySet,
        devices: DeviceTrust,
    ) -> ReceiverConfig {
        ReceiverConfig {
            store: Store::Files(data_dir.into()),
            log: None,
            keys,
            devices,
            token: None,
            admins: routes::AdminTokens::default(),
            tls: None,
            limits: Limits::default(),
        }
    }
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
    pub fn archive(&self) -> &AnyArchive {
        &self.state.archive
    }
    /// The log's identity.
    pub fn log(&self) -> &LogIdentity {
        &self.state.identity
    }
    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.state.stats
    }
    /// Connection counters.
    pub fn connections(&self) -> &serve::ServeStats {
        &self.state.serve_stats
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
    /// what was acknowledged is durable).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Opens the store named in `config`.
pub async fn open_archive(
    store: &Store,
    identity: LogIdentity,
) -> Result<AnyArchive, ReceiverError> {
    Ok(match store {
        Store::Files(dir) => {
            let dir = dir.clone();
            AnyArchive::File(
                tokio::task::spawn_blocking(move || FileArchive::open(&dir, identity))
                    .await
                    .map_err(std::io::Error::other)??,
            )
        }
        Store::Postgres { url, pool } => {
            AnyArchive::Postgres(Box::new(PgArchive::connect(url, *pool, identity).await?))
        }
    })
}

/// Opens the archive and serves on `listener` until stopped.
pub async fn start(
    listener: TcpListener,
    config: ReceiverConfig,
) -> Result<RunningReceiver, ReceiverError> {
    let identity = match (config.log, &config.store) {
        (Some(l), _) => l,
        (None, Store::Files(dir)) => {
            let path = dir.join("log-key.jwk");
            tokio::task::spawn_blocking(move || log_key::load_or_create(&path, None))
                .await
                .map_err(std::io::Error::other)??
        }
        (None, Store::Postgres { .. }) => {
            return Err(ReceiverError::LogKey(log_key::LogKeyError::Invalid {
                path: String::from("(none)"),
                why: String::from(
                    "a PostgreSQL store needs the log key every receiver shares (--log-key)",
                ),
            }));
        }
    };
    let archive = open_archive(&config.store, identity.clone()).await?;
    let limits = Arc::new(config.limits);
    let budget_kib = usize::try_from(limits.body_budget_bytes.div_ceil(1024))
        .unwrap_or(Semaphore::MAX_PERMITS)
        .clamp(1, Semaphore::MAX_PERMITS);
    let state = AppState {
        archive: Arc::new(archive),
        trust: Arc::new(Trust {
            keys: config.keys,
            devices: config.devices,
        }),
        identity: Arc::new(identity),
        token: config.token.map(Arc::from),
        maintenance: Arc::new(Mutex::new(None)),
        stats: Arc::new(ReceiverStats::default()),
        body_budget: Arc::new(Semaphore::new(budget_kib)),
        verify_slots: Arc::new(Semaphore::new(limits.verify_slots.max(1))),
        limits: limits.clone(),
        serve_stats: Arc::new(serve::ServeStats::default()),
        admins: Arc::new(config.admins),
    };
    if state.token.is_none() {
        tracing::warn!("no upload token configured: anyone who can connect may upload");
    }
    let addr = listener.local_addr()?;
    let app = routes::router(state.clone());
    let (shutdown, rx) = watch::channel(false);
    let serve_stats = state.serve_stats.clone();
    let task = match config.tls {
        Some(t) => {
            let l = tls::TlsListener::new(listener, t.server_config()?)?;
            tokio::spawn(serve::serve(l, app, limits, serve_stats, rx))
        }
        None => tokio::spawn(serve::serve(listener, app, limits, serve_stats, rx)),
    };
    Ok(RunningReceiver {
        handle: ReceiverHandle { addr, state },
        shutdown,
        task,
    })
}
