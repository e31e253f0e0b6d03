//! The report store: signed reports on disk, the chain head, and delivery
//! state for the uploader.
//!
//! ## On-disk format
//!
//! Directory `<data_dir>/reports/`:
//!
//! | file | content |
//! |---|---|
//! | `000000000042.jws` | the signed report, byte for byte (compact JWS) |
//! | `000000000042.meta.json` | [`ReportMeta`]: seq, hash, period, buffer cursor and last event id the report covers |
//! | `delivered.json` | `{"delivered_upto": N}`: every report with seq <= N was accepted by the backend |
//!
//! ## Invariants
//!
//! - **A seq is written once.** [`ReportStore::put`] refuses a seq that is not
//!   `head + 1`; every file is written to a temporary name, fsynced, renamed
//!   and the directory fsynced, the meta file before the report. A report
//!   exists when its `.jws` exists (a `.meta.json` alone is a leftover of a
//!   crash and is overwritten). So a crash while building never leaves two
//!   different reports with one seq: either the report is on disk (and is
//!   reused: the next build is `seq + 1`), or it is not (and is built again).
//! - **The head is the highest stored seq**; seqs are gap-free from the
//!   oldest kept report (pruning removes a delivered prefix only).
//! - `delivered_upto` only grows and never passes the head.
//! - **No leftovers.** A failed write removes its `.<name>.tmp`; a crash
//!   mid-write leaves one, which the next [`ReportStore::open`] removes.

use mrv_shared::report::hex;
use mrv_shared::report::model::Period;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where in the buffer a report ends (mirror of the buffer's `FrameKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorMeta {
    /// Batch id.
    pub batch: u64,
    /// Index in the batch.
    pub index: u32,
}

/// Sidecar of a stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeta {
    /// Seq.
    pub seq: u64,
    /// Report id.
    pub report_id: String,
    /// Hex SHA-256 of the stored bytes.
    pub hash: String,
    /// Period.
    pub period: Period,
    /// Last buffer frame this report (or an earlier one) covers.
    pub cursor: Option<CursorMeta>,
    /// Last buffer event id this report (or an earlier one) covers.
    pub last_event_id: Option<u64>,
    /// Readings in the report.
    pub readings: u64,
    /// Exact ER of each calculation (tCO2e, `n` or `n/d`), by calculation id.
    #[serde(default)]
    pub er: std::collections::BTreeMap<String, String>,
    /// Every counter baseline the next report starts from (including those
    /// of series this report has no sample of, which the report itself
    /// cannot say), so a restart continues the chain exactly. `None` in
    /// sidecars written before it existed.
    #[serde(default)]
    pub next_baselines: Option<Vec<BaselineMeta>>,
}

