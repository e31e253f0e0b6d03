//! # Clock jumps: the wall clock moving unlike elapsed time
//!
//! Every second the watch task reads the gateway's wall clock
//! ([`Clock`], when it [`Clock::can_jump`]) and a monotonic clock, and [`JumpWatch`] (pure) compares how
//! far each moved since the last reading. When the wall clock moved more
//! than [`JUMP_THRESHOLD_MS`] further or less than elapsed time (an NTP
//! step, someone setting the date, an RTC that lost its time at boot) it
//! returns the step; the task records a `clock_jump` event and logs a WARN.
//! Slewing (adjtime, chrony/timesyncd's normal corrections) is far slower
//! than the threshold and is not reported.
//!
//! Invariant: the event's detail is `wall clock stepped by <signed ms> ms`,
//! and the step is the only number in it: a report takes the largest
//! number of its period's `clock_jump` details as `clock.max_skew_ms`
//! (see `report::max_skew`).

use crate::clock::Clock;
use mrv_shared::event::{Event, EventKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A step of the wall clock against elapsed time larger than this is a jump.
pub const JUMP_THRESHOLD_MS: u64 = 2_000;
/// How often the clocks are read.
pub const TICK: Duration = Duration::from_secs(1);

/// Compares successive (wall, monotonic) readings. Pure.
#[derive(Debug, Clone)]
pub struct JumpWatch {
    last: Option<(u64, u64)>,
    threshold_ms: u64,
}

impl Default for JumpWatch {
    fn default() -> Self {
        JumpWatch::with_threshold(JUMP_THRESHOLD_MS)
    }
}

impl JumpWatch {
    /// A watch reporting steps larger than `threshold_ms` (the default is
    /// [`JUMP_THRESHOLD_MS`]; a time-compressed clock scales it).
    pub fn with_threshold(threshold_ms: u64) -> JumpWatch {
        JumpWatch {
            last: None,
            threshold_ms,
        }
    }

    /// Takes a reading: wall clock and monotonic clock, both in ms. Returns
    /// the wall clock's step (signed ms: positive = forward) when it moved
    /// more than the threshold unlike elapsed time.
    pub fn observe(&mut self, wall_ms: u64, mono_ms: u64) -> Option<i64> {
        let last = self.last.replace((wall_ms, mono_ms));
        let (w0, m0) = last?;
        let wall = i128::from(wall_ms) - i128::from(w0);
        let elapsed = i128::from(mono_ms.saturating_sub(m0));
        let step = wall - elapsed;
        (step.unsigned_abs() > u128::from(self.threshold_ms))
            .then(|| i64::try_from(step).unwrap_or(if step < 0 { i64::MIN } else { i64::MAX }))
    }
}

/// The `clock_jump` event for a step of `step_ms`, at wall time `now_ms`.
pub fn jump_event(now_ms: u64, step_ms: i64) -> Event {
    Event {
        time_ms: now_ms,
        kind: EventKind::ClockJump,
        device: None,
        seqs: None,
        detail: format!("wall clock stepped by {step_ms} ms"),
    }
}

/// Reads the clocks every [`TICK`] until `shutdown`, sending a `clock_jump`
/// event for every jump to `events` (the buffer's event recorder).
pub async fn run_clock_watch(
    clock: Arc<dyn Clock>,
    events: mpsc::UnboundedSender<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now();
    // A time-compressed clock (soak tests) moves `rate` ms per real ms; a
    // late tick is then `rate` times larger in clock time.
    let rate = u64::from(clock.rate().max(1));
    let mut machine = JumpWatch::with_threshold(JUMP_THRESHOLD_MS.saturating_mul(rate));
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
        let mono = u64::try_from(start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(rate);
        let now = clock.now_ms();
        if let Some(step) = machine.observe(now, mono) {
            tracing::warn!(
                step_ms = step,
                now = %crate::clock::utc_rfc3339_ms(now),
                "the wall clock jumped; recorded as a clock_jump event"
            );
            let _ = events.send(jump_event(now, step));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_passing_normally_is_not_a_jump() {
        let mut w = JumpWatch::default();
        assert_eq!(w.observe(1_000_000, 0), None);
        assert_eq!(w.observe(1_001_000, 1_000), None);
        // A late tick (the task was not scheduled for 30 s) is not a jump.
        assert_eq!(w.observe(1_031_000, 31_000), None);
        // Slewing by a few ms per second is not either.
        assert_eq!(w.observe(1_032_050, 32_000), None);
    }

    #[test]
    fn a_step_forward_and_back_is_reported_with_its_sign() {
        let mut w = JumpWatch::default();
        w.observe(1_000_000, 0);
        assert_eq!(w.observe(1_000_000 + 3_601_000, 1_000), Some(3_600_000));
        assert_eq!(w.observe(1_000_000 + 2_000, 2_000), Some(-3_600_000));
        assert_eq!(w.observe(1_000_000 + 3_000, 3_000), None);
    }

    #[test]
    fn the_threshold_is_exclusive() {
        let mut w = JumpWatch::default();
        w.observe(10_000, 0);
        assert_eq!(w.observe(10_000 + 1_000 + JUMP_THRESHOLD_MS, 1_000), None);
        assert_eq!(
            w.observe(10_000 + 2_000 + 2 * JUMP_THRESHOLD_MS + 1, 2_000),
            Some(2_001)
        );
    }

    #[test]
    fn the_event_detail_holds_the_step_as_its_only_number() {
        let e = jump_event(5, -3_600_000);
        assert_eq!(e.kind, EventKind::ClockJump);
        assert_eq!(e.detail, "wall clock stepped by -3600000 ms");
        let numbers: Vec<&str> = e
            .detail
            .split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(numbers, ["-3600000"]);
    }
}
