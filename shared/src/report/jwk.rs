//! Ed25519 keys as JSON Web Keys (RFC 7517, RFC 8037 `OKP`/`Ed25519`).
//!
//! Public: `{"kty":"OKP","crv":"Ed25519","x":<b64url>,"kid":..,"alg":"EdDSA","use":"sig"}`;
//! private adds `"d"` (the 32-byte seed). base64url has no padding.

use super::ReportError;
use alloc::string::String;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A JWK for an Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type, `OKP`.
    pub kty: String,
    /// Curve, `Ed25519`.
    pub crv: String,
    /// Public key, base64url.
    pub x: String,
    /// Private seed, base64url (private keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm, `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Use, `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn unb64(s: &str) -> Result<alloc::vec::Vec<u8>, ReportError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ReportError::Malformed(String::from("bad base64url")))
}

/// RFC 7638 thumbprint of an Ed25519 public key.
pub fn thumbprint(key: &VerifyingKey) -> String {
    thumbprint_of_x(&b64(key.as_bytes()))
}

fn thumbprint_of_x(x: &str) -> String {
    use sha2::{Digest, Sha256};
    let members = alloc::format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    b64(&Sha256::digest(members.as_bytes()))
}

impl Jwk {
    /// The public JWK of `key`.
    pub fn public(kid: &str, key: &VerifyingKey) -> Jwk {
        Jwk {
            kty: String::from("OKP"),
            crv: String::from("Ed25519"),
            x: b64(key.as_bytes()),
            d: None,
            kid: Some(String::from(kid)),
            alg: Some(String::from("EdDSA")),
            use_: Some(String::from("sig")),
        }
    }

    /// The private JWK of `key`.
    pub fn private(kid: &str, key: &SigningKey) -> Jwk {
        Jwk {
            d: Some(b64(key.as_bytes())),
            ..Jwk::public(kid, &key.verifying_key())
        }
    }

    fn check_type(&self) -> Result<(), ReportError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(ReportError::BadKey(alloc::format!(
                "kty {} crv {}: only OKP Ed25519 is supported",
                self.kty,
                self.crv
            )));
        }
        Ok(())
    }

    /// RFC 7638 thumbprint (SHA-256 over `{"crv","kty","x"}`, base64url).
    pub fn thumbprint(&self) -> String {
        thumbprint_of_x(&self.x)
    }

    /// The public key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, ReportError> {
        self.check_type()?;
        let x: [u8; 32] = unb64(&self.x)?
            .try_into()
            .map_err(|_| ReportError::BadKey(String::from("x is not 32 bytes")))?;
        VerifyingKey::from_bytes(&x)
            .map_err(|_| ReportError::BadKey(String::from("x is not a curve point")))
    }

    /// The private key (checks that it matches `x`).
    pub fn signing_key(&self) -> Result<SigningKey, ReportError> {
        self.check_type()?;
        let d = self
            .d
            .as_deref()
            .ok_or_else(|| ReportError::BadKey(String::from("no private part d")))?;
        let d: [u8; 32] = unb64(d)?
            .try_into()
            .map_err(|_| ReportError::BadKey(String::from("d is not 32 bytes")))?;
        let key = SigningKey::from_bytes(&d);
        if key.verifying_key() != self.verifying_key()? {
            return Err(ReportError::BadKey(String::from("d does not match x")));
        }
        Ok(key)
    }
}
