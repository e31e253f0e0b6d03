//! `diag bundle`: collects a support bundle (tar.gz) from the running
//! gateway's API: redacted config, recent logs and events, status (buffer
//! summary, ingest, uploads, Modbus), devices and metrics. The layout is
//! documented in [`crate::diagnostics::bundle`].
//!
//! The gateway redacts the config and scrubs its log lines; the bundle
//! writer redacts the config text once more, so a bundle holds no secret
//! even from an older gateway.

use super::status::{ApiArgs, DiagClient};
use crate::diagnostics::api::ConfigView;
use crate::diagnostics::bundle::{redact_config, write_bundle};
use anyhow::Context;
use std::path::PathBuf;

/// Arguments of `diag`.
#[derive(Debug, clap::Args)]
pub struct DiagArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DiagCommand,
}

/// `diag` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DiagCommand {
    /// Write a support bundle (tar.gz) from the running gateway.
    Bundle(BundleArgs),
}

/// Arguments of `diag bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// Gateway API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Output file (default `mrv-diag-<unix seconds>.tar.gz` here).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Events and log lines to include.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// Fetches every bundle file from the gateway's API.
pub async fn collect(c: &DiagClient, limit: usize) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let config: ConfigView = c.json("/api/config").await?;
    let pretty = |v: serde_json::Value| serde_json::to_vec_pretty(&v).unwrap_or_default();
    let status: serde_json::Value = c.json("/api/status").await?;
    let devices: serde_json::Value = c.json("/api/devices").await?;
    let buffer: serde_json::Value = c.json("/api/buffer").await?;
    let uploads: serde_json::Value = c.json("/api/uploads").await?;
    let events: serde_json::Value = c.json(&format!("/api/events?limit={limit}")).await?;
    let logs: serde_json::Value = c.json(&format!("/api/logs?limit={limit}")).await?;
    let metrics = c.text("/metrics").await?;
    let readme = format!(
        "MRV Gateway diagnostics bundle\n\ntaken at unix time {now} from the gateway's API\n\
         config file: {}\n\nFiles: config.redacted.toml (secrets replaced by <redacted>), status.json \
         (site, buffer summary, ingest, uploads, Modbus), devices.json, buffer.json, uploads.json, events.json, logs.json \
         (recent log lines kept in memory), metrics.txt (Prometheus).\n",
        config.path
    );
    Ok(vec![
        ("README.txt".into(), readme.into_bytes()),
        (
            "config.redacted.toml".into(),
            redact_config(&config.redacted).into_bytes(),
        ),
        ("status.json".into(), pretty(status)),
        ("devices.json".into(), pretty(devices)),
        ("buffer.json".into(), pretty(buffer)),
        ("uploads.json".into(), pretty(uploads)),
        ("events.json".into(), pretty(events)),
        ("logs.json".into(), pretty(logs)),
        ("metrics.txt".into(), metrics.into_bytes()),
    ])
}

/// Runs `diag`.
pub fn run(args: DiagArgs) -> anyhow::Result<()> {
    match args.command {
        DiagCommand::Bundle(a) => bundle(a),
    }
}

fn bundle(a: BundleArgs) -> anyhow::Result<()> {
    let c = a.api.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let files = rt.block_on(collect(&c, a.limit))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = a
        .output
        .unwrap_or_else(|| PathBuf::from(format!("mrv-diag-{now}.tar.gz")));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    write_bundle(file, &files, now)?.sync_all()?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} files, {bytes} bytes)",
        path.display(),
        files.len()
    );
    Ok(())
}
