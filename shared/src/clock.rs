//! Time source (std only). Pure cores take `now_ms` as an argument; the
//! tasks that drive them (in the gateway, its buffer and Modbus crates, the
//! receiver) ask a [`Clock`], so tests can run on a [`ManualClock`], and soak
//! tests on a time-compressed [`ScaledClock`]. Also the UTC formats people
//! read in logs, CLI output and pages.
//!
//! Invariant for tasks that wait for the clock to reach a time: they wait
//! [`Clock::real_wait`] of the clock-time difference, so a clock running
//! `rate` times faster than real time is waited on correctly.

use alloc::format;
use alloc::string::String;

use alloc::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

    /// Clock milliseconds that pass per real millisecond: 1, except for a
    /// time-compressed [`ScaledClock`].
    fn rate(&self) -> u32 {
        1
    }

    /// The real time to wait for this clock to move on by `clock_ms`.
    fn real_wait(&self, clock_ms: u64) -> Duration {
        Duration::from_millis(clock_ms / u64::from(self.rate().max(1)))
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

/// A clock that starts at `start_ms` and runs `rate` times faster than real
/// (monotonic) time, plus a step a test may set: time-compressed soak runs
/// of the real gateway (a day in minutes) and clock-fault tests. It can jump
/// (a step is a jump, watched like the system clock's).
#[derive(Debug)]
pub struct ScaledClock {
    start_ms: u64,
    rate: u32,
    origin: Instant,
    step_ms: AtomicI64,
}

impl ScaledClock {
    /// A clock standing at `start_ms` now, running `rate` (>= 1) times
    /// faster than real time.
    pub fn new(start_ms: u64, rate: u32) -> ScaledClock {
        ScaledClock {
            start_ms,
            rate: rate.max(1),
            origin: Instant::now(),
            step_ms: AtomicI64::new(0),
        }
    }

    /// Parses `<start_ms>x<rate>` (e.g. `1764115200000x144`), the form the
    /// end-to-end gateway binary takes in `MRV_E2E_CLOCK`.
    pub fn parse(text: &str) -> Option<ScaledClock> {
        let (start, rate) = text.trim().split_once('x')?;
        Some(ScaledClock::new(start.parse().ok()?, rate.parse().ok()?))
    }

    /// Sets the step added to the clock (signed ms; 0 = none): a jump.
    pub fn set_step(&self, step_ms: i64) {
        self.step_ms.store(step_ms, Ordering::SeqCst);
    }
}

impl Clock for ScaledClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_ms
            .saturating_add(elapsed.saturating_mul(u64::from(self.rate)))
            .saturating_add_signed(self.step_ms.load(Ordering::SeqCst))
    }

    fn can_jump(&self) -> bool {
        true
    }

    fn rate(&self) -> u32 {
        self.rate
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

    #[test]
    fn a_scaled_clock_runs_rate_times_faster_and_waits_are_scaled_back() {
        let c = ScaledClock::parse("1764115200000x100").expect("valid");
        let t0 = c.now_ms();
        std::thread::sleep(Duration::from_millis(50));
        let moved = c.now_ms() - t0;
        assert!((5_000..60_000).contains(&moved), "moved {moved} ms");
        assert_eq!(c.real_wait(60_000), Duration::from_millis(600));
        assert_eq!(SystemClock.real_wait(60_000), Duration::from_secs(60));
        let before = c.now_ms();
        c.set_step(-3_600_000);
        assert!(c.now_ms() + 3_500_000 < before + 100_000);
        assert!(ScaledClock::parse("12").is_none());
        assert!(ScaledClock::parse("ax2").is_none());
    }
}
