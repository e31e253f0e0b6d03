//! Receipts from the backend's public log, kept beside the reports, and the
//! gateway's watch over that log.
//!
//! Every `2xx` upload answer carries, per accepted or duplicate report, a
//! receipt: an RFC 6962 inclusion proof and the signed checkpoint it leads
//! to ([`mrv_shared::tlog`], normative in `docs/RECEIVER-API.md`). The
//! gateway
//!
//! 1. checks each receipt against the report bytes it sent (and the
//!    checkpoint's signature, when `[upload] log_key` is configured), and
//!    keeps the first valid receipt of each report;
//! 2. asks the backend for a consistency proof from the last checkpoint it
//!    kept to the newest one it was given, checks it, and keeps the newer
//!    checkpoint with that proof ([`LogWatch`] decides, purely, what is
//!    needed).
//!
//! A backend that drops or rewrites a report it accepted cannot produce
//! that proof: the gateway raises an alarm (error log, `UploadStatus`
//! `log_alarm`) and keeps what it has as evidence. Receipts are kept after
//! their reports are pruned.
//!
//! ## On-disk format
//!
//! ```text
//! <data_dir>/reports/receipts/<seq, 12 digits>.json   the first valid receipt of report seq (JSON Receipt)
//! <data_dir>/reports/receipts/checkpoints.jsonl       one line per checkpoint kept, in order:
//!     {"checkpoint": "<signed note>", "consistency": null | {"old_size", "new_size", "proof"}}
//!     (the proof from the previous line's checkpoint to this one)
//! ```

