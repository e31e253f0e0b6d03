//! Methodology calculators: pure functions from measured quantities and
//! parameters to reference emissions (RE_p), project emissions (PE_p) and
//! emission reductions (ER_p = RE_p - PE_p), all in tCO2e as exact
//! [`Ratio`]s.
//!
//! - [`role`]: the inputs (roles) each calculator takes, bound by config to
//!   a device's channel.
//! - [`pv`]: solar PV, `RE = EG x EF`, `PE = EC x EF` (grid import and
//!   auxiliary consumption).
//! - [`pump`]: solar irrigation pump, displaced grid or diesel electricity.
//! - [`digester`]: biogas digester, CH4 from flow x CH4 fraction x density
//!   (normalised to 0 degC, 1 atm) x destruction efficiency x GWP.
//! - [`awd`]: rice under alternate wetting and drying, IPCC 2019 factors.
//!
//! Invariants: no floating point anywhere; every parameter is a named
//! [`Param`] with an exact decimal value, a unit and a source, carried into
//! every report; every rounding is toward less credit (documented at the
//! function doing it). Parameter names per methodology are listed in each
//! module and checked by [`MethodologyKind::required_params`].

pub mod awd;
pub mod digester;
pub mod pump;
pub mod pv;
pub mod ratio;
pub mod role;

pub use ratio::{Ratio, RatioError};
pub use role::{EnergyFlow, Role, Side};

use alloc::collections::BTreeMap;
use alloc::string::String;
use serde::{Deserialize, Serialize};

/// One methodology parameter: an exact decimal with its unit and source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Exact decimal, e.g. `"0.5000"` (no exponent; see [`Ratio::parse_decimal`]).
    pub value: String,
    /// Unit, e.g. `"tCO2/MWh"`.
    pub unit: String,
    /// Where the value comes from (publication, table, date).
    pub source: String,
}

/// Named parameters of a calculation.
pub type Params = BTreeMap<String, Param>;

/// Which calculator a site uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodologyKind {
    /// Solar PV: [`pv`].
    SolarPv,
    /// Solar irrigation pump: [`pump`].
    SolarPump,
    /// Biogas digester with flare or engine: [`digester`].
    BiogasDigester,
    /// Rice paddies under AWD: [`awd`].
    RiceAwd,
}

impl MethodologyKind {
    /// Parameter names (and units) this calculator needs.
    pub fn required_params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            MethodologyKind::SolarPv => pv::PARAMS,
            MethodologyKind::SolarPump => pump::PARAMS,
            MethodologyKind::BiogasDigester => digester::PARAMS,
            MethodologyKind::RiceAwd => awd::PARAMS,
        }
    }

    /// Stable name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            MethodologyKind::SolarPv => "solar_pv",
            MethodologyKind::SolarPump => "solar_pump",
            MethodologyKind::BiogasDigester => "biogas_digester",
            MethodologyKind::RiceAwd => "rice_awd",
        }
    }
}

/// Why a calculation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// A required parameter is missing.
    #[error("parameter {0} is missing")]
    MissingParam(&'static str),
    /// A parameter value is not an exact decimal, or out of its range.
    #[error("parameter {name}: {why}")]
    BadParam {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Exact arithmetic failed.
    #[error(transparent)]
    Ratio(#[from] RatioError),
    /// The bindings do not fit the methodology or the report's devices.
    #[error("bindings: {0}")]
    Binding(String),
    /// A calibration date is not a real `YYYY-MM-DD` date.
    #[error("device {device}: calibration.{field} = {value:?} is not a valid date YYYY-MM-DD")]
    BadDate {
        /// Device.
        device: String,
        /// `calibrated_on` or `due_on`.
        field: &'static str,
        /// The text.
        value: String,
    },
}

/// Reads parameter `name` as an exact number.
pub fn param(params: &Params, name: &'static str) -> Result<Ratio, CalcError> {
    let p = params.get(name).ok_or(CalcError::MissingParam(name))?;
    Ratio::parse_decimal(&p.value).map_err(|e| CalcError::BadParam {
        name,
        why: alloc::string::ToString::to_string(&e),
    })
}

/// Checks that every parameter `kind` needs is present and parses.
pub fn check_params(kind: MethodologyKind, params: &Params) -> Result<(), CalcError> {
    for (name, _unit) in kind.required_params() {
        param(params, name)?;
    }
    Ok(())
}

/// Reference, project and net emissions of one period, tCO2e.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Reference (baseline) emissions RE_p.
    pub re: Ratio,
    /// Project emissions PE_p.
    pub pe: Ratio,
    /// Emission reductions ER_p = RE_p - PE_p.
    pub er: Ratio,
}

impl Outcome {
    /// An outcome from RE and PE.
    pub fn new(re: Ratio, pe: Ratio) -> Result<Outcome, CalcError> {
        Ok(Outcome {
            re,
            pe,
            er: re.checked_sub(pe)?,
        })
    }
}

/// Wh per MWh.
pub(crate) const WH_PER_MWH: i128 = 1_000_000;
