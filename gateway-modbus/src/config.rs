//! `[modbus]`: the config section as written ([`ModbusSection`]), profile
//! files ([`ProfileFile`]), and their validation into [`ValidModbusConfig`].
//!
//! ```toml
//! [[modbus.buses]]            # an RS-485 line (RTU)
//! id = "rs485-1"
//! path = "/dev/ttyUSB0"
//! baud = 9600
//! parity = "none"             # none | even | odd
//! stop_bits = 1
//!
//! [[modbus.devices]]
//! id = "pv-inverter-1"
//! host = "192.0.2.10"         # TCP device ...
//! port = 502
//! # bus = "rs485-1"           # ... or a device on an RTU bus
//! unit = 1
//! profile = "sunspec"         # a shipped profile name, or a path relative to the config file
//! poll_interval_ms = 10000
//!
//! [[modbus.devices.registers]]  # inline registers, added to the profile's
//! name = "export_energy"
//! function = "input"          # coils | discrete_inputs | holding | input
//! address = 342
//! type = "f32"                # bool u16 i16 u32 i32 u64 i64 f32 f64 (string: CLI only)
//! byte_order = "ABCD"         # ABCD | DCBA | BADC | CDAB
//! quantity = "energy"
//! unit = "kWh"                # what the register holds (after `scale`)
//! kind = "counter"
//!
//! [[modbus.devices.registers]]
//! name = "power"
//! function = "holding"
//! address = 100
//! type = "i32"
//! scale = 0.1                 # the register counts 0.1 W
//! quantity = "power"
//! unit = "W"                  # required for power (stored in mW)
//! ```
//!
//! `unit` names the register's unit after `scale` (the table in
//! `mrv_shared::quantity`: `W`, `kW`, `kWh`, `V`, `A`, `Hz`, `degC`, ...);
//! its exact factor to the quantity's base unit is folded into the scale.
//! Without `unit`, `scale` converts straight to the base unit, except for
//! `power`: its base unit became mW, so a power register must say its unit
//! rather than be read 1000 times too small.
//!
//! Where this follows Telegraf's modbus input (`register`/`function`,
//! `address`, `type`, `byte_order` letters, `scale`, `offset`) and where it
//! deliberately differs, fixing what its users report:
//! - scales are exact decimal fractions applied in integer arithmetic, so a
//!   32- or 64-bit energy counter keeps every digit (no float round trip);
//! - values land in integer base units with a declared `quantity` and
//!   `unit`, converted exactly; a value finer than its base unit is rounded
//!   (half away from zero) and flagged `rounded`, never silently; a value
//!   that cannot be decoded (NaN, SunSpec "not implemented", overflow) is
//!   recorded as unavailable, never as 0 or as the previous value;
//! - `unreadable` ranges are never read, and a coalesced read that the device
//!   refuses with "illegal data address" is split once and kept split, so one
//!   hole in a register map does not blank every value around it;
//! - one failing device never delays another (one task per TCP device);
//! - unknown keys are errors and every error names its key path.
//!
//! Invariants of a [`ValidModbusConfig`]: device ids are unique and valid,
//! every device has exactly one link (TCP host or a known bus), every
//! register map plans (each value fits one request, no value touches an
//! unreadable range), channel names are unique per device, intervals and
//! timeouts are positive. Errors name the key path, e.g.
//! `modbus.devices[2].registers[0].type`.

use super::planner::{PlanLimits, plan};
use super::register_map::{
    ByteOrder, DataType, Limits, RegisterDef, RegisterMap, Scale, Sentinel, Table, Unreadable,
};
use super::sunspec::{ModelProfile, PointProfile, SunSpecProfile};
use mrv_shared::config_error::ConfigError;
use mrv_shared::ids::{ChannelId, DeviceId};
use mrv_shared::quantity::{Quantity, ValueKind};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Profiles shipped with the gateway, usable by name even without the
/// `config/profiles` directory next to the config file.
pub const BUILTIN_PROFILES: [(&str, &str); 2] = [
    (
        "sunspec",
        include_str!("../../config/profiles/sunspec.toml"),
    ),
    (
        "din_meter",
        include_str!("../../config/profiles/din_meter.toml"),
    ),
];

/// `[modbus]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSection {
    /// RS-485 buses (Modbus RTU), referenced by devices with `bus = "<id>"`.
    #[serde(default)]
    pub buses: Vec<BusSection>,
    /// Devices to poll.
    #[serde(default)]
    pub devices: Vec<DeviceSection>,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// `[[modbus.buses]]`: one RS-485 line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    /// Bus id, referenced by devices.
    pub id: String,
    /// Serial device path, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Data bits, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Silence between a response and the next request, ms. Default: the
    /// Modbus RTU minimum of 3.5 character times (1.75 ms above 19200 baud).
    #[serde(default)]
    pub inter_frame_delay_ms: Option<f64>,
}

fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> u8 {
    1
}
fn default_data_bits() -> u8 {
    8
}
fn default_interval() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    1_000
}
fn default_retries() -> u8 {
    1
}
fn default_max_gap() -> u16 {
    PlanLimits::default().max_gap
}
fn default_max_registers() -> u16 {
    125
}

/// `[[modbus.devices]]`: one Modbus device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Device id: names the device's frames and reports.
    pub id: String,
    /// TCP: host name or address of the device (or of its TCP gateway).
    #[serde(default)]
    pub host: Option<String>,
    /// TCP: port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// RTU: the id of the bus the device hangs on.
    #[serde(default)]
    pub bus: Option<String>,
    /// Modbus unit (slave) id, 0-247 (TCP devices usually 1 or 255).
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// A profile: a shipped name (`sunspec`, `din_meter`) or a `.toml` path
    /// relative to the config file's directory. Names are first looked up
    /// in `<config dir>/profiles/<name>.toml`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Registers in addition to (or instead of) the profile's.
    #[serde(default)]
    pub registers: Vec<RegisterSection>,
    /// Address ranges the device must never be asked for.
    #[serde(default)]
    pub unreadable: Vec<UnreadableSection>,
    /// Poll interval, ms.
    #[serde(default = "default_interval")]
    pub poll_interval_ms: u64,
    /// Time to wait for each response, ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Extra attempts of a request that timed out (exceptions are answers
    /// and are not retried).
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Most unused registers read between two wanted ones to save a request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers per request (some devices answer fewer than 125).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// SunSpec devices: model ids whose points form the channel table even
    /// before discovery succeeds (so an unreachable inverter still yields
    /// "unavailable" readings). Default: the models found at discovery.
    #[serde(default)]
    pub sunspec_models: Vec<u16>,
}

fn default_port() -> u16 {
    502
}
fn default_unit() -> u8 {
    1
}

/// One register (a channel) as written, in a device or a profile file.
/// Field names follow Telegraf's modbus input where they fit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSection {
    /// Channel name (1-32 of `A-Za-z0-9_.-`).
    pub name: String,
    /// Table: `coils`, `discrete_inputs`, `holding` or `input`.
    pub function: String,
    /// 0-based protocol address of the first register.
    pub address: u16,
    /// `bool`, `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64`, `string`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// For `string`: length in registers.
    #[serde(default)]
    pub length: Option<u16>,
    /// `ABCD` (default), `DCBA`, `BADC`, `CDAB`.
    #[serde(default)]
    pub byte_order: Option<String>,
    /// Multiplier from the raw value to `unit` (exact decimal, e.g. `0.1`).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Unit of the value after `scale` (`W`, `kWh`, `V`, ...); default: the
    /// quantity's base unit (required for `power`, see the module doc).
    #[serde(default)]
    pub unit: Option<String>,
    /// Added after scaling, base units.
    #[serde(default)]
    pub offset: i64,
    /// Address (same table) of an `i16` power-of-ten scale-factor register.
    #[serde(default)]
    pub scale_factor_address: Option<u16>,
    /// What is measured (`energy`, `power`, `voltage`, ...), fixes the unit.
    pub quantity: String,
    /// `instant` (default), `counter` or `delta`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Counters: raw value wraps at `2^rollover_bits` (default: type width).
    #[serde(default)]
    pub rollover_bits: Option<u8>,
    /// Plausibility minimum, base units.
    #[serde(default)]
    pub min: Option<i64>,
    /// Plausibility maximum, base units.
    #[serde(default)]
    pub max: Option<i64>,
}

/// An address range never to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnreadableSection {
    /// Table.
    pub function: String,
    /// First address.
    pub start: u16,
    /// Number of addresses.
    pub count: u16,
}

/// A profile file (`config/profiles/*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// What device the profile describes.
    #[serde(default)]
    pub description: String,
    /// Registers (fixed addresses).
    #[serde(default)]
    pub registers: Vec<RegisterSection>,
    /// Ranges never to read.
    #[serde(default)]
    pub unreadable: Vec<UnreadableSection>,
    /// SunSpec discovery and models (addresses found at run time).
    #[serde(default)]
    pub sunspec: Option<SunSpecSection>,
}

/// `[sunspec]` of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SunSpecSection {
    /// Addresses to look for the `SunS` marker at, in order.
    #[serde(default = "default_bases")]
    pub base_addresses: Vec<u16>,
    /// Models the gateway decodes; others are skipped.
    #[serde(default)]
    pub models: Vec<ModelSection>,
}

fn default_bases() -> Vec<u16> {
    vec![40000, 0, 50000]
}

/// `[[sunspec.models]]`: one model family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model ids sharing this layout (e.g. `[101, 102, 103]`).
    pub ids: Vec<u16>,
    /// Prefix of the channel names (`inverter` gives `inverter_power`).
    pub prefix: String,
    /// Points decoded.
    #[serde(default)]
    pub points: Vec<PointSection>,
}

