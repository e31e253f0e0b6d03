//! LEB128 varints (canonical: minimal length only) and zigzag for signed values.

use super::{DecodeError, Invalid};
use alloc::vec::Vec;

/// Appends `v` as a LEB128 varint.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends `v` zigzag-encoded.
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Reads a varint at `*pos`, advancing it. Rejects non-minimal encodings so
/// that every value has exactly one byte form.
pub fn get_u64(buf: &[u8], pos: &mut usize, field: &'static str) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some(&byte) = buf.get(*pos + i) else {
            return Err(DecodeError::Incomplete { needed: 1 });
        };
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 0x01 {
            return Err(Invalid::BadVarint(field).into());
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(Invalid::BadVarint(field).into());
            }
            *pos += i + 1;
            return Ok(v);
        }
    }
    Err(Invalid::BadVarint(field).into())
}

/// Reads a zigzag varint.
pub fn get_i64(buf: &[u8], pos: &mut usize, field: &'static str) -> Result<i64, DecodeError> {
    let u = get_u64(buf, pos, field)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut v = Vec::new();
        put_u64(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        v.clear();
        put_i64(&mut v, -1);
        assert_eq!(v, [0x01]);
        v.clear();
        put_u64(&mut v, u64::MAX);
        assert_eq!(v.len(), 10);
    }

    #[test]
    fn non_minimal_is_invalid() {
        let mut pos = 0;
        assert_eq!(
            get_u64(&[0x80, 0x00], &mut pos, "x"),
            Err(DecodeError::Invalid(Invalid::BadVarint("x")))
        );
    }

    #[test]
    fn truncated_is_incomplete() {
        let mut pos = 0;
        assert!(matches!(
            get_u64(&[0x80], &mut pos, "x"),
            Err(DecodeError::Incomplete { .. })
        ));
        assert_eq!(pos, 0);
    }

    proptest! {
        #[test]
        fn round_trips(a: u64, b: i64) {
            let mut v = Vec::new();
            put_u64(&mut v, a);
            put_i64(&mut v, b);
            let mut pos = 0;
            prop_assert_eq!(get_u64(&v, &mut pos, "a").unwrap(), a);
            prop_assert_eq!(get_i64(&v, &mut pos, "b").unwrap(), b);
            prop_assert_eq!(pos, v.len());
        }
    }
}
