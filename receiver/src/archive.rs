//! The archive: every accepted report stored verbatim and durably, the
//! per-gateway chain state, and the equivocation flags.
//!
//! ## On-disk format
//!
//! ```text
//! <data_dir>/gateways/<gateway>/<seq, 12 digits>.jws     accepted report, byte for byte
//! <data_dir>/gateways/<gateway>/evidence/<seq>-<sha256>.jws  bytes of a rejected equivocation
//! <data_dir>/flags.jsonl                                 one JSON [`Flag`] per line
//! ```
//!
//! ## Invariants
//!
//! - **Durable before acknowledged.** A report file is written to a
//!   temporary name, fsynced, renamed, and the directory fsynced before
//!   [`Archive::offer`] returns `accepted`; a crash at any point leaves
//!   either the whole file or none (temporary names start with `.` and are
//!   ignored at load).
//! - **One report per (gateway, seq), forever.** Offering the same bytes
//!   again is answered `duplicate` and changes nothing; offering different
//!   bytes for a stored seq is an equivocation: rejected, flagged in
//!   `flags.jsonl` and the offered bytes kept as evidence.
//! - **Chains are gap-free from seq 1.** A report is stored only if
//!   [`check_link`] accepts it after the gateway's head (sequence, previous
//!   hash, period and counter continuity), after [`verify_report`] accepted
//!   its JWS and contents against the registered gateway keys.
//! - **A key signs for one gateway.** The first accepted report signed
//!   with a key id binds it to that report's gateway; a report of another
//!   gateway signed with it is rejected (`kid_gateway_mismatch`).
//! - Reopening rebuilds the heads from the files (their bytes were verified
//!   when accepted; they are parsed, not re-verified).

use mrv_shared::ids::validate_id;
use mrv_shared::report::jws::parse_compact;
use mrv_shared::report::merkle::Hash;
use mrv_shared::report::verify::{ChainHead, check_link};
use mrv_shared::report::{KeySet, Report, ReportError, VerifiedReport, hex, verify_report};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the archive failed (storage, not the report).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// File system error.
    #[error("archive {path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored file that does not parse (at load).
    #[error("archive {path}: {why}")]
    Corrupt {
        /// Path concerned.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What happened to one offered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Newly stored.
    Accepted,
    /// These exact bytes were stored before; nothing changed.
    Duplicate,
    /// Not stored; `reason` says why.
    Rejected,
}

/// The answer for one offered report (the wire format of upload results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Report id, when the bytes parsed far enough to have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// Report seq, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Outcome.
    pub status: ItemStatus,
    /// Stable short reason of a rejection (`bad_signature`, `seq_gap`,
    /// `prev_hash_mismatch`, `equivocation`, ... see `docs/openapi.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ItemResult {
    fn rejected(v: Option<&VerifiedReport>, reason: &str, detail: String) -> ItemResult {
        ItemResult {
            report_id: v.map(|v| v.id().to_string()),
            seq: v.map(VerifiedReport::seq),
            status: ItemStatus::Rejected,
            reason: Some(reason.to_string()),
            detail: Some(detail),
        }
    }

    /// True for rejections caused by the chain (sequence, hash, period,
    /// baselines, equivocation) rather than by the report itself.
    pub fn is_chain_conflict(&self) -> bool {
        matches!(
            self.reason.as_deref(),
            Some(
                "seq_gap"
                    | "prev_hash_mismatch"
                    | "replay"
                    | "period_discontinuity"
                    | "baseline_mismatch"
                    | "equivocation"
            )
        )
    }
}

/// An equivocation: a gateway signed two different reports with one seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// When it was detected (Unix ms).
    pub time_ms: u64,
    /// Gateway.
    pub gateway: String,
    /// The seq signed twice.
    pub seq: u64,
    /// Always `equivocation`.
    pub reason: String,
    /// Hex SHA-256 of the stored report.
    pub stored_hash: String,
    /// Hex SHA-256 of the offered, different report.
    pub offered_hash: String,
}

