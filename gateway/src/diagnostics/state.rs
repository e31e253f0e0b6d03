//! Live state for the diagnostics page: the last hour of values per (device,
//! channel) for the charts, the last frame of each device, and a short tail
//! of frames and rejected payloads per device (the "MQTT tail").
//!
//! [`LiveStore`] is a pure structure (time comes in as `now_ms`); one task,
//! [`run_live_feed`], feeds it from the writer's broadcast of stored frames.
//! Rejected payloads are read from the ingest quarantine when a tail is asked
//! for, so the store never duplicates them.
//!
//! Invariants:
//! - a series holds only points younger than the chart window (relative to
//!   the newest `now_ms` seen) and at most [`MAX_POINTS`] of them;
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

/// The points of one (device, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// What the channel measures.
    pub quantity: Quantity,
    /// Points, oldest first.
    pub points: VecDeque<Point>,
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
}

impl LiveStore {
    /// A store keeping `window_ms` of points per series.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            series: BTreeMap::new(),
            last: BTreeMap::new(),
            tails: BTreeMap::new(),
            frames_seen: 0,
        }
    }

    /// Records a stored frame at gateway time `now_ms`.
    pub fn record(&mut self, incoming: &Incoming, now_ms: u64) {
        let frame = &incoming.frame;
        self.frames_seen += 1;
        let mut quality = 0u8;
        let mut values: BTreeMap<&str, (i64, Quantity)> = BTreeMap::new();
        for r in frame.readings(incoming.received_ms) {
            quality |= r.quality.0;
            let key = (r.device.clone(), r.channel.clone());
            let s = self.series.entry(key).or_insert_with(|| Series {
                quantity: r.quantity,
                points: VecDeque::new(),
            });
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
        }
        for s in &frame.samples {
            if let Some(ch) = frame.channels.get(usize::from(s.channel)) {
                values.insert(ch.id.as_str(), (s.value, ch.quantity));
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
            summary.push_str(&format!(" {ch}={v} ({})", q.unit()));
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
        self.expire(now_ms);
    }

    /// Drops points older than the window before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        for s in self.series.values_mut() {
            while s.points.front().is_some_and(|p| p.t_ms < cutoff) {
                s.points.pop_front();
            }
        }
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
pub const PREFILL_BATCHES: u64 = 2000;

/// Refills `live` after a restart from the newest `max_batches` buffer
/// batches (frames received within the window). Blocking (sled reads): run
/// it on a blocking thread. Returns the frames recorded.
pub fn prefill(
    live: &mut LiveStore,
    buffer: &crate::buffer::Buffer,
    now_ms: u64,
    max_batches: u64,
) -> u64 {
    let Some(last) = buffer.stats().last_key else {
        return 0;
    };
    let after = last
        .batch
        .checked_sub(max_batches)
        .map(|b| crate::buffer::FrameKey {
            batch: b,
            index: u32::MAX,
        });
    let cutoff = now_ms.saturating_sub(live.window_ms);
    let mut n = 0;
    for f in buffer.scan(after).flatten() {
        if f.received_ms >= cutoff {
            live.record(
                &Incoming {
                    frame: f.frame,
                    received_ms: f.received_ms,
                },
                now_ms,
            );
            n += 1;
        }
    }
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
    fn prefill_reads_the_recent_frames_back_from_the_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffer = crate::buffer::Buffer::open(crate::buffer::BufferConfig {
            path: dir.path().join("b"),
            max_bytes: 1 << 30,
            cache_bytes: 1 << 20,
            keep_delivered: std::time::Duration::from_secs(3600),
        })
        .expect("open");
        for i in 0..5u64 {
            buffer
                .append(vec![frame("a", i + 1, i * 60_000, &[i as i64])])
                .expect("append");
        }
        // Frames received at 5 s, 65 s, ... 245 s; window 100 s before 250 s.
        let mut live = LiveStore::new(100_000);
        assert_eq!(prefill(&mut live, &buffer, 250_000, 1000), 2);
        let d = DeviceId::new("a").expect("id");
        assert_eq!(live.last(&d).map(|l| l.seq), Some(5));
        let mut live = LiveStore::new(1_000_000);
        assert_eq!(
            prefill(&mut live, &buffer, 250_000, 2),
            2,
            "only the newest batches"
        );
        // A live frame recorded earlier is not replaced by an older one.
        let mut live = LiveStore::new(1_000_000);
        live.record(&frame("a", 9, 900_000, &[9]), 900_000);
        prefill(&mut live, &buffer, 900_000, 1000);
        assert_eq!(live.last(&d).map(|l| l.seq), Some(9));
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
        assert!(all[0].summary.contains("p=1 (mW)"), "{}", all[0].summary);
        let newest = all.last().expect("entries").time_ms;
        assert!(s.tail(&d, newest).is_empty());
        assert_eq!(s.last(&d).map(|l| l.seq), Some(TAIL_LEN as u64 + 5));
    }
}
