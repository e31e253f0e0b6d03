//! Human display of base-unit values: `5843` of [`Quantity::Ch4Fraction`]
//! reads `58.43 %`, `231668` mV reads `231.7 V`, a status `1` reads `on`.
//!
//! The rules are keyed on the quantity's base unit ([`Quantity::unit`]), so a
//! change of base unit (W to mW) changes the display only where the table
//! below says so, and never adds precision the base unit does not have.
//!
//! | base unit | shown as | precision |
//! |---|---|---|
//! | mW, W | W, kW, MW (by size) | 4 significant digits, at most the base resolution |
//! | Wh | Wh below 1 kWh, else kWh / MWh | full Wh resolution below 1 MWh |
//! | mL | mL, L, m³ (by size) | L and m³ with 3 decimals |
//! | 0.01%vol | % | 2 decimals |
//! | 0.01degC | °C | 2 decimals |
//! | mV, mA, mHz | V, A, Hz | 4 significant digits, at most 3 decimals |
//! | Pa | Pa, kPa (by size) | 4 significant digits |
//! | bool | `on` / `off` | any other value is `invalid (v)` |
//! | s | `12 s`, `5 min 03 s`, `2 h 07 min`, `3 d 04 h` | |
//! | mm, 1 | as is | integer |
//!
//! Pure integer arithmetic (`i128`): no float ever rounds a value here, and
//! rounding is half away from zero. Exact values stay in the JSON; this is
//! only what a person reads.

use crate::quantity::Quantity;
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// A value ready to be read: a number text and its unit (`unit` is empty
/// for on/off and durations, whose text carries its own words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayValue {
    /// The number (or word) part, e.g. `58.43`, `on`, `2 h 07 min`.
    pub number: String,
    /// The display unit, e.g. `%`, `kW`, `°C`; empty when `number` says it all.
    pub unit: &'static str,
}

impl fmt::Display for DisplayValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unit.is_empty() {
            f.write_str(&self.number)
        } else {
            write!(f, "{} {}", self.number, self.unit)
        }
    }
}

/// One fixed display scale: `value / 10^pow10` shown in `unit` with at most
/// `max_decimals` decimals. Charts pick one scale per axis so every tick is
/// in the same unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Display unit.
    pub unit: &'static str,
    /// Base units per display unit, as a power of ten.
    pub pow10: u32,
    /// Most decimals worth showing (the base resolution in this unit).
    pub max_decimals: u32,
}

impl Scale {
    /// `v` in this scale as a float (for drawing only, never for values).
    pub fn to_f64(self, v: i64) -> f64 {
        v as f64 / pow10(self.pow10) as f64
    }

    /// `v` in this scale with exactly `decimals` decimals (capped at
    /// `max_decimals`), rounded half away from zero.
    pub fn format(self, v: i64, decimals: u32) -> String {
        fixed(v, self.pow10, decimals.min(self.max_decimals))
    }

    /// `v` in this scale with four significant digits (never more decimals
    /// than the base resolution); zero is `0`.
    pub fn format_sig4(self, v: i64) -> String {
        if v == 0 {
            return "0".into();
        }
        let dec = 4u32
            .saturating_sub(int_digits(v, self.pow10))
            .min(self.max_decimals);
        let text = self.format(v, dec);
        // Rounding may carry into one more integer digit (99.996 -> 100.00):
        // then one decimal fewer keeps four significant digits.
        let int_len = text
            .trim_start_matches('-')
            .split('.')
            .next()
            .map_or(0, str::len) as u32;
        if dec > 0 && int_len > 4 - dec {
            self.format(v, dec - 1)
        } else {
            text
        }
    }
}

fn pow10(n: u32) -> i128 {
    10i128.pow(n)
}

/// Digits of the integer part of `|v| / 10^p` (at least 1: `0.85` has one).
fn int_digits(v: i64, p: u32) -> u32 {
    let mut w = i128::from(v).unsigned_abs() / pow10(p).unsigned_abs();
    let mut d = 1;
    while w >= 10 {
        w /= 10;
        d += 1;
    }
    d
}

fn round_div(a: u128, b: u128) -> u128 {
    (a + b / 2) / b
}

/// `v / 10^p` with `decimals` decimals, rounded half away from zero.
fn fixed(v: i64, p: u32, decimals: u32) -> String {
    let neg = v < 0;
    let a = i128::from(v).unsigned_abs();
    let (int, frac) = if decimals >= p {
        // Exact: pad with zeros.
        let int = a / pow10(p) as u128;
        let frac = (a % pow10(p) as u128) * pow10(decimals - p) as u128;
        (int, frac)
    } else {
        let q = round_div(a, pow10(p - decimals) as u128);
        (q / pow10(decimals) as u128, q % pow10(decimals) as u128)
    };
    let sign = if neg && (int != 0 || frac != 0) {
        "-"
    } else {
        ""
    };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac:0width$}", width = decimals as usize)
    }
}

