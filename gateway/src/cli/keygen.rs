//! `mrv-gateway keygen --out <dir> --name <name>`: writes an Ed25519 key pair
//! for the gateway (report signing) or a device (frame signing):
//! `<name>.key` (private JWK, mode 0600) and `<name>.pub.jwk` (public JWK).
//! Prints the public `x` (the `public_key` of a `[[devices]]` entry).

use crate::keys::generate;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write the key files into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Key name; also the JWK `kid`. Files: `<name>.key`, `<name>.pub.jwk`.
    #[arg(long)]
    pub name: String,
}

/// Runs `keygen`.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    mrv_shared::ids::validate_id(&args.name)
        .map_err(|e| anyhow::anyhow!("--name {:?}: {e}", args.name))?;
    let files = generate(&args.out, &args.name)?;
    println!("private key: {} (mode 0600)", files.private.display());
    println!("public key:  {}", files.public.display());
    println!("public_key = \"{}\"", files.x);
    Ok(())
}