/// One stored report, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Seq.
    pub seq: u64,
    /// Report id.
    pub report_id: String,
    /// Hex SHA-256 of the stored bytes.
    pub hash: String,
    /// Size of the stored JWS.
    pub bytes: u64,
    /// Period start (Unix ms).
    pub period_start_ms: u64,
    /// Period end (Unix ms).
    pub period_end_ms: u64,
    /// Readings in the report.
    pub readings: u64,
}

/// Chain status of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// Gateway id.
    pub gateway: String,
    /// Reports stored (seq 1 ..= head_seq, gap-free).
    pub reports: u64,
    /// Highest stored seq (0 = none).
    pub head_seq: u64,
    /// Hex hash of the head (the next report's `prev_hash`).
    pub head_hash: Option<String>,
    /// Period end of the head.
    pub head_period_end_ms: Option<u64>,
    /// Readings over all stored reports.
    pub readings: u64,
    /// Equivocations detected for this gateway.
    pub equivocations: Vec<Flag>,
}

#[derive(Debug, Default)]
struct GatewayChain {
    head: Option<ChainHead>,
    entries: BTreeMap<u64, Entry>,
    readings: u64,
}

#[derive(Debug, Default)]
struct State {
    chains: BTreeMap<String, GatewayChain>,
    by_hash: HashMap<Hash, (String, u64)>,
    by_id: HashMap<String, (String, u64)>,
    /// Which gateway each key id has signed for (a key serves one gateway).
    kid_gateway: HashMap<String, String>,
    flags: Vec<Flag>,
}

/// The archive (see the module doc).
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    state: Mutex<State>,
}

fn stem(seq: u64) -> String {
    format!("{seq:012}")
}

