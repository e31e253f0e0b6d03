//! # Free space on the data directory's file system
//!
//! The buffer, the report store and sled's own bookkeeping share one file
//! system. If devices could fill it, the next report, event or sled
//! snapshot would fail with ENOSPC. So a watch samples the free space
//! (`statvfs`: blocks available to an unprivileged writer) every
//! [`CHECK_EVERY`] and moves between three levels:
//!
//! | level | when | what happens |
//! |---|---|---|
//! | `ok` | free >= `warn_free_bytes` | nothing |
//! | `low` | `min_free_bytes` <= free < `warn_free_bytes` | alarm: WARN log, status/metrics, `disk_space_low` event |
//! | `critical` | free < `min_free_bytes` | new frames are refused like in a full buffer (`buffer_full` acks; devices keep them; duplicates are still acked), `disk_space_critical` event |
//!
//! Going back up a level needs the free space to exceed that level's
//! threshold by a margin ([`hysteresis`]), so a file system hovering at a
//! threshold does not flap. Back at `ok`: a `disk_space_recovered` event.
//! Every level change is one event; a failing `statvfs` is logged and
//! shown, and leaves the level as it was.
//!
//! [`SpaceWatch`] is the pure state machine (sample + now -> actions); the
//! task [`run_space_watch`] samples, applies the actions to the buffer and
//! the event queue, and publishes [`SpaceStatus`] for diagnostics.

use crate::buffer::Buffer;
use crate::clock::Clock;
use mrv_shared::event::{Event, EventKind};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the free space is sampled.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One `statvfs` sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpaceSample {
    /// Bytes available to an unprivileged writer.
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
}

/// Samples the file system that holds `path`.
pub fn sample(path: &Path) -> std::io::Result<SpaceSample> {
    let s = rustix::fs::statvfs(path)?;
    Ok(SpaceSample {
        free_bytes: s.f_bavail.saturating_mul(s.f_frsize),
        total_bytes: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// Where the free space stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Enough room.
    Ok,
    /// Below the warning threshold: alarm.
    Low,
    /// Below the refusal threshold: new frames are refused.
    Critical,
}

/// The two thresholds (validated: `warn_below >= refuse_below`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    /// `warn_free_bytes`.
    pub warn_below: u64,
    /// `min_free_bytes`.
    pub refuse_below: u64,
}

/// Margin above a threshold needed to leave the level below it: a
/// sixteenth of the threshold, at least 1 MiB.
pub fn hysteresis(threshold: u64) -> u64 {
    (threshold / 16).max(1 << 20)
}

/// What the watch asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refuse (`true`) or accept again (`false`) new frames.
    RefuseFrames(bool),
    /// Record this event.
    Record(Event),
}

/// The pure state machine (see the module doc).
#[derive(Debug, Clone)]
pub struct SpaceWatch {
    thresholds: Thresholds,
    level: Level,
}

impl SpaceWatch {
    /// A watch at level `ok`.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            level: Level::Ok,
        }
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The level a sample means, given the level now (hysteresis upwards).
    fn level_for(&self, free: u64) -> Level {
        let t = self.thresholds;
        let up = |threshold: u64, from: Level, to_if_not: Level| {
            if self.level >= from && free < threshold.saturating_add(hysteresis(threshold)) {
                from
            } else {
                to_if_not
            }
        };
        if free < t.refuse_below {
            Level::Critical
        } else if free < t.warn_below {
            up(t.refuse_below, Level::Critical, Level::Low)
        } else {
            match up(t.refuse_below, Level::Critical, Level::Low) {
                Level::Critical => Level::Critical,
                _ => up(t.warn_below, Level::Low, Level::Ok),
            }
        }
    }

    /// Takes a sample at `now_ms`; returns what to do.
    pub fn on_sample(&mut self, s: SpaceSample, now_ms: u64) -> Vec<Action> {
        let new = self.level_for(s.free_bytes);
        if new == self.level {
            return Vec::new();
        }
        let old = std::mem::replace(&mut self.level, new);
        let mut out = Vec::new();
        if (old == Level::Critical) != (new == Level::Critical) {
            out.push(Action::RefuseFrames(new == Level::Critical));
        }
        let t = self.thresholds;
        let (kind, what) = match new {
            Level::Ok => (
                EventKind::DiskSpaceRecovered,
                format!("above the alarm threshold of {} bytes again", t.warn_below),
            ),
            Level::Low => (
                EventKind::DiskSpaceLow,
                format!(
                    "below the alarm threshold of {} bytes; new frames are refused below {} bytes{}",
                    t.warn_below,
                    t.refuse_below,
                    if old == Level::Critical {
                        "; frames are accepted again"
                    } else {
                        ""
                    }
                ),
            ),
            Level::Critical => (
                EventKind::DiskSpaceCritical,
                format!(
                    "below {} bytes: new frames are refused (devices keep them) until space returns",
                    t.refuse_below
                ),
            ),
        };
        out.push(Action::Record(Event {
            time_ms: now_ms,
            kind,
            device: None,
            seqs: None,
            detail: format!(
                "data directory file system has {} of {} bytes free: {what}",
                s.free_bytes, s.total_bytes
            ),
        }));
        out
    }
}

