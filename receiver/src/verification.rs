//! The receiver's one call into report verification. Everything that
//! decides whether an offered report's *contents* are trustworthy happens
//! here, before the archive's chain decision; the lead's device registry
//! (issue 10) plugs in here and nowhere else.
//!
//! CPU-heavy (every device signature, the Merkle root, every aggregate and
//! the calculation): call it from `spawn_blocking`.

use mrv_shared::report::{DeviceTrust, KeySet, ReportError, VerifiedReport, verify_report};

/// What verification trusts: the registered gateway keys and the device
/// registry (docs/REPORT-FORMAT.md §10; fails closed).
#[derive(Debug, Clone)]
pub struct Trust {
    /// Gateway keys by `kid`.
    pub keys: KeySet,
    /// The devices reports may list, with their keys.
    pub devices: DeviceTrust,
}

/// Verifies offered report `bytes` against `trust`.
pub fn verify_offered(bytes: &[u8], trust: &Trust) -> Result<VerifiedReport, ReportError> {
    verify_report(bytes, &trust.keys, &trust.devices)
}
