//! The golden report in `tests/vectors/` (written by the gateway's builder
//! test `the_golden_report_is_reproduced_byte_for_byte`) verifies with
//! nothing but this crate, and says what it should.
//!
//! Files: `report_pv_golden.jws` (the stored bytes), `report_pv_golden.payload.json`
//! (its canonical payload, for reading), `report_gateway.pub.jwk` (the key).

use mrv_shared::report::canonical::canonicalize;
use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::jws::parse_compact;
use mrv_shared::report::{DeviceTrust, KeySet, ReportError, verify_report};
use std::path::PathBuf;

fn vector(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The golden report's devices are checked against their listed keys here
/// (the registry-based checks have their own vectors: `report_vectors.rs`).
const TRUST: DeviceTrust = DeviceTrust::ReportListed;

fn keys() -> KeySet {
    let jwk: Jwk = serde_json::from_slice(&vector("report_gateway.pub.jwk")).expect("jwk");
    let mut k = KeySet::new();
    k.insert_jwk(&jwk).expect("usable");
    k
}

#[test]
fn the_golden_report_verifies_and_states_what_it_should() {
    let bytes = vector("report_pv_golden.jws");
    let v = verify_report(&bytes, &keys(), &TRUST).expect("golden report verifies");
    let r = &v.report;
    assert_eq!(v.id(), "gw-th-01-000000000001");
    assert_eq!(v.seq(), 1);
    assert_eq!(v.prev_hash(), mrv_shared::report::model::GENESIS_PREV_HASH);
    assert_eq!(r.readings.count, 24);
    assert_eq!(r.devices.len(), 2);
    // Meter pv-0000 has one unavailable sample: a gap, and the two steps
    // around it (50 Wh) are measured but not credited.
    let s0 = &r.series[0];
    assert_eq!((s0.received, s0.usable), (12, 11));
    assert_eq!(s0.gaps.len(), 1);
    assert_eq!(s0.gaps[0].reason, "unusable_quality");
    let c0 = s0.counter.as_ref().expect("counter");
    assert_eq!((c0.delta, c0.gap_delta), (225, 50));
    let c = &r.calculations[0];
    assert_eq!(c.inputs["re_energy_wh"], "500");
    assert_eq!(c.er.exact, "5113/20000000");
    // Each meter accounts for seqs 1..=2 (two frames of six samples).
    assert!(
        r.continuity
            .iter()
            .all(|k| (k.after_seq, k.first_seq, k.last_seq) == (0, Some(1), 2))
    );
}

#[test]
fn the_payload_is_canonical_and_matches_the_readable_copy() {
    let bytes = vector("report_pv_golden.jws");
    let jws = parse_compact(&bytes).expect("jws");
    assert_eq!(jws.payload, vector("report_pv_golden.payload.json"));
    let v: serde_json::Value = serde_json::from_slice(&jws.payload).expect("json");
    assert_eq!(canonicalize(&v).expect("canonical"), jws.payload);
    assert_eq!(jws.header.alg, "EdDSA");
}

#[test]
fn one_flipped_byte_anywhere_in_the_signature_is_rejected() {
    let bytes = vector("report_pv_golden.jws");
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 5] = if bad[n - 5] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        verify_report(&bad, &keys(), &TRUST),
        Err(ReportError::BadSignature { .. })
    ));
}

#[test]
fn a_single_reading_is_proven_against_the_merkle_root() {
    use mrv_shared::report::merkle::{leaf_hash, verify_inclusion};
    use mrv_shared::report::model::{reading_leaf, reading_proof};
    let v = verify_report(&vector("report_pv_golden.jws"), &keys(), &TRUST).expect("verifies");
    let frames = &v.report.readings.frames;
    let root: [u8; 32] = (0..32)
        .map(|i| {
            u8::from_str_radix(&v.report.readings.merkle_root[2 * i..2 * i + 2], 16).expect("hex")
        })
        .collect::<Vec<u8>>()
        .try_into()
        .expect("32 bytes");
    let size = v.report.readings.count as usize;
    let (index, proof) = reading_proof(frames, 2, 3).expect("exists");
    assert_eq!(index, 2 * 6 + 3);
    let leaf = leaf_hash(&reading_leaf(&frames[2], 3));
    assert!(verify_inclusion(&leaf, index, size, &proof, &root));
    let other = leaf_hash(&reading_leaf(&frames[2], 4));
    assert!(!verify_inclusion(&other, index, size, &proof, &root));
    assert!(reading_proof(frames, 2, 99).is_none());
}
