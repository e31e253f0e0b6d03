//! `[report]` section of the gateway config: monitoring period, methodology
//! and its parameters, the gateway signing key, and per-device settings
//! that reports need beyond the device registry.
//!
//! ```toml
//! [report]
//! period_minutes = 60            # divides 24 h; periods align to UTC
//! grace_seconds = 120            # wait after period end for in-flight frames
//! methodology = "solar_pv"       # solar_pv | solar_pump | biogas_digester | rice_awd
//! key_file = "keys/gateway.key"  # relative to data_dir; private JWK, mode 0600
//! clock_source = "ntp"
//!
//! [report.parameters.ef]
//! value = "0.5113"
//! unit = "tCO2/MWh"
//! source = "Thailand grid EF, TGO 2023"
//!
//! [report.devices.pv-meter-1]
//! sample_interval_ms = 1000
//! counter_modulus = 4294967296
//! ```

use mrv_shared::methodology::{MethodologyKind, Param, Params, check_params};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[report]` as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSection {
    /// Monitoring period length in minutes; must divide 1440 (one day) so
    /// periods align to UTC boundaries. Default 60.
    pub period_minutes: u32,
    /// Seconds to wait after a period ends before closing it, so frames in
    /// flight still make it into their period. Default 120.
    pub grace_seconds: u32,
    /// The calculator. Default `solar_pv`.
    pub methodology: MethodologyKind,
    /// Methodology parameters by name, each `{value, unit, source}`; the
    /// names a methodology needs are listed in `mrv_shared::methodology`.
    pub parameters: BTreeMap<String, Param>,
    /// Gateway private key (JWK written by `mrv-gateway keygen`), relative
    /// to `data_dir` unless absolute. Default `keys/gateway.key`.
    pub key_file: PathBuf,
    /// Where the gateway clock is synchronised from (`ntp`, `gps`, `rtc`).
    pub clock_source: String,
    /// Per-device settings by device id.
    pub devices: BTreeMap<String, DeviceReportSettings>,
}

/// `[report.devices.<id>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceReportSettings {
    /// Nominal interval between samples of each channel, ms (gap detection
    /// and expected counts). Without it, no gaps are reported for the device.
    pub sample_interval_ms: Option<u64>,
    /// Counter rollover modulus (e.g. 4294967296 for a 32-bit register).
    pub counter_modulus: Option<u64>,
}

impl Default for ReportSection {
    fn default() -> Self {
        ReportSection {
            period_minutes: 60,
            grace_seconds: 120,
            methodology: MethodologyKind::SolarPv,
            parameters: BTreeMap::new(),
            key_file: PathBuf::from("keys/gateway.key"),
            clock_source: String::from("ntp"),
            devices: BTreeMap::new(),
        }
    }
}

/// Why a `[report]` section is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ReportConfigError {
    /// Period does not divide a day.
    #[error("report.period_minutes = {0}: must be 1..=1440 and divide 1440")]
    Period(u32),
    /// Parameters missing or malformed.
    #[error("report.parameters: {0}")]
    Params(#[from] mrv_shared::methodology::CalcError),
}

impl ReportSection {
    /// Period length, ms.
    pub fn period_ms(&self) -> u64 {
        u64::from(self.period_minutes) * 60_000
    }

    /// Grace, ms.
    pub fn grace_ms(&self) -> u64 {
        u64::from(self.grace_seconds) * 1000
    }

    /// Checks the section: period divides a day, every parameter the
    /// methodology needs is present and an exact decimal.
    pub fn validate(&self) -> Result<(), ReportConfigError> {
        if self.period_minutes == 0 || self.period_minutes > 1440 || 1440 % self.period_minutes != 0
        {
            return Err(ReportConfigError::Period(self.period_minutes));
        }
        check_params(self.methodology, &self.parameters)?;
        Ok(())
    }

    /// Parameters, as carried into reports.
    pub fn params(&self) -> &Params {
        &self.parameters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_section_and_rejects_unknown_keys() {
        let s: ReportSection = toml::from_str(
            r#"
period_minutes = 15
methodology = "biogas_digester"
[parameters.gwp_ch4]
value = "28"
unit = "tCO2e/tCH4"
source = "IPCC AR5"
[parameters.rho_ch4]
value = "0.716"
unit = "kg/Nm3"
source = "0 degC, 1 atm"
[parameters.destruction_efficiency]
value = "0.90"
unit = "1"
source = "enclosed flare default"
[devices.skid-1]
sample_interval_ms = 60000
"#,
        )
        .expect("parses");
        assert_eq!(s.period_ms(), 900_000);
        assert_eq!(s.devices["skid-1"].sample_interval_ms, Some(60_000));
        s.validate().expect("valid");
        assert!(toml::from_str::<ReportSection>("perod_minutes = 5").is_err());
    }

    #[test]
    fn a_period_that_does_not_divide_a_day_or_missing_parameters_are_refused() {
        let s = ReportSection {
            period_minutes: 7,
            ..ReportSection::default()
        };
        assert!(matches!(s.validate(), Err(ReportConfigError::Period(7))));
        let s = ReportSection::default();
        assert!(matches!(s.validate(), Err(ReportConfigError::Params(_))));
    }
}
