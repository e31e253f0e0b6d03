//! [`Journal`]: the device's persistent state and outbox, as an
//! append-only log over a ring of NOR flash sectors.
//!
//! ## On-flash format
//!
//! Each sector starts with a 16-byte header: magic `"MRVJ"` (u32 LE
//! 0x4A56_524D), sector sequence number (u32 LE, one above the highest in
//! use when the sector was opened), erase count (u32 LE), CRC-32 of the
//! first 12 bytes. Records follow, each aligned to `max(WRITE_SIZE, 4)`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | magic `0xA5` |
//! | 1 | 1 | kind: 1 state, 2 frame |
//! | 2 | 2 | payload length `L`, u16 LE |
//! | 4 | 4 | CRC-32 of bytes 0..4 and the payload |
//! | 8 | L | payload |
//! | 8+L | 1 | end marker `0x00`; then `0xFF` padding to the alignment |
//!
//! Every payload starts with a 52-byte [`Snapshot`] (boot u32, next_seq
//! u64, acked_seq u64, four counters u64; all LE). A frame record adds the
//! frame's seq (u64), its origin seq (u64: the seq it had before a
//! renumbering, else equal to seq) and the encoded frame.
//!
//! ## Invariants
//!
//! - The state is the snapshot of the last valid record in (sector seq,
//!   offset) order; `acked_seq` never decreases.
//! - The outbox is every frame record with seq > acked_seq, minus frames
//!   replaced by a renumbered copy (origin seq), ordered by seq.
//! - Power loss during a write leaves a record with a bad CRC, which replay
//!   skips; appending resumes after the last non-erased byte of the newest
//!   sector, so a torn record is never written over.
//! - A sector is erased only when it is not the newest and all its frames
//!   are acked; an interrupted erase leaves a sector whose header fails its
//!   CRC (free) or whose records are all superseded.
//! - Frames never take the last free sector: one stays spare so that the
//!   boot counter and acks can always be written.
//! - Wear: sectors are used round-robin; each header carries its erase count.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use embedded_storage::nor_flash::NorFlash;

/// Sector header magic ("MRVJ").
pub const SECTOR_MAGIC: u32 = 0x4A56_524D;
/// Sector header length.
pub const SECTOR_HEADER_LEN: u32 = 16;
/// Record magic.
pub const RECORD_MAGIC: u8 = 0xA5;
/// Last byte of every record: never 0xFF, so the end of the written data
/// (the last non-erased byte) always covers whole records, whatever the
/// payload ends with.
pub const RECORD_END: u8 = 0x00;
/// Record kind: state only.
pub const KIND_STATE: u8 = 1;
/// Record kind: frame.
pub const KIND_FRAME: u8 = 2;
/// Record header length.
pub const RECORD_HEADER_LEN: u32 = 8;
/// Persistent counters (pulse totals) in a snapshot.
pub const N_COUNTERS: usize = 4;
/// Encoded snapshot length.
pub const SNAPSHOT_LEN: usize = 4 + 8 + 8 + 8 * N_COUNTERS;
/// Frame record fields before the frame bytes (snapshot, seq, origin).
pub const FRAME_PREFIX_LEN: usize = SNAPSHOT_LEN + 16;
/// Most sectors a journal may span.
pub const MAX_SECTORS: u32 = 4096;
const CHUNK: usize = 64;

/// The device state that must survive a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Boot counter (0 before the first boot).
    pub boot: u32,
    /// Next frame sequence number (>= 1).
    pub next_seq: u64,
    /// Highest seq the gateway acked.
    pub acked_seq: u64,
    /// Monotonic counters (pulse totals).
    pub counters: [u64; N_COUNTERS],
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            boot: 0,
            next_seq: 1,
            acked_seq: 0,
            counters: [0; N_COUNTERS],
        }
    }
}

