//! The tamper corpus of `shared/tests/vectors/` (docs/REPORT-FORMAT.md §13:
//! frames removed with everything recomputed and re-signed, a signed device
//! relabelled unsigned, a device missing from the registry, a swapped device
//! key, an impossible calibration date, consumption bound as generation, a
//! hole explained by a forged event, ...) is rejected with the stated reason
//! by the auditor's `verify` command (the real binary) and by the reference
//! receiver over HTTP; the good vectors are accepted by both. Plus the
//! verdict text an auditor reads.

mod report_support;
mod upload_support;
mod vector_files;

use std::path::PathBuf;
use std::process::Command;
use vector_files::{cases, expect, files, vectors};

/// Runs the gateway binary's `verify` on `args`; (exit code, stdout).
fn verify(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .arg("verify")
        .args(args)
        .output()
        .expect("verify runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn trusted_args() -> Vec<std::ffi::OsString> {
    vec![
        "--keys".into(),
        vectors().join("gateway.pub.jwk").into(),
        "--devices".into(),
        vectors().join("registry.json").into(),
    ]
}

#[test]
fn the_verify_command_rejects_every_tampered_vector_with_its_reason() {
    let tamper = cases("tamper");
    assert!(tamper.len() >= 10);
    for case in tamper {
        let e = expect(&case);
        let mut args = trusted_args();
        args.push(case.clone().into());
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, out) = verify(&refs);
        assert_eq!(code, 1, "{}: {out}", case.display());
        let file = e["file"].as_str().expect("file");
        let reason = e["reason"].as_str().expect("reason");
        let line = out
            .lines()
            .find(|l| l.starts_with("INVALID") && l.contains(file))
            .unwrap_or_else(|| panic!("{}: no INVALID line for {file}: {out}", case.display()));
        assert!(
            line.contains(&format!("  {reason}: ")),
            "{}: expected {reason}, got {line}",
            case.display()
        );
    }
}

#[test]
fn the_verify_command_accepts_the_good_vectors_and_says_what_was_credited() {
    for case in cases("good") {
        let mut args = trusted_args();
        args.push(case.clone().into());
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, out) = verify(&refs);
        assert_eq!(code, 0, "{}: {out}", case.display());
        // Each calculation's exact ER, with its unit and its inputs.
        let e = expect(&case);
        for r in e["reports"].as_array().expect("reports") {
            for (id, c) in r["calculations"].as_object().expect("calculations") {
                let er = c["er_exact"].as_str().expect("er");
                assert!(
                    out.contains(&format!("  {id} ("))
                        && out.contains(&format!("ER {er} tCO2e exactly")),
                    "{}: {id} ER {er} not shown: {out}",
                    case.display()
                );
            }
        }
        assert!(out.contains("RE = "), "inputs shown: {out}");
        assert!(
            out.contains(" MWh x 0.5113 tCO2/MWh"),
            "PV inputs in MWh: {out}"
        );
        assert!(out.contains("% ("), "completeness shown: {out}");
        assert!(
            out.contains("rounded down once"),
            "a total rounded once: {out}"
        );
    }
}

#[test]
fn without_a_registry_verify_refuses_and_the_explicit_relaxation_says_so_on_every_line() {
    let chain = vectors().join("good/chain");
    let (code, _) = verify(&[
        "--keys".as_ref(),
        vectors().join("gateway.pub.jwk").as_os_str(),
        chain.as_os_str(),
    ]);
    assert_eq!(code, 2, "no registry is a usage error, not a pass");
    let relabelled = vectors().join("tamper/signed_device_relabelled_unsigned");
    let (code, out) = verify(&[
        "--keys".as_ref(),
        vectors().join("gateway.pub.jwk").as_os_str(),
        "--trust-report-keys".as_ref(),
        relabelled.as_os_str(),
    ]);
    // Without the registry the relabelled device is not caught: the verdict
    // must make that plain.
    assert_eq!(code, 0, "{out}");
    for l in out.lines().filter(|l| l.starts_with("OK")) {
        assert!(l.contains("UNTRUSTED-KEYS"), "{l}");
    }
    assert!(out.contains("UNTRUSTED-KEYS: device keys were taken from the reports"));
}

