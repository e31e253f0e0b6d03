//! Solar irrigation pump (AMS-I.B style): the electricity delivered to the
//! pump displaces grid or diesel-generator electricity:
//! `RE_p = E_p x EF_displaced`, `PE_p = E_grid,p x EF_displaced` (the
//! electricity the pump drew from the grid, if a `grid_import` binding
//! measures it; else 0).
//!
//! Parameters: `ef_displaced` (tCO2/MWh): the grid factor for grid-connected
//! pumps, or the diesel-generator factor (e.g. 0.8 tCO2/MWh, AMS-I.F default
//! for small gensets) when the pump replaces a diesel pump set. `E_p` is the
//! credited pump energy in Wh (same conservative rules as [`super::pv`]).

use super::{CalcError, Outcome, Params, Ratio, WH_PER_MWH, param};

/// Parameters this calculator needs: (name, unit).
pub const PARAMS: &[(&str, &str)] = &[("ef_displaced", "tCO2/MWh")];

/// `RE = E x EF_displaced` for `energy_wh` credited watt-hours at the
/// pump, `PE = E_grid x EF_displaced` for `grid_wh` drawn from the grid.
pub fn reduction(energy_wh: i128, grid_wh: i128, params: &Params) -> Result<Outcome, CalcError> {
    let ef = param(params, "ef_displaced")?;
    let re = Ratio::new(energy_wh, WH_PER_MWH)?.checked_mul(ef)?;
    let pe = Ratio::new(grid_wh, WH_PER_MWH)?.checked_mul(ef)?;
    Outcome::new(re, pe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methodology::pv::tests::params;
    use alloc::string::ToString;

    #[test]
    fn a_season_of_pumping_displacing_diesel() {
        // 7.5 kW pump x 6 h x 120 days = 5 400 kWh; diesel EF 0.8 -> 4.32 t.
        let out = reduction(5_400_000, 0, &params(&[("ef_displaced", "0.8")]))
            .expect("test vector is valid");
        assert_eq!(out.er.to_string(), "108/25");
        assert_eq!(
            out.er.to_decimal_floor(2).expect("test vector is valid"),
            "4.32"
        );
        assert_eq!(out.er.floor(), 4);
    }
}
