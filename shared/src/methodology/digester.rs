//! Biogas digester with flare or engine (VN_AM004, CDM Tool 08 style).
//!
//! Per measured interval: the gas volume at actual conditions `V` (mL) is
//! normalised to 0 degC and 1 atm with the temperature `T` and absolute
//! pressure `P` measured for that interval,
//! `Vn = floor(V x P / 101325 x 27315 / (T + 27315))` (T in 0.01 degC),
//! then its methane `floor(Vn x w_CH4 / 10000)` (w in 0.01 vol%). Both
//! floors are per interval and toward less credit.
//!
//! `CH4 destroyed (t) = sum(CH4 mL) x rho_CH4 / 1e9 x DE`,
//! `RE_p = CH4 destroyed x GWP_CH4`, `PE_p = 0` (electricity for blowers is
//! out of scope and must be added by the backend if the methodology asks).
//!
//! Conservative pairing ([`methane_ml`]): an interval whose CH4 fraction,
//! temperature or pressure has no usable sample at or before its end within
//! `max_age_ms`, earns nothing; with a flame sensor, an interval whose latest
//! flame status is not 1 earns nothing (no flame, no destruction).
//!
//! Parameters: `gwp_ch4` (tCO2e/tCH4, AR5: 28), `rho_ch4` (kg/Nm3, 0.716 at
//! 0 degC, 1 atm), `destruction_efficiency` (fraction, enclosed flare 0.90).

use super::{CalcError, Outcome, Params, Ratio, param};

/// Parameters this calculator needs: (name, unit).
pub const PARAMS: &[(&str, &str)] = &[
    ("gwp_ch4", "tCO2e/tCH4"),
    ("rho_ch4", "kg/Nm3"),
    ("destruction_efficiency", "1"),
];

/// Standard pressure, Pa.
pub const P_NORMAL_PA: i128 = 101_325;
/// 0 degC in 0.01 K.
pub const T_ZERO_CENTI_K: i128 = 27_315;

/// `V` (mL at `temp_centi_c`, `pressure_pa`) as mL at 0 degC, 1 atm, rounded
/// down; `None` for physically impossible conditions.
pub fn normalise_ml(volume_ml: i64, temp_centi_c: i64, pressure_pa: i64) -> Option<i64> {
    let t_k = T_ZERO_CENTI_K + i128::from(temp_centi_c);
    if t_k <= 0 || pressure_pa <= 0 || volume_ml < 0 {
        return None;
    }
    let num = i128::from(volume_ml) * i128::from(pressure_pa) * T_ZERO_CENTI_K;
    i64::try_from(num / (P_NORMAL_PA * t_k)).ok()
}

/// Methane in `vn_ml` normal mL of biogas at `fraction` (0.01 vol%), rounded down.
pub fn ch4_of(vn_ml: i64, fraction: i64) -> i64 {
    let f = fraction.clamp(0, 10_000);
    i64::try_from(i128::from(vn_ml) * i128::from(f) / 10_000).unwrap_or(i64::MAX)
}

/// A time series of (time ms, value), sorted by time.
pub type Points<'a> = &'a [(u64, i64)];

/// What the pairing of a period's intervals produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethaneTotals {
    /// Gas at actual conditions over all intervals, mL.
    pub volume_ml: i64,
    /// Gas of credited intervals, normalised, mL.
    pub normal_ml: i64,
    /// Methane of credited intervals, normal mL.
    pub ch4_ml: i64,
    /// Gas (actual mL) of intervals missing CH4, T or P data: no credit.
    pub unpaired_ml: i64,
    /// Gas (actual mL) of intervals without flame: no credit.
    pub unflared_ml: i64,
}

fn latest(points: Points<'_>, t: u64, max_age_ms: u64) -> Option<i64> {
    let i = points.partition_point(|(pt, _)| *pt <= t);
    let (pt, v) = *points.get(i.checked_sub(1)?)?;
    (t - pt <= max_age_ms).then_some(v)
}

