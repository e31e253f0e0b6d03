//! # Clock jumps: the wall clock moving unlike elapsed time
//!
//! The gateway stamps frames and events and closes periods with its
//! **report time** ([`ReportClock`]), not with the bare wall clock: report
//! time is the wall clock while that moves with elapsed time, and a step of
//! it (an NTP step, someone setting the date, an RTC that lost its time at
//! boot) moves report time only once the wall clock has kept it for
//! `[report] clock_step_confirm_seconds` (default 600); a step taken back
//! before then never moves report time, so no frame is filed in a period
//! that has not happened and no period is closed early. The rules are
//! [`report_time::ReportTimeline`]'s (pure); docs/REPORT-FORMAT.md §4.2.2
//! states what a verifier may expect from them.
//!
//! Every reading of the clock (every stamp, and at least one a second from
//! [`run_clock_watch`]) goes through the timeline, so a step is seen at the
//! first stamp after it. The watch task turns what the timeline noticed
//! into `clock_jump` events stamped with report time, and logs a WARN:
//! - `wall clock stepped by <signed ms> ms` for every step of the wall
//!   clock (a step taken back is a second step the other way);
//! - `report time stepped by <signed ms> ms to follow the wall clock` when
//!   a held step persisted and report time moved.
//!
//! Slewing (adjtime, chrony/timesyncd's normal corrections) is far slower
//! than the [`JUMP_THRESHOLD_MS`] threshold and is neither reported nor
//! held: report time follows it.
//!
//! Invariant: each event's step is the only number in its detail: a
//! report takes the largest number of its period's `clock_jump` details
//! as `clock.max_skew_ms` (see `report::max_skew`).

pub mod report_time;

use mrv_shared::clock::Clock;
use mrv_shared::event::{Event, EventKind};
use report_time::{Notice, ReportTimeline};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A step of the wall clock against elapsed time larger than this is a jump.
pub const JUMP_THRESHOLD_MS: u64 = 2_000;
/// How often the watch task reads the clock (when nothing else does).
pub const TICK: Duration = Duration::from_secs(1);
/// Default of `[report] clock_step_confirm_seconds`: how long the wall
/// clock must keep a step before report time follows it.
pub const DEFAULT_STEP_CONFIRM_SECONDS: u32 = 600;

/// The gateway's report time: a wall clock ([`Clock`] that
/// [`Clock::can_jump`]) read through a [`ReportTimeline`] against the
/// monotonic clock. Both limits are clock time: a time-compressed clock of
/// rate `r` (soak tests) scales the real monotonic clock by `r`, and the
/// jump threshold with it.
pub struct ReportClock {
    wall: Arc<dyn Clock>,
    origin: Instant,
    rate: u64,
    state: Mutex<ReportClockState>,
}

struct ReportClockState {
    timeline: ReportTimeline,
    /// Noticed, not yet taken by the watch task.
    notices: Vec<Notice>,
}

