//! Model-based tests: random sequences of appends (duplicates, out of order
//! refused by go-back-N, regressions, gateway-numbered frames), give-ups,
//! cursor moves, event records, prunes and crash/reopen, run against the real sled buffer and against a
//! simple in-memory model; every observable (outcomes, acks, device
//! bookkeeping, scans, cursors, stats, events) must match after each step.
//!
//! The model keeps every seq it ever stored per device in a `BTreeSet` and
//! every kept frame in a `Vec`; it shares no code with the buffer except the
//! frame type. It takes two facts from the buffer as inputs: the keys the
//! buffer gave stored frames (checked to be strictly increasing) and the
//! logical byte count (the full policy is then predicted from it).

use super::*;
use mrv_shared::event::{Event, EventKind, SeqRange};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Ack, AckStatus, Frame};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const KEEP_MS: u64 = 1_000;

fn frame(device: usize, seq: u64, boot: u32, samples: usize) -> Frame {
    Frame {
        site: SiteId::new("site-1").expect("valid id"),
        device: dev(device),
        seq,
        boot,
        firmware: "fw-1.0".into(),
        base_time_ms: Some(1_700_000_000_000 + seq.saturating_mul(60_000) % 1_000_000_000_000),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid id"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: (0..samples)
            .map(|i| Sample {
                channel: 0,
                offset_ms: i as u32 * 1000,
                value: (seq as i64) * 100 + i as i64,
                quality: Quality::GOOD,
            })
            .collect(),
        signature: None,
    }
}

fn dev(i: usize) -> DeviceId {
    DeviceId::new(&format!("dev-{i}")).expect("valid id")
}

#[derive(Debug, Clone)]
enum Op {
    /// (device, seq, boot, samples); seq 0 = gateway numbers it; seq
    /// [`NEXT`] = the device's next seq in order (resolved at run time).
    Append(Vec<(usize, u64, u32, usize)>),
    /// Give up device's missing frames through `contiguous + n`.
    GiveUp(usize, u64),
    /// Cursor, position as a fraction (per mille) of all stored frames;
    /// 1000 = one past the end (must fail).
    SetCursor(CursorName, u16),
    Event,
    EventsDelivered(u16),
    /// Advance the clock by this much, then prune.
    Prune(u64),
    /// Drop the buffer without anything else, then reopen the same dir.
    Crash,
    /// Drop the buffer, damage sled's snapshot files as a crash or a full
    /// disk does (see `sled_files`), then reopen: nothing may be lost.
    CrashDamagingSnapshot(SnapshotDamage),
}

/// What a crash or ENOSPC leaves of sled's snapshot.
#[derive(Debug, Clone, Copy)]
enum SnapshotDamage {
    /// An empty `snap.<lsn>.generating` above every snapshot (sled issue 1527).
    EmptyGenerating,
    /// The newest snapshot's last byte flipped.
    FlippedNewest,
    /// Every snapshot gone: the whole log is replayed.
    NoneLeft,
}

/// Stands for "the device's next seq in order" in generated appends.
const NEXT: u64 = u64::MAX;

fn op() -> impl Strategy<Value = Op> {
    let seq = prop_oneof![3 => 0u64..14, 2 => Just(NEXT)];
    let item = (0usize..3, seq, 0u32..3, 1usize..4);
    prop_oneof![
        6 => prop::collection::vec(item, 1..8).prop_map(Op::Append),
        1 => (0usize..3, 0u64..4).prop_map(|(d, n)| Op::GiveUp(d, n)),
        3 => (prop_oneof![Just(CursorName::Reported), Just(CursorName::Delivered)], 0u16..=1000)
            .prop_map(|(c, p)| Op::SetCursor(c, p)),
        1 => Just(Op::Event),
        1 => (0u16..=1000).prop_map(Op::EventsDelivered),
        2 => prop_oneof![0u64..600, 600u64..3_000].prop_map(Op::Prune),
        1 => Just(Op::Crash),
        1 => prop_oneof![
            Just(SnapshotDamage::EmptyGenerating),
            Just(SnapshotDamage::FlippedNewest),
            Just(SnapshotDamage::NoneLeft),
        ]
        .prop_map(Op::CrashDamagingSnapshot),
    ]
}

