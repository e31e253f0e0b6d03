//! # Retry pacing of the report task, and what it shows
//!
//! A round that fails (the report store cannot write: disk full, I/O
//! error; the buffer is being reopened) is retried after a wait that
//! doubles from [`FIRST_WAIT`] to [`LONGEST_WAIT`] and falls back to the
//! first after a success, so a full disk is not hammered every second. The
//! failure is an alarm ([`ReportTaskReport::alarm`], shown by diagnostics)
//! and is logged at ERROR once per distinct error text, not per attempt.
//! [`RetryPacing`] is pure; the report task drives it.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wait after the first failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const LONGEST_WAIT: Duration = Duration::from_secs(300);

/// Consecutive failures -> next wait (pure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPacing {
    failures: u32,
}

impl RetryPacing {
    /// A round succeeded: the next failure waits [`FIRST_WAIT`] again.
    pub fn on_success(&mut self) {
        self.failures = 0;
    }

    /// A round failed: how long to wait before the next.
    pub fn on_failure(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doubled = FIRST_WAIT.saturating_mul(1u32 << (self.failures - 1).min(20));
        doubled.min(LONGEST_WAIT)
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// What the report task shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportTaskReport {
    /// Failed rounds in a row (0 = the last round worked).
    pub consecutive_failures: u32,
    /// Last failure.
    pub last_error: Option<String>,
    /// When it happened, Unix ms.
    pub last_error_ms: Option<u64>,
    /// Next attempt, Unix ms (while failing).
    pub next_retry_ms: Option<u64>,
    /// Last round that worked, Unix ms.
    pub last_success_ms: Option<u64>,
}

impl ReportTaskReport {
    /// Alarm text while rounds fail.
    pub fn alarm(&self) -> Option<String> {
        (self.consecutive_failures > 0).then(|| {
            format!(
                "reports cannot be built or stored ({} failed attempts): {}",
                self.consecutive_failures,
                self.last_error.as_deref().unwrap_or("unknown error")
            )
        })
    }
}

/// The shared, latest [`ReportTaskReport`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReportTaskStatus(Arc<Mutex<ReportTaskReport>>);

impl ReportTaskStatus {
    /// The latest report.
    pub fn get(&self) -> ReportTaskReport {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a round that worked at `now_ms`.
    pub fn succeeded(&self, now_ms: u64) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        r.consecutive_failures = 0;
        r.next_retry_ms = None;
        r.last_success_ms = Some(now_ms);
    }

    /// Records a failed round at `now_ms`, retried at `next_ms`.
    pub fn failed(&self, error: String, failures: u32, now_ms: u64, next_ms: u64) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        r.consecutive_failures = failures;
        r.last_error = Some(error);
        r.last_error_ms = Some(now_ms);
        r.next_retry_ms = Some(next_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest_and_a_success_starts_over() {
        let mut p = RetryPacing::default();
        let waits: Vec<u64> = (0..12).map(|_| p.on_failure().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(p.failures(), 12);
        p.on_success();
        assert_eq!(p.on_failure(), FIRST_WAIT);
    }

    #[test]
    fn the_status_alarms_while_failing() {
        let s = ReportTaskStatus::default();
        assert!(s.get().alarm().is_none());
        s.failed("No space left on device".into(), 3, 10, 20);
        let a = s.get().alarm().expect("alarm");
        assert!(a.contains("3 failed") && a.contains("No space"), "{a}");
        s.succeeded(30);
        assert!(s.get().alarm().is_none());
        assert_eq!(s.get().last_success_ms, Some(30));
    }
}
