//! [`Buffer`]: the sled-backed store described in the parent module.
//!
//! All writes (append, cursors, events, prune) take one mutex, build one
//! sled batch, apply it atomically to the tree and flush before returning;
//! the in-memory bookkeeping is updated only after the flush succeeded.
//! Reads of data (`scan`, `events_after`) go to sled directly without the
//! lock. The per-frame decisions are made by [`SeqState`]
//! (`buffer/ledger.rs`); this file only moves bytes.

use super::ledger::{Decision, SeqRanges, SeqState};
use super::record::{
    self, BatchWriter, CursorRecord, DeviceRecord, ENTRY_HEADER_LEN, ID_KEY_LEN, RecordError,
    Totals,
};
use super::sled_files::{self, Repair};
use super::{
    AppendOutcome, AppendResult, BufferConfig, BufferStats, CursorName, DeviceSummary, FrameKey,
    FrameRefusal, Incoming, PruneStats, StoreError, StoredFrame, TARGET_BATCH_BYTES,
    VerifiedDevice, VerifyProblem, VerifyReport,
};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::DeviceId;
use mrv_shared::wire::binary::{decode_frame_exact, encode_frame};
use mrv_shared::wire::{Ack, AckStatus, MAX_FRAME_BYTES};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use tracing::{info, warn};

/// Name of the sled tree that holds everything (layout version 1).
const TREE: &str = "buffer.v1";
/// How long `open` retries while sled's file lock is still held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most batches deleted per sled batch while pruning.
const PRUNE_CHUNK: usize = 1024;

/// The durable buffer. Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("path", &self.inner.cfg.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: BufferConfig,
    /// sled's handles; `None` while [`Buffer::reopen`] has closed them and
    /// not yet opened them again (every disk access then fails `Poisoned`).
    sled: RwLock<Option<Arc<SledHandles>>>,
    state: Mutex<State>,
}

/// One opening of the sled database.
struct SledHandles {
    db: sled::Db,
    /// sled's log file, opened again only to `fdatasync` it: sled 0.34 on
    /// Linux writes its log with `sync_file_range`, which neither persists
    /// the file size nor flushes the drive's write cache.
    log_file: std::fs::File,
    tree: sled::Tree,
}

/// A device's bookkeeping in memory.
#[derive(Debug, Clone, Default)]
struct DeviceEntry {
    seq: SeqState,
    frames: u64,
    readings: u64,
    first_received_ms: Option<u64>,
    last_received_ms: Option<u64>,
}

impl DeviceEntry {
    fn from_record(r: DeviceRecord) -> Self {
        DeviceEntry {
            seq: SeqState::from_parts(r.contiguous, r.boot, r.above),
            frames: r.frames,
            readings: r.readings,
            first_received_ms: r.first_received_ms,
            last_received_ms: r.last_received_ms,
        }
    }

    fn to_record(&self) -> DeviceRecord {
        DeviceRecord {
            contiguous: self.seq.contiguous(),
            boot: self.seq.boot(),
            above: self.seq.above().to_vec(),
            frames: self.frames,
            readings: self.readings,
            first_received_ms: self.first_received_ms,
            last_received_ms: self.last_received_ms,
        }
    }

    fn summary(&self, device: &DeviceId) -> DeviceSummary {
        DeviceSummary {
            device: device.clone(),
            acked_seq: self.seq.contiguous(),
            highest_seq: self.seq.highest(),
            boot: self.seq.boot(),
            frames: self.frames,
            readings: self.readings,
            first_received_ms: self.first_received_ms,
            last_received_ms: self.last_received_ms,
            gaps: self.seq.gaps(),
        }
    }
}

struct State {
    /// What open repaired in sled's files (see `sled_files`).
    repairs: Vec<Repair>,
    devices: BTreeMap<DeviceId, DeviceEntry>,
    totals: Totals,
    reported: Option<CursorRecord>,
    delivered: Option<CursorRecord>,
    events_delivered: Option<u64>,
    last_key: Option<FrameKey>,
    oldest_unreported_ms: Option<u64>,
    full: bool,
    full_events: u64,
    poisoned: bool,
    /// Set from outside (the free-space watch): the file system is nearly
    /// full, so new frames are refused like in a full buffer.
    space_low: bool,
    /// Highest sled blob file (named by its log sequence number) known to
    /// be fsynced.
    synced_blob: i64,
}

fn corrupt(key: impl Into<String>) -> impl FnOnce(RecordError) -> StoreError {
    let key = key.into();
    move |source| StoreError::Corrupt { key, source }
}

fn data_range() -> std::ops::RangeInclusive<[u8; ID_KEY_LEN]> {
    record::batch_key(0)..=record::batch_key(u64::MAX)
}

fn event_range(from: u64) -> std::ops::RangeInclusive<[u8; ID_KEY_LEN]> {
    record::event_key(from)..=record::event_key(u64::MAX)
}

fn readings_of(frame: &mrv_shared::wire::Frame) -> u32 {
    u32::try_from(frame.samples.len()).expect("at most MAX_SAMPLES samples")
}

impl Buffer {
    /// Opens (or creates) the buffer at `cfg.path`. Reads only the totals,
    /// cursors, device records and the last batch: no data scan.
    pub fn open(cfg: BufferConfig) -> Result<Buffer, StoreError> {
        let (handles, state) = Self::open_parts(&cfg)?;
        Ok(Buffer {
            inner: Arc::new(Inner {
                cfg,
                sled: RwLock::new(Some(Arc::new(handles))),
                state: Mutex::new(state),
            }),
        })
    }

