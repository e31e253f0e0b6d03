//! Solar PV (e.g. JCM TH_AM001, KH_AM002): `RE_p = EG_p x EF`,
//! `PE_p = EC_p x EF`, `ER_p = RE_p - PE_p`.
//!
//! Parameters: `ef` (tCO2/MWh): the grid or diesel-generator emission factor
//! of the host country, from config, never hard-coded.
//!
//! `EG_p` is the credited electricity in Wh of the `generation` and `export`
//! bindings: counter deltas over fully observed intervals only (a step
//! across a gap or a reset earns nothing). `EC_p` is the electricity of the
//! `import` and `consumption` bindings (the plant drawing from the grid, its
//! auxiliaries), counted conservatively the other way: every measured
//! increase, including steps across gaps (see `report::calc`). Without such
//! bindings `EC_p = 0`, as in the JCM PV methodologies.

use super::{CalcError, Outcome, Params, Ratio, WH_PER_MWH, param};

/// Parameters this calculator needs: (name, unit).
pub const PARAMS: &[(&str, &str)] = &[("ef", "tCO2/MWh")];

/// `RE = EG x EF`, `PE = EC x EF` for `eg_wh` credited and `ec_wh`
/// subtracted watt-hours.
pub fn reduction(eg_wh: i128, ec_wh: i128, params: &Params) -> Result<Outcome, CalcError> {
    let ef = param(params, "ef")?;
    let re = Ratio::new(eg_wh, WH_PER_MWH)?.checked_mul(ef)?;
    let pe = Ratio::new(ec_wh, WH_PER_MWH)?.checked_mul(ef)?;
    Outcome::new(re, pe)
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
        let out =
            reduction(1_234_567, 0, &params(&[("ef", "0.5000")])).expect("test vector is valid");
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
            reduction(150_000_000, 0, &params(&[("ef", "0.5113")])).expect("test vector is valid");
        assert_eq!(
            out.er.to_decimal_floor(3).expect("test vector is valid"),
            "76.695"
        );
        assert_eq!(out.er.floor(), 76);
    }

    #[test]
    fn grid_import_is_subtracted_at_the_same_factor() {
        // 2 MWh generated, 0.25 MWh imported, EF 0.5: RE 1, PE 1/8, ER 7/8.
        let out = reduction(2_000_000, 250_000, &params(&[("ef", "0.5")])).expect("valid");
        assert_eq!(out.re.to_string(), "1");
        assert_eq!(out.pe.to_string(), "1/8");
        assert_eq!(out.er.to_string(), "7/8");
    }

    #[test]
    fn missing_ef_is_an_error() {
        assert_eq!(
            reduction(1, 0, &Params::new()),
            Err(CalcError::MissingParam("ef"))
        );
    }
}
