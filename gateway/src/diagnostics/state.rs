//! Live state for the diagnostics page: recent values per (device, channel)
//! for the charts, the last frame of each device, and a short tail of frames
//! and rejected payloads per device (the "MQTT tail").
//!
//! A series keeps raw points and three tiers of [`Bucket`]s: one-minute
//! buckets for the last hour (the 1 h chart draws them where raw points
//! are no longer kept), ten-minute buckets for 24 h and one-hour buckets for
//! 7 days ([`Range`]). A bucket keeps the min, max and exact mean of its
//! usable values and counts the unusable ones, so a chart can draw a band,
//! a line, and "unavailable" apart from "no data".
//!
//! Memory is bounded by one budget, `diagnostics.chart_memory_bytes`
//! ([`LiveStore::with_budget`]), shared equally by the series: of a
//! series' share, its buckets may take three quarters; when they would
//! take more, the oldest bucket of the tier that keeps the largest part of
//! its range is dropped (so every chart keeps about the same part of its
//! range), and the span dropped is remembered and drawn as "not kept",
//! which is not a gap (a gap means no data arrived). Raw points take the
//! rest of the share (at least a quarter, at most [`MAX_POINTS`]); older
//! ones are dropped first (their minutes stay in the buckets). Sizes are
//! estimates: the types' sizes times the containers' capacities.
//!
//! [`LiveStore`] is a pure structure (time comes in as `now_ms`); one task,
//! [`run_live_feed`], feeds it from the writer's broadcast of stored frames.
//! Rejected payloads are read from the ingest quarantine when a tail is asked
//! for, so the store never duplicates them.
//!
//! Invariants:
//! - a series holds only points younger than the chart window (relative to
//!   the newest `now_ms` seen; recording sweeps old points out at most once
//!   a second, so a point may outlive the window by up to a second) and at
//!   most its quota of them; its bucket tiers only buckets younger than
//!   their range, in time order;
//! - after a sweep the estimated size is within the budget (raw points and
//!   buckets; at least one point per series is kept for its latest value);
//! - a device tail holds at most [`TAIL_LEN`] entries, oldest first, and
//!   fewer when many devices share [`TAIL_MEMORY_BYTES`] (at least
//!   [`MIN_TAIL_LEN`]);
//! - a frame is recorded once: after the start-up refill, live frames the
//!   refill already read (seq at or below the device's newest refilled) are
//!   skipped;
//! - the store never writes anything back into the data path.

use crate::buffer::Incoming;
use crate::ingest::writer::StoredFrames;
use mrv_shared::ids::{ChannelId, DeviceId};
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::Quality;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::mem::size_of;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Most raw points kept per series (one hour at 1 Hz).
pub const MAX_POINTS: usize = 3600;
/// Most entries kept per device tail.
pub const TAIL_LEN: usize = 100;
/// Fewest entries kept per device tail.
pub const MIN_TAIL_LEN: usize = 10;
/// Memory for the tails of all devices together, bytes: each device keeps
/// an equal share (between [`MIN_TAIL_LEN`] and [`TAIL_LEN`] entries).
pub const TAIL_MEMORY_BYTES: usize = 512 << 10;
/// Bytes an entry is reckoned at: receipt time, boxed summary (~60
/// characters) and its allocation header.
const TAIL_ENTRY_COST: usize = 24 + 64 + 16;
/// Default chart memory budget, bytes (`diagnostics.chart_memory_bytes`).
pub const DEFAULT_CHART_MEMORY_BYTES: usize = 2 << 20;

/// One chart point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Reading time (device time if known, else receipt), Unix ms.
    pub t_ms: u64,
    /// Value in base units.
    pub value: i64,
    /// Quality bits.
    pub quality: u8,
}

/// A chart range a technician can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Range {
    /// The last hour: raw points, one-minute buckets before them.
    #[default]
    #[serde(rename = "1h")]
    Hour,
    /// The last 24 hours, ten-minute buckets.
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days, one-hour buckets.
    #[serde(rename = "7d")]
    Week,
}

impl Range {
    /// Every range, shortest first.
    pub const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::Week];

    /// Its length, ms.
    pub fn ms(self) -> u64 {
        match self {
            Range::Hour => 3_600_000,
            Range::Day => 86_400_000,
            Range::Week => 7 * 86_400_000,
        }
    }

    /// Width of its buckets, ms.
    pub fn bucket_ms(self) -> u64 {
        match self {
            Range::Hour => 60_000,
            Range::Day => 600_000,
            Range::Week => 3_600_000,
        }
    }

    /// Buckets that cover the range (one more is kept for the one in
    /// progress).
    fn buckets(self) -> usize {
        (self.ms() / self.bucket_ms()) as usize
    }

    fn tier(self) -> usize {
        match self {
            Range::Hour => 0,
            Range::Day => 1,
            Range::Week => 2,
        }
    }

    /// `1h`, `24h`, `7d` (query parameter and API field).
    pub fn code(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::Week => "7d",
        }
    }

    /// Parses [`Range::code`].
    pub fn parse(s: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.code() == s)
    }

    /// Heading text: `Last hour`, `Last 24 hours`, `Last 7 days`.
    pub fn title(self) -> &'static str {
        match self {
            Range::Hour => "Last hour",
            Range::Day => "Last 24 hours",
            Range::Week => "Last 7 days",
        }
    }
}

