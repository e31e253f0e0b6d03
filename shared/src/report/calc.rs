//! A report's calculation blocks: for each configured calculation, its
//! bindings checked, the bound devices that count, the methodology inputs
//! derived from the bound series only, and exact RE/PE/ER (see
//! [`crate::methodology`] and its [`crate::methodology::role`] table).
//!
//! Structural rules (a report breaking them is invalid: [`check_bindings`]):
//! bindings sorted and unique; each role is one the methodology takes, with
//! the role's quantity; each bound device is listed in the report; an
//! energy role bound to a device whose kind implies a direction the role
//! does not take (a `solar_meter` is generation, an `irrigation_pump`
//! consumption: a pump is never PV generation); no (device, channel) bound
//! twice; the methodology's required roles present (biogas: per group).
//!
//! Exclusions, per calculation, per bound device (listed in `excluded`,
//! sorted; an excluded device's bindings contribute nothing):
//! - `unregistered`: the device is not in the gateway's registry;
//! - `calibration_not_yet_valid` / `calibration_expired`: the device is in
//!   calibration for a period `[start, end)` only when `calibrated_on`
//!   (00:00 UTC) `<= start` and `end <=` `due_on` (00:00 UTC, exclusive);
//! - `binding_series_mismatch`: the report has a series for a bound
//!   (device, channel) whose quantity or value kind is not the role's;
//! - `subtracted_input_missing`: a project-side (subtracted) binding whose
//!   device is excluded or whose series has no usable sample in the period:
//!   the reference side is then not credited at all for this period (its
//!   energy appears as `withheld_re_energy_wh`).
//!
//! Inputs (exact integers as strings):
//! - solar_pv / solar_pump: `re_energy_wh` = credited energy of the
//!   reference-side bindings (counter: credited deltas; delta: usable sum);
//!   `pe_energy_wh` = energy of the project-side bindings counted the
//!   conservative way round (counter: every measured increase, steps across
//!   gaps included; delta: usable sum); pump: `water_volume_ml` when bound
//!   (counter: every measured increase; delta: usable sum);
//! - biogas_digester: per group (sorted by name), its `gas_volume`
//!   intervals (credited counter steps, or usable delta samples) paired with
//!   the latest usable `ch4_fraction`, `temperature`, `pressure` and (if
//!   bound) `flame` sample at or before each interval's end, no older than
//!   3 nominal intervals of the gas device (5 min without one); totals
//!   `gas_volume_ml`, `gas_normal_ml`, `ch4_normal_ml`, `unpaired_ml`,
//!   `unflared_ml`;
//! - rice_awd: each `water_level` binding is one tube for an equal share of
//!   `area_ha` (excluded tubes keep their share and earn nothing);
//!   `observed_ms:<device>/<channel>` (period length minus its gaps; 0
//!   without any usable sample or without a nominal interval),
//!   `drainage_events:<device>/<channel>`, `tubes` (the tubes that count).

use super::model::{
    Amount, Binding, Calculation, Completeness, DeviceRecord, Exclusion, FrameRecord, Period,
    Series,
};
use super::series::{SeriesKey, SeriesSamples, collect, counter_steps, stated_baselines};
use crate::ids::DeviceId;
use crate::methodology::awd::{self, AwdState, WaterRegime};
use crate::methodology::role::{Need, Side};
use crate::methodology::{
    CalcError, MethodologyKind, Outcome, Params, Ratio, Role, digester, pump, pv,
};
use crate::quantity::ValueKind;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The conservative treatment, stated in every calculation.
pub const TREATMENT: &str = "Missing data earns no credit: only usable samples count; counter steps spanning a gap (> 1.5 nominal intervals) or a reset are not credited on the reference side, while subtracted (project-side) energy counts every measured increase; a period in which a subtracted input has no usable data earns no credit; digester intervals without CH4, temperature and pressure data (or without flame) are not credited; AWD credits only observed time and only the drainage events already shown; devices unregistered or out of calibration are excluded; per-interval normalisations round down; amounts are exact (a crediting total rounds down once).";

