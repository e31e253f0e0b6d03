//! Per-(device, channel) aggregates of a report's readings: counts, first
//! and last times, sum/min/max, counter deltas with rollover and reset
//! handling, and gaps.
//!
//! The same functions run in the gateway (to build) and in every verifier
//! (to recompute), so a report's numbers are reproducible from its readings.
//!
//! Rules (conservative: missing data earns no credit):
//! - a sample is *usable* when its quality has neither `unavailable` nor
//!   `out_of_range` ([`crate::reading::Quality::is_usable`]); only usable
//!   samples enter aggregates, counter steps and gap coverage;
//! - a counter *step* runs between consecutive usable samples, the first
//!   from the previous report's last value (`baseline`); a step longer than
//!   1.5 nominal intervals spans a gap: its delta is recorded as `gap_delta`
//!   and not credited; a step backwards is a rollover when the device has a
//!   modulus and the counter fell by more than half of it (credited as
//!   `value + modulus - previous`), otherwise a reset (`counter_reset`
//!   quality or not): no credit;
//! - a gap is a stretch longer than 1.5 nominal intervals inside the period
//!   with no usable sample (reason `unusable_quality` when unusable samples
//!   fall inside it, else `no_data`); series of devices without a nominal
//!   interval report no gaps and no expected count;
//! - samples of late frames (before the period) count in aggregates and
//!   counter steps but not in gap coverage.

use super::model::{CounterAggregate, DeviceRecord, FrameRecord, Gap, Period, Point, Series};
use crate::ids::{ChannelId, DeviceId};
use crate::quantity::{Quantity, ValueKind};
use crate::reading::Quality;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// Key of a series.
pub type SeriesKey = (DeviceId, ChannelId);

/// One sample of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesSample {
    /// Sample time (Unix ms).
    pub time_ms: u64,
    /// Value, base unit.
    pub value: i64,
    /// Quality flags.
    pub quality: Quality,
}

/// All samples of one series, sorted by time (ties keep frame order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSamples {
    /// Quantity (from the first frame that named the channel).
    pub quantity: Quantity,
    /// Value kind.
    pub kind: ValueKind,
    /// Samples.
    pub samples: Vec<SeriesSample>,
}

impl SeriesSamples {
    /// Usable samples as (time, value).
    pub fn usable_points(&self) -> Vec<(u64, i64)> {
        self.samples
            .iter()
            .filter(|s| s.quality.is_usable())
            .map(|s| (s.time_ms, s.value))
            .collect()
    }
}

/// Groups every sample of `frames` by (device, channel). Samples whose
/// channel changes quantity or kind between frames are left out of the
/// series (they stay in the readings and the Merkle tree).
pub fn collect(frames: &[FrameRecord]) -> BTreeMap<SeriesKey, SeriesSamples> {
    let mut out: BTreeMap<SeriesKey, SeriesSamples> = BTreeMap::new();
    for f in frames {
        for &(ch, offset, value, quality) in &f.samples {
            let Some(c) = f.channels.get(usize::from(ch)) else {
                continue;
            };
            let entry = out
                .entry((f.device.clone(), c.id.clone()))
                .or_insert_with(|| SeriesSamples {
                    quantity: c.quantity,
                    kind: c.kind,
                    samples: Vec::new(),
                });
            if entry.quantity != c.quantity || entry.kind != c.kind {
                continue;
            }
            entry.samples.push(SeriesSample {
                time_ms: f.sample_time_ms(offset),
                value,
                quality: Quality(quality),
            });
        }
    }
    for s in out.values_mut() {
        s.samples.sort_by_key(|s| s.time_ms);
    }
    out
}

/// One counter step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterStep {
    /// Time of the step's later sample.
    pub end_ms: u64,
    /// Increase over the step (0 for a reset).
    pub delta: i64,
    /// Whether the step earns credit (no gap, no reset).
    pub credited: bool,
}

