//! JSON form of frames and acks, for third-party devices.
//!
//! ```json
//! {
//!   "v": 1,
//!   "site": "site-a",
//!   "device": "th-logger-3",
//!   "seq": 42,
//!   "boot": 1,
//!   "fw": "acme-2.1",
//!   "time_ms": 1764115200000,
//!   "readings": [
//!     {"channel": "energy", "quantity": "energy", "kind": "counter", "value": 123456},
//!     {"channel": "power", "quantity": "power", "value": 870250, "offset_ms": 500, "quality": 4}
//!   ]
//! }
//! ```
//!
//! `time_ms` (device clock, Unix ms) is optional; `kind` defaults to
//! `instant`, `offset_ms` and `quality` to 0. A reading's channel must keep
//! the same quantity and kind within a frame. `sig` (optional) is the
//! base64url Ed25519 signature over the binary signing bytes of the frame
//! this JSON converts to (see [`super::signature`]). Unknown fields are
//! rejected so that typos do not silently drop data.
//!
//! Ack: `{"v":1,"acked_seq":42,"status":"ok"}`.

use super::frame::{Ack, AckStatus, Frame};
use super::{DecodeError, Invalid, MAX_FRAME_BYTES};
use crate::ids::{ChannelId, DeviceId, SiteId};
use crate::quantity::{Quantity, ValueKind};
use crate::reading::{Channel, Quality, Sample};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFrame {
    v: u8,
    site: SiteId,
    device: DeviceId,
    seq: u64,
    #[serde(default)]
    boot: u32,
    #[serde(default)]
    fw: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_ms: Option<u64>,
    readings: Vec<JsonReading>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReading {
    channel: ChannelId,
    quantity: Quantity,
    #[serde(default = "instant")]
    kind: ValueKind,
    value: i64,
    #[serde(default)]
    offset_ms: u32,
    #[serde(default)]
    quality: u8,
}

fn instant() -> ValueKind {
    ValueKind::Instant
}

/// Decodes a JSON frame that fills `buf`.
pub fn decode_frame(buf: &[u8]) -> Result<Frame, DecodeError> {
    if buf.len() > MAX_FRAME_BYTES {
        return Err(Invalid::TooLarge(buf.len()).into());
    }
    let jf: JsonFrame = serde_json::from_slice(buf).map_err(|e| {
        if e.is_eof() {
            DecodeError::Incomplete { needed: 1 }
        } else {
            DecodeError::Invalid(Invalid::Json(e.to_string()))
        }
    })?;
    if jf.v != 1 {
        return Err(Invalid::UnsupportedVersion(jf.v).into());
    }
    let mut channels: Vec<Channel> = Vec::new();
    let mut samples = Vec::with_capacity(jf.readings.len());
    for r in jf.readings {
        if r.quality & !Quality::KNOWN != 0 {
            return Err(Invalid::UnknownQuality(r.quality).into());
        }
        let idx = match channels.iter().position(|c| c.id == r.channel) {
            Some(i) => {
                let c = &channels[i];
                if c.quantity != r.quantity || c.kind != r.kind {
                    return Err(Invalid::Json(format!(
                        "channel {} changes quantity or kind within the frame",
                        r.channel
                    ))
                    .into());
                }
                i
            }
            None => {
                if channels.len() == 255 {
                    return Err(Invalid::Frame(super::FrameError::ChannelCount(256)).into());
                }
                channels.push(Channel {
                    id: r.channel,
                    quantity: r.quantity,
                    kind: r.kind,
                });
                channels.len() - 1
            }
        };
        samples.push(Sample {
            channel: idx as u8,
            offset_ms: r.offset_ms,
            value: r.value,
            quality: Quality(r.quality),
        });
    }
    let signature = match jf.sig {
        None => None,
        Some(s) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| Invalid::Json("sig is not base64url".into()))?;
            let arr: [u8; 64] = bytes
                .try_into()
                .map_err(|_| Invalid::Json("sig is not 64 bytes".into()))?;
            Some(arr)
        }
    };
    let frame = Frame {
        site: jf.site,
        device: jf.device,
        seq: jf.seq,
        boot: jf.boot,
        firmware: jf.fw,
        base_time_ms: jf.time_ms,
        channels,
        samples,
        signature,
    };
    frame.validate().map_err(Invalid::Frame)?;
    Ok(frame)
}