/// Values of one channel within `[t_ms, t_ms + width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, Unix ms.
    pub t_ms: u64,
    /// Smallest usable value (base units; meaningless when `n == 0`).
    pub min: i64,
    /// Largest usable value.
    pub max: i64,
    /// Mean of the usable values, rounded half away from zero.
    pub mean: i64,
    /// Usable values.
    pub n: u32,
    /// Values flagged unusable (unavailable, out of range).
    pub unavailable: u32,
}

/// A bucket as kept: the exact sum instead of the mean, split in two
/// words so the struct is 8-aligned (48 bytes, not 64 with an `i128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acc {
    t_ms: u64,
    min: i64,
    max: i64,
    sum_lo: u64,
    sum_hi: i64,
    n: u32,
    unavailable: u32,
}

impl Acc {
    fn new(t_ms: u64) -> Self {
        Self {
            t_ms,
            min: i64::MAX,
            max: i64::MIN,
            sum_lo: 0,
            sum_hi: 0,
            n: 0,
            unavailable: 0,
        }
    }

    fn sum(&self) -> i128 {
        (i128::from(self.sum_hi) << 64) | i128::from(self.sum_lo)
    }

    fn add(&mut self, p: &Point) {
        if !Quality(p.quality).is_usable() {
            self.unavailable += 1;
            return;
        }
        self.min = self.min.min(p.value);
        self.max = self.max.max(p.value);
        self.n += 1;
        let sum = self.sum() + i128::from(p.value);
        self.sum_lo = sum as u64;
        self.sum_hi = (sum >> 64) as i64;
    }

    fn bucket(&self) -> Bucket {
        let (sum, n) = (self.sum(), i128::from(self.n.max(1)));
        let half = if sum < 0 { -n / 2 } else { n / 2 };
        Bucket {
            t_ms: self.t_ms,
            min: self.min,
            max: self.max,
            mean: if self.n == 0 {
                0
            } else {
                ((sum + half) / n) as i64
            },
            n: self.n,
            unavailable: self.unavailable,
        }
    }
}

/// A time span `[from_ms, to_ms)` whose buckets were dropped for the
/// memory budget: not kept, which is not "no data".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotKept {
    /// Start, Unix ms.
    pub from_ms: u64,
    /// End, Unix ms.
    pub to_ms: u64,
}

/// The buckets of one width.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tier {
    range: Range,
    buckets: VecDeque<Acc>,
    not_kept: Option<NotKept>,
}

impl Tier {
    fn new(range: Range) -> Self {
        Self {
            range,
            buckets: VecDeque::new(),
            not_kept: None,
        }
    }

    fn add(&mut self, p: &Point) {
        let width = self.range.bucket_ms();
        let start = p.t_ms - p.t_ms % width;
        match self.buckets.iter().rposition(|b| b.t_ms <= start) {
            Some(i) if self.buckets[i].t_ms == start => self.buckets[i].add(p),
            pos => {
                let mut b = Acc::new(start);
                b.add(p);
                // One bucket a width at most: grown exactly.
                self.buckets.reserve_exact(1);
                self.buckets.insert(pos.map_or(0, |i| i + 1), b);
            }
        }
    }

    /// Drops buckets that ended before the range did, before `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        let width = self.range.bucket_ms();
        let from = now_ms.saturating_sub(self.range.ms());
        while self.buckets.front().is_some_and(|b| b.t_ms + width <= from) {
            self.buckets.pop_front();
        }
        if self.not_kept.is_some_and(|n| n.to_ms <= from) {
            self.not_kept = None;
        }
    }

    /// The part of its range it keeps (buckets over the range's count).
    fn fill(&self) -> f64 {
        self.buckets.len() as f64 / self.range.buckets() as f64
    }

    fn drop_oldest(&mut self) {
        if let Some(b) = self.buckets.pop_front() {
            let end = b.t_ms + self.range.bucket_ms();
            self.not_kept = Some(match self.not_kept {
                Some(n) => NotKept {
                    from_ms: n.from_ms.min(b.t_ms),
                    to_ms: n.to_ms.max(end),
                },
                None => NotKept {
                    from_ms: b.t_ms,
                    to_ms: end,
                },
            });
        }
    }
}

/// Makes room for one more element, growing by half (not doubling) and
/// never past `limit`, so capacity stays close to length.
fn reserve_bounded<T>(d: &mut VecDeque<T>, limit: usize) {
    if d.len() == d.capacity() {
        let more = (d.len() / 2)
            .max(4)
            .min(limit.saturating_sub(d.len()))
            .max(1);
        d.reserve_exact(more);
    }
}

/// Bytes a series costs besides its points and buckets: its map entry
/// (key ids are small strings on the heap) and allocation headers.
const SERIES_COST: usize = size_of::<((DeviceId, ChannelId), Series)>() + 2 * 32 + 4 * 16 + 32;
const POINT_COST: usize = size_of::<Point>();
const BUCKET_COST: usize = size_of::<Acc>();

