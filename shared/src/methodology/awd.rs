//! Rice paddies under alternate wetting and drying (IPCC 2019 Refinement,
//! Vol. 4 Ch. 5; draft JCM methodology for the Philippines, 2024).
//!
//! Water regime from perforated field tubes: a tube is *dry* while its level
//! is below `dry_threshold_mm` (mm relative to the soil surface, negative =
//! below); a *drainage event* is a dry spell lasting more than
//! `drainage_min_days` days, counted once when it passes that length.
//! Season regime: 0 events continuously flooded (`SF_w = 1.00`), 1 event
//! single drainage (0.71), 2 or more multiple drainage (0.55).
//!
//! Per period and field: `RE = A x D x EF_c x SF_p x SF_o x SF_w,baseline x
//! GWP / 1000`, `PE` the same with the project `SF_w` reached so far in the
//! season, `ER = RE - PE`, in tCO2e; `D` is the period length in days
//! *observed* (gaps earn nothing). Until the project has shown a drainage
//! event its `SF_w` is 1.00, so no credit accrues (conservative).
//!
//! Parameters: `area_ha` (ha), `ef_c` (kgCH4/ha/day, 1.19), `sf_p`, `sf_o`,
//! `sf_w_baseline` (1.00), `sf_w_single` (0.71), `sf_w_multiple` (0.55),
//! `gwp_ch4` (28), `drainage_min_days` (3), `dry_threshold_mm` (e.g. -50).

use super::{CalcError, Outcome, Params, Ratio, param};
use serde::{Deserialize, Serialize};

/// Parameters this calculator needs: (name, unit).
pub const PARAMS: &[(&str, &str)] = &[
    ("area_ha", "ha"),
    ("ef_c", "kgCH4/ha/day"),
    ("sf_p", "1"),
    ("sf_o", "1"),
    ("sf_w_baseline", "1"),
    ("sf_w_single", "1"),
    ("sf_w_multiple", "1"),
    ("gwp_ch4", "tCO2e/tCH4"),
    ("drainage_min_days", "day"),
    ("dry_threshold_mm", "mm"),
];

/// Milliseconds per day.
pub const DAY_MS: u64 = 86_400_000;

/// Water-regime state of one tube, carried from report to report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwdState {
    /// Start of the current dry spell, if the tube is dry.
    pub dry_since_ms: Option<u64>,
    /// Whether the current dry spell was already counted as an event.
    pub counted: bool,
    /// Drainage events so far this season.
    pub drainage_events: u32,
}

/// Season water regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaterRegime {
    /// No drainage event.
    ContinuouslyFlooded,
    /// One drainage event.
    SingleDrainage,
    /// Two or more drainage events.
    MultipleDrainage,
}

impl WaterRegime {
    /// Regime for a number of drainage events.
    pub fn from_events(events: u32) -> WaterRegime {
        match events {
            0 => WaterRegime::ContinuouslyFlooded,
            1 => WaterRegime::SingleDrainage,
            _ => WaterRegime::MultipleDrainage,
        }
    }
}

/// Feeds time-ordered levels (ms, mm) into `state`.
pub fn advance(
    mut state: AwdState,
    levels: &[(u64, i64)],
    dry_threshold_mm: i64,
    min_dry_ms: u64,
) -> AwdState {
    for &(t, level) in levels {
        if level < dry_threshold_mm {
            let since = *state.dry_since_ms.get_or_insert(t);
            if !state.counted && t.saturating_sub(since) > min_dry_ms {
                state.counted = true;
                state.drainage_events = state.drainage_events.saturating_add(1);
            }
        } else {
            state.dry_since_ms = None;
            state.counted = false;
        }
    }
    state
}

/// The dry threshold (mm) and minimum dry spell (ms) from the parameters.
pub fn thresholds(params: &Params) -> Result<(i64, u64), CalcError> {
    let thr = param(params, "dry_threshold_mm")?;
    let days = param(params, "drainage_min_days")?;
    let thr = i64::try_from(thr.floor()).map_err(|_| CalcError::BadParam {
        name: "dry_threshold_mm",
        why: alloc::string::String::from("out of range"),
    })?;
    let ms = days.checked_mul(Ratio::int(i128::from(DAY_MS)))?.floor();
    let ms = u64::try_from(ms).map_err(|_| CalcError::BadParam {
        name: "drainage_min_days",
        why: alloc::string::String::from("must be >= 0"),
    })?;
    Ok((thr, ms))
}

/// The `area_ha` parameter.
pub fn param_area(params: &Params) -> Result<Ratio, CalcError> {
    param(params, "area_ha")
}

