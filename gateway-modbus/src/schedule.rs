//! The poll schedule: which device is due when.
//!
//! Pure and time-injected: times are milliseconds of a monotonic clock that
//! the driving task supplies (`now_ms`), so tests run without waiting.
//!
//! Invariants:
//! - a device is polled on the grid `first_due + k * interval` (no drift:
//!   a slow poll does not shift later polls);
//! - a poll that overruns one or more grid slots skips them (counted in
//!   [`Completion::missed`]) instead of bursting to catch up, so a slow
//!   device on a shared bus cannot cause a storm of back-to-back polls;
//! - among devices due at the same time, the one due earliest goes first,
//!   ties by index (round-robin fairness across a bus).

/// One device's slot in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    interval_ms: u64,
    next_due_ms: u64,
}

/// The schedule of a set of devices (one TCP device, or the devices of one
/// RTU bus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    slots: Vec<Slot>,
}

/// What [`Schedule::completed`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// When the device is due next.
    pub next_due_ms: u64,
    /// Grid slots skipped because the poll overran them.
    pub missed: u64,
}

impl Schedule {
    /// A schedule for devices with the given poll intervals (ms, at least 1).
    /// Devices start staggered across their interval so that a bus of
    /// devices with equal intervals does not poll in one burst: device `i`
    /// of `n` first falls due at `start + i * interval / n`.
    pub fn new(intervals_ms: &[u64], start_ms: u64) -> Schedule {
        let n = intervals_ms.len().max(1) as u64;
        Schedule {
            slots: intervals_ms
                .iter()
                .enumerate()
                .map(|(i, &iv)| {
                    let iv = iv.max(1);
                    Slot {
                        interval_ms: iv,
                        next_due_ms: start_ms + iv * i as u64 / n,
                    }
                })
                .collect(),
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there are no devices.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The device due first and when (it may already be overdue).
    pub fn next(&self) -> Option<(usize, u64)> {
        self.slots
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (s.next_due_ms, *i))
            .map(|(i, s)| (i, s.next_due_ms))
    }

    /// Every device due at `now_ms`, earliest first.
    pub fn due(&self, now_ms: u64) -> Vec<usize> {
        let mut v: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.next_due_ms <= now_ms)
            .map(|(i, s)| (s.next_due_ms, i))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// Records that device `idx` finished a poll at `now_ms`; moves it to
    /// the first grid slot after `now_ms`.
    ///
    /// # Panics
    /// If `idx` is not a device of this schedule (a caller bug).
    pub fn completed(&mut self, idx: usize, now_ms: u64) -> Completion {
        let s = &mut self.slots[idx];
        let due = s.next_due_ms;
        let steps = if now_ms < due {
            1
        } else {
            (now_ms - due) / s.interval_ms + 1
        };
        s.next_due_ms = due + steps * s.interval_ms;
        Completion {
            next_due_ms: s.next_due_ms,
            missed: steps - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_device_polls_on_its_grid_without_drift() {
        let mut s = Schedule::new(&[1000], 5);
        assert_eq!(s.next(), Some((0, 5)));
        assert!(s.due(4).is_empty());
        assert_eq!(s.due(5), [0]);
        // The poll took 300 ms; the next one is still on the grid.
        let c = s.completed(0, 305);
        assert_eq!(
            c,
            Completion {
                next_due_ms: 1005,
                missed: 0
            }
        );
    }

    #[test]
    fn an_overrun_skips_slots_instead_of_bursting() {
        let mut s = Schedule::new(&[100], 0);
        let c = s.completed(0, 350);
        assert_eq!(
            c,
            Completion {
                next_due_ms: 400,
                missed: 3
            }
        );
        assert!(s.due(399).is_empty());
    }

    #[test]
    fn bus_devices_start_staggered_and_take_turns() {
        let mut s = Schedule::new(&[1000, 1000, 1000, 1000], 0);
        assert_eq!(s.next(), Some((0, 0)));
        assert_eq!(s.due(500), [0, 1, 2]);
        s.completed(0, 10);
        assert_eq!(s.due(500), [1, 2]);
        s.completed(1, 260);
        s.completed(2, 510);
        assert_eq!(s.next(), Some((3, 750)));
        s.completed(3, 760);
        assert_eq!(s.next(), Some((0, 1000)));
    }

    #[test]
    fn different_intervals_interleave() {
        let mut s = Schedule::new(&[100, 250], 0);
        let mut order = Vec::new();
        let mut now = 0;
        while now < 500 {
            let (i, due) = s.next().expect("not empty");
            now = now.max(due);
            order.push((i, now));
            s.completed(i, now);
        }
        assert_eq!(
            order,
            [
                (0, 0),
                (0, 100),
                (1, 125),
                (0, 200),
                (0, 300),
                (1, 375),
                (0, 400),
                (0, 500)
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn polls_stay_on_the_grid_and_never_fall_due_in_the_past(
            intervals in proptest::collection::vec(1u64..5000, 1..8),
            durations in proptest::collection::vec(0u64..20_000, 1..60),
            start in 0u64..1_000_000,
        ) {
            let mut s = Schedule::new(&intervals, start);
            let firsts: Vec<u64> = (0..intervals.len())
                .map(|i| start + intervals[i] * i as u64 / intervals.len() as u64)
                .collect();
            let mut now = start;
            for d in durations {
                let (i, due) = s.next().expect("not empty");
                now = now.max(due) + d;
                let c = s.completed(i, now);
                proptest::prop_assert!(c.next_due_ms > now);
                proptest::prop_assert_eq!((c.next_due_ms - firsts[i]) % intervals[i], 0);
                // Skipped slots are exactly the grid points passed while polling.
                proptest::prop_assert!(c.next_due_ms - now <= intervals[i]);
            }
        }
    }
}
