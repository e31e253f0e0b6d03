//! The gateway's command line, built inside the end-to-end test crate so that
//! tests can run the gateway as a child process (and kill it) via
//! `env!("CARGO_BIN_EXE_mrv-e2e-gateway")`. Same code path as `mrv-gateway`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    mrv_gateway::cli::main_with(mrv_gateway::cli::Cli::parse())
}
