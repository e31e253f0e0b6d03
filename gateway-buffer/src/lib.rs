//! # mrv-gateway-buffer: the durable buffer, where a frame becomes durable and may be acked
//!
//! The gateway's data path is devices -> ingest -> **buffer** -> report ->
//! upload (see `docs/ARCHITECTURE.md`). This crate is the durable stage; the
//! `mrv-gateway` crate re-exports it as `mrv_gateway::buffer`.
//!
//! Frames (device batches, [`Frame`]) are stored in their canonical binary
//! form, many per sled value, together with their gateway receipt time. The
//! report builder reads them back in storage order ([`Buffer::scan`]); two
//! durable cursors say how far reports cover ("reported") and how far the
//! backend has confirmed them ("delivered"); pruning deletes only what is
//! delivered and older than the retention time. Events (restarts, full
//! buffer, ...) live in the same database.
//!
//! ## Invariants
//!
//! - **Durable when acked.** [`Buffer::append`] writes a whole call as one
//!   atomic sled batch (data values, the touched device records and the
//!   totals record), calls `Tree::flush`, then `fdatasync`s sled's log file
//!   and fsyncs any new sled blob file, before it returns. (sled 0.34 alone
//!   writes its log with `sync_file_range`, which persists neither the file
//!   size nor the drive's write cache, and never fsyncs blob files.) When it
//!   returns `Ok`, every frame it reports as [`AppendOutcome::Stored`] is on
//!   disk and the acks it returns may be published. Cursors, events and
//!   prunes are committed the same way before their calls return.
//! - **Bookkeeping is atomic with the data.** Per-device state (highest
//!   contiguous seq, boot, stored seqs above it) and the counters are
//!   written in the same sled batch as the frames they describe, so after a
//!   crash they agree with the data: either the whole append is there, or
//!   none of it (sled's `apply_batch` on one tree is atomic, and recovery
//!   stops at the first torn log entry). A crash can therefore leave behind
//!   only appends that were written but not yet acked (the device resends
//!   them and gets `Duplicate` + its ack), never an acked frame that is
//!   missing.
//! - **Never drop silently.** A frame is refused only as `Duplicate` (it is
//!   already stored), `Regressed` (the device's counter went backwards; the
//!   ack says so), `OutOfOrder` (a hole below it: go-back-N, the ack tells
//!   the device where to resume; see `ledger`) or `BufferFull` (the buffer
//!   holds `max_bytes` or more; the device keeps the frame and retries),
//!   or `Invalid` (it breaks the frame rules once numbered: refused for
//!   good, with its reason, and only it: one bad frame never costs the other
//!   frames of its group commit their write).
//!   A hole is closed only by its frames or by [`Buffer::give_up`], which
//!   records a `frames_given_up` event in the same atomic batch.
//!   Full-buffer transitions are logged at WARN once, counted (`full_events`), visible in [`BufferStats`] and
//!   recorded as `buffer_full` / `buffer_recovered` events.
//! - **Kept data is a suffix.** Batch ids grow by one per batch and pruning
//!   removes a prefix of batches, each fully at or below the "delivered"
//!   cursor and with its newest receipt older than `keep_delivered`; so
//!   "not reported yet" is the range scan after the "reported" cursor, and
//!   buffered data is pruned only once every report covering it is delivered.
//! - **Cursors never move backwards** and point at stored frames;
//!   `delivered <= reported <= last stored frame`.
//! - **No scan at start-up.** Opening reads the totals record, the three
//!   cursors, the device records (one per device), the last batch's header
//!   and the batch holding the first unreported frame; data is otherwise
//!   only read by `scan`, `prune`, `set_cursor` and `verify`.
//! - **After an I/O error the buffer refuses writes** (`StoreError::Poisoned`)
//!   until it is reopened: its memory may be ahead of the disk, and reopening
//!   re-reads the truth.
//! - **Never bricked by its own files.** What a crash, a power cut or a full
//!   disk leaves in sled's files (an unfinished `snap.*.generating`, sled
//!   issue 1527; a snapshot or `conf` failing its checksum) is removed at
//!   open, before sled reads it, under sled's lock; if sled still refuses
//!   its snapshot, every snapshot goes and the whole log is replayed. Only
//!   derived files are removed, never the log or a blob. Each repair is
//!   logged, listed by [`Buffer::repairs`] and recorded by the runtime as a
//!   `buffer_repaired` event. Details: [`sled_files`].
//! - **Directory entries are durable.** sled never fsyncs a directory; open
//!   fsyncs the buffer directory and its parent, so a power cut cannot take
//!   a freshly created log file (and every frame in it) away.
//! - **One process at a time.** sled locks its directory; `open` retries for
//!   up to 2 s (a buffer dropped a moment ago in the same process may still
//!   hold the lock from a sled I/O thread), then fails.
//!
//! ## Full-buffer policy
//!
//! The limit counts logical bytes: every batch value plus its key
//! (`stats().bytes`). sled's files are larger than that by its own space
//! amplification (`stats().disk_bytes`, measured in `docs/BENCHMARKS.md`),
//! so size `max_bytes` with headroom. When `bytes >= max_bytes` at the start
//! of an append, no new frame is stored; duplicates are still acked and
//! regressions still reported. New frames are accepted again only after
//! [`Buffer::prune`] brings `bytes` below the limit, which needs reports to
//! be delivered.
//!
//! ## On-disk format (layout version 1)
//!
//! One sled tree, `buffer.v1`. Keys (big-endian numbers, so byte order is
//! numeric order):
//!
//! | key | value |
//! |---|---|
//! | `d` + batch id (u64 BE) | data batch (below) |
//! | `e` + event id (u64 BE) | event: version `1`, JSON of `mrv_shared::event::Event`, CRC |
//! | `m/totals` | totals: version, next batch id, frames/readings ever appended, frames/readings/bytes kept, next event id (u64 LE each), CRC |
//! | `m/cursor/reported`, `m/cursor/delivered` | version, batch id (u64), index (u32), frames and readings appended up to and including that frame (u64 each), CRC |
//! | `m/cursor/events_delivered` | version, event id (u64), CRC |
//! | `v` + device id | device: version, contiguous seq (u64), boot (u32), frames, readings, first and last receipt ms (u64 each, `u64::MAX` = none), n (u32), n inclusive ranges of out-of-order stored seqs (lo, hi: u64 each), CRC |
//!
//! Data batch (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `"MB"` |
//! | 2 | 1 | layout version `1` |
//! | 3 | 1 | flags: bit 0 = payload is deflated; others 0 |
//! | 4 | 4 | frame count `n` |
//! | 8 | 4 | readings in the batch |
//! | 12 | 8 | frames appended before this batch (cumulative) |
//! | 20 | 8 | readings appended before this batch (cumulative) |
//! | 28 | 8 | lowest receipt time (Unix ms) |
//! | 36 | 8 | highest receipt time (Unix ms) |
//! | 44 | 4 | payload length `P` |
//! | 48 | P | `n` entries: receipt ms (u64), frame length `L` (u32), `L` bytes of canonical binary frame (`mrv_shared::wire::binary`); if flag bit 0: raw length (u32) + raw DEFLATE (RFC 1951) of those entries |
//! | 48+P | 4 | CRC-32 (IEEE) of bytes `[0, 48+P)` |
//!
//! Checksums: every value ends in a CRC-32 of the bytes before it, so a torn
//! or corrupted value is detected before it is parsed; each frame inside a
//! batch also carries its own CRC-32 (part of the binary frame format), so
//! `verify` can say which record is damaged. An append larger than about
//! [`TARGET_BATCH_BYTES`] (before deflating) is split into several batches,
//! written in the same atomic sled batch. The entries are deflated (level 1)
//! when that is smaller, which it is for any real batch: frames of one site
//! repeat site, device, firmware and channel names. Batches stay small so
//! that sled's leaf pages (up to 16 values) stay below its blob threshold.
//!
//! ## Damaged records
//!
//! A data batch that fails its checks does not stop the buffer from
//! opening; `scan` yields an error item for it and goes on with the next
//! batch (the report builder records that as an event), and `verify` lists
//! it. `prune` deletes a damaged batch that lies wholly before the
//! "delivered" cursor's batch (its frames were delivered or skipped, and
//! cannot be read anyway; the kept counters are then recounted from the
//! next batch's cumulative counters) and a damaged event at or below the
//! "events delivered" id; it stops with an error at a damaged batch it
//! cannot place. A damaged totals, cursor or device record makes `open` fail.
//!
//! ## Retention and deletion
//!
//! [`Buffer::prune`] (called periodically with the current time) deletes, in
//! id order, batches whose last frame is at or below the "delivered" cursor
//! and whose newest receipt is older than `keep_delivered`; it stops at the
//! first batch that does not qualify. Events at or below the "events
//! delivered" id and older than `keep_delivered` go the same way. Deleting a
//! key in sled frees its space in sled's files lazily (segment GC), so
//! `disk_bytes` shrinks later than `bytes`.

