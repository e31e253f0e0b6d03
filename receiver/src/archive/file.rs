//! The file archive: the embedded default (one receiver process).
//!
//! ## On-disk format
//!
//! ```text
//! <data_dir>/gateways/<gateway>/<seq, 12 digits>.jws          accepted report, byte for byte
//! <data_dir>/gateways/<gateway>/evidence/<seq>-<sha256>.jws   bytes of a rejected equivocation
//! <data_dir>/flags.jsonl                                      one JSON [`Flag`] per line
//! <data_dir>/log/entries                                      the log: 32-byte SHA-256 of each
//!                                                             accepted report, in log order
//! <data_dir>/registry.jsonl                                   the registry's audit trail: one JSON
//!                                                             [`AuditRecord`] per line, seq 1, 2, ...
//! ```
//!
//! ## Invariants (besides the [`super`] contract)
//!
//! - A report file is written to a temporary name, fsynced, renamed, and
//!   the directory fsynced; then its log entry is appended and fsynced;
//!   only then is `accepted` returned. A crash leaves either the whole file
//!   or none (temporary names start with `.` and are ignored at load); a
//!   report stored without its log entry (crash in between) gets it at the
//!   next open, and a torn last entry is cut off.
//! - Reopening rebuilds heads, indexes and the log's nodes from the files
//!   (report bytes were verified when accepted; they are parsed, not
//!   re-verified). Memory: the log keeps every complete subtree, about
//!   64 bytes per accepted report.
//! - The ledger ([`crate::ledger`]) is derived from the report files: an
//!   entry is added under the same lock right after its report file is
//!   durable, and rebuilt from the files at open, so it holds exactly the
//!   stored reports (memory: a few KiB per report).
//! - The registry is its audit trail: a change is appended (one line,
//!   fsynced) before it is applied in memory and answered; the registry is
//!   rebuilt at open by replaying the trail ([`Registry::replay`]). A torn
//!   last line (crash mid-append) is cut off at open; any other line that
//!   does not parse or replay stops the open (fail closed).
//! - One mutex serialises decisions and writes: this archive is for one
//!   process. Several receivers need [`super::postgres::PgArchive`].

use super::decision::{ChainView, Decision, decide};
use super::{
    Admission, Archive, ArchiveError, ChainStatus, Entry, Flag, ItemResult, ItemStatus, LogIdentity,
};
use crate::ledger::{self, LedgerEntry, LedgerKey, LedgerQuery};
use crate::registry::{
    AuditRecord, Change, KeySource, Registry, RegistryError, RegistryView, rfc3339,
};
use crate::verification::Trust;
use mrv_shared::durable_dir::create_dir_all_durable;
use mrv_shared::ids::validate_id;
use mrv_shared::report::jws::parse_compact;
use mrv_shared::report::merkle::Hash;
use mrv_shared::report::verify::ChainHead;
use mrv_shared::report::{Report, VerifiedReport, hex};
use mrv_shared::tlog::receipt::{ConsistencyProof, Receipt, hex_hashes};
use mrv_shared::tlog::tree::{
    Frontier, NodeId, Range, consistency_ranges, entry_leaf_hash, inclusion_ranges, range_hash,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Default)]
struct GatewayChain {
    head: Option<ChainHead>,
    entries: BTreeMap<u64, Entry>,
    readings: u64,
}

/// The log in memory: every complete subtree by level, and the frontier.
#[derive(Debug, Default)]
struct MemoryLog {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
    index_of: HashMap<Hash, u64>,
}

impl MemoryLog {
    fn append(&mut self, entry: Hash) -> u64 {
        let index = self.frontier.size();
        for (id, h) in self.frontier.append(entry_leaf_hash(&entry)) {
            let level = usize::from(id.level);
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            debug_assert_eq!(self.levels[level].len() as u64, id.index);
            self.levels[level].push(h);
        }
        self.index_of.insert(entry, index);
        index
    }

