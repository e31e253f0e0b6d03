//! `check-config`: validates a config file, then runs the pre-flight checks
//! ([`crate::config::preflight`]: data dir, buffer, signing key, serial
//! ports, listen ports) and prints what it configures. A problem is printed
//! with file, line and column, key and a plain sentence.
//!
//! Exit status: 0 when `run` would start (warnings allowed), [`EX_CONFIG`]
//! (78) when it would not: the shipped systemd unit does not restart on 78
//! (`RestartPreventExitStatus=78`), so a config problem is not a restart loop.

use crate::config;
use crate::config::preflight::{self, Severity};
use std::path::PathBuf;

/// The exit status for "configuration error" (sysexits.h `EX_CONFIG`).
pub const EX_CONFIG: u8 = 78;

/// A config that `run` cannot start with: the message, and exit status 78.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// Arguments of `check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// Config file to check.
    #[arg(
        short,
        long,
        env = "MRV_CONFIG",
        default_value = "/etc/mrv-gateway/gateway.toml"
    )]
    pub config: PathBuf,
}

/// Loads and pre-flight checks a config: the config, and the warnings; a
/// [`ConfigProblem`] when `run` cannot start with it.
pub fn load_checked(
    path: &std::path::Path,
) -> anyhow::Result<(config::GatewayConfig, Vec<preflight::Finding>)> {
    let c = config::load(path).map_err(|e| ConfigProblem(e.to_string()))?;
    let findings = preflight::check(&c);
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: key `{}`: {}", path.display(), f.key, f.problem))
        .collect();
    if !errors.is_empty() {
        return Err(ConfigProblem(errors.join("\n")).into());
    }
    let warnings = findings
        .into_iter()
        .filter(|f| f.severity == Severity::Warning)
        .collect();
    Ok((c, warnings))
}

/// Checks the file; see the module doc for the exit status.
pub fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let (c, warnings) = load_checked(&args.config)?;
    println!("{}: OK", args.config.display());
    for w in &warnings {
        println!("  WARNING      {}: {}", w.key, w.problem);
    }
    println!(
        "  site         {} ({})",
        c.site.id,
        if c.site.name.is_empty() {
            "no name"
        } else {
            &c.site.name
        }
    );
    println!("  gateway      {}", c.gateway_id);
    println!("  data dir     {}", c.data_dir.display());
    match c.mqtt.mode {
        crate::config::BrokerMode::Embedded => println!(
            "  mqtt         embedded broker listening on {}{}",
            c.mqtt.listen,
            if c.mqtt.users.is_empty() {
                ", no login"
            } else {
                ", login required"
            }
        ),
        crate::config::BrokerMode::External => println!(
            "  mqtt         external broker {}:{}{}",
            c.mqtt.host,
            c.mqtt.port,
            if c.mqtt.credentials.is_some() {
                ", with login"
            } else {
                ""
            }
        ),
    }
    println!(
        "  buffer       max {} MiB, cache {} MiB, keep delivered {} days",
        c.buffer.max_bytes >> 20,
        c.buffer.cache_bytes >> 20,
        c.buffer.keep_delivered.as_secs() / 86_400
    );
    println!(
        "  modbus       {} polled device(s) on {} RTU bus(es)",
        c.modbus.devices.len(),
        c.modbus.buses.len()
    );
    match &c.report {
        Some(r) => {
            println!(
                "  reports      every {} min, key {}, {} calculation(s)",
                r.period_minutes,
                preflight::report_key_path(&c)
                    .unwrap_or_else(|| r.key_file.clone())
                    .display(),
                c.calculations.len()
            );
            for calc in &c.calculations {
                println!("    {} ({})", calc.id, calc.methodology.name());
                for b in &calc.bindings {
                    let group = if b.group.is_empty() {
                        String::new()
                    } else {
                        format!(" [group {}]", b.group)
                    };
                    println!(
                        "      {:<13} <- {}/{} ({}){group}",
                        b.role.name(),
                        b.device,
                        b.channel,
                        b.quantity.name()
                    );
                }
            }
        }
        None => println!("  reports      off (no [report] section)"),
    }
    match &c.upload {
        Some(u) => println!(
            "  upload       {}{}",
            u.url,
            if u.token.is_some() {
                " (bearer token set)"
            } else {
                ""
            }
        ),
        None => println!("  upload       off"),
    }
    if c.diagnostics.enabled {
        println!(
            "  diagnostics  http://{}/{}",
            c.diagnostics.listen,
            if c.diagnostics.token.is_some() {
                " (token required)"
            } else {
                ""
            }
        );
    } else {
        println!("  diagnostics  off");
    }
    let signed = c.devices.iter().filter(|d| d.public_key.is_some()).count();
    println!(
        "  devices      {} registered ({} signed, {} unsigned)",
        c.devices.len(),
        signed,
        c.devices.len() - signed
    );
    Ok(())
}
