//! Device signatures: Ed25519 over [`super::binary::signing_bytes`].
//!
//! The signed bytes are the canonical binary encoding up to and including the
//! CRC, with the "signature present" flag set. Because the encoding is
//! canonical, anyone holding the frame's fields (a gateway, a backend, an
//! auditor) can rebuild those bytes and check the signature with the device's
//! public key, whatever form (binary or JSON) the frame travelled in.

use super::binary::signing_bytes;
use super::frame::Frame;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Why a frame's signature does not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The frame carries no signature.
    #[error("frame is not signed")]
    Missing,
    /// The signature does not verify with the given key.
    #[error("signature does not verify with the device key")]
    Mismatch,
}

/// Signs `frame` in place with the device key.
pub fn sign_frame(frame: &mut Frame, key: &SigningKey) {
    frame.signature = None;
    let sig = key.sign(&signing_bytes(frame));
    frame.signature = Some(sig.to_bytes());
}

/// Checks `frame`'s signature against the device's public key.
pub fn verify_frame(frame: &Frame, key: &VerifyingKey) -> Result<(), SignatureError> {
    let sig = frame.signature.ok_or(SignatureError::Missing)?;
    key.verify(&signing_bytes(frame), &Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::binary::{decode_frame_exact, encode_frame};
    use crate::wire::json;

    fn frame() -> Frame {
        json::decode_frame(
            br#"{"v":1,"site":"s","device":"d","seq":1,"readings":[{"channel":"e","quantity":"energy","value":5}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn signed_frame_verifies_after_binary_and_json_transport() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let mut f = frame();
        sign_frame(&mut f, &key);
        let vk = key.verifying_key();
        assert_eq!(verify_frame(&f, &vk), Ok(()));
        let via_binary = decode_frame_exact(&encode_frame(&f)).unwrap();
        assert_eq!(verify_frame(&via_binary, &vk), Ok(()));
        let via_json = json::decode_frame(&json::encode_frame(&f)).unwrap();
        assert_eq!(verify_frame(&via_json, &vk), Ok(()));
    }

    #[test]
    fn altered_value_or_other_key_fails() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let mut f = frame();
        sign_frame(&mut f, &key);
        let mut g = f.clone();
        g.samples[0].value += 1;
        assert_eq!(
            verify_frame(&g, &key.verifying_key()),
            Err(SignatureError::Mismatch)
        );
        let other = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        assert_eq!(verify_frame(&f, &other), Err(SignatureError::Mismatch));
        assert_eq!(verify_frame(&frame(), &other), Err(SignatureError::Missing));
    }
}
