//! # The upload backlog alarm
//!
//! While the backend is unreachable (or refuses), signed reports pile up in
//! the report store and the readings they cover stay in the buffer: nothing
//! is pruned before delivery, so the buffer and the store grow as designed.
//! That is safe until the disk fills, so the operator must hear about it
//! long before: [`BacklogWatch`] (pure) compares the backlog with the
//! `[upload]` limits each time the uploader looks at it:
//!
//! | measure | limit (0 = off) | default |
//! |---|---|---|
//! | reports stored, not confirmed | `backlog_alarm_reports` | 48 |
//! | their bytes (signed JWS files) | `backlog_alarm_bytes` | 256 MiB |
//! | age: now − the end of the oldest waiting report's period | `backlog_alarm_minutes` | 360 (6 h) |
//!
//! Any measure at or over its limit raises the alarm: one
//! `upload_backlog_high` event (detail: the three measures and the limits),
//! an ERROR log line, `alarm` in the uploader's status (shown in
//! `/api/status`, the diagnostics health banner and `mrv_upload_backlog_alarm`).
//! The alarm clears when every measure is below half its limit (hysteresis:
//! a backlog draining in batches does not flap): one
//! `upload_backlog_cleared` event and an INFO line. Each change is one event.

use mrv_shared::event::{Event, EventKind};
use serde::Serialize;

/// The limits (validated config; 0 switches a measure off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BacklogLimits {
    /// Reports waiting.
    pub reports: u64,
    /// Bytes of the reports waiting.
    pub bytes: u64,
    /// Age of the oldest waiting report (since its period ended), ms.
    pub age_ms: u64,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits {
            reports: 48,
            bytes: 256 << 20,
            age_ms: 360 * 60_000,
        }
    }
}

/// The backlog as the uploader sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BacklogSample {
    /// Reports stored and not confirmed.
    pub reports: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Period end of the oldest of them, Unix ms (`None`: none waiting).
    pub oldest_end_ms: Option<u64>,
}

impl BacklogSample {
    /// Age of the oldest waiting report at `now_ms` (0 when none waits).
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        self.oldest_end_ms
            .map_or(0, |end| now_ms.saturating_sub(end))
    }
}

/// The pure alarm state machine (see the module doc).
#[derive(Debug, Clone)]
pub struct BacklogWatch {
    limits: BacklogLimits,
    alarm: bool,
}

fn over(value: u64, limit: u64) -> bool {
    limit > 0 && value >= limit
}

fn under_half(value: u64, limit: u64) -> bool {
    limit == 0 || value < limit / 2
}

impl BacklogWatch {
    /// A watch with no alarm raised.
    pub fn new(limits: BacklogLimits) -> BacklogWatch {
        BacklogWatch {
            limits,
            alarm: false,
        }
    }

    /// The limits.
    pub fn limits(&self) -> BacklogLimits {
        self.limits
    }

    /// Whether the alarm is raised.
    pub fn alarmed(&self) -> bool {
        self.alarm
    }

    /// Takes a look at the backlog; returns the event to record when the
    /// alarm was raised or cleared by it.
    pub fn observe(&mut self, s: BacklogSample, now_ms: u64) -> Option<Event> {
        let l = self.limits;
        let age = s.age_ms(now_ms);
        let kind = if !self.alarm
            && (over(s.reports, l.reports) || over(s.bytes, l.bytes) || over(age, l.age_ms))
        {
            self.alarm = true;
            EventKind::UploadBacklogHigh
        } else if self.alarm
            && under_half(s.reports, l.reports)
            && under_half(s.bytes, l.bytes)
            && under_half(age, l.age_ms)
        {
            self.alarm = false;
            EventKind::UploadBacklogCleared
        } else {
            return None;
        };
        Some(Event {
            time_ms: now_ms,
            kind,
            device: None,
            seqs: None,
            detail: self.describe(s, now_ms),
        })
    }

    /// The alarm text while raised (status, health banner).
    pub fn alarm_text(&self, s: BacklogSample, now_ms: u64) -> Option<String> {
        self.alarm.then(|| self.describe(s, now_ms))
    }