impl Snapshot {
    /// Encodes to the on-flash form.
    pub fn encode(&self) -> [u8; SNAPSHOT_LEN] {
        let mut b = [0u8; SNAPSHOT_LEN];
        b[0..4].copy_from_slice(&self.boot.to_le_bytes());
        b[4..12].copy_from_slice(&self.next_seq.to_le_bytes());
        b[12..20].copy_from_slice(&self.acked_seq.to_le_bytes());
        for (i, c) in self.counters.iter().enumerate() {
            b[20 + 8 * i..28 + 8 * i].copy_from_slice(&c.to_le_bytes());
        }
        b
    }

    /// Decodes the on-flash form.
    pub fn decode(b: &[u8; SNAPSHOT_LEN]) -> Self {
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let mut counters = [0u64; N_COUNTERS];
        for (i, c) in counters.iter_mut().enumerate() {
            *c = u64_at(20 + 8 * i);
        }
        Self {
            boot: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            next_seq: u64_at(4),
            acked_seq: u64_at(12),
            counters,
        }
    }
}

/// Where a stored frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Its sequence number.
    pub seq: u64,
    /// Absolute flash offset of the encoded frame.
    pub addr: u32,
    /// Encoded length.
    pub len: u32,
}

/// Journal errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JournalError<E: core::fmt::Debug> {
    /// The flash failed (or lost power).
    #[error("flash error: {0:?}")]
    Flash(E),
    /// The region is misaligned, too small (3 sectors minimum) or too large.
    #[error("journal region is unusable")]
    BadRegion,
    /// No sector can be reclaimed: too many unacked frames.
    #[error("journal is full of unacked frames")]
    Full,
    /// The record does not fit in one sector.
    #[error("record of {0} bytes does not fit in a sector")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, Default)]
struct SectorInfo {
    seq: Option<u32>,
    erase_count: u32,
    max_frame_seq: u64,
}

/// The journal over a flash region.
#[derive(Debug)]
pub struct Journal<F> {
    flash: F,
    base: u32,
    size: u32,
    align: u32,
    sectors: Vec<SectorInfo>,
    cur: Option<u32>,
    write_at: u32,
    snapshot: Snapshot,
    frames: VecDeque<FrameRef>,
    skipped_records: u32,
}

type R<T, F> = Result<T, JournalError<<F as embedded_storage::nor_flash::ErrorType>::Error>>;

fn align_up(x: u32, a: u32) -> u32 {
    x.div_ceil(a) * a
}

impl<F: NorFlash> Journal<F> {
    /// Opens the journal in `sectors` sectors starting at `base` and
    /// replays it. An erased region gives the default snapshot.
    pub fn open(mut flash: F, base: u32, sectors: u32) -> R<Self, F> {
        let size = F::ERASE_SIZE as u32;
        let align = (F::WRITE_SIZE as u32).max(4);
        if !(3..=MAX_SECTORS).contains(&sectors)
            || !base.is_multiple_of(size)
            || !(CHUNK as u32).is_multiple_of(align)
            || F::READ_SIZE > 1
            || (base as usize + sectors as usize * size as usize) > flash.capacity()
        {
            return Err(JournalError::BadRegion);
        }
        let mut infos = Vec::with_capacity(sectors as usize);
        for i in 0..sectors {
            let mut h = [0u8; 16];
            flash
                .read(base + i * size, &mut h)
                .map_err(JournalError::Flash)?;
            let word = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            let ok = word(0) == SECTOR_MAGIC && word(12) == crc32fast::hash(&h[..12]);
            infos.push(SectorInfo {
                seq: ok.then(|| word(4)),
                erase_count: if ok { word(8) } else { 0 },
                max_frame_seq: 0,
            });
        }
        let mut j = Self {
            flash,
            base,
            size,
            align,
            sectors: infos,
            cur: None,
            write_at: SECTOR_HEADER_LEN,
            snapshot: Snapshot::default(),
            frames: VecDeque::new(),
            skipped_records: 0,
        };
        let mut order: Vec<u32> = (0..sectors)
            .filter(|i| j.sectors[*i as usize].seq.is_some())
            .collect();
        order.sort_by_key(|i| j.sectors[*i as usize].seq);
        for &i in &order {
            let end = j.data_end(i)?;
            j.replay_sector(i, end)?;
            j.cur = Some(i);
            j.write_at = end;
        }
        let max_frame = j.frames.iter().map(|f| f.seq).max().unwrap_or(0);
        let s = &mut j.snapshot;
        s.next_seq = s.next_seq.max(max_frame + 1).max(s.acked_seq + 1);
        Ok(j)
    }