    /// Opens sled at `cfg.path` (repairing its files first) and reads the
    /// bookkeeping: what [`Buffer::open`] and [`Buffer::reopen`] share.
    fn open_parts(cfg: &BufferConfig) -> Result<(SledHandles, State), StoreError> {
        crate::durable_dir::create_dir_all_durable(&cfg.path).map_err(|source| {
            StoreError::Dir {
                path: cfg.path.clone(),
                source,
            }
        })?;
        let dir_err = |source| StoreError::Dir {
            path: cfg.path.clone(),
            source,
        };
        // What a crash or a full disk can leave in sled's own files
        // (see `sled_files`): removed before sled looks at them.
        // Only while holding sled's lock: a running gateway may be writing
        // a snapshot right now.
        let mut repairs = {
            let _lock = lock_sled_dir(&cfg.path)?;
            let repairs = sled_files::plan(&cfg.path).map_err(dir_err)?;
            for r in &repairs {
                warn!(path = %cfg.path.display(), repair = %r, "buffer repaired at open");
            }
            sled_files::apply(&cfg.path, &repairs).map_err(dir_err)?;
            repairs
        };
        let db = match open_sled(cfg) {
            Err(e @ sled::Error::Corruption { .. }) => {
                let _lock = lock_sled_dir(&cfg.path)?;
                let snaps = sled_files::snapshots(&cfg.path).map_err(dir_err)?;
                if snaps.is_empty() {
                    return Err(e.into());
                }
                for r in &snaps {
                    warn!(path = %cfg.path.display(), repair = %r, "sled refused its snapshot; replaying the whole log");
                }
                sled_files::apply(&cfg.path, &snaps).map_err(dir_err)?;
                repairs.extend(snaps);
                drop(_lock);
                open_sled(cfg)?
            }
            r => r?,
        };
        // sled never fsyncs directories: make its file names (db, conf,
        // blobs/, a new snapshot) and the buffer directory itself durable,
        // or a power cut could take the whole log with it.
        sled_files::sync_dir(&cfg.path).map_err(dir_err)?;
        if let Some(parent) = cfg.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sled_files::sync_dir(parent).map_err(dir_err)?;
        }
        let tree = db.open_tree(TREE)?;
        let log_path = cfg.path.join("db");
        let log_file = std::fs::File::open(&log_path).map_err(|source| StoreError::Dir {
            path: log_path,
            source,
        })?;
        let totals = match tree.get(record::TOTALS_KEY)? {
            Some(v) => Totals::decode(&v).map_err(corrupt("m/totals"))?,
            None => Totals::empty(),
        };
        let cursor = |key: &[u8], name: &str| -> Result<Option<CursorRecord>, StoreError> {
            tree.get(key)?
                .map(|v| CursorRecord::decode(&v).map_err(corrupt(name)))
                .transpose()
        };
        let reported = cursor(record::REPORTED_KEY, "m/cursor/reported")?;
        let delivered = cursor(record::DELIVERED_KEY, "m/cursor/delivered")?;
        let events_delivered = tree
            .get(record::EVENTS_DELIVERED_KEY)?
            .map(|v| record::decode_id(&v).map_err(corrupt("m/cursor/events_delivered")))
            .transpose()?;
        let mut devices = BTreeMap::new();
        for item in tree.scan_prefix([record::DEVICE_PREFIX]) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            let id = DeviceId::new(&name).map_err(|_| StoreError::Corrupt {
                key: format!("v:{name}"),
                source: RecordError::Inconsistent("device id in key"),
            })?;
            let rec = DeviceRecord::decode(&v).map_err(corrupt(format!("v:{name}")))?;
            devices.insert(id, DeviceEntry::from_record(rec));
        }
        let last_key = match tree.range(data_range()).next_back() {
            Some(item) => {
                let (k, v) = item?;
                let id = record::id_of_key(&k).expect("data range yields data keys");
                // A damaged last batch must not make the buffer unopenable
                // (`verify` needs to open it): its frame count is then
                // unknown, and cursors into it fail when set.
                let index = match record::parse_batch(&v) {
                    Ok(b) => b.header.count.saturating_sub(1),
                    Err(e) => {
                        warn!(batch = id, error = %e, "last buffer batch is damaged; run `buffer verify`");
                        u32::MAX
                    }
                };
                Some(FrameKey { batch: id, index })
            }
            None => None,
        };
        let oldest_unreported_ms = first_after(&tree, reported.map(|c| c.key))?.map(|(_, rx)| rx);
        let full = totals.kept_bytes >= cfg.max_bytes;
        if full {
            warn!(
                bytes = totals.kept_bytes,
                max_bytes = cfg.max_bytes,
                "buffer is full at start-up: new frames are refused until delivered data is pruned"
            );
        }
        let state = State {
            repairs,
            devices,
            totals,
            reported,
            delivered,
            events_delivered,
            last_key,
            oldest_unreported_ms,
            full,
            full_events: u64::from(full),
            poisoned: false,
            space_low: false,
            synced_blob: newest_blob(&cfg.path),
        };
        Ok((SledHandles { db, log_file, tree }, state))
    }

    /// Closes sled and opens it again from what is on disk, after a failed
    /// write (`Poisoned`). Before opening, every sled file is `fdatasync`ed
    /// and its cached pages are dropped (`POSIX_FADV_DONTNEED`): after a
    /// failed fsync the kernel may have marked unwritten pages clean, and
    /// reading them back from the page cache would make the buffer believe
    /// (and ack as duplicates) frames that are not on disk. So what the
    /// reopened buffer holds is what the disk holds or a successful fsync
    /// just wrote. Blocks writers meanwhile; fails (and may be called again)
    /// while the disk still fails, e.g. while it is full, or while a scan
    /// begun before keeps the old sled open for more than a moment.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut st = self.lock();
        st.poisoned = true;
        let old = self
            .inner
            .sled
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut old) = old {
            // Scans begun before hold the old sled for a moment.
            let started = std::time::Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(h) => {
                        drop(h);
                        break;
                    }
                    Err(a) if started.elapsed() < LOCK_WAIT => {
                        old = a;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        }
        let cfg = &self.inner.cfg;
        settle_page_cache(&cfg.path).map_err(|source| StoreError::Dir {
            path: cfg.path.clone(),
            source,
        })?;
        let (handles, mut fresh) = Self::open_parts(cfg)?;
        fresh.space_low = st.space_low;
        fresh.full_events += st.full_events;
        let mut repairs = std::mem::take(&mut st.repairs);
        repairs.append(&mut fresh.repairs);
        fresh.repairs = repairs;
        *st = fresh;
        *self
            .inner
            .sled
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(handles));
        info!(path = %cfg.path.display(), "buffer reopened from disk after a failed write");
        Ok(())
    }

    /// True while writes are refused after a failed one (until [`Buffer::reopen`]).
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// The free-space watch says the file system is nearly full (`true`):
    /// new frames are refused with `BufferFull` acks (devices keep them),
    /// duplicates are still acked; `false` accepts them again.
    pub fn set_space_low(&self, low: bool) {
        self.lock().space_low = low;
    }

    /// What [`Buffer::open`] (and any [`Buffer::reopen`] since) repaired in
    /// sled's files before sled could open them (empty after a clean
    /// shut-down). The runtime records a `buffer_repaired` event for each.
    pub fn repairs(&self) -> Vec<Repair> {
        self.lock().repairs.clone()
    }

    /// Takes the repairs not yet taken (for recording them as events once).
    pub fn take_repairs(&self) -> Vec<Repair> {
        std::mem::take(&mut self.lock().repairs)
    }

    fn sled(&self) -> Result<Arc<SledHandles>, StoreError> {
        self.inner
            .sled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Poisoned)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State is changed only by plain assignments after a successful
        // flush, so a panic elsewhere cannot leave it half-updated.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a sled batch and flushes; poisons the buffer on failure.
    fn commit(&self, st: &mut State, batch: sled::Batch) -> Result<(), StoreError> {
        let h = self.sled()?;
        let r = h
            .tree
            .apply_batch(batch)
            .and_then(|()| h.tree.flush().map(|_| ()))
            .map_err(StoreError::from)
            .and_then(|()| {
                h.log_file
                    .sync_data()
                    .and_then(|()| sync_new_blobs(&self.inner.cfg.path, &mut st.synced_blob))
                    .map_err(|e| StoreError::Sled(e.into()))
            });
        if let Err(e) = r {
            st.poisoned = true;
            warn!(error = %e, "buffer write failed; refusing writes until reopened");
            return Err(e);
        }
        Ok(())
    }

    /// One atomic write + flush for the whole batch; per-frame outcome in
    /// order. Frames whose seq is 0 get the next gateway-assigned seq for
    /// their device. When this returns `Ok`, stored frames are durable and
    /// the returned acks may be sent. An `Err` always leaves the buffer
    /// refusing writes ([`Buffer::is_poisoned`]) until [`Buffer::reopen`].
    pub fn append(&self, batch: Vec<Incoming>) -> Result<AppendResult, StoreError> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        // Refused for space: the byte limit, or the file system nearly full.
        let full = st.full || st.space_low;
        let mut totals = st.totals;
        let mut staged: BTreeMap<DeviceId, DeviceEntry> = BTreeMap::new();
        let mut dirty: Vec<DeviceId> = Vec::new();
        // Per device, in order of first appearance: (regressed, refused for space).
        let mut order: Vec<(DeviceId, bool, bool)> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut keys = Vec::with_capacity(batch.len());
        let mut stored = Vec::with_capacity(batch.len());
        let mut invalid = Vec::new();
        let mut values: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut writer: Option<BatchWriter> = None;
        let mut first_rx: Option<u64> = None;
        let mut max_rx = 0u64;

        for (
            index,
            Incoming {
                mut frame,
                received_ms,
            },
        ) in batch.into_iter().enumerate()
        {
            let pos = match order.iter().position(|(d, _, _)| *d == frame.device) {
                Some(p) => p,
                None => {
                    order.push((frame.device.clone(), false, false));
                    order.len() - 1
                }
            };
            if !staged.contains_key(&frame.device) {
                let e = st.devices.get(&frame.device).cloned().unwrap_or_default();
                staged.insert(frame.device.clone(), e);
            }
            let entry = staged.get_mut(&frame.device).expect("staged just above");
            let seq = match entry.seq.decide(frame.seq, frame.boot) {
                Decision::Duplicate => {
                    outcomes.push(AppendOutcome::Duplicate);
                    continue;
                }
                Decision::Regressed => {
                    order[pos].1 = true;
                    outcomes.push(AppendOutcome::Regressed);
                    continue;
                }
                Decision::OutOfOrder => {
                    outcomes.push(AppendOutcome::OutOfOrder);
                    continue;
                }
                Decision::Store(_) if full => {
                    order[pos].2 = true;
                    outcomes.push(AppendOutcome::BufferFull);
                    continue;
                }
                Decision::Store(seq) => seq,
            };
            frame.seq = seq;
            if let Err(reason) = frame.validate() {
                invalid.push((index, FrameRefusal::BreaksRules(reason)));
                outcomes.push(AppendOutcome::Invalid);
                continue;
            }
            let bytes = encode_frame(&frame);
            if bytes.len() > MAX_FRAME_BYTES {
                invalid.push((index, FrameRefusal::TooLarge { len: bytes.len() }));
                outcomes.push(AppendOutcome::Invalid);
                continue;
            }
            let readings = readings_of(&frame);
            let w = match writer.take() {
                Some(w)
                    if w.count() > 0
                        && w.value_len() + ENTRY_HEADER_LEN + bytes.len() > TARGET_BATCH_BYTES =>
                {
                    let id = totals.next_batch_id;
                    let v = w.finish();
                    totals.kept_bytes += (v.len() + ID_KEY_LEN) as u64;
                    totals.next_batch_id += 1;
                    values.push((id, v));
                    writer.insert(BatchWriter::new(totals.cum_frames, totals.cum_readings))
                }
                Some(w) => writer.insert(w),
                None => writer.insert(BatchWriter::new(totals.cum_frames, totals.cum_readings)),
            };
            keys.push(FrameKey {
                batch: totals.next_batch_id,
                index: w.count(),
            });
            w.push(received_ms, &bytes, readings);
            totals.cum_frames += 1;
            totals.cum_readings += u64::from(readings);
            totals.kept_frames += 1;
            totals.kept_readings += u64::from(readings);
            entry.seq.record(seq, frame.boot);
            entry.frames += 1;
            entry.readings += u64::from(readings);
            entry.first_received_ms.get_or_insert(received_ms);
            entry.last_received_ms = Some(received_ms);
            if !dirty.contains(&frame.device) {
                dirty.push(frame.device.clone());
            }
            first_rx.get_or_insert(received_ms);
            max_rx = max_rx.max(received_ms);
            outcomes.push(AppendOutcome::Stored);
            stored.push(Incoming { frame, received_ms });
        }
        if let Some(w) = writer.take() {
            let id = totals.next_batch_id;
            let v = w.finish();
            totals.kept_bytes += (v.len() + ID_KEY_LEN) as u64;
            totals.next_batch_id += 1;
            values.push((id, v));
        }

        let becomes_full = !full && totals.kept_bytes >= self.inner.cfg.max_bytes;
        if !values.is_empty() {
            let mut b = sled::Batch::default();
            for (id, v) in &values {
                b.insert(&record::batch_key(*id), v.as_slice());
            }
            for d in &dirty {
                let e = staged.get(d).expect("dirty devices are staged");
                b.insert(record::device_key(d), e.to_record().encode());
            }
            let full_event = becomes_full.then(|| {
                let ev = self.full_event(&totals, max_rx);
                let id = totals.next_event_id;
                totals.next_event_id += 1;
                (id, ev)
            });
            if let Some((id, ev)) = &full_event {
                b.insert(&record::event_key(*id), encode_event(ev));
            }
            b.insert(record::TOTALS_KEY, totals.encode());
            self.commit(&mut st, b)?;
            for d in dirty {
                let e = staged.remove(&d).expect("dirty devices are staged");
                st.devices.insert(d, e);
            }
            st.totals = totals;
            st.last_key = keys.last().copied().or(st.last_key);
            if st.oldest_unreported_ms.is_none() {
                st.oldest_unreported_ms = first_rx;
            }
            if becomes_full {
                st.full = true;
                st.full_events += 1;
                warn!(
                    bytes = totals.kept_bytes,
                    max_bytes = self.inner.cfg.max_bytes,
                    "buffer is full: new frames are refused (devices keep them) until delivered data is pruned"
                );
            }
        }

        let acks = order
            .into_iter()
            .map(|(d, regressed, refused)| {
                let acked_seq = staged
                    .get(&d)
                    .or_else(|| st.devices.get(&d))
                    .map_or(0, |e| e.seq.contiguous());
                let status = if regressed {
                    AckStatus::SeqRegressed
                } else if refused {
                    AckStatus::BufferFull
                } else {
                    AckStatus::Ok
                };
                (d, Ack { acked_seq, status })
            })
            .collect();
        Ok(AppendResult {
            outcomes,
            acks,
            keys,
            stored,
            invalid,
        })
    }

    fn full_event(&self, totals: &Totals, time_ms: u64) -> Event {
        Event {
            time_ms,
            kind: EventKind::BufferFull,
            device: None,
            seqs: None,
            detail: format!(
                "buffer holds {} bytes, limit {}: new frames are refused until delivered data is pruned",
                totals.kept_bytes, self.inner.cfg.max_bytes
            ),
        }
    }

    /// The ack a device would get now: its highest contiguous stored seq,
    /// `BufferFull` while the buffer refuses new frames, else `Ok`.
    pub fn ack_for(&self, device: &DeviceId) -> Ack {
        let st = self.lock();
        Ack {
            acked_seq: st.devices.get(device).map_or(0, |e| e.seq.contiguous()),
            status: if st.full || st.space_low {
                AckStatus::BufferFull
            } else {
                AckStatus::Ok
            },
        }
    }

    /// Every device's bookkeeping, by id.
    pub fn devices(&self) -> Vec<DeviceSummary> {
        let st = self.lock();
        st.devices.iter().map(|(d, e)| e.summary(d)).collect()
    }

    /// Buffer-wide figures; no data is read.
    pub fn stats(&self) -> BufferStats {
        // File metadata reads: outside the lock.
        let disk_bytes = self.sled().map_or(0, |h| h.db.size_on_disk().unwrap_or(0));
        let st = self.lock();
        let t = &st.totals;
        let (unreported_frames, unreported_readings) = match &st.reported {
            Some(c) => (t.cum_frames - c.cum_frames, t.cum_readings - c.cum_readings),
            None => (t.kept_frames, t.kept_readings),
        };
        BufferStats {
            bytes: t.kept_bytes,
            disk_bytes,
            max_bytes: self.inner.cfg.max_bytes,
            frames: t.kept_frames,
            readings: t.kept_readings,
            unreported_frames,
            unreported_readings,
            oldest_unreported_ms: st.oldest_unreported_ms,
            full: st.full,
            space_low: st.space_low,
            full_events: st.full_events,
            next_event_id: t.next_event_id,
            last_key: st.last_key,
            reported: st.reported.map(|c| c.key),
            delivered: st.delivered.map(|c| c.key),
        }
    }

    /// Frames after `after` (None = from the start of what is kept), in
    /// storage order, one batch decoded at a time. A damaged batch or frame
    /// yields an error item and the scan goes on with the next one.
    pub fn scan(&self, after: Option<FrameKey>) -> ScanIter {
        let from = after.map_or(0, |k| k.batch);
        // Only what is durable: frames stored by appends that returned
        // (a failed append may have left its frames in sled's memory).
        let upto = self.lock().last_key;
        let iter = self.sled().ok().map(|h| {
            h.tree
                .range(record::batch_key(from)..=record::batch_key(u64::MAX))
        });
        ScanIter {
            closed: iter.is_none(),
            iter,
            upto,
            pending: VecDeque::new(),
            after,
        }
    }

    /// A cursor's position.
    pub fn cursor(&self, name: CursorName) -> Option<FrameKey> {
        let st = self.lock();
        match name {
            CursorName::Reported => st.reported.map(|c| c.key),
            CursorName::Delivered => st.delivered.map(|c| c.key),
        }
    }

    /// Moves a cursor forward (flushed). Setting it at or below its current
    /// position is a no-op. `key` must be a stored frame; "delivered" may
    /// not pass "reported".
    pub fn set_cursor(&self, name: CursorName, key: FrameKey) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        let current = match name {
            CursorName::Reported => st.reported,
            CursorName::Delivered => st.delivered,
        };
        if current.is_some_and(|c| key <= c.key) {
            return Ok(());
        }
        if st.last_key.is_none_or(|last| key > last) {
            return Err(StoreError::NoSuchFrame { name, key });
        }
        if name == CursorName::Delivered {
            let reported = st.reported.map(|c| c.key);
            if reported.is_none_or(|r| key > r) {
                return Err(StoreError::DeliveredPastReported { key, reported });
            }
        }
        let h = self.sled()?;
        let Some(v) = h.tree.get(record::batch_key(key.batch))? else {
            return Err(StoreError::NoSuchFrame { name, key });
        };
        let b = record::parse_batch(&v).map_err(corrupt(format!("d:{}", key.batch)))?;
        if key.index >= b.header.count {
            return Err(StoreError::NoSuchFrame { name, key });
        }
        let mut readings = b.header.cum_readings_before;
        let payload = b.payload().map_err(corrupt(format!("d:{}", key.batch)))?;
        for (i, e) in payload.entries().take(key.index as usize + 1).enumerate() {
            let (_, bytes) = e.map_err(corrupt(format!("d:{}", key.batch)))?;
            let fk = FrameKey {
                batch: key.batch,
                index: i as u32,
            };
            let f = decode_frame_exact(bytes)
                .map_err(|reason| StoreError::BadFrame { key: fk, reason })?;
            readings += u64::from(readings_of(&f));
        }
        let rec = CursorRecord {
            key,
            cum_frames: b.header.cum_frames_before + u64::from(key.index) + 1,
            cum_readings: readings,
        };
        let k = match name {
            CursorName::Reported => record::REPORTED_KEY,
            CursorName::Delivered => record::DELIVERED_KEY,
        };
        let mut batch = sled::Batch::default();
        batch.insert(k, rec.encode());
        let oldest = match name {
            CursorName::Reported => Some(first_after(&h.tree, Some(key))?.map(|(_, rx)| rx)),
            CursorName::Delivered => None,
        };
        self.commit(&mut st, batch)?;
        match name {
            CursorName::Reported => {
                st.reported = Some(rec);
                st.oldest_unreported_ms = oldest.flatten();
            }
            CursorName::Delivered => st.delivered = Some(rec),
        }
        Ok(())
    }

    /// Records events durably (flushed), with ids continuing from the last.
    pub fn record_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut totals = st.totals;
        let mut b = sled::Batch::default();
        for ev in events {
            b.insert(&record::event_key(totals.next_event_id), encode_event(ev));
            totals.next_event_id += 1;
        }
        b.insert(record::TOTALS_KEY, totals.encode());
        self.commit(&mut st, b)?;
        st.totals = totals;
        Ok(())
    }

    /// Gives up `device`'s missing frames up to and including `through`
    /// (see [`super::SeqState::give_up`]): in one atomic, flushed sled
    /// batch, the device record moves past them and a `frames_given_up`
    /// event (cause and detail from `why`, e.g. `operator: replaced meter`)
    /// is recorded. Returns the range given up, or `None` when nothing below
    /// `through` was missing (then nothing is written).
    pub fn give_up(
        &self,
        device: &DeviceId,
        through: u64,
        why: &str,
        now_ms: u64,
    ) -> Result<Option<mrv_shared::event::SeqRange>, StoreError> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut entry = st.devices.get(device).cloned().unwrap_or_default();
        let Some((first, last)) = entry.seq.give_up(through) else {
            return Ok(None);
        };
        let range = mrv_shared::event::SeqRange { first, last };
        let mut totals = st.totals;
        let ev = Event {
            time_ms: now_ms,
            kind: EventKind::FramesGivenUp,
            device: Some(device.clone()),
            seqs: Some(range),
            detail: format!("{why}; seqs {first}..={last} will never be stored"),
        };
        let mut b = sled::Batch::default();
        b.insert(record::device_key(device), entry.to_record().encode());
        b.insert(&record::event_key(totals.next_event_id), encode_event(&ev));
        totals.next_event_id += 1;
        b.insert(record::TOTALS_KEY, totals.encode());
        self.commit(&mut st, b)?;
        st.totals = totals;
        st.devices.insert(device.clone(), entry);
        warn!(%device, first, last, why, "frames given up: the device's sequence continues past them");
        Ok(Some(range))
    }

    /// Events with id greater than `after` (None = from the first kept), by id.
    pub fn events_after(&self, after: Option<u64>) -> EventIter {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let iter = self.sled().ok().map(|h| h.tree.range(event_range(from)));
        EventIter {
            closed: iter.is_none(),
            iter,
        }
    }

    /// The "events delivered" id: every event up to it is in a delivered report.
    pub fn events_delivered(&self) -> Option<u64> {
        self.lock().events_delivered
    }

    /// Moves the "events delivered" id forward (flushed); no-op if not forward.
    pub fn set_events_delivered(&self, id: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        if st.events_delivered.is_some_and(|c| id <= c) {
            return Ok(());
        }
        if id == 0 || id >= st.totals.next_event_id {
            return Err(StoreError::NoSuchEvent { id });
        }
        let mut b = sled::Batch::default();
        b.insert(record::EVENTS_DELIVERED_KEY, record::encode_id(id));
        self.commit(&mut st, b)?;
        st.events_delivered = Some(id);
        Ok(())
    }

    /// Deletes, in id order, batches fully at or below the "delivered"
    /// cursor whose newest receipt is older than `keep_delivered`, and
    /// delivered events older than that; stops at the first that does not
    /// qualify. Leaves the full state if it frees enough space.
    pub fn prune(&self, now_ms: u64) -> Result<PruneStats, StoreError> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        let h = self.sled()?;
        let keep_ms = u64::try_from(self.inner.cfg.keep_delivered.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(keep_ms);
        let mut stats = PruneStats::default();
        if let Some(delivered) = st.delivered.map(|c| c.key) {
            loop {
                let mut totals = st.totals;
                let mut b = sled::Batch::default();
                let mut n = 0;
                // First batch left after this chunk: Some(None) = none left.
                let mut next_left: Option<Option<Result<record::BatchHeader, ()>>> = None;
                let mut damaged = false;
                for item in h.tree.range(data_range()).take(PRUNE_CHUNK + 1) {
                    let (k, v) = item?;
                    let id = record::id_of_key(&k).expect("data range yields data keys");
                    if n == PRUNE_CHUNK {
                        next_left = Some(Some(
                            record::parse_batch(&v).map(|b| b.header).map_err(|_| ()),
                        ));
                        break;
                    }
                    let h = match record::parse_batch(&v) {
                        Ok(b) => b.header,
                        // Wholly before the delivered cursor's batch: its frames
                        // were delivered (or skipped as unreadable by the report
                        // builder) and cannot be read anyway; delete it.
                        Err(e) if id < delivered.batch => {
                            warn!(batch = id, error = %e, "deleting a damaged, delivered buffer batch");
                            b.remove(k);
                            n += 1;
                            damaged = true;
                            let bytes = (v.len() + ID_KEY_LEN) as u64;
                            totals.kept_bytes -= bytes;
                            stats.batches += 1;
                            stats.damaged += 1;
                            stats.bytes += bytes;
                            continue;
                        }
                        Err(e) => return Err(corrupt(format!("d:{id}"))(e)),
                    };
                    let last = FrameKey {
                        batch: id,
                        index: h.count.saturating_sub(1),
                    };
                    if last > delivered || h.max_received_ms >= cutoff {
                        next_left = Some(Some(Ok(h)));
                        break;
                    }
                    b.remove(k);
                    n += 1;
                    let bytes = (v.len() + ID_KEY_LEN) as u64;
                    totals.kept_frames -= u64::from(h.count);
                    totals.kept_readings -= u64::from(h.readings);
                    totals.kept_bytes -= bytes;
                    stats.batches += 1;
                    stats.frames += u64::from(h.count);
                    stats.readings += u64::from(h.readings);
                    stats.bytes += bytes;
                }
                if n == 0 {
                    break;
                }
                if damaged {
                    // A damaged batch's counts are unknown: recount what is
                    // kept from the cumulative counters of the first batch left.
                    match next_left.unwrap_or(None) {
                        None => {
                            totals.kept_frames = 0;
                            totals.kept_readings = 0;
                        }
                        Some(Ok(h)) => {
                            totals.kept_frames = totals.cum_frames - h.cum_frames_before;
                            totals.kept_readings = totals.cum_readings - h.cum_readings_before;
                        }
                        Some(Err(())) => {}
                    }
                }
                b.insert(record::TOTALS_KEY, totals.encode());
                self.commit(&mut st, b)?;
                st.totals = totals;
                if n < PRUNE_CHUNK {
                    break;
                }
            }
        }
        if let Some(events_delivered) = st.events_delivered {
            let mut b = sled::Batch::default();
            for item in h.tree.range(event_range(0)) {
                let (k, v) = item?;
                let id = record::id_of_key(&k).expect("event range yields event keys");
                if id > events_delivered {
                    break;
                }
                match decode_event(id, &v) {
                    Ok(ev) if ev.time_ms >= cutoff => break,
                    Ok(_) => {}
                    Err(e) => warn!(event = id, error = %e, "deleting a damaged, delivered event"),
                }
                b.remove(k);
                stats.events += 1;
            }
            if stats.events > 0 {
                self.commit(&mut st, b)?;
            }
        }
        if st.full && st.totals.kept_bytes < self.inner.cfg.max_bytes {
            let mut totals = st.totals;
            let ev = Event {
                time_ms: now_ms,
                kind: EventKind::BufferRecovered,
                device: None,
                seqs: None,
                detail: format!(
                    "buffer holds {} bytes, limit {}: frames are accepted again",
                    totals.kept_bytes, self.inner.cfg.max_bytes
                ),
            };
            let mut b = sled::Batch::default();
            b.insert(&record::event_key(totals.next_event_id), encode_event(&ev));
            totals.next_event_id += 1;
            b.insert(record::TOTALS_KEY, totals.encode());
            self.commit(&mut st, b)?;
            st.totals = totals;
            st.full = false;
            info!(
                bytes = totals.kept_bytes,
                max_bytes = self.inner.cfg.max_bytes,
                "buffer is below its limit again: frames are accepted"
            );
        }
        Ok(stats)
    }

    /// Reads everything: batch and event checksums, frame decoding,
    /// cumulative counters, batch id continuity, totals, and which seqs are
    /// present per device. `progress` is called with the logical bytes read
    /// so far. Blocks writers while it runs (meant for the CLI).
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, StoreError> {
        let st = self.lock();
        let h = self.sled()?;
        let mut rep = VerifyReport::default();
        let mut seqs: BTreeMap<DeviceId, (u64, SeqRanges)> = BTreeMap::new();
        fn problem(rep: &mut VerifyReport, key: String, p: String) {
            rep.problems.push(VerifyProblem { key, problem: p });
        }
        // (id, cum frames after, cum readings after) of the previous good batch.
        let mut prev: Option<(u64, u64, u64)> = None;
        for item in h.tree.range(data_range()) {
            let (k, v) = item?;
            let id = record::id_of_key(&k).expect("data range yields data keys");
            let key = format!("d:{id}");
            rep.batches += 1;
            rep.bytes += (v.len() + ID_KEY_LEN) as u64;
            let b = match record::parse_batch(&v) {
                Ok(b) => b,
                Err(e) => {
                    problem(&mut rep, key, format!("batch unreadable: {e}"));
                    prev = None;
                    progress(rep.bytes);
                    continue;
                }
            };
            let h = b.header;
            if let Some((pid, pf, pr)) = prev {
                if id != pid + 1 {
                    problem(
                        &mut rep,
                        key.clone(),
                        format!("batch ids jump from {pid} to {id}"),
                    );
                } else if h.cum_frames_before != pf || h.cum_readings_before != pr {
                    problem(
                        &mut rep,
                        key.clone(),
                        format!(
                            "cumulative counts {}/{} do not continue the previous batch's {pf}/{pr}",
                            h.cum_frames_before, h.cum_readings_before
                        ),
                    );
                }
            }
            let mut readings = 0u64;
            let mut count = 0u32;
            let payload = match b.payload() {
                Ok(p) => p,
                Err(e) => {
                    problem(&mut rep, key, format!("batch payload: {e}"));
                    prev = None;
                    progress(rep.bytes);
                    continue;
                }
            };
            for (i, e) in payload.entries().enumerate() {
                let (_, bytes) = match e {
                    Ok(x) => x,
                    Err(e) => {
                        problem(&mut rep, key.clone(), format!("entry {i}: {e}"));
                        break;
                    }
                };
                count += 1;
                match decode_frame_exact(bytes) {
                    Ok(f) => {
                        rep.frames += 1;
                        readings += f.samples.len() as u64;
                        let (n, r) = seqs.entry(f.device.clone()).or_default();
                        *n += 1;
                        if !r.insert(f.seq) {
                            problem(
                                &mut rep,
                                format!("{key}:{i}"),
                                format!("device {} seq {} stored twice", f.device, f.seq),
                            );
                        }
                        let known = st
                            .devices
                            .get(&f.device)
                            .is_some_and(|d| d.seq.contains(f.seq));
                        if !known {
                            problem(
                                &mut rep,
                                format!("{key}:{i}"),
                                format!(
                                    "device {} seq {} is stored but its device record does not count it",
                                    f.device, f.seq
                                ),
                            );
                        }
                    }
                    Err(e) => problem(&mut rep, format!("{key}:{i}"), format!("frame: {e}")),
                }
            }
            if count != h.count || readings != u64::from(h.readings) {
                problem(
                    &mut rep,
                    key.clone(),
                    format!(
                        "header says {} frames / {} readings, found {count} / {readings} readable",
                        h.count, h.readings
                    ),
                );
            }
            rep.readings += readings;
            prev = Some((
                id,
                h.cum_frames_before + u64::from(h.count),
                h.cum_readings_before + u64::from(h.readings),
            ));
            progress(rep.bytes);
        }
        let t = &st.totals;
        let disagrees = |&(pid, pf, pr): &(u64, u64, u64)| {
            pid + 1 != t.next_batch_id || pf != t.cum_frames || pr != t.cum_readings
        };
        if let Some((pid, pf, pr)) = prev.filter(disagrees) {
            problem(
                &mut rep,
                "m/totals".into(),
                format!(
                    "last batch {pid} ends at {pf} frames / {pr} readings; totals say next batch {}, {} / {}",
                    t.next_batch_id, t.cum_frames, t.cum_readings
                ),
            );
        }
        if rep.frames != t.kept_frames
            || rep.readings != t.kept_readings
            || rep.bytes != t.kept_bytes
        {
            let p = format!(
                "found {} frames / {} readings / {} bytes; totals say {} / {} / {}",
                rep.frames, rep.readings, rep.bytes, t.kept_frames, t.kept_readings, t.kept_bytes
            );
            problem(&mut rep, "m/totals".into(), p);
        }
        let mut prev_event = 0;
        for item in h.tree.range(event_range(0)) {
            let (k, v) = item?;
            let id = record::id_of_key(&k).expect("event range yields event keys");
            rep.events += 1;
            if id <= prev_event || id >= t.next_event_id {
                problem(&mut rep, format!("e:{id}"), "event id out of order".into());
            }
            prev_event = id;
            if let Err(e) = decode_event(id, &v) {
                problem(&mut rep, format!("e:{id}"), e.to_string());
            }
        }
        rep.devices = seqs
            .into_iter()
            .map(|(device, (frames, r))| VerifiedDevice {
                device,
                frames,
                gaps: r.holes(),
                ranges: r.ranges().to_vec(),
            })
            .collect();
        Ok(rep)
    }

    /// The sled database directory.
    pub fn path(&self) -> &std::path::Path {
        &self.inner.cfg.path
    }
}