/// Encodes a frame as JSON (the inverse of [`decode_frame`]).
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let jf = JsonFrame {
        v: 1,
        site: frame.site.clone(),
        device: frame.device.clone(),
        seq: frame.seq,
        boot: frame.boot,
        fw: frame.firmware.clone(),
        time_ms: frame.base_time_ms,
        readings: frame
            .samples
            .iter()
            .map(|s| {
                let c = &frame.channels[usize::from(s.channel)];
                JsonReading {
                    channel: c.id.clone(),
                    quantity: c.quantity,
                    kind: c.kind,
                    value: s.value,
                    offset_ms: s.offset_ms,
                    quality: s.quality.0,
                }
            })
            .collect(),
        sig: frame
            .signature
            .map(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)),
    };
    serde_json::to_vec(&jf).expect("a JsonFrame always serialises")
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAck {
    v: u8,
    acked_seq: u64,
    status: String,
}

/// Encodes an ack as JSON.
pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    serde_json::to_vec(&JsonAck {
        v: 1,
        acked_seq: ack.acked_seq,
        status: ack.status.name().into(),
    })
    .expect("a JsonAck always serialises")
}

/// Decodes a JSON ack.
pub fn decode_ack(buf: &[u8]) -> Result<Ack, DecodeError> {
    let ja: JsonAck = serde_json::from_slice(buf).map_err(|e| {
        if e.is_eof() {
            DecodeError::Incomplete { needed: 1 }
        } else {
            DecodeError::Invalid(Invalid::Json(e.to_string()))
        }
    })?;
    let status = [
        AckStatus::Ok,
        AckStatus::BufferFull,
        AckStatus::SeqRegressed,
    ]
    .into_iter()
    .find(|s| s.name() == ja.status)
    .ok_or_else(|| Invalid::Json(format!("unknown ack status {:?}", ja.status)))?;
    Ok(Ack {
        acked_seq: ja.acked_seq,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"v":1,"site":"site-a","device":"th-logger-3","seq":42,"boot":1,"fw":"acme-2.1",
        "time_ms":1764115200000,"readings":[
        {"channel":"energy","quantity":"energy","kind":"counter","value":123456},
        {"channel":"power","quantity":"power","value":870250,"offset_ms":500,"quality":4}]}"#;

    #[test]
    fn decodes_the_documented_example() {
        let f = decode_frame(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(f.seq, 42);
        assert_eq!(f.channels.len(), 2);
        assert_eq!(f.samples[1].value, 870_250); // mW
        assert_eq!(f.samples[1].quality, Quality::SUSPECT);
        assert_eq!(f.sample_time_ms(&f.samples[1]), Some(1_764_115_200_500));
    }

    #[test]
    fn json_round_trips_through_binary_meaning() {
        let f = decode_frame(EXAMPLE.as_bytes()).unwrap();
        let again = decode_frame(&encode_frame(&f)).unwrap();
        assert_eq!(f, again);
    }

    #[test]
    fn truncated_json_is_incomplete_and_typos_are_invalid() {
        let b = EXAMPLE.as_bytes();
        assert!(matches!(
            decode_frame(&b[..b.len() - 3]),
            Err(DecodeError::Incomplete { .. })
        ));
        let typo = EXAMPLE.replace("\"value\":870", "\"valeu\":870");
        assert!(matches!(
            decode_frame(typo.as_bytes()),
            Err(DecodeError::Invalid(Invalid::Json(_)))
        ));
    }

    #[test]
    fn ack_json_round_trips() {
        let a = Ack {
            acked_seq: 9,
            status: AckStatus::SeqRegressed,
        };
        assert_eq!(decode_ack(&encode_ack(&a)), Ok(a));
        assert_eq!(
            encode_ack(&a),
            br#"{"v":1,"acked_seq":9,"status":"seq_regressed"}"#
        );
    }
}
