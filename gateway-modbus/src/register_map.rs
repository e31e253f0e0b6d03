//! Register maps: what to read from a Modbus device and how to turn the
//! words into a reading.
//!
//! A [`RegisterMap`] is the validated, typed form of a device's `registers`
//! (inline or from a profile file). Each [`RegisterDef`] names one channel of
//! the device's frame. Invariants (checked by `config::validate`, relied on by
//! the planner and the decoder):
//! - every definition fits one request: its register count is at most the
//!   function's limit (125 registers, 2000 bits);
//! - no definition touches an address listed in [`RegisterMap::unreadable`];
//! - names are unique within a map, and scale-factor registers are registers
//!   of the same function (holding or input) as the value they scale.
//!
//! Byte order letters follow Telegraf's modbus input: `A` is the most
//! significant byte of the value. `ABCD` is big-endian (the Modbus default),
//! `CDAB` swaps the 16-bit words (low word first), `BADC` swaps the bytes in
//! each word, `DCBA` is fully little-endian. For 64-bit values the same two
//! operations (byte swap in each word, reverse word order) extend to four
//! words; for 16-bit values only the byte swap applies.

use mrv_shared::conversion::Conversion;
use mrv_shared::ids::ChannelId;
use mrv_shared::quantity::{Quantity, ValueKind};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The Modbus table a value lives in (and so the read function code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils, function 0x01 (1 bit each).
    Coils,
    /// Discrete inputs, function 0x02 (1 bit each).
    DiscreteInputs,
    /// Holding registers, function 0x03 (16 bits each).
    Holding,
    /// Input registers, function 0x04 (16 bits each).
    Input,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 4] = [
        Table::Coils,
        Table::DiscreteInputs,
        Table::Holding,
        Table::Input,
    ];

    /// The most items one read request may ask for (Modbus application
    /// protocol spec: 2000 bits, 125 registers).
    pub fn max_per_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    /// True for the 1-bit tables.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coils | Table::DiscreteInputs)
    }

    /// The read function code.
    pub fn function_code(self) -> u8 {
        match self {
            Table::Coils => 0x01,
            Table::DiscreteInputs => 0x02,
            Table::Holding => 0x03,
            Table::Input => 0x04,
        }
    }

    /// The config name (`coils`, `discrete_inputs`, `holding`, `input`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Coils => "coils",
            Table::DiscreteInputs => "discrete_inputs",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The encoding of a value in the device's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// One bit (coil / discrete input), or a register that is non-zero.
    Bool,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit (two's complement).
    I16,
    /// Unsigned 32-bit.
    U32,
    /// Signed 32-bit.
    I32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
    /// ASCII text of the given number of registers (two bytes each), NUL or
    /// space padded. Only for display (CLI, SunSpec common model); a string
    /// cannot be a reading.
    String(u16),
}

impl DataType {
    /// Registers (or bits) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String(n) => n,
        }
    }

    /// Width in bits of the integer types (for counter rollover).
    pub fn int_bits(self) -> Option<u8> {
        match self {
            DataType::U16 | DataType::I16 => Some(16),
            DataType::U32 | DataType::I32 => Some(32),
            DataType::U64 | DataType::I64 => Some(64),
            _ => None,
        }
    }

    /// Parses a config name (`u16`, `f32`, `string`, ... ); strings take
    /// their length separately.
    pub fn parse(name: &str, string_len: Option<u16>) -> Option<DataType> {
        Some(match name {
            "bool" => DataType::Bool,
            "u16" | "uint16" => DataType::U16,
            "i16" | "int16" => DataType::I16,
            "u32" | "uint32" => DataType::U32,
            "i32" | "int32" => DataType::I32,
            "u64" | "uint64" => DataType::U64,
            "i64" | "int64" => DataType::I64,
            "f32" | "float32" => DataType::F32,
            "f64" | "float64" => DataType::F64,
            "string" => DataType::String(string_len?),
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Bool => f.write_str("bool"),
            DataType::U16 => f.write_str("u16"),
            DataType::I16 => f.write_str("i16"),
            DataType::U32 => f.write_str("u32"),
            DataType::I32 => f.write_str("i32"),
            DataType::U64 => f.write_str("u64"),
            DataType::I64 => f.write_str("i64"),
            DataType::F32 => f.write_str("f32"),
            DataType::F64 => f.write_str("f64"),
            DataType::String(n) => write!(f, "string[{n}]"),
        }
    }
}

