//! `mrv-receiver`: the reference MRV receiver as a process.
//!
//! Prints `listening on <scheme>://<addr>` on stdout once it accepts
//! connections (tests that start it with `--listen 127.0.0.1:0` read the
//! port from there), and stops on Ctrl-C / SIGTERM.
//!
//! Subcommands: `statement` writes the auditor's pack for a project and
//! period (`mrv_receiver::statement`); `verify-statement` checks one;
//! `registry` enrols, rotates and revokes gateways and devices through a
//! running receiver's admin API (`registry_cli`).

mod registry_cli;

use anyhow::Context;
use clap::Parser;
use mrv_receiver::limits::Limits;
use mrv_receiver::{ReceiverConfig, Store, tls::TlsSettings};
use mrv_shared::report::KeySet;
use mrv_shared::report::jwk::Jwk;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Reference MRV backend receiver: verifies, chains and stores signed
/// monitoring reports, and logs every accepted one in a public,
/// append-only log. Without a subcommand it serves.
#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: Args,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Write the crediting statement (auditor's pack) of a project over
    /// whole days into a new directory, signed by the log key.
    Statement(StatementArgs),
    /// Check a pack: the signed note (log verifier key), the manifest and
    /// every file.
    VerifyStatement(VerifyStatementArgs),
    /// Enrol, rotate and revoke gateways and site devices, list the
    /// registry and its audit trail, through a running receiver's admin
    /// API (every change is recorded with the token's actor and the time).
    Registry(registry_cli::RegistryArgs),
}

