//! # Report time: the wall clock, with steps held until they persist
//!
//! [`ReportTimeline`] (pure) turns successive readings of the wall clock
//! and of a monotonic clock into the gateway's **report time**: the time it
//! stamps frames (`received_ms`), events (`time_ms`) and closes periods
//! with. Rules, in clock milliseconds (a time-compressed test clock scales
//! both limits by its rate):
//!
//! 1. While the wall clock moves with elapsed time (within `threshold_ms`
//!    of it, so NTP slewing is followed), report time **is** the wall
//!    clock, to the millisecond.
//! 2. A step (the wall clock more than `threshold_ms` away from report
//!    time projected by elapsed time) is seen at once
//!    ([`Notice::WallStepped`]), but report time keeps running on elapsed
//!    time from before the step: it is **held**.
//! 3. A held step that the wall clock keeps for `confirm_ms` of elapsed
//!    time (give or take `threshold_ms` of slewing) is **accepted**: report
//!    time becomes the wall clock again ([`Notice::Accepted`]). Another
//!    step while one is held restarts the wait; with `confirm_ms = 0` every
//!    step is accepted at once (report time then is always the wall clock).
//! 4. A held step that the wall clock takes back (within `threshold_ms` of
//!    report time again) is a second step the other way
//!    ([`Notice::WallStepped`]), and report time never moved.
//!
//! Invariants: report time only moves by more than `threshold_ms` unlike
//! elapsed time at an [`Notice::Accepted`]; while a step is held it is
//! strictly elapsed time from the last reading before the step; every
//! change of the wall clock's offset larger than `threshold_ms` gives
//! exactly one `WallStepped` notice, with the signed size of that change.

/// What an observation found out about the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The wall clock stepped by `step_ms` (signed: positive = forward)
    /// against elapsed time, seen at report time `at_ms`.
    WallStepped {
        /// Report time of the reading that saw it.
        at_ms: u64,
        /// The step, ms.
        step_ms: i64,
    },
    /// A held step persisted: report time moved by `step_ms` to the wall
    /// clock, which it is again from `at_ms` on.
    Accepted {
        /// Report time after the move.
        at_ms: u64,
        /// The move, ms.
        step_ms: i64,
    },
}

/// What one reading gives: report time and what it noticed (at most two
/// notices: a step seen and accepted at once when `confirm_ms` is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Report time, Unix ms.
    pub now_ms: u64,
    /// Steps seen or accepted at this reading, in order.
    pub notices: Vec<Notice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// Wall clock minus report time, ms (its latest value: slewing while
    /// held is followed).
    offset_ms: i64,
    /// Monotonic time the wall clock took this offset.
    since_mono_ms: u64,
}

/// Report time from (wall, monotonic) readings. Pure; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTimeline {
    threshold_ms: u64,
    confirm_ms: u64,
    /// (report time, monotonic time) of the last reading.
    last: Option<(u64, u64)>,
    held: Option<Held>,
}

