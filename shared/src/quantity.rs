//! Physical quantities and their integer base units.
//!
//! Every value that crosses a wire or enters a report is an `i64` in the base
//! unit of its [`Quantity`]. Integers keep hashing and canonical JSON exact
//! (no float formatting), and the units are small enough that an `i64` never
//! overflows for any real site (9.2e18 Wh is 9.2 EWh, 9.2e18 mW is 9.2 TW).
//! Base units are chosen so that common meter resolutions land exactly:
//! a meter showing 0.01 W, 0.1 V, 0.001 A or 0.01 Hz is an integer in mW,
//! mV, mA, mHz; anything finer is rounded by the rule in
//! [`crate::conversion`] and flagged `Quality::ROUNDED`.
//!
//! | quantity | base unit | wire code | JSON name |
//! |---|---|---|---|
//! | energy | Wh | 1 | `energy` |
//! | power | mW (since format 1.1 of this table; was W) | 2 | `power` |
//! | water volume | mL | 3 | `water_volume` |
//! | gas volume (actual conditions) | mL | 4 | `gas_volume` |
//! | water level (relative to soil, negative below) | mm | 5 | `water_level` |
//! | CH4 fraction | 0.01 vol% (1 = 100 ppm) | 6 | `ch4_fraction` |
//! | temperature | 0.01 degC | 7 | `temperature` |
//! | pressure (absolute) | Pa | 8 | `pressure` |
//! | status (run, flame) | 0 or 1 | 9 | `status` |
//! | run time | s | 10 | `run_time` |
//! | voltage | mV | 11 | `voltage` |
//! | current | mA | 12 | `current` |
//! | frequency | mHz | 13 | `frequency` |
//! | count (dimensionless) | 1 | 14 | `count` |
//!
//! Codes are part of the wire format: never renumber, only append.
//!
//! Units a config file or payload may state ([`Quantity::units`], the first
//! of each row is the base unit; the factor is exact):
//!
//! | quantity | units (factor to the base unit) |
//! |---|---|
//! | energy | `Wh` 1, `kWh` 1000, `MWh` 10^6, `mWh` 1/1000 |
//! | power | `mW` 1, `W` 1000, `kW` 10^6, `MW` 10^9 |
//! | water/gas volume | `mL` 1, `L` 1000, `m3` 10^6 |
//! | water level | `mm` 1, `cm` 10, `m` 1000 |
//! | CH4 fraction | `0.01%vol` 1, `%vol` 100, `ppm` 1/100 |
//! | temperature | `0.01degC` 1, `0.1degC` 10, `degC` 100 |
//! | pressure | `Pa` 1, `hPa` 100, `mbar` 100, `kPa` 1000, `bar` 10^5 |
//! | status | `bool` 1 |
//! | run time | `s` 1, `ms` 1/1000, `min` 60, `h` 3600 |
//! | voltage | `mV` 1, `V` 1000, `kV` 10^6 |
//! | current | `mA` 1, `A` 1000 |
//! | frequency | `mHz` 1, `Hz` 1000 |
//! | count | `1` 1 |
//!
//! Units with an offset (degF, K) are not offered: a conversion here is a
//! pure factor, so that it stays exact and composes with device scales.

use crate::conversion::Conversion;
use serde::{Deserialize, Serialize};

/// What a value measures; fixes its base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Electrical energy, Wh.
    Energy,
    /// Electrical power, mW (a meter's 0.01 W resolution is exact).
    Power,
    /// Water volume, mL.
    WaterVolume,
    /// Gas volume at actual (measured) conditions, mL.
    GasVolume,
    /// Water level relative to the soil surface, mm (negative = below).
    WaterLevel,
    /// Methane fraction, 0.01 vol% (so 5500 = 55.00 %).
    Ch4Fraction,
    /// Temperature, 0.01 degC.
    Temperature,
    /// Absolute pressure, Pa.
    Pressure,
    /// On/off status (pump running, flame present): 0 or 1.
    Status,
    /// Run time, s.
    RunTime,
    /// Voltage, mV.
    Voltage,
    /// Current, mA.
    Current,
    /// Frequency, mHz.
    Frequency,
    /// A dimensionless count.
    Count,
}

impl Quantity {
    /// Every quantity, in wire-code order.
    pub const ALL: [Quantity; 14] = [
        Quantity::Energy,
        Quantity::Power,
        Quantity::WaterVolume,
        Quantity::GasVolume,
        Quantity::WaterLevel,
        Quantity::Ch4Fraction,
        Quantity::Temperature,
        Quantity::Pressure,
        Quantity::Status,
        Quantity::RunTime,
        Quantity::Voltage,
        Quantity::Current,
        Quantity::Frequency,
        Quantity::Count,
    ];

    /// The one-byte code used by the binary wire format.
    pub fn code(self) -> u8 {
        match self {
            Quantity::Energy => 1,
            Quantity::Power => 2,
            Quantity::WaterVolume => 3,
            Quantity::GasVolume => 4,
            Quantity::WaterLevel => 5,
            Quantity::Ch4Fraction => 6,
            Quantity::Temperature => 7,
            Quantity::Pressure => 8,
            Quantity::Status => 9,
            Quantity::RunTime => 10,
            Quantity::Voltage => 11,
            Quantity::Current => 12,
            Quantity::Frequency => 13,
            Quantity::Count => 14,
        }
    }

    /// The quantity for a wire code, if it is known.
    pub fn from_code(code: u8) -> Option<Quantity> {
        Quantity::ALL.iter().copied().find(|q| q.code() == code)
    }

