//! Key files: Ed25519 keys for the gateway (report signing) and for devices
//! (frame signing), as JSON Web Keys.
//!
//! - `<name>.key`: private JWK (`kty OKP`, `crv Ed25519`, `x`, `d`, `kid`),
//!   created with mode 0600 and never overwritten;
//! - `<name>.pub.jwk`: public JWK, for auditors, backends and the device
//!   registry (its `x` is the `public_key` of a `[[devices]]` entry).
//!
//! Invariant: [`load_signing_key`] refuses a private key file that group or
//! others can read or write (`mode & 0o077 != 0`).

use ed25519_dalek::SigningKey;
use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::verify::KeySet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a key file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The private key file is readable or writable by group or others.
    #[error(
        "{path}: private key has mode {mode:o}; it must not be accessible to group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// File.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a usable Ed25519 JWK.
    #[error("{path}: {why}")]
    BadKey {
        /// File.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The key file exists already (keys are never overwritten).
    #[error("{0} exists; refusing to overwrite a key")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Paths written by [`generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// Private key.
    pub private: PathBuf,
    /// Public JWK.
    pub public: PathBuf,
    /// The public JWK's `x` (for `[[devices]] public_key`).
    pub x: String,
}

/// Writes a key pair for `key` under `name` (`kid` = `name`) into `dir`.
pub fn write_key_pair(dir: &Path, name: &str, key: &SigningKey) -> Result<KeyFiles, KeyError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub.jwk"));
    for p in [&private, &public] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let jwk = Jwk::private(name, key);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(io(&private))?;
    let text = serde_json::to_vec_pretty(&jwk).expect("a JWK serialises");
    f.write_all(&text).map_err(io(&private))?;
    f.sync_all().map_err(io(&private))?;
    let pub_jwk = Jwk::public(name, &key.verifying_key());
    fs::write(
        &public,
        serde_json::to_vec_pretty(&pub_jwk).expect("a JWK serialises"),
    )
    .map_err(io(&public))?;
    Ok(KeyFiles {
        private,
        public,
        x: pub_jwk.x,
    })
}

/// Generates a fresh key pair from the OS RNG and writes it (see [`write_key_pair`]).
pub fn generate(dir: &Path, name: &str) -> Result<KeyFiles, KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_key_pair(dir, name, &key)
}

/// Loads a private key file; returns its `kid` and the key. Refuses files
/// accessible to group or others.
pub fn load_signing_key(path: &Path) -> Result<(String, SigningKey), KeyError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bad = |why: String| KeyError::BadKey {
        path: path.to_path_buf(),
        why,
    };
    let bytes = fs::read(path).map_err(io(path))?;
    let jwk: Jwk = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a JWK: {e}")))?;
    let key = jwk.signing_key().map_err(|e| bad(e.to_string()))?;
    let kid = jwk
        .kid
        .clone()
        .ok_or_else(|| bad(String::from("JWK has no kid")))?;
    Ok((kid, key))
}

/// Loads public JWKs from files and directories (every `*.jwk` inside).
pub fn load_public_keys(paths: &[PathBuf]) -> Result<KeySet, KeyError> {
    let mut set = KeySet::new();
    for p in paths {
        let files: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = fs::read_dir(p)
                .map_err(io(p))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jwk"))
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let bytes = fs::read(&f).map_err(io(&f))?;
            let jwk: Jwk = serde_json::from_slice(&bytes).map_err(|e| KeyError::BadKey {
                path: f.clone(),
                why: format!("not a JWK: {e}"),
            })?;
            set.insert_jwk(&jwk).map_err(|e| KeyError::BadKey {
                path: f.clone(),
                why: e.to_string(),
            })?;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_0600_load_back_and_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(dir.path(), "gw-1").expect("generate");
        let mode = fs::metadata(&files.private)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (kid, key) = load_signing_key(&files.private).expect("load");
        assert_eq!(kid, "gw-1");
        let keys = load_public_keys(&[dir.path().to_path_buf()]).expect("public");
        assert_eq!(keys.get("gw-1"), Some(&key.verifying_key()));
        assert!(matches!(
            generate(dir.path(), "gw-1"),
            Err(KeyError::Exists(_))
        ));
    }

    #[test]
    fn a_private_key_readable_by_group_or_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(dir.path(), "k").expect("generate");
        for mode in [0o640, 0o604, 0o660] {
            fs::set_permissions(&files.private, fs::Permissions::from_mode(mode)).expect("chmod");
            assert!(matches!(
                load_signing_key(&files.private),
                Err(KeyError::InsecurePermissions { .. })
            ));
        }
        fs::set_permissions(&files.private, fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(load_signing_key(&files.private).is_ok());
    }
}
