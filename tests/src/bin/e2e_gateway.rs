//! The gateway's command line, built inside the end-to-end test crate so that
//! tests can run the gateway as a child process (and kill it) via
//! `env!("CARGO_BIN_EXE_mrv-e2e-gateway")`. Same code path as `mrv-gateway`.

use clap::Parser;
use mrv_gateway::cli::{Cli, dispatch, init_process};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_process(&cli)?;
    dispatch(cli)
}
