//! Solar PV (e.g. JCM TH_AM001, KH_AM002): `RE_p = EG_p x EF`, `PE_p = 0`.
//!
//! Parameters: `ef` (tCO2/MWh): the grid or diesel-generator emission factor
//! of the host country, from config, never hard-coded.
//!
//! `EG_p` is the credited electricity in Wh: counter deltas over fully
//! observed intervals only (a step across a gap or a reset earns nothing).

use super::{CalcError, Outcome, Params, Ratio, WH_PER_MWH, param};

/// Parameters this calculator needs: (name, unit).
pub const PARAMS: &[(&str, &str)] = &[("ef", "tCO2/MWh")];

/// `ER = EG x EF` for `eg_wh` credited watt-hours.
pub fn reduction(eg_wh: i128, params: &Params) -> Result<Outcome, CalcError> {
    let ef = param(params, "ef")?;
    let re = Ratio::new(eg_wh, WH_PER_MWH)?.checked_mul(ef)?;
    Outcome::new(re, Ratio::ZERO)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::methodology::Param;
    use alloc::string::String;
    use alloc::string::ToString;

    pub(crate) fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    String::from(*k),
                    Param {
                        value: String::from(*v),
                        unit: String::new(),
                        source: String::from("test"),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn one_and_a_quarter_mwh_at_half_a_tonne_is_0_617_t() {
        // Worked vector: EG = 1 234 567 Wh = 1.234567 MWh, EF = 0.5000 tCO2/MWh
        // ER = 0.6172835 tCO2e exactly = 1234567/2000000.
        let out = reduction(1_234_567, &params(&[("ef", "0.5000")])).expect("test vector is valid");
        assert_eq!(out.re.to_string(), "1234567/2000000");
        assert_eq!(out.pe, Ratio::ZERO);
        assert_eq!(
            out.er.to_decimal_floor(6).expect("test vector is valid"),
            "0.617283"
        );
        assert_eq!(out.er.floor(), 0);
    }

    #[test]
    fn a_month_of_a_1_mw_plant_floors_to_whole_tonnes() {
        // 1 MW x 5 h/day x 30 days = 150 MWh; Thai grid EF 0.5113 -> 76.695 t.
        let out =
            reduction(150_000_000, &params(&[("ef", "0.5113")])).expect("test vector is valid");
        assert_eq!(
            out.er.to_decimal_floor(3).expect("test vector is valid"),
            "76.695"
        );
        assert_eq!(out.er.floor(), 76);
    }

    #[test]
    fn missing_ef_is_an_error() {
        assert_eq!(
            reduction(1, &Params::new()),
            Err(CalcError::MissingParam("ef"))
        );
    }
}