use mrv_gateway_report::store::{StoreError, file_stem, write_atomic};
use mrv_shared::tlog::TlogError;
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::note::{NoteVerifier, text_unverified};
use mrv_shared::tlog::receipt::{ConsistencyProof, Receipt, verify_consistency_between};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why receipts could not be kept or checked.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Writing a file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// File system.
    #[error("receipts {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A kept file does not parse.
    #[error("receipts {path}: {why}")]
    Corrupt {
        /// Path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A receipt, checkpoint or proof does not check out.
    #[error(transparent)]
    Log(#[from] TlogError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReceiptError + '_ {
    move |source| ReceiptError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One line of `checkpoints.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptCheckpoint {
    /// The signed note.
    pub checkpoint: String,
    /// Proof from the previous kept checkpoint to this one (`None` for the
    /// first).
    pub consistency: Option<ConsistencyProof>,
}

/// Parses a note's checkpoint, checking its signature when a key is given.
pub fn open_checkpoint(note: &str, key: Option<&NoteVerifier>) -> Result<Checkpoint, TlogError> {
    match key {
        Some(k) => Checkpoint::open(note, k),
        None => Checkpoint::parse_text(text_unverified(note)?),
    }
}

/// What the watch needs before it can keep a new checkpoint (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: it is the checkpoint kept (or an older one whose
    /// consistency was already shown when it was newer).
    Nothing,
    /// The first checkpoint: keep it as it is.
    KeepFirst,
    /// A consistency proof between these sizes is needed.
    Prove {
        /// Older size.
        old: u64,
        /// Newer size.
        new: u64,
    },
    /// Same size, different root: the log forked. Alarm.
    Fork,
}

/// The last checkpoint kept and how a new one relates to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogWatch {
    latest: Option<(Checkpoint, String)>,
}

impl LogWatch {
    /// The latest checkpoint kept.
    pub fn latest(&self) -> Option<&Checkpoint> {
        self.latest.as_ref().map(|(c, _)| c)
    }

    /// What to do about `new`.
    pub fn step(&self, new: &Checkpoint) -> Step {
        match &self.latest {
            None => Step::KeepFirst,
            Some((l, _)) if l.size == new.size => {
                if l.root == new.root && l.origin == new.origin {
                    Step::Nothing
                } else {
                    Step::Fork
                }
            }
            Some((l, _)) => Step::Prove {
                old: l.size.min(new.size),
                new: l.size.max(new.size),
            },
        }
    }

    /// Checks `proof` between the kept checkpoint and `new`; on success
    /// `new` becomes the latest when it is newer. Returns true when `new`
    /// was kept.
    pub fn advance(
        &mut self,
        new: Checkpoint,
        note: &str,
        proof: Option<&ConsistencyProof>,
    ) -> Result<bool, TlogError> {
        match (&self.latest, proof) {
            (None, _) => {}
            (Some((l, _)), Some(p)) => {
                if new.size >= l.size {
                    verify_consistency_between(l, &new, p)?;
                } else {
                    verify_consistency_between(&new, l, p)?;
                    return Ok(false);
                }
            }
            (Some((l, _)), None) => {
                if l.size != new.size || l.root != new.root {
                    return Err(TlogError::ConsistencyFailed {
                        old: l.size,
                        new: new.size,
                    });
                }
                return Ok(false);
            }
        }
        self.latest = Some((new, note.to_string()));
        Ok(true)
    }
}

/// The receipts directory (see the module doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReceiptStore {
    dir: PathBuf,
    watch: Arc<Mutex<LogWatch>>,
    key: Option<NoteVerifier>,
}

impl ReceiptStore {
    /// Opens (creating) `<report store dir>/receipts` and reloads the
    /// latest kept checkpoint (checking the chain of kept checkpoints).
    pub fn open(
        report_dir: &Path,
        key: Option<NoteVerifier>,
    ) -> Result<ReceiptStore, ReceiptError> {
        let dir = report_dir.join("receipts");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join("checkpoints.jsonl");
        let mut watch = LogWatch::default();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let Ok(k) = serde_json::from_str::<KeptCheckpoint>(line) else {
                        // A torn last line (crash mid-append) is skipped.
                        if n + 1 == text.lines().count() {
                            continue;
                        }
                        return Err(ReceiptError::Corrupt {
                            path,
                            why: format!("line {} is not a kept checkpoint", n + 1),
                        });
                    };
                    let c = open_checkpoint(&k.checkpoint, key.as_ref())?;
                    watch.advance(c, &k.checkpoint, k.consistency.as_ref())?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        Ok(ReceiptStore {
            dir,
            watch: Arc::new(Mutex::new(watch)),
            key,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogWatch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log key receipts are checked with, if configured.
    pub fn key(&self) -> Option<&NoteVerifier> {
        self.key.as_ref()
    }

    /// The latest checkpoint kept.
    pub fn latest(&self) -> Option<Checkpoint> {
        self.lock().latest().cloned()
    }

    /// What keeping `new` needs.
    pub fn step(&self, new: &Checkpoint) -> Step {
        self.lock().step(new)
    }

    /// Checks `receipt` against `report` (and the key) and keeps it unless
    /// a receipt of that report is kept already. Returns its checkpoint.
    pub fn put(
        &self,
        seq: u64,
        receipt: &Receipt,
        report: &[u8],
    ) -> Result<Checkpoint, ReceiptError> {
        let cp =
            mrv_shared::tlog::receipt::check_receipt(receipt, Some(report), self.key.as_ref())?;
        let name = format!("{}.json", file_stem(seq));
        if !self.dir.join(&name).exists() {
            let bytes = serde_json::to_vec_pretty(receipt).expect("a receipt serialises");
            write_atomic(&self.dir, &name, &bytes)?;
        }
        Ok(cp)
    }

    /// Seqs of the reports whose receipts are kept, ascending.
    pub fn seqs(&self) -> Result<Vec<u64>, ReceiptError> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            if let Some(seq) = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            {
                v.push(seq);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// The kept receipt of report `seq`.
    pub fn get(&self, seq: u64) -> Result<Option<Receipt>, ReceiptError> {
        let p = self.dir.join(format!("{}.json", file_stem(seq)));
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ReceiptError::Corrupt {
                    path: p,
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// Checks `proof` from the kept checkpoint to `note` and keeps `note`
    /// (appended durably) when it is newer.
    pub fn advance(
        &self,
        note: &str,
        proof: Option<&ConsistencyProof>,
    ) -> Result<bool, ReceiptError> {
        let cp = open_checkpoint(note, self.key.as_ref())?;
        let mut w = self.lock();
        let mut next = w.clone();
        if !next.advance(cp, note, proof)? {
            return Ok(false);
        }
        let line = KeptCheckpoint {
            checkpoint: note.to_string(),
            consistency: proof.cloned(),
        };
        let mut bytes = serde_json::to_vec(&line).expect("serialises");
        bytes.push(b'\n');
        let path = self.dir.join("checkpoints.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(&bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        *w = next;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use mrv_shared::tlog::note::NoteSigner;
    use mrv_shared::tlog::receipt::hex_hashes;
    use mrv_shared::tlog::tree::{Frontier, consistency_ranges, entry_leaf_hash, hash_ranges};
    use std::collections::BTreeMap;

    struct Log {
        signer: NoteSigner,
        frontier: Frontier,
        nodes: BTreeMap<mrv_shared::tlog::tree::NodeId, [u8; 32]>,
    }

    impl Log {
        fn new() -> Log {
            Log {
                signer: NoteSigner::new("mrv.test/log", SigningKey::from_bytes(&[1; 32]))
                    .expect("s"),
                frontier: Frontier::new(),
                nodes: BTreeMap::new(),
            }
        }
        fn add(&mut self, n: u8) {
            for i in 0..n {
                self.nodes
                    .extend(self.frontier.append(entry_leaf_hash(&[i; 32])));
            }
        }
        fn note(&self) -> String {
            Checkpoint {
                origin: String::from("mrv.test/log"),
                size: self.frontier.size(),
                root: self.frontier.root(),
                extensions: vec![],
            }
            .sign(&self.signer)
            .expect("sign")
        }
        fn proof(&self, old: u64, new: u64) -> ConsistencyProof {
            ConsistencyProof {
                old_size: old,
                new_size: new,
                proof: hex_hashes(
                    &hash_ranges(&consistency_ranges(old, new), &self.nodes).expect("n"),
                ),
            }
        }
    }

    #[test]
    fn checkpoints_are_kept_only_with_a_consistency_proof_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::new();
        let key = log.signer.verifier().clone();
        let s = ReceiptStore::open(dir.path(), Some(key.clone())).expect("open");
        log.add(3);
        let n3 = log.note();
        assert_eq!(
            s.step(&open_checkpoint(&n3, Some(&key)).expect("ok")),
            Step::KeepFirst
        );
        assert!(s.advance(&n3, None).expect("first"));
        log.add(4);
        let n7 = log.note();
        let c7 = open_checkpoint(&n7, Some(&key)).expect("ok");
        assert_eq!(s.step(&c7), Step::Prove { old: 3, new: 7 });
        // A proof for other sizes, or none, is refused.
        assert!(s.advance(&n7, None).is_err());
        assert!(s.advance(&n7, Some(&log.proof(2, 7))).is_err());
        assert!(s.advance(&n7, Some(&log.proof(3, 7))).expect("consistent"));
        assert_eq!(s.latest().map(|c| c.size), Some(7));
        // An older checkpoint with its proof is fine and does not move back.
        assert!(
            !s.advance(&n3, Some(&log.proof(3, 7)))
                .expect("older but consistent")
        );
        let again = ReceiptStore::open(dir.path(), Some(key)).expect("reopen");
        assert_eq!(again.latest().map(|c| c.size), Some(7));
    }

    #[test]
    fn a_rewritten_log_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::new();
        let key = log.signer.verifier().clone();
        let s = ReceiptStore::open(dir.path(), Some(key.clone())).expect("open");
        log.add(5);
        assert!(s.advance(&log.note(), None).expect("first"));
        // The backend drops the third entry and carries on: a new tree.
        let mut forged = Log::new();
        for i in [0u8, 1, 3, 4, 5, 6] {
            forged
                .nodes
                .extend(forged.frontier.append(entry_leaf_hash(&[i; 32])));
        }
        let note = forged.note();
        let c = open_checkpoint(&note, Some(&key)).expect("signed by the same key");
        assert_eq!(s.step(&c), Step::Prove { old: 5, new: 6 });
        let e = s
            .advance(&note, Some(&forged.proof(5, 6)))
            .expect_err("inconsistent");
        assert!(
            matches!(e, ReceiptError::Log(TlogError::ConsistencyFailed { .. })),
            "{e}"
        );
        assert_eq!(
            s.latest().map(|c| c.size),
            Some(5),
            "the honest checkpoint stays"
        );
        // Same size, other root: a fork.
        let mut fork = Log::new();
        for i in [0u8, 1, 2, 3, 9] {
            fork.nodes
                .extend(fork.frontier.append(entry_leaf_hash(&[i; 32])));
        }
        let c = open_checkpoint(&fork.note(), Some(&key)).expect("signed");
        assert_eq!(s.step(&c), Step::Fork);
    }
}
