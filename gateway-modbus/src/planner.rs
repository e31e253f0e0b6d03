//! The request planner: coalesces the spans a register map needs into the
//! fewest read requests.
//!
//! Pure. Input: spans `(table, start, count)` (values and scale-factor
//! registers, see [`RegisterMap::spans`](super::register_map::RegisterMap::spans)),
//! the ranges marked unreadable, and [`PlanLimits`]. Output: a [`Plan`].
//!
//! Guarantees (property-tested below):
//! - every span lies entirely inside the request [`Plan::placement`] names;
//! - no request exceeds its table's limit (125 registers / 2000 bits) nor
//!   the configured [`PlanLimits::max_registers`];
//! - no request touches an unreadable address (so the gap filling never
//!   reads a hole the map marks as unreadable);
//! - two spans end up in the same request only if the registers between
//!   them (the gap) number at most [`PlanLimits::max_gap`];
//! - for spans that do not overlap each other, requests do not overlap and
//!   each register is read exactly once.
//!
//! The algorithm sorts spans by address per table and extends the current
//! request greedily; for sorted intervals with a length cap this gives the
//! fewest requests when the gap rule holds.

use super::register_map::{Table, Unreadable};

/// Tuning of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Most unused registers read between two wanted spans to save a request.
    pub max_gap: u16,
    /// Most registers per request (at most 125; some devices want fewer).
    pub max_registers: u16,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_gap: 16,
            max_registers: 125,
        }
    }
}

impl PlanLimits {
    /// The largest request for `table` under these limits.
    pub fn max_for(&self, table: Table) -> u16 {
        if table.is_bits() {
            table.max_per_read()
        } else {
            self.max_registers.clamp(1, table.max_per_read())
        }
    }
}

/// One read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadRequest {
    /// Table (function code).
    pub table: Table,
    /// First address.
    pub start: u16,
    /// Number of registers or bits.
    pub count: u16,
}

impl ReadRequest {
    /// First address after the request.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Requests, ordered by table then address.
    pub requests: Vec<ReadRequest>,
    /// For span `i`, the index in `requests` of the request holding it.
    pub placement: Vec<usize>,
}

/// A span that no plan can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A span longer than one request may be.
    #[error("{table} {start} needs {count} registers, at most {max} per request")]
    TooLong {
        /// Table.
        table: Table,
        /// First address.
        start: u16,
        /// Its length.
        count: u16,
        /// The limit.
        max: u16,
    },
    /// A span reaching past address 65535, or of length 0.
    #[error("{table} {start}+{count} is outside the 0..=65535 address space")]
    OutOfSpace {
        /// Table.
        table: Table,
        /// First address.
        start: u16,
        /// Its length.
        count: u16,
    },
    /// A span that touches an unreadable range.
    #[error("{table} {start}+{count} touches an address marked unreadable")]
    Unreadable {
        /// Table.
        table: Table,
        /// First address.
        start: u16,
        /// Its length.
        count: u16,
    },
}

