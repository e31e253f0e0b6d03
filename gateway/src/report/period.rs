//! Monitoring periods: UTC-aligned, half-open `[start, end)`, and which one
//! is due next. Pure functions of time.
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
}
