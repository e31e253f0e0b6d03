//! Signing: a [`Report`] becomes its stored form, the compact JWS of its
//! RFC 8785 canonical JSON, signed with the gateway's Ed25519 key.
//!
//! The returned bytes are what is stored, uploaded and hashed into the next
//! report's `prev_hash`; nothing re-serialises them afterwards.

use ed25519_dalek::SigningKey;
use mrv_shared::report::Report;
use mrv_shared::report::canonical::CanonicalError;
use mrv_shared::report::jws::sign_compact;
use mrv_shared::report::merkle::Hash;
use mrv_shared::report::model::report_canonical;
use sha2::{Digest, Sha256};

/// A signed report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReport {
    /// The compact JWS, ASCII.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`.
    pub hash: Hash,
}

/// Canonicalises and signs `report` with `key` under `kid`.
pub fn sign(report: &Report, kid: &str, key: &SigningKey) -> Result<SignedReport, CanonicalError> {
    let payload = report_canonical(report)?;
    let bytes = sign_compact(&payload, kid, key).into_bytes();
    Ok(SignedReport {
        hash: Sha256::digest(&bytes).into(),
        bytes,
    })
}