/// The points of one (device, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// What the channel measures.
    pub quantity: Quantity,
    /// Points, oldest first.
    pub points: VecDeque<Point>,
    /// One-minute, ten-minute and one-hour buckets, oldest first.
    tiers: [Tier; 3],
    /// Most raw points (set by the budget).
    quota: usize,
}

impl Series {
    fn new(quantity: Quantity, quota: usize) -> Self {
        Self {
            quantity,
            points: VecDeque::new(),
            tiers: Range::ALL.map(Tier::new),
            quota,
        }
    }

    /// The buckets of a range's tier, oldest first.
    pub fn buckets(&self, range: Range) -> Vec<Bucket> {
        self.tiers[range.tier()]
            .buckets
            .iter()
            .map(Acc::bucket)
            .collect()
    }

    /// The span of a range's tier dropped for the memory budget.
    pub fn not_kept(&self, range: Range) -> Option<NotKept> {
        self.tiers[range.tier()].not_kept
    }

    fn bucket_bytes(&self) -> usize {
        self.tiers
            .iter()
            .map(|t| t.buckets.capacity() * BUCKET_COST)
            .sum()
    }

    fn bytes(&self) -> usize {
        SERIES_COST + self.points.capacity() * POINT_COST + self.bucket_bytes()
    }
}

/// The live store's memory: estimated size, budget, what was dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartMemoryStats {
    /// Estimated bytes of the series (points, buckets, entries).
    pub used_bytes: u64,
    /// `diagnostics.chart_memory_bytes`.
    pub budget_bytes: u64,
    /// Series (device, channel) kept.
    pub series: u64,
    /// Raw points kept, all series.
    pub points: u64,
    /// Buckets kept, all tiers and series.
    pub buckets: u64,
    /// Raw points dropped before the chart window ended (their quota was
    /// full; their minutes stay in the buckets), since start.
    pub points_dropped: u64,
    /// Buckets dropped for the budget (drawn as "not kept"), since start.
    pub buckets_dropped: u64,
    /// The device tails (bounded apart: [`TAIL_MEMORY_BYTES`]): bytes.
    pub tail_bytes: u64,
    /// Entries each device tail keeps now.
    pub tail_len: u64,
}

/// What the last stored frame of a device said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFrame {
    /// Gateway receipt time, Unix ms.
    pub received_ms: u64,
    /// Frame sequence number.
    pub seq: u64,
    /// Device boot counter.
    pub boot: u32,
    /// Firmware text.
    pub firmware: String,
    /// The frame carried a device signature (it was verified at admission).
    pub signed: bool,
    /// Samples in the frame.
    pub samples: usize,
    /// Union of the quality bits of its samples.
    pub quality: u8,
}

/// One line of a device's live tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailEntry {
    /// Gateway receipt time, Unix ms.
    pub time_ms: u64,
    /// `stored` or `rejected`.
    pub kind: String,
    /// Short text: seq, samples, channel values, or the reject reason.
    pub summary: String,
}

/// The live store (see the module doc).
#[derive(Debug)]
pub struct LiveStore {
    window_ms: u64,
    budget_bytes: usize,
    series: BTreeMap<(DeviceId, ChannelId), Series>,
    last: BTreeMap<DeviceId, LastFrame>,
    /// Stored frames per device as (receipt ms, summary): the summary
    /// boxed to its length (a formatted `String` keeps spare capacity).
    tails: BTreeMap<DeviceId, VecDeque<(u64, Box<str>)>>,
    frames_seen: u64,
    /// Entries per device tail (from the last sweep).
    tail_len: usize,
    /// Raw-point quota of a new series (from the last sweep).
    new_quota: usize,
    points_dropped: u64,
    buckets_dropped: u64,
    /// `now_ms` of the last sweep by [`LiveStore::record`].
    swept_ms: Option<u64>,
}

/// [`LiveStore::record`] sweeps every series for old points at most this
/// often (a sweep visits every series: per frame it cost more than the
/// rest of the gateway at 20,000 frames/s, issue 12's benchmark).
const SWEEP_EVERY_MS: u64 = 1_000;

impl LiveStore {
    /// A store keeping `window_ms` of points per series within the
    /// default budget.
    pub fn new(window_ms: u64) -> Self {
        Self::with_budget(window_ms, DEFAULT_CHART_MEMORY_BYTES)
    }

    /// A store keeping `window_ms` of points per series, all series within
    /// about `budget_bytes`.
    pub fn with_budget(window_ms: u64, budget_bytes: usize) -> Self {
        let mut s = Self {
            window_ms,
            budget_bytes,
            series: BTreeMap::new(),
            last: BTreeMap::new(),
            tails: BTreeMap::new(),
            frames_seen: 0,
            tail_len: TAIL_LEN,
            new_quota: MAX_POINTS,
            points_dropped: 0,
            buckets_dropped: 0,
            swept_ms: None,
        };
        s.new_quota = s.raw_quota(1, 0);
        s
    }

