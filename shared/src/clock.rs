//! Time source (std only). Pure cores take `now_ms` as an argument; the
//! tasks that drive them (in the gateway, its buffer and Modbus crates, the
//! receiver) ask a [`Clock`], so tests can run on a [`ManualClock`]. Also
//! the UTC formats people read in logs, CLI output and pages.

use alloc::format;
use alloc::string::String;

use alloc::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix ms.
    fn now_ms(&self) -> u64;

    /// Whether this clock can step unlike elapsed time (NTP steps, someone
    /// setting the date), so the gateway watches it for jumps
    /// (`mrv_gateway::clock_watch`). The system clock can; a [`ManualClock`]
    /// models time passing (a test moving it on is not a jump).
    fn can_jump(&self) -> bool {
        false
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn can_jump(&self) -> bool {
        true
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn new(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }
    /// Moves the clock to `ms`.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds, `2025-11-26T00:00:00.000Z`
/// (logs, CLI output, reports shown to people).
pub fn utc_rfc3339_ms(ms: u64) -> String {
    format_utc(
        ms,
        time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ),
    )
}

/// Unix ms as `2025-11-26 00:00:00` UTC (compact, for tables and pages).
pub fn utc_seconds(ms: u64) -> String {
    format_utc(
        ms,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
}

fn format_utc(ms: u64, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(utc_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            utc_rfc3339_ms(1_764_115_200_000),
            "2025-11-26T00:00:00.000Z"
        );
        assert_eq!(utc_seconds(1_764_118_861_999), "2025-11-26 01:01:01");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ms(), 5);
        c.advance(10);
        assert_eq!(c.now_ms(), 15);
        c.set(3);
        assert_eq!(c.now_ms(), 3);
    }
}
