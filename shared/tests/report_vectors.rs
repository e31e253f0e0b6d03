//! Every report vector in `tests/vectors/good/` and `tests/vectors/tamper/`
//! (docs/REPORT-FORMAT.md §13, written by the gateway's
//! `report_vectors` test) gets the verdict its `expect.json` states, with
//! nothing but this crate: the gateway key `gateway.pub.jwk`, the device
//! registry `registry.json`, each case's reports verified in order as one
//! chain.

use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::verify::{Chain, verify_report};
use mrv_shared::report::{DeviceRegistry, DeviceTrust, KeySet};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir().join(kind))
        .expect("vector dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The first failure of a case: (reason label, file name), or `None`.
fn verdict(case: &Path) -> Option<(String, String)> {
    let jwk: Jwk = serde_json::from_slice(&read(&dir().join("gateway.pub.jwk"))).expect("jwk");
    let mut keys = KeySet::new();
    keys.insert_jwk(&jwk).expect("usable key");
    let registry =
        DeviceRegistry::from_json(&read(&dir().join("registry.json"))).expect("registry");
    let trust = DeviceTrust::Registry(registry.trusted().expect("valid registry"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(case)
        .expect("case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jws"))
        .collect();
    files.sort();
    let mut chain = Chain::new(false);
    for f in files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        if let Err(e) = verify_report(&read(&f), &keys, &trust).and_then(|v| chain.push(&v)) {
            return Some((e.label().to_string(), name));
        }
    }
    None
}

#[test]
fn good_vectors_verify_and_state_their_exact_results() {
    let good = cases("good");
    assert!(good.len() >= 2, "good vectors present");
    for case in good {
        assert_eq!(verdict(&case), None, "{}", case.display());
    }
}

#[test]
fn every_tamper_vector_is_rejected_with_its_stated_reason() {
    let tamper = cases("tamper");
    assert!(tamper.len() >= 10, "tamper vectors present");
    for case in tamper {
        let expect: serde_json::Value =
            serde_json::from_slice(&read(&case.join("expect.json"))).expect("expect.json");
        let want = (
            expect["reason"].as_str().expect("reason").to_string(),
            expect["file"].as_str().expect("file").to_string(),
        );
        assert_eq!(
            verdict(&case),
            Some(want),
            "{}: {}",
            case.display(),
            expect["what"]
        );
    }
}
