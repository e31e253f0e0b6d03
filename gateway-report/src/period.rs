//! Monitoring periods: UTC-aligned, half-open `[start, end)`, and which one
//! is due next. Pure functions of time: the time given is the gateway's
//! report time (`crate::clock_watch`), which holds a step of the wall clock
//! until it persists, so a step taken back closes no period early.
//!
//! Invariant: periods of one gateway tile time without gaps or overlaps;
//! the first starts at the period boundary at or before the first data (or
//! the first start of the report task), each next one at the previous end.

use mrv_shared::report::model::Period;

/// The period boundary at or before `t`.
pub fn align_down(t_ms: u64, period_ms: u64) -> u64 {
    t_ms - t_ms % period_ms.max(1)
}

/// The period after the head (or the first one, starting at the boundary
/// at or before `first_ms`), if it may be closed at `now_ms` (its end plus
/// `grace_ms` has passed).
pub fn next_due(
    head_end_ms: Option<u64>,
    first_ms: u64,
    now_ms: u64,
    period_ms: u64,
    grace_ms: u64,
) -> Option<Period> {
    let start = head_end_ms.unwrap_or_else(|| align_down(first_ms, period_ms));
    let p = Period {
        start_ms: start,
        end_ms: start + period_ms,
    };
    (now_ms >= p.end_ms.saturating_add(grace_ms)).then_some(p)
}

/// When the next period after the head closes (for the task's timer).
pub fn next_close_ms(head_end_ms: Option<u64>, now_ms: u64, period_ms: u64, grace_ms: u64) -> u64 {
    let start = head_end_ms.unwrap_or_else(|| align_down(now_ms, period_ms));
    start + period_ms + grace_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn the_first_period_starts_at_the_utc_hour_before_the_first_data() {
        let t = 1_764_115_200_000 + 20 * 60_000; // 00:20 UTC
        assert_eq!(align_down(t, H), 1_764_115_200_000);
        assert_eq!(
            next_due(None, t, 1_764_115_200_000 + H + 60_000, H, 120_000),
            None
        );
        let p = next_due(None, t, 1_764_115_200_000 + H + 120_000, H, 120_000).expect("due");
        assert_eq!(
            (p.start_ms, p.end_ms),
            (1_764_115_200_000, 1_764_115_200_000 + H)
        );
    }

    #[test]
    fn next_periods_follow_the_head_without_gaps() {
        let p = next_due(Some(10 * H), 0, 11 * H + 5, H, 0).expect("due");
        assert_eq!((p.start_ms, p.end_ms), (10 * H, 11 * H));
        assert_eq!(next_due(Some(10 * H), 0, 11 * H - 1, H, 0), None);
        assert_eq!(next_close_ms(Some(10 * H), 0, H, 7), 11 * H + 7);
    }

    /// Drives the report task's decision once a second of real time for
    /// `seconds`, with the wall clock `wall(real_s)` read through report
    /// time (2 s threshold, `confirm_ms` wait): the periods closed, each
    /// with the real second it closed at.
    fn closes(
        t0: u64,
        seconds: u64,
        confirm_ms: u64,
        wall: impl Fn(u64) -> u64,
    ) -> Vec<(u64, Period)> {
        use crate::clock_watch::report_time::ReportTimeline;
        const P: u64 = 15 * 60_000;
        let mut tl = ReportTimeline::new(2_000, confirm_ms);
        let mut head: Option<u64> = None;
        let mut out = Vec::new();
        for s in 0..=seconds {
            let now = tl.observe(wall(s), s * 1000).now_ms;
            while let Some(p) = next_due(head, t0, now, P, 10_000) {
                out.push((s, p));
                head = Some(p.end_ms);
            }
        }
        out
    }

    fn period(start_ms: u64) -> Period {
        Period {
            start_ms,
            end_ms: start_ms + 15 * 60_000,
        }
    }

    #[test]
    fn a_forward_step_taken_back_mid_period_closes_each_period_once_on_time() {
        let t0 = 1_764_115_200_000;
        // +1 h from 20 to 25 minutes; periods of 15 min, 10 s grace.
        let wall = |s: u64| t0 + s * 1000 + if (1200..1500).contains(&s) { H } else { 0 };
        assert_eq!(
            closes(t0, 2709, 600_000, wall),
            [(910, period(t0)), (1810, period(t0 + 900_000))]
        );
        // Until 45:10 the third closes too, on time.
        assert_eq!(
            closes(t0, 2710, 600_000, wall),
            [
                (910, period(t0)),
                (1810, period(t0 + 900_000)),
                (2710, period(t0 + 1_800_000))
            ]
        );
    }

    #[test]
    fn a_backward_step_taken_back_mid_period_holds_no_period_open() {
        let t0 = 1_764_115_200_000;
        let wall = |s: u64| t0 + H + s * 1000 - if (1200..1500).contains(&s) { H } else { 0 };
        assert_eq!(
            closes(t0 + H, 2710, 600_000, wall),
            [
                (910, period(t0 + H)),
                (1810, period(t0 + H + 900_000)),
                (2710, period(t0 + H + 1_800_000))
            ]
        );
    }

    #[test]
    fn a_forward_step_that_persists_closes_the_skipped_periods_only_after_the_wait() {
        let t0 = 1_764_115_200_000;
        // +1 h from 20 minutes on, for good; 10-minute wait.
        let wall = |s: u64| t0 + s * 1000 + if s >= 1200 { H } else { 0 };
        let got = closes(t0, 1805, 600_000, wall);
        // The first on time; the one the step is in and the three it jumped
        // over only when report time follows the step (30 min, real).
        assert_eq!(
            got,
            [
                (910, period(t0)),
                (1800, period(t0 + 900_000)),
                (1800, period(t0 + 1_800_000)),
                (1800, period(t0 + 2_700_000)),
                (1800, period(t0 + 3_600_000)),
            ]
        );
    }

    #[test]
    fn with_no_wait_a_forward_step_closes_the_skipped_periods_at_once() {
        let t0 = 1_764_115_200_000;
        let wall = |s: u64| t0 + s * 1000 + if s >= 1200 { H } else { 0 };
        let got = closes(t0, 1200, 0, wall);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[1..].iter().all(|(s, _)| *s == 1200), "{got:?}");
    }
}