/// Byte and word order of a multi-byte value (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ByteOrder {
    /// Big-endian: high word first, high byte first.
    #[default]
    ABCD,
    /// Little-endian: low word first, low byte first.
    DCBA,
    /// High word first, bytes swapped within each word.
    BADC,
    /// Low word first ("word swapped"), high byte first in each word.
    CDAB,
}

impl ByteOrder {
    /// True when the two bytes of every word are swapped.
    pub fn swaps_bytes(self) -> bool {
        matches!(self, ByteOrder::DCBA | ByteOrder::BADC)
    }
    /// True when the words come low word first.
    pub fn reverses_words(self) -> bool {
        matches!(self, ByteOrder::DCBA | ByteOrder::CDAB)
    }
}

/// An exact scale factor `num / den` (`den` positive, `num` carries the
/// sign) from the raw register value to base units.
///
/// Config files write scales as decimals (`0.001`, `1000`, `0.1`) and a
/// `unit` (`W`, `kWh`); validation folds the unit's exact factor into the
/// scale ([`Scale::then_unit`]). Kept as a fraction so that integer
/// registers (32- and 64-bit energy counters) scale without going through
/// `f64` and losing digits, a frequent complaint about float-based scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scale {
    /// Numerator.
    pub num: i64,
    /// Denominator, at least 1.
    pub den: i64,
}

impl Scale {
    /// The identity scale.
    pub const ONE: Scale = Scale { num: 1, den: 1 };

    /// The exact fraction for a decimal with at most 9 decimal places and a
    /// magnitude below 1e9; `None` otherwise (or for 0, NaN, infinities).
    pub fn from_decimal(x: f64) -> Option<Scale> {
        if !x.is_finite() || x == 0.0 || x.abs() >= 1e9 {
            return None;
        }
        let mut den: i64 = 1;
        for _ in 0..=9 {
            let scaled = x * den as f64;
            let rounded = scaled.round();
            if (scaled - rounded).abs() <= 1e-6 {
                // `rounded` is below 1e18 in magnitude: fits an i64.
                return Some(Scale {
                    num: rounded as i64,
                    den,
                });
            }
            den *= 10;
        }
        None
    }

    /// This scale times `10^exp` (a SunSpec scale factor), if it stays
    /// representable (|exp| <= 10).
    pub fn with_pow10(self, exp: i16) -> Option<Scale> {
        if exp.unsigned_abs() > 10 {
            return None;
        }
        let p = 10_i64.checked_pow(u32::from(exp.unsigned_abs()))?;
        if exp >= 0 {
            Some(Scale {
                num: self.num.checked_mul(p)?,
                den: self.den,
            })
        } else {
            Some(Scale {
                num: self.num,
                den: self.den.checked_mul(p)?,
            })
        }
    }

    /// The scale as a float (display only; decoding is exact).
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// The same factor as an exact [`Conversion`].
    pub fn conversion(self) -> Conversion {
        Conversion::new(i128::from(self.num), i128::from(self.den.max(1)))
            .unwrap_or(Conversion::ONE)
    }

    /// This scale followed by a unit's factor to the base unit, reduced;
    /// `None` if the result does not fit `i64` numerator and denominator.
    pub fn then_unit(self, unit: Conversion) -> Option<Scale> {
        let c = self.conversion().then(unit)?;
        Some(Scale {
            num: i64::try_from(c.num).ok()?,
            den: i64::try_from(c.den).ok()?,
        })
    }
}

/// Plausibility limits in base units; a value outside gets
/// `Quality::OUT_OF_RANGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Limits {
    /// Smallest plausible value.
    pub min: Option<i64>,
    /// Largest plausible value.
    pub max: Option<i64>,
}