pub use mrv_shared::durable_dir;
mod ledger;
mod record;
pub mod sled_files;
mod sled_store;
pub mod write_request;
#[doc(hidden)]
pub use sled_store::open_raw_sled_for_test;

#[cfg(test)]
mod model_tests;

pub use ledger::{Decision, SeqRanges, SeqState};
pub use record::RecordError;
pub use sled_files::{Repair, RepairReason};
pub use sled_store::{Buffer, EventIter, ScanIter};

use mrv_shared::ids::DeviceId;
use mrv_shared::wire::{Frame, FrameError};
use std::path::PathBuf;
use std::time::Duration;

/// An append is split into batches of about this many bytes (one sled value each).
pub const TARGET_BATCH_BYTES: usize = 16 * 1024;

/// How to open the buffer.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// Directory of the sled database (created if missing).
    pub path: PathBuf,
    /// Full-buffer limit in logical bytes (see "Full-buffer policy").
    pub max_bytes: u64,
    /// sled page cache capacity in bytes.
    pub cache_bytes: u64,
    /// How long delivered data is kept before pruning may delete it.
    pub keep_delivered: Duration,
}

/// One frame as it arrived, with the gateway's receipt time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The frame; `seq == 0` asks the buffer to number it.
    pub frame: Frame,
    /// Gateway clock at receipt (Unix ms).
    pub received_ms: u64,
}

