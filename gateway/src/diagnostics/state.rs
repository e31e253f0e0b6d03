//! Live state for the diagnostics page: recent values per (device, channel)
//! for the charts, the last frame of each device, and a short tail of frames
//! and rejected payloads per device (the "MQTT tail").
//!
//! A series keeps three tiers, one per chart range ([`Range`]): the raw
//! points of the chart window (1 h by default), one-minute [`Bucket`]s for
//! 24 h and ten-minute buckets for 7 days. A bucket keeps the min, max and
//! mean of its usable values and counts the unusable ones, so a chart can
//! draw a band, a line, and "unavailable" apart from "no data".
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
//!   most [`MAX_POINTS`] of them; its
//!   bucket tiers only buckets younger than their range, in time order;
//! - a device tail holds at most [`TAIL_LEN`] entries, oldest first;
//! - the store never writes anything back into the data path.

use crate::buffer::Incoming;
use mrv_shared::ids::{ChannelId, DeviceId};
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::Quality;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Most points kept per series (one hour at 1 Hz).
pub const MAX_POINTS: usize = 3600;
/// Entries kept per device tail.
pub const TAIL_LEN: usize = 100;

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
    /// The last hour, raw points.
    #[default]
    #[serde(rename = "1h")]
    Hour,
    /// The last 24 hours, one-minute buckets.
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days, ten-minute buckets.
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

    /// Width of its buckets, ms (`None`: raw points).
    pub fn bucket_ms(self) -> Option<u64> {
        match self {
            Range::Hour => None,
            Range::Day => Some(60_000),
            Range::Week => Some(600_000),
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
    #[serde(skip)]
    sum: i128,
}

impl Bucket {
    fn new(t_ms: u64) -> Self {
        Self {
            t_ms,
            min: i64::MAX,
            max: i64::MIN,
            mean: 0,
            n: 0,
            unavailable: 0,
            sum: 0,
        }
    }

    fn add(&mut self, p: &Point) {
        if !Quality(p.quality).is_usable() {
            self.unavailable += 1;
            return;
        }
        self.min = self.min.min(p.value);
        self.max = self.max.max(p.value);
        self.n += 1;
        self.sum += i128::from(p.value);
        let n = i128::from(self.n);
        let half = if self.sum < 0 { -n / 2 } else { n / 2 };
        self.mean = ((self.sum + half) / n) as i64;
    }
}

/// The points of one (device, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// What the channel measures.
    pub quantity: Quantity,
    /// Points, oldest first.
    pub points: VecDeque<Point>,
    /// One-minute buckets of the last 24 h, oldest first.
    pub minutes: VecDeque<Bucket>,
    /// Ten-minute buckets of the last 7 days, oldest first.
    pub ten_minutes: VecDeque<Bucket>,
}

impl Series {
    fn new(quantity: Quantity) -> Self {
        Self {
            quantity,
            points: VecDeque::new(),
            minutes: VecDeque::new(),
            ten_minutes: VecDeque::new(),
        }
    }

    /// The buckets of a bucketed range (empty for [`Range::Hour`]).
    pub fn buckets(&self, range: Range) -> &VecDeque<Bucket> {
        match range {
            Range::Week => &self.ten_minutes,
            _ => &self.minutes,
        }
    }
}

fn add_to_tier(tier: &mut VecDeque<Bucket>, width: u64, p: &Point) {
    let start = p.t_ms - p.t_ms % width;
    match tier.iter().rposition(|b| b.t_ms <= start) {
        Some(i) if tier[i].t_ms == start => tier[i].add(p),
        pos => {
            let mut b = Bucket::new(start);
            b.add(p);
            tier.insert(pos.map_or(0, |i| i + 1), b);
        }
    }
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
    series: BTreeMap<(DeviceId, ChannelId), Series>,
    last: BTreeMap<DeviceId, LastFrame>,
    tails: BTreeMap<DeviceId, VecDeque<TailEntry>>,
    frames_seen: u64,
    /// `now_ms` of the last sweep by [`LiveStore::record`].
    swept_ms: Option<u64>,
}

/// [`LiveStore::record`] sweeps every series for old points at most this
/// often (a sweep visits every series: per frame it cost more than the
/// rest of the gateway at 20,000 frames/s, issue 12's benchmark).
const SWEEP_EVERY_MS: u64 = 1_000;