/// One configured calculation: what [`calculate`] computes.
#[derive(Debug, Clone, Copy)]
pub struct CalculationSpec<'a> {
    /// Its id (config key).
    pub id: &'a str,
    /// Calculator.
    pub methodology: MethodologyKind,
    /// Bindings, sorted.
    pub bindings: &'a [Binding],
    /// Parameters.
    pub params: &'a Params,
}

/// Unix ms of 00:00 UTC of a strict `YYYY-MM-DD` date (a real calendar
/// date: `2027-02-30` and `2026-11-31` are refused).
pub fn date_start_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: core::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) {
        return None;
    }
    if !digits(5..7) || !digits(8..10) {
        return None;
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &format).ok()?;
    let secs = date.midnight().assume_utc().unix_timestamp();
    secs.checked_mul(1000)
}

/// Why `device` earns nothing in `period`, if it does not; `Err` for a
/// calibration date that is not a real date.
pub fn device_exclusion(
    device: &DeviceRecord,
    period: &Period,
) -> Result<Option<&'static str>, CalcError> {
    if device.kind == "unregistered" {
        return Ok(Some("unregistered"));
    }
    let Some(c) = &device.calibration else {
        return Ok(None);
    };
    let parse = |field: &'static str, value: &str| {
        date_start_ms(value).ok_or_else(|| CalcError::BadDate {
            device: device.id.to_string(),
            field,
            value: String::from(value),
        })
    };
    let from = parse("calibrated_on", &c.calibrated_on)?;
    let due = parse("due_on", &c.due_on)?;
    let start = i64::try_from(period.start_ms).unwrap_or(i64::MAX);
    let end = i64::try_from(period.end_ms).unwrap_or(i64::MAX);
    Ok(if start < from {
        Some("calibration_not_yet_valid")
    } else if end > due {
        Some("calibration_expired")
    } else {
        None
    })
}

fn amount(r: Ratio) -> Result<Amount, CalcError> {
    Ok(Amount {
        exact: r.to_string(),
        decimal: r.to_decimal_floor(6)?,
    })
}

fn bad(msg: String) -> CalcError {
    CalcError::Binding(msg)
}

/// Checks the structural binding rules of the module doc.
pub fn check_bindings(
    methodology: MethodologyKind,
    bindings: &[Binding],
    devices: &[DeviceRecord],
) -> Result<(), CalcError> {
    for w in bindings.windows(2) {
        if w[0] >= w[1] {
            return Err(bad(String::from("bindings are not sorted and unique")));
        }
    }
    let mut seen = BTreeSet::new();
    for b in bindings {
        let spec = methodology.role(b.role).ok_or_else(|| {
            bad(format!(
                "{} does not take the role {}",
                methodology.name(),
                b.role.name()
            ))
        })?;
        if b.quantity != b.role.quantity() {
            return Err(bad(format!(
                "role {} needs quantity {}, the binding says {}",
                b.role.name(),
                b.role.quantity().name(),
                b.quantity.name()
            )));
        }
        let Some(dev) = devices.iter().find(|d| d.id == b.device) else {
            return Err(bad(format!(
                "{} is bound to {}/{}, a device the report does not list",
                b.role.name(),
                b.device,
                b.channel
            )));
        };
        if let Some(flow) = kind_energy_flow(&dev.kind)
            && b.role.quantity() == crate::quantity::Quantity::Energy
            && !b.role.accepts_flow(flow)
        {
            return Err(bad(format!(
                "{}/{} is the energy of a device of kind {}, which is {} and cannot be bound as {}",
                b.device,
                b.channel,
                dev.kind,
                flow.name(),
                b.role.name()
            )));
        }
        if !seen.insert((&b.device, &b.channel)) {
            return Err(bad(format!("{}/{} is bound twice", b.device, b.channel)));
        }
        let grouped = matches!(spec.need, Need::OnePerGroup | Need::AtMostOnePerGroup);
        if !grouped && !b.group.is_empty() {
            return Err(bad(format!(
                "role {} takes no group (found {:?})",
                b.role.name(),
                b.group
            )));
        }
    }
    let count = |r: Role| bindings.iter().filter(|b| b.role == r).count();
    let groups: BTreeSet<&str> = bindings.iter().map(|b| b.group.as_str()).collect();
    let mut grouped_roles = false;
    for spec in methodology.roles() {
        match spec.need {
            Need::AtLeastOne => {
                let alt = spec.alternative.map_or(0, count);
                if count(spec.role) + alt == 0 {
                    let also = spec
                        .alternative
                        .map(|a| format!(" or {}", a.name()))
                        .unwrap_or_default();
                    return Err(bad(format!(
                        "{} needs at least one {}{also} binding",
                        methodology.name(),
                        spec.role.name()
                    )));
                }
            }
            Need::Optional => {}
            Need::OnePerGroup | Need::AtMostOnePerGroup => {
                grouped_roles = true;
                for g in &groups {
                    let n = bindings
                        .iter()
                        .filter(|b| b.role == spec.role && b.group == *g)
                        .count();
                    let ok = match spec.need {
                        Need::OnePerGroup => n == 1,
                        _ => n <= 1,
                    };
                    if !ok {
                        return Err(bad(format!(
                            "group {g:?} has {n} {} bindings ({})",
                            spec.role.name(),
                            if spec.need == Need::OnePerGroup {
                                "exactly one needed"
                            } else {
                                "at most one allowed"
                            }
                        )));
                    }
                }
            }
        }
    }
    if grouped_roles && groups.is_empty() {
        return Err(bad(format!(
            "{} needs at least one group of bindings",
            methodology.name()
        )));
    }
    Ok(())
}