impl Limits {
    /// True when `v` is inside the limits.
    pub fn contains(&self, v: i64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// SunSpec "not implemented" sentinels apply to this value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Sentinel {
    /// Every raw value is a value.
    #[default]
    None,
    /// SunSpec: `0x8000` (i16), `0xFFFF` (u16), `0x80000000` (i32),
    /// `0xFFFFFFFF` (u32) mean "not implemented"; accumulators use 0.
    SunSpec,
}

/// One value to read: a channel of the device's frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegisterDef {
    /// Channel name in the frame.
    pub name: ChannelId,
    /// Table the value lives in.
    pub table: Table,
    /// Address of the first register (0-based protocol address).
    pub address: u16,
    /// Encoding.
    pub data_type: DataType,
    /// Byte/word order.
    pub order: ByteOrder,
    /// Multiplier from raw value to base units.
    pub scale: Scale,
    /// Address (same table) of an `i16` power-of-ten scale factor applied on
    /// top of `scale` (SunSpec `*_SF` registers).
    pub scale_factor_at: Option<u16>,
    /// Added after scaling, in base units.
    pub offset: i64,
    /// What the value measures.
    pub quantity: Quantity,
    /// Instant, counter or delta.
    pub kind: ValueKind,
    /// For counters: the raw counter wraps at `2^bits`.
    pub rollover_bits: Option<u8>,
    /// Plausibility limits, base units.
    pub limits: Limits,
    /// "Not implemented" sentinel handling.
    pub sentinel: Sentinel,
}

impl RegisterDef {
    /// First address after the value.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.data_type.width())
    }
}

/// A range of addresses the device must never be asked for (it answers
/// with an exception, or reading it has side effects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unreadable {
    /// Table of the range.
    pub table: Table,
    /// First address.
    pub start: u16,
    /// Number of addresses (at least 1).
    pub count: u16,
}

impl Unreadable {
    /// True when `[start, end)` of `table` meets this range.
    pub fn overlaps(&self, table: Table, start: u32, end: u32) -> bool {
        let own_end = u32::from(self.start) + u32::from(self.count);
        self.table == table && start < own_end && u32::from(self.start) < end
    }
}

/// A device's validated register map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterMap {
    /// The values (each a channel), in config order.
    pub registers: Vec<RegisterDef>,
    /// Ranges never to read.
    pub unreadable: Vec<Unreadable>,
}

impl RegisterMap {
    /// Every `(table, start, count)` span the map needs: each value plus each
    /// scale-factor register. Index `i < registers.len()` is register `i`.
    pub fn spans(&self) -> Vec<(Table, u16, u16)> {
        let mut out: Vec<(Table, u16, u16)> = self
            .registers
            .iter()
            .map(|r| (r.table, r.address, r.data_type.width()))
            .collect();
        for r in &self.registers {
            if let Some(sf) = r.scale_factor_at {
                out.push((r.table, sf, 1));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_scales_become_exact_fractions() {
        assert_eq!(
            Scale::from_decimal(0.001),
            Some(Scale { num: 1, den: 1000 })
        );
        assert_eq!(
            Scale::from_decimal(1000.0),
            Some(Scale { num: 1000, den: 1 })
        );
        assert_eq!(Scale::from_decimal(0.1), Some(Scale { num: 1, den: 10 }));
        assert_eq!(Scale::from_decimal(-2.5), Some(Scale { num: -25, den: 10 }));
        assert_eq!(Scale::from_decimal(0.0), None);
        assert_eq!(Scale::from_decimal(f64::NAN), None);
        assert_eq!(Scale::from_decimal(1.0 / 3.0), None);
    }

    #[test]
    fn units_fold_into_the_scale_exactly() {
        let w = Conversion::new(1000, 1).expect("W to mW");
        assert_eq!(
            Scale::from_decimal(0.1).and_then(|s| s.then_unit(w)),
            Some(Scale { num: 100, den: 1 })
        );
        assert_eq!(
            Scale::from_decimal(0.001).and_then(|s| s.then_unit(w)),
            Some(Scale::ONE)
        );
    }

    #[test]
    fn sunspec_exponents_multiply_or_divide() {
        assert_eq!(Scale::ONE.with_pow10(-2), Some(Scale { num: 1, den: 100 }));
        assert_eq!(Scale::ONE.with_pow10(3), Some(Scale { num: 1000, den: 1 }));
        assert_eq!(Scale::ONE.with_pow10(11), None);
    }

    #[test]
    fn limits_are_inclusive() {
        let l = Limits {
            min: Some(0),
            max: Some(10),
        };
        assert!(l.contains(0) && l.contains(10));
        assert!(!l.contains(-1) && !l.contains(11));
        assert!(Limits::default().contains(i64::MIN));
    }

    #[test]
    fn unreadable_overlap_is_half_open() {
        let u = Unreadable {
            table: Table::Holding,
            start: 10,
            count: 2,
        };
        assert!(u.overlaps(Table::Holding, 11, 12));
        assert!(!u.overlaps(Table::Holding, 12, 20));
        assert!(!u.overlaps(Table::Holding, 0, 10));
        assert!(!u.overlaps(Table::Input, 10, 12));
    }
}