    fn node(&self, id: NodeId) -> Option<Hash> {
        self.levels
            .get(usize::from(id.level))?
            .get(usize::try_from(id.index).ok()?)
            .copied()
    }

    fn hashes(&self, ranges: &[Range]) -> Result<Vec<Hash>, ArchiveError> {
        ranges
            .iter()
            .map(|&(s, e)| range_hash(s, e, &|id| self.node(id)))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| ArchiveError::Corrupt {
                what: String::from("log"),
                why: String::from("a node of the tree is missing"),
            })
    }

    fn size(&self) -> u64 {
        self.frontier.size()
    }
}

#[derive(Debug, Default)]
struct State {
    chains: BTreeMap<String, GatewayChain>,
    by_hash: HashMap<Hash, (String, u64)>,
    by_id: HashMap<String, (String, u64)>,
    /// Which gateway each key id has signed for (a key serves one gateway).
    kid_gateway: HashMap<String, String>,
    flags: Vec<Flag>,
    log: MemoryLog,
    /// Signed checkpoint of the current size (cache).
    checkpoint: Option<(u64, String)>,
    /// Ledger entries by (site, gateway, seq).
    ledger: BTreeMap<(String, String, u64), LedgerEntry>,
    /// The registry (the replayed trail).
    registry: Registry,
    /// The audit trail.
    audit: Vec<AuditRecord>,
}

