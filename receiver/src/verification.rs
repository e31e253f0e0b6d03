//! The receiver's one call into report verification. Everything that
//! decides whether an offered report's *contents* are trustworthy happens
//! here, before the archive's chain decision; the lead's device registry
//! (issue 10) plugs in here and nowhere else.
//!
//! CPU-heavy (every device signature, the Merkle root, every aggregate and
//! the calculation): call it from `spawn_blocking`.

use mrv_shared::report::{KeySet, ReportError, VerifiedReport, verify_report};

/// What verification trusts: today the registered gateway (and device)
/// keys.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Gateway keys by `kid` (and device keys by device id).
    pub keys: KeySet,
}

/// Verifies offered report `bytes` against `trust`.
pub fn verify_offered(bytes: &[u8], trust: &Trust) -> Result<VerifiedReport, ReportError> {
    verify_report(bytes, &trust.keys)
}