/// The energy direction a device kind implies (`solar_meter`: generation,
/// `irrigation_pump`: consumption); other kinds imply none.
pub fn kind_energy_flow(kind: &str) -> Option<crate::methodology::EnergyFlow> {
    match kind {
        "solar_meter" => Some(crate::methodology::EnergyFlow::Generation),
        "irrigation_pump" => Some(crate::methodology::EnergyFlow::Consumption),
        _ => None,
    }
}

fn series_of<'a>(series: &'a [Series], b: &Binding) -> Option<&'a Series> {
    series
        .iter()
        .find(|s| s.device == b.device && s.channel == b.channel)
}

/// Energy (or volume) of a series as the reference side credits it.
fn credited(s: &Series) -> i128 {
    match (&s.counter, s.kind) {
        (Some(c), ValueKind::Counter) => i128::from(c.delta),
        (_, ValueKind::Delta) => i128::from(s.sum.unwrap_or(0)),
        _ => 0,
    }
}

/// Energy (or volume) of a series as the project side subtracts it: every
/// measured increase.
fn measured(s: &Series) -> i128 {
    match (&s.counter, s.kind) {
        (Some(c), ValueKind::Counter) => i128::from(c.delta) + i128::from(c.gap_delta),
        (_, ValueKind::Delta) => i128::from(s.sum.unwrap_or(0)),
        _ => 0,
    }
}

fn completeness(
    b: &Binding,
    s: Option<&Series>,
    devices: &BTreeMap<&DeviceId, &DeviceRecord>,
    period: &Period,
) -> Completeness {
    let interval = devices
        .get(&b.device)
        .and_then(|d| d.sample_interval_ms)
        .filter(|iv| *iv > 0);
    match s {
        Some(s) => Completeness {
            role: b.role,
            device: b.device.clone(),
            channel: b.channel.clone(),
            expected: s.expected,
            received: s.received,
            usable: s.usable,
            gap_ms: interval.map(|_| s.gaps.iter().map(|g| g.end_ms - g.start_ms).sum()),
        },
        None => Completeness {
            role: b.role,
            device: b.device.clone(),
            channel: b.channel.clone(),
            expected: interval.map(|iv| period.len_ms() / iv),
            received: 0,
            usable: 0,
            gap_ms: interval.map(|_| period.len_ms()),
        },
    }
}