    /// Raw points a series may keep when `series` share the budget and it
    /// holds `bucket_bytes` of buckets: the rest of its share, at least a
    /// quarter of it, at most [`MAX_POINTS`], at least one.
    fn raw_quota(&self, series: usize, bucket_bytes: usize) -> usize {
        let share = self.budget_bytes / series.max(1);
        let rest = share.saturating_sub(SERIES_COST + bucket_bytes);
        (rest.max(share / 4) / POINT_COST).clamp(1, MAX_POINTS)
    }

    /// Records a stored frame at gateway time `now_ms`.
    pub fn record(&mut self, incoming: &Incoming, now_ms: u64) {
        let frame = &incoming.frame;
        self.frames_seen += 1;
        let mut quality = 0u8;
        let mut values: BTreeMap<&str, (Option<i64>, Quantity)> = BTreeMap::new();
        // The series key is built once per run of samples of one channel
        // and looked up by reference: no allocation per sample once the
        // series exists (this runs for every stored frame).
        let mut key: Option<(DeviceId, ChannelId)> = None;
        for r in &frame.samples {
            let ch = &frame.channels[usize::from(r.channel)];
            quality |= r.quality.0;
            if key.as_ref().is_none_or(|k| k.1 != ch.id) {
                key = Some((frame.device.clone(), ch.id.clone()));
            }
            let key = key.as_ref().expect("set just above");
            let quota = self.new_quota;
            let s = match self.series.get_mut(key) {
                Some(s) => s,
                None => self
                    .series
                    .entry(key.clone())
                    .or_insert_with(|| Series::new(ch.quantity, quota)),
            };
            s.quantity = ch.quantity;
            let p = Point {
                t_ms: frame.sample_time_ms(r).unwrap_or(incoming.received_ms),
                value: r.value,
                quality: r.quality.0,
            };
            // The oldest point makes room (its minute stays in the buckets).
            while s.points.len() >= s.quota.max(1) {
                s.points.pop_front();
                self.points_dropped += 1;
            }
            reserve_bounded(&mut s.points, s.quota.max(1));
            // Keep points in time order even when a late frame arrives.
            let pos = s.points.iter().rposition(|q| q.t_ms <= p.t_ms);
            match pos {
                Some(i) if i + 1 == s.points.len() => s.points.push_back(p),
                Some(i) => s.points.insert(i + 1, p),
                None => s.points.push_front(p),
            }
            for t in &mut s.tiers {
                t.add(&p);
            }
        }
        for s in &frame.samples {
            if let Some(ch) = frame.channels.get(usize::from(s.channel)) {
                // An unavailable sample has no value: never print its 0.
                let v = (!s.quality.contains(Quality::UNAVAILABLE)).then_some(s.value);
                values.insert(ch.id.as_str(), (v, ch.quantity));
            }
        }
        let newer = self
            .last
            .get(&frame.device)
            .is_none_or(|l| l.received_ms <= incoming.received_ms);
        if newer {
            // Updated in place: the device id and an unchanged firmware
            // string are not allocated again.
            let firmware = match self.last.get_mut(&frame.device) {
                Some(l) if l.firmware == frame.firmware => std::mem::take(&mut l.firmware),
                _ => frame.firmware.clone(),
            };
            let last = LastFrame {
                received_ms: incoming.received_ms,
                seq: frame.seq,
                boot: frame.boot,
                firmware,
                signed: frame.signature.is_some(),
                samples: frame.samples.len(),
                quality,
            };
            match self.last.get_mut(&frame.device) {
                Some(l) => *l = last,
                None => {
                    self.last.insert(frame.device.clone(), last);
                }
            }
        }
        let mut summary = String::with_capacity(64);
        let _ = write!(
            summary,
            "seq {} boot {} samples {}{}",
            frame.seq,
            frame.boot,
            frame.samples.len(),
            if frame.signature.is_some() {
                " signed"
            } else {
                ""
            }
        );
        for (ch, (v, q)) in values {
            match v {
                Some(v) => {
                    let _ = write!(summary, " {ch}={}", mrv_shared::display::display(q, v));
                }
                None => {
                    let _ = write!(summary, " {ch}=unavailable");
                }
            }
        }
        if quality != 0 {
            let names: Vec<_> = Quality(quality).names().collect();
            summary.push_str(&format!(" quality={}", names.join("|")));
        }
        let tail = match self.tails.get_mut(&frame.device) {
            Some(t) => t,
            None => self.tails.entry(frame.device.clone()).or_default(),
        };
        while tail.len() >= self.tail_len {
            tail.pop_front();
        }
        reserve_bounded(tail, self.tail_len);
        tail.push_back((incoming.received_ms, summary.into_boxed_str()));
        let due = self
            .swept_ms
            .is_none_or(|t| now_ms < t || now_ms - t >= SWEEP_EVERY_MS);
        if due {
            self.expire(now_ms);
            self.swept_ms = Some(now_ms);
        }
    }