/// The scale a value of quantity `q` is best read in, chosen by the largest
/// magnitude that will be shown in it (`max_abs`, base units). On/off,
/// durations and counts get their base scale with no unit (charts draw
/// them as plain numbers).
pub fn scale_for(q: Quantity, max_abs: u64) -> Scale {
    let s = |unit, pow10, max_decimals| Scale {
        unit,
        pow10,
        max_decimals,
    };
    let m = max_abs;
    match q.unit() {
        "mW" => match m {
            0..1_000_000 => s("W", 3, 3),
            1_000_000..1_000_000_000 => s("kW", 6, 6),
            _ => s("MW", 9, 9),
        },
        "W" => match m {
            0..1_000 => s("W", 0, 0),
            1_000..1_000_000 => s("kW", 3, 3),
            _ => s("MW", 6, 6),
        },
        "Wh" => match m {
            0..1_000 => s("Wh", 0, 0),
            1_000..1_000_000_000 => s("kWh", 3, 3),
            _ => s("MWh", 6, 3),
        },
        "mL" => match m {
            0..1_000 => s("mL", 0, 0),
            1_000..1_000_000 => s("L", 3, 3),
            _ => s("m³", 6, 3),
        },
        "0.01%vol" => s("%", 2, 2),
        "0.01degC" => s("°C", 2, 2),
        "mV" => s("V", 3, 3),
        "mA" => s("A", 3, 3),
        "mHz" => s("Hz", 3, 3),
        "Pa" => match m {
            0..10_000 => s("Pa", 0, 0),
            _ => s("kPa", 3, 3),
        },
        "bool" | "1" => s("", 0, 0),
        other => s(other, 0, 0),
    }
}

fn duration(secs: i64) -> String {
    let neg = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    match s {
        0..120 => format!("{neg}{s} s"),
        120..3_600 => format!("{neg}{} min {:02} s", s / 60, s % 60),
        3_600..172_800 => format!("{neg}{} h {:02} min", s / 3600, (s % 3600) / 60),
        _ => format!("{neg}{} d {:02} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How a person reads `value` (base units) of quantity `q`.
pub fn display(q: Quantity, value: i64) -> DisplayValue {
    match q.unit() {
        "bool" => DisplayValue {
            number: match value {
                0 => "off".to_string(),
                1 => "on".to_string(),
                v => format!("invalid ({v})"),
            },
            unit: "",
        },
        "s" => DisplayValue {
            number: duration(value),
            unit: "",
        },
        unit => {
            let sc = scale_for(q, value.unsigned_abs());
            let number = match unit {
                // Cumulative quantities: full resolution in the chosen unit,
                // so a counter visibly moves.
                "Wh" | "mL" => sc.format(value, sc.max_decimals),
                "0.01%vol" | "0.01degC" => sc.format(value, 2),
                _ => sc.format_sig4(value),
            };
            DisplayValue {
                number,
                unit: sc.unit,
            }
        }
    }
}

/// The display unit of a quantity at a typical magnitude (for headings).
pub fn display_unit(q: Quantity) -> &'static str {
    match q.unit() {
        "bool" => "on/off",
        "s" => "s",
        "1" => "count",
        _ => scale_for(q, 0).unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn d(q: Quantity, v: i64) -> String {
        display(q, v).to_string()
    }

    #[test]
    fn the_values_of_the_issue_read_as_a_technician_expects() {
        assert_eq!(d(Quantity::Ch4Fraction, 5843), "58.43 %");
        assert_eq!(d(Quantity::Voltage, 231_668), "231.7 V");
        assert_eq!(d(Quantity::Frequency, 50_000), "50.00 Hz");
        assert_eq!(d(Quantity::Temperature, 2875), "28.75 °C");
        assert_eq!(d(Quantity::Status, 1), "on");
        assert_eq!(d(Quantity::Status, 0), "off");
        assert_eq!(d(Quantity::Status, 7), "invalid (7)");
    }

    #[test]
    fn sizes_pick_a_unit_and_never_invent_precision() {
        assert_eq!(d(Quantity::Current, 850), "0.850 A");
        assert_eq!(d(Quantity::Current, 12_345), "12.35 A");
        assert_eq!(d(Quantity::Pressure, 101_325), "101.3 kPa");
        assert_eq!(d(Quantity::Pressure, 950), "950 Pa");
        assert_eq!(d(Quantity::WaterLevel, -35), "-35 mm");
        assert_eq!(d(Quantity::Count, 12), "12");
        assert_eq!(d(Quantity::Energy, 999), "999 Wh");
        assert_eq!(d(Quantity::Energy, 12_345_678), "12345.678 kWh");
        assert_eq!(d(Quantity::WaterVolume, 1_234_567), "1.235 m³");
        assert_eq!(d(Quantity::WaterVolume, 2_500), "2.500 L");
        assert_eq!(d(Quantity::Temperature, -525), "-5.25 °C");
        assert_eq!(d(Quantity::Temperature, -1), "-0.01 °C");
        assert_eq!(d(Quantity::RunTime, 3725), "1 h 02 min");
        assert_eq!(d(Quantity::RunTime, 65), "65 s");
    }

    #[test]
    fn power_follows_its_base_unit() {
        let p = d(Quantity::Power, 5843);
        match Quantity::Power.unit() {
            "W" => assert_eq!(p, "5.843 kW"),
            "mW" => assert_eq!(p, "5.843 W"),
            u => panic!("unexpected power unit {u}"),
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero_and_carries() {
        assert_eq!(fixed(1_005, 1, 0), "101");
        assert_eq!(fixed(-1_005, 1, 0), "-101");
        assert_eq!(fixed(-4, 1, 0), "0");
        assert_eq!(fixed(12, 3, 3), "0.012");
        assert_eq!(fixed(12, 0, 2), "12.00");
        // 9999.6 V shown with 4 significant digits is 10000 V, not 9999.6.
        let v = Scale {
            unit: "V",
            pow10: 3,
            max_decimals: 3,
        };
        assert_eq!(v.format_sig4(9_999_600), "10000");
        assert_eq!(v.format_sig4(99_996), "100.0");
        assert_eq!(v.format_sig4(0), "0", "a zero needs no decimals");
        assert_eq!(fixed(i64::MIN, 0, 0), "-9223372036854775808");
    }

    #[test]
    fn every_quantity_has_a_display_unit() {
        for q in Quantity::ALL {
            assert!(!display_unit(q).is_empty(), "{q:?}");
            assert!(!d(q, 1).is_empty());
        }
    }
}