/// Computes one calculation block.
///
/// `awd_start` is the tube states at period start (rice AWD only; from the
/// previous report's same calculation, or stated in the report when
/// verifying).
pub fn calculate(
    spec: CalculationSpec<'_>,
    frames: &[FrameRecord],
    series: &[Series],
    devices: &[DeviceRecord],
    period: &Period,
    awd_start: Option<&BTreeMap<String, AwdState>>,
) -> Result<Calculation, CalcError> {
    let CalculationSpec {
        id,
        methodology,
        bindings,
        params,
    } = spec;
    check_bindings(methodology, bindings, devices)?;
    let by_id: BTreeMap<&DeviceId, &DeviceRecord> = devices.iter().map(|d| (&d.id, d)).collect();
    let mut excluded: BTreeSet<Exclusion> = BTreeSet::new();
    let exclude = |set: &mut BTreeSet<Exclusion>, d: &DeviceId, reason: &str| {
        set.insert(Exclusion {
            device: d.clone(),
            reason: String::from(reason),
        });
    };
    for b in bindings {
        let dev = by_id.get(&b.device).expect("check_bindings: listed");
        if let Some(reason) = device_exclusion(dev, period)? {
            exclude(&mut excluded, &b.device, reason);
        }
        if let Some(s) = series_of(series, b)
            && (s.quantity != b.quantity || !b.role.kinds().contains(&s.kind))
        {
            exclude(&mut excluded, &b.device, "binding_series_mismatch");
        }
    }
    let excluded_devices: BTreeSet<DeviceId> = excluded.iter().map(|e| e.device.clone()).collect();
    let mut re_blocked = false;
    for b in bindings.iter().filter(|b| b.role.side() == Side::Project) {
        let usable = series_of(series, b).is_some_and(|s| s.usable > 0);
        if excluded_devices.contains(&b.device) || !usable {
            exclude(&mut excluded, &b.device, "subtracted_input_missing");
            re_blocked = true;
        }
    }
    let counts = |b: &&Binding| !excluded_devices.contains(&b.device);
    let completeness: Vec<Completeness> = bindings
        .iter()
        .map(|b| completeness(b, series_of(series, b), &by_id, period))
        .collect();
    let mut inputs = BTreeMap::new();
    let mut awd_in = None;
    let mut awd_out = None;
    let outcome = match methodology {
        MethodologyKind::SolarPv | MethodologyKind::SolarPump => {
            let mut re_wh: i128 = 0;
            let mut pe_wh: i128 = 0;
            let mut water_ml: i128 = 0;
            for b in bindings.iter().filter(counts) {
                let Some(s) = series_of(series, b) else {
                    continue;
                };
                match b.role.side() {
                    Side::Reference => re_wh += credited(s),
                    Side::Project => pe_wh += measured(s),
                    Side::Info => water_ml += measured(s),
                    Side::Pairing => {}
                }
            }
            if re_blocked {
                inputs.insert(String::from("withheld_re_energy_wh"), re_wh.to_string());
                re_wh = 0;
            }
            inputs.insert(String::from("re_energy_wh"), re_wh.to_string());
            inputs.insert(String::from("pe_energy_wh"), pe_wh.to_string());
            if methodology == MethodologyKind::SolarPv {
                pv::reduction(re_wh, pe_wh, params)?
            } else {
                if bindings.iter().any(|b| b.role == Role::WaterVolume) {
                    inputs.insert(String::from("water_volume_ml"), water_ml.to_string());
                }
                pump::reduction(re_wh, pe_wh, params)?
            }
        }
        MethodologyKind::BiogasDigester => {
            let all = collect(frames);
            let baselines = stated_baselines(series);
            let groups: BTreeSet<&str> = bindings.iter().map(|b| b.group.as_str()).collect();
            let mut tot = digester::MethaneTotals::default();
            for g in groups {
                let of = |r: Role| bindings.iter().find(|b| b.group == g && b.role == r);
                let members: Vec<&Binding> = bindings.iter().filter(|b| b.group == g).collect();
                if members.iter().any(|b| excluded_devices.contains(&b.device)) {
                    continue;
                }
                let samples = |b: &Binding| -> Option<&SeriesSamples> {
                    all.get(&(b.device.clone(), b.channel.clone()))
                        .filter(|ss| ss.quantity == b.quantity)
                };
                let Some(gas_b) = of(Role::GasVolume) else {
                    continue;
                };
                let Some(gas) = samples(gas_b) else {
                    continue;
                };
                let gas_dev = by_id.get(&gas_b.device).expect("listed");
                let iv = gas_dev.sample_interval_ms.filter(|v| *v > 0);
                let gas_key: SeriesKey = (gas_b.device.clone(), gas_b.channel.clone());
                let gas_points: Vec<(u64, i64)> = match gas.kind {
                    ValueKind::Counter => {
                        let (steps, _) = counter_steps(
                            &gas.samples,
                            baselines.get(&gas_key).copied(),
                            gas_dev.counter_modulus,
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
                let pts = |r: Role| {
                    of(r)
                        .and_then(samples)
                        .map(SeriesSamples::usable_points)
                        .unwrap_or_default()
                };
                let flame = of(Role::Flame).map(|b| {
                    samples(b)
                        .map(SeriesSamples::usable_points)
                        .unwrap_or_default()
                });
                let max_age = iv.map(|v| v.saturating_mul(3)).unwrap_or(300_000);
                let t = digester::methane_ml(
                    &gas_points,
                    &pts(Role::Ch4Fraction),
                    &pts(Role::Temperature),
                    &pts(Role::Pressure),
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
            // Each bound tube stands for an equal share of the field,
            // excluded or not: an excluded tube's share earns nothing.
            let bound = bindings
                .iter()
                .filter(|b| b.role == Role::WaterLevel)
                .count();
            let tubes: Vec<&Binding> = bindings
                .iter()
                .filter(|b| b.role == Role::WaterLevel)
                .filter(counts)
                .collect();
            let n = bound.max(1) as i128;
            let tube_area = awd::param_area(params)?.checked_div(Ratio::int(n))?;
            let mut end = start.clone();
            let mut total = Outcome::new(Ratio::ZERO, Ratio::ZERO)?;
            for b in &tubes {
                let key = format!("{}/{}", b.device, b.channel);
                let ss = all
                    .get(&(b.device.clone(), b.channel.clone()))
                    .filter(|ss| ss.quantity == b.quantity);
                let points = ss.map(SeriesSamples::usable_points).unwrap_or_default();
                let s0 = start.get(&key).copied().unwrap_or_default();
                let s1 = awd::advance(s0, &points, thr, min_dry);
                end.insert(key.clone(), s1);
                let gap_ms: u64 = series_of(series, b)
                    .map(|s| s.gaps.iter().map(|g| g.end_ms - g.start_ms).sum())
                    .unwrap_or(0);
                // Coverage needs a nominal interval: without one no gap can
                // be found, so no time counts as observed.
                let has_interval = by_id
                    .get(&b.device)
                    .and_then(|d| d.sample_interval_ms)
                    .is_some_and(|iv| iv > 0);
                let observed = if points.is_empty() || !has_interval {
                    0
                } else {
                    period.len_ms().saturating_sub(gap_ms)
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
    Ok(Calculation {
        id: String::from(id),
        methodology,
        bindings: bindings.to_vec(),
        parameters: params.clone(),
        inputs,
        completeness,
        awd_start: awd_in,
        awd_end: awd_out,
        re: amount(outcome.re)?,
        pe: amount(outcome.pe)?,
        er: amount(outcome.er)?,
        excluded: excluded.into_iter().collect(),
        treatment: String::from(TREATMENT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_calendar_dates_parse() {
        assert_eq!(date_start_ms("1970-01-01"), Some(0));
        assert_eq!(date_start_ms("2000-03-01"), Some(11_017 * 86_400_000));
        assert_eq!(date_start_ms("2026-11-26"), Some(20_783 * 86_400_000));
        assert_eq!(date_start_ms("2028-02-29"), Some(21_243 * 86_400_000));
        for bad in [
            "2026-13-01",
            "2027-02-30",
            "2026-11-31",
            "2027-02-29",
            "26-1-1",
            "2026-1-01",
            "+2026-01-01",
            "2026-01-01T00:00:00Z",
            "garbage",
            "",
        ] {
            assert_eq!(date_start_ms(bad), None, "{bad}");
        }
    }
}
