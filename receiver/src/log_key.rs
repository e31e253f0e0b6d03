//! The log's signing key on disk: a private Ed25519 JWK (RFC 8037) whose
//! `kid` is the log origin.
//!
//! ```json
//! {"kty":"OKP","crv":"Ed25519","x":"<public, base64url>","d":"<seed, base64url>","kid":"<origin>"}
//! ```
//!
//! Every receiver of one log must load the same key (they sign the same
//! checkpoints). The file archive, given no key, creates one in its data
//! directory at first start (mode 0600) and reuses it.

use crate::archive::LogIdentity;
use ed25519_dalek::SigningKey;
use mrv_shared::report::jwk::{Jwk, b64, unb64};
use std::io::Write;
use std::path::Path;

/// Default origin of a log whose key was created without one.
pub const DEFAULT_ORIGIN: &str = "mrv-receiver.invalid/log";

/// Why the log key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum LogKeyError {
    /// Reading or writing the file.
    #[error("log key {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a private Ed25519 JWK with a usable `kid`.
    #[error("log key {path}: {why}")]
    Invalid {
        /// File.
        path: String,
        /// Why.
        why: String,
    },
}

/// Loads the key at `path`; `origin` (when given) must equal its `kid`.
pub fn load(path: &Path, origin: Option<&str>) -> Result<LogIdentity, LogKeyError> {
    let p = path.display().to_string();
    let invalid = |why: String| LogKeyError::Invalid {
        path: p.clone(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|source| LogKeyError::Io {
        path: p.clone(),
        source,
    })?;
    let jwk: Jwk = serde_json::from_str(&text).map_err(|e| invalid(format!("not a JWK: {e}")))?;
    let d = jwk
        .d
        .as_deref()
        .ok_or_else(|| invalid(String::from("no private part \"d\"")))?;
    let seed: [u8; 32] = unb64(d)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid(String::from("\"d\" is not 32 bytes of base64url")))?;
    let key = SigningKey::from_bytes(&seed);
    if jwk.x != b64(key.verifying_key().as_bytes()) {
        return Err(invalid(String::from(
            "\"x\" is not the public key of \"d\"",
        )));
    }
    let kid = jwk
        .kid
        .ok_or_else(|| invalid(String::from("no \"kid\" (the log origin)")))?;
    if let Some(o) = origin
        && o != kid
    {
        return Err(invalid(format!("the key is for origin {kid:?}, not {o:?}")));
    }
    LogIdentity::new(&kid, key).map_err(|e| invalid(e.to_string()))
}

/// Loads the key at `path`, creating it (origin `origin` or
/// [`DEFAULT_ORIGIN`]) when the file does not exist.
pub fn load_or_create(path: &Path, origin: Option<&str>) -> Result<LogIdentity, LogKeyError> {
    if path.exists() {
        return load(path, origin);
    }
    let origin = origin.unwrap_or(DEFAULT_ORIGIN);
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut jwk = Jwk::public(origin, &key.verifying_key());
    jwk.d = Some(b64(key.as_bytes()));
    let identity = LogIdentity::new(origin, key).map_err(|e| LogKeyError::Invalid {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let io = |source| LogKeyError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        mrv_shared::durable_dir::create_dir_all_durable(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&serde_json::to_vec(&jwk).expect("a JWK serialises"))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    // The name is durable only once its directory is: a power cut must not
    // lose the key (a new one would sign checkpoints no client can link to
    // the old ones).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    tracing::info!(path = %path.display(), verifier = %identity.verifier(), "created the log signing key");
    Ok(identity)
}