/// What happened to one frame of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored and durable.
    Stored,
    /// Already stored; not stored again.
    Duplicate,
    /// A later boot re-used a stored seq; not stored.
    Regressed,
    /// The buffer is full; not stored (the device keeps it).
    BufferFull,
    /// Above a hole in the device's sequence; not stored (go-back-N: the
    /// ack says `acked_seq`, the device re-sends from there).
    OutOfOrder,
    /// Refused for good: it breaks the frame rules once numbered, or
    /// encodes too large (the reason is in [`AppendResult::invalid`]). Only
    /// this frame: the rest of the append is stored as usual.
    Invalid,
}

/// Why a frame of an append was refused as [`AppendOutcome::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameRefusal {
    /// A frame rule is broken (checked after the gateway numbered it).
    #[error("breaks the frame rules: {0}")]
    BreaksRules(FrameError),
    /// It encodes to more than `MAX_FRAME_BYTES`.
    #[error("encodes to {len} bytes, more than the {max} a frame may have", max = mrv_shared::wire::MAX_FRAME_BYTES)]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
}

/// The result of one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// One outcome per incoming frame, in order.
    pub outcomes: Vec<AppendOutcome>,
    /// One ack per device touched, in order of first appearance, valid after
    /// the write: `SeqRegressed` if any of the device's frames regressed,
    /// else `BufferFull` if any was refused for space, else `Ok`.
    pub acks: Vec<(DeviceId, mrv_shared::wire::Ack)>,
    /// Keys of the stored frames, in order.
    pub keys: Vec<FrameKey>,
    /// The stored frames themselves, in order (one per `keys` entry), with
    /// the seq they were stored under (the assigned one for `seq == 0`):
    /// handed back, not copied, so that a
    /// caller can pass them on (the diagnostics live view) without a clone.
    pub stored: Vec<Incoming>,
    /// The frames refused as [`AppendOutcome::Invalid`]: position in the
    /// append and why.
    pub invalid: Vec<(usize, FrameRefusal)>,
}

/// Where a frame is stored: batch id, then index inside the batch. Ordered
/// as storage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameKey {
    /// Batch id (starts at 1, grows by one per batch).
    pub batch: u64,
    /// Index of the frame inside its batch.
    pub index: u32,
}

impl std::fmt::Display for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.batch, self.index)
    }
}

/// A frame read back from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFrame {
    /// Where it is stored.
    pub key: FrameKey,
    /// The frame (with its stored seq).
    pub frame: Frame,
    /// Gateway receipt time (Unix ms).
    pub received_ms: u64,
}

/// The durable frame cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CursorName {
    /// A signed report covers every frame up to here.
    Reported,
    /// The backend confirmed every report up to here.
    Delivered,
}

/// One device's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The device.
    pub device: DeviceId,
    /// Highest contiguous stored seq (what its ack says).
    pub acked_seq: u64,
    /// Highest stored seq.
    pub highest_seq: u64,
    /// Highest boot counter of a stored frame.
    pub boot: u32,
    /// Frames stored since first seen (pruning does not subtract).
    pub frames: u64,
    /// Readings stored since first seen.
    pub readings: u64,
    /// Receipt time of the first stored frame.
    pub first_received_ms: Option<u64>,
    /// Receipt time of the last stored frame.
    pub last_received_ms: Option<u64>,
    /// Missing seqs between `acked_seq` and `highest_seq`, inclusive ranges.
    pub gaps: Vec<(u64, u64)>,
}

