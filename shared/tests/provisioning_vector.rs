//! The provisioning record against its committed byte vector
//! (`tests/vectors/provisioning_record.txt`, a comment per field).
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::provisioning::{Provisioning, decode, encode};

/// On each non-comment line, the leading two-digit hex tokens are bytes.
fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        if line.starts_with('#') {
            continue;
        }
        for tok in line.split_whitespace() {
            match u8::from_str_radix(tok, 16) {
                Ok(b) if tok.len() == 2 => out.push(b),
                _ => break,
            }
        }
    }
    out
}

#[test]
fn the_record_matches_its_vector_both_ways() {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    let p = Provisioning {
        site: SiteId::new("site-a").unwrap(),
        device: DeviceId::new("node-7").unwrap(),
        key: SigningKey::from_bytes(&seed),
    };
    let v = vector("provisioning_record.txt");
    assert_eq!(encode(&p).to_vec(), v);
    assert_eq!(decode(&v).unwrap(), Some(p));
}