#[test]
fn verify_skips_what_is_not_a_report_and_hints_at_slices_and_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = files(&vectors().join("good/chain"));
    for (i, f) in chain.iter().enumerate() {
        std::fs::copy(f, dir.path().join(format!("{:012}.jws", i + 1))).expect("copy");
    }
    std::fs::write(dir.path().join("000000000001.meta.json"), b"{\"seq\":1}").expect("write");
    std::fs::write(dir.path().join("delivered.json"), b"{\"delivered_upto\":1}").expect("write");
    let mut args = trusted_args();
    args.push(dir.path().into());
    args.push(dir.path().join("delivered.json").into());
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, out) = verify(&refs);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SKIPPED") && out.contains("delivered.json"),
        "{out}"
    );
    assert!(
        !out.contains("meta.json"),
        "directories only take *.jws: {out}"
    );
    // A slice of the chain: the hint names the flag.
    let mut args = trusted_args();
    args.push(chain[1].clone().into());
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, out) = verify(&refs);
    assert_eq!(code, 1);
    assert!(out.contains("--allow-mid-chain"), "{out}");
    args.insert(0, "--allow-mid-chain".into());
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    assert_eq!(verify(&refs).0, 0);
    // The wrong gateway key: the message names the key it tried.
    let wrong = dir.path().join("wrong.jwk");
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key();
    let jwk = mrv_shared::report::jwk::Jwk::public("gw-vec-01-2026", &key);
    std::fs::write(&wrong, serde_json::to_vec(&jwk).expect("jwk")).expect("write");
    let (code, out) = verify(&[
        "--keys".as_ref(),
        wrong.as_os_str(),
        "--devices".as_ref(),
        vectors().join("registry.json").as_os_str(),
        chain[0].as_os_str(),
    ]);
    assert_eq!(code, 1);
    let thumb = mrv_shared::report::jwk::thumbprint(&key);
    assert!(
        out.contains(&thumb),
        "the tried key's thumbprint is named: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_rejects_every_tampered_vector_with_its_reason_and_keeps_the_good() {
    use mrv_shared::report::jwk::Jwk;
    upload_support::init();
    let jwk: Jwk =
        serde_json::from_slice(&std::fs::read(vectors().join("gateway.pub.jwk")).expect("jwk"))
            .expect("JWK");
    let mut keys = mrv_shared::report::KeySet::new();
    keys.insert_jwk(&jwk).expect("key");
    let registry = mrv_shared::report::DeviceRegistry::from_json(
        &std::fs::read(vectors().join("registry.json")).expect("registry"),
    )
    .expect("registry");
    let trust = mrv_shared::report::DeviceTrust::Registry(registry.trusted().expect("valid"));
    let http = reqwest::Client::new();
    let all: Vec<(PathBuf, bool)> = cases("good")
        .into_iter()
        .map(|c| (c, true))
        .chain(cases("tamper").into_iter().map(|c| (c, false)))
        .collect();
    for (case, good) in all {
        // One receiver per case: each case is its own chain from seq 1.
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut cfg = mrv_receiver::ReceiverConfig::files(dir.path(), keys.clone(), trust.clone());
        cfg.token = Some(String::from("tok"));
        let rx = mrv_receiver::start(listener, cfg).await.expect("receiver");
        let e = expect(&case);
        let mut rejected = None;
        for f in files(&case) {
            let body = std::fs::read(&f).expect("read");
            let r = http
                .post(format!("http://{}/v1/reports", rx.addr()))
                .bearer_auth("tok")
                .body(body)
                .send()
                .await
                .expect("answer");
            let code = r.status().as_u16();
            let json: serde_json::Value = r.json().await.expect("JSON");
            let item = &json["results"][0];
            if item["status"] != "accepted" {
                assert!(
                    code >= 400 || item["status"] == "rejected",
                    "{}: {json}",
                    case.display()
                );
                let name = f.file_name().expect("name").to_string_lossy().into_owned();
                rejected = Some((item["reason"].as_str().unwrap_or("").to_string(), name));
                break;
            }
        }
        if good {
            assert_eq!(rejected, None, "{}", case.display());
        } else {
            let want = (
                e["reason"].as_str().expect("reason").to_string(),
                e["file"].as_str().expect("file").to_string(),
            );
            assert_eq!(rejected, Some(want), "{}: {}", case.display(), e["what"]);
        }
        rx.stop().await.expect("stops");
    }
}
