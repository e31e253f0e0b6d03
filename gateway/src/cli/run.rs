//! `run`: the gateway as a service. Starts every task from the config and
//! runs until SIGINT or SIGTERM, then stops cleanly.

use crate::clock::SystemClock;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Gateway config file (TOML). See config/gateway.example.toml.
    #[arg(
        short,
        long,
        env = "MRV_CONFIG",
        default_value = "/etc/mrv-gateway/gateway.toml"
    )]
    pub config: PathBuf,
}

/// Runs the gateway until a stop signal.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    run_with_clock(args, Arc::new(SystemClock))
}

/// As [`run`], on `clock` (tests: a time-compressed clock).
pub fn run_with_clock(args: RunArgs, clock: Arc<dyn crate::clock::Clock>) -> anyhow::Result<()> {
    // The same checks as `check-config`: a problem a restart cannot fix is
    // said once, plainly, with exit status 78.
    let (config, warnings) = crate::cli::check_config::load_checked(&args.config)?;
    for w in &warnings {
        tracing::warn!(key = %w.key, "{}", w.problem);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let gateway = crate::runtime::start(config, clock).await?;
        wait_for_stop_signal().await;
        tracing::info!("stop signal received; shutting down");
        gateway.shutdown().await;
        Ok(())
    })
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