/// What diagnostics show (`/api/status` `disk`, `mrv_disk_*` metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpaceReport {
    /// The directory watched (the gateway's data dir).
    pub path: PathBuf,
    /// Last sample, if any succeeded.
    pub sample: Option<SpaceSample>,
    /// The level.
    pub level: Level,
    /// The thresholds.
    pub thresholds: Thresholds,
    /// When the level last changed (Unix ms), if it did.
    pub since_ms: Option<u64>,
    /// The last `statvfs` error, if the last sample failed.
    pub error: Option<String>,
}

/// Shared, latest [`SpaceReport`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SpaceStatus(Arc<Mutex<SpaceReport>>);

impl SpaceStatus {
    /// A status before the first sample.
    pub fn new(path: PathBuf, thresholds: Thresholds) -> Self {
        Self(Arc::new(Mutex::new(SpaceReport {
            path,
            sample: None,
            level: Level::Ok,
            thresholds,
            since_ms: None,
            error: None,
        })))
    }

    /// The latest report.
    pub fn get(&self) -> SpaceReport {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SpaceReport)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Samples the free space under `status`'s path until `shutdown`; refuses
/// new frames in `buffer` while critical; sends level events to `events`.
/// The first sample is taken at once (a gateway started on a full disk
/// refuses new frames from the start).
pub async fn run_space_watch(
    status: SpaceStatus,
    buffer: Buffer,
    events: mpsc::UnboundedSender<Event>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let report = status.get();
    let path = report.path.clone();
    let mut machine = SpaceWatch::new(report.thresholds);
    let mut last_error: Option<String> = None;
    loop {
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || sample(&p))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match r {
            Ok(s) => {
                let now = clock.now_ms();
                let actions = machine.on_sample(s, now);
                let changed = !actions.is_empty();
                for a in actions {
                    match a {
                        Action::RefuseFrames(refuse) => buffer.set_space_low(refuse),
                        Action::Record(ev) => {
                            match machine.level() {
                                Level::Ok => {
                                    tracing::info!(detail = %ev.detail, "disk space recovered")
                                }
                                Level::Low => tracing::warn!(detail = %ev.detail, "disk space low"),
                                Level::Critical => {
                                    tracing::error!(detail = %ev.detail, "disk space critical")
                                }
                            }
                            let _ = events.send(ev);
                        }
                    }
                }
                last_error = None;
                let level = machine.level();
                status.update(|r| {
                    r.sample = Some(s);
                    r.level = level;
                    r.error = None;
                    if changed {
                        r.since_ms = Some(now);
                    }
                });
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(path = %path.display(), error = %text, "cannot read the free space");
                }
                status.update(|r| r.error = Some(text.clone()));
                last_error = Some(text);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn watch() -> SpaceWatch {
        SpaceWatch::new(Thresholds {
            warn_below: 256 * MIB,
            refuse_below: 64 * MIB,
        })
    }

    fn s(free_mib: u64) -> SpaceSample {
        SpaceSample {
            free_bytes: free_mib * MIB,
            total_bytes: 1024 * MIB,
        }
    }

    fn kinds(a: &[Action]) -> Vec<String> {
        a.iter()
            .map(|a| match a {
                Action::RefuseFrames(r) => format!("refuse={r}"),
                Action::Record(e) => e.kind.name().to_string(),
            })
            .collect()
    }

    #[test]
    fn the_watch_alarms_then_refuses_then_recovers_with_one_event_per_level_change() {
        let mut w = watch();
        assert!(w.on_sample(s(500), 1).is_empty());
        assert_eq!(kinds(&w.on_sample(s(200), 2)), ["disk_space_low"]);
        assert!(w.on_sample(s(100), 3).is_empty());
        assert_eq!(
            kinds(&w.on_sample(s(10), 4)),
            ["refuse=true", "disk_space_critical"]
        );
        assert!(w.on_sample(s(0), 5).is_empty());
        // Just above the refusal threshold: not yet (hysteresis 4 MiB).
        assert!(w.on_sample(s(66), 6).is_empty());
        assert_eq!(w.level(), Level::Critical);
        assert_eq!(
            kinds(&w.on_sample(s(70), 7)),
            ["refuse=false", "disk_space_low"]
        );
        // Just above the alarm threshold: not yet (hysteresis 16 MiB).
        assert!(w.on_sample(s(260), 8).is_empty());
        assert_eq!(kinds(&w.on_sample(s(300), 9)), ["disk_space_recovered"]);
        assert_eq!(w.level(), Level::Ok);
    }

    #[test]
    fn a_sudden_fill_goes_straight_to_critical_and_a_sudden_free_straight_to_ok() {
        let mut w = watch();
        let a = w.on_sample(s(1), 1);
        assert_eq!(kinds(&a), ["refuse=true", "disk_space_critical"]);
        match &a[1] {
            Action::Record(e) => {
                assert_eq!(e.time_ms, 1);
                assert!(
                    e.detail.contains("1048576 of 1073741824 bytes free"),
                    "{}",
                    e.detail
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            kinds(&w.on_sample(s(900), 2)),
            ["refuse=false", "disk_space_recovered"]
        );
    }

    #[test]
    fn sample_reads_a_real_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sample(dir.path()).expect("statvfs");
        assert!(s.total_bytes > 0 && s.free_bytes <= s.total_bytes, "{s:?}");
        assert!(sample(&dir.path().join("missing")).is_err());
    }
}