    fn describe(&self, s: BacklogSample, now_ms: u64) -> String {
        let l = self.limits;
        let limit = |v: u64| {
            if v == 0 {
                String::from("off")
            } else {
                v.to_string()
            }
        };
        format!(
            "upload backlog: {} reports, {} bytes, oldest waiting {} min since its period ended \
             (alarm at {} reports, {} bytes, {} min; readings stay buffered until delivered)",
            s.reports,
            s.bytes,
            s.age_ms(now_ms) / 60_000,
            limit(l.reports),
            limit(l.bytes),
            limit(l.age_ms / 60_000),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn limits() -> BacklogLimits {
        BacklogLimits {
            reports: 10,
            bytes: 1000,
            age_ms: 60 * MIN,
        }
    }

    fn sample(reports: u64, bytes: u64, oldest_end_ms: Option<u64>) -> BacklogSample {
        BacklogSample {
            reports,
            bytes,
            oldest_end_ms,
        }
    }

    fn kind(e: Option<Event>) -> Option<&'static str> {
        e.map(|e| e.kind.name())
    }

    #[test]
    fn each_measure_on_its_own_raises_the_alarm_once() {
        for s in [
            sample(10, 0, Some(0)),
            sample(1, 1000, Some(0)),
            sample(1, 1, Some(0)),
        ] {
            let mut w = BacklogWatch::new(limits());
            let now = if s.reports == 1 && s.bytes == 1 {
                60 * MIN
            } else {
                MIN
            };
            assert_eq!(kind(w.observe(s, now)), Some("upload_backlog_high"));
            assert!(w.alarmed());
            assert_eq!(kind(w.observe(s, now + MIN)), None, "one event per change");
        }
    }

    #[test]
    fn below_the_limits_nothing_happens() {
        let mut w = BacklogWatch::new(limits());
        assert_eq!(w.observe(sample(9, 999, Some(0)), 59 * MIN), None);
        assert_eq!(w.observe(sample(0, 0, None), u64::MAX), None);
        assert_eq!(w.alarm_text(sample(9, 9, None), 0), None);
    }

    #[test]
    fn the_alarm_clears_only_below_half_of_every_limit() {
        let mut w = BacklogWatch::new(limits());
        assert!(w.observe(sample(12, 900, Some(0)), MIN).is_some());
        // Draining: under the limit but not under half of it.
        assert_eq!(w.observe(sample(6, 400, Some(0)), MIN), None);
        assert_eq!(w.observe(sample(4, 500, Some(0)), MIN), None);
        assert_eq!(w.observe(sample(4, 400, Some(0)), 30 * MIN), None);
        let e = w
            .observe(sample(4, 400, Some(0)), 29 * MIN)
            .expect("cleared");
        assert_eq!(e.kind, EventKind::UploadBacklogCleared);
        assert!(!w.alarmed());
    }

    #[test]
    fn a_limit_of_zero_is_off() {
        let mut w = BacklogWatch::new(BacklogLimits {
            reports: 0,
            bytes: 0,
            age_ms: 0,
        });
        assert_eq!(
            w.observe(sample(u64::MAX, u64::MAX, Some(0)), u64::MAX),
            None
        );
    }

    #[test]
    fn the_detail_states_the_measures_and_the_limits() {
        let mut w = BacklogWatch::new(limits());
        let e = w
            .observe(sample(11, 5000, Some(10 * MIN)), 100 * MIN)
            .expect("raised");
        assert_eq!(
            e.detail,
            "upload backlog: 11 reports, 5000 bytes, oldest waiting 90 min since its period ended \
             (alarm at 10 reports, 1000 bytes, 60 min; readings stay buffered until delivered)"
        );
        assert_eq!(e.time_ms, 100 * MIN);
        assert_eq!(
            w.alarm_text(sample(11, 5000, Some(10 * MIN)), 100 * MIN),
            Some(e.detail)
        );
    }
}