/// Counter steps of usable samples from `baseline` on (see the module doc).
pub fn counter_steps(
    samples: &[SeriesSample],
    baseline: Option<Point>,
    modulus: Option<u64>,
    interval_ms: Option<u64>,
) -> (Vec<CounterStep>, CounterAggregate) {
    let mut agg = CounterAggregate {
        baseline,
        last: baseline,
        delta: 0,
        gap_delta: 0,
        resets: 0,
        rollovers: 0,
    };
    let mut steps = Vec::new();
    let mut prev = baseline;
    for s in samples.iter().filter(|s| s.quality.is_usable()) {
        let p = Point {
            time_ms: s.time_ms,
            value: s.value,
        };
        if let Some(q) = prev {
            let gap = interval_ms
                .is_some_and(|iv| p.time_ms.saturating_sub(q.time_ms) > iv.saturating_mul(3) / 2);
            let reset_flag = s.quality.contains(Quality::COUNTER_RESET);
            let delta = if p.value >= q.value && !reset_flag {
                Some(p.value.saturating_sub(q.value))
            } else if let (false, Some(m)) = (reset_flag, modulus) {
                let fall = i128::from(q.value) - i128::from(p.value);
                if fall > i128::from(m / 2) {
                    agg.rollovers += 1;
                    i64::try_from(i128::from(p.value) + i128::from(m) - i128::from(q.value))
                        .ok()
                        .filter(|d| *d >= 0)
                } else {
                    None
                }
            } else {
                None
            };
            match delta {
                Some(d) => {
                    if gap {
                        agg.gap_delta = agg.gap_delta.saturating_add(d);
                    } else {
                        agg.delta = agg.delta.saturating_add(d);
                    }
                    steps.push(CounterStep {
                        end_ms: p.time_ms,
                        delta: d,
                        credited: !gap,
                    });
                }
                None => {
                    agg.resets += 1;
                    steps.push(CounterStep {
                        end_ms: p.time_ms,
                        delta: 0,
                        credited: false,
                    });
                }
            }
        }
        prev = Some(p);
        agg.last = Some(p);
    }
    (steps, agg)
}

/// Gaps of a series within `period` (see the module doc).
pub fn gaps(samples: &[SeriesSample], period: &Period, interval_ms: u64) -> Vec<Gap> {
    let tolerance = interval_ms.saturating_mul(3) / 2;
    let mut out = Vec::new();
    let mut covered = period.start_ms;
    let reason = |a: u64, b: u64| {
        let unusable = samples
            .iter()
            .any(|s| !s.quality.is_usable() && a <= s.time_ms && s.time_ms <= b);
        String::from(if unusable {
            "unusable_quality"
        } else {
            "no_data"
        })
    };
    for s in samples
        .iter()
        .filter(|s| s.quality.is_usable() && period.contains(s.time_ms))
    {
        if s.time_ms.saturating_sub(covered) > tolerance {
            out.push(Gap {
                start_ms: covered,
                end_ms: s.time_ms,
                reason: reason(covered, s.time_ms),
            });
        }
        covered = covered.max(s.time_ms);
    }
    if period.end_ms.saturating_sub(covered) > tolerance {
        out.push(Gap {
            start_ms: covered,
            end_ms: period.end_ms,
            reason: reason(covered, period.end_ms),
        });
    }
    out
}

/// Computes every series of a report.
///
/// `baselines` are the previous report's last counter values; the verifier
/// passes the baselines stated in the report itself.
pub fn compute_series(
    frames: &[FrameRecord],
    devices: &[DeviceRecord],
    period: &Period,
    baselines: &BTreeMap<SeriesKey, Point>,
) -> Vec<Series> {
    let by_id: BTreeMap<&DeviceId, &DeviceRecord> = devices.iter().map(|d| (&d.id, d)).collect();
    let mut out = Vec::new();
    for ((device, channel), ss) in collect(frames) {
        let dev = by_id.get(&device);
        let interval = dev.and_then(|d| d.sample_interval_ms).filter(|iv| *iv > 0);
        let modulus = dev.and_then(|d| d.counter_modulus);
        let usable: Vec<&SeriesSample> = ss
            .samples
            .iter()
            .filter(|s| s.quality.is_usable())
            .collect();
        let (sum, min, max, counter) = match ss.kind {
            ValueKind::Instant | ValueKind::Delta => {
                let sum = usable.iter().fold(0i64, |a, s| a.saturating_add(s.value));
                (
                    Some(sum),
                    usable.iter().map(|s| s.value).min(),
                    usable.iter().map(|s| s.value).max(),
                    None,
                )
            }
            ValueKind::Counter => {
                let baseline = baselines.get(&(device.clone(), channel.clone())).copied();
                let (_, agg) = counter_steps(&ss.samples, baseline, modulus, interval);
                (
                    None,
                    usable.iter().map(|s| s.value).min(),
                    usable.iter().map(|s| s.value).max(),
                    Some(agg),
                )
            }
        };
        out.push(Series {
            unit: String::from(ss.quantity.unit()),
            quantity: ss.quantity,
            kind: ss.kind,
            expected: interval.map(|iv| period.len_ms() / iv),
            received: ss.samples.len() as u64,
            usable: usable.len() as u64,
            first_ms: ss.samples.first().map(|s| s.time_ms),
            last_ms: ss.samples.last().map(|s| s.time_ms),
            sum,
            min,
            max,
            counter,
            gaps: interval
                .map(|iv| gaps(&ss.samples, period, iv))
                .unwrap_or_default(),
            device,
            channel,
        });
    }
    out
}