#[derive(Debug, Default)]
struct ModelDevice {
    stored: BTreeSet<u64>,
    /// Seqs given up.
    given_up: BTreeSet<u64>,
    boot: u32,
}

impl ModelDevice {
    fn highest(&self) -> u64 {
        self.contiguous()
    }
    fn accounted(&self, q: u64) -> bool {
        self.stored.contains(&q) || self.given_up.contains(&q)
    }
    fn contiguous(&self) -> u64 {
        let mut c = 0;
        while self.accounted(c + 1) {
            c += 1;
        }
        c
    }
    fn gaps(&self) -> Vec<(u64, u64)> {
        let c = self.contiguous();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for q in c + 1..self.highest() {
            if self.stored.contains(&q) {
                continue;
            }
            match out.last_mut() {
                Some(g) if g.1 + 1 == q => g.1 = q,
                _ => out.push((q, q)),
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct Model {
    devices: BTreeMap<DeviceId, ModelDevice>,
    /// Kept frames in storage order.
    kept: Vec<StoredFrame>,
    /// Every key ever stored, in order.
    all_keys: Vec<FrameKey>,
    reported: Option<FrameKey>,
    delivered: Option<FrameKey>,
    events: Vec<(u64, Event)>,
    next_event: u64,
    events_delivered: Option<u64>,
    now: u64,
}

struct Harness {
    dir: tempfile::TempDir,
    max_bytes: u64,
    buf: Option<Buffer>,
    m: Model,
}

impl Harness {
    fn new(max_bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = Harness {
            dir,
            max_bytes,
            buf: None,
            m: Model {
                next_event: 1,
                now: 1_000_000,
                ..Model::default()
            },
        };
        h.reopen();
        h
    }

    fn reopen(&mut self) {
        self.buf = None;
        self.buf = Some(
            Buffer::open(BufferConfig {
                path: self.dir.path().join("buffer"),
                max_bytes: self.max_bytes,
                cache_bytes: 1 << 20,
                keep_delivered: Duration::from_millis(KEEP_MS),
            })
            .expect("open buffer"),
        );
    }

    fn buf(&self) -> &Buffer {
        self.buf.as_ref().expect("buffer is open")
    }

    fn full(&self) -> bool {
        self.buf().stats().bytes >= self.max_bytes
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(items) => self.append(items),
            Op::SetCursor(name, per_mille) => self.set_cursor(*name, *per_mille),
            Op::Event => {
                self.m.now += 1;
                let ev = Event {
                    time_ms: self.m.now,
                    kind: EventKind::DeviceOnline,
                    device: Some(dev(0)),
                    seqs: None,
                    detail: format!("event at {}", self.m.now),
                };
                self.buf()
                    .record_events(std::slice::from_ref(&ev))
                    .expect("record event");
                self.m.events.push((self.m.next_event, ev));
                self.m.next_event += 1;
                Ok(())
            }
            Op::EventsDelivered(per_mille) => {
                let id = (self.m.next_event - 1) * u64::from(*per_mille) / 1000;
                let r = self.buf().set_events_delivered(id);
                if id == 0 {
                    prop_assert!(self.m.events_delivered.is_some() || r.is_err());
                } else {
                    prop_assert!(r.is_ok(), "set_events_delivered({id}): {r:?}");
                    self.m.events_delivered = self.m.events_delivered.max(Some(id));
                }
                Ok(())
            }
            Op::Prune(advance) => self.prune(*advance),
            Op::GiveUp(d, n) => {
                self.m.now += 1;
                let device = dev(*d);
                let md = self.m.devices.entry(device.clone()).or_default();
                let through = md.contiguous() + n;
                let want = (*n > 0).then(|| SeqRange {
                    first: md.contiguous() + 1,
                    last: through,
                });
                let got = self
                    .buf
                    .as_ref()
                    .expect("buffer is open")
                    .give_up(&device, through, "operator: model test", self.m.now)
                    .expect("give up");
                prop_assert_eq!(got, want);
                if let Some(r) = want {
                    md.given_up.extend(r.first..=r.last);
                    self.m.events.push((
                        self.m.next_event,
                        Event {
                            time_ms: self.m.now,
                            kind: EventKind::FramesGivenUp,
                            device: Some(device),
                            seqs: Some(r),
                            detail: String::new(),
                        },
                    ));
                    self.m.next_event += 1;
                }
                Ok(())
            }
            Op::Crash => {
                self.reopen();
                Ok(())
            }
            Op::CrashDamagingSnapshot(damage) => {
                self.buf = None;
                damage_snapshots(&self.dir.path().join("buffer"), *damage);
                self.reopen();
                prop_assert!(
                    sled_files::plan(&self.dir.path().join("buffer"))
                        .expect("plan")
                        .is_empty(),
                    "open left something to repair"
                );
                Ok(())
            }
        }
    }

    fn append(&mut self, items: &[(usize, u64, u32, usize)]) -> Result<(), TestCaseError> {
        let was_full = self.full();
        prop_assert_eq!(self.buf().stats().full, was_full);
        self.m.now += 10;
        let rx = self.m.now;
        let incoming: Vec<Incoming> = items
            .iter()
            .map(|&(d, seq, boot, n)| Incoming {
                frame: frame(d, seq, boot, n),
                received_ms: rx,
            })
            .collect();
        // Model decisions.
        let mut expected = Vec::new();
        let mut stored_frames = Vec::new();
        let mut order: Vec<(DeviceId, bool, bool)> = Vec::new();
        let mut incoming = incoming;
        for inc in incoming.iter_mut() {
            if inc.frame.seq == NEXT {
                let md = self.m.devices.entry(inc.frame.device.clone()).or_default();
                inc.frame.seq = md.contiguous() + 1;
                inc.frame.base_time_ms = Some(1_700_000_000_000 + inc.frame.seq * 60_000);
            }
            let f = &inc.frame;
            let pos = match order.iter().position(|(d, _, _)| *d == f.device) {
                Some(p) => p,
                None => {
                    order.push((f.device.clone(), false, false));
                    order.len() - 1
                }
            };
            let md = self.m.devices.entry(f.device.clone()).or_default();
            let seq = if f.seq == 0 { md.highest() + 1 } else { f.seq };
            let outcome = if f.seq != 0 && f.boot > md.boot && f.seq <= md.highest() {
                order[pos].1 = true;
                AppendOutcome::Regressed
            } else if f.seq != 0 && md.accounted(f.seq) {
                AppendOutcome::Duplicate
            } else if f.seq != 0 && f.seq > md.contiguous() + 1 {
                AppendOutcome::OutOfOrder
            } else if was_full {
                order[pos].2 = true;
                AppendOutcome::BufferFull
            } else {
                md.stored.insert(seq);
                md.boot = md.boot.max(f.boot);
                let mut stored = f.clone();
                stored.seq = seq;
                stored_frames.push(stored);
                AppendOutcome::Stored
            };
            expected.push(outcome);
        }
        let res = self.buf().append(incoming).expect("append");
        prop_assert_eq!(&res.outcomes, &expected);
        prop_assert_eq!(res.keys.len(), stored_frames.len());
        // The frames handed back are exactly the stored ones, with their
        // assigned seqs (gateway-sequenced frames too).
        let handed_back: Vec<&Frame> = res.stored.iter().map(|i| &i.frame).collect();
        prop_assert_eq!(handed_back, stored_frames.iter().collect::<Vec<_>>());
        prop_assert!(res.stored.iter().all(|i| i.received_ms == rx));
        for (key, f) in res.keys.iter().zip(stored_frames) {
            prop_assert!(
                self.m.all_keys.last().is_none_or(|l| l < key),
                "keys increase"
            );
            self.m.all_keys.push(*key);
            self.m.kept.push(StoredFrame {
                key: *key,
                frame: f,
                received_ms: rx,
            });
        }
        let acks: Vec<(DeviceId, Ack)> = order
            .into_iter()
            .map(|(d, regressed, refused)| {
                let acked_seq = self.m.devices[&d].contiguous();
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
        prop_assert_eq!(res.acks, acks);
        if !was_full && self.full() {
            self.m.events.push((
                self.m.next_event,
                Event {
                    time_ms: rx,
                    kind: EventKind::BufferFull,
                    device: None,
                    seqs: None,
                    detail: String::new(),
                },
            ));
            self.m.next_event += 1;
        }
        Ok(())
    }

    fn set_cursor(&mut self, name: CursorName, per_mille: u16) -> Result<(), TestCaseError> {
        let n = self.m.all_keys.len();
        let key = if per_mille == 1000 || n == 0 {
            match self.m.all_keys.last() {
                Some(k) => FrameKey {
                    batch: k.batch,
                    index: k.index + 1,
                },
                None => FrameKey { batch: 1, index: 0 },
            }
        } else {
            self.m.all_keys[(n - 1) * usize::from(per_mille) / 1000]
        };
        let current = match name {
            CursorName::Reported => self.m.reported,
            CursorName::Delivered => self.m.delivered,
        };
        let r = self.buf().set_cursor(name, key);
        if current.is_some_and(|c| key <= c) {
            prop_assert!(r.is_ok(), "moving back is a no-op: {r:?}");
            return Ok(());
        }
        if !self.m.all_keys.contains(&key) {
            prop_assert!(
                matches!(r, Err(StoreError::NoSuchFrame { .. })),
                "{key} is not stored: {r:?}"
            );
            return Ok(());
        }
        if name == CursorName::Delivered && self.m.reported.is_none_or(|rep| key > rep) {
            prop_assert!(
                matches!(r, Err(StoreError::DeliveredPastReported { .. })),
                "{r:?}"
            );
            return Ok(());
        }
        prop_assert!(r.is_ok(), "set_cursor({name:?}, {key}): {r:?}");
        match name {
            CursorName::Reported => self.m.reported = Some(key),
            CursorName::Delivered => self.m.delivered = Some(key),
        }
        Ok(())
    }

    fn prune(&mut self, advance: u64) -> Result<(), TestCaseError> {
        let was_full = self.full();
        self.m.now += advance;
        let cutoff = self.m.now - KEEP_MS;
        // Batches are runs of kept frames with the same batch id.
        let mut drop_n = 0;
        if let Some(delivered) = self.m.delivered {
            while drop_n < self.m.kept.len() {
                let batch = self.m.kept[drop_n].key.batch;
                let end = self.m.kept[drop_n..]
                    .iter()
                    .position(|f| f.key.batch != batch)
                    .map_or(self.m.kept.len(), |p| drop_n + p);
                let run = &self.m.kept[drop_n..end];
                let last = run.last().expect("non-empty run").key;
                let newest = run.iter().map(|f| f.received_ms).max().unwrap_or(0);
                if last > delivered || newest >= cutoff {
                    break;
                }
                drop_n = end;
            }
        }
        let mut drop_events = 0;
        if let Some(ed) = self.m.events_delivered {
            for (id, ev) in &self.m.events {
                if *id > ed || ev.time_ms >= cutoff {
                    break;
                }
                drop_events += 1;
            }
        }
        let stats = self.buf().prune(self.m.now).expect("prune");
        let dropped: Vec<_> = self.m.kept.drain(..drop_n).collect();
        self.m.events.drain(..drop_events);
        prop_assert_eq!(stats.frames, dropped.len() as u64);
        prop_assert_eq!(
            stats.readings,
            dropped
                .iter()
                .map(|f| f.frame.samples.len() as u64)
                .sum::<u64>()
        );
        prop_assert_eq!(stats.events, drop_events as u64);
        if was_full && !self.full() {
            self.m.events.push((
                self.m.next_event,
                Event {
                    time_ms: self.m.now,
                    kind: EventKind::BufferRecovered,
                    device: None,
                    seqs: None,
                    detail: String::new(),
                },
            ));
            self.m.next_event += 1;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let b = self.buf();
        let full = self.full();
        let stats = b.stats();
        prop_assert_eq!(stats.full, full);
        for (d, md) in &self.m.devices {
            let status = if full {
                AckStatus::BufferFull
            } else {
                AckStatus::Ok
            };
            prop_assert_eq!(
                b.ack_for(d),
                Ack {
                    acked_seq: md.contiguous(),
                    status
                }
            );
        }
        let summaries = b.devices();
        let with_frames: Vec<_> = self
            .m
            .devices
            .iter()
            .filter(|(_, md)| !md.stored.is_empty() || !md.given_up.is_empty())
            .collect();
        prop_assert_eq!(summaries.len(), with_frames.len());
        for (s, (d, md)) in summaries.iter().zip(with_frames) {
            prop_assert_eq!(&s.device, d);
            prop_assert_eq!(s.acked_seq, md.contiguous());
            prop_assert_eq!(s.highest_seq, md.highest());
            prop_assert_eq!(s.boot, md.boot);
            prop_assert_eq!(s.frames, md.stored.len() as u64);
            prop_assert_eq!(&s.gaps, &md.gaps());
        }
        let all: Vec<StoredFrame> = b.scan(None).collect::<Result<_, _>>().expect("scan");
        prop_assert_eq!(&all, &self.m.kept);
        let unreported: Vec<&StoredFrame> = self
            .m
            .kept
            .iter()
            .filter(|f| self.m.reported.is_none_or(|r| f.key > r))
            .collect();
        let scanned: Vec<StoredFrame> = b
            .scan(self.m.reported)
            .collect::<Result<_, _>>()
            .expect("scan after reported");
        prop_assert_eq!(scanned.iter().collect::<Vec<_>>(), unreported.clone());
        prop_assert_eq!(b.cursor(CursorName::Reported), self.m.reported);
        prop_assert_eq!(b.cursor(CursorName::Delivered), self.m.delivered);
        prop_assert_eq!(stats.frames, self.m.kept.len() as u64);
        prop_assert_eq!(
            stats.readings,
            self.m
                .kept
                .iter()
                .map(|f| f.frame.samples.len() as u64)
                .sum::<u64>()
        );
        prop_assert_eq!(stats.unreported_frames, unreported.len() as u64);
        prop_assert_eq!(
            stats.unreported_readings,
            unreported
                .iter()
                .map(|f| f.frame.samples.len() as u64)
                .sum::<u64>()
        );
        prop_assert_eq!(
            stats.oldest_unreported_ms,
            unreported.first().map(|f| f.received_ms)
        );
        prop_assert_eq!(stats.bytes == 0, self.m.kept.is_empty());
        let events: Vec<(u64, Event)> = b
            .events_after(None)
            .collect::<Result<_, _>>()
            .expect("events");
        prop_assert_eq!(events.len(), self.m.events.len());
        for ((id, ev), (mid, mev)) in events.iter().zip(&self.m.events) {
            prop_assert_eq!(id, mid);
            prop_assert_eq!(ev.kind, mev.kind);
            prop_assert_eq!(ev.time_ms, mev.time_ms);
            prop_assert_eq!(ev.seqs, mev.seqs);
            if !mev.detail.is_empty() {
                prop_assert_eq!(&ev.detail, &mev.detail);
            }
        }
        prop_assert_eq!(b.events_delivered(), self.m.events_delivered);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn buffer_matches_the_model(
        max_bytes in prop_oneof![Just(1_500u64), Just(u64::MAX)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::new(max_bytes);
        for op in &ops {
            h.step(op)?;
            h.check()?;
        }
        let report = h.buf().verify(|_| {}).expect("verify");
        prop_assert!(report.is_ok(), "verify: {:?}", report.problems);
        h.reopen();
        h.check()?;
    }
}

/// Damages sled's snapshots in `dir` (the buffer must be closed).
fn damage_snapshots(dir: &std::path::Path, damage: SnapshotDamage) {
    let mut snaps: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("ls buffer")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap."))
        })
        .collect();
    snaps.sort();
    match damage {
        SnapshotDamage::EmptyGenerating => {
            std::fs::write(dir.join("snap.7FFFFFFFFFFFFFFF.generating"), b"")
                .expect("write generating");
        }
        SnapshotDamage::FlippedNewest => {
            if let Some(p) = snaps.last() {
                let mut b = std::fs::read(p).expect("read snapshot");
                if let Some(x) = b.last_mut() {
                    *x ^= 0x40;
                }
                std::fs::write(p, b).expect("write snapshot");
            }
        }
        SnapshotDamage::NoneLeft => {
            for p in snaps {
                std::fs::remove_file(p).expect("remove snapshot");
            }
        }
    }
}

fn open_at(dir: &std::path::Path, max_bytes: u64) -> Buffer {
    Buffer::open(BufferConfig {
        path: dir.to_path_buf(),
        max_bytes,
        cache_bytes: 1 << 20,
        keep_delivered: Duration::from_millis(KEEP_MS),
    })
    .expect("open buffer")
}

#[test]
fn a_large_append_is_split_into_batches_and_reads_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open_at(dir.path(), u64::MAX);
    let incoming: Vec<Incoming> = (1..=400)
        .map(|q| Incoming {
            frame: frame(0, q, 0, 60),
            received_ms: q,
        })
        .collect();
    let r = b.append(incoming).expect("append");
    assert!(r.outcomes.iter().all(|o| *o == AppendOutcome::Stored));
    let batches: BTreeSet<u64> = r.keys.iter().map(|k| k.batch).collect();
    assert!(
        batches.len() > 1,
        "400 frames of 60 samples exceed one batch"
    );
    let seqs: Vec<u64> = b.scan(None).map(|f| f.expect("frame").frame.seq).collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    assert_eq!(b.ack_for(&dev(0)).acked_seq, 400);
    assert_eq!(b.stats().readings, 400 * 60);
}

#[test]
fn an_invalid_frame_is_refused_alone_and_the_rest_of_its_append_is_stored() {
    // What became of the mapping stage's status-1844 frame (fuzz finding,
    // issue 14) at the writer: the buffer checks the frame rules after
    // numbering and refuses that frame for good, with its reason; the valid
    // frames of the same group commit are stored (one bad frame must not
    // cost every other device its write, again at every re-send).
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open_at(dir.path(), u64::MAX);
    let mut bad = frame(1, 0, 0, 1);
    bad.channels[0].quantity = Quantity::Status;
    bad.channels[0].kind = ValueKind::Instant;
    bad.samples[0].value = 1844;
    let batch = vec![
        Incoming {
            frame: frame(0, 1, 0, 1),
            received_ms: 5,
        },
        Incoming {
            frame: bad,
            received_ms: 5,
        },
        Incoming {
            frame: frame(1, 0, 0, 1),
            received_ms: 5,
        },
    ];
    let r = b
        .append(batch)
        .expect("an invalid frame is not a failed write");
    assert_eq!(
        r.outcomes,
        [
            AppendOutcome::Stored,
            AppendOutcome::Invalid,
            AppendOutcome::Stored
        ]
    );
    assert_eq!(
        r.invalid,
        vec![(
            1,
            FrameRefusal::BreaksRules(mrv_shared::wire::FrameError::StatusValue(1844))
        )]
    );
    assert!(!b.is_poisoned());
    let stored: Vec<(String, u64)> = b
        .scan(None)
        .map(|f| {
            let f = f.expect("frame").frame;
            (f.device.to_string(), f.seq)
        })
        .collect();
    // The refused frame took no number: the next gateway-numbered frame of
    // its device is seq 1.
    assert_eq!(
        stored,
        vec![("dev-0".to_string(), 1), ("dev-1".to_string(), 1)]
    );
    assert_eq!(
        (b.ack_for(&dev(0)).acked_seq, b.ack_for(&dev(1)).acked_seq),
        (1, 1)
    );
    assert_eq!(b.stats().frames, 2);
}

#[test]
fn a_full_buffer_refuses_new_frames_but_still_acks_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open_at(dir.path(), 1);
    let one = |q| {
        vec![Incoming {
            frame: frame(0, q, 0, 1),
            received_ms: 5,
        }]
    };
    assert_eq!(
        b.append(one(1)).expect("append").outcomes,
        [AppendOutcome::Stored]
    );
    assert!(b.stats().full);
    let r = b.append(one(2)).expect("append");
    assert_eq!(r.outcomes, [AppendOutcome::BufferFull]);
    assert_eq!(
        r.acks[0].1,
        Ack {
            acked_seq: 1,
            status: AckStatus::BufferFull
        }
    );
    let r = b.append(one(1)).expect("append");
    assert_eq!(r.outcomes, [AppendOutcome::Duplicate]);
    assert_eq!(r.acks[0].1.acked_seq, 1);
    let kinds: Vec<EventKind> = b
        .events_after(None)
        .map(|e| e.expect("event").1.kind)
        .collect();
    assert_eq!(kinds, [EventKind::BufferFull]);
    assert_eq!(b.stats().full_events, 1);
}

#[test]
fn a_damaged_batch_is_reported_by_verify_and_scan_and_pruned_once_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buf");
    {
        let b = open_at(&path, u64::MAX);
        for q in 1..=4 {
            b.append(vec![Incoming {
                frame: frame(0, q, 0, 2),
                received_ms: q,
            }])
            .expect("append");
        }
        assert!(b.verify(|_| {}).expect("verify").is_ok());
    }
    // Corrupt batch 2 behind the buffer's back.
    {
        let db = super::sled_store::open_raw_sled_for_test(&path);
        let t = db.open_tree("buffer.v1").expect("tree");
        let k = super::record::batch_key(2);
        let mut v = t.get(k).expect("get").expect("batch 2").to_vec();
        let last = v.len() - 10;
        v[last] ^= 0xff;
        t.insert(k, v).expect("insert");
        db.flush().expect("flush");
    }
    let b = open_at(&path, u64::MAX);
    let rep = b.verify(|_| {}).expect("verify");
    assert!(!rep.is_ok());
    assert!(
        rep.problems.iter().any(|p| p.key == "d:2"),
        "{:?}",
        rep.problems
    );
    let items: Vec<_> = b.scan(None).collect();
    assert_eq!(items.len(), 4);
    assert!(items[1].is_err());
    assert_eq!(items[2].as_ref().expect("batch 3").frame.seq, 3);
    // A damaged batch before the delivered cursor's batch goes with pruning,
    // and the kept counters stay exact.
    let k3 = FrameKey { batch: 3, index: 0 };
    b.set_cursor(CursorName::Reported, k3).expect("reported");
    b.set_cursor(CursorName::Delivered, k3).expect("delivered");
    let p = b.prune(1_000_000).expect("prune");
    assert_eq!((p.batches, p.damaged, p.frames), (3, 1, 2));
    let stats = b.stats();
    assert_eq!((stats.frames, stats.readings), (1, 2));
    let rep = b.verify(|_| {}).expect("verify");
    assert!(rep.is_ok(), "{:?}", rep.problems);
}

/// Child half of [`acked_frames_survive_a_killed_process`]: appends until
/// killed, printing each device ack after `append` returned.
#[test]
#[ignore = "run by acked_frames_survive_a_killed_process as a child process"]
fn crash_child_appends_until_killed() {
    let Some(dir) = std::env::var_os("MRV_BUFFER_CRASH_DIR") else {
        return;
    };
    let b = open_at(std::path::Path::new(&dir), u64::MAX);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for round in 0u64.. {
        let incoming: Vec<Incoming> = (0..3)
            .flat_map(|d| {
                (1..=4).map(move |i| Incoming {
                    frame: frame(d, round * 4 + i, 0, 8),
                    received_ms: round,
                })
            })
            .collect();
        let r = b.append(incoming).expect("append");
        for (d, ack) in r.acks {
            writeln!(out, "ack {d} {}", ack.acked_seq).expect("stdout");
        }
        out.flush().expect("stdout");
    }
}

#[test]
fn acked_frames_survive_a_killed_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buffer");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "model_tests::crash_child_appends_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MRV_BUFFER_CRASH_DIR", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue;
        }
        let d = parts.next().expect("device").to_string();
        let seq: u64 = parts.next().expect("seq").parse().expect("number");
        acked.insert(d, seq);
        lines += 1;
        if lines == 300 {
            // SIGKILL mid-stream: the child may be inside an append.
            child.kill().expect("kill child");
            break;
        }
    }
    child.wait().expect("reap child");
    let b = open_at(&path, u64::MAX);
    let rep = b.verify(|_| {}).expect("verify");
    assert!(rep.is_ok(), "{:?}", rep.problems);
    for (d, seq) in &acked {
        let id = DeviceId::new(d).expect("valid id");
        let have = b.ack_for(&id).acked_seq;
        assert!(
            have >= *seq,
            "{d}: acked {seq} before the kill, {have} after"
        );
        let stored = rep
            .devices
            .iter()
            .find(|v| v.device == id)
            .expect("device has data");
        assert_eq!(
            stored.ranges,
            vec![(1, have)],
            "{d}: every seq up to the ack is stored"
        );
    }
    assert_eq!(acked.len(), 3);
}