/// Takes sled's lock on the buffer at `path` (see [`sled_files::lock`]),
/// waiting up to LOCK_WAIT like [`open_sled`].
fn lock_sled_dir(path: &std::path::Path) -> Result<std::fs::File, StoreError> {
    sled_files::lock(path, true, LOCK_WAIT).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => {
            StoreError::Sled(sled::Error::Io(std::io::Error::other(format!(
                "could not acquire lock on {}: {e}",
                path.join("db").display()
            ))))
        }
        _ => StoreError::Dir {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

/// Opens sled at `cfg.path`. A buffer dropped a moment ago in this process
/// may still hold sled's file lock from one of sled's I/O threads (a known
/// sled 0.34 behaviour); give it up to LOCK_WAIT. A lock held by another
/// process (a running gateway) fails after that.
fn open_sled(cfg: &BufferConfig) -> Result<sled::Db, sled::Error> {
    let sled_cfg = sled::Config::new()
        .path(&cfg.path)
        .cache_capacity(cfg.cache_bytes)
        // Every write path flushes itself before returning.
        .flush_every_ms(None);
    waiting_for_lock(|| sled_cfg.open())
}

/// Runs `open` until it does not fail on sled's file lock, for up to
/// LOCK_WAIT (see [`open_sled`]).
fn waiting_for_lock(
    mut open: impl FnMut() -> Result<sled::Db, sled::Error>,
) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Opens the sled database directly, waiting for its lock as [`open_sled`]
/// does: for tests (here and in `mrv-gateway`) that damage a buffer behind
/// its back right after dropping a [`Buffer`]. Not for production use: it
/// skips the repair and bookkeeping of [`Buffer::open`].
#[doc(hidden)]
pub fn open_raw_sled_for_test(path: &std::path::Path) -> sled::Db {
    waiting_for_lock(|| sled::open(path)).expect("sled opens")
}

/// `fdatasync`s sled's log and every blob file, then drops their pages from
/// the page cache, so that the next open reads what is on disk (see
/// [`Buffer::reopen`]).
fn settle_page_cache(path: &std::path::Path) -> std::io::Result<()> {
    let mut files = vec![path.join("db")];
    if let Ok(d) = std::fs::read_dir(path.join("blobs")) {
        files.extend(d.flatten().map(|e| e.path()));
    }
    for p in files {
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        f.sync_data()?;
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    }
    Ok(())
}

/// sled 0.34 writes pages larger than a quarter segment (~128 KiB) as
/// separate "blob" files, without fsync; the log entry pointing at them is
/// then made durable by the flush. So after each flush, fsync every blob
/// file newer than the last one synced, then the blobs directory.
fn sync_new_blobs(path: &std::path::Path, synced: &mut i64) -> std::io::Result<()> {
    let dir = path.join("blobs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut newest = *synced;
    for e in entries {
        let e = e?;
        let Some(lsn) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        if lsn <= *synced {
            continue;
        }
        match std::fs::File::open(e.path()).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            // Garbage-collected by sled since the listing: nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        newest = newest.max(lsn);
    }
    if newest > *synced {
        std::fs::File::open(&dir)?.sync_all()?;
        *synced = newest;
    }
    Ok(())
}

/// The newest blob file at open (already on disk before this process).
fn newest_blob(path: &std::path::Path) -> i64 {
    std::fs::read_dir(path.join("blobs")).map_or(-1, |d| {
        d.flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()))
            .max()
            .unwrap_or(-1)
    })
}

/// The first readable frame after `after` (None = the first kept), with its
/// receipt time. Damaged batches are skipped with a warning (they show up
/// in `scan` and `verify`).
fn first_after(
    tree: &sled::Tree,
    after: Option<FrameKey>,
) -> Result<Option<(FrameKey, u64)>, StoreError> {
    let from = after.map_or(0, |k| k.batch);
    for item in tree.range(record::batch_key(from)..=record::batch_key(u64::MAX)) {
        let (k, v) = item?;
        let id = record::id_of_key(&k).expect("data range yields data keys");
        let payload = match record::parse_batch(&v).and_then(|b| b.payload()) {
            Ok(p) => p,
            Err(e) => {
                warn!(batch = id, error = %e, "damaged buffer batch skipped; run `buffer verify`");
                continue;
            }
        };
        for (i, e) in payload.entries().enumerate() {
            let Ok((rx, _)) = e else {
                warn!(
                    batch = id,
                    "damaged buffer batch skipped; run `buffer verify`"
                );
                break;
            };
            let key = FrameKey {
                batch: id,
                index: i as u32,
            };
            if after.is_none_or(|a| key > a) {
                return Ok(Some((key, rx)));
            }
        }
    }
    Ok(None)
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let json = serde_json::to_vec(ev).expect("events serialise: plain strings and integers");
    record::encode_event(&json)
}

fn decode_event(id: u64, v: &[u8]) -> Result<Event, StoreError> {
    let json = record::decode_event(v).map_err(corrupt(format!("e:{id}")))?;
    serde_json::from_slice(json).map_err(|e| StoreError::BadEvent {
        id,
        reason: e.to_string(),
    })
}

/// Iterator returned by [`Buffer::scan`].
pub struct ScanIter {
    /// `None` while the buffer is closed for a reopen, and after sled
    /// returned an error (yielded once; the iteration ends there).
    iter: Option<sled::Iter>,
    /// Closed: one `Poisoned` error item is still to be yielded.
    closed: bool,
    /// Last durable frame when the scan began; nothing after it is yielded.
    upto: Option<FrameKey>,
    pending: VecDeque<Result<StoredFrame, StoreError>>,
    after: Option<FrameKey>,
}

impl std::fmt::Debug for ScanIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanIter")
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl ScanIter {
    fn load(&mut self, k: &[u8], v: &[u8]) {
        let id = record::id_of_key(k).expect("data range yields data keys");
        let b = match record::parse_batch(v) {
            Ok(b) => b,
            Err(e) => {
                self.pending.push_back(Err(corrupt(format!("d:{id}"))(e)));
                return;
            }
        };
        let payload = match b.payload() {
            Ok(p) => p,
            Err(e) => {
                self.pending.push_back(Err(corrupt(format!("d:{id}"))(e)));
                return;
            }
        };
        for (i, e) in payload.entries().enumerate() {
            let key = FrameKey {
                batch: id,
                index: i as u32,
            };
            if self.after.is_some_and(|a| key <= a) {
                continue;
            }
            if self.upto.is_none_or(|u| key > u) {
                break;
            }
            let item = e
                .map_err(corrupt(format!("d:{id}")))
                .and_then(|(received_ms, bytes)| {
                    decode_frame_exact(bytes)
                        .map(|frame| StoredFrame {
                            key,
                            frame,
                            received_ms,
                        })
                        .map_err(|reason| StoreError::BadFrame { key, reason })
                });
            self.pending.push_back(item);
        }
    }
}

impl Iterator for ScanIter {
    type Item = Result<StoredFrame, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.pending.pop_front() {
                return Some(x);
            }
            let Some(iter) = &mut self.iter else {
                // Closed for a reopen: one error item, then the end.
                return std::mem::take(&mut self.closed).then_some(Err(StoreError::Poisoned));
            };
            match iter.next()? {
                Ok((k, v)) => {
                    let id = record::id_of_key(&k).expect("data range yields data keys");
                    if self.upto.is_none_or(|u| id > u.batch) {
                        return None;
                    }
                    self.load(&k, &v)
                }
                Err(e) => {
                    // sled's iterator returns the same error at every call:
                    // end here, or a caller that skips errors spins for ever.
                    self.iter = None;
                    return Some(Err(e.into()));
                }
            }
        }
    }
}

/// Iterator returned by [`Buffer::events_after`].
pub struct EventIter {
    /// `None` while the buffer is closed for a reopen, and after sled
    /// returned an error (yielded once; the iteration ends there).
    iter: Option<sled::Iter>,
    /// Closed: one `Poisoned` error item is still to be yielded.
    closed: bool,
}

impl std::fmt::Debug for EventIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIter").finish_non_exhaustive()
    }
}

impl Iterator for EventIter {
    type Item = Result<(u64, Event), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(iter) = &mut self.iter else {
            // Closed for a reopen: one error item, then the end.
            return std::mem::take(&mut self.closed).then_some(Err(StoreError::Poisoned));
        };
        let (k, v) = match iter.next()? {
            Ok(kv) => kv,
            Err(e) => {
                // As in `ScanIter`: an error from sled ends the iteration.
                self.iter = None;
                return Some(Err(e.into()));
            }
        };
        let id = record::id_of_key(&k).expect("event range yields event keys");
        Some(decode_event(id, &v).map(|ev| (id, ev)))
    }
}
