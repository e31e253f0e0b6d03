//! Compact binary encoding (version 1) of [`Frame`] and [`Ack`].
//!
//! ## Frame
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `"MF"` (0x4d 0x46) |
//! | 2 | 1 | version, `1` |
//! | 3 | 1 | flags: bit 0 signature present, bit 1 base time present; others 0 |
//! | 4 | 4 | body length `N`, u32 little-endian |
//! | 8 | N | body (below) |
//! | 8+N | 4 | CRC-32 (IEEE) of bytes `[0, 8+N)`, little-endian |
//! | 12+N | 64 | Ed25519 signature over bytes `[0, 12+N)`, if flag bit 0 |
//!
//! Body, in order: `site` (u8 length + bytes), `device` (u8 length + bytes),
//! `seq` (varint), `boot` (varint, fits u32), `firmware` (u8 length + UTF-8),
//! `base_time_ms` (varint, only if flag bit 1), channel count (u8), per
//! channel `id` (u8 length + bytes), quantity code (u8), kind code (u8),
//! sample count (varint), per sample channel index (u8), `offset_ms` (varint,
//! fits u32), `value` (zigzag varint), quality (u8).
//!
//! Varints are LEB128 and must be minimal; together with the fixed field
//! order this makes the encoding canonical, which device signatures rely on.
//!
//! ## Ack
//!
//! 12 bytes: magic `"MA"`, version `1`, status code (u8), `acked_seq` (u64 LE).
//!
//! Byte-exact vectors: `shared/tests/vectors/`.

use super::frame::{Ack, AckStatus, Frame, MAX_FIRMWARE_LEN};
use super::varint::{get_i64, get_u64, put_i64, put_u64};
use super::{DecodeError, Invalid, MAX_FRAME_BYTES, MAX_SAMPLES};
use crate::ids::{ChannelId, validate_id};
use crate::quantity::{Quantity, ValueKind};
use crate::reading::{Channel, Quality, Sample};
use alloc::string::String;
use alloc::vec::Vec;

/// Frame magic number.
pub const FRAME_MAGIC: [u8; 2] = *b"MF";
/// Ack magic number.
pub const ACK_MAGIC: [u8; 2] = *b"MA";
/// The version this module writes and reads.
pub const VERSION: u8 = 1;
/// Flag: a signature follows the CRC.
pub const FLAG_SIGNED: u8 = 0x01;
/// Flag: the body has a base time.
pub const FLAG_BASE_TIME: u8 = 0x02;
/// Header length (magic, version, flags, body length).
pub const HEADER_LEN: usize = 8;
/// Encoded ack length.
pub const ACK_LEN: usize = 12;

/// Encodes a frame, with its signature if it has one.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = encode_signed_part(frame, frame.signature.is_some());
    if let Some(sig) = &frame.signature {
        out.extend_from_slice(sig);
    }
    out
}

/// The bytes a device signature covers: the encoding up to and including the
/// CRC, with the "signature present" flag set.
pub fn signing_bytes(frame: &Frame) -> Vec<u8> {
    encode_signed_part(frame, true)
}