#[derive(Debug, clap::Args)]
struct StatementArgs {
    /// Project (the reports' `header.project`).
    #[arg(long)]
    project: String,
    /// Only this site (default: every site of the project).
    #[arg(long)]
    site: Option<String>,
    /// First day, YYYY-MM-DD (UTC, inclusive).
    #[arg(long)]
    from: String,
    /// Last day, YYYY-MM-DD (UTC, inclusive).
    #[arg(long)]
    to: String,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// File store directory (stop its receiver first: the file store is
    /// one process's).
    #[arg(long, required_unless_present = "database_url")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL connection string.
    #[arg(long, env = "MRV_RECEIVER_DATABASE_URL")]
    database_url: Option<String>,
    /// The log's private key (signs the statement). File store default:
    /// `<data-dir>/log-key.jwk`.
    #[arg(long)]
    log_key: Option<PathBuf>,
    /// The device registry the reports were verified against (copied into
    /// the pack).
    #[arg(long)]
    device_registry: Option<PathBuf>,
    /// Gateway public JWK files (copied into the pack); repeatable.
    #[arg(long = "gateway-key")]
    gateway_keys: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct VerifyStatementArgs {
    /// The pack directory.
    dir: PathBuf,
    /// The log's note verifier key (`<origin>+<id>+<key>`), obtained out of band.
    #[arg(long)]
    log_verifier: String,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Directory for stored reports and flags (file store), and for the
    /// log key when none is given.
    #[arg(long, required_unless_present = "database_url")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL connection string (`postgres://user@host/db` or
    /// `host=... dbname=...`): store there instead of files; any number
    /// of receivers may share one database. Needs --log-key.
    #[arg(long, env = "MRV_RECEIVER_DATABASE_URL")]
    database_url: Option<String>,
    /// Database connections this process may open.
    #[arg(long, default_value_t = 16)]
    db_pool: usize,
    /// The log's private signing key (JWK, `kid` = the log origin). File
    /// store default: `<data-dir>/log-key.jwk`, created at first start.
    #[arg(long)]
    log_key: Option<PathBuf>,
    /// A gateway's public JWK file (with `kid`); repeatable. Bootstrap:
    /// used for key ids the registry does not know (the registry's
    /// enrolled gateways sign only with their enrolled keys).
    #[arg(long = "gateway-key")]
    gateway_keys: Vec<PathBuf>,
    /// The device registry of sites the registry has no devices for
    /// (JSON, see docs/REPORT-FORMAT.md section 10; `mrv-gateway registry
    /// export` writes one for a site). Without it such sites' devices are
    /// all refused (fail closed).
    #[arg(long, value_name = "REGISTRY.json")]
    device_registry: Option<PathBuf>,
    /// Admin tokens of the registry API: one `<actor> <token>` per line
    /// (the actor is recorded with every change). Without it the registry
    /// routes are closed.
    #[arg(long, value_name = "FILE")]
    admin_tokens: Option<PathBuf>,
    /// Accept the device keys reports list, without a registry (exploration
    /// only: a gateway could then relabel or re-key devices unnoticed).
    #[arg(long, conflicts_with = "device_registry")]
    trust_report_device_keys: bool,
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
    /// Most connections served at once (more wait in the accept queue).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a client may take to send a request head (and may stay idle
    /// between requests).
    #[arg(long, default_value_t = Limits::default().header_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds a client may take to send a body.
    #[arg(long, default_value_t = Limits::default().body_timeout.as_secs())]
    body_timeout_secs: u64,
    /// MiB all upload bodies in flight may hold together.
    #[arg(long, default_value_t = Limits::default().body_budget_bytes >> 20)]
    body_budget_mib: u64,
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
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Statement(a)) => return statement(a).await,
        Some(Cmd::Registry(a)) => return registry_cli::run(a).await,
        Some(Cmd::VerifyStatement(a)) => {
            let v = mrv_shared::tlog::note::NoteVerifier::parse(a.log_verifier.trim())
                .context("--log-verifier")?;
            let ok = mrv_receiver::statement::verify_pack(&a.dir, &v)?;
            print!("{}", ok.text);
            println!(
                "OK: signature by {v}, {} files match the manifest",
                ok.files
            );
            return Ok(());
        }
        None => {}
    }
    let args = cli.serve;
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
    let store = match (&args.database_url, &args.data_dir) {
        (Some(url), _) => Store::Postgres {
            url: url.clone(),
            pool: args.db_pool,
        },
        (None, Some(dir)) => Store::Files(dir.clone()),
        (None, None) => anyhow::bail!("give --data-dir or --database-url"),
    };
    let log = match &args.log_key {
        Some(p) => Some(mrv_receiver::log_key::load(p, None)?),
        None => None,
    };
    let limits = Limits {
        max_connections: args.max_connections,
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        body_budget_bytes: args.body_budget_mib.max(1) << 20,
        ..Limits::default()
    };
    let devices = match &args.device_registry {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let reg = mrv_shared::report::DeviceRegistry::from_json(&bytes)
                .with_context(|| p.display().to_string())?;
            mrv_shared::report::DeviceTrust::Registry(
                reg.trusted().with_context(|| p.display().to_string())?,
            )
        }
        None if args.trust_report_device_keys => {
            tracing::warn!(
                "no device registry: device keys are taken from the reports (exploration only)"
            );
            mrv_shared::report::DeviceTrust::ReportListed
        }
        None => mrv_shared::report::DeviceTrust::Registry(Default::default()),
    };
    let admins = match &args.admin_tokens {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            mrv_receiver::routes::AdminTokens::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => mrv_receiver::routes::AdminTokens::default(),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let running = mrv_receiver::start(
        listener,
        ReceiverConfig {
            store,
            log,
            keys,
            devices,
            token: args.token.clone(),
            admins,
            tls,
            limits,
        },
    )
    .await?;
    tracing::info!(log_key = %running.handle.log().verifier(), "the log's verifier key");
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

async fn statement(a: StatementArgs) -> anyhow::Result<()> {
    let (store, key) = match (&a.database_url, &a.data_dir) {
        (Some(url), _) => (
            Store::Postgres {
                url: url.clone(),
                pool: 2,
            },
            a.log_key
                .clone()
                .context("a PostgreSQL store needs --log-key")?,
        ),
        (None, Some(dir)) => (
            Store::Files(dir.clone()),
            a.log_key.clone().unwrap_or_else(|| dir.join("log-key.jwk")),
        ),
        (None, None) => anyhow::bail!("give --data-dir or --database-url"),
    };
    let identity = mrv_receiver::log_key::load(&key, None)?;
    let q = mrv_receiver::ledger::LedgerQuery::new(&a.project, a.site.as_deref(), &a.from, &a.to)?;
    let archive = mrv_receiver::open_archive(&store, identity.clone()).await?;
    let inputs = mrv_receiver::statement::PackInputs {
        registry: a.device_registry.clone(),
        gateway_keys: a.gateway_keys.clone(),
    };
    let pack =
        mrv_receiver::statement::write_pack(&archive, &identity, &q, &inputs, &a.out).await?;
    let er = &pack.totals.amounts.er;
    println!(
        "statement {}: {} reports, ER {} tCO2e exact = {} (6 decimals, rounded down once) = {} whole tonnes; {} files",
        a.out.display(),
        pack.totals.reports,
        er.exact,
        er.decimal,
        er.tonnes,
        pack.files.len() + 2
    );
    Ok(())
}
