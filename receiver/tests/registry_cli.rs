//! The registry end to end on the real binary: `mrv-receiver` serving a
//! file store with admin tokens and no command-line keys, changed with
//! `mrv-receiver registry ...` (the CLI, over HTTP), reports uploaded over
//! HTTP. Unknown gateways and revoked keys are refused with their reason,
//! nothing stored, counted in `/v1/metrics`; the audit trail names the
//! actor of each change and survives a restart; the statement pack
//! carries the registry and the trail.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use ed25519_dalek::SigningKey;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use upload_support::{TestChain, init};

const EXE: &str = env!("CARGO_BIN_EXE_mrv-receiver");
const TOKEN: &str = "ops-token-0123456789abcdef";

fn spawn(data: &Path, tokens: &Path) -> (Child, String) {
    let mut child = Command::new(EXE)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--admin-tokens")
        .arg(tokens)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mrv-receiver");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, base)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "the receiver stops cleanly: {status}");
}

/// Runs `mrv-receiver registry <args>` against `base` with `token`:
/// (success, stdout, stderr).
fn cli(base: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(EXE)
        .arg("registry")
        .args(["--url", base, "--admin-token", token])
        .args(args)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(base: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = cli(base, TOKEN, args);
    assert!(ok, "registry {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

async fn put(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let r = http
        .put(format!("{base}/v1/reports/{id}"))
        .body(body.to_vec())
        .send()
        .await
        .expect("answer");
    let code = r.status().as_u16();
    (code, r.json().await.expect("JSON"))
}

#[test]
fn the_registry_cli_help_names_every_command_and_the_validity_rule() {
    let out = Command::new(EXE)
        .args(["registry", "--help"])
        .output()
        .expect("help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "enrol",
        "rotate",
        "revoke",
        "list",
        "history",
        "devices",
        "valid-until",
    ] {
        assert!(text.contains(word), "{word} in:\n{text}");
    }
    let out = Command::new(EXE)
        .args(["registry", "devices", "--help"])
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["set", "rotate", "revoke", "import", "show"] {
        assert!(text.contains(word), "{word} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_devices_are_enrolled_revoked_and_audited_through_the_cli() {
    init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let tokens = tmp.path().join("admins");
    std::fs::write(&tokens, format!("# actor token\nops {TOKEN}\n")).expect("tokens");
    let mut chain = TestChain::new(1, 60_000, 600_000).unstored();
    chain.extend(3);
    let key = tmp.path().join("gw.pub.jwk");
    std::fs::write(&key, serde_json::to_vec(&chain.jwk()).expect("JWK")).expect("key");
    let devices = tmp.path().join("registry.json");
    std::fs::write(
        &devices,
        serde_json::to_vec(&upload_support::synthetic_registry()).expect("JSON"),
    )
    .expect("registry");
    let (rx, base) = spawn(&data, &tokens);
    let http = reqwest::Client::new();
    let id = |seq: u64| format!("gw-test-{seq:012}");

    // Not enrolled: refused, nothing stored.
    let (code, v) = put(&http, &base, &id(1), &chain.reports[0]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (422, Some("unknown_gateway")),
        "{v}"
    );

    // A wrong admin token changes nothing.
    let (ok, _, err) = cli(
        &base,
        "not-the-token-at-all",
        &[
            "devices",
            "import",
            "--site",
            "th-solar-01",
            devices.to_str().expect("utf-8"),
        ],
    );
    assert!(!ok && err.contains("refused (401 unauthorized)"), "{err}");

    let rec = ok_json(
        &base,
        &[
            "devices",
            "import",
            "--site",
            "th-solar-01",
            devices.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        (rec["seq"].as_u64(), rec["actor"].as_str()),
        (Some(1), Some("ops"))
    );
    let rec = ok_json(
        &base,
        &[
            "enrol",
            "--gateway",
            "gw-test",
            "--site",
            "th-solar-01",
            "--project",
            "JCM-TH-0042",
            "--key",
            key.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(rec["change"]["action"], "enrol_gateway");
    let (code, v) = put(&http, &base, &id(1), &chain.reports[0]).await;
    assert_eq!(code, 201, "{v}");

    // Enrolling again is a conflict, answered as such.
    let (ok, _, err) = cli(
        &base,
        TOKEN,
        &[
            "enrol",
            "--gateway",
            "gw-test",
            "--site",
            "th-solar-01",
            "--project",
            "JCM-TH-0042",
            "--key",
            key.to_str().expect("utf-8"),
        ],
    );
    assert!(!ok && err.contains("409 conflict"), "{err}");

    // Revoke: the next report is refused, nothing stored.
    let rec = ok_json(
        &base,
        &[
            "revoke",
            "--gateway",
            "gw-test",
            "--kid",
            upload_support::KID,
            "--reason",
            "stolen",
        ],
    );
    assert_eq!(rec["last_seq_accepted"].as_u64(), Some(1));
    let (code, v) = put(&http, &base, &id(2), &chain.reports[1]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (422, Some("key_revoked")),
        "{v}"
    );
    let fetched = http
        .get(format!("{base}/v1/reports/{}", id(2)))
        .send()
        .await
        .expect("answer");
    assert_eq!(fetched.status().as_u16(), 404);

    let listed = ok_json(&base, &["list", "--gateway", "gw-test"]);
    assert_eq!(listed["keys"][0]["revoked"]["by"], "ops");
    let shown = ok_json(&base, &["devices", "show", "--site", "th-solar-01"]);
    assert_eq!(shown["devices"].as_array().map(Vec::len), Some(64));

    let metrics = http
        .get(format!("{base}/v1/metrics"))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("text");
    for line in [
        "mrv_receiver_rejections_total{reason=\"unknown_gateway\"} 1",
        "mrv_receiver_rejections_total{reason=\"key_revoked\"} 1",
        "mrv_receiver_reports_total{status=\"accepted\"} 1",
        "mrv_receiver_registry_changes_total{outcome=\"recorded\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    // Restart: the registry and the trail are durable; the key stays revoked.
    stop(rx);
    let (rx, base) = spawn(&data, &tokens);
    let history = ok_json(&base, &["history"]);
    let h = history.as_array().expect("records");
    assert_eq!(
        h.iter()
            .map(|r| (
                r["seq"].as_u64().expect("seq"),
                r["actor"].as_str().expect("actor"),
                r["change"]["action"].as_str().expect("action")
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, "ops", "import_devices"),
            (2, "ops", "enrol_gateway"),
            (3, "ops", "revoke_gateway_key")
        ]
    );
    assert!(
        h.iter()
            .all(|r| r["time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    let (code, v) = put(&http, &base, &id(2), &chain.reports[1]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (422, Some("key_revoked")),
        "{v}"
    );

    // A new key for the gateway (rotation at the end of report 1's period)
    // signs the rest of the chain.
    let k2 = SigningKey::from_bytes(&[61; 32]);
    let mut rotated = TestChain::new(1, 60_000, 600_000).unstored();
    rotated.extend(1);
    rotated.set_signer(k2.clone(), "gw-test-2026");
    rotated.extend(1);
    let key2 = tmp.path().join("gw2.pub.jwk");
    std::fs::write(&key2, serde_json::to_vec(&rotated.jwk()).expect("JWK")).expect("key");
    let at = mrv_receiver::registry::rfc3339(upload_support::T0 + 600_000);
    ok_json(
        &base,
        &[
            "rotate",
            "--gateway",
            "gw-test",
            "--key",
            key2.to_str().expect("utf-8"),
            "--at",
            &at,
        ],
    );
    let (code, v) = put(&http, &base, &id(2), &rotated.reports[1]).await;
    assert_eq!(code, 201, "{v}");
    stop(rx);

    // The statement pack carries the registry and its trail.
    let pack = tmp.path().join("pack");
    let out = Command::new(EXE)
        .args([
            "statement",
            "--project",
            "JCM-TH-0042",
            "--from",
            "2025-11-26",
            "--to",
            "2025-11-26",
            "--out",
        ])
        .arg(&pack)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("statement");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trail = std::fs::read_to_string(pack.join("registry/history.jsonl")).expect("trail");
    assert_eq!(trail.lines().count(), 4);
    let reg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pack.join("registry/registry.json")).expect("registry"),
    )
    .expect("JSON");
    assert_eq!(reg["gateways"][0]["keys"].as_array().map(Vec::len), Some(2));
    assert!(
        pack.join("registry/enrolled-keys/gw-test-2026.jwk")
            .exists()
    );
    assert!(
        pack.join("registry/sites/th-solar-01/devices.json")
            .exists()
    );
    let manifest = std::fs::read_to_string(pack.join("MANIFEST.sha256")).expect("manifest");
    assert!(manifest.contains("registry/history.jsonl"), "{manifest}");
}