    fn sector_base(&self, i: u32) -> u32 {
        self.base + i * self.size
    }

    /// Offset (within the sector) just after its last non-erased byte,
    /// aligned: where appending may resume.
    fn data_end(&mut self, i: u32) -> R<u32, F> {
        let base = self.sector_base(i);
        let mut end = self.size;
        let mut buf = [0u8; CHUNK];
        while end > SECTOR_HEADER_LEN {
            let start = end.saturating_sub(CHUNK as u32).max(SECTOR_HEADER_LEN);
            let n = (end - start) as usize;
            self.flash
                .read(base + start, &mut buf[..n])
                .map_err(JournalError::Flash)?;
            if let Some(p) = buf[..n].iter().rposition(|b| *b != 0xFF) {
                return Ok(align_up(start + p as u32 + 1, self.align));
            }
            end = start;
        }
        Ok(SECTOR_HEADER_LEN)
    }

    fn replay_sector(&mut self, i: u32, end: u32) -> R<(), F> {
        let base = self.sector_base(i);
        let mut o = SECTOR_HEADER_LEN;
        while o + RECORD_HEADER_LEN <= end {
            match self.check_record(base + o, end - o)? {
                Some((kind, len)) => {
                    self.apply_record(i, base + o, kind, len)?;
                    o += align_up(RECORD_HEADER_LEN + u32::from(len) + 1, self.align);
                }
                None => {
                    self.skipped_records += 1;
                    o += self.align;
                }
            }
        }
        Ok(())
    }

    /// Checks the record at `addr` (at most `room` bytes); returns its kind
    /// and payload length if it is valid.
    fn check_record(&mut self, addr: u32, room: u32) -> R<Option<(u8, u16)>, F> {
        let mut h = [0u8; 8];
        self.flash.read(addr, &mut h).map_err(JournalError::Flash)?;
        let len = u16::from_le_bytes([h[2], h[3]]);
        let kind_ok = match h[1] {
            KIND_STATE => usize::from(len) == SNAPSHOT_LEN,
            KIND_FRAME => usize::from(len) > FRAME_PREFIX_LEN,
            _ => false,
        };
        if h[0] != RECORD_MAGIC || !kind_ok || RECORD_HEADER_LEN + u32::from(len) + 1 > room {
            return Ok(None);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[..4]);
        let mut buf = [0u8; CHUNK];
        let mut at = 0u32;
        while at < u32::from(len) {
            let n = (u32::from(len) - at).min(CHUNK as u32) as usize;
            self.flash
                .read(addr + RECORD_HEADER_LEN + at, &mut buf[..n])
                .map_err(JournalError::Flash)?;
            crc.update(&buf[..n]);
            at += n as u32;
        }
        let stored = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut end = [0u8; 1];
        self.flash
            .read(addr + RECORD_HEADER_LEN + u32::from(len), &mut end)
            .map_err(JournalError::Flash)?;
        Ok((crc.finalize() == stored && end[0] == RECORD_END).then_some((h[1], len)))
    }

