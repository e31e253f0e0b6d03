//! Server-side SVG line charts for the diagnostics page (pure functions).
//!
//! Why hand-made SVG and not a charting library: the page must work with no
//! internet, under a `default-src 'self'` policy, without JavaScript, and in
//! a small binary. The charts are rendered here, in the page's HTML; the
//! script only swaps in a fresh page section. This module is ~400 lines
//! with tests, where a library (uPlot, ~50 KB; Chart.js, ~200 KB) would add
//! a client-side rendering path the browser test then has to wait for.
//!
//! What a chart shows, and the invariants the tests hold it to:
//! - exactly the window it claims (`from_ms..to_ms`, the range's length
//!   ending now), with a time axis (UTC ticks at round steps) and a value
//!   axis (round steps in the display unit, not forced to start at 0);
//! - the unit of the axis (from [`mrv_shared::display`]);
//! - a gap (no sample for longer than the gap threshold, or silence up to
//!   now) as a shaded `rect.gap` and a break in the line, never as a line
//!   across it or a drop to zero;
//! - unavailable values (quality flags that make a value unusable) as red
//!   marks on the time axis (`rect.unavail`), never as values;
//! - for buckets, the min..max band of each bucket and its mean; the 1 h
//!   chart draws one-minute buckets before the oldest raw point kept;
//! - a span whose buckets were dropped for the chart memory budget as a
//!   hatched `rect.not-kept` ("not kept"), never as a gap: a gap means no
//!   data arrived, "not kept" that the page no longer holds them.

use super::state::{Bucket, NotKept, Point, Range};
use mrv_shared::display::{Scale, scale_for};
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::Quality;
use std::fmt::Write as _;

/// SVG width (the chart scales to its box, keeping its aspect).
pub const W: f64 = 480.0;
/// SVG height.
pub const H: f64 = 200.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 24.0;
/// Most points drawn per chart (raw points are thinned per segment,
/// keeping each slice's min and max).
pub const MAX_DRAWN: usize = 800;

/// One thing to draw at a time: a raw point or a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartPoint {
    /// Time, Unix ms (bucket start for buckets).
    pub t_ms: u64,
    /// The value (mean for a bucket); `None`: only unusable values here.
    pub value: Option<i64>,
    /// Smallest usable value (equals `value` for raw points).
    pub min: i64,
    /// Largest usable value.
    pub max: i64,
    /// Time it covers, ms (0 for a raw point, the bucket's width).
    pub width_ms: u64,
}

impl ChartPoint {
    fn end_ms(&self) -> u64 {
        self.t_ms + self.width_ms
    }
}

/// Raw points as chart points (unusable ones keep their time, lose their value).
pub fn from_points(points: &[Point]) -> Vec<ChartPoint> {
    points
        .iter()
        .map(|p| ChartPoint {
            t_ms: p.t_ms,
            value: Quality(p.quality).is_usable().then_some(p.value),
            min: p.value,
            max: p.value,
            width_ms: 0,
        })
        .collect()
}

/// Buckets of `width_ms` as chart points.
pub fn from_buckets(buckets: &[Bucket], width_ms: u64) -> Vec<ChartPoint> {
    buckets
        .iter()
        .filter(|b| b.n > 0 || b.unavailable > 0)
        .map(|b| ChartPoint {
            t_ms: b.t_ms,
            value: (b.n > 0).then_some(b.mean),
            min: b.min,
            max: b.max,
            width_ms,
        })
        .collect()
}

/// A channel's chart points over `range`: for the 1 h chart its minute
/// `buckets` before the oldest raw point (the one holding it cut off at
/// that point), then the raw `points`; else the buckets.
pub fn series_points(range: Range, points: &[Point], buckets: &[Bucket]) -> Vec<ChartPoint> {
    let mut out = from_buckets(buckets, range.bucket_ms());
    if range == Range::Hour {
        let first = points.first().map_or(u64::MAX, |p| p.t_ms);
        out.retain(|b| b.t_ms < first);
        for b in &mut out {
            b.width_ms = b.width_ms.min(first - b.t_ms);
        }
        out.extend(from_points(points));
    }
    out
}

