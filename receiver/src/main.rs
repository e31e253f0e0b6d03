//! `mrv-receiver`: the reference MRV receiver as a process.
//!
//! Prints `listening on <scheme>://<addr>` on stdout once it accepts
//! connections (tests that start it with `--listen 127.0.0.1:0` read the
//! port from there), and stops on Ctrl-C / SIGTERM.

use anyhow::Context;
use clap::Parser;
use mrv_receiver::{ReceiverConfig, tls::TlsSettings};
use mrv_shared::report::KeySet;
use mrv_shared::report::jwk::Jwk;
use std::io::Write;
use std::path::PathBuf;

/// Reference MRV backend receiver: verifies, chains and stores signed
/// monitoring reports.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Directory for stored reports and flags.
    #[arg(long)]
    data_dir: PathBuf,
    /// A gateway's public JWK file (with `kid`); repeatable.
    #[arg(long = "gateway-key", required = true)]
    gateway_keys: Vec<PathBuf>,
    /// Bearer token required on uploads (or env MRV_RECEIVER_TOKEN).
    #[arg(long, env = "MRV_RECEIVER_TOKEN")]
    token: Option<String>,
    /// Server certificate chain (PEM). Without it the receiver speaks plain HTTP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: enables mTLS.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut keys = KeySet::new();
    for p in &args.gateway_keys {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let jwk: Jwk =
            serde_json::from_str(&text).with_context(|| format!("{}: not a JWK", p.display()))?;
        keys.insert_jwk(&jwk)
            .with_context(|| format!("{}: unusable key", p.display()))?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(TlsSettings::from_pem_files(
            c,
            k,
            args.client_ca.as_deref(),
        )?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let running = mrv_receiver::start(
        listener,
        ReceiverConfig {
            data_dir: args.data_dir.clone(),
            keys,
            token: args.token.clone(),
            tls,
        },
    )
    .await?;
    println!("listening on {scheme}://{}", running.addr());
    std::io::stdout().flush().context("stdout")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    running.stop().await.context("server")?;
    Ok(())
}