/// The project scaling factor for a regime.
pub fn sf_w(regime: WaterRegime, params: &Params) -> Result<Ratio, CalcError> {
    Ok(match regime {
        WaterRegime::ContinuouslyFlooded => param(params, "sf_w_baseline")?,
        WaterRegime::SingleDrainage => param(params, "sf_w_single")?,
        WaterRegime::MultipleDrainage => param(params, "sf_w_multiple")?,
    })
}

/// RE/PE/ER for a field of `area` ha observed for `days` under `regime`.
pub fn reduction(
    area: Ratio,
    days: Ratio,
    regime: WaterRegime,
    params: &Params,
) -> Result<Outcome, CalcError> {
    let base = area
        .checked_mul(days)?
        .checked_mul(param(params, "ef_c")?)?
        .checked_mul(param(params, "sf_p")?)?
        .checked_mul(param(params, "sf_o")?)?
        .checked_mul(param(params, "gwp_ch4")?)?
        .checked_div(Ratio::int(1000))?;
    let re = base.checked_mul(param(params, "sf_w_baseline")?)?;
    let pe = base.checked_mul(sf_w(regime, params)?)?;
    Outcome::new(re, pe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methodology::pv::tests::params;

    fn ipcc() -> Params {
        params(&[
            ("area_ha", "10"),
            ("ef_c", "1.19"),
            ("sf_p", "1"),
            ("sf_o", "1"),
            ("sf_w_baseline", "1.00"),
            ("sf_w_single", "0.71"),
            ("sf_w_multiple", "0.55"),
            ("gwp_ch4", "28"),
            ("drainage_min_days", "3"),
            ("dry_threshold_mm", "-50"),
        ])
    }

    #[test]
    fn a_dry_spell_counts_once_and_only_after_three_days() {
        let h = 3_600_000;
        let (thr, min) = thresholds(&ipcc()).expect("test vector is valid");
        assert_eq!((thr, min), (-50, 3 * DAY_MS));
        let mut levels = alloc::vec::Vec::new();
        // Flooded, then dry for 80 hours, wet, dry for 50 hours, dry again 100 hours.
        levels.push((0, 30));
        for i in 1..=80u64 {
            levels.push((i * h, -120));
        }
        levels.push((81 * h, 20));
        for i in 82..=132u64 {
            levels.push((i * h, -80));
        }
        levels.push((133 * h, 0));
        for i in 134..=234u64 {
            levels.push((i * h, -150));
        }
        let s = advance(AwdState::default(), &levels, thr, min);
        assert_eq!(s.drainage_events, 2);
        assert!(s.counted);
        assert_eq!(s.dry_since_ms, Some(134 * h));
        // Splitting the series across reports gives the same state.
        let mid = advance(AwdState::default(), &levels[..100], thr, min);
        assert_eq!(advance(mid, &levels[100..], thr, min), s);
    }

    #[test]
    fn worked_vector_ten_hectares_for_a_100_day_season_multiple_drainage() {
        // 10 ha x 100 d x 1.19 kg/ha/d x 28 / 1000 = 33.32 tCO2e at SF_w 1.
        // Multiple drainage: ER = 33.32 x (1.00 - 0.55) = 14.994 tCO2e.
        let out = reduction(
            Ratio::int(10),
            Ratio::int(100),
            WaterRegime::MultipleDrainage,
            &ipcc(),
        )
        .expect("test vector is valid");
        assert_eq!(
            out.re.to_decimal_floor(3).expect("test vector is valid"),
            "33.320"
        );
        assert_eq!(
            out.pe.to_decimal_floor(3).expect("test vector is valid"),
            "18.326"
        );
        assert_eq!(
            out.er.to_decimal_floor(3).expect("test vector is valid"),
            "14.994"
        );
        assert_eq!(out.er.floor(), 14);
        // Single drainage: 33.32 x 0.29 = 9.6628.
        let single = reduction(
            Ratio::int(10),
            Ratio::int(100),
            WaterRegime::SingleDrainage,
            &ipcc(),
        )
        .expect("test vector is valid");
        assert_eq!(
            single.er.to_decimal_floor(4).expect("test vector is valid"),
            "9.6628"
        );
        // Continuously flooded: nothing.
        let none = reduction(
            Ratio::int(10),
            Ratio::int(100),
            WaterRegime::ContinuouslyFlooded,
            &ipcc(),
        )
        .expect("test vector is valid");
        assert_eq!(none.er, Ratio::ZERO);
    }
}
