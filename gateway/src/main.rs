//! `mrv-gateway` binary: parses the command line and hands over to
//! [`mrv_gateway::cli::main_with`] (logging, TLS provider, dispatch, one
//! plain error line and the exit status).

use clap::Parser;

fn main() -> std::process::ExitCode {
    mrv_gateway::cli::main_with(mrv_gateway::cli::Cli::parse())
}
