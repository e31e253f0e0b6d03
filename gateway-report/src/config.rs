//! `[report]` section of the gateway config: monitoring period, the
//! calculations the site runs (each a methodology with its parameters and
//! explicit input bindings), the gateway signing key, and per-device
//! settings that reports need beyond the device registry.
//!
//! ```toml
//! [report]
//! period_minutes = 60            # divides 24 h; periods align to UTC
//! grace_seconds = 120            # wait after period end for in-flight frames
//! key_file = "keys/gateway.key"  # relative to data_dir; private JWK, mode 0600
//! clock_source = "ntp"
//! clock_step_confirm_seconds = 600  # a wall-clock step moves report time once it persists this long
//!
//! [report.calculations.pv]       # one table per calculation; the key is its id
//! methodology = "solar_pv"       # solar_pv | solar_pump | biogas_digester | rice_awd
//! inputs = [
//!   { role = "generation", device = "inverter-1", channel = "inverter_ac_energy" },
//!   { role = "import", device = "grid-meter", channel = "energy_import" },
//! ]
//! [report.calculations.pv.parameters.ef]
//! value = "0.5113"
//! unit = "tCO2/MWh"
//! source = "Thailand grid EF, TGO 2023"
//!
//! [report.devices.pv-meter-1]
//! sample_interval_ms = 1000
//! counter_modulus = 4294967296
//! ```
//!
//! Which series feeds which input is never guessed from quantities: every
//! input is bound to a (device, channel) with a role (see
//! `mrv_shared::methodology::role`). [`ReportSection::validate_against`]
//! refuses, before anything runs: an unknown device; a channel the config
//! does not declare (a Modbus register or SunSpec point, or a
//! `[[devices]].channels` entry); a channel of the wrong quantity or kind
//! for its role; an energy channel whose declared direction the role does
//! not take (a pump's consumption or a grid import bound as PV generation);
//! and a methodology whose required roles are unbound.

use mrv_gateway_ingest::config::{ChannelFacts, ConfigError};
use mrv_shared::ids::{ChannelId, DeviceId};
use mrv_shared::methodology::{MethodologyKind, Param, Params, Role, check_params};
use mrv_shared::report::calc::check_bindings;
use mrv_shared::report::model::{Binding, DeviceRecord};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The calculations, by id (1-32 of `A-Za-z0-9_.-`). A site may run
    /// several (one per methodology or per part of the plant); none is
    /// allowed (reports then carry readings only).
    pub calculations: BTreeMap<String, CalculationSection>,
    /// Gateway private key (JWK written by `mrv-gateway keygen`), relative
    /// to `data_dir` unless absolute. Default `keys/gateway.key`.
    pub key_file: PathBuf,
    /// Where the gateway clock is synchronised from (`ntp`, `gps`, `rtc`).
    /// Reports say `unsynced` instead while the clock daemon says the
    /// clock is not synchronised (see `time_sync`).
    pub clock_source: String,
    /// Which clock daemon's state goes into the report header's clock
    /// (`last_sync_ms`, `unsynced`): `auto` (chrony, else
    /// systemd-timesyncd), `chrony`, `timesyncd`, `off`. Default `auto`.
    pub time_sync: crate::time_sync::TimeSyncMode,
    /// chronyd's command socket for `chronyc -h` (default: chronyc's own,
    /// `/run/chrony/chronyd.sock`, then 127.0.0.1).
    pub chrony_socket: Option<PathBuf>,
    /// Seconds the wall clock must keep a step (more than 2 s unlike
    /// elapsed time) before the gateway's report time follows it; until
    /// then frames, events and period closes run on elapsed time, so a step
    /// taken back sooner misfiles nothing (`clock_watch`, REPORT-FORMAT
    /// §4.2.2). 0: follow every step at once. At most 86400. Default 600.
    pub clock_step_confirm_seconds: u32,
    /// Per-device settings by device id.
    pub devices: BTreeMap<String, DeviceReportSettings>,
}

