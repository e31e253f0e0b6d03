//! `check-config`: validates a config file and prints what it configures, or
//! the first problem with file, key and reason. Exit status 0 / 1.

use crate::config;
use std::path::PathBuf;

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

/// Checks the file; an invalid file is an error (exit status 1).
pub fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let c = config::load(&args.config)?;
    println!("{}: OK", args.config.display());
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
        Some(r) => println!(
            "  reports      every {} min, methodology {:?}, key {}",
            r.period_minutes,
            r.methodology,
            r.key_file.display()
        ),
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