/// Writes `bytes` to `dir/name` atomically and durably.
fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(io(&dst))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn parse_stored(bytes: &[u8], path: &Path) -> Result<VerifiedReport, ArchiveError> {
    let corrupt = |why: String| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let jws = parse_compact(bytes).map_err(|e| corrupt(e.to_string()))?;
    let report: Report =
        serde_json::from_slice(&jws.payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(VerifiedReport {
        kid: jws.header.kid.clone(),
        hash: Sha256::digest(bytes).into(),
        report,
    })
}

fn entry_of(v: &VerifiedReport, len: usize) -> Entry {
    Entry {
        seq: v.seq(),
        report_id: v.id().to_string(),
        hash: v.hash_hex(),
        bytes: len as u64,
        period_start_ms: v.report.header.period.start_ms,
        period_end_ms: v.report.header.period.end_ms,
        readings: v.report.readings.count,
    }
}

/// A gateway id usable as a directory name.
fn safe_gateway(id: &str) -> bool {
    validate_id(id).is_ok() && !id.starts_with('.')
}

impl Archive {
    /// Opens (creating) the archive under `data_dir` and rebuilds the chain
    /// heads from the stored files.
    pub fn open(data_dir: &Path) -> Result<Archive, ArchiveError> {
        let gw_dir = data_dir.join("gateways");
        fs::create_dir_all(&gw_dir).map_err(io(&gw_dir))?;
        let mut st = State::default();
        for e in fs::read_dir(&gw_dir).map_err(io(&gw_dir))? {
            let e = e.map_err(io(&gw_dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !safe_gateway(&name) || !e.path().is_dir() {
                continue;
            }
            let mut seqs: Vec<u64> = Vec::new();
            for f in fs::read_dir(e.path()).map_err(io(&e.path()))? {
                let f = f.map_err(io(&e.path()))?;
                let fname = f.file_name().to_string_lossy().into_owned();
                if let Some(s) = fname.strip_suffix(".jws")
                    && let Ok(seq) = s.parse::<u64>()
                {
                    seqs.push(seq);
                }
            }
            seqs.sort_unstable();
            let mut chain = GatewayChain::default();
            for seq in seqs {
                let path = e.path().join(format!("{}.jws", stem(seq)));
                let bytes = fs::read(&path).map_err(io(&path))?;
                let v = parse_stored(&bytes, &path)?;
                if v.seq() != seq || v.gateway() != name {
                    return Err(ArchiveError::Corrupt {
                        path,
                        why: format!("file holds {} seq {}", v.gateway(), v.seq()),
                    });
                }
                chain.head = Some(ChainHead::of(&v, chain.head.as_ref()));
                chain.readings += v.report.readings.count;
                st.by_hash.insert(v.hash, (name.clone(), seq));
                st.by_id.insert(v.id().to_string(), (name.clone(), seq));
                st.kid_gateway.insert(v.kid.clone(), name.clone());
                chain.entries.insert(seq, entry_of(&v, bytes.len()));
            }
            st.chains.insert(name, chain);
        }
        let flags_path = data_dir.join("flags.jsonl");
        match fs::read_to_string(&flags_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    // A torn last line (crash mid-append) is skipped.
                    if let Ok(f) = serde_json::from_str::<Flag>(line) {
                        st.flags.push(f);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&flags_path)(e)),
        }
        Ok(Archive {
            dir: data_dir.to_path_buf(),
            state: Mutex::new(st),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies `bytes` against `keys`, checks the chain, and stores it
    /// durably (see the module doc). Blocking (fsync): call it from
    /// `spawn_blocking`. `Err` only for storage failures; every judgement on
    /// the report itself is an [`ItemResult`].
    pub fn offer(
        &self,
        bytes: &[u8],
        keys: &KeySet,
        now_ms: u64,
    ) -> Result<ItemResult, ArchiveError> {
        let hash: Hash = Sha256::digest(bytes).into();
        if let Some(r) = self.duplicate_of(&hash) {
            return Ok(r);
        }
        let v = match verify_report(bytes, keys) {
            Ok(v) => v,
            Err(e) => {
                let v = parse_stored(bytes, Path::new("")).ok();
                return Ok(ItemResult::rejected(v.as_ref(), e.label(), e.to_string()));
            }
        };
        if !safe_gateway(v.gateway()) {
            return Ok(ItemResult::rejected(
                Some(&v),
                "malformed",
                format!("gateway id {:?} is not a valid id", v.gateway()),
            ));
        }
        let mut st = self.lock();
        // Re-check under the lock: a concurrent upload may have stored it.
        if let Some(r) = duplicate_in(&st, &hash) {
            return Ok(r);
        }
        let gw = v.gateway().to_string();
        if let Some(bound) = st.kid_gateway.get(&v.kid)
            && *bound != gw
        {
            return Ok(ItemResult::rejected(
                Some(&v),
                "kid_gateway_mismatch",
                format!("key {:?} signs for gateway {bound:?}, not {gw:?}", v.kid),
            ));
        }
        let chain = st.chains.entry(gw.clone()).or_default();
        if let Some(stored) = chain.entries.get(&v.seq()) {
            let flag = Flag {
                time_ms: now_ms,
                gateway: gw.clone(),
                seq: v.seq(),
                reason: String::from("equivocation"),
                stored_hash: stored.hash.clone(),
                offered_hash: v.hash_hex(),
            };
            self.record_equivocation(&flag, bytes)?;
            tracing::error!(gateway = %gw, seq = v.seq(), stored = %flag.stored_hash, offered = %flag.offered_hash,
                "EQUIVOCATION: gateway signed two different reports with one seq; rejected and flagged");
            st.flags.push(flag);
            return Ok(ItemResult::rejected(
                Some(&v),
                "equivocation",
                format!(
                    "seq {} of {gw} is already stored with different bytes; flagged",
                    v.seq()
                ),
            ));
        }
        if let Err(e) = check_link(chain.head.as_ref(), &v, false) {
            let reason = match e {
                ReportError::Replay { .. } => "replay",
                ref e => e.label(),
            };
            return Ok(ItemResult::rejected(Some(&v), reason, e.to_string()));
        }
        let dir = self.dir.join("gateways").join(&gw);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_durable(&dir, &format!("{}.jws", stem(v.seq())), bytes)?;
        chain.head = Some(ChainHead::of(&v, chain.head.as_ref()));
        chain.readings += v.report.readings.count;
        chain.entries.insert(v.seq(), entry_of(&v, bytes.len()));
        st.by_hash.insert(hash, (gw.clone(), v.seq()));
        st.by_id.insert(v.id().to_string(), (gw.clone(), v.seq()));
        st.kid_gateway.insert(v.kid.clone(), gw);
        Ok(ItemResult {
            report_id: Some(v.id().to_string()),
            seq: Some(v.seq()),
            status: ItemStatus::Accepted,
            reason: None,
            detail: None,
        })
    }

    fn duplicate_of(&self, hash: &Hash) -> Option<ItemResult> {
        duplicate_in(&self.lock(), hash)
    }

    fn record_equivocation(&self, flag: &Flag, bytes: &[u8]) -> Result<(), ArchiveError> {
        let ev = self
            .dir
            .join("gateways")
            .join(&flag.gateway)
            .join("evidence");
        fs::create_dir_all(&ev).map_err(io(&ev))?;
        write_durable(
            &ev,
            &format!("{}-{}.jws", stem(flag.seq), flag.offered_hash),
            bytes,
        )?;
        let path = self.dir.join("flags.jsonl");
        let mut line = serde_json::to_vec(flag).expect("a flag serialises");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(&line).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        Ok(())
    }

    /// Gateways with at least one stored report or flag.
    pub fn gateways(&self) -> Vec<String> {
        self.lock().chains.keys().cloned().collect()
    }

    /// Chain status of `gateway` (`None` if never seen).
    pub fn chain_status(&self, gateway: &str) -> Option<ChainStatus> {
        let st = self.lock();
        let c = st.chains.get(gateway)?;
        Some(ChainStatus {
            gateway: gateway.to_string(),
            reports: c.entries.len() as u64,
            head_seq: c.head.as_ref().map_or(0, |h| h.seq),
            head_hash: c.head.as_ref().map(|h| hex(&h.hash)),
            head_period_end_ms: c.head.as_ref().map(|h| h.period_end_ms),
            readings: c.readings,
            equivocations: st
                .flags
                .iter()
                .filter(|f| f.gateway == gateway)
                .cloned()
                .collect(),
        })
    }

    /// Stored reports of `gateway` with seq > `after`, at most `limit`.
    pub fn list(&self, gateway: &str, after: u64, limit: usize) -> Option<Vec<Entry>> {
        let st = self.lock();
        let c = st.chains.get(gateway)?;
        Some(
            c.entries
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    /// The stored bytes of report `report_id`.
    pub fn fetch(&self, report_id: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Some((gw, seq)) = self.lock().by_id.get(report_id).cloned() else {
            return Ok(None);
        };
        let path = self
            .dir
            .join("gateways")
            .join(gw)
            .join(format!("{}.jws", stem(seq)));
        fs::read(&path).map(Some).map_err(io(&path))
    }

    /// Every equivocation flag.
    pub fn flags(&self) -> Vec<Flag> {
        self.lock().flags.clone()
    }
}

fn duplicate_in(st: &State, hash: &Hash) -> Option<ItemResult> {
    let (gw, seq) = st.by_hash.get(hash)?;
    let e = st.chains.get(gw)?.entries.get(seq)?;
    Some(ItemResult {
        report_id: Some(e.report_id.clone()),
        seq: Some(*seq),
        status: ItemStatus::Duplicate,
        reason: None,
        detail: None,
    })
}