fn encode_signed_part(frame: &Frame, signed: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + frame.samples.len() * 8);
    out.extend_from_slice(&FRAME_MAGIC);
    out.push(VERSION);
    let mut flags = 0;
    if signed {
        flags |= FLAG_SIGNED;
    }
    if frame.base_time_ms.is_some() {
        flags |= FLAG_BASE_TIME;
    }
    out.push(flags);
    out.extend_from_slice(&[0; 4]);
    put_str(&mut out, frame.site.as_str());
    put_str(&mut out, frame.device.as_str());
    put_u64(&mut out, frame.seq);
    put_u64(&mut out, u64::from(frame.boot));
    put_str(&mut out, &frame.firmware);
    if let Some(t) = frame.base_time_ms {
        put_u64(&mut out, t);
    }
    out.push(frame.channels.len() as u8);
    for c in &frame.channels {
        put_str(&mut out, c.id.as_str());
        out.push(c.quantity.code());
        out.push(c.kind.code());
    }
    put_u64(&mut out, frame.samples.len() as u64);
    for s in &frame.samples {
        out.push(s.channel);
        put_u64(&mut out, u64::from(s.offset_ms));
        put_i64(&mut out, s.value);
        out.push(s.quality.0);
    }
    let body_len = (out.len() - HEADER_LEN) as u32;
    out[4..8].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Identifiers are <= 32 bytes and firmware is checked by validate();
    // truncation here would only hit frames that fail validation anyway.
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Decodes one frame from the start of `buf`; returns it and the bytes used.
///
/// A prefix of a valid frame gives [`DecodeError::Incomplete`]; anything
/// else that is not a valid frame gives [`DecodeError::Invalid`].
pub fn decode_frame(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    if buf.len() < HEADER_LEN {
        check_prefix(buf, &FRAME_MAGIC)?;
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    check_prefix(buf, &FRAME_MAGIC)?;
    let flags = buf[3];
    if flags & !(FLAG_SIGNED | FLAG_BASE_TIME) != 0 {
        return Err(Invalid::ReservedFlags(flags).into());
    }
    let body_len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let sig_len = if flags & FLAG_SIGNED != 0 { 64 } else { 0 };
    let total = HEADER_LEN + body_len + 4 + sig_len;
    if total > MAX_FRAME_BYTES {
        return Err(Invalid::TooLarge(total).into());
    }
    if buf.len() < total {
        return Err(DecodeError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let crc_at = HEADER_LEN + body_len;
    let stored = u32::from_le_bytes([
        buf[crc_at],
        buf[crc_at + 1],
        buf[crc_at + 2],
        buf[crc_at + 3],
    ]);
    let computed = crc32fast::hash(&buf[..crc_at]);
    if stored != computed {
        return Err(Invalid::BadChecksum { stored, computed }.into());
    }
    // From here on the body is complete: running out of bytes is invalid.
    let body = &buf[..crc_at];
    let frame = decode_body(body, flags).map_err(|e| match e {
        DecodeError::Incomplete { .. } => DecodeError::Invalid(Invalid::LengthMismatch),
        other => other,
    })?;
    let frame = Frame {
        signature: (sig_len > 0).then(|| {
            let mut s = [0u8; 64];
            s.copy_from_slice(&buf[crc_at + 4..crc_at + 68]);
            s
        }),
        ..frame
    };
    frame.validate().map_err(Invalid::Frame)?;
    Ok((frame, total))
}

/// Decodes a buffer that must hold exactly one frame (one MQTT payload).
pub fn decode_frame_exact(buf: &[u8]) -> Result<Frame, DecodeError> {
    let (frame, used) = decode_frame(buf)?;
    if used != buf.len() {
        return Err(Invalid::TrailingBytes(buf.len() - used).into());
    }
    Ok(frame)
}

fn check_prefix(buf: &[u8], magic: &[u8; 2]) -> Result<(), DecodeError> {
    let n = buf.len().min(2);
    if buf[..n] != magic[..n] {
        return Err(Invalid::BadMagic.into());
    }
    if buf.len() > 2 && buf[2] != VERSION {
        return Err(Invalid::UnsupportedVersion(buf[2]).into());
    }
    Ok(())
}

fn decode_body(body: &[u8], flags: u8) -> Result<Frame, DecodeError> {
    let mut pos = HEADER_LEN;
    let site = get_id(body, &mut pos, "site")?;
    let device = get_id(body, &mut pos, "device")?;
    let seq = get_u64(body, &mut pos, "seq")?;
    let boot =
        u32::try_from(get_u64(body, &mut pos, "boot")?).map_err(|_| Invalid::BadVarint("boot"))?;
    let firmware = get_text(body, &mut pos, "firmware", MAX_FIRMWARE_LEN)?;
    let base_time_ms = if flags & FLAG_BASE_TIME != 0 {
        Some(get_u64(body, &mut pos, "base_time_ms")?)
    } else {
        None
    };
    let n_channels = usize::from(get_u8(body, &mut pos)?);
    let mut channels = Vec::with_capacity(n_channels);
    for _ in 0..n_channels {
        let id = ChannelId::new(&get_text(body, &mut pos, "channel", 32)?)
            .map_err(|_| Invalid::BadId("channel"))?;
        let q = get_u8(body, &mut pos)?;
        let quantity = Quantity::from_code(q).ok_or(Invalid::UnknownQuantity(q))?;
        let k = get_u8(body, &mut pos)?;
        let kind = ValueKind::from_code(k).ok_or(Invalid::UnknownKind(k))?;
        channels.push(Channel { id, quantity, kind });
    }
    let n_samples = get_u64(body, &mut pos, "sample_count")?;
    if n_samples > MAX_SAMPLES as u64 {
        return Err(Invalid::Frame(super::FrameError::SampleCount(n_samples as usize)).into());
    }
    let mut samples = Vec::with_capacity(n_samples as usize);
    for _ in 0..n_samples {
        let channel = get_u8(body, &mut pos)?;
        let offset_ms = u32::try_from(get_u64(body, &mut pos, "offset_ms")?)
            .map_err(|_| Invalid::BadVarint("offset_ms"))?;
        let value = get_i64(body, &mut pos, "value")?;
        let quality = get_u8(body, &mut pos)?;
        if quality & !Quality::KNOWN != 0 {
            return Err(Invalid::UnknownQuality(quality).into());
        }
        samples.push(Sample {
            channel,
            offset_ms,
            value,
            quality: Quality(quality),
        });
    }
    if pos != body.len() {
        return Err(Invalid::LengthMismatch.into());
    }
    Ok(Frame {
        site,
        device,
        seq,
        boot,
        firmware,
        base_time_ms,
        channels,
        samples,
        signature: None,
    })
}

fn get_u8(buf: &[u8], pos: &mut usize) -> Result<u8, DecodeError> {
    let b = *buf.get(*pos).ok_or(DecodeError::Incomplete { needed: 1 })?;
    *pos += 1;
    Ok(b)
}

fn get_text(
    buf: &[u8],
    pos: &mut usize,
    field: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let len = usize::from(get_u8(buf, pos)?);
    if len > max {
        return Err(Invalid::BadText(field).into());
    }
    let bytes = buf
        .get(*pos..*pos + len)
        .ok_or_else(|| DecodeError::Incomplete {
            needed: *pos + len - buf.len(),
        })?;
    *pos += len;
    let s = core::str::from_utf8(bytes).map_err(|_| Invalid::BadText(field))?;
    Ok(String::from(s))
}

fn get_id<T: core::str::FromStr>(
    buf: &[u8],
    pos: &mut usize,
    field: &'static str,
) -> Result<T, DecodeError> {
    let s = get_text(buf, pos, field, 32)?;
    validate_id(&s).map_err(|_| Invalid::BadId(field))?;
    s.parse().map_err(|_| Invalid::BadId(field).into())
}

/// Encodes an ack (12 bytes).
pub fn encode_ack(ack: &Ack) -> [u8; ACK_LEN] {
    let mut out = [0u8; ACK_LEN];
    out[..2].copy_from_slice(&ACK_MAGIC);
    out[2] = VERSION;
    out[3] = ack.status.code();
    out[4..].copy_from_slice(&ack.acked_seq.to_le_bytes());
    out
}

/// Decodes an ack that fills `buf` exactly.
pub fn decode_ack(buf: &[u8]) -> Result<Ack, DecodeError> {
    check_prefix(buf, &ACK_MAGIC)?;
    if buf.len() < ACK_LEN {
        return Err(DecodeError::Incomplete {
            needed: ACK_LEN - buf.len(),
        });
    }
    if buf.len() > ACK_LEN {
        return Err(Invalid::TrailingBytes(buf.len() - ACK_LEN).into());
    }
    let status = AckStatus::from_code(buf[3]).ok_or(Invalid::ReservedFlags(buf[3]))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[4..12]);
    Ok(Ack {
        acked_seq: u64::from_le_bytes(seq),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, SiteId};
    use proptest::prelude::*;

    pub(crate) fn sample_frame() -> Frame {
        Frame {
            site: SiteId::new("site-a").unwrap(),
            device: DeviceId::new("pv-01").unwrap(),
            seq: 7,
            boot: 2,
            firmware: String::from("fw-1.0"),
            base_time_ms: Some(1_764_115_200_000),
            channels: alloc::vec![
                Channel {
                    id: ChannelId::new("energy").unwrap(),
                    quantity: Quantity::Energy,
                    kind: ValueKind::Counter
                },
                Channel {
                    id: ChannelId::new("power").unwrap(),
                    quantity: Quantity::Power,
                    kind: ValueKind::Instant
                },
            ],
            samples: alloc::vec![
                Sample {
                    channel: 0,
                    offset_ms: 0,
                    value: 123_456,
                    quality: Quality::GOOD
                },
                Sample {
                    channel: 1,
                    offset_ms: 1000,
                    value: -5,
                    quality: Quality::SUSPECT
                },
            ],
            signature: None,
        }
    }

    #[test]
    fn round_trips_a_frame() {
        let f = sample_frame();
        let bytes = encode_frame(&f);
        assert_eq!(decode_frame_exact(&bytes), Ok(f));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let bytes = encode_frame(&sample_frame());
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    decode_frame(&bytes[..n]),
                    Err(DecodeError::Incomplete { .. })
                ),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn a_flipped_bit_is_invalid_not_incomplete() {
        let bytes = encode_frame(&sample_frame());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            match decode_frame_exact(&b) {
                Err(DecodeError::Invalid(_)) => {}
                // A changed length field can make the frame look longer.
                Err(DecodeError::Incomplete { .. }) if (4..8).contains(&i) => {}
                other => panic!("byte {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_bytes_are_invalid() {
        let mut bytes = encode_frame(&sample_frame());
        bytes.push(0);
        assert_eq!(
            decode_frame_exact(&bytes),
            Err(DecodeError::Invalid(Invalid::TrailingBytes(1)))
        );
    }

    #[test]
    fn ack_round_trips() {
        let a = Ack {
            acked_seq: 42,
            status: AckStatus::BufferFull,
        };
        let b = encode_ack(&a);
        assert_eq!(b, [b'M', b'A', 1, 1, 42, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_ack(&b), Ok(a));
        assert!(matches!(
            decode_ack(&b[..5]),
            Err(DecodeError::Incomplete { .. })
        ));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            1u64..u64::MAX,
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec((any::<u32>(), any::<i64>(), 0u8..0x80), 1..50),
            any::<bool>(),
        )
            .prop_map(|(seq, boot, base, samples, signed)| {
                let mut f = sample_frame();
                f.seq = seq;
                f.boot = boot;
                f.base_time_ms = base;
                f.channels.truncate(1);
                f.samples = samples
                    .into_iter()
                    .map(|(o, v, q)| Sample {
                        channel: 0,
                        offset_ms: o,
                        value: v,
                        quality: Quality(q),
                    })
                    .collect();
                f.signature = signed.then_some([7u8; 64]);
                f
            })
    }

    proptest! {
        #[test]
        fn any_valid_frame_round_trips(f in arb_frame()) {
            let bytes = encode_frame(&f);
            prop_assert_eq!(decode_frame_exact(&bytes), Ok(f));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes);
            let _ = decode_ack(&bytes);
        }
    }
}