    fn apply_record(&mut self, sector: u32, addr: u32, kind: u8, len: u16) -> R<(), F> {
        let mut p = [0u8; FRAME_PREFIX_LEN];
        let n = if kind == KIND_FRAME {
            FRAME_PREFIX_LEN
        } else {
            SNAPSHOT_LEN
        };
        self.flash
            .read(addr + RECORD_HEADER_LEN, &mut p[..n])
            .map_err(JournalError::Flash)?;
        let mut snap_bytes = [0u8; SNAPSHOT_LEN];
        snap_bytes.copy_from_slice(&p[..SNAPSHOT_LEN]);
        let snap = Snapshot::decode(&snap_bytes);
        let acked = self.snapshot.acked_seq.max(snap.acked_seq);
        self.snapshot = Snapshot {
            acked_seq: acked,
            ..snap
        };
        if kind == KIND_FRAME {
            let mut w = [0u8; 8];
            w.copy_from_slice(&p[SNAPSHOT_LEN..SNAPSHOT_LEN + 8]);
            let seq = u64::from_le_bytes(w);
            w.copy_from_slice(&p[SNAPSHOT_LEN + 8..SNAPSHOT_LEN + 16]);
            let origin = u64::from_le_bytes(w);
            let r = FrameRef {
                seq,
                addr: addr + RECORD_HEADER_LEN + FRAME_PREFIX_LEN as u32,
                len: u32::from(len) - FRAME_PREFIX_LEN as u32,
            };
            self.index_frame(r, origin);
            let info = &mut self.sectors[sector as usize];
            info.max_frame_seq = info.max_frame_seq.max(seq);
        }
        self.drop_acked(acked);
        Ok(())
    }

    /// Drops acked frames from the index (it is sorted by seq).
    fn drop_acked(&mut self, acked: u64) {
        while self.frames.front().is_some_and(|f| f.seq <= acked) {
            self.frames.pop_front();
        }
    }

    /// Adds a frame to the index, replacing its origin (or an older copy
    /// of the same seq). New frames have the highest seq: O(1).
    fn index_frame(&mut self, r: FrameRef, origin: u64) {
        let in_order = self.frames.back().is_none_or(|b| b.seq < r.seq);
        if in_order && origin == r.seq {
            self.frames.push_back(r);
            return;
        }
        let seq = r.seq;
        self.frames.retain(|f| f.seq != seq && f.seq != origin);
        let at = self.frames.partition_point(|f| f.seq < seq);
        self.frames.insert(at, r);
    }

    /// The current snapshot (after replay: the last one written).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Unacked frames, by seq.
    pub fn frames(&self) -> &VecDeque<FrameRef> {
        &self.frames
    }

    /// Records replay had to skip (torn writes, garbage).
    pub fn skipped_records(&self) -> u32 {
        self.skipped_records
    }