impl State {
    fn index(&mut self, v: &VerifiedReport) {
        let e = ledger::entry_of(v);
        self.ledger
            .insert((e.site.clone(), e.gateway.clone(), e.seq), e);
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    identity: LogIdentity,
    state: Mutex<State>,
}

/// The file archive (see the module doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct FileArchive {
    inner: Arc<Inner>,
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

/// Appends `line` to `path` and fsyncs (creating the file: then the
/// directory is fsynced too).
fn append_durable(path: &Path, line: &[u8]) -> Result<(), ArchiveError> {
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(line).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    if !existed && let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replays the registry trail at `path` into `st`, cutting off a torn
/// last line.
fn load_registry(path: &Path, st: &mut State) -> Result<(), ArchiveError> {
    let raw = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    };
    let whole = raw.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole != raw.len() {
        tracing::warn!(path = %path.display(), "registry trail ends in a torn line (crash mid-append); cut off");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(whole as u64).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    for (n, line) in raw[..whole].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let corrupt = |why: String| ArchiveError::Corrupt {
            what: format!("{} line {}", path.display(), n + 1),
            why,
        };
        let r: AuditRecord = serde_json::from_slice(line).map_err(|e| corrupt(e.to_string()))?;
        if r.seq != st.audit.len() as u64 + 1 {
            return Err(corrupt(format!("seq {} after {}", r.seq, st.audit.len())));
        }
        st.registry.replay(&r).map_err(|e| corrupt(e.to_string()))?;
        st.audit.push(r);
    }
    Ok(())
}

/// Parses stored bytes (verified when accepted).
pub fn parse_stored(bytes: &[u8], what: &str) -> Result<VerifiedReport, ArchiveError> {
    let corrupt = |why: String| ArchiveError::Corrupt {
        what: what.to_string(),
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

/// A gateway id usable as a directory name.
pub fn safe_gateway(id: &str) -> bool {
    validate_id(id).is_ok() && !id.starts_with('.')
}

impl State {
    fn receipt(&mut self, identity: &LogIdentity, hash: &Hash) -> Result<Receipt, ArchiveError> {
        let index = *self
            .log
            .index_of
            .get(hash)
            .ok_or_else(|| ArchiveError::Corrupt {
                what: String::from("log"),
                why: format!("accepted report {} has no log entry", hex(hash)),
            })?;
        let size = self.log.size();
        let proof = self.log.hashes(&inclusion_ranges(index, size))?;
        let checkpoint = self.signed_checkpoint(identity);
        Ok(Receipt {
            report_hash: hex(hash),
            log_index: index,
            tree_size: size,
            inclusion_proof: hex_hashes(&proof),
            checkpoint,
        })
    }

    fn signed_checkpoint(&mut self, identity: &LogIdentity) -> String {
        let size = self.log.size();
        match &self.checkpoint {
            Some((s, note)) if *s == size => note.clone(),
            _ => {
                let note = identity.sign(size, self.log.frontier.root());
                self.checkpoint = Some((size, note.clone()));
                note
            }
        }
    }

    fn duplicate(
        &mut self,
        identity: &LogIdentity,
        hash: &Hash,
    ) -> Result<Option<ItemResult>, ArchiveError> {
        let Some((gw, seq)) = self.by_hash.get(hash).cloned() else {
            return Ok(None);
        };
        let id = self
            .chains
            .get(&gw)
            .and_then(|c| c.entries.get(&seq))
            .map(|e| e.report_id.clone())
            .unwrap_or_default();
        let receipt = self.receipt(identity, hash)?;
        Ok(Some(ItemResult::stored(
            ItemStatus::Duplicate,
            &id,
            seq,
            receipt,
        )))
    }
}

impl FileArchive {
    /// Opens (creating) the archive under `data_dir`, rebuilds the chain
    /// heads and the log, and completes the log with any stored report it
    /// lacks.
    pub fn open(data_dir: &Path, identity: LogIdentity) -> Result<FileArchive, ArchiveError> {
        let gw_dir = data_dir.join("gateways");
        create_dir_all_durable(&gw_dir).map_err(io(&gw_dir))?;
        let log_dir = data_dir.join("log");
        create_dir_all_durable(&log_dir).map_err(io(&log_dir))?;
        let mut st = State::default();
        let mut names: Vec<String> = Vec::new();
        for e in fs::read_dir(&gw_dir).map_err(io(&gw_dir))? {
            let e = e.map_err(io(&gw_dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if safe_gateway(&name) && e.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        let mut loaded: Vec<(Hash, String, u64, usize, VerifiedReport)> = Vec::new();
        for name in names {
            let dir = gw_dir.join(&name);
            let mut seqs: Vec<u64> = Vec::new();
            for f in fs::read_dir(&dir).map_err(io(&dir))? {
                let f = f.map_err(io(&dir))?;
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
                let path = dir.join(format!("{}.jws", stem(seq)));
                let bytes = fs::read(&path).map_err(io(&path))?;
                let v = parse_stored(&bytes, &path.display().to_string())?;
                if v.seq() != seq || v.gateway() != name {
                    return Err(ArchiveError::Corrupt {
                        what: path.display().to_string(),
                        why: format!("file holds {} seq {}", v.gateway(), v.seq()),
                    });
                }
                chain.head = Some(ChainHead::of(&v, chain.head.as_ref()));
                chain.readings += v.report.readings.count;
                st.by_hash.insert(v.hash, (name.clone(), seq));
                st.by_id.insert(v.id().to_string(), (name.clone(), seq));
                st.kid_gateway.insert(v.kid.clone(), name.clone());
                st.index(&v);
                loaded.push((v.hash, name.clone(), seq, bytes.len(), v));
            }
            st.chains.insert(name, chain);
        }
        // The log, cut back to whole entries.
        let entries_path = log_dir.join("entries");
        let raw = match fs::read(&entries_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&entries_path)(e)),
        };
        let whole = raw.len() / 32 * 32;
        if whole != raw.len() {
            tracing::warn!(
                path = %entries_path.display(),
                "log ends in a torn entry (crash mid-append); cut back to {} entries",
                whole / 32
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&entries_path)
                .map_err(io(&entries_path))?;
            f.set_len(whole as u64).map_err(io(&entries_path))?;
            f.sync_all().map_err(io(&entries_path))?;
        }
        for chunk in raw[..whole].chunks_exact(32) {
            let entry: Hash = chunk.try_into().expect("chunks of 32 bytes");
            if !st.by_hash.contains_key(&entry) {
                return Err(ArchiveError::Corrupt {
                    what: entries_path.display().to_string(),
                    why: format!("log entry {} is not a stored report", hex(&entry)),
                });
            }
            st.log.append(entry);
        }
        let mut missing = Vec::new();
        for (hash, name, seq, len, v) in loaded {
            if !st.log.index_of.contains_key(&hash) {
                missing.extend_from_slice(&hash);
                st.log.append(hash);
                tracing::warn!(gateway = %name, seq, "stored report had no log entry (crash before the append); added");
            }
            let index = st.log.index_of[&hash];
            st.chains
                .get_mut(&name)
                .expect("chain created above")
                .entries
                .insert(seq, Entry::of(&v, len, index));
        }
        if !missing.is_empty() {
            append_durable(&entries_path, &missing)?;
        }
        let flags_path = data_dir.join("flags.jsonl");
        match fs::read_to_string(&flags_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    // A torn last line (crash mid-append) is skipped.
                    if let Ok(f) = serde_json::from_str::<Flag>(line) {
                        st.chains.entry(f.gateway.clone()).or_default();
                        st.flags.push(f);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&flags_path)(e)),
        }
        load_registry(&data_dir.join("registry.jsonl"), &mut st)?;
        Ok(FileArchive {
            inner: Arc::new(Inner {
                dir: data_dir.to_path_buf(),
                identity,
                state: Mutex::new(st),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The blocking work of [`Archive::commit`].
    fn commit_blocking(
        &self,
        bytes: &[u8],
        v: &VerifiedReport,
        now_ms: u64,
        trust: &Trust,
        key: &KeySource,
    ) -> Result<ItemResult, ArchiveError> {
        let inner = &self.inner;
        let mut st = self.lock();
        if !safe_gateway(v.gateway()) {
            return Ok(ItemResult::rejected(
                Some(v),
                "malformed",
                format!("gateway id {:?} is not a valid id", v.gateway()),
            ));
        }
        let view = RegistryView::of(
            &st.registry,
            &v.kid,
            v.gateway(),
            v.report.header.site.as_str(),
        );
        if let Err(r) = crate::registry::admit(&view, trust, v, key) {
            return Ok(ItemResult::rejected(Some(v), r.reason, r.detail));
        }
        let gw = v.gateway().to_string();
        let chain = st.chains.get(&gw);
        let view = ChainView {
            head: chain.and_then(|c| c.head.clone()),
            stored_at_seq: chain
                .and_then(|c| c.entries.get(&v.seq()))
                .map(|e| mrv_shared::tlog::receipt::parse_hash(&e.hash).expect("own hex")),
            kid_gateway: st.kid_gateway.get(&v.kid).cloned(),
        };
        match decide(&view, v) {
            Decision::Duplicate => Ok(st
                .duplicate(&inner.identity, &v.hash)?
                .expect("stored at its seq, so known by hash")),
            Decision::Equivocation { stored } => {
                let flag = Flag::equivocation(v, &stored, now_ms);
                self.record_equivocation(&flag, bytes)?;
                tracing::error!(gateway = %gw, seq = v.seq(), stored = %flag.stored_hash, offered = %flag.offered_hash,
                    "EQUIVOCATION: gateway signed two different reports with one seq; rejected and flagged");
                st.chains.entry(gw).or_default();
                st.flags.push(flag);
                Ok(ItemResult::equivocation(v))
            }
            Decision::Reject { reason, detail } => {
                Ok(ItemResult::rejected(Some(v), reason, detail))
            }
            Decision::Accept { head, .. } => {
                let dir = inner.dir.join("gateways").join(&gw);
                // A new gateway's directory: its name must be durable
                // before the report in it is acknowledged (found by the
                // power-cut test: the whole directory vanished).
                create_dir_all_durable(&dir).map_err(io(&dir))?;
                write_durable(&dir, &format!("{}.jws", stem(v.seq())), bytes)?;
                append_durable(&inner.dir.join("log").join("entries"), &v.hash)?;
                let index = st.log.append(v.hash);
                let chain = st.chains.entry(gw.clone()).or_default();
                chain.head = Some(head);
                chain.readings += v.report.readings.count;
                chain
                    .entries
                    .insert(v.seq(), Entry::of(v, bytes.len(), index));
                st.by_hash.insert(v.hash, (gw.clone(), v.seq()));
                st.by_id.insert(v.id().to_string(), (gw.clone(), v.seq()));
                st.kid_gateway.insert(v.kid.clone(), gw);
                st.index(v);
                let receipt = st.receipt(&inner.identity, &v.hash)?;
                Ok(ItemResult::stored(
                    ItemStatus::Accepted,
                    v.id(),
                    v.seq(),
                    receipt,
                ))
            }
        }
    }

    /// The blocking work of [`Archive::registry_change`].
    fn registry_change_blocking(
        &self,
        change: &Change,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<AuditRecord, RegistryError>, ArchiveError> {
        let mut st = self.lock();
        let taken = change
            .new_kid()
            .is_some_and(|k| st.registry.kid_owner(k).is_some());
        let last_seq = change
            .gateway()
            .and_then(|g| st.chains.get(g))
            .and_then(|c| c.head.as_ref())
            .map_or(0, |h| h.seq);
        let mut next = st.registry.clone();
        let (change, last_seq_accepted) = match next.apply(change, actor, now_ms, last_seq, taken) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        let record = AuditRecord {
            seq: st.audit.len() as u64 + 1,
            time: rfc3339(now_ms),
            time_ms: now_ms,
            actor: actor.to_string(),
            change,
            last_seq_accepted,
        };
        let mut line = serde_json::to_vec(&record).expect("an audit record serialises");
        line.push(b'\n');
        append_durable(&self.inner.dir.join("registry.jsonl"), &line)?;
        st.registry = next;
        st.audit.push(record.clone());
        Ok(Ok(record))
    }

    fn record_equivocation(&self, flag: &Flag, bytes: &[u8]) -> Result<(), ArchiveError> {
        let ev = self.evidence_dir(&flag.gateway);
        create_dir_all_durable(&ev).map_err(io(&ev))?;
        write_durable(
            &ev,
            &format!("{}-{}.jws", stem(flag.seq), flag.offered_hash),
            bytes,
        )?;
        let mut line = serde_json::to_vec(flag).expect("a flag serialises");
        line.push(b'\n');
        append_durable(&self.inner.dir.join("flags.jsonl"), &line)
    }

    fn evidence_dir(&self, gateway: &str) -> PathBuf {
        self.inner
            .dir
            .join("gateways")
            .join(gateway)
            .join("evidence")
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(FileArchive) -> Result<T, ArchiveError> + Send + 'static,
    ) -> Result<T, ArchiveError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me))
            .await
            .map_err(|e| ArchiveError::Database(format!("archive task: {e}")))?
    }
}

impl Archive for FileArchive {
    async fn duplicate(&self, hash: Hash) -> Result<Option<ItemResult>, ArchiveError> {
        let mut st = self.lock();
        st.duplicate(&self.inner.identity, &hash)
    }

    async fn commit(
        &self,
        bytes: &[u8],
        v: &VerifiedReport,
        now_ms: u64,
        admission: &Admission<'_>,
    ) -> Result<ItemResult, ArchiveError> {
        let (bytes, v) = (bytes.to_vec(), v.clone());
        let (trust, key) = (admission.trust.clone(), admission.key.clone());
        self.blocking(move |a| a.commit_blocking(&bytes, &v, now_ms, &trust, &key))
            .await
    }

    async fn registry_view(
        &self,
        kid: &str,
        gateway: &str,
        site: &str,
    ) -> Result<RegistryView, ArchiveError> {
        Ok(RegistryView::of(&self.lock().registry, kid, gateway, site))
    }

    async fn registry_change(
        &self,
        change: &Change,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<AuditRecord, RegistryError>, ArchiveError> {
        let (change, actor) = (change.clone(), actor.to_string());
        self.blocking(move |a| a.registry_change_blocking(&change, &actor, now_ms))
            .await
    }

    async fn registry(&self) -> Result<Registry, ArchiveError> {
        Ok(self.lock().registry.clone())
    }

    async fn registry_history(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ArchiveError> {
        Ok(self
            .lock()
            .audit
            .iter()
            .filter(|r| r.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn fetch(&self, report_id: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Some((gw, seq)) = self.lock().by_id.get(report_id).cloned() else {
            return Ok(None);
        };
        let path = self
            .inner
            .dir
            .join("gateways")
            .join(gw)
            .join(format!("{}.jws", stem(seq)));
        self.blocking(move |_| fs::read(&path).map(Some).map_err(io(&path)))
            .await
    }

    async fn receipt(&self, report_id: &str) -> Result<Option<Receipt>, ArchiveError> {
        let mut st = self.lock();
        let Some((gw, seq)) = st.by_id.get(report_id).cloned() else {
            return Ok(None);
        };
        let hash = st.chains[&gw].entries[&seq].hash.clone();
        let hash = mrv_shared::tlog::receipt::parse_hash(&hash).expect("own hex");
        st.receipt(&self.inner.identity, &hash).map(Some)
    }

    async fn gateways(&self) -> Result<Vec<String>, ArchiveError> {
        Ok(self.lock().chains.keys().cloned().collect())
    }

    async fn chain_status(&self, gateway: &str) -> Result<Option<ChainStatus>, ArchiveError> {
        let st = self.lock();
        let Some(c) = st.chains.get(gateway) else {
            return Ok(None);
        };
        Ok(Some(ChainStatus {
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
        }))
    }

    async fn list(
        &self,
        gateway: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>, ArchiveError> {
        let st = self.lock();
        Ok(st.chains.get(gateway).map(|c| {
            c.entries
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }

    async fn flags(&self) -> Result<Vec<Flag>, ArchiveError> {
        Ok(self.lock().flags.clone())
    }

    async fn evidence(&self, offered_hash: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Some(flag) = self
            .lock()
            .flags
            .iter()
            .find(|f| f.offered_hash == offered_hash)
            .cloned()
        else {
            return Ok(None);
        };
        let path = self.evidence_dir(&flag.gateway).join(format!(
            "{}-{}.jws",
            stem(flag.seq),
            flag.offered_hash
        ));
        self.blocking(move |_| fs::read(&path).map(Some).map_err(io(&path)))
            .await
    }

    async fn checkpoint(&self) -> Result<String, ArchiveError> {
        Ok(self.lock().signed_checkpoint(&self.inner.identity))
    }

    async fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof, ArchiveError> {
        let st = self.lock();
        let size = st.log.size();
        if old > new || new > size {
            return Err(ArchiveError::Log(format!(
                "no consistency proof from {old} to {new}: the log has {size} entries"
            )));
        }
        let proof = st.log.hashes(&consistency_ranges(old, new))?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            proof: hex_hashes(&proof),
        })
    }

    async fn ledger(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>, ArchiveError> {
        Ok(self
            .lock()
            .ledger
            .values()
            .filter(|e| q.overlaps(e))
            .cloned()
            .collect())
    }

    async fn ledger_page(
        &self,
        q: &LedgerQuery,
        after: Option<&LedgerKey>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, ArchiveError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let state = self.lock();
        let from = match after {
            Some(k) => Excluded((k.site.clone(), k.gateway.clone(), k.seq)),
            None => Unbounded,
        };
        Ok(state
            .ledger
            .range((from, Unbounded))
            .map(|(_, e)| e)
            .filter(|e| q.overlaps(e))
            .take(limit)
            .cloned()
            .collect())
    }
}