    /// Drops points older than the window and buckets older than their
    /// range, before `now_ms`; then fits the series in the budget.
    pub fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        for s in self.series.values_mut() {
            while s.points.front().is_some_and(|p| p.t_ms < cutoff) {
                s.points.pop_front();
            }
            for t in &mut s.tiers {
                t.expire(now_ms);
            }
        }
        self.fit_budget();
    }

    /// Every series to its share of the budget: buckets to three quarters
    /// of it (the oldest of the fullest tier first), points to the rest.
    fn fit_budget(&mut self) {
        let n = self.series.len().max(1);
        let share = self.budget_bytes / n;
        let bucket_share = (share * 3 / 4).saturating_sub(SERIES_COST);
        self.new_quota = self.raw_quota(n + 1, 0);
        let (mut points_dropped, mut buckets_dropped) = (0, 0);
        for s in self.series.values_mut() {
            while s.tiers.iter().map(|t| t.buckets.len()).sum::<usize>() * BUCKET_COST
                > bucket_share
            {
                let fullest = s
                    .tiers
                    .iter_mut()
                    .max_by(|a, b| a.fill().total_cmp(&b.fill()))
                    .expect("three tiers");
                fullest.drop_oldest();
                buckets_dropped += 1;
            }
            for t in &mut s.tiers {
                if t.buckets.capacity() > t.buckets.len() {
                    t.buckets.shrink_to_fit();
                }
            }
            let rest = share.saturating_sub(SERIES_COST + s.bucket_bytes());
            s.quota = (rest.max(share / 4) / POINT_COST).clamp(1, MAX_POINTS);
            while s.points.len() > s.quota {
                s.points.pop_front();
                points_dropped += 1;
            }
            if s.points.capacity() > s.quota {
                s.points.shrink_to(s.quota);
            }
        }
        self.points_dropped += points_dropped;
        self.buckets_dropped += buckets_dropped;
        self.tail_len = (TAIL_MEMORY_BYTES / self.tails.len().max(1) / TAIL_ENTRY_COST)
            .clamp(MIN_TAIL_LEN, TAIL_LEN);
        for t in self.tails.values_mut() {
            while t.len() > self.tail_len {
                t.pop_front();
            }
            if t.capacity() > self.tail_len {
                t.shrink_to(self.tail_len);
            }
        }
    }

    /// The store's memory figures.
    pub fn memory(&self) -> ChartMemoryStats {
        let mut m = ChartMemoryStats {
            budget_bytes: self.budget_bytes as u64,
            series: self.series.len() as u64,
            points_dropped: self.points_dropped,
            buckets_dropped: self.buckets_dropped,
            tail_len: self.tail_len as u64,
            tail_bytes: self
                .tails
                .values()
                .flatten()
                .map(|(_, s)| (24 + s.len() + 16) as u64)
                .sum(),
            ..ChartMemoryStats::default()
        };
        for s in self.series.values() {
            m.used_bytes += s.bytes() as u64;
            m.points += s.points.len() as u64;
            m.buckets += s.tiers.iter().map(|t| t.buckets.len() as u64).sum::<u64>();
        }
        m
    }

    /// The raw-point window, ms.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Channels of a device with their series.
    pub fn channels(&self, device: &DeviceId) -> Vec<(ChannelId, Series)> {
        self.series
            .range((device.clone(), min_channel())..)
            .take_while(|((d, _), _)| d == device)
            .map(|((_, c), s)| (c.clone(), s.clone()))
            .collect()
    }

    /// The newest point of every channel of a device (no series copied).
    pub fn latest(&self, device: &DeviceId) -> Vec<(ChannelId, Quantity, Point)> {
        self.series
            .range((device.clone(), min_channel())..)
            .take_while(|((d, _), _)| d == device)
            .filter_map(|((_, c), s)| s.points.back().map(|p| (c.clone(), s.quantity, *p)))
            .collect()
    }

    /// The last frame of a device.
    pub fn last(&self, device: &DeviceId) -> Option<&LastFrame> {
        self.last.get(device)
    }

    /// Every device seen since start.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceId> {
        self.last.keys()
    }

    /// A device's tail entries newer than `after_ms`, oldest first.
    pub fn tail(&self, device: &DeviceId, after_ms: u64) -> Vec<TailEntry> {
        self.tails
            .get(device)
            .map(|t| {
                t.iter()
                    .filter(|(time_ms, _)| *time_ms > after_ms)
                    .map(|(time_ms, summary)| TailEntry {
                        time_ms: *time_ms,
                        kind: "stored".into(),
                        summary: summary.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Frames recorded since start.
    pub fn frames_seen(&self) -> u64 {
        self.frames_seen
    }
}

fn min_channel() -> ChannelId {
    // The smallest valid id in byte order: ids are 1-32 of `A-Za-z0-9_.-`.
    ChannelId::new("-").expect("'-' is a valid channel id")
}

/// Most buffer batches read back at start-up to refill the charts.
pub const PREFILL_BATCHES: u64 = 200_000;

/// The first batch id whose frames were received at or after `since_ms`
/// (binary search over batch ids: batches are stored in receipt order).
fn first_batch_since(buffer: &crate::buffer::Buffer, lo: u64, hi: u64, since_ms: u64) -> u64 {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let after = crate::buffer::FrameKey {
            batch: mid,
            index: u32::MAX,
        };
        // The first frame after `mid`: its batch and receipt time.
        match buffer.scan(Some(after)).flatten().next() {
            Some(f) if f.received_ms < since_ms => lo = f.key.batch + 1,
            _ => hi = mid,
        }
    }
    lo
}

/// What [`prefill`] read back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refill {
    /// Frames recorded.
    pub frames: u64,
    /// The newest seq recorded per device: a live frame at or below it was
    /// already recorded (seqs of a device grow in storage order).
    pub newest_seq: HashMap<DeviceId, u64>,
}

/// Refills `live` after a restart from the buffer: every frame received
/// within the longest chart range ([`Range::Week`]), but at most the newest
/// `max_batches` batches. Blocking (sled reads): run it on a blocking
/// thread. Locks `live` once per frame, so the page answers meanwhile.
pub fn prefill(
    live: &Mutex<LiveStore>,
    buffer: &crate::buffer::Buffer,
    now_ms: u64,
    max_batches: u64,
) -> Refill {
    let mut refill = Refill::default();
    let Some(last) = buffer.stats().last_key else {
        return refill;
    };
    let cutoff = now_ms.saturating_sub(Range::Week.ms());
    let floor = last.batch.saturating_sub(max_batches) + 1;
    let first = first_batch_since(buffer, floor, last.batch + 1, cutoff);
    let after = first.checked_sub(1).map(|b| crate::buffer::FrameKey {
        batch: b,
        index: u32::MAX,
    });
    for f in buffer.scan(after).flatten() {
        if f.key > last {
            break;
        }
        if f.received_ms >= cutoff {
            let seq = refill.newest_seq.entry(f.frame.device.clone()).or_default();
            *seq = (*seq).max(f.frame.seq);
            live.lock().unwrap_or_else(|p| p.into_inner()).record(
                &Incoming {
                    frame: f.frame,
                    received_ms: f.received_ms,
                },
                now_ms,
            );
            refill.frames += 1;
        }
    }
    // Every frame was recorded at the same `now_ms`: one last sweep.
    live.lock()
        .unwrap_or_else(|p| p.into_inner())
        .expire(now_ms);
    refill
}

/// Shared handle to the live store.
pub type SharedLive = Arc<Mutex<LiveStore>>;

/// Feeds `live` from the writer's broadcast of stored frames (one message
/// per group commit, recorded under one lock) until shutdown
/// or until the broadcast closes, skipping the frames `refilled` already
/// recorded (the subscription starts before the refill reads the buffer,
/// so a frame stored meanwhile is in both). A lagging receiver skips what
/// it missed (charts lose points; the data path is unaffected).
pub async fn run_live_feed(
    live: SharedLive,
    mut frames: broadcast::Receiver<StoredFrames>,
    refilled: HashMap<DeviceId, u64>,
    now_ms: impl Fn() -> u64 + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = frames.recv() => match r {
                Ok(commit) => {
                    let now = now_ms();
                    let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
                    for f in commit.iter() {
                        if refilled.get(&f.frame.device).is_none_or(|s| f.frame.seq > *s) {
                            live.record(f, now);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped_commits = n, "diagnostics live feed lagged");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mrv_shared::ids::SiteId;
    use mrv_shared::quantity::ValueKind;
    use mrv_shared::reading::{Channel, Sample};
    use mrv_shared::wire::Frame;

    fn frame(device: &str, seq: u64, base: u64, values: &[i64]) -> Incoming {
        Incoming {
            frame: Frame {
                site: SiteId::new("s").expect("id"),
                device: DeviceId::new(device).expect("id"),
                seq,
                boot: 1,
                firmware: "fw".into(),
                base_time_ms: Some(base),
                channels: vec![Channel {
                    id: ChannelId::new("p").expect("id"),
                    quantity: Quantity::Power,
                    kind: ValueKind::Instant,
                }],
                samples: values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Sample {
                        channel: 0,
                        offset_ms: i as u32 * 1000,
                        value: *v,
                        quality: Quality::GOOD,
                    })
                    .collect(),
                signature: None,
            },
            received_ms: base + 5000,
        }
    }

    #[test]
    fn prefill_reads_the_last_week_back_from_the_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffer = crate::buffer::Buffer::open(crate::buffer::BufferConfig {
            path: dir.path().join("b"),
            max_bytes: 1 << 30,
            cache_bytes: 1 << 20,
            keep_delivered: std::time::Duration::from_secs(3600),
        })
        .expect("open");
        // One frame a day for ten days, then five a minute apart.
        let day = 86_400_000u64;
        let mut seq = 0;
        for i in 0..10u64 {
            seq += 1;
            buffer
                .append(vec![frame("a", seq, i * day, &[i as i64])])
                .expect("append");
        }
        let base = 10 * day;
        for i in 0..5u64 {
            seq += 1;
            buffer
                .append(vec![frame("a", seq, base + i * 60_000, &[100 + i as i64])])
                .expect("append");
        }
        let now = base + 300_000;
        let live = Mutex::new(LiveStore::new(3_600_000));
        // Days 4..9 (received within 7 days of `now`) and the five recent ones.
        assert_eq!(prefill(&live, &buffer, now, 1000).frames, 6 + 5);
        let l = live.lock().expect("lock");
        let d = DeviceId::new("a").expect("id");
        assert_eq!(l.last(&d).map(|l| l.seq), Some(15));
        let ch = l.channels(&d);
        assert_eq!(ch[0].1.points.len(), 5, "raw points: last hour only");
        let tier = |r| ch[0].1.buckets(r).len();
        assert_eq!(tier(Range::Hour), 5, "minute buckets: last hour");
        assert_eq!(
            tier(Range::Day),
            2,
            "ten-minute buckets: 24 h (and the one it ends in)"
        );
        assert_eq!(tier(Range::Week), 6 + 1, "hour buckets: 7 days");
        drop(l);
        let live = Mutex::new(LiveStore::new(1_000_000));
        assert_eq!(
            prefill(&live, &buffer, now, 2).frames,
            2,
            "only the newest batches"
        );
        // A live frame recorded earlier is not replaced by an older one.
        let live = Mutex::new(LiveStore::new(1_000_000));
        live.lock()
            .expect("lock")
            .record(&frame("a", 99, now + 1000, &[9]), now + 1000);
        prefill(&live, &buffer, now + 1000, 1000);
        assert_eq!(live.lock().expect("lock").last(&d).map(|l| l.seq), Some(99));
    }

    #[test]
    fn buckets_keep_min_max_mean_and_count_unusable_values_apart() {
        let mut s = LiveStore::new(1_000_000);
        let mut f = frame("a", 1, 120_000, &[10, 20, -7]);
        f.frame.samples[2].quality = Quality::UNAVAILABLE;
        s.record(&f, 130_000);
        s.record(&frame("a", 2, 185_000, &[4]), 190_000);
        let ch = s.channels(&DeviceId::new("a").expect("id"));
        let m = ch[0].1.buckets(Range::Hour);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].t_ms, m[0].min, m[0].max, m[0].mean),
            (120_000, 10, 20, 15)
        );
        assert_eq!((m[0].n, m[0].unavailable), (2, 1));
        assert_eq!((m[1].t_ms, m[1].n, m[1].mean), (180_000, 1, 4));
        let ten = ch[0].1.buckets(Range::Day);
        assert_eq!(ten.len(), 1);
        assert_eq!(ten[0].n, 3);
        assert_eq!(ch[0].1.buckets(Range::Week)[0].unavailable, 1);
    }

    #[test]
    fn ranges_round_trip_their_codes() {
        for r in Range::ALL {
            assert_eq!(Range::parse(r.code()), Some(r));
        }
        assert_eq!(Range::parse("2h"), None);
    }

    #[test]
    fn points_older_than_the_window_are_dropped() {
        let mut s = LiveStore::new(10_000);
        s.record(&frame("a", 1, 1_000, &[1, 2]), 2_000);
        s.record(&frame("a", 2, 20_000, &[3]), 20_000);
        let ch = s.channels(&DeviceId::new("a").expect("id"));
        assert_eq!(ch.len(), 1);
        let v: Vec<_> = ch[0].1.points.iter().map(|p| p.value).collect();
        assert_eq!(v, [3]);
    }

    #[test]
    fn late_frames_are_inserted_in_time_order() {
        let mut s = LiveStore::new(1_000_000);
        s.record(&frame("a", 2, 10_000, &[2]), 10_000);
        s.record(&frame("a", 1, 5_000, &[1]), 10_000);
        let ch = s.channels(&DeviceId::new("a").expect("id"));
        let t: Vec<_> = ch[0].1.points.iter().map(|p| p.t_ms).collect();
        assert_eq!(t, [5_000, 10_000]);
    }

    #[test]
    fn series_are_capped_and_channels_are_per_device() {
        let mut s = LiveStore::new(u64::MAX / 2);
        for i in 0..(MAX_POINTS as u64 + 10) {
            s.record(&frame("a", i + 1, i * 1000, &[i as i64]), i * 1000);
        }
        s.record(&frame("b", 1, 0, &[7]), 0);
        let a = s.channels(&DeviceId::new("a").expect("id"));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].1.points.len(), MAX_POINTS);
        assert_eq!(a[0].1.points.front().map(|p| p.value), Some(10));
        assert_eq!(s.channels(&DeviceId::new("b").expect("id")).len(), 1);
        assert!(s.channels(&DeviceId::new("c").expect("id")).is_empty());
    }

    #[test]
    fn tail_keeps_the_newest_entries_and_filters_by_time() {
        let mut s = LiveStore::new(1_000_000);
        for i in 0..(TAIL_LEN as u64 + 5) {
            s.record(&frame("a", i + 1, i * 10, &[1]), i * 10);
        }
        let d = DeviceId::new("a").expect("id");
        let all = s.tail(&d, 0);
        assert_eq!(all.len(), TAIL_LEN);
        assert!(all[0].summary.starts_with("seq 6 "), "{}", all[0].summary);
        // Values in the tail are in display units: 1 mW reads 0.001 W.
        assert!(all[0].summary.contains(" p=0.001 W"), "{}", all[0].summary);
        let newest = all.last().expect("entries").time_ms;
        assert!(s.tail(&d, newest).is_empty());
        assert_eq!(s.last(&d).map(|l| l.seq), Some(TAIL_LEN as u64 + 5));
    }

    fn devices_at(s: &mut LiveStore, devices: u64, t: u64, seq: u64) {
        for d in 0..devices {
            s.record(&frame(&format!("d{d}"), seq, t, &[seq as i64]), t);
        }
    }

    #[test]
    fn the_budget_bounds_the_store_and_squeezes_raw_points_first() {
        let budget = 256 << 10;
        let mut s = LiveStore::with_budget(3_600_000, budget);
        // 100 series, 10 frames a second each for 5 minutes.
        for i in 0..3_000u64 {
            devices_at(&mut s, 100, 1_000_000 + i * 100, i + 1);
        }
        s.expire(1_000_000 + 2_999 * 100);
        let m = s.memory();
        assert!(m.used_bytes <= budget as u64, "{m:?}");
        assert!(m.points_dropped > 0, "quota reached: {m:?}");
        assert_eq!(m.buckets_dropped, 0, "five minutes of buckets fit: {m:?}");
        let ch = s.channels(&DeviceId::new("d7").expect("id"));
        let points = ch[0].1.points.len();
        // 100 series share 256 KiB: ~2.6 KiB each, most of it raw points.
        assert!(points > 50 && points < 3_000, "{points}");
        // The minutes before the oldest raw point are all in buckets.
        assert_eq!(ch[0].1.buckets(Range::Hour).len(), 6);
        assert_eq!(ch[0].1.points.back().map(|p| p.value), Some(3_000));
    }

    #[test]
    fn buckets_beyond_the_budget_are_dropped_oldest_first_and_marked_not_kept() {
        let budget = 64 << 10;
        let mut s = LiveStore::with_budget(3_600_000, budget);
        // 20 series, one frame a minute for 3 days.
        let day = 86_400_000u64;
        for i in 0..(3 * 1440u64) {
            devices_at(&mut s, 20, 10 * day + i * 60_000, i + 1);
        }
        s.expire(13 * day - 60_000);
        let m = s.memory();
        assert!(m.used_bytes <= budget as u64, "{m:?}");
        assert!(m.buckets_dropped > 0, "{m:?}");
        let ch = s.channels(&DeviceId::new("d3").expect("id"));
        let series = &ch[0].1;
        let now = 13 * day - 60_000;
        for r in Range::ALL {
            let b = series.buckets(r);
            let kept = b.len() as f64 / r.buckets() as f64;
            assert!(kept > 0.05 && kept < 0.9, "{r:?} keeps {kept}");
            let n = series.not_kept(r).expect("dropped for the budget");
            assert_eq!(n.to_ms, b[0].t_ms, "{r:?}: not kept up to the oldest kept");
            assert!(n.from_ms < n.to_ms);
            assert_eq!(b.last().map(|b| b.t_ms), Some(now - now % r.bucket_ms()));
        }
        // Every range keeps about the same part of itself.
        let parts: Vec<f64> = Range::ALL
            .iter()
            .map(|r| series.buckets(*r).len() as f64 / r.buckets() as f64)
            .collect();
        assert!(
            parts.iter().all(|p| (p - parts[0]).abs() < 0.05),
            "{parts:?}"
        );
    }

    #[test]
    fn many_devices_share_the_tail_memory() {
        let mut s = LiveStore::new(3_600_000);
        for i in 0..50u64 {
            devices_at(&mut s, 200, 1_000_000 + i * 1_000, i + 1);
        }
        s.expire(1_000_000 + 49 * 1_000);
        let m = s.memory();
        let want = (TAIL_MEMORY_BYTES / 200 / TAIL_ENTRY_COST).clamp(MIN_TAIL_LEN, TAIL_LEN);
        assert_eq!(m.tail_len as usize, want);
        let tail = s.tail(&DeviceId::new("d199").expect("id"), 0);
        assert_eq!(tail.len(), want);
        assert!(tail[want - 1].summary.starts_with("seq 50 "), "{tail:?}");
        assert!(m.tail_bytes <= TAIL_MEMORY_BYTES as u64, "{m:?}");
    }

    #[tokio::test]
    async fn a_frame_both_refilled_and_broadcast_is_recorded_once() {
        let live = Arc::new(Mutex::new(LiveStore::new(3_600_000)));
        live.lock()
            .expect("lock")
            .record(&frame("a", 6, 1_000, &[1]), 6_000);
        let (tx, rx) = broadcast::channel(8);
        for seq in [6, 7] {
            tx.send(Arc::new(vec![frame("a", seq, seq * 1_000, &[1])]))
                .expect("a receiver");
        }
        drop(tx);
        let (_stop, shutdown) = watch::channel(false);
        let refilled = HashMap::from([(DeviceId::new("a").expect("id"), 6)]);
        run_live_feed(live.clone(), rx, refilled, || 10_000, shutdown).await;
        let d = DeviceId::new("a").expect("id");
        let tail = live.lock().expect("lock").tail(&d, 0);
        let seqs: Vec<_> = tail.iter().map(|e| e.summary.split(' ').nth(1)).collect();
        assert_eq!(seqs, [Some("6"), Some("7")]);
    }
}