/// `[[sunspec.models.points]]`: one point of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSection {
    /// Channel name suffix.
    pub name: String,
    /// Offset from the model's first data register (after ID and L).
    pub offset: u16,
    /// Type (`i16`, `u16`, `u32` for acc32, ...).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Offset of the point's scale-factor register, if it has one.
    #[serde(default)]
    pub scale_factor_offset: Option<u16>,
    /// Static multiplier on top of the scale factor.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Unit of the point (SunSpec units: `W`, `Wh`, `A`, `V`, `Hz`,
    /// `degC`); default: the base unit (required for `power`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Quantity.
    pub quantity: String,
    /// `instant`, `counter` or `delta`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Plausibility minimum, base units.
    #[serde(default)]
    pub min: Option<i64>,
    /// Plausibility maximum, base units.
    #[serde(default)]
    pub max: Option<i64>,
}

/// A validated serial bus.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidBus {
    /// Bus id.
    pub id: String,
    /// Serial path.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
    /// Data bits (7 or 8).
    pub data_bits: u8,
    /// Silence between frames.
    pub inter_frame_delay: Duration,
}

/// Minimum RTU silence between frames: 3.5 character times (11 bits each),
/// fixed at 1.75 ms above 19200 baud (Modbus serial line spec 2.5.1.1).
pub fn rtu_inter_frame_delay(baud: u32) -> Duration {
    if baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(u64::from(38_500_000 / baud.max(1)))
    }
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Modbus TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Modbus RTU on `buses[bus]` of the config.
    Rtu {
        /// Index into [`ValidModbusConfig::buses`].
        bus: usize,
    },
}

/// A validated device.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDevice {
    /// Id.
    pub id: DeviceId,
    /// Link.
    pub link: Link,
    /// Unit id.
    pub unit: u8,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Response timeout.
    pub timeout: Duration,
    /// Retries after a timeout.
    pub retries: u8,
    /// Planner limits.
    pub limits: PlanLimits,
    /// Fixed-address registers (profile + inline).
    pub map: RegisterMap,
    /// SunSpec discovery, for SunSpec profiles.
    pub sunspec: Option<SunSpecProfile>,
    /// SunSpec models expected before discovery (see [`DeviceSection::sunspec_models`]).
    pub sunspec_models: Vec<u16>,
}

/// The validated `[modbus]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValidModbusConfig {
    /// Buses.
    pub buses: Vec<ValidBus>,
    /// Devices.
    pub devices: Vec<ValidDevice>,
}

impl ValidModbusConfig {
    /// Counter rollover width (bits) of a device's channel, for the report
    /// builder's delta computation. `None` for non-counters or unknown names.
    pub fn counter_rollover_bits(&self, device: &DeviceId, channel: &ChannelId) -> Option<u8> {
        let d = self.devices.iter().find(|d| &d.id == device)?;
        d.map
            .registers
            .iter()
            .find(|r| &r.name == channel)
            .and_then(|r| r.rollover_bits)
    }
}

impl ValidDevice {
    /// The counter rollover modulus in base units shared by all of the
    /// device's counter channels (`2^rollover_bits * scale`), for the report
    /// builder's `counter_modulus`. `None` when the device has no counters,
    /// when its counters disagree, or when a counter's scale is not fixed
    /// (SunSpec scale-factor registers, fractional results).
    pub fn counter_modulus(&self) -> Option<u64> {
        let mut out: Option<u64> = None;
        for r in self
            .map
            .registers
            .iter()
            .filter(|r| r.kind == ValueKind::Counter)
        {
            if r.scale_factor_at.is_some() || r.scale.num <= 0 {
                return None;
            }
            let bits = u32::from(r.rollover_bits?);
            let raw = 1_u128.checked_shl(bits)?;
            let scaled = raw.checked_mul(u128::try_from(r.scale.num).ok()?)?;
            let den = u128::try_from(r.scale.den).ok()?;
            if scaled % den != 0 {
                return None;
            }
            let m = u64::try_from(scaled / den).ok()?;
            match out {
                Some(o) if o != m => return None,
                _ => out = Some(m),
            }
        }
        if self.sunspec.is_some() {
            // SunSpec accumulators scale by a run-time factor.
            return None;
        }
        out
    }
}

/// Errors located in a file and key; `file` is what [`ConfigError`] names.
struct At<'a> {
    file: &'a Path,
    key: String,
}

impl At<'_> {
    fn err(&self, sub: &str, problem: impl Into<String>) -> ConfigError {
        let key = if sub.is_empty() {
            self.key.clone()
        } else if self.key.is_empty() {
            sub.to_string()
        } else if sub.starts_with('[') {
            format!("{}{sub}", self.key)
        } else {
            format!("{}.{sub}", self.key)
        };
        ConfigError::new(self.file, key, problem)
    }
}

/// Parses a table name (config spelling, with Telegraf-style aliases).
pub fn parse_table(s: &str) -> Option<Table> {
    Some(match s {
        "coils" | "coil" => Table::Coils,
        "discrete_inputs" | "discrete_input" | "discrete" => Table::DiscreteInputs,
        "holding" | "holding_registers" | "holding_register" => Table::Holding,
        "input" | "input_registers" | "input_register" => Table::Input,
        _ => return None,
    })
}