/// Buffer-wide figures, computed without scanning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferStats {
    /// Logical bytes kept (batch values + keys); the full-buffer measure.
    pub bytes: u64,
    /// sled's files on disk (includes its space amplification).
    pub disk_bytes: u64,
    /// The configured limit.
    pub max_bytes: u64,
    /// Frames kept.
    pub frames: u64,
    /// Readings kept.
    pub readings: u64,
    /// Frames after the "reported" cursor.
    pub unreported_frames: u64,
    /// Readings after the "reported" cursor.
    pub unreported_readings: u64,
    /// Receipt time of the first unreported frame in storage order.
    pub oldest_unreported_ms: Option<u64>,
    /// True while new frames are refused for the byte limit.
    pub full: bool,
    /// True while new frames are refused because the file system is nearly
    /// full ([`Buffer::set_space_low`]).
    pub space_low: bool,
    /// Times the buffer became full since it was opened.
    pub full_events: u64,
    /// Id the next recorded event gets (ids start at 1).
    pub next_event_id: u64,
    /// Last stored frame.
    pub last_key: Option<FrameKey>,
    /// "reported" cursor.
    pub reported: Option<FrameKey>,
    /// "delivered" cursor.
    pub delivered: Option<FrameKey>,
}

/// What a prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Batches deleted.
    pub batches: u64,
    /// Frames deleted.
    pub frames: u64,
    /// Readings deleted.
    pub readings: u64,
    /// Logical bytes freed.
    pub bytes: u64,
    /// Events deleted.
    pub events: u64,
    /// Damaged batches deleted (wholly before the "delivered" cursor's batch;
    /// included in `batches` and `bytes`, their frames are not counted).
    pub damaged: u64,
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    /// The sled key concerned, printable (`d:12`, `e:3`, `v:pv-1`, `m/totals`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// Per-device view from `verify`: seqs present in the kept data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDevice {
    /// The device.
    pub device: DeviceId,
    /// Frames found.
    pub frames: u64,
    /// Seqs present, as inclusive ranges.
    pub ranges: Vec<(u64, u64)>,
    /// Holes between the lowest and highest seq present.
    pub gaps: Vec<(u64, u64)>,
}

/// Result of [`Buffer::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Batches read.
    pub batches: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Readings in decoded frames.
    pub readings: u64,
    /// Logical bytes read.
    pub bytes: u64,
    /// Events read.
    pub events: u64,
    /// Devices seen in the data, by id.
    pub devices: Vec<VerifiedDevice>,
    /// Problems found (empty = buffer is sound).
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// True if no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Errors of the buffer layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption it detected, lock held by another process).
    #[error("buffer database: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value failed its checks.
    #[error("buffer record {key} is damaged: {source}")]
    Corrupt {
        /// Printable key.
        key: String,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// A stored frame does not decode.
    #[error("stored frame {key} does not decode: {reason}")]
    BadFrame {
        /// Where it is.
        key: FrameKey,
        /// Decoder's answer.
        reason: mrv_shared::wire::DecodeError,
    },
    /// A stored event does not decode.
    #[error("stored event {id} does not decode: {reason}")]
    BadEvent {
        /// Event id.
        id: u64,
        /// JSON error.
        reason: String,
    },
    /// A cursor was set past the last stored frame, or to a frame that is not stored.
    #[error("cursor {name:?} cannot point at {key}: no such stored frame")]
    NoSuchFrame {
        /// Which cursor.
        name: CursorName,
        /// Requested position.
        key: FrameKey,
    },
    /// "delivered" was set past "reported".
    #[error("cursor Delivered cannot move to {key}, past Reported ({reported:?})")]
    DeliveredPastReported {
        /// Requested position.
        key: FrameKey,
        /// Current "reported" cursor.
        reported: Option<FrameKey>,
    },
    /// The events-delivered id is past the last recorded event.
    #[error("events cursor cannot move to {id}: no such event")]
    NoSuchEvent {
        /// Requested id.
        id: u64,
    },
    /// An earlier I/O error left memory and disk possibly apart; reopen.
    #[error("buffer refused the write after an earlier I/O error; reopen it")]
    Poisoned,
    /// The buffer directory or its log file could not be created or opened.
    #[error("buffer directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}