/// Longest pause between the end of one sample (a bucket's end) and the
/// next that is still drawn as a line: three expected intervals (from the
/// config, else the median spacing of the data), at least 2 s.
pub fn gap_threshold_ms(expected_interval_ms: Option<u64>, pts: &[ChartPoint]) -> u64 {
    let interval = expected_interval_ms.unwrap_or_else(|| median_spacing(pts));
    (3 * interval).max(2_000)
}

/// The median spacing of the raw points when there are two or more (the
/// 1 h chart's buckets before them would pass for the sampling rate),
/// else of all points.
fn median_spacing(pts: &[ChartPoint]) -> u64 {
    let raw: Vec<ChartPoint> = pts.iter().filter(|p| p.width_ms == 0).copied().collect();
    let pts = if raw.len() >= 2 { &raw[..] } else { pts };
    let mut d: Vec<u64> = pts
        .windows(2)
        .map(|w| w[1].t_ms.saturating_sub(w[0].t_ms))
        .filter(|d| *d > 0)
        .collect();
    if d.is_empty() {
        return 1_000;
    }
    d.sort_unstable();
    d[d.len() / 2]
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct ChartSpec<'a> {
    /// The channel's quantity (picks unit and scale).
    pub quantity: Quantity,
    /// The range (title, buckets).
    pub range: Range,
    /// Window start, Unix ms.
    pub from_ms: u64,
    /// Window end (now), Unix ms.
    pub to_ms: u64,
    /// Points in time order.
    pub points: &'a [ChartPoint],
    /// See [`gap_threshold_ms`].
    pub gap_ms: u64,
    /// Spans dropped for the memory budget (drawn as "not kept").
    pub not_kept: &'a [NotKept],
}

/// A round step near `span / target`: 1, 2 or 5 times a power of ten.
pub fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let k = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    k * mag
}

const TIME_STEPS_MS: [u64; 14] = [
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];

/// Time ticks: multiples (UTC) of the smallest round step giving at most
/// seven ticks in `from..=to`.
pub fn time_ticks(from_ms: u64, to_ms: u64) -> (u64, Vec<u64>) {
    let span = to_ms.saturating_sub(from_ms).max(1);
    let step = TIME_STEPS_MS
        .into_iter()
        .find(|s| span / s <= 7)
        .unwrap_or(604_800_000);
    let first = from_ms.div_ceil(step) * step;
    let ticks = (0..)
        .map(|k| first + k * step)
        .take_while(|t| *t <= to_ms)
        .collect();
    (step, ticks)
}

fn time_label(t_ms: u64, step_ms: u64) -> String {
    let s = crate::clock::utc_seconds(t_ms); // YYYY-MM-DD HH:MM:SS
    if step_ms >= 86_400_000 {
        s.get(5..10).unwrap_or(&s).to_string()
    } else {
        s.get(11..16).unwrap_or(&s).to_string()
    }
}

/// Value axis: (low, high, step) in display units, round at both ends.
fn value_axis(lo: f64, hi: f64, sc: Scale) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (lo, hi);
    if (hi - lo).abs() < f64::EPSILON {
        let pad = (lo.abs() * 0.01).max(10f64.powi(-(sc.max_decimals as i32)));
        lo -= pad;
        hi += pad;
    }
    // Never a step finer than the base resolution (1 Wh: no 0.5 Wh ticks).
    let step = nice_step(hi - lo, 4.0).max(10f64.powi(-(sc.max_decimals as i32)));
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

fn decimals_for(step: f64, sc: Scale) -> usize {
    let d = (-step.log10().floor()).max(0.0) as u32;
    d.min(sc.max_decimals) as usize
}

