//! Receipts: what the backend returns with every `2xx` to an upload, and
//! what a gateway or an auditor keeps to prove later that the backend
//! accepted a report.
//!
//! ```json
//! {
//!   "report_hash": "<hex SHA-256 of the report's stored JWS bytes>",
//!   "log_index": 41,
//!   "tree_size": 57,
//!   "inclusion_proof": ["<hex hash>", "..."],
//!   "checkpoint": "<signed checkpoint note, see super::checkpoint>"
//! }
//! ```
//!
//! The log entry of a report is its 32-byte SHA-256; the leaf hash is
//! `SHA-256(0x00 || entry)`. A receipt is valid when the checkpoint
//! verifies with the log's key, its size equals `tree_size`, and the
//! inclusion proof takes the leaf at `log_index` to its root
//! ([`verify_receipt`]). A later checkpoint must be consistent with an
//! earlier one: [`ConsistencyProof`] carries the proof between two sizes
//! ([`verify_consistency_between`]).

use super::TlogError;
use super::checkpoint::Checkpoint;
use super::note::NoteVerifier;
use super::tree::{entry_leaf_hash, verify_consistency, verify_inclusion};
use crate::report::hex;
use crate::report::merkle::Hash;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Proof that the log holds a report (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Hex SHA-256 of the report's stored bytes: the log entry.
    pub report_hash: String,
    /// Position of the entry in the log, from 0.
    pub log_index: u64,
    /// Size of the tree the proof and checkpoint are for.
    pub tree_size: u64,
    /// RFC 6962 audit path, leaf side first, hex.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint of `tree_size`.
    pub checkpoint: String,
}

/// A consistency proof between two tree sizes (the answer of
/// `GET /v1/log/consistency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The older size.
    pub old_size: u64,
    /// The newer size.
    pub new_size: u64,
    /// RFC 6962 consistency proof, hex.
    pub proof: Vec<String>,
}

/// Parses lower-case or upper-case hex of a 32-byte hash.
pub fn parse_hash(s: &str) -> Result<Hash, TlogError> {
    let bad = || TlogError::Malformed(format!("{s:?} is not a hex SHA-256"));
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn parse_hashes(v: &[String]) -> Result<Vec<Hash>, TlogError> {
    if v.len() > 64 {
        return Err(TlogError::Malformed(String::from(
            "proof longer than 64 hashes",
        )));
    }
    v.iter().map(|s| parse_hash(s)).collect()
}

/// Hex hashes for a proof.
pub fn hex_hashes(v: &[Hash]) -> Vec<String> {
    v.iter().map(|h| hex(h)).collect()
}

/// Checks `receipt` with the log's key; when `report` is given, also that
/// it is the receipt of exactly those bytes. Returns the checkpoint.
pub fn verify_receipt(
    receipt: &Receipt,
    report: Option<&[u8]>,
    log_key: &NoteVerifier,
) -> Result<Checkpoint, TlogError> {
    check_receipt(receipt, report, Some(log_key))
}

/// [`verify_receipt`], or with `log_key` `None` the same checks except the
/// checkpoint's signature (see [`super::note::text_unverified`]).
pub fn check_receipt(
    receipt: &Receipt,
    report: Option<&[u8]>,
    log_key: Option<&NoteVerifier>,
) -> Result<Checkpoint, TlogError> {
    let entry = parse_hash(&receipt.report_hash)?;
    if let Some(bytes) = report {
        let h: Hash = Sha256::digest(bytes).into();
        if h != entry {
            return Err(TlogError::WrongReport);
        }
    }
    let c = match log_key {
        Some(k) => Checkpoint::open(&receipt.checkpoint, k)?,
        None => Checkpoint::parse_text(super::note::text_unverified(&receipt.checkpoint)?)?,
    };
    if c.size != receipt.tree_size {
        return Err(TlogError::SizeMismatch {
            receipt: receipt.tree_size,
            checkpoint: c.size,
        });
    }
    let proof = parse_hashes(&receipt.inclusion_proof)?;
    if !verify_inclusion(
        &entry_leaf_hash(&entry),
        receipt.log_index,
        receipt.tree_size,
        &proof,
        &c.root,
    ) {
        return Err(TlogError::InclusionFailed {
            index: receipt.log_index,
            size: receipt.tree_size,
        });
    }
    Ok(c)
}

/// Checks that checkpoint `new` extends checkpoint `old` with `proof`
/// (both already verified and of the same log).
pub fn verify_consistency_between(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &ConsistencyProof,
) -> Result<(), TlogError> {
    let failed = || TlogError::ConsistencyFailed {
        old: old.size,
        new: new.size,
    };
    if old.origin != new.origin {
        return Err(TlogError::OriginMismatch {
            expected: old.origin.clone(),
            found: new.origin.clone(),
        });
    }
    if proof.old_size != old.size || proof.new_size != new.size {
        return Err(failed());
    }
    let hashes = parse_hashes(&proof.proof)?;
    if verify_consistency(old.size, new.size, &hashes, &old.root, &new.root) {
        Ok(())
    } else {
        Err(failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::note::NoteSigner;
    use crate::tlog::tree::{Frontier, hash_ranges, inclusion_ranges};
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    use ed25519_dalek::SigningKey;

    fn log_of(reports: &[&[u8]]) -> (Frontier, BTreeMap<crate::tlog::tree::NodeId, Hash>) {
        let mut f = Frontier::new();
        let mut nodes = BTreeMap::new();
        for r in reports {
            let entry: Hash = Sha256::digest(r).into();
            nodes.extend(f.append(entry_leaf_hash(&entry)));
        }
        (f, nodes)
    }

    #[test]
    fn a_receipt_proves_its_report_and_no_other() {
        let signer = NoteSigner::new("mrv.test/log", SigningKey::from_bytes(&[9; 32])).expect("s");
        let reports: [&[u8]; 5] = [b"r0", b"r1", b"r2", b"r3", b"r4"];
        let (f, nodes) = log_of(&reports);
        let cp = Checkpoint {
            origin: "mrv.test/log".to_string(),
            size: f.size(),
            root: f.root(),
            extensions: Vec::new(),
        };
        let note = cp.sign(&signer).expect("sign");
        let proof = hash_ranges(&inclusion_ranges(3, 5), &nodes).expect("nodes");
        let r = Receipt {
            report_hash: hex(&Sha256::digest(reports[3])),
            log_index: 3,
            tree_size: 5,
            inclusion_proof: hex_hashes(&proof),
            checkpoint: note,
        };
        assert_eq!(verify_receipt(&r, Some(b"r3"), signer.verifier()), Ok(cp));
        assert_eq!(
            verify_receipt(&r, Some(b"r2"), signer.verifier()),
            Err(TlogError::WrongReport)
        );
        let moved = Receipt {
            log_index: 2,
            ..r.clone()
        };
        assert!(matches!(
            verify_receipt(&moved, None, signer.verifier()),
            Err(TlogError::InclusionFailed { .. })
        ));
        let other = NoteSigner::new("mrv.test/log", SigningKey::from_bytes(&[8; 32])).expect("s");
        assert!(verify_receipt(&r, None, other.verifier()).is_err());
    }
}
