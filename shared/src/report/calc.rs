//! The calculation block of a report: which devices count, the methodology
//! inputs derived from the series, and RE/PE/ER (see
//! [`crate::methodology`]).
//!
//! Device exclusions (no credit, listed in `excluded`): a device not in the
//! gateway's registry (`unregistered`), a meter whose calibration is due on
//! or before the period's end (`calibration_expired`), or whose dates do not
//! parse (`calibration_date_invalid`).
//!
//! Inputs per methodology (all from non-excluded devices):
//! - solar PV / pump: `energy_wh` = credited counter deltas plus usable
//!   delta sums of every `energy` series;
//! - biogas digester: per device, its `gas_volume` intervals (usable delta
//!   samples, or credited counter steps) paired with its first
//!   `ch4_fraction`, `temperature`, `pressure` and (if any) `status` (flame)
//!   series, samples no older than 3 nominal intervals (5 min without one);
//! - rice AWD: each `water_level` series is one tube for an equal share of
//!   `area_ha`; observed days are the period minus its gaps (no usable
//!   sample at all: zero).

use super::model::{Amount, Calculation, DeviceRecord, Exclusion, FrameRecord, Period, Series};
use super::series::{SeriesKey, SeriesSamples, collect, counter_steps, stated_baselines};
use crate::ids::DeviceId;
use crate::methodology::awd::{self, AwdState, WaterRegime};
use crate::methodology::{CalcError, MethodologyKind, Outcome, Params, Ratio, digester, pump, pv};
use crate::quantity::{Quantity, ValueKind};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The conservative treatment, stated in every report.
pub const TREATMENT: &str = "Missing data earns no credit: only usable samples count; counter steps spanning a gap (> 1.5 nominal intervals) or a reset are not credited; digester intervals without CH4, temperature and pressure data (or without flame) are not credited; AWD credits only observed time and only the drainage events already shown; devices unregistered or out of calibration are excluded; per-interval normalisations round down; ER is rounded down to whole tCO2e.";

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian).
pub fn days_from_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Devices that earn no credit in `period`, and why.
pub fn exclusions(devices: &[DeviceRecord], period: &Period) -> Vec<Exclusion> {
    let mut out = Vec::new();
    for d in devices {
        let reason = if d.kind == "unregistered" {
            Some("unregistered")
        } else if let Some(c) = &d.calibration {
            match days_from_date(&c.due_on) {
                None => Some("calibration_date_invalid"),
                Some(days) => {
                    let due_ms = days.saturating_mul(86_400_000);
                    (due_ms <= period.end_ms as i64).then_some("calibration_expired")
                }
            }
        } else {
            None
        };
        if let Some(r) = reason {
            out.push(Exclusion {
                device: d.id.clone(),
                reason: String::from(r),
            });
        }
    }
    out
}

fn amount(r: Ratio) -> Result<Amount, CalcError> {
    Ok(Amount {
        exact: r.to_string(),
        decimal: r.to_decimal_floor(6)?,
    })
}

