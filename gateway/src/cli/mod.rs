//! Command-line interface: one file per subcommand (group), each with a clap
//! `Args` struct and a `run` function. `main.rs` only parses and dispatches.

pub mod buffer;
pub mod check_config;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "demo")]
pub mod demo_story;
pub mod diag;
pub mod keygen;
pub mod modbus;
pub mod provision;
pub mod receipts;
pub mod registry;
pub mod run;
pub mod status;
pub mod verify;

use clap::{Parser, Subcommand};

/// MRV Gateway: turns site sensor data into signed, auditable monitoring reports.
#[derive(Debug, Parser)]
#[command(name = "mrv-gateway", version, about, long_about = None)]
pub struct Cli {
    /// Log filter: a default level and `target=level` pairs, e.g. `info`,
    /// `warn,mrv_gateway::endpoint=debug` (tracing-subscriber `Targets`).
    #[arg(
        long,
        global = true,
        env = "MRV_LOG",
        default_value = "info,rumqttc=warn"
    )]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands. Each variant's args and runner live in their own module.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect or verify the durable buffer (gateway stopped).
    Buffer(crate::cli::buffer::BufferArgs),
    /// Validate a config file and print what it sets up.
    CheckConfig(check_config::CheckConfigArgs),
    /// Run a complete demo site: embedded broker, simulated devices, gateway.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Show the devices of the running gateway (from its diagnostics API).
    Devices(status::DevicesArgs),
    /// Diagnostics tools: `diag bundle` writes a support bundle (tar.gz).
    Diag(diag::DiagArgs),
    /// Write an Ed25519 key pair (gateway or device) as JWK files.
    Keygen(keygen::KeygenArgs),
    /// Modbus technician tools: read registers or a profile, scan unit ids, list SunSpec models.
    Modbus(crate::cli::modbus::ModbusArgs),
    /// Give a node its identity and signing key: the provisioning record for its flash and its public JWK.
    Provision(provision::ProvisionArgs),
    /// Check the backend log's receipts kept beside the reports (offline), or audit the backend with them.
    Receipts(receipts::ReceiptsArgs),
    /// Export the site's device registry (device ids, keys, unsigned) for verifiers.
    Registry(registry::RegistryArgs),
    /// Run the gateway (broker, ingest, buffer, reports, upload, diagnostics).
    Run(run::RunArgs),
    /// Show the running gateway's state (from its diagnostics API).
    Status(status::StatusArgs),
    /// Verify signed reports against a device registry: JWS, chain, continuity, Merkle root, device signatures, aggregates, ER.
    Verify(verify::VerifyArgs),
    // Helpers add their variants here, one line each, keeping alphabetical order.
}

/// An error and its causes as one line, each cause once: a cause whose text
/// is already part of the message (`reports: x` caused by `x`) is not
/// repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if out.contains(&c) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&c);
    }
    out
}

/// True when log lines may carry colour codes: stderr is a terminal, not the
/// journal (`JOURNAL_STREAM`, set by systemd), and `NO_COLOR` is not set.
pub fn log_colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("JOURNAL_STREAM").is_none()
}

/// Process set-up shared by every binary that runs the gateway's command
/// line: logging to stderr (journald under systemd; colour only on a
/// terminal, see [`log_colours`]) plus the in-memory ring the diagnostics
/// page and `diag bundle` show, and the one TLS stack (rustls with the ring
/// provider).
pub fn init_process(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            cli.log
                .parse::<tracing_subscriber::filter::Targets>()
                .map_err(|e| anyhow::anyhow!("--log {:?}: {e}", cli.log))?,
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(log_colours())
                .with_writer(std::io::stderr),
        )
        .with(crate::diagnostics::logs::layer())
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(())
}

/// The whole command line: set-up, dispatch, and the error printed once,
/// as one plain line (never a backtrace, whatever `RUST_BACKTRACE` says: a
/// missing config file is not a crash). Exit status: 0; 1 on an error; 78
/// (`EX_CONFIG`) for a config that `run` cannot start with.
pub fn main_with(cli: Cli) -> std::process::ExitCode {
    exit_status(init_process(&cli).and_then(|()| dispatch(cli)))
}

/// The error printed once and the exit status of [`main_with`].
fn exit_status(result: anyhow::Result<()>) -> std::process::ExitCode {
    use std::process::ExitCode;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            if e.is::<check_config::ConfigProblem>() {
                ExitCode::from(check_config::EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// As [`main_with`], with `run` on `clock` instead of the system clock
/// (the end-to-end test binary's time-compressed soak runs).
pub fn main_with_clock(
    cli: Cli,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
) -> std::process::ExitCode {
    exit_status(init_process(&cli).and_then(|()| match cli.command {
        Command::Run(a) => run::run_with_clock(a, clock),
        other => dispatch(Cli {
            command: other,
            ..cli
        }),
    }))
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Buffer(a) => buffer::run(a),
        Command::CheckConfig(a) => check_config::run(a),
        #[cfg(feature = "demo")]
        Command::Demo(a) => demo::run(a),
        Command::Devices(a) => status::run_devices(a),
        Command::Diag(a) => diag::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Modbus(a) => modbus::run(a),
        Command::Provision(a) => provision::run(a),
        Command::Receipts(a) => receipts::run(a),
        Command::Registry(a) => registry::run(a),
        Command::Run(a) => run::run(a),
        Command::Status(a) => status::run(a),
        Command::Verify(a) => verify::run(a),
    }
}