    /// The base unit, as printed in reports and diagnostics.
    pub fn unit(self) -> &'static str {
        match self {
            Quantity::Energy => "Wh",
            Quantity::Power => "mW",
            Quantity::WaterVolume | Quantity::GasVolume => "mL",
            Quantity::WaterLevel => "mm",
            Quantity::Ch4Fraction => "0.01%vol",
            Quantity::Temperature => "0.01degC",
            Quantity::Pressure => "Pa",
            Quantity::Status => "bool",
            Quantity::RunTime => "s",
            Quantity::Voltage => "mV",
            Quantity::Current => "mA",
            Quantity::Frequency => "mHz",
            Quantity::Count => "1",
        }
    }

    /// The units a config file or payload may state for this quantity, with
    /// their exact factor to the base unit as `(name, num, den)`; the first
    /// entry is the base unit itself (see the module doc's table).
    pub fn units(self) -> &'static [(&'static str, i64, i64)] {
        match self {
            Quantity::Energy => &[
                ("Wh", 1, 1),
                ("kWh", 1000, 1),
                ("MWh", 1_000_000, 1),
                ("mWh", 1, 1000),
            ],
            Quantity::Power => &[
                ("mW", 1, 1),
                ("W", 1000, 1),
                ("kW", 1_000_000, 1),
                ("MW", 1_000_000_000, 1),
            ],
            Quantity::WaterVolume | Quantity::GasVolume => {
                &[("mL", 1, 1), ("L", 1000, 1), ("m3", 1_000_000, 1)]
            }
            Quantity::WaterLevel => &[("mm", 1, 1), ("cm", 10, 1), ("m", 1000, 1)],
            Quantity::Ch4Fraction => &[("0.01%vol", 1, 1), ("%vol", 100, 1), ("ppm", 1, 100)],
            Quantity::Temperature => &[("0.01degC", 1, 1), ("0.1degC", 10, 1), ("degC", 100, 1)],
            Quantity::Pressure => &[
                ("Pa", 1, 1),
                ("hPa", 100, 1),
                ("mbar", 100, 1),
                ("kPa", 1000, 1),
                ("bar", 100_000, 1),
            ],
            Quantity::Status => &[("bool", 1, 1)],
            Quantity::RunTime => &[("s", 1, 1), ("ms", 1, 1000), ("min", 60, 1), ("h", 3600, 1)],
            Quantity::Voltage => &[("mV", 1, 1), ("V", 1000, 1), ("kV", 1_000_000, 1)],
            Quantity::Current => &[("mA", 1, 1), ("A", 1000, 1)],
            Quantity::Frequency => &[("mHz", 1, 1), ("Hz", 1000, 1)],
            Quantity::Count => &[("1", 1, 1)],
        }
    }

    /// The exact factor from `unit` to the base unit, if `unit` is one of
    /// [`Quantity::units`].
    pub fn conversion_from(self, unit: &str) -> Option<Conversion> {
        self.units()
            .iter()
            .find(|(name, _, _)| *name == unit)
            .and_then(|&(_, num, den)| Conversion::new(i128::from(num), i128::from(den)))
    }

    /// The snake_case name used in JSON and config files.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::Energy => "energy",
            Quantity::Power => "power",
            Quantity::WaterVolume => "water_volume",
            Quantity::GasVolume => "gas_volume",
            Quantity::WaterLevel => "water_level",
            Quantity::Ch4Fraction => "ch4_fraction",
            Quantity::Temperature => "temperature",
            Quantity::Pressure => "pressure",
            Quantity::Status => "status",
            Quantity::RunTime => "run_time",
            Quantity::Voltage => "voltage",
            Quantity::Current => "current",
            Quantity::Frequency => "frequency",
            Quantity::Count => "count",
        }
    }
}

/// How a channel's values relate over time; decides how a report aggregates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// A sample at an instant (power, level, temperature): min/max/mean.
    Instant,
    /// A cumulative counter (energy register, pulse total): deltas, with
    /// rollover at the counter width and reset detection.
    Counter,
    /// A total over the interval since the previous sample: summed.
    Delta,
}

impl ValueKind {
    /// Wire code (2 bits in the binary format).
    pub fn code(self) -> u8 {
        match self {
            ValueKind::Instant => 0,
            ValueKind::Counter => 1,
            ValueKind::Delta => 2,
        }
    }
    /// Kind for a wire code.
    pub fn from_code(code: u8) -> Option<ValueKind> {
        match code {
            0 => Some(ValueKind::Instant),
            1 => Some(ValueKind::Counter),
            2 => Some(ValueKind::Delta),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for q in Quantity::ALL {
            assert_eq!(Quantity::from_code(q.code()), Some(q));
        }
        assert_eq!(Quantity::from_code(0), None);
        assert_eq!(Quantity::from_code(15), None);
    }

    #[test]
    fn the_first_unit_is_the_base_unit_and_power_is_milliwatts() {
        for q in Quantity::ALL {
            assert_eq!(q.units()[0], (q.unit(), 1, 1), "{q:?}");
        }
        assert_eq!(Quantity::Power.unit(), "mW");
        assert_eq!(
            Quantity::Power.conversion_from("W"),
            Conversion::new(1000, 1)
        );
        assert_eq!(
            Quantity::Ch4Fraction.conversion_from("ppm"),
            Conversion::new(1, 100)
        );
        assert_eq!(Quantity::Power.conversion_from("Wh"), None);
    }

    #[test]
    fn json_names_match_name() {
        for q in Quantity::ALL {
            let s = serde_json::to_string(&q).expect("serialises");
            assert_eq!(s, alloc::format!("\"{}\"", q.name()));
        }
    }
}