/// Parses a byte order.
pub fn parse_order(s: &str) -> Option<ByteOrder> {
    Some(match s {
        "ABCD" | "AB" => ByteOrder::ABCD,
        "DCBA" | "BA" => ByteOrder::DCBA,
        "BADC" => ByteOrder::BADC,
        "CDAB" => ByteOrder::CDAB,
        _ => return None,
    })
}

/// Parses a quantity name.
pub fn parse_quantity(s: &str) -> Option<Quantity> {
    Quantity::ALL.iter().copied().find(|q| q.name() == s)
}

fn parse_kind(s: Option<&str>) -> Option<ValueKind> {
    Some(match s.unwrap_or("instant") {
        "instant" => ValueKind::Instant,
        "counter" => ValueKind::Counter,
        "delta" => ValueKind::Delta,
        _ => return None,
    })
}

fn parse_scale(at: &At<'_>, scale: Option<f64>) -> Result<Scale, ConfigError> {
    match scale {
        None => Ok(Scale::ONE),
        Some(x) => Scale::from_decimal(x).ok_or_else(|| {
            at.err(
                "scale",
                format!(
                    "{x} is not usable: give a non-zero decimal with at most 9 decimal places, below 1e9"
                ),
            )
        }),
    }
}

/// Folds the stated `unit` of a value of `quantity` into `scale` (see the
/// module doc); errors name `unit` (or `quantity` for power without one).
fn apply_unit(
    at: &At<'_>,
    quantity: Quantity,
    unit: Option<&str>,
    scale: Scale,
) -> Result<Scale, ConfigError> {
    let names = || {
        quantity
            .units()
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let conv = match unit {
        Some(u) => quantity.conversion_from(u).ok_or_else(|| {
            at.err(
                "unit",
                format!(
                    "{u:?} is not a unit of {}; use one of {}",
                    quantity.name(),
                    names()
                ),
            )
        })?,
        None if quantity == Quantity::Power => {
            return Err(at.err(
                "unit",
                format!(
                    "power is stored in mW: say which unit the register holds after `scale` (unit = \"W\"; one of {})",
                    names()
                ),
            ));
        }
        None => return Ok(scale),
    };
    scale.then_unit(conv).ok_or_else(|| {
        at.err(
            "scale",
            "scale times the unit's factor is too large to keep exact",
        )
    })
}

impl RegisterSection {
    /// Validates one register; `allow_strings` for CLI reads.
    fn validate(&self, at: &At<'_>, allow_strings: bool) -> Result<RegisterDef, ConfigError> {
        let name = ChannelId::new(&self.name).map_err(|e| at.err("name", e.to_string()))?;
        let table = parse_table(&self.function).ok_or_else(|| {
            at.err(
                "function",
                format!(
                    "unknown function {:?}; use coils, discrete_inputs, holding or input",
                    self.function
                ),
            )
        })?;
        let data_type = DataType::parse(&self.data_type, self.length).ok_or_else(|| {
            if self.data_type == "string" {
                at.err("length", "a string needs `length` (registers)")
            } else {
                at.err(
                    "type",
                    format!(
                        "unknown type {:?}; use bool, u16, i16, u32, i32, u64, i64, f32, f64 or string",
                        self.data_type
                    ),
                )
            }
        })?;
        if matches!(data_type, DataType::String(0)) {
            return Err(at.err("length", "must be at least 1"));
        }
        if matches!(data_type, DataType::String(_)) && !allow_strings {
            return Err(at.err(
                "type",
                "a string cannot be a reading (readings are integers); read it with `modbus read`",
            ));
        }
        if table.is_bits() && data_type != DataType::Bool {
            return Err(at.err(
                "type",
                format!("{table} hold single bits: the type must be bool"),
            ));
        }
        let order = match &self.byte_order {
            None => ByteOrder::ABCD,
            Some(s) => parse_order(s).ok_or_else(|| {
                at.err(
                    "byte_order",
                    format!("unknown byte order {s:?}; use ABCD, DCBA, BADC or CDAB"),
                )
            })?,
        };
        let quantity = parse_quantity(&self.quantity).ok_or_else(|| {
            at.err(
                "quantity",
                format!(
                    "unknown quantity {:?}; use one of {}",
                    self.quantity,
                    Quantity::ALL.map(|q| q.name()).join(", ")
                ),
            )
        })?;
        let scale = apply_unit(
            at,
            quantity,
            self.unit.as_deref(),
            parse_scale(at, self.scale)?,
        )?;
        let kind = parse_kind(self.kind.as_deref())
            .ok_or_else(|| at.err("kind", "unknown kind; use instant, counter or delta"))?;
        let rollover_bits = match (kind, self.rollover_bits) {
            (ValueKind::Counter, Some(b)) => {
                if b == 0 || b > 64 {
                    return Err(at.err("rollover_bits", "must be 1 to 64"));
                }
                Some(b)
            }
            (ValueKind::Counter, None) => data_type.int_bits(),
            (_, Some(_)) => {
                return Err(at.err("rollover_bits", "only counters roll over"));
            }
            (_, None) => None,
        };
        if self.scale_factor_address.is_some() && table.is_bits() {
            return Err(at.err("scale_factor_address", "bit tables have no scale factors"));
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max)
            && lo > hi
        {
            return Err(at.err("min", format!("min {lo} is above max {hi}")));
        }
        Ok(RegisterDef {
            name,
            table,
            address: self.address,
            data_type,
            order,
            scale,
            scale_factor_at: self.scale_factor_address,
            offset: self.offset,
            quantity,
            kind,
            rollover_bits,
            limits: Limits {
                min: self.min,
                max: self.max,
            },
            sentinel: Sentinel::None,
        })
    }
}

/// Validates one register outside any config file (CLI `modbus read`).
pub fn validate_register(r: &RegisterSection) -> Result<RegisterDef, ConfigError> {
    let at = At {
        file: Path::new("<command line>"),
        key: String::new(),
    };
    r.validate(&at, true)
}

fn validate_unreadable(at: &At<'_>, u: &UnreadableSection) -> Result<Unreadable, ConfigError> {
    let table = parse_table(&u.function)
        .ok_or_else(|| at.err("function", format!("unknown function {:?}", u.function)))?;
    if u.count == 0 || u32::from(u.start) + u32::from(u.count) > 65536 {
        return Err(at.err("count", "must be at least 1 and stay below address 65536"));
    }
    Ok(Unreadable {
        table,
        start: u.start,
        count: u.count,
    })
}

impl SunSpecSection {
    fn validate(&self, at: &At<'_>) -> Result<SunSpecProfile, ConfigError> {
        if self.base_addresses.is_empty() {
            return Err(at.err("base_addresses", "give at least one address"));
        }
        let mut models = Vec::new();
        let mut seen_ids = BTreeSet::new();
        for (mi, m) in self.models.iter().enumerate() {
            let mat = At {
                file: at.file,
                key: format!("{}.models[{mi}]", at.key),
            };
            if m.ids.is_empty() {
                return Err(mat.err("ids", "give at least one model id"));
            }
            for id in &m.ids {
                if !seen_ids.insert(*id) {
                    return Err(mat.err("ids", format!("model {id} appears twice")));
                }
            }
            let mut points = Vec::new();
            for (pi, p) in m.points.iter().enumerate() {
                let pat = At {
                    file: at.file,
                    key: format!("{}.points[{pi}]", mat.key),
                };
                let full = format!("{}_{}", m.prefix, p.name);
                ChannelId::new(&full).map_err(|e| pat.err("name", e.to_string()))?;
                let data_type = DataType::parse(&p.data_type, None)
                    .filter(|t| !matches!(t, DataType::String(_) | DataType::Bool))
                    .ok_or_else(|| {
                        pat.err("type", format!("unsupported point type {:?}", p.data_type))
                    })?;
                let quantity = parse_quantity(&p.quantity).ok_or_else(|| {
                    pat.err("quantity", format!("unknown quantity {:?}", p.quantity))
                })?;
                let kind = parse_kind(p.kind.as_deref()).ok_or_else(|| {
                    pat.err("kind", "unknown kind; use instant, counter or delta")
                })?;
                let scale = apply_unit(
                    &pat,
                    quantity,
                    p.unit.as_deref(),
                    parse_scale(&pat, p.scale)?,
                )?;
                points.push(PointProfile {
                    name: p.name.clone(),
                    offset: p.offset,
                    data_type,
                    scale_factor_offset: p.scale_factor_offset,
                    scale,
                    quantity,
                    kind,
                    limits: Limits {
                        min: p.min,
                        max: p.max,
                    },
                });
            }
            models.push(ModelProfile {
                ids: m.ids.clone(),
                prefix: m.prefix.clone(),
                points,
            });
        }
        Ok(SunSpecProfile {
            base_addresses: self.base_addresses.clone(),
            models,
        })
    }
}

/// A loaded, validated profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidProfile {
    /// Description.
    pub description: String,
    /// Fixed registers.
    pub map: RegisterMap,
    /// SunSpec part.
    pub sunspec: Option<SunSpecProfile>,
}

