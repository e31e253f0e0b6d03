//! # Technician diagnostics: local web page, JSON API, `/metrics`, systemd
//!
//! A technician on site opens the gateway's page from a laptop on the local
//! network with no internet; a site operator scrapes `/metrics` or runs
//! `mrv-gateway status` from afar (through an SSH tunnel to the loopback
//! listener). Everything here *reads* the gateway's state; nothing writes the
//! data path.
//!
//! - [`config`]: the `[diagnostics]` section (loopback by default; any other
//!   address needs a token, else the gateway refuses to start);
//! - [`state`]: the live store (last hour per channel, one-minute buckets
//!   for 24 h, ten-minute buckets for 7 days, last frame and MQTT tail per
//!   device), fed from the writer's broadcast of stored frames and refilled
//!   from the buffer after a restart;
//! - [`chart`]: the SVG charts (time and value axes, gaps, unavailable values);
//! - [`api`]: JSON view types and their pure assembly from the state;
//! - [`page`]: server-rendered HTML (overview with health banner, device
//!   pages, events, logs, Modbus probe, quarantine), assets compiled in
//!   (`assets/`); [`metrics`]: Prometheus text;
//! - [`server`]: the axum router, the token check, [`serve_diagnostics`];
//! - [`logs`]: in-memory log ring (a tracing layer) with secret scrubbing;
//! - [`bundle`]: config redaction and the `diag bundle` tar.gz;
//! - [`probe`]: the one-shot Modbus read behind the probe form;
//! - [`systemd`]: `READY=1` and watchdog pings.
//!
//! Invariant: no secret (token, password, private key) appears in a page,
//! an API answer, a log line kept here, or a bundle.

pub mod api;
pub mod bundle;
pub mod chart;
pub mod config;
pub mod logs;
pub mod metrics;
pub mod page;
pub mod probe;
pub mod server;
pub mod state;
pub mod systemd;

pub use config::{DiagnosticsSection, ValidDiagnosticsConfig};

use crate::runtime::GatewayState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// A component's status for the page, produced on demand as JSON (used for
/// the uploader: fields such as `last_success_ms`, `last_error`,
/// `next_retry_ms`, `errors` are shown and exported as metrics).
pub type StatusProbe = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Why the diagnostics server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} for the diagnostics page: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("diagnostics server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `cfg.listen` and serves the page, the API and `/metrics` until
/// `shutdown` turns true.
pub async fn serve_diagnostics(
    state: GatewayState,
    cfg: ValidDiagnosticsConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DiagnosticsError> {
    let listener = server::bind(&cfg).await?;
    server::serve_on(listener, state, cfg, shutdown).await
}
