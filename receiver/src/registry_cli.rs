//! `mrv-receiver registry ...`: the registry's command line. Every command
//! is one request to a running receiver's admin API (docs/RECEIVER-API.md
//! §6), so changes go through the same audited path as any other client
//! and are recorded with the admin token's actor; it prints the answer's
//! JSON (a change: its audit record).

use anyhow::Context;
use mrv_receiver::registry::Change;
use mrv_shared::ids::DeviceId;
use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::registry::{DeviceRegistry, RegisteredDevice, RegisteredKey};
use std::path::{Path, PathBuf};

/// Registry commands, run against a receiver's admin API.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Times are RFC 3339 UTC (2026-03-01T00:00:00Z). A key is valid for a report when its\n\
validity [valid-from, valid-until) covers the report's whole period; a revoked key is\n\
refused for every report offered after the revocation commits, whatever its period.\n\
\n\
Examples:\n  \
mrv-receiver registry enrol --gateway gw-th-01 --site th-solar-01 --project JCM-TH-0042 --key gw-th-01.pub.jwk\n  \
mrv-receiver registry rotate --gateway gw-th-01 --key gw-th-01-2027.pub.jwk --at 2027-01-01T00:00:00Z\n  \
mrv-receiver registry revoke --gateway gw-th-01 --kid gw-th-01-2026 --reason 'device stolen'\n  \
mrv-receiver registry devices import --site th-solar-01 registry.json\n  \
mrv-receiver registry history")]
pub struct RegistryArgs {
    /// Base URL of a receiver of the backend.
    #[arg(
        long,
        env = "MRV_RECEIVER_URL",
        default_value = "http://127.0.0.1:8443",
        global = true
    )]
    url: String,
    /// Admin bearer token (names the actor recorded with each change).
    #[arg(
        long,
        env = "MRV_RECEIVER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// CA certificate (PEM) to trust for an https URL, besides none.
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    cmd: RegistryCmd,
}

