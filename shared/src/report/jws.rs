//! JWS compact serialisation (RFC 7515) with Ed25519 (RFC 8037).
//!
//! Written: `BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(sig)`,
//! header = JCS of `{"alg":"EdDSA","kid":<kid>,"typ":"mrv-report+jws"}`,
//! signature over the ASCII bytes of the first two parts. Read: `alg`
//! `EdDSA` or `Ed25519` (RFC 9864's fully specified name); `kid` required;
//! `crit` is refused (we understand no extensions); other header members
//! are ignored. The stored bytes are exactly the compact form: no trailing
//! newline, base64url without padding and with zero unused bits.

use super::ReportError;
use super::canonical::to_canonical_vec;
use super::jwk::{b64, unb64};
use alloc::string::String;
use alloc::vec::Vec;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `typ` we write.
pub const TYP: &str = "mrv-report+jws";

/// The protected header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    /// Algorithm.
    pub alg: String,
    /// Key id.
    pub kid: String,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Critical extensions (refused when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<Vec<String>>,
}

/// A parsed (not yet verified) compact JWS.
#[derive(Debug, Clone)]
pub struct CompactJws<'a> {
    /// Header.
    pub header: JwsHeader,
    /// Decoded payload.
    pub payload: Vec<u8>,
    /// `header "." payload` as sent: what the signature covers.
    pub signing_input: &'a [u8],
    /// Signature.
    pub signature: [u8; 64],
}

/// Signs `payload` (already canonical bytes) into a compact JWS.
pub fn sign_compact(payload: &[u8], kid: &str, key: &SigningKey) -> String {
    let header = JwsHeader {
        alg: String::from("EdDSA"),
        kid: String::from(kid),
        typ: Some(String::from(TYP)),
        crit: None,
    };
    let header = to_canonical_vec(&header).expect("a header of strings always serialises");
    let mut out = b64(&header);
    out.push('.');
    out.push_str(&b64(payload));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&b64(&sig.to_bytes()));
    out
}

/// Splits and decodes a compact JWS (no signature check).
pub fn parse_compact(bytes: &[u8]) -> Result<CompactJws<'_>, ReportError> {
    let text = core::str::from_utf8(bytes)
        .map_err(|_| ReportError::Malformed(String::from("not ASCII")))?;
    let mut parts = text.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReportError::Malformed(String::from(
            "not a compact JWS (three dot-separated parts)",
        )));
    };
    let header: JwsHeader = serde_json::from_slice(&unb64(h)?)
        .map_err(|e| ReportError::Malformed(alloc::format!("JWS header: {e}")))?;
    if header.crit.is_some() {
        return Err(ReportError::Malformed(String::from(
            "crit header not supported",
        )));
    }
    if header.alg != "EdDSA" && header.alg != "Ed25519" {
        return Err(ReportError::UnsupportedAlgorithm(header.alg));
    }
    let signature: [u8; 64] = unb64(s)?
        .try_into()
        .map_err(|_| ReportError::Malformed(String::from("JWS signature is not 64 bytes")))?;
    Ok(CompactJws {
        header,
        payload: unb64(p)?,
        signing_input: &bytes[..h.len() + 1 + p.len()],
        signature,
    })
}

/// Checks the signature of a parsed JWS with `key`.
pub fn check_signature(jws: &CompactJws<'_>, key: &VerifyingKey) -> Result<(), ReportError> {
    key.verify(jws.signing_input, &Signature::from_bytes(&jws.signature))
        .map_err(|_| ReportError::BadSignature {
            kid: jws.header.kid.clone(),
            thumbprint: super::jwk::thumbprint(key),
        })
}