/// Parses and validates profile text; `file` names it in errors.
pub fn parse_profile(text: &str, file: &Path) -> Result<ValidProfile, ConfigError> {
    // The same deserializer as the main config file, so that the sections
    // both read are compiled once (binary size, issue 11).
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        ConfigError::new(
            file,
            "",
            format!("not valid TOML: {}", e.to_string().trim_end()),
        )
    })?;
    let pf: ProfileFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(file, key, e.inner().message().to_string())
    })?;
    let mut map = RegisterMap::default();
    for (i, r) in pf.registers.iter().enumerate() {
        let at = At {
            file,
            key: format!("registers[{i}]"),
        };
        map.registers.push(r.validate(&at, false)?);
    }
    for (i, u) in pf.unreadable.iter().enumerate() {
        let at = At {
            file,
            key: format!("unreadable[{i}]"),
        };
        map.unreadable.push(validate_unreadable(&at, u)?);
    }
    let sunspec = match &pf.sunspec {
        Some(s) => Some(s.validate(&At {
            file,
            key: "sunspec".into(),
        })?),
        None => None,
    };
    Ok(ValidProfile {
        description: pf.description,
        map,
        sunspec,
    })
}

/// Finds and loads a profile by name or path (see [`DeviceSection::profile`]).
pub fn load_profile(
    reference: &str,
    config_dir: &Path,
    at_file: &Path,
    key: &str,
) -> Result<ValidProfile, ConfigError> {
    let looks_like_path = reference.ends_with(".toml") || reference.contains('/');
    let candidate = if looks_like_path {
        config_dir.join(reference)
    } else {
        config_dir
            .join("profiles")
            .join(format!("{reference}.toml"))
    };
    if candidate.is_file() {
        let text = std::fs::read_to_string(&candidate).map_err(|e| {
            ConfigError::new(
                at_file,
                key,
                format!("cannot read {}: {e}", candidate.display()),
            )
        })?;
        return parse_profile(&text, &candidate);
    }
    if !looks_like_path
        && let Some((_, text)) = BUILTIN_PROFILES.iter().find(|(n, _)| *n == reference)
    {
        return parse_profile(text, Path::new(&format!("<built-in profile {reference}>")));
    }
    Err(ConfigError::new(
        at_file,
        key,
        format!(
            "no profile {reference:?}: not found at {} and not a built-in ({})",
            candidate.display(),
            BUILTIN_PROFILES.map(|(n, _)| n).join(", ")
        ),
    ))
}