/// Computes the calculation block.
///
/// `awd_start` is the tube states at period start (rice AWD only; from the
/// previous report, or stated in the report when verifying).
#[allow(clippy::too_many_arguments)]
pub fn calculate(
    kind: MethodologyKind,
    params: &Params,
    frames: &[FrameRecord],
    series: &[Series],
    devices: &[DeviceRecord],
    period: &Period,
    awd_start: Option<&BTreeMap<String, AwdState>>,
) -> Result<Calculation, CalcError> {
    let excluded = exclusions(devices, period);
    let skip: BTreeSet<&DeviceId> = excluded.iter().map(|e| &e.device).collect();
    let mut inputs = BTreeMap::new();
    let mut awd_in = None;
    let mut awd_out = None;
    let outcome = match kind {
        MethodologyKind::SolarPv | MethodologyKind::SolarPump => {
            let mut wh: i128 = 0;
            for s in series
                .iter()
                .filter(|s| s.quantity == Quantity::Energy && !skip.contains(&s.device))
            {
                wh += match (&s.counter, s.kind) {
                    (Some(c), ValueKind::Counter) => i128::from(c.delta),
                    (_, ValueKind::Delta) => i128::from(s.sum.unwrap_or(0)),
                    _ => 0,
                };
            }
            inputs.insert(String::from("energy_wh"), wh.to_string());
            if kind == MethodologyKind::SolarPv {
                pv::reduction(wh, params)?
            } else {
                pump::reduction(wh, params)?
            }
        }
        MethodologyKind::BiogasDigester => {
            let all = collect(frames);
            let baselines = stated_baselines(series);
            let interval: BTreeMap<&DeviceId, Option<u64>> = devices
                .iter()
                .map(|d| (&d.id, d.sample_interval_ms))
                .collect();
            let modulus: BTreeMap<&DeviceId, Option<u64>> =
                devices.iter().map(|d| (&d.id, d.counter_modulus)).collect();
            let mut tot = digester::MethaneTotals::default();
            let device_ids: BTreeSet<&DeviceId> = all.keys().map(|(d, _)| d).collect();
            for dev in device_ids.into_iter().filter(|d| !skip.contains(d)) {
                let of = |q: Quantity| -> Option<(&SeriesKey, &SeriesSamples)> {
                    all.iter().find(|((d, _), ss)| d == dev && ss.quantity == q)
                };
                let Some((gas_key, gas)) = of(Quantity::GasVolume) else {
                    continue;
                };
                let iv = interval.get(dev).copied().flatten().filter(|v| *v > 0);
                let gas_points: Vec<(u64, i64)> = match gas.kind {
                    ValueKind::Counter => {
                        let (steps, _) = counter_steps(
                            &gas.samples,
                            baselines.get(gas_key).copied(),
                            modulus.get(dev).copied().flatten(),
                            iv,
                        );
                        steps
                            .into_iter()
                            .filter(|s| s.credited)
                            .map(|s| (s.end_ms, s.delta))
                            .collect()
                    }
                    _ => gas.usable_points(),
                };
                let pts = |q: Quantity| of(q).map(|(_, s)| s.usable_points()).unwrap_or_default();
                let flame = of(Quantity::Status).map(|(_, s)| s.usable_points());
                let max_age = iv.map(|v| v.saturating_mul(3)).unwrap_or(300_000);
                let t = digester::methane_ml(
                    &gas_points,
                    &pts(Quantity::Ch4Fraction),
                    &pts(Quantity::Temperature),
                    &pts(Quantity::Pressure),
                    flame.as_deref(),
                    max_age,
                );
                tot.volume_ml = tot.volume_ml.saturating_add(t.volume_ml);
                tot.normal_ml = tot.normal_ml.saturating_add(t.normal_ml);
                tot.ch4_ml = tot.ch4_ml.saturating_add(t.ch4_ml);
                tot.unpaired_ml = tot.unpaired_ml.saturating_add(t.unpaired_ml);
                tot.unflared_ml = tot.unflared_ml.saturating_add(t.unflared_ml);
            }
            for (k, v) in [
                ("gas_volume_ml", tot.volume_ml),
                ("gas_normal_ml", tot.normal_ml),
                ("ch4_normal_ml", tot.ch4_ml),
                ("unpaired_ml", tot.unpaired_ml),
                ("unflared_ml", tot.unflared_ml),
            ] {
                inputs.insert(String::from(k), v.to_string());
            }
            digester::reduction(i128::from(tot.ch4_ml), params)?
        }
        MethodologyKind::RiceAwd => {
            let (thr, min_dry) = awd::thresholds(params)?;
            let all = collect(frames);
            let start = awd_start.cloned().unwrap_or_default();
            let tubes: Vec<(&SeriesKey, &SeriesSamples)> = all
                .iter()
                .filter(|((d, _), s)| s.quantity == Quantity::WaterLevel && !skip.contains(d))
                .collect();
            let n = tubes.len().max(1) as i128;
            let tube_area = awd::param_area(params)?.checked_div(Ratio::int(n))?;
            let mut end = start.clone();
            let mut total = Outcome::new(Ratio::ZERO, Ratio::ZERO)?;
            for ((dev, ch), ss) in &tubes {
                let key = format!("{dev}/{ch}");
                let s0 = start.get(&key).copied().unwrap_or_default();
                let s1 = awd::advance(s0, &ss.usable_points(), thr, min_dry);
                end.insert(key.clone(), s1);
                let gap_ms: u64 = series
                    .iter()
                    .find(|s| &s.device == dev && &s.channel == ch)
                    .map(|s| s.gaps.iter().map(|g| g.end_ms - g.start_ms).sum())
                    .unwrap_or(0);
                let observed = if ss.samples.iter().any(|s| s.quality.is_usable()) {
                    period.len_ms().saturating_sub(gap_ms)
                } else {
                    0
                };
                inputs.insert(format!("observed_ms:{key}"), observed.to_string());
                inputs.insert(
                    format!("drainage_events:{key}"),
                    s1.drainage_events.to_string(),
                );
                let days = Ratio::new(i128::from(observed), i128::from(awd::DAY_MS))?;
                let o = awd::reduction(
                    tube_area,
                    days,
                    WaterRegime::from_events(s1.drainage_events),
                    params,
                )?;
                total = Outcome::new(total.re.checked_add(o.re)?, total.pe.checked_add(o.pe)?)?;
            }
            inputs.insert(String::from("tubes"), tubes.len().to_string());
            awd_in = Some(start);
            awd_out = Some(end);
            total
        }
    };
    let er_floor =
        i64::try_from(outcome.er.floor()).map_err(|_| crate::methodology::RatioError::Overflow)?;
    Ok(Calculation {
        methodology: kind,
        parameters: params.clone(),
        inputs,
        awd_start: awd_in,
        awd_end: awd_out,
        re: amount(outcome.re)?,
        pe: amount(outcome.pe)?,
        er: amount(outcome.er)?,
        er_rounded_down: er_floor,
        excluded,
        treatment: String::from(TREATMENT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_convert_to_epoch_days() {
        assert_eq!(days_from_date("1970-01-01"), Some(0));
        assert_eq!(days_from_date("2000-03-01"), Some(11_017));
        assert_eq!(days_from_date("2026-11-26"), Some(20_783));
        assert_eq!(days_from_date("2026-13-01"), None);
        assert_eq!(days_from_date("26-1-1"), None);
    }
}
