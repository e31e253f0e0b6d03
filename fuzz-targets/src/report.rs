//! Signed reports: what the receiver runs on an upload
//! ([`mrv_shared::report::verify_report`]), with the committed test vectors'
//! gateway key and device registry.
//!
//! The first input byte picks one of three ways in:
//! - `0`: the rest is an upload, verified as it is (JWS splitting, base64,
//!   header JSON, signature rejection);
//! - `1`: the rest is a report payload; the target signs it with a fuzz
//!   gateway key, so the fuzzer reaches the payload parser and every check
//!   of `check_contents` (Merkle root, device signatures, continuity,
//!   series, calculations) behind the signature;
//! - `2`: the rest is a list of edits (3 bytes each: position, xor/insert/
//!   delete) applied to a valid vector report: whenever the bytes changed,
//!   verification must reject them.

use ed25519_dalek::SigningKey;
use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::jws::sign_compact;
use mrv_shared::report::model::report_canonical;
use mrv_shared::report::{DeviceRegistry, DeviceTrust, KeySet, Report, verify_report};
use std::sync::OnceLock;

/// The committed vectors (shared/tests/vectors), read once.
struct Vectors {
    keys: KeySet,
    trust: DeviceTrust,
    good: Vec<u8>,
}

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tests/vectors");

fn read(rel: &str) -> Vec<u8> {
    let p = format!("{VECTORS}/{rel}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn vectors() -> &'static Vectors {
    static V: OnceLock<Vectors> = OnceLock::new();
    V.get_or_init(|| {
        let jwk: Jwk = serde_json::from_slice(&read("gateway.pub.jwk")).expect("vector jwk");
        let mut keys = KeySet::new();
        keys.insert_jwk(&jwk).expect("vector key usable");
        let registry = DeviceRegistry::from_json(&read("registry.json")).expect("registry");
        let trust = DeviceTrust::Registry(registry.trusted().expect("valid registry"));
        let good = read("good/single/01.jws");
        verify_report(&good, &keys, &trust).expect("the good vector verifies");
        Vectors { keys, trust, good }
    })
}

/// The fuzz gateway key of mode 1 (fixed, so runs are reproducible).
fn fuzz_gateway_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

/// The body of the `report_verify` target (see the module doc).
pub fn verify(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let v = vectors();
    match mode % 3 {
        0 => {
            if let Ok(ok) = verify_report(rest, &v.keys, &v.trust) {
                // Only a vector the gateway key signed can get here.
                assert_eq!(
                    report_canonical(&ok.report).expect("canonical"),
                    mrv_shared::report::jws::parse_compact(rest)
                        .expect("parsed")
                        .payload
                );
            }
        }
        1 => signed_payload(rest, v),
        _ => tampered(rest, v),
    }
}

fn signed_payload(payload: &[u8], v: &Vectors) {
    // Sign only what parses as a report: the signature is the slow part.
    let Ok(report) = serde_json::from_slice::<Report>(payload) else {
        return;
    };
    let key = fuzz_gateway_key();
    let kid = report.header.kid.clone();
    let mut keys = KeySet::new();
    keys.insert(&kid, key.verifying_key());
    let jws = sign_compact(payload, &kid, &key);
    if let Ok(ok) = verify_report(jws.as_bytes(), &keys, &v.trust) {
        assert_eq!(
            report_canonical(&ok.report).expect("canonical"),
            payload,
            "an accepted payload is the canonical form of its report"
        );
        assert_eq!(ok.kid, kid);
    }
}

fn tampered(edits: &[u8], v: &Vectors) {
    let mut bytes = v.good.clone();
    for e in edits.chunks_exact(3).take(16) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % (bytes.len() + 1);
        match e[2] {
            0 => {
                if at < bytes.len() {
                    bytes.remove(at);
                }
            }
            1..=0x7f => bytes.insert(at, e[2]),
            x => {
                if at < bytes.len() {
                    bytes[at] ^= x & 0x7f;
                }
            }
        }
    }
    let verdict = verify_report(&bytes, &v.keys, &v.trust);
    if bytes != v.good {
        assert!(
            verdict.is_err(),
            "a changed valid report was accepted: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    } else {
        assert!(verdict.is_ok());
    }
}
