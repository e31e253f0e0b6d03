//! The decoder: register words (or bits) to a value in integer base units.
//!
//! Pure functions, no I/O. Steps for one [`RegisterDef`]:
//! 1. [`decode_raw`]: reorder the words/bytes per [`ByteOrder`] and
//!    interpret them as the [`DataType`] (a [`RawValue`]);
//! 2. sentinel check (SunSpec "not implemented"), NaN/infinity check;
//! 3. counters: reduce modulo `2^rollover_bits`;
//! 4. [`to_base_units`]: `raw * scale * 10^sf + offset`, where `scale`
//!    already includes the register's unit (W to mW, kWh to Wh), computed
//!    exactly by [`mrv_shared::conversion`]: integer registers as integers,
//!    float registers as the shortest decimal of their `f32`/`f64` value.
//!    A result with a fraction is rounded half away from zero and comes back
//!    with `rounded = true`; the poller flags that sample
//!    `Quality::ROUNDED`. Nothing is rounded silently.
//!
//! Every failure is a [`DecodeError`]; the poller records it as a sample
//! with `Quality::UNAVAILABLE`, never as a guessed number.

use super::register_map::{ByteOrder, DataType, RegisterDef, Scale, Sentinel};
use mrv_shared::conversion::{ConversionError, Converted, Decimal};
use mrv_shared::quantity::ValueKind;

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer or more words than the type needs.
    #[error("{data_type} needs {expected} registers, got {got}")]
    WrongLength {
        /// The type.
        data_type: DataType,
        /// Registers the type needs.
        expected: usize,
        /// Registers given.
        got: usize,
    },
    /// The device reports the point as not implemented (SunSpec sentinel).
    #[error("the device marks this point as not implemented")]
    NotImplemented,
    /// A float register held NaN or an infinity.
    #[error("the register holds {0} (not a number)")]
    NotANumber(&'static str),
    /// The scaled value does not fit an `i64`.
    #[error("value out of the i64 range after scaling")]
    Overflow,
    /// A scale-factor register outside -10..=10 (or its sentinel).
    #[error("scale factor register holds {0}, expected -10..=10")]
    BadScaleFactor(i16),
    /// A string register cannot become a reading.
    #[error("a string register has no numeric value")]
    NotNumeric,
}

/// A value as the device encoded it, before scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// A bit or a boolean register.
    Bool(bool),
    /// Any integer type (wide enough for u64 and i64).
    Int(i128),
    /// A single-precision float register.
    Float32(f32),
    /// A double-precision float register.
    Float(f64),
    /// A string (NUL and trailing spaces trimmed).
    Text(String),
}

impl std::fmt::Display for RawValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawValue::Bool(b) => write!(f, "{b}"),
            RawValue::Int(i) => write!(f, "{i}"),
            RawValue::Float32(x) => write!(f, "{x}"),
            RawValue::Float(x) => write!(f, "{x}"),
            RawValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// The value's bytes, most significant first, after undoing `order`.
pub fn ordered_bytes(words: &[u16], order: ByteOrder) -> Vec<u8> {
    let mut w: Vec<u16> = words.to_vec();
    if order.swaps_bytes() {
        for x in &mut w {
            *x = x.swap_bytes();
        }
    }
    if order.reverses_words() {
        w.reverse();
    }
    w.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// Interprets register words as `data_type` in `order`.
///
/// For 16-bit types only the byte swap of `order` applies; strings take
/// their characters in register order (high byte first unless the order
/// swaps bytes).
pub fn decode_raw(
    data_type: DataType,
    order: ByteOrder,
    words: &[u16],
) -> Result<RawValue, DecodeError> {
    let expected = usize::from(data_type.width());
    if words.len() != expected {
        return Err(DecodeError::WrongLength {
            data_type,
            expected,
            got: words.len(),
        });
    }
    if let DataType::String(_) = data_type {
        let bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| {
                if order.swaps_bytes() {
                    w.to_le_bytes()
                } else {
                    w.to_be_bytes()
                }
            })
            .collect();
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end])
            .trim_end()
            .to_string();
        return Ok(RawValue::Text(text));
    }
    let b = ordered_bytes(words, order);
    let arr2 = |b: &[u8]| [b[0], b[1]];
    let arr4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let arr8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    Ok(match data_type {
        DataType::Bool => RawValue::Bool(words[0] != 0),
        DataType::U16 => RawValue::Int(i128::from(u16::from_be_bytes(arr2(&b)))),
        DataType::I16 => RawValue::Int(i128::from(i16::from_be_bytes(arr2(&b)))),
        DataType::U32 => RawValue::Int(i128::from(u32::from_be_bytes(arr4(&b)))),
        DataType::I32 => RawValue::Int(i128::from(i32::from_be_bytes(arr4(&b)))),
        DataType::U64 => RawValue::Int(i128::from(u64::from_be_bytes(arr8(&b)))),
        DataType::I64 => RawValue::Int(i128::from(i64::from_be_bytes(arr8(&b)))),
        DataType::F32 => RawValue::Float32(f32::from_be_bytes(arr4(&b))),
        DataType::F64 => RawValue::Float(f64::from_be_bytes(arr8(&b))),
        DataType::String(_) => unreachable!("strings returned above"),
    })
}