/// The counter baselines a report states (its series' `counter.baseline`).
pub fn stated_baselines(series: &[Series]) -> BTreeMap<SeriesKey, Point> {
    series
        .iter()
        .filter_map(|s| {
            let b = s.counter.as_ref()?.baseline?;
            Some(((s.device.clone(), s.channel.clone()), b))
        })
        .collect()
}

/// The baselines the next report starts from: each counter series' last
/// usable value (carried over from older reports for series that sent
/// nothing this period).
pub fn next_baselines(
    previous: &BTreeMap<SeriesKey, Point>,
    series: &[Series],
) -> BTreeMap<SeriesKey, Point> {
    let mut out = previous.clone();
    for s in series {
        if let Some(last) = s.counter.as_ref().and_then(|c| c.last) {
            out.insert((s.device.clone(), s.channel.clone()), last);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u64, v: i64) -> SeriesSample {
        SeriesSample {
            time_ms: t,
            value: v,
            quality: Quality::GOOD,
        }
    }

    #[test]
    fn counter_rolls_over_at_its_modulus_and_a_reset_earns_nothing() {
        let samples = [
            s(1000, 4_294_967_000),
            s(2000, 200),
            s(3000, 300),
            SeriesSample {
                time_ms: 4000,
                value: 5,
                quality: Quality::COUNTER_RESET,
            },
            s(5000, 15),
        ];
        let base = Some(Point {
            time_ms: 0,
            value: 4_294_966_900,
        });
        let (steps, agg) = counter_steps(&samples, base, Some(1 << 32), Some(1000));
        // 100 + (200 + 2^32 - 4294967000 = 496) + 100 + reset + 10
        assert_eq!(agg.delta, 100 + 496 + 100 + 10);
        assert_eq!((agg.rollovers, agg.resets), (1, 1));
        assert_eq!(steps.len(), 5);
        assert_eq!(
            agg.last,
            Some(Point {
                time_ms: 5000,
                value: 15
            })
        );
        // Without a modulus the fall is a reset.
        let (_, agg) = counter_steps(&samples, base, None, Some(1000));
        assert_eq!((agg.rollovers, agg.resets), (0, 2));
        assert_eq!(agg.delta, 100 + 100 + 10);
    }

    #[test]
    fn a_step_across_a_gap_is_measured_but_not_credited() {
        let samples = [s(0, 0), s(1000, 10), s(9000, 90), s(10_000, 100)];
        let (_, agg) = counter_steps(&samples, None, None, Some(1000));
        assert_eq!((agg.delta, agg.gap_delta), (20, 80));
    }

    #[test]
    fn gaps_cover_start_middle_and_end_with_reasons() {
        let period = Period {
            start_ms: 0,
            end_ms: 10_000,
        };
        let samples = [
            s(3000, 1),
            s(4000, 1),
            SeriesSample {
                time_ms: 5000,
                value: 0,
                quality: Quality::UNAVAILABLE,
            },
            s(7000, 1),
            s(8000, 1),
        ];
        let g = gaps(&samples, &period, 1000);
        assert_eq!(g.len(), 3);
        assert_eq!(
            (g[0].start_ms, g[0].end_ms, g[0].reason.as_str()),
            (0, 3000, "no_data")
        );
        assert_eq!(
            (g[1].start_ms, g[1].end_ms, g[1].reason.as_str()),
            (4000, 7000, "unusable_quality")
        );
        assert_eq!((g[2].start_ms, g[2].end_ms), (8000, 10_000));
    }
}
