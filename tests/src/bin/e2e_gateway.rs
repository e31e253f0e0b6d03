//! The gateway's command line, built inside the end-to-end test crate so that
//! tests can run the gateway as a child process (and kill it) via
//! `env!("CARGO_BIN_EXE_mrv-e2e-gateway")`. Same code path as `mrv-gateway`.

use clap::Parser;
use mrv_gateway::cli::{Cli, dispatch};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    dispatch(cli)
}
