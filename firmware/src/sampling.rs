//! Sampling schedule and per-channel aggregation, pure and allocation-free.
//!
//! A device polls its sensors at a fast tick (debouncing pulses, reading
//! ADCs) and reports one value per channel per sampling period. The
//! [`Schedule`] says when a period ends (time comes in as `now_ms`); an
//! [`Aggregator`] per channel folds the fast readings of a period into the
//! reported value: the mean for instantaneous values, the last value for
//! counters, the maximum for status contacts ("was it on at all").
//!
//! Quality: unusable readings (unavailable, out of range) are left out of
//! the value; their flags are carried into the period's quality. A period
//! with only unusable readings reports value 0 with those flags; a period
//! with some good and some bad readings is flagged `SUSPECT`.

use mrv_shared::reading::Quality;

/// A fixed-period schedule that keeps its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    period_ms: u64,
    next_ms: Option<u64>,
}

impl Schedule {
    /// A schedule with `period_ms` (at least 1); the first call to
    /// [`Schedule::due`] is due.
    pub const fn new(period_ms: u64) -> Self {
        Self {
            period_ms: if period_ms == 0 { 1 } else { period_ms },
            next_ms: None,
        }
    }

    /// True when a period ended at or before `now_ms`. Missed periods are
    /// skipped (one `true` for any number of them), the phase is kept.
    pub fn due(&mut self, now_ms: u64) -> bool {
        match self.next_ms {
            None => {
                self.next_ms = Some(now_ms + self.period_ms);
                true
            }
            Some(next) if now_ms >= next => {
                let missed = (now_ms - next) / self.period_ms;
                self.next_ms = Some(next + (missed + 1) * self.period_ms);
                true
            }
            Some(_) => false,
        }
    }

    /// When the next period ends, once started.
    pub fn next_due(&self) -> Option<u64> {
        self.next_ms
    }
}

/// How an aggregator folds a period's readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Arithmetic mean, rounded toward zero (instantaneous values).
    Mean,
    /// Last reading (counters).
    Last,
    /// Maximum (status contacts: 1 if active at any reading).
    Max,
}

/// Folds one channel's readings over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregator {
    mode: Aggregation,
    sum: i128,
    n: u32,
    last: i64,
    max: i64,
    good_flags: Quality,
    bad_flags: Quality,
    bad: u32,
}

impl Aggregator {
    /// An empty aggregator.
    pub const fn new(mode: Aggregation) -> Self {
        Self {
            mode,
            sum: 0,
            n: 0,
            last: 0,
            max: i64::MIN,
            good_flags: Quality::GOOD,
            bad_flags: Quality::GOOD,
            bad: 0,
        }
    }

    /// Adds one reading.
    pub fn add(&mut self, value: i64, quality: Quality) {
        if !quality.is_usable() {
            self.bad += 1;
            self.bad_flags = self.bad_flags.with(quality);
            return;
        }
        self.good_flags = self.good_flags.with(quality);
        self.sum += i128::from(value);
        self.n += 1;
        self.last = value;
        self.max = self.max.max(value);
    }

    /// The period's value and quality, and a reset; `None` if nothing was
    /// added.
    pub fn take(&mut self) -> Option<(i64, Quality)> {
        let out = if self.n == 0 {
            (self.bad > 0).then_some((0, self.bad_flags))
        } else {
            let v = match self.mode {
                Aggregation::Mean => (self.sum / i128::from(self.n)) as i64,
                Aggregation::Last => self.last,
                Aggregation::Max => self.max,
            };
            let q = if self.bad > 0 {
                self.good_flags.with(Quality::SUSPECT)
            } else {
                self.good_flags
            };
            Some((v, q))
        };
        *self = Self::new(self.mode);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schedule_keeps_its_phase_and_skips_missed_periods() {
        let mut s = Schedule::new(1000);
        assert!(s.due(5));
        assert!(!s.due(1004));
        assert!(s.due(1005));
        assert!(s.due(4500));
        assert_eq!(s.next_due(), Some(5005));
    }

    #[test]
    fn aggregates_by_mode_and_carries_quality() {
        let mut a = Aggregator::new(Aggregation::Mean);
        a.add(10, Quality::GOOD);
        a.add(21, Quality::GOOD);
        a.add(0, Quality::UNAVAILABLE);
        assert_eq!(a.take(), Some((15, Quality::SUSPECT)));
        assert_eq!(a.take(), None);
        a.add(0, Quality::OUT_OF_RANGE);
        assert_eq!(a.take(), Some((0, Quality::OUT_OF_RANGE)));
        let mut m = Aggregator::new(Aggregation::Max);
        m.add(0, Quality::GOOD);
        m.add(1, Quality::GOOD);
        m.add(0, Quality::GOOD);
        assert_eq!(m.take(), Some((1, Quality::GOOD)));
    }

    proptest! {
        #[test]
        fn mean_is_within_min_and_max(values in proptest::collection::vec(-1_000_000i64..1_000_000, 1..100)) {
            let mut a = Aggregator::new(Aggregation::Mean);
            for v in &values { a.add(*v, Quality::GOOD); }
            let (m, q) = a.take().unwrap();
            prop_assert!(q.is_good());
            prop_assert!(m >= *values.iter().min().unwrap() && m <= *values.iter().max().unwrap());
        }

        #[test]
        fn schedule_fires_once_per_elapsed_period(steps in proptest::collection::vec(1u64..300, 1..200)) {
            let mut s = Schedule::new(100);
            let mut now = 0;
            let mut fired = 0u64;
            for d in steps {
                now += d;
                if s.due(now) { fired += 1; }
            }
            // Never more often than once per period (plus the first).
            prop_assert!(fired <= now / 100 + 1);
            prop_assert!(fired >= 1);
        }
    }
}
