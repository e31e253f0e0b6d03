//! Per-device sequence bookkeeping: decides, for one frame `(device, seq,
//! boot)`, whether it is new (store it), a duplicate (re-ack it), out of
//! order (refuse it: the device re-sends from the hole), or a regression
//! (the device lost its counter). Pure: no I/O, no clock.
//!
//! **Go-back-N.** The buffer stores a device's frames in seq order with no
//! hole: a frame above a hole is not stored, so every seq a report covers
//! is either a stored frame or a hole explicitly *given up* (see
//! [`SeqState::give_up`] and the `frames_given_up` event). This is what lets
//! a report state, per device, one contiguous range of seqs, and a verifier
//! reject any omission (docs/REPORT-FORMAT.md, "Continuity").
//!
//! A device's numbering starts at 1: a device the gateway has never stored
//! a frame of, whose first frame is seq 5000 (it was acked by a gateway
//! whose buffer is gone, or it is not new), waits like any other device
//! above a hole until seqs 1..=4999 are given up. That keeps the rule
//! simple and leaves a record: no frame is ever skipped silently, not even
//! the first ones (a frame lost in transit before the first one arrives
//! would otherwise be taken as "before this device's start").
//!
//! Invariants of a [`SeqState`]:
//! - every seq in `1..=contiguous` has been stored (or was stored and
//!   pruned) or was given up;
//! - `above` (out-of-order seqs stored by layout-1 buffers before go-back-N;
//!   new appends never add to it) holds stored seqs, every one
//!   `> contiguous + 1`;
//! - `boot` is the highest boot counter of any stored frame.
//!
//! Decision rules, in order, for a frame with `seq >= 1`:
//! 1. `boot > state.boot` and `seq <= highest stored` => [`Decision::Regressed`]:
//!    a frame created after a reboot re-uses a number that is already taken,
//!    so the device's counter went backwards. Nothing is stored.
//! 2. `seq <= contiguous` or `seq` in `above` => [`Decision::Duplicate`]:
//!    a retransmission; the device gets its ack again.
//! 3. `seq > contiguous + 1` => [`Decision::OutOfOrder`]: a hole below it;
//!    nothing is stored, the ack (`acked_seq = contiguous`) tells the device
//!    where to resume.
//! 4. otherwise (`seq == contiguous + 1`) => [`Decision::Store`].
//!
//! A frame with `seq == 0` asks the gateway to number it (the Modbus poller
//! and third-party mappings do this): it is always stored, as
//! `highest stored + 1`, so numbering is gap-free per device.
//!
//! [`SeqRanges`] is a small sorted interval set, used by `verify` and
//! `inspect` to describe which seqs are present without one entry per frame.

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New frame: store it under this seq (the frame's own, or the assigned one).
    Store(u64),
    /// Already stored: re-ack.
    Duplicate,
    /// Later boot re-using a stored seq: refuse, tell the device.
    Regressed,
    /// Above a hole (`seq > contiguous + 1`): refuse; the device re-sends
    /// from `contiguous + 1`.
    OutOfOrder,
}

/// One device's sequence state (see the module doc for its invariants).
/// Out-of-order seqs are kept as ranges, so a hole that never fills costs
/// two ranges, not one entry per later frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqState {
    contiguous: u64,
    boot: u32,
    above: SeqRanges,
}

impl SeqState {
    /// Rebuilds a state from its stored parts (inclusive ranges of stored
    /// seqs above `contiguous`), restoring the invariants.
    pub fn from_parts(
        contiguous: u64,
        boot: u32,
        above: impl IntoIterator<Item = (u64, u64)>,
    ) -> Self {
        let mut s = SeqState {
            contiguous,
            boot,
            above: SeqRanges::default(),
        };
        for (lo, hi) in above {
            s.above.insert_range(lo.max(contiguous + 1), hi);
        }
        s.fold();
        s
    }

    /// Highest seq such that every seq from 1 to it is stored (0 = none).
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// Highest boot counter of a stored frame.
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// Stored seqs above `contiguous` (out-of-order arrivals), as ascending
    /// inclusive ranges.
    pub fn above(&self) -> &[(u64, u64)] {
        self.above.ranges()
    }

    /// True if `seq` is stored.
    pub fn contains(&self, seq: u64) -> bool {
        (1..=self.contiguous).contains(&seq) || self.above.contains(seq)
    }

    /// Highest stored seq (0 = none).
    pub fn highest(&self) -> u64 {
        self.above.ranges().last().map_or(self.contiguous, |r| r.1)
    }

