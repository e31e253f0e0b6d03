//! `mrv-gateway` binary: parses the command line, sets up logging and the TLS
//! provider, and hands over to [`mrv_gateway::cli`].

use clap::Parser;
use mrv_gateway::cli::{Cli, dispatch};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    // One TLS stack everywhere: rustls with the ring provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    dispatch(cli)
}