/// A history long enough for sled to garbage-collect and reuse log
/// segments, then every snapshot removed (or an empty unfinished one put
/// on top): reopening from the log alone yields exactly what was kept.
#[test]
fn a_long_history_reopens_from_the_log_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buffer");
    let b = open_at(&path, u64::MAX);
    let mut now = 10_000u64;
    let mut seq = [0u64; 4];
    let mut freed = 0u64;
    let mut rng = 1u64;
    for round in 0..1200u64 {
        let incoming: Vec<Incoming> = (0..16)
            .map(|i| {
                let d = i % 4;
                seq[d] += 1;
                let mut f = frame(d, seq[d], 0, 60);
                for s in &mut f.samples {
                    // Values deflate cannot squeeze: the log must grow.
                    rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    s.value = (rng >> 16) as i64;
                }
                Incoming {
                    frame: f,
                    received_ms: now,
                }
            })
            .collect();
        let r = b.append(incoming).expect("append");
        now += 100;
        if round % 50 == 49 && round < 1000 {
            let last = *r.keys.last().expect("stored");
            b.set_cursor(CursorName::Reported, last).expect("reported");
            b.set_cursor(CursorName::Delivered, last)
                .expect("delivered");
            freed += b.prune(now + 10 * KEEP_MS).expect("prune").bytes;
        }
    }
    let want: Vec<StoredFrame> = b.scan(None).map(|f| f.expect("frame")).collect();
    let stats = b.stats();
    let devices = b.devices();
    assert!(stats.frames > 0 && stats.frames < 1200 * 16, "{stats:?}");
    assert!(freed > 0);
    // sled has rewritten (garbage-collected) log segments by now: its log
    // is smaller than everything ever written to it.
    let ever = freed + stats.bytes;
    let log_len = std::fs::metadata(path.join("db")).expect("db").len();
    assert!(
        log_len < ever,
        "log {log_len} bytes, {ever} logical bytes appended, {freed} pruned"
    );
    drop(b);
    for damage in [SnapshotDamage::EmptyGenerating, SnapshotDamage::NoneLeft] {
        damage_snapshots(&path, damage);
        if let SnapshotDamage::EmptyGenerating = damage {
            // What the repair is for: sled alone refuses this for good.
            let e = sled::Config::new()
                .path(&path)
                .open()
                .expect_err("sled alone");
            assert!(matches!(e, sled::Error::Corruption { .. }), "{e:?}");
        }
        let b = open_at(&path, u64::MAX);
        assert!(!b.repairs().is_empty() || matches!(damage, SnapshotDamage::NoneLeft));
        let got: Vec<StoredFrame> = b.scan(None).map(|f| f.expect("frame")).collect();
        assert_eq!(got, want, "after {damage:?}");
        let mut s = b.stats();
        s.disk_bytes = stats.disk_bytes;
        assert_eq!(s, stats, "after {damage:?}");
        assert_eq!(b.devices(), devices);
        assert!(b.verify(|_| {}).expect("verify").is_ok());
    }
}