impl ModbusSection {
    /// Turns the section into a typed config. `config_dir` anchors profile
    /// paths; errors name `<config_dir>/gateway.toml`-relative keys under
    /// `modbus.`.
    pub fn validate(&self, config_dir: &Path) -> Result<ValidModbusConfig, ConfigError> {
        self.validate_in(config_dir, &config_dir.join("gateway.toml"))
    }

    /// As [`Self::validate`], naming `config_file` in errors.
    pub fn validate_in(
        &self,
        config_dir: &Path,
        config_file: &Path,
    ) -> Result<ValidModbusConfig, ConfigError> {
        let mut out = ValidModbusConfig::default();
        for (i, b) in self.buses.iter().enumerate() {
            let at = At {
                file: config_file,
                key: format!("modbus.buses[{i}]"),
            };
            if b.id.is_empty() {
                return Err(at.err("id", "must not be empty"));
            }
            if out.buses.iter().any(|o: &ValidBus| o.id == b.id) {
                return Err(at.err("id", format!("bus {:?} is defined twice", b.id)));
            }
            if b.baud == 0 {
                return Err(at.err("baud", "must be positive"));
            }
            if !matches!(b.stop_bits, 1 | 2) {
                return Err(at.err("stop_bits", "must be 1 or 2"));
            }
            if !matches!(b.data_bits, 7 | 8) {
                return Err(at.err("data_bits", "must be 7 or 8"));
            }
            let inter_frame_delay = match b.inter_frame_delay_ms {
                None => rtu_inter_frame_delay(b.baud),
                Some(ms) if ms.is_finite() && (0.0..=1000.0).contains(&ms) => {
                    Duration::from_secs_f64(ms / 1000.0)
                }
                Some(_) => return Err(at.err("inter_frame_delay_ms", "must be 0 to 1000")),
            };
            out.buses.push(ValidBus {
                id: b.id.clone(),
                path: b.path.clone(),
                baud: b.baud,
                parity: b.parity,
                stop_bits: b.stop_bits,
                data_bits: b.data_bits,
                inter_frame_delay,
            });
        }
        for (i, d) in self.devices.iter().enumerate() {
            let at = At {
                file: config_file,
                key: format!("modbus.devices[{i}]"),
            };
            let dev = d.validate(&at, config_dir, &out.buses)?;
            if out.devices.iter().any(|o: &ValidDevice| o.id == dev.id) {
                return Err(at.err("id", format!("device {} is defined twice", dev.id)));
            }
            out.devices.push(dev);
        }
        Ok(out)
    }
}