/// Plans reads for `spans`.
pub fn plan(
    spans: &[(Table, u16, u16)],
    unreadable: &[Unreadable],
    limits: PlanLimits,
) -> Result<Plan, PlanError> {
    for &(table, start, count) in spans {
        let end = u32::from(start) + u32::from(count);
        if count == 0 || end > 65536 {
            return Err(PlanError::OutOfSpace {
                table,
                start,
                count,
            });
        }
        let max = limits.max_for(table);
        if count > max {
            return Err(PlanError::TooLong {
                table,
                start,
                count,
                max,
            });
        }
        if unreadable
            .iter()
            .any(|u| u.overlaps(table, u32::from(start), end))
        {
            return Err(PlanError::Unreadable {
                table,
                start,
                count,
            });
        }
    }
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| {
        let (t, s, c) = spans[i];
        (t, s, u32::from(s) + u32::from(c))
    });
    let mut out = Plan {
        requests: Vec::new(),
        placement: vec![0; spans.len()],
    };
    // Current request: table, start, end (exclusive, u32).
    let mut cur: Option<(Table, u32, u32)> = None;
    for i in order {
        let (table, start, count) = spans[i];
        let (a, b) = (u32::from(start), u32::from(start) + u32::from(count));
        let max = u32::from(limits.max_for(table));
        let merged = match cur {
            Some((t, s, e)) if t == table => {
                let joins = if a <= e {
                    true
                } else {
                    a - e <= u32::from(limits.max_gap)
                        && !unreadable.iter().any(|u| u.overlaps(table, e, a))
                };
                if joins && b.max(e) - s <= max {
                    cur = Some((t, s, b.max(e)));
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if !merged {
            if let Some(c) = cur.take() {
                out.requests.push(to_request(c));
            }
            cur = Some((table, a, b));
        }
        out.placement[i] = out.requests.len();
    }
    if let Some(c) = cur {
        out.requests.push(to_request(c));
    }
    Ok(out)
}

fn to_request((table, s, e): (Table, u32, u32)) -> ReadRequest {
    ReadRequest {
        table,
        start: u16::try_from(s).expect("spans were checked to lie below 65536"),
        count: u16::try_from(e - s).expect("a request is at most 2000 long"),
    }
}

/// Groups of overlapping spans placed in request `ri`, by address:
/// `(start, end, members)`.
fn groups_in(plan: &Plan, spans: &[(Table, u16, u16)], ri: usize) -> Vec<(u32, u32, Vec<usize>)> {
    let mut members: Vec<usize> = (0..spans.len())
        .filter(|&i| plan.placement[i] == ri)
        .collect();
    members.sort_by_key(|&i| (spans[i].1, spans[i].2));
    let mut groups: Vec<(u32, u32, Vec<usize>)> = Vec::new();
    for i in members {
        let (_, s, c) = spans[i];
        let (a, b) = (u32::from(s), u32::from(s) + u32::from(c));
        match groups.last_mut() {
            Some((_, e, m)) if a < *e => {
                *e = (*e).max(b);
                m.push(i);
            }
            _ => groups.push((a, b, vec![i])),
        }
    }
    groups
}

/// Replaces request `ri` of `plan` by two requests, each covering one half
/// of the groups of overlapping spans placed in it (the first half rounded
/// up, gaps inside a half still read); `None` when the request holds a
/// single group, which cannot be split (one value is read whole).
///
/// Used when a device refuses a multi-register read ("illegal data
/// address"/"illegal data value") because the range holds a register it
/// does not have, whether in a gap or as one of the wanted values: the
/// poller bisects every refused request until each refused request is a
/// single group, finding the largest reads the device answers in
/// `O(log n)` extra reads per refused register, and keeps the result.
///
/// # Panics
/// If `ri` is not a request of `plan` or `spans` is not what `plan` was
/// made from (caller bugs).
pub fn bisect_request(plan: &Plan, spans: &[(Table, u16, u16)], ri: usize) -> Option<Plan> {
    let table = plan.requests[ri].table;
    let groups = groups_in(plan, spans, ri);
    if groups.len() < 2 {
        return None;
    }
    let (first, second) = groups.split_at(groups.len().div_ceil(2));
    let mut out = Plan {
        requests: Vec::with_capacity(plan.requests.len() + 1),
        placement: plan
            .placement
            .iter()
            .map(|&p| if p > ri { p + 1 } else { p })
            .collect(),
    };
    out.requests.extend_from_slice(&plan.requests[..ri]);
    for (h, half) in [first, second].into_iter().enumerate() {
        let a = half.first().map(|g| g.0).expect("halves are not empty");
        let b = half
            .iter()
            .map(|g| g.1)
            .max()
            .expect("halves are not empty");
        out.requests.push(to_request((table, a, b)));
        for (_, _, m) in half {
            for &i in m {
                out.placement[i] = ri + h;
            }
        }
    }
    out.requests.extend_from_slice(&plan.requests[ri + 1..]);
    Some(out)
}

/// The naive plan other gateways use: one request per configured span
/// (duplicates read once). For comparison in benchmarks and diagnostics.
pub fn naive_plan(spans: &[(Table, u16, u16)]) -> Plan {
    let mut out = Plan::default();
    for &(table, start, count) in spans {
        let r = ReadRequest {
            table,
            start,
            count,
        };
        let idx = match out.requests.iter().position(|q| *q == r) {
            Some(i) => i,
            None => {
                out.requests.push(r);
                out.requests.len() - 1
            }
        };
        out.placement.push(idx);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: Table = Table::Holding;

    #[test]
    fn adjacent_and_small_gaps_coalesce_large_gaps_split() {
        let spans = [(H, 0, 2), (H, 2, 2), (H, 10, 1), (H, 100, 2)];
        let p = plan(
            &spans,
            &[],
            PlanLimits {
                max_gap: 6,
                max_registers: 125,
            },
        )
        .expect("plannable");
        assert_eq!(
            p.requests,
            [
                ReadRequest {
                    table: H,
                    start: 0,
                    count: 11
                },
                ReadRequest {
                    table: H,
                    start: 100,
                    count: 2
                }
            ]
        );
        assert_eq!(p.placement, [0, 0, 0, 1]);
    }

    #[test]
    fn tables_are_never_mixed() {
        let spans = [(Table::Input, 0, 1), (H, 1, 1), (Table::Coils, 2, 1)];
        let p = plan(&spans, &[], PlanLimits::default()).expect("plannable");
        assert_eq!(p.requests.len(), 3);
    }

    #[test]
    fn the_125_register_limit_splits_requests() {
        let spans = [(H, 0, 100), (H, 100, 30)];
        let p = plan(&spans, &[], PlanLimits::default()).expect("plannable");
        assert_eq!(p.requests.len(), 2);
        assert_eq!(p.requests[0].count, 100);
    }

    #[test]
    fn gaps_never_bridge_an_unreadable_range() {
        let spans = [(H, 0, 2), (H, 5, 2)];
        let holes = [Unreadable {
            table: H,
            start: 3,
            count: 1,
        }];
        let p = plan(&spans, &holes, PlanLimits::default()).expect("plannable");
        assert_eq!(p.requests.len(), 2);
        let p2 = plan(&spans, &[], PlanLimits::default()).expect("plannable");
        assert_eq!(p2.requests.len(), 1);
    }

    #[test]
    fn impossible_spans_are_errors() {
        assert!(matches!(
            plan(&[(H, 0, 126)], &[], PlanLimits::default()),
            Err(PlanError::TooLong { .. })
        ));
        assert!(matches!(
            plan(&[(H, 65535, 2)], &[], PlanLimits::default()),
            Err(PlanError::OutOfSpace { .. })
        ));
        let holes = [Unreadable {
            table: H,
            start: 1,
            count: 1,
        }];
        assert!(matches!(
            plan(&[(H, 0, 2)], &holes, PlanLimits::default()),
            Err(PlanError::Unreadable { .. })
        ));
    }

    #[test]
    fn naive_plan_reads_each_span_once() {
        let p = naive_plan(&[(H, 0, 2), (H, 2, 2), (H, 0, 2)]);
        assert_eq!(p.requests.len(), 2);
        assert_eq!(p.placement, [0, 1, 0]);
    }

    #[test]
    fn bisecting_a_request_halves_its_groups_and_keeps_the_others() {
        let spans = [
            (H, 0, 2),
            (H, 5, 1),
            (H, 5, 2),
            (Table::Input, 0, 1),
            (H, 9, 1),
        ];
        let p = plan(&spans, &[], PlanLimits::default()).expect("plannable");
        assert_eq!(p.requests.len(), 2);
        let hi = p.placement[0];
        // Three groups: 0..2, 5..7, 9..10 -> halves 0..7 and 9..10.
        let s = bisect_request(&p, &spans, hi).expect("three groups");
        let want = [
            ReadRequest {
                table: H,
                start: 0,
                count: 7,
            },
            ReadRequest {
                table: H,
                start: 9,
                count: 1,
            },
        ];
        assert_eq!(&s.requests[hi..hi + 2], &want);
        assert_eq!(s.requests.len(), 3);
        for (i, &(t, st, c)) in spans.iter().enumerate() {
            let r = s.requests[s.placement[i]];
            assert!(r.table == t && r.start <= st && u32::from(st) + u32::from(c) <= r.end());
        }
        // 0..7 again: groups 0..2 and 5..7 -> two exact reads.
        let s2 = bisect_request(&s, &spans, hi).expect("two groups");
        assert_eq!(s2.requests[hi].count, 2);
        assert_eq!(s2.requests[hi + 1].start, 5);
        // A single group cannot be split.
        assert_eq!(bisect_request(&s2, &spans, hi), None);
    }

    /// Non-overlapping spans in one or two tables, plus holes between them.
    fn spans_and_holes() -> impl Strategy<Value = (Vec<(Table, u16, u16)>, Vec<Unreadable>)> {
        prop::collection::vec((any::<bool>(), 0u16..40, 1u16..5, any::<bool>()), 0..60).prop_map(
            |items| {
                let mut spans = Vec::new();
                let mut holes = Vec::new();
                let mut next = [0u32, 0u32];
                for (input, gap, len, hole) in items {
                    let t = usize::from(input);
                    let table = if input { Table::Input } else { H };
                    let start = next[t] + u32::from(gap);
                    if hole && gap > 0 {
                        holes.push(Unreadable {
                            table,
                            start: u16::try_from(next[t]).expect("small"),
                            count: 1,
                        });
                    }
                    spans.push((table, u16::try_from(start).expect("small"), len));
                    next[t] = start + u32::from(len);
                }
                (spans, holes)
            },
        )
    }

    proptest! {
        #[test]
        fn every_span_is_read_exactly_once_within_limits(
            (spans, holes) in spans_and_holes(),
            max_gap in 0u16..20,
            max_registers in 4u16..=125,
            split_at in 0usize..100,
        ) {
            let limits = PlanLimits { max_gap, max_registers };
            let p = plan(&spans, &holes, limits).expect("generated spans are plannable");
            prop_assert_eq!(p.placement.len(), spans.len());
            for (i, &(t, s, c)) in spans.iter().enumerate() {
                let r = p.requests[p.placement[i]];
                prop_assert_eq!(r.table, t);
                prop_assert!(r.start <= s && u32::from(s) + u32::from(c) <= r.end());
                // Exactly one request holds each span.
                let holders = p.requests.iter().filter(|q| q.table == t
                    && q.start <= s && u32::from(s) + u32::from(c) <= q.end()).count();
                prop_assert_eq!(holders, 1);
            }
            for r in &p.requests {
                prop_assert!(r.count >= 1 && r.count <= limits.max_for(r.table));
                prop_assert!(!holes.iter().any(|h| h.overlaps(r.table, u32::from(r.start), r.end())));
            }
            for (i, a) in p.requests.iter().enumerate() {
                for b in &p.requests[i + 1..] {
                    let disjoint = a.table != b.table || a.end() <= u32::from(b.start) || b.end() <= u32::from(a.start);
                    prop_assert!(disjoint, "{:?} overlaps {:?}", a, b);
                }
            }
            // Never more requests than the naive plan.
            prop_assert!(p.requests.len() <= naive_plan(&spans).requests.len());
            // Bisecting any request until it cannot be split keeps every
            // span covered and ends with no gap read inside it.
            if !p.requests.is_empty() {
                let ri = split_at % p.requests.len();
                let mut s = p.clone();
                // Bisect the request holding `ri`'s first span until single groups remain.
                let mut todo = vec![ri];
                let mut steps = 0;
                while let Some(r) = todo.pop() {
                    if let Some(n) = bisect_request(&s, &spans, r) {
                        s = n;
                        todo.push(r + 1);
                        todo.push(r);
                        let keep = todo.len() - 2;
                        for t in &mut todo[..keep] {
                            if *t > r { *t += 1; }
                        }
                        steps += 1;
                    }
                }
                for (i, &(t, st, c)) in spans.iter().enumerate() {
                    let r = s.requests[s.placement[i]];
                    prop_assert!(r.table == t && r.start <= st && u32::from(st) + u32::from(c) <= r.end());
                }
                let inside: u32 = s.requests.iter().map(|r| u32::from(r.count)).sum::<u32>()
                    - p.requests.iter().enumerate().filter(|(j, _)| *j != ri).map(|(_, r)| u32::from(r.count)).sum::<u32>();
                let wanted: u32 = spans.iter().enumerate().filter(|(i, _)| p.placement[*i] == ri).map(|(_, sp)| u32::from(sp.2)).sum();
                prop_assert_eq!(inside, wanted);
                prop_assert_eq!(s.requests.len(), p.requests.len() + steps);
            }
        }
    }
}
