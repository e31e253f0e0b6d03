//! A counting debouncer: the stable level changes only after the raw input
//! has shown the new level on `threshold` consecutive samples.
//!
//! Invariant: between two reported edges the raw input was sampled at the
//! new level at least `threshold` times in a row, so contact bounce shorter
//! than `threshold` sample periods never produces an edge.

/// A change of the debounced level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Inactive to active.
    Rising,
    /// Active to inactive.
    Falling,
}

/// Pure debouncer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debouncer {
    stable: bool,
    run: u8,
    threshold: u8,
}

impl Debouncer {
    /// A debouncer whose stable level starts at `initial`; `threshold` is
    /// clamped to at least 1.
    pub const fn new(initial: bool, threshold: u8) -> Self {
        Self {
            stable: initial,
            run: 0,
            threshold: if threshold == 0 { 1 } else { threshold },
        }
    }

    /// The debounced level.
    pub fn level(&self) -> bool {
        self.stable
    }

    /// Feeds one raw sample; returns the edge if the stable level changed.
    pub fn update(&mut self, raw: bool) -> Option<Edge> {
        if raw == self.stable {
            self.run = 0;
            return None;
        }
        self.run += 1;
        if self.run < self.threshold {
            return None;
        }
        self.run = 0;
        self.stable = raw;
        Some(if raw { Edge::Rising } else { Edge::Falling })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounce_shorter_than_the_threshold_is_ignored() {
        let mut d = Debouncer::new(false, 3);
        assert_eq!(d.update(true), None);
        assert_eq!(d.update(true), None);
        assert_eq!(d.update(false), None);
        assert_eq!(d.update(true), None);
        assert_eq!(d.update(true), None);
        assert_eq!(d.update(true), Some(Edge::Rising));
        assert!(d.level());
    }

    /// Model: the number of rising edges equals the number of runs of
    /// `true` of length >= threshold that follow a run of `false` of length
    /// >= threshold (or the start, for an initially false input).
    fn model_rises(input: &[bool], t: usize) -> usize {
        let mut level = false;
        let mut rises = 0;
        let mut run = 0;
        for &b in input {
            if b == level {
                run = 0;
            } else {
                run += 1;
                if run >= t {
                    level = b;
                    run = 0;
                    if b {
                        rises += 1;
                    }
                }
            }
        }
        rises
    }

    proptest! {
        #[test]
        fn clean_pulses_are_counted_exactly(
            pulses in proptest::collection::vec((3usize..10, 3usize..10), 0..40),
            threshold in 1u8..=3,
        ) {
            let mut d = Debouncer::new(false, threshold);
            let mut rises = 0;
            for (hi, lo) in &pulses {
                for _ in 0..*hi { if d.update(true) == Some(Edge::Rising) { rises += 1; } }
                for _ in 0..*lo { d.update(false); }
            }
            prop_assert_eq!(rises, pulses.len());
        }

        #[test]
        fn edges_alternate_and_match_the_model(
            input in proptest::collection::vec(any::<bool>(), 0..300),
            threshold in 1u8..6,
        ) {
            let mut d = Debouncer::new(false, threshold);
            let mut last = None;
            let mut rises = 0;
            for &b in &input {
                if let Some(e) = d.update(b) {
                    prop_assert_ne!(Some(e), last);
                    last = Some(e);
                    if e == Edge::Rising { rises += 1; }
                }
            }
            prop_assert_eq!(rises, model_rises(&input, usize::from(threshold)));
        }

        #[test]
        fn glitches_shorter_than_threshold_never_make_edges(
            glitches in proptest::collection::vec(1u8..4, 0..50),
        ) {
            let mut d = Debouncer::new(false, 4);
            for g in glitches {
                for _ in 0..g { prop_assert_eq!(d.update(true), None); }
                prop_assert_eq!(d.update(false), None);
            }
        }
    }
}