    /// The holes between `contiguous` and the highest stored seq, as
    /// inclusive ranges, ascending.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Some(&(lo, _)) = self.above.ranges().first() {
            out.push((self.contiguous + 1, lo - 1));
        }
        out.extend(self.above.holes());
        out
    }

    /// Decides what to do with a frame; does not change the state.
    pub fn decide(&self, seq: u64, boot: u32) -> Decision {
        if seq == 0 {
            return Decision::Store(self.highest() + 1);
        }
        if boot > self.boot && seq <= self.highest() {
            return Decision::Regressed;
        }
        if self.contains(seq) {
            return Decision::Duplicate;
        }
        if seq > self.contiguous + 1 {
            return Decision::OutOfOrder;
        }
        Decision::Store(seq)
    }

    /// True before the device's first stored frame.
    pub fn is_empty(&self) -> bool {
        self.contiguous == 0 && self.above.is_empty()
    }

    /// Records that `seq` (from boot `boot`) is now stored.
    pub fn record(&mut self, seq: u64, boot: u32) {
        self.boot = self.boot.max(boot);
        if seq > self.contiguous {
            self.above.insert(seq);
            self.fold();
        }
    }

    /// Gives up every missing seq up to and including `through`: they will
    /// never be stored, so the device's ack may move past them. Returns the
    /// inclusive range given up (`contiguous + 1 ..= through`), or `None`
    /// when there is nothing to give up (`through <= contiguous`).
    /// Layout-1 out-of-order seqs at or below `through` count as stored.
    pub fn give_up(&mut self, through: u64) -> Option<(u64, u64)> {
        if through <= self.contiguous {
            return None;
        }
        let range = (self.contiguous + 1, through);
        self.contiguous = through;
        self.above.remove_through(through);
        self.fold();
        Some(range)
    }

    fn fold(&mut self) {
        if let Some(hi) = self.above.pop_first_if_starts_at(self.contiguous + 1) {
            self.contiguous = hi;
        }
    }
}

/// A set of `u64` kept as sorted, disjoint, non-adjacent inclusive ranges.
/// Inserting in ascending order (the common case) is O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqRanges {
    ranges: Vec<(u64, u64)>,
}

impl SeqRanges {
    /// Adds `v`; returns false if it was already present.
    pub fn insert(&mut self, v: u64) -> bool {
        // Index of the first range starting after v.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= v);
        if i > 0 {
            let (_, hi) = self.ranges[i - 1];
            if v <= hi {
                return false;
            }
            if v == hi + 1 {
                self.ranges[i - 1].1 = v;
                if i < self.ranges.len() && self.ranges[i].0 == v + 1 {
                    self.ranges[i - 1].1 = self.ranges[i].1;
                    self.ranges.remove(i);
                }
                return true;
            }
        }
        if i < self.ranges.len() && self.ranges[i].0 == v + 1 {
            self.ranges[i].0 = v;
            return true;
        }
        self.ranges.insert(i, (v, v));
        true
    }

    /// Adds every value in `lo..=hi` (nothing if `lo > hi`).
    pub fn insert_range(&mut self, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        // Ranges that overlap or touch [lo, hi] merge into one.
        let start = self
            .ranges
            .partition_point(|&(_, h)| h.saturating_add(1) < lo);
        let end = self
            .ranges
            .partition_point(|&(l, _)| l <= hi.saturating_add(1));
        let (mut nlo, mut nhi) = (lo, hi);
        if start < end {
            nlo = nlo.min(self.ranges[start].0);
            nhi = nhi.max(self.ranges[end - 1].1);
        }
        self.ranges.splice(start..end, [(nlo, nhi)]);
    }

