//! The receiver's one path from offered bytes to a stored (or refused)
//! report: duplicate check, the registry's key for the JWS `kid`
//! ([`crate::registry::gateway_key`]), signature, registry admission
//! ([`crate::registry::admit`]: key validity and revocation, site,
//! project, the site's devices), the report's contents, then the archive's
//! chain decision, which re-checks the registry inside its transaction.
//!
//! Verification is CPU-heavy (every device signature, the Merkle root,
//! every aggregate and the calculation): it runs on a blocking thread.

use crate::archive::{Archive, ArchiveError, ItemResult};
use crate::registry::{self, KeySource, RegistryView};
use mrv_shared::report::jws::parse_compact;
use mrv_shared::report::verify::check_contents;
use mrv_shared::report::{
    DeviceTrust, KeySet, ReportError, VerifiedReport, verify_jws, verify_report,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What verification trusts besides the registry: the gateway keys and
/// device registry given on the command line (the bootstrap path; see
/// [`crate::registry`]). A site the registry has no devices for is checked
/// against `devices` (fails closed).
#[derive(Debug, Clone)]
pub struct Trust {
    /// Gateway keys by `kid` (used for key ids the registry does not know).
    pub keys: KeySet,
    /// The devices reports of sites without a registry entry may list.
    pub devices: DeviceTrust,
}

/// Verifies `bytes` against `trust` alone (no registry): what an offline
/// verifier given the same keys and device registry does.
pub fn verify_offered(bytes: &[u8], trust: &Trust) -> Result<VerifiedReport, ReportError> {
    verify_report(bytes, &trust.keys, &trust.devices)
}

/// What the registry lookup needs from an offered report before its
/// signature is checked (taken from the unverified bytes; verification
/// then holds the report to them).
#[derive(Debug, Clone)]
pub struct Claims {
    /// JWS `kid`.
    pub kid: String,
    /// `header.gateway`.
    pub gateway: String,
    /// `header.site`.
    pub site: String,
}

/// The claims of `bytes`.
pub fn claims(bytes: &[u8]) -> Result<Claims, ReportError> {
    #[derive(serde::Deserialize)]
    struct Top {
        header: Head,
    }
    #[derive(serde::Deserialize)]
    struct Head {
        gateway: String,
        site: String,
    }
    let jws = parse_compact(bytes)?;
    // A payload that does not parse is judged after the signature (a
    // tampered report is `bad_signature`, not `malformed`): no claims then.
    let (gateway, site) = match serde_json::from_slice::<Top>(&jws.payload) {
        Ok(t) => (t.header.gateway, t.header.site),
        Err(_) => (String::new(), String::new()),
    };
    Ok(Claims {
        kid: jws.header.kid,
        gateway,
        site,
    })
}

/// A refusal before the chain decision: reason, detail, and the report
/// when it parsed.
type Refused = (&'static str, String, Option<Box<VerifiedReport>>);

/// Signature (with the key the registry or the bootstrap keys give),
/// registry admission, then contents.
pub fn verify_with_registry(
    bytes: &[u8],
    c: &Claims,
    view: &RegistryView,
    trust: &Trust,
) -> Result<(VerifiedReport, KeySource), Refused> {
    let key = registry::gateway_key(view, trust, &c.kid, &c.gateway)
        .map_err(|r| (r.reason, r.detail, None))?;
    let mut one = KeySet::new();
    one.insert(
        &c.kid,
        ed25519_dalek::VerifyingKey::from_bytes(&key.bytes())
            .map_err(|e| ("bad_key", format!("key {:?}: {e}", c.kid), None))?,
    );
    let v = verify_jws(bytes, &one).map_err(|e| (e.label(), e.to_string(), None))?;
    if let Err(r) = registry::admit(view, trust, &v, &key) {
        return Err((r.reason, r.detail, Some(Box::new(v))));
    }
    if let Err(e) = check_contents(&v.report) {
        return Err((e.label(), e.to_string(), Some(Box::new(v))));
    }
    Ok((v, key))
}

/// Time spent on one offer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Verifying.
    pub verify: Duration,
    /// In the archive's chain decision and storage.
    pub commit: Duration,
}

/// The whole path for one offered report (see the module doc). `slots`
/// bounds how many reports are verified at once. `Err` only for storage
/// failures (then nothing was stored).
pub async fn offer<A: Archive>(
    archive: &A,
    trust: &Arc<Trust>,
    bytes: Vec<u8>,
    now_ms: u64,
    slots: Option<&Arc<Semaphore>>,
) -> Result<(ItemResult, Timing), ArchiveError> {
    let mut timing = Timing::default();
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(r) = archive.duplicate(hash).await? {
        return Ok((r, timing));
    }
    let c = match claims(&bytes) {
        Ok(c) => c,
        Err(e) => return Ok((ItemResult::rejected(None, e.label(), e.to_string()), timing)),
    };
    let view = archive.registry_view(&c.kid, &c.gateway, &c.site).await?;
    let slot = match slots {
        Some(s) => Some(
            s.clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed"),
        ),
        None => None,
    };
    let t = trust.clone();
    let (bytes, verified, took) = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let started = Instant::now();
        let v = verify_with_registry(&bytes, &c, &view, &t);
        (bytes, v, started.elapsed())
    })
    .await
    .expect("verification does not panic");
    timing.verify = took;
    match verified {
        Ok((v, key)) => {
            let started = Instant::now();
            let r = archive
                .commit(
                    &bytes,
                    &v,
                    now_ms,
                    &crate::archive::Admission { trust, key: &key },
                )
                .await;
            timing.commit = started.elapsed();
            Ok((r?, timing))
        }
        Err((reason, detail, v)) => {
            let v = v
                .map(|b| *b)
                .or_else(|| crate::archive::file::parse_stored(&bytes, "offered").ok());
            Ok((ItemResult::rejected(v.as_ref(), reason, detail), timing))
        }
    }
}