/// True when `raw` is the SunSpec "not implemented" value for `data_type`.
///
/// Accumulators (counters) use 0 as their sentinel; the caller passes
/// `kind` so that a counter reading 0 counts as not implemented.
pub fn is_sunspec_sentinel(data_type: DataType, kind: ValueKind, raw: &RawValue) -> bool {
    let RawValue::Int(v) = raw else {
        return false;
    };
    if kind == ValueKind::Counter {
        return *v == 0;
    }
    match data_type {
        DataType::I16 => *v == i128::from(i16::MIN),
        DataType::U16 => *v == i128::from(u16::MAX),
        DataType::I32 => *v == i128::from(i32::MIN),
        DataType::U32 => *v == i128::from(u32::MAX),
        DataType::I64 => *v == i128::from(i64::MIN),
        DataType::U64 => *v == i128::from(u64::MAX),
        _ => false,
    }
}

fn not_a_number(x: f64) -> DecodeError {
    DecodeError::NotANumber(if x.is_nan() { "NaN" } else { "infinity" })
}

/// Scales a raw value into base units: `raw * scale + offset`, exactly,
/// with the rounding rule of [`mrv_shared::conversion`] (the result says
/// whether it rounded).
pub fn to_base_units(raw: &RawValue, scale: Scale, offset: i64) -> Result<Converted, DecodeError> {
    let conv = scale.conversion();
    let overflow = |e: ConversionError| match e {
        ConversionError::Overflow => DecodeError::Overflow,
        ConversionError::NotFinite => DecodeError::NotANumber("NaN"),
    };
    let c = match raw {
        RawValue::Bool(b) => Converted {
            value: i64::from(*b),
            rounded: false,
        },
        RawValue::Int(v) => conv.apply_int(*v).map_err(overflow)?,
        RawValue::Float32(x) => {
            let d = Decimal::from_f32(*x).map_err(|_| not_a_number(f64::from(*x)))?;
            conv.apply_decimal(d).map_err(overflow)?
        }
        RawValue::Float(x) => {
            let d = Decimal::from_f64(*x).map_err(|_| not_a_number(*x))?;
            conv.apply_decimal(d).map_err(overflow)?
        }
        RawValue::Text(_) => return Err(DecodeError::NotNumeric),
    };
    let value = c.value.checked_add(offset).ok_or(DecodeError::Overflow)?;
    Ok(Converted {
        value,
        rounded: c.rounded,
    })
}

/// Decodes a scale-factor register (`i16` power of ten).
pub fn decode_scale_factor(word: u16) -> Result<i16, DecodeError> {
    let sf = i16::from_be_bytes(word.to_be_bytes());
    if (-10..=10).contains(&sf) {
        Ok(sf)
    } else {
        Err(DecodeError::BadScaleFactor(sf))
    }
}

