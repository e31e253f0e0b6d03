//! The backend's public log of accepted reports: an RFC 6962 Merkle tree
//! whose entries are the SHA-256 hashes of accepted reports, published as
//! C2SP `tlog-checkpoint` signed notes, with a [`receipt::Receipt`]
//! (inclusion proof + checkpoint) for every accepted report.
//!
//! - [`tree`]: node ids, proofs from stored complete subtrees, the
//!   [`tree::Frontier`] an appender keeps, and proof verification;
//! - [`note`]: C2SP signed notes with Ed25519 (sign, open, verifier keys);
//! - [`checkpoint`]: the checkpoint note text;
//! - [`receipt`]: receipts and consistency proofs, and their checks.
//!
//! Why: a backend that later drops or rewrites an accepted report cannot
//! produce a consistency proof from a checkpoint it signed earlier to one
//! without that report, and every gateway and auditor holding a receipt
//! can show the report was accepted. The normative description, with test
//! vectors, is in `docs/RECEIVER-API.md` ("The log").

pub mod checkpoint;
pub mod note;
pub mod receipt;
pub mod tree;

use alloc::string::String;

/// Why a log artefact (note, checkpoint, receipt, proof) is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    /// Not in the format (says which part).
    #[error("malformed: {0}")]
    Malformed(String),
    /// A key or key name that cannot be used.
    #[error("bad key: {0}")]
    BadKey(String),
    /// A signature line of the trusted key does not verify.
    #[error("bad signature: the note does not verify with the log key")]
    BadSignature,
    /// No signature line of the trusted key.
    #[error("no signature by the trusted log key {0:?}")]
    UnknownSigner(String),
    /// The checkpoint names another log.
    #[error("checkpoint of log {found:?}, expected {expected:?}")]
    OriginMismatch {
        /// The trusted log's origin.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
    /// The receipt is for other bytes than the report given.
    #[error("the receipt is for another report (hash differs)")]
    WrongReport,
    /// The receipt's tree size differs from its checkpoint's.
    #[error("receipt tree size {receipt} differs from its checkpoint's {checkpoint}")]
    SizeMismatch {
        /// Receipt's.
        receipt: u64,
        /// Checkpoint's.
        checkpoint: u64,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("inclusion proof of entry {index} in tree size {size} does not verify")]
    InclusionFailed {
        /// Entry.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The log at `new` does not extend the log at `old`.
    #[error("log not consistent: tree size {new} does not extend tree size {old}")]
    ConsistencyFailed {
        /// Older size.
        old: u64,
        /// Newer size.
        new: u64,
    },
}

impl TlogError {
    /// Stable short reason.
    pub fn label(&self) -> &'static str {
        match self {
            TlogError::Malformed(_) => "malformed",
            TlogError::BadKey(_) => "bad_key",
            TlogError::BadSignature => "bad_signature",
            TlogError::UnknownSigner(_) => "unknown_signer",
            TlogError::OriginMismatch { .. } => "origin_mismatch",
            TlogError::WrongReport => "wrong_report",
            TlogError::SizeMismatch { .. } => "size_mismatch",
            TlogError::InclusionFailed { .. } => "inclusion_failed",
            TlogError::ConsistencyFailed { .. } => "consistency_failed",
        }
    }
}
