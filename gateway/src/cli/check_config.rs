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
    println!(
        "  mqtt         {:?} broker, {}:{}{}",
        c.mqtt.mode,
        c.mqtt.host,
        c.mqtt.port,
        if c.mqtt.credentials.is_some() {
            ", with login"
        } else {
            ""
        }
    );
    println!(
        "  buffer       max {} MiB, cache {} MiB, keep delivered {} days",
        c.buffer.max_bytes >> 20,
        c.buffer.cache_bytes >> 20,
        c.buffer.keep_delivered.as_secs() / 86_400
    );
    let signed = c.devices.iter().filter(|d| d.public_key.is_some()).count();
    println!(
        "  devices      {} registered ({} signed, {} unsigned)",
        c.devices.len(),
        signed,
        c.devices.len() - signed
    );
    Ok(())
}