#[derive(Debug, clap::Subcommand)]
enum RegistryCmd {
    /// Enrol a gateway with its site, project and first public key.
    Enrol {
        /// Gateway id (the reports' `header.gateway`).
        #[arg(long)]
        gateway: String,
        /// Site id (`header.site`).
        #[arg(long)]
        site: String,
        /// Project (`header.project`).
        #[arg(long)]
        project: String,
        /// The gateway's public JWK file (with `kid`).
        #[arg(long)]
        key: PathBuf,
        /// Start of the key's validity (default: unbounded, so a backlog of
        /// earlier periods is accepted).
        #[arg(long)]
        valid_from: Option<String>,
    },
    /// Rotate a gateway's key: its current keys end at --at, the new one starts.
    Rotate {
        /// Gateway id.
        #[arg(long)]
        gateway: String,
        /// The new public JWK file (a new `kid`).
        #[arg(long)]
        key: PathBuf,
        /// Rotation time (default: now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Revoke a gateway key at once (compromise, loss): nothing signed by it
    /// is accepted any more.
    Revoke {
        /// Gateway id.
        #[arg(long)]
        gateway: String,
        /// The key id.
        #[arg(long)]
        kid: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
    },
    /// The registry: gateways with their keys, sites with their devices.
    List {
        /// Only this gateway.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// The audit trail: every change with who and when.
    History {
        /// Records after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// A site's device registry (docs/REPORT-FORMAT.md section 10).
    #[command(subcommand)]
    Devices(DevicesCmd),
}

#[derive(Debug, clap::Subcommand)]
enum DevicesCmd {
    /// Add or replace one device: with a key, or --unsigned (a third-party
    /// device that does not sign).
    Set {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Device id.
        #[arg(long)]
        device: String,
        /// The device's public JWK file.
        #[arg(long, required_unless_present = "unsigned")]
        key: Option<PathBuf>,
        /// The key is valid from (default: unbounded).
        #[arg(long, requires = "key")]
        valid_from: Option<String>,
        /// The key is valid until (default: unbounded).
        #[arg(long, requires = "key")]
        valid_until: Option<String>,
        /// The device does not sign its frames.
        #[arg(long, conflicts_with = "key")]
        unsigned: bool,
    },
    /// Rotate a device key: its current keys end at --at, the new one starts.
    Rotate {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Device id.
        #[arg(long)]
        device: String,
        /// The new public JWK file.
        #[arg(long)]
        key: PathBuf,
        /// Rotation time (default: now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Revoke a device key at once: reports listing it are refused.
    Revoke {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Device id.
        #[arg(long)]
        device: String,
        /// The key's public JWK file.
        #[arg(long)]
        key: PathBuf,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
    },
    /// Replace a site's device registry with a registry file
    /// (`mrv-gateway registry export` writes one).
    Import {
        /// Site id.
        #[arg(long)]
        site: String,
        /// The registry file.
        file: PathBuf,
    },
    /// Print a site's device registry (usable as `verify --devices`).
    Show {
        /// Site id.
        #[arg(long)]
        site: String,
    },
}

fn read_jwk(p: &Path) -> anyhow::Result<Jwk> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let jwk: Jwk =
        serde_json::from_str(&text).with_context(|| format!("{}: not a JWK", p.display()))?;
    anyhow::ensure!(
        jwk.d.is_none(),
        "{}: holds a private key (\"d\"); give the public key",
        p.display()
    );
    Ok(jwk)
}

/// The change a command makes, or `None` for a read.
fn change_of(cmd: &RegistryCmd) -> anyhow::Result<Option<Change>> {
    Ok(Some(match cmd {
        RegistryCmd::Enrol {
            gateway,
            site,
            project,
            key,
            valid_from,
        } => Change::EnrolGateway {
            gateway: gateway.clone(),
            site: site.clone(),
            project: project.clone(),
            key: read_jwk(key)?,
            valid_from: valid_from.clone(),
        },
        RegistryCmd::Rotate { gateway, key, at } => Change::RotateGatewayKey {
            gateway: gateway.clone(),
            key: read_jwk(key)?,
            at: at.clone(),
        },
        RegistryCmd::Revoke {
            gateway,
            kid,
            reason,
        } => Change::RevokeGatewayKey {
            gateway: gateway.clone(),
            kid: kid.clone(),
            reason: reason.clone(),
        },
        RegistryCmd::Devices(DevicesCmd::Set {
            site,
            device,
            key,
            valid_from,
            valid_until,
            unsigned,
        }) => Change::SetDevice {
            site: site.clone(),
            device: RegisteredDevice {
                id: DeviceId::new(device).map_err(|e| anyhow::anyhow!("--device: {e}"))?,
                unsigned: *unsigned,
                keys: match key {
                    Some(k) => vec![RegisteredKey {
                        jwk: read_jwk(k)?,
                        valid_from: valid_from.clone(),
                        valid_until: valid_until.clone(),
                    }],
                    None => Vec::new(),
                },
            },
        },
        RegistryCmd::Devices(DevicesCmd::Rotate {
            site,
            device,
            key,
            at,
        }) => Change::RotateDeviceKey {
            site: site.clone(),
            device: device.clone(),
            key: read_jwk(key)?,
            at: at.clone(),
        },
        RegistryCmd::Devices(DevicesCmd::Revoke {
            site,
            device,
            key,
            reason,
        }) => Change::RevokeDeviceKey {
            site: site.clone(),
            device: device.clone(),
            x: read_jwk(key)?.x,
            reason: reason.clone(),
        },
        RegistryCmd::Devices(DevicesCmd::Import { site, file }) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            Change::ImportDevices {
                site: site.clone(),
                registry: DeviceRegistry::from_json(&bytes)
                    .with_context(|| file.display().to_string())?,
            }
        }
        RegistryCmd::List { .. }
        | RegistryCmd::History { .. }
        | RegistryCmd::Devices(DevicesCmd::Show { .. }) => return Ok(None),
    }))
}

/// Runs one registry command.
pub async fn run(a: RegistryArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(ca) = &a.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).with_context(|| ca.display().to_string())?,
        );
    }
    let http = b.build().context("HTTP client")?;
    let token = a.admin_token.clone().context(
        "an admin token is needed: --admin-token or MRV_RECEIVER_ADMIN_TOKEN (a line of the receiver's --admin-tokens file)",
    )?;
    let base = a.url.trim_end_matches('/');
    let req = match (&a.cmd, change_of(&a.cmd)?) {
        (_, Some(change)) => http
            .post(format!("{base}/v1/registry/changes"))
            .json(&change),
        (RegistryCmd::History { after, limit }, None) => http.get(format!(
            "{base}/v1/registry/history?after={after}&limit={limit}"
        )),
        (RegistryCmd::Devices(DevicesCmd::Show { site }), None) => {
            http.get(format!("{base}/v1/registry/sites/{site}/devices"))
        }
        (_, None) => http.get(format!("{base}/v1/registry")),
    };
    let answer = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("no answer from {base}"))?;
    let code = answer.status();
    let mut body: serde_json::Value = answer
        .json()
        .await
        .with_context(|| format!("{base}: answer {code} is not JSON"))?;
    if !code.is_success() {
        anyhow::bail!(
            "refused ({} {}): {}",
            code.as_u16(),
            body["reason"].as_str().unwrap_or("?"),
            body["detail"].as_str().unwrap_or("")
        );
    }
    if let RegistryCmd::List {
        gateway: Some(g), ..
    } = &a.cmd
    {
        let found = body["gateways"]
            .as_array()
            .and_then(|gs| gs.iter().find(|x| x["gateway"] == g.as_str()).cloned());
        body = found.with_context(|| format!("gateway {g:?} is not enrolled"))?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&body).expect("JSON prints")
    );
    Ok(())
}
