//! Physical quantities and their integer base units.
//!
//! Every value that crosses a wire or enters a report is an `i64` in the base
//! unit of its [`Quantity`]. Integers keep hashing and canonical JSON exact
//! (no float formatting), and the units are small enough that an `i64` never
//! overflows for any real site (9.2e18 Wh is 9.2 EWh).
//!
//! | quantity | base unit | wire code | JSON name |
//! |---|---|---|---|
//! | energy | Wh | 1 | `energy` |
//! | power | W | 2 | `power` |
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

use serde::{Deserialize, Serialize};

/// What a value measures; fixes its base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Electrical energy, Wh.
    Energy,
    /// Electrical power, W.
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
            Quantity::Power => "W",
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
    fn json_names_match_name() {
        for q in Quantity::ALL {
            let s = serde_json::to_string(&q).expect("serialises");
            assert_eq!(s, alloc::format!("\"{}\"", q.name()));
        }
    }
}
