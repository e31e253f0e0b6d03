//! `mrv-gateway provision --site <site> --device <id> --out <dir>`: gives a
//! node its identity and a fresh Ed25519 key.
//!
//! Writes `<dir>/<id>.mrvk`, the provisioning record
//! (`mrv_shared::provisioning`, 108 bytes, mode 0600: it holds the secret
//! key) to be written at flash offset 0x4000 (STM32F411: 0x08004000), and
//! `<dir>/<id>.pub.jwk`, the public JWK for auditors; prints the flashing
//! commands and the `[[devices]]` entry for the gateway's registry. Neither
//! file is ever overwritten; the secret exists nowhere else, so the record
//! is deleted once flashed.

use anyhow::Context;
use clap::Args;
use ed25519_dalek::SigningKey;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::provisioning::{self, F411_ADDRESS, FLASH_OFFSET, Provisioning};
use mrv_shared::report::jwk::Jwk;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Arguments of `provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Site id the node reports under.
    #[arg(long)]
    pub site: String,
    /// The node's device id (its MQTT topic and registry id).
    #[arg(long)]
    pub device: String,
    /// Directory for `<device>.mrvk` and `<device>.pub.jwk` (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

/// Files written by [`provision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionFiles {
    /// The provisioning record (secret).
    pub record: PathBuf,
    /// The public JWK.
    pub public_jwk: PathBuf,
    /// The public key as `[[devices]] public_key` wants it.
    pub x: String,
}

fn create_new(path: &Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Generates a key for `device` of `site` and writes the record and the
/// public JWK into `out`.
pub fn provision(
    site: &SiteId,
    device: &DeviceId,
    key: &SigningKey,
    out: &Path,
) -> anyhow::Result<ProvisionFiles> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let record = out.join(format!("{device}.mrvk"));
    let public_jwk = out.join(format!("{device}.pub.jwk"));
    for p in [&record, &public_jwk] {
        anyhow::ensure!(
            !p.exists(),
            "{} exists; refusing to overwrite it",
            p.display()
        );
    }
    let bytes = provisioning::encode(&Provisioning {
        site: site.clone(),
        device: device.clone(),
        key: key.clone(),
    });
    let jwk = Jwk::public(device.as_str(), &key.verifying_key());
    create_new(&record, 0o600, &bytes)?;
    create_new(
        &public_jwk,
        0o644,
        &serde_json::to_vec_pretty(&jwk).expect("a JWK serialises"),
    )?;
    Ok(ProvisionFiles {
        record,
        public_jwk,
        x: jwk.x,
    })
}

/// Runs `provision`.
pub fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let site =
        SiteId::new(&args.site).map_err(|e| anyhow::anyhow!("--site {:?}: {e}", args.site))?;
    let device = DeviceId::new(&args.device)
        .map_err(|e| anyhow::anyhow!("--device {:?}: {e}", args.device))?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let f = provision(&site, &device, &key, &args.out)?;
    let r = f.record.display();
    println!(
        "provisioning record: {r} ({} bytes, mode 0600; it holds the secret key: delete it once flashed)",
        provisioning::RECORD_LEN
    );
    println!("public key:          {}", f.public_jwk.display());
    println!();
    println!("write it to the node's provisioning sector (program updates leave it alone):");
    println!("  STM32F411:  st-flash write {r} {F411_ADDRESS:#010x}");
    println!(
        "         or  probe-rs download --chip STM32F411CEUx --binary-format bin --base-address {F411_ADDRESS:#010x} {r}"
    );
    println!(
        "  QEMU image: qemu-system-arm -machine mps2-an386 ... -device loader,file={r},addr={FLASH_OFFSET:#x}"
    );
    println!();
    println!("register it in the gateway config:");
    println!(
        "[[devices]]\nid = \"{device}\"\nkind = \"other\"\npublic_key = \"{}\"",
        f.x
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_record_decodes_to_the_key_of_the_jwk_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId::new("site-a").unwrap();
        let device = DeviceId::new("node-1").unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let f = provision(&site, &device, &key, dir.path()).unwrap();
        let bytes = std::fs::read(&f.record).unwrap();
        let p = provisioning::decode(&bytes).unwrap().unwrap();
        assert_eq!((p.site, p.device), (site.clone(), device.clone()));
        let jwk: Jwk = serde_json::from_slice(&std::fs::read(&f.public_jwk).unwrap()).unwrap();
        assert_eq!(jwk.x, f.x);
        assert_eq!(
            crate::config::parse_public_key(&f.x).unwrap(),
            p.key.verifying_key()
        );
        let mode = std::fs::metadata(&f.record).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = provision(&site, &device, &key, dir.path()).unwrap_err();
        assert!(
            again.to_string().contains("refusing to overwrite"),
            "{again}"
        );
    }
}
