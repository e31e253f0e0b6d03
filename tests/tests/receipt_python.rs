//! An independent implementation (Python + `cryptography`, written from
//! docs/RECEIVER-API.md section 4: `tests/python/verify_receipt.py`) checks
//! the committed log vectors and the receipts a live receiver gives, and
//! rejects tampered ones.
//!
//! Needs `python3` with `cryptography` (`scripts/install-test-deps.sh`);
//! skipped loudly without it, except under `CI`, where it fails.

mod upload_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use upload_support::{TestChain, init, start_receiver};

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with cryptography is required under CI (scripts/install-test-deps.sh)");
        }
        eprintln!("SKIPPED receipt_python: python3 with cryptography not found");
    }
    ok
}

fn check(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/verify_receipt.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/tlog_vectors")
}

#[test]
fn the_committed_vectors_verify_independently() {
    if !python_ready() {
        return;
    }
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors().join("log.json")).expect("log.json"))
            .expect("JSON");
    let key = log["verifier_key"].as_str().expect("key").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let r3 = dir.path().join("r3");
    std::fs::write(&r3, "report-3").expect("write");
    let receipt = vectors().join("receipt-3-of-7.json");
    let (ok, out) = check(&[receipt.as_os_str(), r3.as_os_str(), key.as_ref()]);
    assert!(ok, "{out}");
    let cons = vectors().join("consistency-3-to-7.json");
    let (ok, out) = check(&["--consistency".as_ref(), cons.as_os_str(), key.as_ref()]);
    assert!(ok, "{out}");
}

fn tampered(
    dir: &Path,
    receipt: &serde_json::Value,
    f: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let mut r = receipt.clone();
    f(&mut r);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!("t{n}.json"));
    std::fs::write(&p, serde_json::to_vec(&r).expect("JSON")).expect("write");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_receivers_receipts_verify_independently_and_tampering_is_caught() {
    init();
    if !python_ready() {
        return;
    }
    let mut chain = TestChain::new(1, 60_000, 600_000).unstored();
    chain.extend(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(&dir.path().join("rx"), chain.keys(), None, None, None).await;
    let key = rx.handle.log().verifier().to_string();
    let http = reqwest::Client::new();
    let mut receipts = Vec::new();
    for (i, r) in chain.reports.iter().enumerate() {
        let v: serde_json::Value = http
            .put(format!(
                "http://{}/v1/reports/gw-test-{:012}",
                rx.addr(),
                i + 1
            ))
            .body(r.clone())
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("JSON");
        receipts.push(v["receipt"].clone());
    }
    rx.stop().await.expect("stops");
    for (i, receipt) in receipts.iter().enumerate() {
        let rp = dir.path().join(format!("r{i}.json"));
        std::fs::write(&rp, serde_json::to_vec(receipt).expect("JSON")).expect("write");
        let report = dir.path().join(format!("r{i}.jws"));
        std::fs::write(&report, &chain.reports[i]).expect("write");
        let (ok, out) = check(&[rp.as_os_str(), report.as_os_str(), key.as_ref()]);
        assert!(ok, "receipt {i}: {out}");
    }
    let report = dir.path().join("r3.jws");
    let other = dir.path().join("r2.jws");
    let r = &receipts[3];
    let cases: Vec<(PathBuf, &Path, &str)> = vec![
        (
            tampered(dir.path(), r, |_| {}),
            other.as_path(),
            "another report",
        ),
        (
            tampered(dir.path(), r, |v| v["log_index"] = serde_json::json!(2)),
            report.as_path(),
            "inclusion proof",
        ),
        (
            tampered(dir.path(), r, |v| {
                let p = v["inclusion_proof"][0]
                    .as_str()
                    .expect("hex")
                    .replace(['a', 'b'], "c");
                v["inclusion_proof"][0] = serde_json::json!(p);
            }),
            report.as_path(),
            "inclusion proof",
        ),
        (
            tampered(dir.path(), r, |v| {
                let c = v["checkpoint"]
                    .as_str()
                    .expect("note")
                    .replacen("\n4\n", "\n5\n", 1);
                v["checkpoint"] = serde_json::json!(c);
                v["tree_size"] = serde_json::json!(5);
            }),
            report.as_path(),
            "signature",
        ),
    ];
    for (receipt, report, why) in cases {
        let (ok, out) = check(&[receipt.as_os_str(), report.as_os_str(), key.as_ref()]);
        assert!(
            !ok && out.contains(why),
            "expected INVALID ({why}), got {out}"
        );
    }
}
