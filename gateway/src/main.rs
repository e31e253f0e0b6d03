//! `mrv-gateway` binary: parses the command line, sets up logging and the TLS
//! provider, and hands over to [`mrv_gateway::cli`].

use clap::Parser;
use mrv_gateway::cli::{Cli, dispatch};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // stderr (journald under systemd), plus the in-memory ring the
    // diagnostics page and `diag bundle` show.
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(mrv_gateway::diagnostics::logs::layer())
        .init();
    // One TLS stack everywhere: rustls with the ring provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    dispatch(cli)
}