impl std::fmt::Debug for ReportClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportClock")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl ReportClock {
    /// Report time over `wall`, accepting a step the wall clock keeps for
    /// `confirm_ms` (clock ms; 0: every step at once).
    pub fn new(wall: Arc<dyn Clock>, confirm_ms: u64) -> ReportClock {
        let rate = u64::from(wall.rate().max(1));
        ReportClock {
            wall,
            origin: Instant::now(),
            rate,
            state: Mutex::new(ReportClockState {
                timeline: ReportTimeline::new(JUMP_THRESHOLD_MS.saturating_mul(rate), confirm_ms),
                notices: Vec::new(),
            }),
        }
    }

    /// What the timeline noticed since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut self.lock().notices)
    }

    /// The wall clock minus report time while a step is held.
    pub fn held_offset_ms(&self) -> Option<i64> {
        self.lock().timeline.held_offset_ms()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportClockState> {
        // A panic while holding the lock cannot leave the timeline
        // half-updated in a way worse than its last reading: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ReportClock {
    fn now_ms(&self) -> u64 {
        let mut s = self.lock();
        // Both clocks are read under the lock, so readings reach the
        // timeline in the order they were taken.
        let mono = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(self.rate);
        let o = s.timeline.observe(self.wall.now_ms(), mono);
        s.notices.extend(o.notices);
        o.now_ms
    }

    fn can_jump(&self) -> bool {
        self.wall.can_jump()
    }

    fn rate(&self) -> u32 {
        self.wall.rate()
    }
}

/// The `clock_jump` event for a notice of the timeline.
pub fn jump_event(notice: Notice) -> Event {
    let (time_ms, detail) = match notice {
        Notice::WallStepped { at_ms, step_ms } => {
            (at_ms, format!("wall clock stepped by {step_ms} ms"))
        }
        Notice::Accepted { at_ms, step_ms } => (
            at_ms,
            format!("report time stepped by {step_ms} ms to follow the wall clock"),
        ),
    };
    Event {
        time_ms,
        kind: EventKind::ClockJump,
        device: None,
        seqs: None,
        detail,
    }
}

/// Reads report time every [`TICK`] until `shutdown` (so a held step is
/// accepted on time even when nothing else stamps), sending a `clock_jump`
/// event for every notice to `events` (the buffer's event recorder).
pub async fn run_clock_watch(
    clock: Arc<ReportClock>,
    events: mpsc::UnboundedSender<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
        let now = clock.now_ms();
        for notice in clock.take_notices() {
            match notice {
                Notice::WallStepped { step_ms, .. } => tracing::warn!(
                    step_ms,
                    report_time = %mrv_shared::clock::utc_rfc3339_ms(now),
                    held = clock.held_offset_ms().is_some(),
                    "the wall clock jumped; recorded as a clock_jump event; report time follows it only if it persists"
                ),
                Notice::Accepted { step_ms, .. } => tracing::warn!(
                    step_ms,
                    report_time = %mrv_shared::clock::utc_rfc3339_ms(now),
                    "the wall clock's step persisted; report time follows it (clock_jump event)"
                ),
            }
            let _ = events.send(jump_event(notice));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mrv_shared::clock::ScaledClock;

    #[test]
    fn the_event_detail_holds_the_step_as_its_only_number() {
        for (notice, text) in [
            (
                Notice::WallStepped {
                    at_ms: 5,
                    step_ms: -3_600_000,
                },
                "wall clock stepped by -3600000 ms",
            ),
            (
                Notice::Accepted {
                    at_ms: 5,
                    step_ms: 3_600_000,
                },
                "report time stepped by 3600000 ms to follow the wall clock",
            ),
        ] {
            let e = jump_event(notice);
            assert_eq!((e.kind, e.time_ms), (EventKind::ClockJump, 5));
            assert_eq!(e.detail, text);
            let numbers: Vec<&str> = e
                .detail
                .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                .filter(|t| !t.is_empty())
                .collect();
            assert_eq!(numbers.len(), 1, "{numbers:?}");
        }
    }

    #[test]
    fn a_report_clock_holds_a_step_of_a_scaled_clock_and_follows_it_after_the_wait() {
        // x1000: the 2 s threshold is 2,000 s of clock time, a 60 s wait
        // is 60 ms real.
        let wall = Arc::new(ScaledClock::new(1_764_115_200_000, 1000));
        let rc = ReportClock::new(wall.clone(), 60_000);
        let before = rc.now_ms();
        wall.set_step(3_600_000);
        let held = rc.now_ms();
        assert!(
            held < before + 1_000_000,
            "held: {held} vs {before} (+{})",
            held - before
        );
        assert!(matches!(
            rc.take_notices()[..],
            [Notice::WallStepped { step_ms, .. }] if (step_ms - 3_600_000).abs() < 2_000_000
        ));
        std::thread::sleep(Duration::from_millis(80));
        let after = rc.now_ms();
        let gap = i128::from(wall.now_ms()) - i128::from(after);
        assert!((0..100_000).contains(&gap), "follows the wall clock: {gap}");
        assert!(matches!(rc.take_notices()[..], [Notice::Accepted { .. }]));
        assert!(rc.take_notices().is_empty());
    }
}
