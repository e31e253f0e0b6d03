//! The Modbus register decoder: the words a device answered, to a value in
//! integer base units ([`mrv_gateway::modbus::decode`]).
//!
//! Input: a type byte, an order byte, a flags byte, rollover bits, the
//! scale (numerator, denominator), the offset, a scale-factor word, then
//! the register words (big-endian pairs of bytes).

use mrv_gateway::modbus::decode::{RawValue, decode_raw, decode_value};
use mrv_gateway::modbus::register_map::{
    ByteOrder, DataType, Limits, RegisterDef, Scale, Sentinel, Table,
};
use mrv_shared::conversion::Converted;
use mrv_shared::ids::ChannelId;
use mrv_shared::quantity::{Quantity, ValueKind};

const ORDERS: [ByteOrder; 4] = [
    ByteOrder::ABCD,
    ByteOrder::DCBA,
    ByteOrder::BADC,
    ByteOrder::CDAB,
];

fn data_type(code: u8, len: u8) -> DataType {
    match code % 10 {
        0 => DataType::Bool,
        1 => DataType::U16,
        2 => DataType::I16,
        3 => DataType::U32,
        4 => DataType::I32,
        5 => DataType::U64,
        6 => DataType::I64,
        7 => DataType::F32,
        8 => DataType::F64,
        _ => DataType::String(u16::from(len % 8) + 1),
    }
}

/// Words a device holding the value whose big-endian bytes are `be` sends
/// in `order`, written independently of the decoder: `A` is the most
/// significant byte; 16-bit values only honour the byte swap.
fn device_words(be: &[u8], order: ByteOrder) -> Vec<u16> {
    let mut words: Vec<u16> = be
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    if matches!(order, ByteOrder::BADC | ByteOrder::DCBA) {
        words = words.iter().map(|w| w.swap_bytes()).collect();
    }
    if matches!(order, ByteOrder::CDAB | ByteOrder::DCBA) {
        words.reverse();
    }
    words
}

/// The integer that big-endian bytes `be` mean as `data_type`.
fn integer_of(data_type: DataType, be: &[u8]) -> Option<i128> {
    let mut u: u128 = 0;
    for b in be {
        u = (u << 8) | u128::from(*b);
    }
    let bits = 8 * be.len() as u32;
    let signed = matches!(data_type, DataType::I16 | DataType::I32 | DataType::I64);
    match data_type {
        DataType::U16 | DataType::U32 | DataType::U64 => Some(u as i128),
        DataType::I16 | DataType::I32 | DataType::I64 if signed => {
            let sign = 1u128 << (bits - 1);
            Some(if u & sign != 0 {
                u as i128 - (1i128 << bits)
            } else {
                u as i128
            })
        }
        _ => None,
    }
}

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = data.len().min(N);
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// The body of the `modbus_decode` target.
pub fn decode(mut data: &[u8]) {
    let [code, order_code, flags, bits] = take::<4>(&mut data);
    let num = i64::from_le_bytes(take::<8>(&mut data));
    let den = i64::from_le_bytes(take::<8>(&mut data));
    let offset = i64::from_le_bytes(take::<8>(&mut data));
    let sf_word = u16::from_le_bytes(take::<2>(&mut data));
    let data_type = data_type(code, code >> 4);
    let order = ORDERS[usize::from(order_code % 4)];
    let words: Vec<u16> = data
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();

    // 1. Integers: decoding what an independent encoder wrote gives the value.
    let width = usize::from(data_type.width());
    if data.len() >= 2 * width
        && let Some(expect) = integer_of(data_type, &data[..2 * width])
    {
        let sent = device_words(&data[..2 * width], order);
        assert_eq!(
            decode_raw(data_type, order, &sent),
            Ok(RawValue::Int(expect)),
            "{data_type:?} {order:?} {sent:04x?}"
        );
        // Unit scale, no offset, no sentinel: the value itself, exactly.
        let plain = def(data_type, order, Scale::ONE, 0, ValueKind::Instant);
        let got = decode_value(&plain, &sent, None);
        match i64::try_from(expect) {
            Ok(v) => assert_eq!(
                got,
                Ok(Converted {
                    value: v,
                    rounded: false
                })
            ),
            Err(_) => assert!(got.is_err(), "{expect} does not fit i64: {got:?}"),
        }
    }

    // 2. Any definition a config can produce, any words: an answer, no panic.
    let kind = match flags % 3 {
        0 => ValueKind::Instant,
        1 => ValueKind::Counter,
        _ => ValueKind::Delta,
    };
    // Validation gives a non-zero numerator and a positive denominator.
    let scale = Scale {
        num: if num == 0 { 1 } else { num },
        den: den.checked_abs().unwrap_or(i64::MAX).max(1),
    };
    let mut d = def(data_type, order, scale, offset, kind);
    if flags & 0x04 != 0 {
        d.sentinel = Sentinel::SunSpec;
    }
    if flags & 0x08 != 0 && kind == ValueKind::Counter {
        d.rollover_bits = Some(bits % 64 + 1);
    }
    let sf = (flags & 0x10 != 0).then_some(sf_word);
    let raw = decode_raw(data_type, order, &words);
    if words.len() != width {
        assert!(raw.is_err(), "a wrong word count is an error");
    }
    let got = decode_value(&d, &words, sf);
    if let (Ok(c), Ok(RawValue::Int(r))) = (&got, &raw)
        && scale.den == 1
        && sf.is_none()
        && d.rollover_bits.is_none()
    {
        assert!(!c.rounded, "an integer times an integer is exact");
        assert_eq!(
            i128::from(c.value),
            r * i128::from(scale.num) + i128::from(offset)
        );
    }
    if let Ok(RawValue::Text(_)) = raw {
        assert!(got.is_err(), "a string has no numeric value");
    }
}

fn def(
    data_type: DataType,
    order: ByteOrder,
    scale: Scale,
    offset: i64,
    kind: ValueKind,
) -> RegisterDef {
    RegisterDef {
        name: ChannelId::new("fuzz").expect("valid id"),
        table: Table::Holding,
        address: 0,
        data_type,
        order,
        scale,
        scale_factor_at: None,
        offset,
        quantity: Quantity::Energy,
        kind,
        rollover_bits: None,
        limits: Limits::default(),
        sentinel: Sentinel::None,
    }
}