/// One counter baseline: the last usable point of a (device, channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineMeta {
    /// Device.
    pub device: mrv_shared::ids::DeviceId,
    /// Channel.
    pub channel: mrv_shared::ids::ChannelId,
    /// The point.
    pub point: mrv_shared::report::model::Point,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Delivered {
    delivered_upto: u64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error.
    #[error("report store {path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A meta file that does not parse.
    #[error("report store {path}: {why}")]
    Corrupt {
        /// Path concerned.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A seq other than head + 1 was offered.
    #[error("report seq {offered} cannot follow head {head}")]
    OutOfOrder {
        /// Offered seq.
        offered: u64,
        /// Current head (0 = none).
        head: u64,
    },
    /// Delivery marked past the head.
    #[error("cannot mark seq {0} delivered: no such report")]
    NoSuchReport(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct State {
    head: Option<ReportMeta>,
    oldest: Option<u64>,
    delivered_upto: u64,
}

/// The report store (see the module doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReportStore {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

/// File name stem of a seq.
pub fn file_stem(seq: u64) -> String {
    format!("{seq:012}")
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, dir fsync).
/// A failed write (e.g. ENOSPC) removes its temporary file again.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(io(&tmp));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &dst) {
        let _ = fs::remove_file(&tmp);
        return Err(io(&dst)(e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Removes the temporary files a crash in [`write_atomic`] leaves behind
/// (`.<name>.tmp`; never renamed, so never part of the store). Returns
/// their names.
fn remove_leftover_tmp(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            fs::remove_file(e.path()).map_err(io(&e.path()))?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        tracing::warn!(dir = %dir.display(), files = ?removed, "report store: removed temporary files left by an interrupted write");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(removed)
}

impl ReportStore {
    /// Opens (creating) `<data_dir>/reports`.
    pub fn open(data_dir: &Path) -> Result<ReportStore, StoreError> {
        let dir = data_dir.join("reports");
        // Durable names up to here, so a power cut cannot take the
        // directory (and every report later written to it) away.
        mrv_shared::durable_dir::create_dir_all_durable(&dir).map_err(io(&dir))?;
        remove_leftover_tmp(&dir)?;
        let mut seqs = Vec::new();
        for e in fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".jws")
                && let Ok(seq) = stem.parse::<u64>()
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let delivered_path = dir.join("delivered.json");
        let delivered_upto = match fs::read(&delivered_path) {
            Ok(b) => {
                serde_json::from_slice::<Delivered>(&b)
                    .map_err(|e| StoreError::Corrupt {
                        path: delivered_path.clone(),
                        why: e.to_string(),
                    })?
                    .delivered_upto
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&delivered_path)(e)),
        };
        let store = ReportStore {
            dir,
            state: Arc::new(Mutex::new(State {
                head: None,
                oldest: seqs.first().copied(),
                delivered_upto,
            })),
        };
        if let Some(&last) = seqs.last() {
            let meta = store.meta(last)?;
            store.lock().head = Some(meta);
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a report's file.
    pub fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{}.jws", file_stem(seq)))
    }

    /// The newest stored report's meta.
    pub fn head(&self) -> Option<ReportMeta> {
        self.lock().head.clone()
    }

    /// Meta of a stored report.
    pub fn meta(&self, seq: u64) -> Result<ReportMeta, StoreError> {
        let p = self.dir.join(format!("{}.meta.json", file_stem(seq)));
        let b = fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
            path: p,
            why: e.to_string(),
        })
    }

    /// Bytes of a stored report.
    pub fn read(&self, seq: u64) -> Result<Vec<u8>, StoreError> {
        let p = self.path(seq);
        fs::read(&p).map_err(io(&p))
    }

    /// Stores report `meta.seq` (must be head + 1) durably.
    pub fn put(&self, meta: &ReportMeta, bytes: &[u8]) -> Result<(), StoreError> {
        let mut st = self.lock();
        let head = st.head.as_ref().map_or(0, |h| h.seq);
        if meta.seq != head + 1 {
            return Err(StoreError::OutOfOrder {
                offered: meta.seq,
                head,
            });
        }
        let stem = file_stem(meta.seq);
        let meta_bytes = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Corrupt {
            path: self.dir.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&self.dir, &format!("{stem}.meta.json"), &meta_bytes)?;
        write_atomic(&self.dir, &format!("{stem}.jws"), bytes)?;
        st.head = Some(meta.clone());
        st.oldest.get_or_insert(meta.seq);
        Ok(())
    }

    /// Seqs stored but not yet delivered, oldest first (for the uploader).
    pub fn undelivered(&self) -> Vec<u64> {
        let st = self.lock();
        let Some(head) = &st.head else {
            return Vec::new();
        };
        let from = st
            .delivered_upto
            .max(st.oldest.unwrap_or(1).saturating_sub(1))
            + 1;
        (from..=head.seq).collect()
    }

    /// Highest seq the backend accepted (0 = none).
    pub fn delivered_upto(&self) -> u64 {
        self.lock().delivered_upto
    }

    /// Marks every report up to `seq` delivered (durable; no-op if not forward).
    pub fn mark_delivered(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        if seq <= st.delivered_upto {
            return Ok(());
        }
        if st.head.as_ref().is_none_or(|h| seq > h.seq) {
            return Err(StoreError::NoSuchReport(seq));
        }
        let b = serde_json::to_vec(&Delivered {
            delivered_upto: seq,
        })
        .expect("a struct of one integer serialises");
        write_atomic(&self.dir, "delivered.json", &b)?;
        st.delivered_upto = seq;
        Ok(())
    }

    /// Deletes delivered reports whose period ended before `older_than_ms`,
    /// oldest first, always keeping the head (the chain continues from it).
    /// Returns how many were deleted.
    pub fn prune(&self, older_than_ms: u64) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let Some(head) = st.head.clone() else {
            return Ok(0);
        };
        let mut n = 0;
        let mut seq = st.oldest.unwrap_or(1);
        while seq <= st.delivered_upto && seq < head.seq {
            let meta = self.meta(seq)?;
            if meta.period.end_ms >= older_than_ms {
                break;
            }
            let stem = file_stem(seq);
            let jws = self.dir.join(format!("{stem}.jws"));
            fs::remove_file(&jws).map_err(io(&jws))?;
            let m = self.dir.join(format!("{stem}.meta.json"));
            fs::remove_file(&m).map_err(io(&m))?;
            n += 1;
            seq += 1;
            st.oldest = Some(seq);
        }
        if n > 0 {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(n)
    }
}

/// Hex hash helper for metas.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64) -> ReportMeta {
        ReportMeta {
            seq,
            report_id: format!("gw-{seq}"),
            hash: String::new(),
            period: Period {
                start_ms: seq * 10,
                end_ms: seq * 10 + 10,
            },
            cursor: None,
            last_event_id: None,
            readings: 0,
            er: Default::default(),
            next_baselines: None,
        }
    }

    #[test]
    fn seqs_are_written_once_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReportStore::open(dir.path()).expect("open");
        assert!(s.head().is_none());
        s.put(&meta(1), b"one").expect("put 1");
        assert!(matches!(
            s.put(&meta(1), b"again"),
            Err(StoreError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.put(&meta(3), b"three"),
            Err(StoreError::OutOfOrder { .. })
        ));
        s.put(&meta(2), b"two").expect("put 2");
        // A leftover meta without report (crash between the two renames).
        fs::write(s.dir().join("000000000003.meta.json"), b"{}").expect("write");
        let s = ReportStore::open(dir.path()).expect("reopen");
        assert_eq!(s.head().map(|h| h.seq), Some(2));
        assert_eq!(s.read(1).expect("read"), b"one");
        s.put(&meta(3), b"three").expect("put 3 over the leftover");
        assert_eq!(s.meta(3).expect("meta"), meta(3));
    }

    #[test]
    fn temporary_files_of_an_interrupted_write_are_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReportStore::open(dir.path()).expect("open");
        s.put(&meta(1), b"one").expect("put 1");
        fs::write(s.dir().join(".000000000002.jws.tmp"), b"").expect("write");
        fs::write(s.dir().join(".delivered.json.tmp"), b"{").expect("write");
        let s = ReportStore::open(dir.path()).expect("reopen");
        let mut names: Vec<String> = fs::read_dir(s.dir())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["000000000001.jws", "000000000001.meta.json"]);
        // A write that cannot create its file leaves nothing either.
        assert!(write_atomic(&dir.path().join("missing"), "x", b"y").is_err());
    }

    #[test]
    fn delivery_is_durable_and_prune_keeps_the_head_and_undelivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReportStore::open(dir.path()).expect("open");
        for i in 1..=4 {
            s.put(&meta(i), b"r").expect("put");
        }
        assert_eq!(s.undelivered(), vec![1, 2, 3, 4]);
        assert!(s.mark_delivered(5).is_err());
        s.mark_delivered(2).expect("mark");
        s.mark_delivered(1).expect("no-op backwards");
        let s = ReportStore::open(dir.path()).expect("reopen");
        assert_eq!(s.undelivered(), vec![3, 4]);
        s.mark_delivered(4).expect("mark");
        assert_eq!(s.prune(u64::MAX).expect("prune"), 3);
        assert!(s.read(1).is_err());
        assert_eq!(s.read(4).expect("head kept"), b"r");
        assert!(s.undelivered().is_empty());
    }
}
