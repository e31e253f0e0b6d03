//! `mrv-gateway` binary: parses the command line, sets up logging and the TLS
//! provider, and hands over to [`mrv_gateway::cli`].

use clap::Parser;
use mrv_gateway::cli::{Cli, dispatch, init_process};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_process(&cli)?;
    dispatch(cli)
}