fn saturating_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl ReportTimeline {
    /// A timeline treating a difference above `threshold_ms` as a step and
    /// accepting a step the wall clock keeps for `confirm_ms`.
    pub fn new(threshold_ms: u64, confirm_ms: u64) -> ReportTimeline {
        ReportTimeline {
            threshold_ms,
            confirm_ms,
            last: None,
            held: None,
        }
    }

    /// The wall clock minus report time while a step is held, else `None`.
    pub fn held_offset_ms(&self) -> Option<i64> {
        self.held.map(|h| h.offset_ms)
    }

    /// Takes a reading of the wall clock and of a monotonic clock (both
    /// ms; the monotonic one never goes back) and gives report time.
    pub fn observe(&mut self, wall_ms: u64, mono_ms: u64) -> Observation {
        let Some((r0, m0)) = self.last else {
            self.last = Some((wall_ms, mono_ms));
            return Observation {
                now_ms: wall_ms,
                notices: Vec::new(),
            };
        };
        let projected = r0.saturating_add(mono_ms.saturating_sub(m0));
        let offset = i128::from(wall_ms) - i128::from(projected);
        let within = |d: i128| d.unsigned_abs() <= u128::from(self.threshold_ms);
        let mut notices = Vec::new();
        let now = match self.held {
            None if within(offset) => wall_ms,
            None => {
                notices.push(Notice::WallStepped {
                    at_ms: projected,
                    step_ms: saturating_i64(offset),
                });
                self.held = Some(Held {
                    offset_ms: saturating_i64(offset),
                    since_mono_ms: mono_ms,
                });
                projected
            }
            Some(h) if within(offset) => {
                // Taken back: report time never moved.
                notices.push(Notice::WallStepped {
                    at_ms: wall_ms,
                    step_ms: saturating_i64(offset - i128::from(h.offset_ms)),
                });
                self.held = None;
                wall_ms
            }
            Some(h) => {
                let change = offset - i128::from(h.offset_ms);
                let since = if within(change) {
                    h.since_mono_ms
                } else {
                    notices.push(Notice::WallStepped {
                        at_ms: projected,
                        step_ms: saturating_i64(change),
                    });
                    mono_ms
                };
                self.held = Some(Held {
                    offset_ms: saturating_i64(offset),
                    since_mono_ms: since,
                });
                projected
            }
        };
        let now = match self.held {
            Some(h) if mono_ms.saturating_sub(h.since_mono_ms) >= self.confirm_ms => {
                notices.push(Notice::Accepted {
                    at_ms: wall_ms,
                    step_ms: h.offset_ms,
                });
                self.held = None;
                wall_ms
            }
            _ => now,
        };
        self.last = Some((now, mono_ms));
        Observation {
            now_ms: now,
            notices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;
    const T: u64 = 1_764_115_200_000;

    /// A timeline with the gateway's 2 s threshold and a 10-minute wait.
    fn timeline() -> ReportTimeline {
        ReportTimeline::new(2_000, 600_000)
    }

    fn at(tl: &mut ReportTimeline, wall: u64, mono: u64) -> (u64, Vec<Notice>) {
        let o = tl.observe(wall, mono);
        (o.now_ms, o.notices)
    }

    #[test]
    fn without_steps_report_time_is_the_wall_clock_to_the_millisecond() {
        let mut tl = timeline();
        assert_eq!(at(&mut tl, T, 0), (T, vec![]));
        assert_eq!(at(&mut tl, T + 1_000, 1_000), (T + 1_000, vec![]));
        // Slewing (a wall clock 1.5 s ahead after a long pause) is followed.
        assert_eq!(at(&mut tl, T + 61_500, 60_000), (T + 61_500, vec![]));
        assert_eq!(at(&mut tl, T + 61_400, 60_000), (T + 61_400, vec![]));
        assert_eq!(tl.held_offset_ms(), None);
    }

    #[test]
    fn a_forward_step_taken_back_within_the_wait_never_moves_report_time() {
        let mut tl = timeline();
        at(&mut tl, T, 0);
        let (now, n) = at(&mut tl, T + 1_000 + H, 1_000);
        assert_eq!(now, T + 1_000, "held: elapsed time from before the step");
        assert_eq!(
            n,
            [Notice::WallStepped {
                at_ms: T + 1_000,
                step_ms: H as i64
            }]
        );
        assert_eq!(tl.held_offset_ms(), Some(H as i64));
        // Five minutes later the wall clock is still an hour ahead.
        assert_eq!(at(&mut tl, T + 301_000 + H, 301_000), (T + 301_000, vec![]));
        // It steps back: a second step, and report time is the wall clock.
        let (now, n) = at(&mut tl, T + 302_000, 302_000);
        assert_eq!(now, T + 302_000);
        assert_eq!(
            n,
            [Notice::WallStepped {
                at_ms: T + 302_000,
                step_ms: -(H as i64)
            }]
        );
        assert_eq!(tl.held_offset_ms(), None);
        assert_eq!(at(&mut tl, T + 303_000, 303_000), (T + 303_000, vec![]));
    }

    #[test]
    fn a_step_kept_for_the_wait_is_accepted_and_report_time_moves_once() {
        let mut tl = timeline();
        at(&mut tl, T, 0);
        at(&mut tl, T + H, 0);
        let (now, n) = at(&mut tl, T + H + 599_999, 599_999);
        assert_eq!((now, n), (T + 599_999, vec![]));
        let (now, n) = at(&mut tl, T + H + 600_000, 600_000);
        assert_eq!(now, T + H + 600_000);
        assert_eq!(
            n,
            [Notice::Accepted {
                at_ms: T + H + 600_000,
                step_ms: H as i64
            }]
        );
        // From then on the wall clock again, with no further notice.
        assert_eq!(
            at(&mut tl, T + H + 601_000, 601_000),
            (T + H + 601_000, vec![])
        );
    }

    #[test]
    fn a_backward_step_is_held_and_accepted_like_a_forward_one() {
        let mut tl = timeline();
        at(&mut tl, T + H, 0);
        let (now, n) = at(&mut tl, T + 1_000, 1_000);
        assert_eq!(now, T + H + 1_000);
        assert_eq!(
            n,
            [Notice::WallStepped {
                at_ms: T + H + 1_000,
                step_ms: -(H as i64)
            }]
        );
        let (now, n) = at(&mut tl, T + 601_000, 601_000);
        assert_eq!(now, T + 601_000);
        assert_eq!(
            n,
            [Notice::Accepted {
                at_ms: T + 601_000,
                step_ms: -(H as i64)
            }]
        );
    }

    #[test]
    fn another_step_while_one_is_held_restarts_the_wait() {
        let mut tl = timeline();
        at(&mut tl, T, 0);
        at(&mut tl, T + H, 0);
        let (now, n) = at(&mut tl, T + 2 * H + 300_000, 300_000);
        assert_eq!(now, T + 300_000);
        assert_eq!(
            n,
            [Notice::WallStepped {
                at_ms: T + 300_000,
                step_ms: H as i64
            }]
        );
        // 600 s after the first step, 300 s after the second: still held.
        assert_eq!(
            at(&mut tl, T + 2 * H + 600_000, 600_000),
            (T + 600_000, vec![])
        );
        let (now, n) = at(&mut tl, T + 2 * H + 900_000, 900_000);
        assert_eq!(now, T + 2 * H + 900_000);
        assert_eq!(
            n,
            [Notice::Accepted {
                at_ms: T + 2 * H + 900_000,
                step_ms: 2 * H as i64
            }]
        );
    }

    #[test]
    fn slewing_while_a_step_is_held_does_not_restart_the_wait() {
        let mut tl = timeline();
        at(&mut tl, T, 0);
        at(&mut tl, T + H, 0);
        // The wall clock creeps 1.5 s, then another 1.5 s (3 s in all, more
        // than the threshold, but never 2 s at once).
        assert_eq!(at(&mut tl, T + H + 301_500, 300_000), (T + 300_000, vec![]));
        assert_eq!(at(&mut tl, T + H + 403_000, 400_000), (T + 400_000, vec![]));
        let (_, n) = at(&mut tl, T + H + 603_000, 600_000);
        assert_eq!(
            n,
            [Notice::Accepted {
                at_ms: T + H + 603_000,
                step_ms: H as i64 + 3_000
            }]
        );
    }

    #[test]
    fn with_no_wait_a_step_is_seen_and_accepted_at_once() {
        let mut tl = ReportTimeline::new(2_000, 0);
        at(&mut tl, T, 0);
        let (now, n) = at(&mut tl, T + H + 1_000, 1_000);
        assert_eq!(now, T + H + 1_000);
        assert_eq!(
            n,
            [
                Notice::WallStepped {
                    at_ms: T + 1_000,
                    step_ms: H as i64
                },
                Notice::Accepted {
                    at_ms: T + H + 1_000,
                    step_ms: H as i64
                }
            ]
        );
    }

    #[test]
    fn the_threshold_is_exclusive() {
        let mut tl = timeline();
        at(&mut tl, T, 0);
        assert_eq!(at(&mut tl, T + 3_000, 1_000), (T + 3_000, vec![]));
        let (now, n) = at(&mut tl, T + 5_001, 1_000);
        assert_eq!(now, T + 3_000);
        assert_eq!(
            n,
            [Notice::WallStepped {
                at_ms: T + 3_000,
                step_ms: 2_001
            }]
        );
    }
}
