//! The crediting statement end to end: two gateways' hourly reports
//! uploaded over HTTP to a receiver, then `mrv-receiver statement` writes
//! the pack for one day. Checked with tools we did not write: openpyxl
//! reads the workbook back and its totals equal the exact sum of the
//! reports' ER (Python fractions over the JWS payloads) rounded down once
//! (`tests/python/check_statement.py`); the independent Python verifier
//! verifies the pack's reports with its registry and keys; the signed note
//! and manifest verify, and a changed byte anywhere is caught.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use ed25519_dalek::SigningKey;
use std::path::Path;
use std::process::Command;
use upload_support::{TestChain, init, start_receiver};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn receiver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mrv-receiver"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_pack_totals_are_the_exact_er_sum_rounded_down_once_read_back_by_openpyxl() {
    init();
    // Gateway A: 30 hourly reports from 2025-11-26 00:00 (24 in the day, 6 on
    // the next); gateway B: 5 hourly reports.
    let mut a = TestChain::new(2, 60_000, 3_600_000).unstored();
    a.extend(30);
    let mut b = TestChain::new(3, 60_000, 3_600_000).unstored();
    b.set_gateway("gw-two");
    b.set_signer(SigningKey::from_bytes(&[43; 32]), "gw-two-2025");
    b.extend(5);
    let mut keys = a.keys();
    keys.insert("gw-two-2025", b.key.verifying_key());
    let data = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(data.path(), keys, None, None, None).await;
    let verifier = rx.handle.log().verifier().to_string();
    let http = reqwest::Client::new();
    for (chain, gw) in [(&a, "gw-test"), (&b, "gw-two")] {
        for (i, r) in chain.reports.iter().enumerate() {
            let url = format!("http://{}/v1/reports/{gw}-{:012}", rx.addr(), i + 1);
            let code = http
                .put(url)
                .body(r.clone())
                .send()
                .await
                .expect("answer")
                .status();
            assert_eq!(code.as_u16(), 201, "{gw} seq {}", i + 1);
        }
    }
    // The query API answers the same totals the pack will state.
    let api: serde_json::Value = http
        .get(format!(
            "http://{}/v1/ledger/totals?project=JCM-TH-0042&from=2025-11-26&to=2025-11-26",
            rx.addr()
        ))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(api["reports"], 29);
    rx.stop().await.expect("stops");

    let work = tempfile::tempdir().expect("tempdir");
    let registry = work.path().join("registry.json");
    std::fs::write(
        &registry,
        serde_json::to_vec(&upload_support::synthetic_registry()).expect("JSON"),
    )
    .expect("write");
    let (ka, kb) = (
        work.path().join("gw-test.jwk"),
        work.path().join("gw-two.jwk"),
    );
    std::fs::write(&ka, serde_json::to_vec(&a.jwk()).expect("JWK")).expect("write");
    std::fs::write(&kb, serde_json::to_vec(&b.jwk()).expect("JWK")).expect("write");
    let pack = work.path().join("pack");
    let (ok, stdout, stderr) = run(receiver()
        .arg("statement")
        .args([
            "--project",
            "JCM-TH-0042",
            "--from",
            "2025-11-26",
            "--to",
            "2025-11-26",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--out")
        .arg(&pack)
        .arg("--device-registry")
        .arg(&registry)
        .arg("--gateway-key")
        .arg(&ka)
        .arg("--gateway-key")
        .arg(&kb));
    assert!(ok, "statement failed: {stdout}{stderr}");
    assert!(stdout.contains("29 reports"), "{stdout}");

    // openpyxl and fractions, from the JWS payloads.
    let (ok, stdout, stderr) = run(Command::new("python3")
        .arg(format!("{ROOT}/tests/python/check_statement.py"))
        .arg(&pack));
    assert!(ok, "check_statement.py: {stdout}{stderr}");
    let checked: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON line");
    assert_eq!(checked["reports"], 29);
    assert_ne!(checked["er_exact"], "0", "the reports credit something");
    assert_eq!(checked["er_exact"], api["amounts"]["er"]["exact"]);
    assert_eq!(checked["er_tonnes"], api["amounts"]["er"]["tonnes"]);
    // 24 + 5 report files; the 6 reports of the next day are not in the pack.
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    assert_eq!(count(&pack.join("reports/gw-test")), 24);
    assert_eq!(count(&pack.join("reports/gw-two")), 5);
    assert_eq!(count(&pack.join("receipts/gw-test")), 24);

    // The independent verifier accepts the pack's reports with its registry and keys.
    for gw in ["gw-test", "gw-two"] {
        let mut files: Vec<_> = std::fs::read_dir(pack.join("reports").join(gw))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let (ok, stdout, stderr) = run(Command::new("python3")
            .arg(format!("{ROOT}/tests/python/verify_report.py"))
            .arg("--keys")
            .arg(pack.join("registry/gateway-keys/gw-test.jwk"))
            .arg("--keys")
            .arg(pack.join("registry/gateway-keys/gw-two.jwk"))
            .arg("--devices")
            .arg(pack.join("registry/devices.json"))
            .args(&files));
        assert!(ok, "verify_report.py {gw}: {stdout}{stderr}");
    }

    // The signed note and the manifest.
    let (ok, stdout, stderr) = run(receiver()
        .arg("verify-statement")
        .arg(&pack)
        .args(["--log-verifier", &verifier]));
    assert!(ok, "verify-statement: {stdout}{stderr}");
    assert!(stdout.contains("reports 29"), "{stdout}");
    let (ok, _, stderr) = run(Command::new("sha256sum")
        .arg("-c")
        .arg("--quiet")
        .arg("MANIFEST.sha256")
        .current_dir(&pack));
    assert!(ok, "sha256sum -c: {stderr}");
    // Another key does not verify it.
    let other = mrv_shared::tlog::note::NoteVerifier::new(
        mrv_shared::tlog::note::NoteVerifier::parse(&verifier)
            .expect("verifier")
            .name(),
        SigningKey::from_bytes(&[99; 32]).verifying_key(),
    )
    .expect("verifier");
    let (ok, _, _) = run(receiver()
        .arg("verify-statement")
        .arg(&pack)
        .args(["--log-verifier", &other.to_string()]));
    assert!(!ok, "a note verifies only under the log key");
    // A changed report byte, a changed total, an added file: each caught.
    type Tamper = fn(&Path);
    let tampers: [(&str, Tamper); 3] = [
        ("report", |p| {
            let f = p.join("reports/gw-two/000000000003.jws");
            let mut b = std::fs::read(&f).expect("read");
            let i = b.len() - 5;
            b[i] ^= 1;
            std::fs::write(&f, b).expect("write");
        }),
        ("total", |p| {
            let f = p.join("totals.json");
            let t = std::fs::read_to_string(&f).expect("read").replacen(
                "\"tonnes\": ",
                "\"tonnes\": 1",
                1,
            );
            std::fs::write(&f, t).expect("write");
        }),
        ("added", |p| {
            std::fs::write(p.join("reports/extra.jws"), b"x").expect("write")
        }),
    ];
    for (what, tamper) in tampers {
        let copy = work.path().join(format!("tampered-{what}"));
        copy_dir(&pack, &copy);
        tamper(&copy);
        let (ok, stdout, stderr) = run(receiver()
            .arg("verify-statement")
            .arg(&copy)
            .args(["--log-verifier", &verifier]));
        assert!(!ok, "{what}: tampered pack verified: {stdout}");
        assert!(stderr.contains("does not verify"), "{what}: {stderr}");
        let (ok, _, _) = run(Command::new("python3")
            .arg(format!("{ROOT}/tests/python/check_statement.py"))
            .arg(&copy));
        assert!(!ok, "{what}: check_statement.py accepted a tampered pack");
    }
    // A pack is never written over another.
    let (ok, _, stderr) = run(receiver()
        .arg("statement")
        .args([
            "--project",
            "JCM-TH-0042",
            "--from",
            "2025-11-26",
            "--to",
            "2025-11-26",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--out")
        .arg(&pack));
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
}