    /// Removes every value `<= v`.
    pub fn remove_through(&mut self, v: u64) {
        self.ranges.retain(|&(_, hi)| hi > v);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(v.saturating_add(1));
        }
    }

    /// Removes the first range if it starts at `lo`; returns its end.
    pub fn pop_first_if_starts_at(&mut self, lo: u64) -> Option<u64> {
        match self.ranges.first() {
            Some(&(l, h)) if l == lo => {
                self.ranges.remove(0);
                Some(h)
            }
            _ => None,
        }
    }

    /// True if `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        let i = self.ranges.partition_point(|&(lo, _)| lo <= v);
        i > 0 && v <= self.ranges[i - 1].1
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The holes between the lowest and the highest value, ascending.
    pub fn holes(&self) -> Vec<(u64, u64)> {
        self.ranges
            .windows(2)
            .map(|w| (w[0].1 + 1, w[1].0 - 1))
            .collect()
    }

    /// Number of values in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_frames_advance_contiguous() {
        let mut s = SeqState::default();
        for q in 1..=3 {
            assert_eq!(s.decide(q, 0), Decision::Store(q));
            s.record(q, 0);
        }
        assert_eq!(s.contiguous(), 3);
        assert_eq!(s.decide(2, 0), Decision::Duplicate);
    }

    #[test]
    fn a_frame_above_a_hole_is_refused_until_the_hole_fills() {
        let mut s = SeqState::default();
        s.record(1, 0);
        assert_eq!(s.decide(3, 0), Decision::OutOfOrder);
        assert_eq!(s.decide(2, 0), Decision::Store(2));
        s.record(2, 0);
        assert_eq!(s.decide(3, 0), Decision::Store(3));
        assert_eq!(s.gaps(), vec![]);
    }

    #[test]
    fn a_device_starts_at_seq_1_or_after_a_give_up() {
        let mut s = SeqState::default();
        assert!(s.is_empty());
        assert_eq!(s.decide(5000, 2), Decision::OutOfOrder);
        assert_eq!(s.give_up(4999), Some((1, 4999)));
        assert_eq!(s.decide(4999, 0), Decision::Duplicate);
        assert_eq!(s.decide(5000, 2), Decision::Store(5000));
        s.record(5000, 2);
        assert_eq!(s.contiguous(), 5000);
    }

    #[test]
    fn giving_up_a_hole_moves_the_ack_past_it_once() {
        let mut s = SeqState::default();
        s.record(1, 0);
        assert_eq!(s.decide(4, 0), Decision::OutOfOrder);
        assert_eq!(s.give_up(3), Some((2, 3)));
        assert_eq!(s.contiguous(), 3);
        assert_eq!(s.give_up(3), None);
        assert_eq!(s.give_up(1), None);
        assert_eq!(s.decide(2, 0), Decision::Duplicate);
        assert_eq!(s.decide(4, 0), Decision::Store(4));
    }

    #[test]
    fn giving_up_folds_layout_1_out_of_order_ranges() {
        let mut s = SeqState::from_parts(1, 0, [(4, 6), (9, 9)]);
        assert_eq!(s.give_up(4), Some((2, 4)));
        assert_eq!(s.contiguous(), 6);
        assert_eq!(s.above(), &[(9, 9)]);
    }

    #[test]
    fn a_later_boot_reusing_a_stored_seq_is_a_regression() {
        let mut s = SeqState::default();
        s.record(1, 3);
        s.record(2, 3);
        assert_eq!(s.decide(1, 4), Decision::Regressed);
        assert_eq!(s.decide(2, 4), Decision::Regressed);
        // The same numbers from the same boot are retransmissions.
        assert_eq!(s.decide(2, 3), Decision::Duplicate);
        // Continuing after the stored seqs with the new boot is fine.
        assert_eq!(s.decide(3, 4), Decision::Store(3));
    }

    #[test]
    fn an_older_boot_filling_a_hole_is_stored() {
        let mut s = SeqState::default();
        s.record(1, 1);
        s.record(3, 2);
        assert_eq!(s.decide(2, 1), Decision::Store(2));
        assert_eq!(s.decide(2, 3), Decision::Regressed);
    }

    #[test]
    fn seq_zero_gets_the_next_number_after_the_highest() {
        let mut s = SeqState::default();
        assert_eq!(s.decide(0, 0), Decision::Store(1));
        s.record(1, 0);
        s.record(5, 0);
        assert_eq!(s.decide(0, 0), Decision::Store(6));
    }

    #[test]
    fn from_parts_restores_the_invariants() {
        let s = SeqState::from_parts(2, 1, [(1, 1), (3, 4), (7, 9)]);
        assert_eq!(s.contiguous(), 4);
        assert_eq!(s.above(), &[(7, 9)]);
    }

    #[test]
    fn a_hole_that_never_fills_stays_two_ranges() {
        let mut s = SeqState::default();
        s.record(1, 0);
        for q in 3..10_000 {
            s.record(q, 0);
        }
        assert_eq!(s.contiguous(), 1);
        assert_eq!(s.above(), &[(3, 9_999)]);
        assert_eq!(s.gaps(), vec![(2, 2)]);
    }

    proptest! {
        #[test]
        fn seq_ranges_match_a_btreeset(
            values in proptest::collection::vec((0u64..64, 0u64..4), 0..80),
        ) {
            let mut r = SeqRanges::default();
            let mut set = BTreeSet::new();
            for (v, width) in values {
                if width == 0 {
                    prop_assert_eq!(r.insert(v), set.insert(v));
                } else {
                    r.insert_range(v, v + width - 1);
                    set.extend(v..v + width);
                }
            }
            prop_assert_eq!(r.len(), set.len() as u64);
            for v in 0..66 {
                prop_assert_eq!(r.contains(v), set.contains(&v));
            }
            for w in r.ranges().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "ranges must be disjoint and non-adjacent");
            }
        }

        #[test]
        fn go_back_n_stores_exactly_the_next_seq(
            seqs in proptest::collection::vec(1u64..40, 0..60),
            give_ups in proptest::collection::vec(proptest::option::of(0u64..45), 0..60),
        ) {
            // Model: the accounted prefix ends at `next - 1`; nothing is
            // stored above it.
            let mut s = SeqState::default();
            let mut next: u64 = 1;
            for (i, q) in seqs.into_iter().enumerate() {
                let expect = if q < next {
                    Decision::Duplicate
                } else if q == next {
                    Decision::Store(q)
                } else {
                    Decision::OutOfOrder
                };
                prop_assert_eq!(s.decide(q, 0), expect);
                if let Decision::Store(got) = expect {
                    s.record(got, 0);
                    next = got + 1;
                }
                if let Some(Some(through)) = give_ups.get(i) {
                    let want = (*through >= next).then_some((next, *through));
                    prop_assert_eq!(s.give_up(*through), want);
                    if want.is_some() {
                        next = through + 1;
                    }
                }
                prop_assert_eq!(s.contiguous(), next - 1);
                prop_assert_eq!(s.highest(), s.contiguous());
                prop_assert!(s.gaps().is_empty());
            }
        }
    }
}