/// Decodes one register definition from its words (bits arrive as words of
/// 0 or 1) and, when the definition has one, its scale-factor word.
pub fn decode_value(
    def: &RegisterDef,
    words: &[u16],
    scale_factor_word: Option<u16>,
) -> Result<Converted, DecodeError> {
    let mut raw = decode_raw(def.data_type, def.order, words)?;
    if def.sentinel == Sentinel::SunSpec && is_sunspec_sentinel(def.data_type, def.kind, &raw) {
        return Err(DecodeError::NotImplemented);
    }
    if let (Some(bits), RawValue::Int(v)) = (def.rollover_bits, &raw)
        && def.kind == ValueKind::Counter
        && bits < 127
    {
        raw = RawValue::Int(v.rem_euclid(1_i128 << bits));
    }
    let scale = match scale_factor_word {
        Some(w) => {
            let sf = decode_scale_factor(w)?;
            def.scale
                .with_pow10(sf)
                .ok_or(DecodeError::BadScaleFactor(sf))?
        }
        None => def.scale,
    };
    to_base_units(&raw, scale, def.offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register_map::{Limits, Table};
    use mrv_shared::ids::ChannelId;
    use mrv_shared::quantity::Quantity;

    fn exact(value: i64) -> Converted {
        Converted {
            value,
            rounded: false,
        }
    }

    fn rounded(value: i64) -> Converted {
        Converted {
            value,
            rounded: true,
        }
    }

    fn def(data_type: DataType, order: ByteOrder, scale: Scale) -> RegisterDef {
        RegisterDef {
            name: ChannelId::new("x").expect("valid id"),
            table: Table::Holding,
            address: 0,
            data_type,
            order,
            scale,
            scale_factor_at: None,
            offset: 0,
            quantity: Quantity::Energy,
            kind: ValueKind::Instant,
            rollover_bits: None,
            limits: Limits::default(),
            sentinel: Sentinel::None,
        }
    }

    // 0x41200000 is 10.0f32; 0x3FF0000000000000 is 1.0f64.
    #[test]
    fn f32_ten_decodes_in_all_four_orders() {
        let cases: [(ByteOrder, [u16; 2]); 4] = [
            (ByteOrder::ABCD, [0x4120, 0x0000]),
            (ByteOrder::CDAB, [0x0000, 0x4120]),
            (ByteOrder::BADC, [0x2041, 0x0000]),
            (ByteOrder::DCBA, [0x0000, 0x2041]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_raw(DataType::F32, order, &words),
                Ok(RawValue::Float32(10.0)),
                "{order:?}"
            );
        }
    }

    #[test]
    fn u32_0x01020304_decodes_in_all_four_orders() {
        let cases: [(ByteOrder, [u16; 2]); 4] = [
            (ByteOrder::ABCD, [0x0102, 0x0304]),
            (ByteOrder::CDAB, [0x0304, 0x0102]),
            (ByteOrder::BADC, [0x0201, 0x0403]),
            (ByteOrder::DCBA, [0x0403, 0x0201]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_raw(DataType::U32, order, &words),
                Ok(RawValue::Int(0x0102_0304)),
                "{order:?}"
            );
        }
    }

    #[test]
    fn sixty_four_bit_values_extend_the_same_rules() {
        let w = [0x0102, 0x0304, 0x0506, 0x0708];
        assert_eq!(
            decode_raw(DataType::U64, ByteOrder::ABCD, &w),
            Ok(RawValue::Int(0x0102_0304_0506_0708))
        );
        let swapped = [0x0708, 0x0506, 0x0304, 0x0102];
        assert_eq!(
            decode_raw(DataType::U64, ByteOrder::CDAB, &swapped),
            Ok(RawValue::Int(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode_raw(DataType::F64, ByteOrder::ABCD, &[0x3FF0, 0, 0, 0]),
            Ok(RawValue::Float(1.0))
        );
        assert_eq!(
            decode_raw(DataType::I64, ByteOrder::ABCD, &[0xFFFF; 4]),
            Ok(RawValue::Int(-1))
        );
    }

    #[test]
    fn sixteen_bit_values_only_honour_the_byte_swap() {
        assert_eq!(
            decode_raw(DataType::I16, ByteOrder::ABCD, &[0xFFFE]),
            Ok(RawValue::Int(-2))
        );
        assert_eq!(
            decode_raw(DataType::U16, ByteOrder::CDAB, &[0x1234]),
            Ok(RawValue::Int(0x1234))
        );
        assert_eq!(
            decode_raw(DataType::U16, ByteOrder::DCBA, &[0x1234]),
            Ok(RawValue::Int(0x3412))
        );
    }

    #[test]
    fn strings_trim_padding_and_wrong_lengths_are_errors() {
        // "SunS" then NUL padding.
        assert_eq!(
            decode_raw(DataType::String(3), ByteOrder::ABCD, &[0x5375, 0x6e53, 0]),
            Ok(RawValue::Text("SunS".into()))
        );
        assert_eq!(
            decode_raw(DataType::U32, ByteOrder::ABCD, &[1]),
            Err(DecodeError::WrongLength {
                data_type: DataType::U32,
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn integer_counters_scale_exactly_beyond_f64_precision() {
        // 2^60 + 1 Wh would lose the +1 in f64.
        let d = def(DataType::U64, ByteOrder::ABCD, Scale::ONE);
        let v = (1_u64 << 60) + 1;
        let words = [
            (v >> 48) as u16,
            (v >> 32) as u16,
            (v >> 16) as u16,
            v as u16,
        ];
        assert_eq!(decode_value(&d, &words, None), Ok(exact(v as i64)));
    }

    #[test]
    fn decimal_scales_round_half_away_from_zero() {
        let d = def(
            DataType::I16,
            ByteOrder::ABCD,
            Scale::from_decimal(0.1).expect("exact"),
        );
        assert_eq!(decode_value(&d, &[15], None), Ok(rounded(2)));
        assert_eq!(decode_value(&d, &[14], None), Ok(rounded(1)));
        assert_eq!(decode_value(&d, &[20], None), Ok(exact(2)));
        assert_eq!(decode_value(&d, &[(-15_i16) as u16], None), Ok(rounded(-2)));
    }

    fn f32_words(x: f32) -> [u16; 2] {
        let bits = x.to_bits();
        [(bits >> 16) as u16, bits as u16]
    }

    #[test]
    fn float_kwh_becomes_integer_wh_and_says_it_rounded() {
        // 1234.5678 kWh is the f32 1234.5677 (its shortest decimal):
        // 1234567.7 Wh, rounded to 1234568 Wh and flagged.
        let d = def(
            DataType::F32,
            ByteOrder::ABCD,
            Scale::from_decimal(1000.0).expect("exact"),
        );
        assert_eq!(
            decode_value(&d, &f32_words(1234.5678), None),
            Ok(rounded(1_234_568))
        );
        assert_eq!(
            decode_value(&d, &f32_words(1234.5), None),
            Ok(exact(1_234_500))
        );
    }

    #[test]
    fn fractional_watts_are_exact_milliwatts() {
        // The technician's meter: -1500.25 W.
        let mut d = def(DataType::F32, ByteOrder::ABCD, Scale::ONE);
        d.quantity = Quantity::Power;
        d.scale = Scale::ONE
            .then_unit(Quantity::Power.conversion_from("W").expect("a power unit"))
            .expect("fits");
        assert_eq!(
            decode_value(&d, &f32_words(-1500.25), None),
            Ok(exact(-1_500_250))
        );
        // 230.1 V in an f32 is 230100 mV, not 230100.006.
        d.quantity = Quantity::Voltage;
        assert_eq!(
            decode_value(&d, &f32_words(230.1), None),
            Ok(exact(230_100))
        );
        // A SunSpec i16 W register with W_SF = -2: 0.01 W resolution, exact.
        let mut s = def(DataType::I16, ByteOrder::ABCD, d.scale);
        s.scale_factor_at = Some(1);
        assert_eq!(
            decode_value(&s, &[(-15_002_i16) as u16], Some((-2_i16) as u16)),
            Ok(exact(-150_020))
        );
        assert_eq!(
            decode_value(&s, &[12345], Some((-2_i16) as u16)),
            Ok(exact(123_450))
        );
    }

    #[test]
    fn nan_is_an_error_not_a_number() {
        let d = def(DataType::F32, ByteOrder::ABCD, Scale::ONE);
        assert_eq!(
            decode_value(&d, &[0x7FC0, 0], None),
            Err(DecodeError::NotANumber("NaN"))
        );
    }

    #[test]
    fn sunspec_scale_factor_and_sentinels() {
        let mut d = def(DataType::I16, ByteOrder::ABCD, Scale::ONE);
        d.sentinel = Sentinel::SunSpec;
        // 1234 with SF -1 -> 123.4 -> 123.
        assert_eq!(
            decode_value(&d, &[1234], Some((-1_i16) as u16)),
            Ok(rounded(123))
        );
        assert_eq!(decode_value(&d, &[1234], Some(2)), Ok(exact(123_400)));
        assert_eq!(
            decode_value(&d, &[0x8000], Some(0)),
            Err(DecodeError::NotImplemented)
        );
        assert_eq!(
            decode_value(&d, &[1], Some(0x8000)),
            Err(DecodeError::BadScaleFactor(i16::MIN))
        );
        d.kind = ValueKind::Counter;
        d.data_type = DataType::U32;
        assert_eq!(
            decode_value(&d, &[0, 0], Some(0)),
            Err(DecodeError::NotImplemented)
        );
    }

    /// Inverse of [`ordered_bytes`]: the words a device with `order` sends
    /// for big-endian value bytes `be`.
    fn encode(be: &[u8], order: ByteOrder) -> Vec<u16> {
        let mut w: Vec<u16> = be
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        if order.reverses_words() {
            w.reverse();
        }
        if order.swaps_bytes() {
            for x in &mut w {
                *x = x.swap_bytes();
            }
        }
        w
    }

    fn any_order() -> impl proptest::strategy::Strategy<Value = ByteOrder> {
        proptest::sample::select(vec![
            ByteOrder::ABCD,
            ByteOrder::DCBA,
            ByteOrder::BADC,
            ByteOrder::CDAB,
        ])
    }

    proptest::proptest! {
        #[test]
        fn every_integer_type_round_trips_in_every_order(
            v in proptest::prelude::any::<i64>(),
            order in any_order(),
        ) {
            let cases: [(DataType, Vec<u8>, i128); 6] = [
                (DataType::I16, (v as i16).to_be_bytes().to_vec(), i128::from(v as i16)),
                (DataType::U16, (v as u16).to_be_bytes().to_vec(), i128::from(v as u16)),
                (DataType::I32, (v as i32).to_be_bytes().to_vec(), i128::from(v as i32)),
                (DataType::U32, (v as u32).to_be_bytes().to_vec(), i128::from(v as u32)),
                (DataType::I64, v.to_be_bytes().to_vec(), i128::from(v)),
                (DataType::U64, (v as u64).to_be_bytes().to_vec(), i128::from(v as u64)),
            ];
            for (t, be, want) in cases {
                // One word: reversing the word order is a no-op, as it must be.
                let words = encode(&be, order);
                proptest::prop_assert_eq!(decode_raw(t, order, &words), Ok(RawValue::Int(want)));
            }
        }

        #[test]
        fn floats_round_trip_in_every_order(x in proptest::prelude::any::<f64>(), order in any_order()) {
            let y = x as f32;
            let w32 = encode(&y.to_bits().to_be_bytes(), order);
            let w64 = encode(&x.to_bits().to_be_bytes(), order);
            match (decode_raw(DataType::F32, order, &w32), decode_raw(DataType::F64, order, &w64)) {
                (Ok(RawValue::Float32(a)), Ok(RawValue::Float(b))) => {
                    proptest::prop_assert_eq!(a.to_bits(), y.to_bits());
                    proptest::prop_assert_eq!(b.to_bits(), x.to_bits());
                }
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn integer_scaling_is_exact_against_i128_arithmetic(
            raw in -(1_i64 << 40)..(1_i64 << 40),
            num in -1000_i64..1000,
            den_exp in 0_u32..6,
        ) {
            proptest::prop_assume!(num != 0);
            let den = 10_i64.pow(den_exp);
            let got = to_base_units(&RawValue::Int(i128::from(raw)), Scale { num, den }, 0);
            let e = i128::from(raw) * i128::from(num);
            let q = e / i128::from(den);
            let r = e % i128::from(den);
            let want = if 2 * r.abs() >= i128::from(den) { q + e.signum() } else { q };
            proptest::prop_assert_eq!(got, Ok(Converted { value: i64::try_from(want).expect("fits"), rounded: r != 0 }));
        }
    }

    #[test]
    fn counters_wrap_at_their_rollover_width() {
        let mut d = def(DataType::I32, ByteOrder::ABCD, Scale::ONE);
        d.kind = ValueKind::Counter;
        d.rollover_bits = Some(32);
        // An i32 counter past 2^31 reads negative; as a counter it is unsigned.
        assert_eq!(
            decode_value(&d, &[0xFFFF, 0xFFFF], None),
            Ok(exact(0xFFFF_FFFF))
        );
        d.rollover_bits = Some(16);
        assert_eq!(decode_value(&d, &[0x0001, 0x0002], None), Ok(exact(2)));
    }

    #[test]
    fn offsets_are_base_units_and_overflow_is_reported() {
        let mut d = def(DataType::U16, ByteOrder::ABCD, Scale::ONE);
        d.offset = -273;
        assert_eq!(decode_value(&d, &[300], None), Ok(exact(27)));
        let big = def(
            DataType::U64,
            ByteOrder::ABCD,
            Scale::from_decimal(1000.0).expect("exact"),
        );
        assert_eq!(
            decode_value(&big, &[0xFFFF; 4], None),
            Err(DecodeError::Overflow)
        );
    }
}