    /// Erase counts of the sectors, as their headers record them.
    pub fn erase_counts(&self) -> impl Iterator<Item = u32> + '_ {
        self.sectors.iter().map(|s| s.erase_count)
    }

    fn reclaimable(&self, i: u32) -> bool {
        let s = &self.sectors[i as usize];
        Some(i) != self.cur && (s.seq.is_none() || s.max_frame_seq <= self.snapshot.acked_seq)
    }

    /// Whether a frame record of `frame_len` bytes can be written now.
    pub fn has_room_for_frame(&self, frame_len: usize) -> bool {
        let rec = align_up(
            RECORD_HEADER_LEN + (FRAME_PREFIX_LEN + frame_len) as u32 + 1,
            self.align,
        );
        if self.cur.is_some() && self.write_at + rec <= self.size {
            return true;
        }
        let n = self.sectors.len() as u32;
        let next = self.cur.map_or(0, |c| (c + 1) % n);
        self.reclaimable(next) && self.reclaimable((next + 1) % n)
    }

    fn rotate(&mut self, for_frame: bool) -> R<(), F> {
        let n = self.sectors.len() as u32;
        let next = self.cur.map_or(0, |c| (c + 1) % n);
        if !self.reclaimable(next) || (for_frame && !self.reclaimable((next + 1) % n)) {
            return Err(JournalError::Full);
        }
        let seq = self
            .sectors
            .iter()
            .filter_map(|s| s.seq)
            .max()
            .map_or(0, |s| s.wrapping_add(1));
        let erase_count = self.sectors[next as usize].erase_count.wrapping_add(1);
        let b = self.sector_base(next);
        // Mark it unusable in RAM first: if the erase is cut, it is free.
        self.sectors[next as usize] = SectorInfo::default();
        self.flash
            .erase(b, b + self.size)
            .map_err(JournalError::Flash)?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&SECTOR_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&seq.to_le_bytes());
        h[8..12].copy_from_slice(&erase_count.to_le_bytes());
        let crc = crc32fast::hash(&h[..12]);
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        self.flash.write(b, &h).map_err(JournalError::Flash)?;
        self.sectors[next as usize] = SectorInfo {
            seq: Some(seq),
            erase_count,
            max_frame_seq: 0,
        };
        self.cur = Some(next);
        self.write_at = SECTOR_HEADER_LEN;
        Ok(())
    }

    fn append(&mut self, kind: u8, parts: &[&[u8]]) -> R<u32, F> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let rec = align_up(RECORD_HEADER_LEN + len as u32 + 1, self.align);
        if len > usize::from(u16::MAX) || rec > self.size - SECTOR_HEADER_LEN {
            return Err(JournalError::TooLarge(len));
        }
        if self.cur.is_none() || self.write_at + rec > self.size {
            self.rotate(kind == KIND_FRAME)?;
        }
        let cur = self.cur.expect("rotate sets a current sector");
        let addr = self.sector_base(cur) + self.write_at;
        let mut head = [RECORD_MAGIC, kind, 0, 0, 0, 0, 0, 0];
        head[2..4].copy_from_slice(&(len as u16).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[..4]);
        for p in parts {
            crc.update(p);
        }
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        // From here the space is used, whatever happens to the write.
        self.write_at += rec;
        let mut chunk = [0xFFu8; CHUNK];
        let mut fill = 0usize;
        let mut at = addr;
        let end_marker = [RECORD_END];
        for p in core::iter::once(&head[..])
            .chain(parts.iter().copied())
            .chain(core::iter::once(&end_marker[..]))
        {
            let mut rest = p;
            while !rest.is_empty() {
                let n = rest.len().min(CHUNK - fill);
                chunk[fill..fill + n].copy_from_slice(&rest[..n]);
                fill += n;
                rest = &rest[n..];
                if fill == CHUNK {
                    self.flash.write(at, &chunk).map_err(JournalError::Flash)?;
                    at += CHUNK as u32;
                    fill = 0;
                    chunk = [0xFF; CHUNK];
                }
            }
        }
        if fill > 0 {
            let n = align_up(fill as u32, self.align) as usize;
            self.flash
                .write(at, &chunk[..n])
                .map_err(JournalError::Flash)?;
        }
        Ok(addr)
    }

    /// Persists a new state (boot, acks, counters). Frames with seq <=
    /// `snap.acked_seq` leave the outbox once it is durable.
    pub fn write_state(&mut self, snap: Snapshot) -> R<(), F> {
        let snap = Snapshot {
            acked_seq: snap.acked_seq.max(self.snapshot.acked_seq),
            ..snap
        };
        self.append(KIND_STATE, &[&snap.encode()])?;
        self.snapshot = snap;
        self.drop_acked(snap.acked_seq);
        Ok(())
    }

    /// Persists a frame with `seq` (and `origin`, the seq it replaces when
    /// renumbered, else `seq`) together with `snap`.
    pub fn append_frame(
        &mut self,
        snap: Snapshot,
        seq: u64,
        origin: u64,
        bytes: &[u8],
    ) -> R<FrameRef, F> {
        let snap = Snapshot {
            acked_seq: snap.acked_seq.max(self.snapshot.acked_seq),
            ..snap
        };
        let addr = self.append(
            KIND_FRAME,
            &[
                &snap.encode(),
                &seq.to_le_bytes(),
                &origin.to_le_bytes(),
                bytes,
            ],
        )?;
        self.snapshot = snap;
        let r = FrameRef {
            seq,
            addr: addr + RECORD_HEADER_LEN + FRAME_PREFIX_LEN as u32,
            len: bytes.len() as u32,
        };
        self.index_frame(r, origin);
        let cur = self.cur.expect("append sets a current sector");
        let info = &mut self.sectors[cur as usize];
        info.max_frame_seq = info.max_frame_seq.max(seq);
        Ok(r)
    }

    /// Reads a stored frame into `buf` (resized to fit).
    pub fn read_frame(&mut self, r: &FrameRef, buf: &mut Vec<u8>) -> R<(), F> {
        buf.clear();
        buf.resize(r.len as usize, 0);
        self.flash.read(r.addr, buf).map_err(JournalError::Flash)
    }

    /// The flash (e.g. to arm a simulated power cut).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::ram_flash::RamFlash;
    use proptest::prelude::*;

    fn snap(acked: u64, next: u64) -> Snapshot {
        Snapshot {
            boot: 1,
            next_seq: next,
            acked_seq: acked,
            counters: [next * 10, 0, 0, 0],
        }
    }

    #[test]
    fn an_erased_region_replays_to_the_default_state() {
        let j = Journal::open(RamFlash::new(4), 0, 4).unwrap();
        assert_eq!(*j.snapshot(), Snapshot::default());
        assert!(j.frames().is_empty());
        assert!(Journal::open(RamFlash::new(4), 0, 2).is_err());
    }

    #[test]
    fn frames_and_acks_survive_reopening() {
        let mut j = Journal::open(RamFlash::new(4), 0, 4).unwrap();
        for seq in 1..=5 {
            j.append_frame(snap(0, seq + 1), seq, seq, &[seq as u8; 100])
                .unwrap();
        }
        j.write_state(snap(3, 6)).unwrap();
        let mut j = Journal::open(j.into_flash(), 0, 4).unwrap();
        assert_eq!(j.snapshot().acked_seq, 3);
        assert_eq!(j.snapshot().next_seq, 6);
        let seqs: Vec<u64> = j.frames().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [4, 5]);
        let r = j.frames()[1];
        let mut b = Vec::new();
        j.read_frame(&r, &mut b).unwrap();
        assert_eq!(b, [5u8; 100]);
    }

    #[test]
    fn sectors_are_reused_round_robin_once_acked_and_full_otherwise() {
        let mut j = Journal::open(RamFlash::new(3), 0, 3).unwrap();
        let mut seq = 0;
        // Fill: one spare sector must stay free.
        loop {
            seq += 1;
            match j.append_frame(snap(0, seq + 1), seq, seq, &[1; 500]) {
                Ok(_) => {}
                Err(JournalError::Full) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        let stored = seq - 1;
        assert!(stored >= 7, "{stored}");
        assert!(!j.has_room_for_frame(500));
        // State still fits (spare sector).
        j.write_state(snap(stored, stored + 1)).unwrap();
        for _ in 0..50 {
            let s = stored + 1 + seq;
            seq += 1;
            j.append_frame(snap(s - 1, s + 1), s, s, &[2; 500]).unwrap();
            j.write_state(snap(s, s + 1)).unwrap();
        }
        let f = j.into_flash();
        let counts = f.erase_counts().to_vec();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*lo >= 3 && hi - lo <= 1, "uneven wear {counts:?}");
        assert_eq!(f.overwrites(), 0);
    }

    #[test]
    fn a_large_outbox_replays_in_order() {
        let mut j = Journal::open(RamFlash::new(400), 0, 400).unwrap();
        for seq in 1..=6000u64 {
            j.append_frame(snap(0, seq + 1), seq, seq, &[seq as u8; 100])
                .unwrap();
        }
        j.write_state(snap(1000, 6001)).unwrap();
        let j = Journal::open(j.into_flash(), 0, 400).unwrap();
        let seqs: Vec<u64> = j.frames().iter().map(|f| f.seq).collect();
        let missing: Vec<u64> = (1001..=6000).filter(|s| !seqs.contains(s)).collect();
        assert!(missing.is_empty(), "missing {missing:?}");
        assert_eq!(seqs.len(), 5000);
        assert_eq!(j.snapshot().next_seq, 6001);
    }

    #[test]
    fn a_renumbered_copy_replaces_its_origin() {
        let mut j = Journal::open(RamFlash::new(4), 0, 4).unwrap();
        for seq in 1..=3 {
            j.append_frame(snap(0, seq + 1), seq, seq, &[seq as u8; 8])
                .unwrap();
        }
        // Gateway says 100: renumber 1 -> 101, crash before the rest.
        j.append_frame(snap(0, 102), 101, 1, &[1; 8]).unwrap();
        let j = Journal::open(j.into_flash(), 0, 4).unwrap();
        let seqs: Vec<u64> = j.frames().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [2, 3, 101]);
        assert_eq!(j.snapshot().next_seq, 102);
    }

    /// Model-based: random appends/acks with a power cut at a random byte;
    /// after replay, the outbox is exactly the model's (a torn last write
    /// may be either absent or present), nothing acked comes back, and the
    /// flash never needed a 0 -> 1 write.
    fn run_with_cut(ops: &[(bool, u16)], cut_at: usize) -> Result<(), TestCaseError> {
        let mut flash = RamFlash::new(5);
        flash.cut_power_after(cut_at);
        let mut model_frames: Vec<u64> = Vec::new();
        let mut acked = 0u64;
        let mut next = 1u64;
        let mut torn: Option<(bool, u64)> = None;
        {
            let mut j = match Journal::open(flash, 0, 5) {
                Ok(j) => j,
                Err(_) => return Ok(()),
            };
            for &(is_ack, size) in ops {
                if is_ack {
                    if let Some(&first) = model_frames.first() {
                        let a = first + u64::from(size % 3);
                        let a = a.min(next - 1);
                        match j.write_state(snap(a, next)) {
                            Ok(()) => {
                                acked = acked.max(a);
                                model_frames.retain(|s| *s > acked);
                            }
                            Err(JournalError::Flash(_)) => {
                                torn = Some((true, a));
                                break;
                            }
                            Err(e) => return Err(TestCaseError::fail(alloc::format!("{e:?}"))),
                        }
                    }
                } else {
                    let len = usize::from(size % 600) + 1;
                    if !j.has_room_for_frame(len) {
                        continue;
                    }
                    match j.append_frame(
                        snap(acked, next + 1),
                        next,
                        next,
                        &alloc::vec![next as u8; len],
                    ) {
                        Ok(_) => {
                            model_frames.push(next);
                            next += 1;
                        }
                        Err(JournalError::Flash(_)) => {
                            torn = Some((false, next));
                            break;
                        }
                        Err(e) => return Err(TestCaseError::fail(alloc::format!("{e:?}"))),
                    }
                }
            }
            flash = j.into_flash();
        }
        flash.power_on();
        prop_assert_eq!(flash.overwrites(), 0);
        let mut j = Journal::open(flash, 0, 5).unwrap();
        let got: Vec<u64> = j.frames().iter().map(|f| f.seq).collect();
        match torn {
            None => prop_assert_eq!(&got, &model_frames),
            Some((false, seq)) => {
                let mut with = model_frames.clone();
                with.push(seq);
                prop_assert!(
                    got == model_frames || got == with,
                    "{:?} vs {:?}",
                    got,
                    model_frames
                );
            }
            Some((true, a)) => {
                let mut after = model_frames.clone();
                after.retain(|s| *s > a);
                prop_assert!(
                    got == model_frames || got == after,
                    "{:?} vs {:?}",
                    got,
                    model_frames
                );
            }
        }
        // Contents intact.
        let refs: Vec<FrameRef> = j.frames().iter().copied().collect();
        for r in refs {
            let mut b = Vec::new();
            j.read_frame(&r, &mut b).unwrap();
            prop_assert!(b.iter().all(|x| *x == r.seq as u8));
        }
        // The journal keeps working after the cut.
        let s = *j.snapshot();
        prop_assert!(s.next_seq > got.last().copied().unwrap_or(0));
        prop_assert!(s.next_seq > s.acked_seq);
        j.write_state(Snapshot {
            boot: s.boot + 1,
            ..s
        })
        .unwrap();
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn power_cuts_never_lose_or_revive_frames(
            ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..80),
            cut_at in 0usize..30_000,
        ) {
            run_with_cut(&ops, cut_at)?;
        }
    }
}