/// `[report.calculations.<id>]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalculationSection {
    /// The calculator.
    pub methodology: MethodologyKind,
    /// Which series feed which input.
    pub inputs: Vec<InputBinding>,
    /// Parameters by name, each `{value, unit, source}`; the names a
    /// methodology needs are listed in `mrv_shared::methodology`.
    #[serde(default)]
    pub parameters: BTreeMap<String, Param>,
}

/// One entry of `inputs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputBinding {
    /// What the series is to the methodology (`generation`, `import`,
    /// `pump_energy`, `gas_volume`, `ch4_fraction`, `water_level`, ...).
    pub role: Role,
    /// Device id.
    pub device: String,
    /// Channel of the device.
    pub channel: String,
    /// Pairing group (biogas: the series of one digester share a group).
    #[serde(default)]
    pub group: String,
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
            calculations: BTreeMap::new(),
            key_file: PathBuf::from("keys/gateway.key"),
            clock_source: String::from("ntp"),
            time_sync: crate::time_sync::TimeSyncMode::Auto,
            chrony_socket: None,
            clock_step_confirm_seconds: crate::clock_watch::DEFAULT_STEP_CONFIRM_SECONDS,
            devices: BTreeMap::new(),
        }
    }
}

/// One validated calculation, as the report builder runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalculationConfig {
    /// Id.
    pub id: String,
    /// Calculator.
    pub methodology: MethodologyKind,
    /// Bindings, sorted as reports carry them.
    pub bindings: Vec<Binding>,
    /// Parameters.
    pub params: Params,
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

    /// Checks the section on its own (period, calculation ids, parameters)
    /// and against the site's devices and their declared channels
    /// (`facts`, by device id), returning the calculations as the builder
    /// runs them. Errors name the key (`report.calculations.pv.inputs[1]`).
    pub fn validate_against(
        &self,
        file: &Path,
        devices: &[DeviceRecord],
        facts: &BTreeMap<DeviceId, ChannelFacts>,
    ) -> Result<Vec<CalculationConfig>, ConfigError> {
        if self.period_minutes == 0 || self.period_minutes > 1440 || 1440 % self.period_minutes != 0
        {
            return Err(ConfigError::new(
                file,
                "report.period_minutes",
                format!(
                    "{} does not divide a day: use a divisor of 1440 (e.g. 15, 60)",
                    self.period_minutes
                ),
            ));
        }
        if self.clock_step_confirm_seconds > 86_400 {
            return Err(ConfigError::new(
                file,
                "report.clock_step_confirm_seconds",
                format!(
                    "{} is more than a day: a step the wall clock keeps that long is real (0 follows every step at once)",
                    self.clock_step_confirm_seconds
                ),
            ));
        }
        for id in self.devices.keys() {
            if !devices.iter().any(|d| d.id.as_str() == id) {
                return Err(ConfigError::new(
                    file,
                    format!("report.devices.{id}"),
                    "no such device in [[devices]] or [[modbus.devices]]",
                ));
            }
        }
        let mut out = Vec::new();
        for (id, calc) in &self.calculations {
            let at = format!("report.calculations.{id}");
            if let Err(e) = mrv_shared::ids::validate_id(id) {
                return Err(ConfigError::new(file, &at, format!("calculation id: {e}")));
            }
            check_params(calc.methodology, &calc.parameters).map_err(|e| {
                ConfigError::new(
                    file,
                    format!("{at}.parameters"),
                    format!(
                        "{e} ({} needs: {})",
                        calc.methodology.name(),
                        calc.methodology
                            .required_params()
                            .iter()
                            .map(|(n, u)| format!("{n} [{u}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            let mut bindings = Vec::new();
            for (i, b) in calc.inputs.iter().enumerate() {
                let key = format!("{at}.inputs[{i}]");
                let binding = check_input(file, &key, calc.methodology, b, devices, facts)?;
                bindings.push(binding);
            }
            bindings.sort();
            check_bindings(calc.methodology, &bindings, devices)
                .map_err(|e| ConfigError::new(file, format!("{at}.inputs"), e.to_string()))?;
            out.push(CalculationConfig {
                id: id.clone(),
                methodology: calc.methodology,
                bindings,
                params: calc.parameters.clone(),
            });
        }
        Ok(out)
    }
}

fn check_input(
    file: &Path,
    key: &str,
    methodology: MethodologyKind,
    b: &InputBinding,
    devices: &[DeviceRecord],
    facts: &BTreeMap<DeviceId, ChannelFacts>,
) -> Result<Binding, ConfigError> {
    let err = |k: &str, msg: String| ConfigError::new(file, format!("{key}.{k}"), msg);
    if methodology.role(b.role).is_none() {
        let roles: Vec<&str> = methodology.roles().iter().map(|r| r.role.name()).collect();
        return Err(err(
            "role",
            format!(
                "{} is not an input of {} (its roles: {})",
                b.role.name(),
                methodology.name(),
                roles.join(", ")
            ),
        ));
    }
    let device = DeviceId::new(&b.device).map_err(|e| err("device", e.to_string()))?;
    if !devices.iter().any(|d| d.id == device) {
        return Err(err(
            "device",
            format!("no device {device} in [[devices]] or [[modbus.devices]]"),
        ));
    }
    let channel = ChannelId::new(&b.channel).map_err(|e| err("channel", e.to_string()))?;
    let known = facts.get(&device).and_then(|f| f.get(&channel));
    let Some(fact) = known else {
        let listed: Vec<String> = facts
            .get(&device)
            .map(|f| f.names().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        let hint = if listed.is_empty() {
            format!(
                "declare it under the device: channels = [{{ id = \"{channel}\", quantity = \"{}\", kind = \"...\"{} }}]",
                b.role.quantity().name(),
                if b.role.quantity() == mrv_shared::quantity::Quantity::Energy {
                    ", flow = \"...\""
                } else {
                    ""
                }
            )
        } else {
            format!("its channels: {}", listed.join(", "))
        };
        return Err(err(
            "channel",
            format!("device {device} has no declared channel {channel}; {hint}"),
        ));
    };
    if fact.quantity != b.role.quantity() {
        return Err(err(
            "channel",
            format!(
                "{device}/{channel} measures {}, but role {} needs {}",
                fact.quantity.name(),
                b.role.name(),
                b.role.quantity().name()
            ),
        ));
    }
    if let Some(kind) = fact.kind
        && !b.role.kinds().contains(&kind)
    {
        return Err(err(
            "channel",
            format!(
                "{device}/{channel} is a {} series, but role {} takes {}",
                value_kind_name(kind),
                b.role.name(),
                b.role
                    .kinds()
                    .iter()
                    .map(|k| value_kind_name(*k))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    if b.role.quantity() == mrv_shared::quantity::Quantity::Energy {
        let accepted: Vec<&str> = b.role.accepted_flows().iter().map(|f| f.name()).collect();
        match fact.flow {
            None => {
                return Err(err(
                    "channel",
                    format!(
                        "{device}/{channel} has no declared energy direction: say flow = \"...\" in its channel declaration ({} takes {})",
                        b.role.name(),
                        accepted.join(" or ")
                    ),
                ));
            }
            Some(flow) if !b.role.accepts_flow(flow) => {
                return Err(err(
                    "role",
                    format!(
                        "{device}/{channel} measures {} energy, which cannot be bound as {} (that role takes {})",
                        flow.name(),
                        b.role.name(),
                        accepted.join(" or ")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Binding {
        role: b.role,
        device,
        channel,
        quantity: b.role.quantity(),
        group: b.group.clone(),
    })
}

fn value_kind_name(k: mrv_shared::quantity::ValueKind) -> &'static str {
    match k {
        mrv_shared::quantity::ValueKind::Instant => "instant",
        mrv_shared::quantity::ValueKind::Counter => "counter",
        mrv_shared::quantity::ValueKind::Delta => "delta",
    }
}