impl DeviceSection {
    fn validate(
        &self,
        at: &At<'_>,
        config_dir: &Path,
        buses: &[ValidBus],
    ) -> Result<ValidDevice, ConfigError> {
        let id = DeviceId::new(&self.id).map_err(|e| at.err("id", e.to_string()))?;
        let link = match (&self.host, &self.bus) {
            (Some(h), None) => {
                if h.is_empty() {
                    return Err(at.err("host", "must not be empty"));
                }
                Link::Tcp {
                    host: h.clone(),
                    port: self.port,
                }
            }
            (None, Some(b)) => {
                let idx = buses
                    .iter()
                    .position(|x| &x.id == b)
                    .ok_or_else(|| at.err("bus", format!("no bus {b:?} in modbus.buses")))?;
                if self.unit == 0 || self.unit > 247 {
                    return Err(at.err("unit", "RTU unit ids are 1 to 247"));
                }
                Link::Rtu { bus: idx }
            }
            (Some(_), Some(_)) => {
                return Err(at.err("host", "give either host (TCP) or bus (RTU), not both"));
            }
            (None, None) => return Err(at.err("host", "give host (TCP) or bus (RTU)")),
        };
        if self.poll_interval_ms == 0 {
            return Err(at.err("poll_interval_ms", "must be positive"));
        }
        if self.timeout_ms == 0 {
            return Err(at.err("timeout_ms", "must be positive"));
        }
        if self.max_registers == 0 || self.max_registers > 125 {
            return Err(at.err("max_registers", "must be 1 to 125"));
        }
        let limits = PlanLimits {
            max_gap: self.max_gap,
            max_registers: self.max_registers,
        };
        let mut map = RegisterMap::default();
        let mut sunspec = None;
        if let Some(p) = &self.profile {
            let prof = load_profile(p, config_dir, at.file, &format!("{}.profile", at.key))?;
            map = prof.map;
            sunspec = prof.sunspec;
        }
        for (ri, r) in self.registers.iter().enumerate() {
            let rat = At {
                file: at.file,
                key: format!("{}.registers[{ri}]", at.key),
            };
            map.registers.push(r.validate(&rat, false)?);
        }
        for (ui, u) in self.unreadable.iter().enumerate() {
            let uat = At {
                file: at.file,
                key: format!("{}.unreadable[{ui}]", at.key),
            };
            map.unreadable.push(validate_unreadable(&uat, u)?);
        }
        if map.registers.len() > 255 {
            return Err(at.err("registers", "at most 255 registers (channels) per device"));
        }
        if map.registers.is_empty() && sunspec.is_none() {
            return Err(at.err("registers", "the device has no registers and no profile"));
        }
        let mut names = BTreeSet::new();
        for (ri, r) in map.registers.iter().enumerate() {
            if !names.insert(r.name.clone()) {
                return Err(at.err(
                    &format!("registers[{ri}].name"),
                    format!("channel {} appears twice", r.name),
                ));
            }
        }
        if let Err(e) = plan(&map.spans(), &map.unreadable, limits) {
            return Err(at.err("registers", format!("cannot be read: {e}")));
        }
        if let Some(s) = &sunspec {
            for m in &self.sunspec_models {
                if !s.models.iter().any(|p| p.ids.contains(m)) {
                    return Err(at.err(
                        "sunspec_models",
                        format!("model {m} is not decoded by the profile"),
                    ));
                }
            }
        } else if !self.sunspec_models.is_empty() {
            return Err(at.err("sunspec_models", "only for SunSpec profiles"));
        }
        Ok(ValidDevice {
            id,
            link,
            unit: self.unit,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            limits,
            map,
            sunspec,
            sunspec_models: self.sunspec_models.clone(),
        })
    }
}