/// Pairs each gas interval `(end ms, mL)` with the latest CH4 fraction,
/// temperature, pressure (and flame status, if a flame sensor exists) at or
/// before its end, no older than `max_age_ms`; sums the credited methane.
pub fn methane_ml(
    gas: Points<'_>,
    ch4: Points<'_>,
    temp: Points<'_>,
    pressure: Points<'_>,
    flame: Option<Points<'_>>,
    max_age_ms: u64,
) -> MethaneTotals {
    let mut out = MethaneTotals::default();
    for &(t, v) in gas {
        out.volume_ml = out.volume_ml.saturating_add(v);
        let paired = (
            latest(ch4, t, max_age_ms),
            latest(temp, t, max_age_ms),
            latest(pressure, t, max_age_ms),
        );
        let (Some(w), Some(tc), Some(p)) = paired else {
            out.unpaired_ml = out.unpaired_ml.saturating_add(v);
            continue;
        };
        if let Some(flame) = flame
            && latest(flame, t, max_age_ms) != Some(1)
        {
            out.unflared_ml = out.unflared_ml.saturating_add(v);
            continue;
        }
        let Some(vn) = normalise_ml(v, tc, p) else {
            out.unpaired_ml = out.unpaired_ml.saturating_add(v);
            continue;
        };
        out.normal_ml = out.normal_ml.saturating_add(vn);
        out.ch4_ml = out.ch4_ml.saturating_add(ch4_of(vn, w));
    }
    out
}

/// RE/PE/ER for `ch4_ml` normal mL of methane captured and sent to the
/// destruction device.
pub fn reduction(ch4_ml: i128, params: &Params) -> Result<Outcome, CalcError> {
    let gwp = param(params, "gwp_ch4")?;
    let rho = param(params, "rho_ch4")?;
    let de = param(params, "destruction_efficiency")?;
    if de < Ratio::ZERO || de > Ratio::ONE {
        return Err(CalcError::BadParam {
            name: "destruction_efficiency",
            why: alloc::string::String::from("must be between 0 and 1"),
        });
    }
    // mL -> m3 is 1e-6, kg -> t is 1e-3.
    let ch4_t = Ratio::new(ch4_ml, 1_000_000_000)?.checked_mul(rho)?;
    let re = ch4_t.checked_mul(de)?.checked_mul(gwp)?;
    Outcome::new(re, Ratio::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methodology::pv::tests::params;

    #[test]
    fn one_cubic_metre_at_25_c_and_1_atm_normalises_to_0_916_nm3() {
        // 1e6 mL x 27315/29815 = 916 149.58... -> 916 149 mL (floor).
        assert_eq!(normalise_ml(1_000_000, 2500, 101_325), Some(916_149));
        // At 0 degC and 1 atm nothing changes; at 2 atm it doubles.
        assert_eq!(normalise_ml(1_000_000, 0, 101_325), Some(1_000_000));
        assert_eq!(normalise_ml(1_000_000, 0, 202_650), Some(2_000_000));
        assert_eq!(normalise_ml(1, -27_315, 101_325), None);
        assert_eq!(ch4_of(916_149, 6000), 549_689);
    }

    #[test]
    fn worked_vector_ten_m3_of_60_percent_biogas_through_an_enclosed_flare() {
        // 10 intervals of 1 m3 each at 25 degC, 101325 Pa, 60.00 % CH4, flame on.
        let gas: alloc::vec::Vec<(u64, i64)> = (1..=10).map(|i| (i * 60_000, 1_000_000)).collect();
        let ch4 = [(0, 6000)];
        let temp = [(0, 2500)];
        let p = [(0, 101_325)];
        let flame = [(0, 1)];
        let tot = methane_ml(&gas, &ch4, &temp, &p, Some(&flame), u64::MAX);
        assert_eq!(tot.volume_ml, 10_000_000);
        assert_eq!(tot.normal_ml, 9_161_490);
        assert_eq!(tot.ch4_ml, 5_496_890);
        // CH4 = 5.49689 Nm3 x 0.716 kg/Nm3 = 3.93577324 kg; x 0.9 x 28 = 0.0991814856... t
        let out = reduction(
            i128::from(tot.ch4_ml),
            &params(&[
                ("gwp_ch4", "28"),
                ("rho_ch4", "0.716"),
                ("destruction_efficiency", "0.90"),
            ]),
        )
        .expect("test vector is valid");
        assert_eq!(
            out.er.to_decimal_floor(10).expect("test vector is valid"),
            "0.0991814856"
        );
        assert_eq!(out.er.floor(), 0);
    }

    #[test]
    fn intervals_without_conditions_or_flame_earn_nothing() {
        let gas = [(1_000, 500), (2_000, 700), (3_000, 900)];
        let ch4 = [(1_500, 5000)];
        let temp = [(0, 0)];
        let p = [(0, 101_325)];
        let flame = [(0, 1), (2_500, 0)];
        let tot = methane_ml(&gas, &ch4, &temp, &p, Some(&flame), 10_000);
        assert_eq!(tot.unpaired_ml, 500); // no CH4 sample before t=1000
        assert_eq!(tot.unflared_ml, 900); // flame off at 2500
        assert_eq!(tot.ch4_ml, 350);
        // Too-old conditions do not pair either.
        let tot = methane_ml(&gas, &ch4, &temp, &p, None, 100);
        assert_eq!(tot.ch4_ml, 0);
    }
}
