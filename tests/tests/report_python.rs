//! An independent implementation (Python: joserfc + cryptography, see
//! `tests/python/verify_report.py`) verifies the gateway's reports: the JWS,
//! the Merkle root recomputed from the payload bytes, and every device
//! signature; and rejects a tampered one.
//!
//! Needs `python3` with `joserfc` and `cryptography`
//! (`scripts/install-test-deps.sh`). Without them the test is skipped
//! loudly, except under `CI`, where it fails.

mod report_support;

use report_support::*;
use std::path::PathBuf;
use std::process::Command;

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import joserfc, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "python3 with joserfc and cryptography is required under CI (scripts/install-test-deps.sh)"
            );
        }
        eprintln!(
            "SKIPPED report_python: python3 with joserfc + cryptography not found; run scripts/install-test-deps.sh"
        );
    }
    ok
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/verify_report.py")
}

fn run(report: &std::path::Path, jwk: &std::path::Path) -> (bool, serde_json::Value, String) {
    let out = Command::new("python3")
        .arg(script())
        .arg(report)
        .arg(jwk)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn python_verifies_our_reports_and_recomputes_the_merkle_root() {
    if !python_ready() {
        return;
    }
    let site = TestSite::new();
    site.receive_period(0);
    site.receive_period(1);
    site.close_through(1);
    for f in site.report_files() {
        let (ok, out, err) = run(&f, &site.public_jwk);
        assert!(ok, "python rejected {f:?}: {out} {err}");
        let p = payload(&std::fs::read(&f).expect("read"));
        assert_eq!(out["merkle_root"], p["readings"]["merkle_root"]);
        assert_eq!(out["readings"], 120);
        assert_eq!(out["device_signatures_checked"], 20);
        assert_eq!(out["alg"], "EdDSA");
    }
    // The golden vector too.
    let v = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/vectors");
    let (ok, out, err) = run(
        &v.join("report_pv_golden.jws"),
        &v.join("report_gateway.pub.jwk"),
    );
    assert!(ok, "{out} {err}");
}

#[test]
fn python_rejects_a_tampered_report() {
    if !python_ready() {
        return;
    }
    let site = TestSite::new();
    site.receive_period(0);
    site.close_through(0);
    let f = &site.report_files()[0];
    let bytes = std::fs::read(f).expect("read");
    let mut p = payload(&bytes);
    p["readings"]["frames"][0]["samples"][0][2] = serde_json::Value::from(7);
    let tampered = site.dir.path().join("tampered.jws");
    std::fs::write(&tampered, swap_payload(&bytes, &p)).expect("write");
    let (ok, _, _) = run(&tampered, &site.public_jwk);
    assert!(!ok, "python accepted a tampered report");
}