/// Parses a `[modbus]` section from TOML text (the section's contents, as
/// in a file holding only `[modbus]` tables); for tests and tools.
pub fn parse_section(text: &str, file: &Path) -> Result<ModbusSection, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        #[serde(default)]
        modbus: ModbusSection,
    }
    // The same deserializer as the main config file, so that the sections
    // both read are compiled once (binary size, issue 11).
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        ConfigError::new(
            file,
            "",
            format!("not valid TOML: {}", e.to_string().trim_end()),
        )
    })?;
    let w: Wrapper = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(file, key, e.inner().message().to_string())
    })?;
    Ok(w.modbus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<ValidModbusConfig, ConfigError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        parse_section(text, &dir.join("gateway.toml"))?.validate(&dir)
    }

    #[test]
    fn shipped_profiles_validate() {
        for (name, text) in BUILTIN_PROFILES {
            let p = parse_profile(text, Path::new(name)).expect("shipped profile is valid");
            assert!(!p.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_tcp_device_with_a_profile_and_inline_registers() {
        let c = validate(
            r#"
[[modbus.devices]]
id = "meter-1"
host = "127.0.0.1"
port = 1502
profile = "din_meter"
[[modbus.devices.registers]]
name = "extra"
function = "holding"
address = 900
type = "u32"
byte_order = "CDAB"
quantity = "energy"
kind = "counter"
"#,
        )
        .expect("valid");
        let d = &c.devices[0];
        assert_eq!(
            d.link,
            Link::Tcp {
                host: "127.0.0.1".into(),
                port: 1502
            }
        );
        let extra = d.map.registers.last().expect("inline register appended");
        assert_eq!(extra.order, ByteOrder::CDAB);
        assert_eq!(extra.rollover_bits, Some(32));
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let e = validate(
            r#"
[[modbus.devices]]
id = "m"
host = "127.0.0.1"
[[modbus.devices.registers]]
name = "a"
function = "holding"
address = 0
type = "float"
quantity = "power"
unit = "W"
"#,
        )
        .expect_err("bad type");
        assert_eq!(e.key, "modbus.devices[0].registers[0].type");
        let e = validate(
            r#"
[[modbus.devices]]
id = "m"
host = "127.0.0.1"
unknown = 1
"#,
        )
        .expect_err("unknown key");
        assert!(e.key.starts_with("modbus.devices"), "{e}");
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn counter_modulus_is_the_scaled_rollover_when_fixed() {
        let c = validate(
            r#"
[[modbus.devices]]
id = "m"
host = "h"
[[modbus.devices.registers]]
name = "e"
function = "holding"
address = 0
type = "u32"
scale = 10
quantity = "energy"
kind = "counter"
[[modbus.devices.registers]]
name = "p"
function = "holding"
address = 2
type = "u16"
quantity = "power"
unit = "W"
"#,
        )
        .expect("valid");
        assert_eq!(c.devices[0].counter_modulus(), Some(10 << 32));
        let c = validate("[[modbus.devices]]\nid = \"s\"\nhost = \"h\"\nprofile = \"sunspec\"\n")
            .expect("valid");
        assert_eq!(c.devices[0].counter_modulus(), None);
    }

    #[test]
    fn units_fold_into_the_scale_and_power_must_name_its_unit() {
        let dev = |reg: &str| {
            format!(
                "[[modbus.devices]]\nid = \"m\"\nhost = \"h\"\n[[modbus.devices.registers]]\nname = \"p\"\nfunction = \"holding\"\naddress = 0\ntype = \"i32\"\n{reg}"
            )
        };
        let c = validate(&dev("scale = 0.1\nquantity = \"power\"\nunit = \"W\"\n")).expect("valid");
        assert_eq!(
            c.devices[0].map.registers[0].scale,
            Scale { num: 100, den: 1 }
        );
        let c = validate(&dev(
            "quantity = \"energy\"\nunit = \"kWh\"\nkind = \"counter\"\n",
        ))
        .expect("valid");
        assert_eq!(
            c.devices[0].map.registers[0].scale,
            Scale { num: 1000, den: 1 }
        );
        let e = validate(&dev("quantity = \"power\"\n")).expect_err("no unit");
        assert_eq!(e.key, "modbus.devices[0].registers[0].unit");
        assert!(e.problem.contains("mW"), "{e}");
        let e = validate(&dev("quantity = \"power\"\nunit = \"kWh\"\n")).expect_err("wrong unit");
        assert_eq!(e.key, "modbus.devices[0].registers[0].unit");
        assert!(e.problem.contains("mW, W, kW, MW"), "{e}");
    }

    #[test]
    fn rtu_devices_need_a_known_bus() {
        let e = validate(
            r#"
[[modbus.devices]]
id = "m"
bus = "nope"
profile = "din_meter"
"#,
        )
        .expect_err("unknown bus");
        assert_eq!(e.key, "modbus.devices[0].bus");
        let c = validate(
            r#"
[[modbus.buses]]
id = "line1"
path = "/dev/ttyUSB0"
baud = 9600
parity = "even"
[[modbus.devices]]
id = "m"
bus = "line1"
unit = 7
profile = "din_meter"
"#,
        )
        .expect("valid");
        assert_eq!(c.devices[0].link, Link::Rtu { bus: 0 });
        // 3.5 chars of 11 bits at 9600 baud.
        assert_eq!(c.buses[0].inter_frame_delay, Duration::from_micros(4010));
    }

    #[test]
    fn a_value_over_an_unreadable_range_is_rejected() {
        let e = validate(
            r#"
[[modbus.devices]]
id = "m"
host = "h"
[[modbus.devices.registers]]
name = "a"
function = "holding"
address = 10
type = "u32"
quantity = "power"
unit = "W"
[[modbus.devices.unreadable]]
function = "holding"
start = 11
count = 1
"#,
        )
        .expect_err("overlaps");
        assert_eq!(e.key, "modbus.devices[0].registers");
    }

    #[test]
    fn duplicate_channels_and_strings_are_rejected() {
        let reg = r#"
[[modbus.devices.registers]]
name = "a"
function = "holding"
address = 0
type = "u16"
quantity = "power"
unit = "W"
"#;
        let text = format!("[[modbus.devices]]\nid = \"m\"\nhost = \"h\"\n{reg}{reg}");
        let e = validate(&text).expect_err("duplicate");
        assert_eq!(e.key, "modbus.devices[0].registers[1].name");
        let text = "[[modbus.devices]]\nid = \"m\"\nhost = \"h\"\n[[modbus.devices.registers]]\nname = \"s\"\nfunction = \"holding\"\naddress = 0\ntype = \"string\"\nlength = 4\nquantity = \"count\"\n";
        let e = validate(text).expect_err("string");
        assert_eq!(e.key, "modbus.devices[0].registers[0].type");
    }
}