#[test]
fn a_nearly_full_disk_refuses_new_frames_like_a_full_buffer_and_reopen_rereads_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open_at(dir.path(), u64::MAX);
    let one = |q| {
        vec![Incoming {
            frame: frame(0, q, 0, 1),
            received_ms: 5,
        }]
    };
    assert_eq!(
        b.append(one(1)).expect("append").outcomes,
        [AppendOutcome::Stored]
    );
    b.set_space_low(true);
    assert!(b.stats().space_low);
    let r = b.append(one(2)).expect("append");
    assert_eq!(r.outcomes, [AppendOutcome::BufferFull]);
    assert_eq!(
        r.acks[0].1,
        Ack {
            acked_seq: 1,
            status: AckStatus::BufferFull
        }
    );
    assert_eq!(
        b.append(one(1)).expect("append").outcomes,
        [AppendOutcome::Duplicate]
    );
    assert_eq!(b.ack_for(&dev(0)).status, AckStatus::BufferFull);
    // A scan taken before keeps the old sled open: the reopen fails (after
    // a short wait) and leaves the buffer closed; the scan still reads.
    let mut scan = b.scan(None);
    assert!(b.reopen().is_err());
    assert!(scan.next().is_some());
    assert!(matches!(
        b.scan(None).next(),
        Some(Err(StoreError::Poisoned))
    ));
    assert!(matches!(b.append(one(2)), Err(StoreError::Poisoned)));
    assert_eq!(b.ack_for(&dev(0)).acked_seq, 1);
    drop(scan);
    b.reopen().expect("reopen once the scan is done");
    // The flag is the watch's, not the disk's: it survives the reopen.
    assert!(b.stats().space_low);
    b.set_space_low(false);
    assert_eq!(
        b.append(one(2)).expect("append").outcomes,
        [AppendOutcome::Stored]
    );
    let seqs: Vec<u64> = b.scan(None).map(|f| f.expect("frame").frame.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(!b.is_poisoned());
}
