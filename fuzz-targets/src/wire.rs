//! Device frames and acks: the binary and the JSON decoders, and the MQTT
//! topic scheme.

use mrv_shared::wire::binary::{self, ACK_LEN, FLAG_SIGNED, HEADER_LEN};
use mrv_shared::wire::{DecodeError, Frame, json, signature, topic};

/// Binary frame and ack decoders. The input is tried as it is and, so that
/// the fuzzer gets past the CRC, once more with its length field and CRC
/// made to match its size.
pub fn binary(data: &[u8]) {
    binary_frame(data);
    if let Some(fixed) = with_consistent_length_and_crc(data) {
        binary_frame(&fixed);
    }
    binary_ack(data);
}

/// `data` with the header's body length set to what its size implies and
/// the CRC recomputed; `None` when it is too short to be a frame.
pub fn with_consistent_length_and_crc(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_LEN + 4 {
        return None;
    }
    let sig_len = if data[3] & FLAG_SIGNED != 0 { 64 } else { 0 };
    let body_len = data.len().checked_sub(HEADER_LEN + 4 + sig_len)?;
    let mut v = data.to_vec();
    v[4..8].copy_from_slice(&u32::try_from(body_len).ok()?.to_le_bytes());
    let crc_at = HEADER_LEN + body_len;
    let crc = crc32fast::hash(&v[..crc_at]);
    v[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    Some(v)
}

fn binary_frame(buf: &[u8]) {
    match binary::decode_frame(buf) {
        Ok((frame, used)) => {
            assert!(used > 0 && used <= buf.len());
            frame.validate().expect("a decoded frame is valid");
            let again = binary::encode_frame(&frame);
            assert_eq!(
                again,
                buf[..used],
                "the binary form is canonical: a decoded frame re-encodes to its bytes"
            );
            assert_eq!(binary::decode_frame_exact(&again).as_ref(), Ok(&frame));
            let exact = binary::decode_frame_exact(buf);
            if used == buf.len() {
                assert_eq!(exact.as_ref(), Ok(&frame));
            } else {
                assert!(matches!(exact, Err(DecodeError::Invalid(_))));
            }
            for cut in [0, 1, 2, 7, 8, used / 2, used - 1] {
                if cut < used {
                    assert!(
                        matches!(
                            binary::decode_frame(&buf[..cut]),
                            Err(DecodeError::Incomplete { .. })
                        ),
                        "a strict prefix ({cut} of {used} bytes) of a frame is incomplete"
                    );
                }
            }
            same_readings_through_json(&frame);
            signature_check_answers(&frame);
        }
        Err(DecodeError::Incomplete { needed }) => assert!(needed > 0),
        Err(DecodeError::Invalid(why)) => assert!(!why.label().is_empty()),
    }
}

fn binary_ack(buf: &[u8]) {
    match binary::decode_ack(buf) {
        Ok(ack) => {
            assert_eq!(binary::encode_ack(&ack)[..], buf[..ACK_LEN]);
            assert_eq!(json::decode_ack(&json::encode_ack(&ack)), Ok(ack));
        }
        Err(DecodeError::Incomplete { needed }) => assert!(needed > 0),
        Err(DecodeError::Invalid(_)) => {}
    }
}

/// The JSON form of a frame means the same readings (channel table order
/// may differ: JSON lists channels where they are first used).
fn same_readings_through_json(frame: &Frame) {
    let back = json::decode_frame(&json::encode_frame(frame))
        .expect("the JSON form of a valid frame decodes");
    let a: Vec<_> = frame.readings(0).collect();
    let b: Vec<_> = back.readings(0).collect();
    assert_eq!(a, b, "JSON carries the same readings as binary");
    assert_eq!(back.signature, frame.signature);
}

/// A signature check gives an answer for any frame (a fixed key).
fn signature_check_answers(frame: &Frame) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let verdict = signature::verify_frame(frame, &key);
    if frame.signature.is_none() {
        assert!(verdict.is_err(), "an unsigned frame does not verify");
    }
}

/// JSON frame and ack decoders and the topic parser.
pub fn json(data: &[u8]) {
    match json::decode_frame(data) {
        Ok(frame) => {
            frame.validate().expect("a decoded frame is valid");
            let enc = json::encode_frame(&frame);
            assert_eq!(
                json::decode_frame(&enc).as_ref(),
                Ok(&frame),
                "decode(encode(f)) == f"
            );
            let bin = binary::encode_frame(&frame);
            assert_eq!(
                binary::decode_frame_exact(&bin).as_ref(),
                Ok(&frame),
                "a JSON frame survives the binary form"
            );
            signature_check_answers(&frame);
        }
        Err(DecodeError::Incomplete { needed }) => assert!(needed > 0),
        Err(DecodeError::Invalid(why)) => assert!(!why.label().is_empty()),
    }
    if let Ok(ack) = json::decode_ack(data) {
        assert_eq!(json::decode_ack(&json::encode_ack(&ack)), Ok(ack));
    }
    if let Ok(text) = core::str::from_utf8(data)
        && let Ok((site, device)) = topic::parse_up_topic(text)
    {
        assert_eq!(topic::up_topic(&site, &device), text);
        assert_eq!(
            topic::parse_up_topic(&topic::ack_topic(&site, &device)).ok(),
            None,
            "an ack topic is not an uplink topic"
        );
    }
}
