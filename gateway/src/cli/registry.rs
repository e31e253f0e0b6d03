//! `registry export --config FILE [--out FILE]`: the site's device registry
//! as the JSON file verifiers trust (`docs/REPORT-FORMAT.md` §10): every
//! `[[devices]]` entry and every polled Modbus device, with its public key
//! (JWK, `kid` = RFC 7638 thumbprint, no validity bounds) or `"unsigned":
//! true`. An MRV backend enrols these keys; an auditor compares them with
//! the project's records.

use anyhow::Context;
use mrv_shared::report::jwk::{Jwk, thumbprint};
use mrv_shared::report::registry::{DeviceRegistry, RegisteredDevice, RegisteredKey};
use std::path::PathBuf;

/// Arguments of `registry`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// `registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Write the device registry of a gateway config as JSON.
    Export(ExportArgs),
}

/// Arguments of `registry export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The gateway config.
    #[arg(long, default_value = "/etc/mrv-gateway/gateway.toml")]
    pub config: PathBuf,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The registry of a validated config.
pub fn registry_of(cfg: &crate::config::GatewayConfig) -> DeviceRegistry {
    DeviceRegistry {
        devices: cfg
            .devices
            .iter()
            .map(|d| match &d.public_key {
                Some(k) => RegisteredDevice {
                    id: d.id.clone(),
                    unsigned: false,
                    keys: vec![RegisteredKey {
                        jwk: Jwk::public(&thumbprint(k), k),
                        valid_from: None,
                        valid_until: None,
                    }],
                },
                None => RegisteredDevice {
                    id: d.id.clone(),
                    unsigned: true,
                    keys: Vec::new(),
                },
            })
            .collect(),
    }
}

/// Runs `registry`.
pub fn run(args: RegistryArgs) -> anyhow::Result<()> {
    match args.command {
        RegistryCommand::Export(a) => {
            let cfg = crate::config::load(&a.config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut text = serde_json::to_string_pretty(&registry_of(&cfg))
                .context("serialising the registry")?;
            text.push('\n');
            match &a.out {
                Some(p) => {
                    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}
