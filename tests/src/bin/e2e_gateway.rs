//! The gateway's command line, built inside the end-to-end test crate so that
//! tests can run the gateway as a child process (and kill it) via
//! `env!("CARGO_BIN_EXE_mrv-e2e-gateway")`. Same code path as `mrv-gateway`.
//!
//! `MRV_E2E_CLOCK=<start_ms>x<rate>` runs `run` on a time-compressed clock
//! ([`mrv_gateway::clock::ScaledClock`]: starts at `start_ms`, `rate` times
//! faster than real time), for soak tests that pass a day in minutes.

use clap::Parser;
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    let cli = mrv_gateway::cli::Cli::parse();
    match std::env::var("MRV_E2E_CLOCK") {
        Ok(spec) => {
            let Some(clock) = mrv_gateway::clock::ScaledClock::parse(&spec) else {
                eprintln!("error: MRV_E2E_CLOCK={spec:?}: expected <start_ms>x<rate>");
                return std::process::ExitCode::FAILURE;
            };
            mrv_gateway::cli::main_with_clock(cli, Arc::new(clock))
        }
        Err(_) => mrv_gateway::cli::main_with(cli),
    }
}