/// Thins `pts` to about `max` points, keeping each slice's min and max.
fn thin(pts: &[ChartPoint], max: usize) -> Vec<ChartPoint> {
    if pts.len() <= max || max < 4 {
        return pts.to_vec();
    }
    let per = pts.len().div_ceil(max / 2);
    let mut out = Vec::with_capacity(max);
    for chunk in pts.chunks(per) {
        let vals = chunk.iter().filter(|p| p.value.is_some());
        let lo = vals.clone().min_by_key(|p| p.value);
        let hi = vals.max_by_key(|p| p.value);
        match (lo, hi) {
            (Some(a), Some(b)) if a.t_ms <= b.t_ms => {
                out.push(*a);
                if a != b {
                    out.push(*b);
                }
            }
            (Some(a), Some(b)) => {
                out.push(*b);
                out.push(*a);
            }
            _ => out.push(chunk[0]),
        }
    }
    out
}

/// The chart's SVG.
pub fn render(spec: &ChartSpec<'_>) -> String {
    let (from, to) = (spec.from_ms, spec.to_ms.max(spec.from_ms + 1));
    let pts: Vec<ChartPoint> = spec
        .points
        .iter()
        .filter(|p| p.t_ms >= from && p.t_ms <= to)
        .copied()
        .collect();
    let not_kept: Vec<(u64, u64)> = spec
        .not_kept
        .iter()
        .map(|n| (n.from_ms.max(from), n.to_ms.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |t: u64| LEFT + (t.saturating_sub(from) as f64 / (to - from) as f64) * plot_w;
    let is_status = spec.quantity == Quantity::Status;
    let usable: Vec<&ChartPoint> = pts.iter().filter(|p| p.value.is_some()).collect();
    let max_abs = usable
        .iter()
        .map(|p| p.min.unsigned_abs().max(p.max.unsigned_abs()))
        .max()
        .unwrap_or(0);
    let sc = scale_for(spec.quantity, max_abs);
    let title = format!(
        "{}{}",
        spec.range.title(),
        if sc.unit.is_empty() {
            String::new()
        } else {
            format!(", {}", sc.unit)
        }
    );
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" \
         data-from-ms=\"{from}\" data-to-ms=\"{to}\" data-range=\"{}\">\
         <rect class=\"bg\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\"/>",
        super::page::esc(&title),
        spec.range.code(),
    );
    // Time axis.
    let (step_ms, ticks) = time_ticks(from, to);
    for t in &ticks {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\"/>\
             <text class=\"axis tick-x\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            H - 8.0,
            time_label(*t, step_ms),
            x = x(*t),
        );
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">UTC</text>",
        W - RIGHT,
        TOP - 6.0
    );
    // Spans not kept: hatched, under everything else, never a gap.
    for (a, b) in &not_kept {
        let _ = write!(
            svg,
            "<rect class=\"not-kept\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\">\
             <title>not kept {} to {} UTC: dropped for the chart memory budget \
             (diagnostics.chart_memory_bytes); the readings are in the buffer</title></rect>",
            x(*a),
            (x(*b) - x(*a)).max(1.0),
            crate::clock::utc_seconds(*a),
            crate::clock::utc_seconds(*b),
        );
    }
    if usable.is_empty() && pts.is_empty() {
        let _ = write!(
            svg,
            "<text class=\"muted empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data in the {}</text></svg>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0,
            spec.range.title().to_lowercase(),
        );
        return svg;
    }
    // Value axis.
    let (lo, hi, step) = if is_status {
        (-0.2, 1.2, 1.0)
    } else if usable.is_empty() {
        (0.0, 1.0, 1.0)
    } else {
        let lo = usable.iter().map(|p| p.min).min().unwrap_or(0);
        let hi = usable.iter().map(|p| p.max).max().unwrap_or(0);
        value_axis(sc.to_f64(lo), sc.to_f64(hi), sc)
    };
    let y = |v: i64| {
        let f = if is_status { v as f64 } else { sc.to_f64(v) };
        TOP + plot_h - ((f - lo) / (hi - lo)) * plot_h
    };
    let decimals = decimals_for(step, sc);
    let mut tick = if is_status { 0.0 } else { lo };
    let mut n = 0;
    while tick <= hi + step * 1e-6 && n < 20 {
        let yy = TOP + plot_h - ((tick - lo) / (hi - lo)) * plot_h;
        let label = if is_status {
            if tick < 0.5 { "off" } else { "on" }.to_string()
        } else {
            format!("{tick:.decimals$}")
        };
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\"/>\
             <text class=\"axis tick-y\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            W - RIGHT,
            LEFT - 5.0,
            yy + 4.0,
        );
        tick += step;
        n += 1;
        if is_status && n == 2 {
            break;
        }
    }
    let _ = write!(
        svg,
        "<text class=\"axis unit\" x=\"4\" y=\"{}\">{}</text>",
        TOP - 6.0,
        super::page::esc(if is_status { "on/off" } else { sc.unit })
    );
    // Segments split at gaps; gaps shaded (also the silence up to now).
    let mut segments: Vec<Vec<ChartPoint>> = Vec::new();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    // A gap runs from the end of one sample to the start of the next.
    let mut prev: Option<u64> = None;
    for p in &usable {
        match prev {
            Some(end) if p.t_ms.saturating_sub(end) <= spec.gap_ms => {
                if let Some(s) = segments.last_mut() {
                    s.push(**p);
                }
            }
            Some(end) => {
                gaps.push((end, p.t_ms));
                segments.push(vec![**p]);
            }
            None => segments.push(vec![**p]),
        }
        prev = Some(p.end_ms());
    }
    if let Some(last) = pts.last().map(ChartPoint::end_ms)
        && to.saturating_sub(last) > spec.gap_ms
    {
        gaps.push((last, to));
    }
    for (a, b) in &gaps {
        let (xa, xb) = (x(*a), x(*b));
        if xb > xa {
            let _ = write!(
                svg,
                "<rect class=\"gap\" x=\"{xa:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\">\
                 <title>no data {} to {} UTC</title></rect>",
                xb - xa,
                crate::clock::utc_seconds(*a),
                crate::clock::utc_seconds(*b),
            );
        }
    }
    let total = usable.len().max(1);
    for seg in &segments {
        let share = (MAX_DRAWN * seg.len() / total).max(4);
        let seg = thin(seg, share);
        // A bucket's value is drawn at its middle.
        let xm = |p: &ChartPoint| x(p.t_ms + p.width_ms / 2);
        if seg.iter().any(|p| p.width_ms > 0 && p.min != p.max) {
            let mut d = String::new();
            for (k, p) in seg.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if k == 0 { "M" } else { " L" },
                    xm(p),
                    y(p.max)
                );
            }
            for p in seg.iter().rev() {
                let _ = write!(d, " L{:.1} {:.1}", xm(p), y(p.min));
            }
            let _ = write!(svg, "<path class=\"band\" d=\"{d} Z\"/>");
        }
        if seg.len() == 1 {
            let p = seg[0];
            let _ = write!(
                svg,
                "<circle class=\"dot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"/>",
                xm(&p),
                y(p.value.unwrap_or(p.min))
            );
            continue;
        }
        let mut d = String::new();
        for (k, p) in seg.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1}",
                if k == 0 { "M" } else { " L" },
                xm(p),
                y(p.value.unwrap_or(p.min))
            );
        }
        let _ = write!(svg, "<path class=\"line\" d=\"{d}\"/>");
    }
    for p in pts.iter().filter(|p| p.value.is_none()) {
        let xa = x(p.t_ms);
        let w = (x(p.t_ms + p.width_ms.max(1)) - xa).max(2.0);
        let _ = write!(
            svg,
            "<rect class=\"unavail\" x=\"{xa:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"5\">\
             <title>unavailable at {} UTC</title></rect>",
            TOP + plot_h - 5.0,
            crate::clock::utc_seconds(p.t_ms),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: u64, v: i64) -> ChartPoint {
        ChartPoint {
            t_ms: t,
            value: Some(v),
            min: v,
            max: v,
            width_ms: 0,
        }
    }

    fn spec(points: &[ChartPoint], q: Quantity, from: u64, to: u64, gap: u64) -> String {
        render(&ChartSpec {
            quantity: q,
            range: Range::Hour,
            from_ms: from,
            to_ms: to,
            points,
            gap_ms: gap,
            not_kept: &[],
        })
    }

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(10.0, 4.0), 5.0);
        assert_eq!(nice_step(1.0, 4.0), 0.5);
        assert_eq!(nice_step(0.3, 4.0), 0.1);
        assert_eq!(nice_step(700.0, 4.0), 200.0);
    }

    #[test]
    fn value_ticks_are_distinct_and_never_finer_than_the_base_unit() {
        let svg = spec(&[p(0, 0), p(1000, 1)], Quantity::Energy, 0, 2000, 3_000);
        let labels: Vec<&str> = svg
            .split("class=\"axis tick-y\"")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1)?.split('<').next())
            .collect();
        assert_eq!(labels, ["0", "1"], "{svg}");
    }

    #[test]
    fn time_ticks_fit_the_window_at_round_utc_times() {
        let h = 3_600_000;
        let (step, t) = time_ticks(10 * h + 123, 11 * h + 123);
        assert_eq!(step, 600_000);
        assert_eq!(t.first(), Some(&(10 * h + 600_000)));
        assert_eq!(t.len(), 6);
        let (step, t) = time_ticks(0, 7 * 24 * h);
        assert_eq!(step, 86_400_000);
        assert_eq!(t.len(), 8);
        assert_eq!(time_label(10 * h, 600_000), "10:00");
        assert_eq!(time_label(86_400_000 * 3, 86_400_000), "01-04");
    }

    #[test]
    fn the_chart_has_axes_in_display_units_and_does_not_start_at_zero() {
        // Voltage around 231 V: the axis is in V, near the data, not from 0.
        let pts: Vec<_> = (0..60)
            .map(|i| p(i * 1000, 230_000 + i as i64 * 50))
            .collect();
        let svg = spec(&pts, Quantity::Voltage, 0, 60_000, 3_000);
        assert!(svg.contains("class=\"axis unit\" x=\"4\""), "{svg}");
        assert!(svg.contains(">V</text>"), "{svg}");
        assert!(svg.contains(">230<") || svg.contains(">230.0<"), "{svg}");
        assert!(
            !svg.contains(">0</text>"),
            "axis starts near the data: {svg}"
        );
        assert!(svg.matches("class=\"axis tick-x\"").count() >= 2, "{svg}");
        assert_eq!(svg.matches("<path class=\"line\"").count(), 1);
        assert!(!svg.contains("class=\"gap\""));
    }

    #[test]
    fn a_gap_is_a_shaded_break_not_a_line_or_a_zero() {
        let mut pts: Vec<_> = (0..10).map(|i| p(i * 1000, 5)).collect();
        pts.extend((40..50).map(|i| p(i * 1000, 6)));
        let svg = spec(&pts, Quantity::Power, 0, 50_000, 3_000);
        assert_eq!(svg.matches("<path class=\"line\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("<rect class=\"gap\"").count(), 1, "{svg}");
        // Silence up to now is a gap too.
        let svg = spec(&pts, Quantity::Power, 0, 120_000, 3_000);
        assert_eq!(svg.matches("<rect class=\"gap\"").count(), 2, "{svg}");
    }

    #[test]
    fn unavailable_values_are_marked_and_not_drawn_as_values() {
        let mut pts: Vec<_> = (0..10).map(|i| p(i * 1000, 5)).collect();
        pts[4].value = None;
        pts[4].min = 0;
        pts[4].max = 0;
        let svg = spec(&pts, Quantity::Temperature, 0, 10_000, 3_000);
        assert_eq!(svg.matches("<rect class=\"unavail\"").count(), 1, "{svg}");
        // The line skips it (no point at the value 0).
        assert!(!svg.contains(">0.00<") && !svg.contains(">0<"), "{svg}");
    }

    #[test]
    fn status_is_drawn_on_an_off_on_axis_and_empty_charts_say_so() {
        let svg = spec(&[p(0, 0), p(1000, 1)], Quantity::Status, 0, 2000, 3_000);
        assert!(
            svg.contains(">off</text>") && svg.contains(">on</text>"),
            "{svg}"
        );
        let svg = spec(&[], Quantity::Power, 0, 2000, 3_000);
        assert!(svg.contains("no data in the last hour"), "{svg}");
    }

    #[test]
    fn gap_thresholds_follow_the_expected_interval_or_the_data() {
        let pts: Vec<_> = (0..10).map(|i| p(i * 5000, 1)).collect();
        assert_eq!(gap_threshold_ms(None, &pts), 15_000);
        assert_eq!(gap_threshold_ms(Some(200), &pts), 2_000);
        assert_eq!(gap_threshold_ms(Some(300_000), &pts), 900_000);
    }

    fn bucket(t: u64, v: i64) -> Bucket {
        Bucket {
            t_ms: t,
            min: v - 1,
            max: v + 1,
            mean: v,
            n: 60,
            unavailable: 0,
        }
    }

    #[test]
    fn the_hour_chart_draws_minute_buckets_before_the_oldest_raw_point_without_a_gap() {
        let buckets: Vec<_> = (0..10).map(|i| bucket(i * 60_000, 5)).collect();
        // Raw points only from 9:30 on (older ones dropped for the quota).
        let raw: Vec<_> = (0..30)
            .map(|i| Point {
                t_ms: 570_000 + i * 1000,
                value: 5,
                quality: 0,
            })
            .collect();
        // The first 10 minutes of the hour chart, raw points 1 s apart.
        let render_hour = |pts: &[ChartPoint]| {
            render(&ChartSpec {
                quantity: Quantity::Power,
                range: Range::Hour,
                from_ms: 0,
                to_ms: 600_000,
                points: pts,
                gap_ms: gap_threshold_ms(Some(1000), pts),
                not_kept: &[],
            })
        };
        let pts = series_points(Range::Hour, &raw, &buckets);
        assert_eq!(pts.len(), 10 + 30);
        assert_eq!((pts[9].t_ms, pts[9].width_ms), (540_000, 30_000), "cut off");
        assert!(pts.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        let svg = render_hour(&pts);
        assert!(!svg.contains("class=\"gap\""), "{svg}");
        assert_eq!(svg.matches("<path class=\"line\"").count(), 1, "{svg}");
        assert_eq!(svg.matches("<path class=\"band\"").count(), 1, "{svg}");
        // A missing minute among the buckets is a gap.
        let mut holed = buckets.clone();
        holed.remove(4);
        let pts = series_points(Range::Hour, &raw, &holed);
        let svg = render_hour(&pts);
        assert_eq!(svg.matches("<rect class=\"gap\"").count(), 1, "{svg}");
    }

    #[test]
    fn buckets_dropped_for_the_budget_are_not_kept_which_is_not_a_gap() {
        let buckets: Vec<_> = (72..144).map(|i| bucket(i * 600_000, 5)).collect();
        let pts = series_points(Range::Day, &[], &buckets);
        let day = 86_400_000;
        let svg = render(&ChartSpec {
            quantity: Quantity::Power,
            range: Range::Day,
            from_ms: 0,
            to_ms: day,
            points: &pts,
            gap_ms: gap_threshold_ms(Some(1000), &pts),
            not_kept: &[NotKept {
                from_ms: 0,
                to_ms: day / 2,
            }],
        });
        assert_eq!(svg.matches("<rect class=\"not-kept\"").count(), 1, "{svg}");
        assert!(svg.contains("dropped for the chart memory budget"), "{svg}");
        assert!(!svg.contains("class=\"gap\""), "{svg}");
        assert!(svg.contains("<rect class=\"not-kept\" x=\"58.0\""), "{svg}");
    }

    #[test]
    fn thinning_keeps_extremes_and_bounds_the_size() {
        let pts: Vec<_> = (0..10_000u64).map(|i| p(i, (i % 97) as i64)).collect();
        let d = thin(&pts, 600);
        assert!(d.len() <= 600, "{}", d.len());
        assert_eq!(d.iter().filter_map(|x| x.value).max(), Some(96));
        assert_eq!(d.iter().filter_map(|x| x.value).min(), Some(0));
        assert!(d.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    }
}