impl LiveStore {
    /// A store keeping `window_ms` of points per series.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            series: BTreeMap::new(),
            last: BTreeMap::new(),
            tails: BTreeMap::new(),
            frames_seen: 0,
            swept_ms: None,
        }
    }

    /// Records a stored frame at gateway time `now_ms`.
    pub fn record(&mut self, incoming: &Incoming, now_ms: u64) {
        let frame = &incoming.frame;
        self.frames_seen += 1;
        let mut quality = 0u8;
        let mut values: BTreeMap<&str, (Option<i64>, Quantity)> = BTreeMap::new();
        for r in frame.readings(incoming.received_ms) {
            quality |= r.quality.0;
            let key = (r.device.clone(), r.channel.clone());
            let s = self
                .series
                .entry(key)
                .or_insert_with(|| Series::new(r.quantity));
            s.quantity = r.quantity;
            let p = Point {
                t_ms: r.time_ms(),
                value: r.value,
                quality: r.quality.0,
            };
            // Keep points in time order even when a late frame arrives.
            let pos = s.points.iter().rposition(|q| q.t_ms <= p.t_ms);
            match pos {
                Some(i) if i + 1 == s.points.len() => s.points.push_back(p),
                Some(i) => s.points.insert(i + 1, p),
                None => s.points.push_front(p),
            }
            while s.points.len() > MAX_POINTS {
                s.points.pop_front();
            }
            add_to_tier(&mut s.minutes, 60_000, &p);
            add_to_tier(&mut s.ten_minutes, 600_000, &p);
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
            self.last.insert(
                frame.device.clone(),
                LastFrame {
                    received_ms: incoming.received_ms,
                    seq: frame.seq,
                    boot: frame.boot,
                    firmware: frame.firmware.clone(),
                    signed: frame.signature.is_some(),
                    samples: frame.samples.len(),
                    quality,
                },
            );
        }
        let mut summary = format!(
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
                    summary.push_str(&format!(" {ch}={}", mrv_shared::display::display(q, v)))
                }
                None => summary.push_str(&format!(" {ch}=unavailable")),
            }
        }
        if quality != 0 {
            let names: Vec<_> = Quality(quality).names().collect();
            summary.push_str(&format!(" quality={}", names.join("|")));
        }
        let tail = self.tails.entry(frame.device.clone()).or_default();
        tail.push_back(TailEntry {
            time_ms: incoming.received_ms,
            kind: "stored".into(),
            summary,
        });
        while tail.len() > TAIL_LEN {
            tail.pop_front();
        }
        let due = self
            .swept_ms
            .is_none_or(|t| now_ms < t || now_ms - t >= SWEEP_EVERY_MS);
        if due {
            self.expire(now_ms);
            self.swept_ms = Some(now_ms);
        }
    }

    /// Drops points older than the window, and buckets older than their
    /// range, before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        let day = now_ms.saturating_sub(Range::Day.ms() + 60_000);
        let week = now_ms.saturating_sub(Range::Week.ms() + 600_000);
        for s in self.series.values_mut() {
            while s.points.front().is_some_and(|p| p.t_ms < cutoff) {
                s.points.pop_front();
            }
            while s.minutes.front().is_some_and(|b| b.t_ms < day) {
                s.minutes.pop_front();
            }
            while s.ten_minutes.front().is_some_and(|b| b.t_ms < week) {
                s.ten_minutes.pop_front();
            }
        }
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
            .map(|t| t.iter().filter(|e| e.time_ms > after_ms).cloned().collect())
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

/// Refills `live` after a restart from the buffer: every frame received
/// within the longest chart range ([`Range::Week`]), but at most the newest
/// `max_batches` batches. Blocking (sled reads): run it on a blocking
/// thread. Locks `live` once per frame, so the page answers meanwhile.
/// Returns the frames recorded.
pub fn prefill(
    live: &Mutex<LiveStore>,
    buffer: &crate::buffer::Buffer,
    now_ms: u64,
    max_batches: u64,
) -> u64 {
    let Some(last) = buffer.stats().last_key else {
        return 0;
    };
    let cutoff = now_ms.saturating_sub(Range::Week.ms());
    let floor = last.batch.saturating_sub(max_batches) + 1;
    let first = first_batch_since(buffer, floor, last.batch + 1, cutoff);
    let after = first.checked_sub(1).map(|b| crate::buffer::FrameKey {
        batch: b,
        index: u32::MAX,
    });
    let mut n = 0;
    for f in buffer.scan(after).flatten() {
        if f.key > last {
            break;
        }
        if f.received_ms >= cutoff {
            live.lock().unwrap_or_else(|p| p.into_inner()).record(
                &Incoming {
                    frame: f.frame,
                    received_ms: f.received_ms,
                },
                now_ms,
            );
            n += 1;
        }
    }
    // Every frame was recorded at the same `now_ms`: one last sweep.
    live.lock()
        .unwrap_or_else(|p| p.into_inner())
        .expire(now_ms);
    n
}

/// Shared handle to the live store.
pub type SharedLive = Arc<Mutex<LiveStore>>;

/// Feeds `live` from the writer's broadcast of stored frames until shutdown
/// or until the broadcast closes. A lagging receiver skips what it missed
/// (charts lose points; the data path is unaffected).
pub async fn run_live_feed(
    live: SharedLive,
    mut frames: broadcast::Receiver<Arc<Incoming>>,
    now_ms: impl Fn() -> u64 + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = frames.recv() => match r {
                Ok(f) => {
                    let now = now_ms();
                    live.lock().unwrap_or_else(|p| p.into_inner()).record(&f, now);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "diagnostics live feed lagged");
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
        assert_eq!(prefill(&live, &buffer, now, 1000), 6 + 5);
        let l = live.lock().expect("lock");
        let d = DeviceId::new("a").expect("id");
        assert_eq!(l.last(&d).map(|l| l.seq), Some(15));
        let ch = l.channels(&d);
        assert_eq!(ch[0].1.points.len(), 5, "raw points: last hour only");
        assert_eq!(ch[0].1.minutes.len(), 5, "minute buckets: last 24 h");
        assert_eq!(
            ch[0].1.ten_minutes.len(),
            6 + 1,
            "ten-minute buckets: 7 days"
        );
        drop(l);
        let live = Mutex::new(LiveStore::new(1_000_000));
        assert_eq!(
            prefill(&live, &buffer, now, 2),
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
        let m: Vec<_> = ch[0].1.minutes.iter().collect();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].t_ms, m[0].min, m[0].max, m[0].mean),
            (120_000, 10, 20, 15)
        );
        assert_eq!((m[0].n, m[0].unavailable), (2, 1));
        assert_eq!((m[1].t_ms, m[1].n, m[1].mean), (180_000, 1, 4));
        assert_eq!(ch[0].1.ten_minutes.len(), 1);
        assert_eq!(ch[0].1.ten_minutes[0].n, 3);
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
}
