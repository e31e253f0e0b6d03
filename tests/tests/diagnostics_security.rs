//! Diagnostics security: a non-loopback listener without a token is refused
//! (and the gateway says why); a wrong or missing token gets 401 on the API,
//! the pages and `/metrics`; the login cookie is not the token; and neither a
//! `diag bundle` nor the kept log lines contain key material, passwords or
//! the token.

mod diagnostics_support;

use base64::Engine as _;
use diagnostics_support::{client, gateway_bin, get, start_site};
use mrv_firmware::sim::Faults;
use std::io::Read;

const TOKEN: &str = "diag-token-4f1c9a77e2b04d3c";
const MQTT_PASSWORD: &str = "mqtt-pass-9b2e7d61c0";

fn with_token() -> String {
    format!(
        "\n[[mqtt.users]]\nusername = \"field\"\npassword = \"{MQTT_PASSWORD}\"\n\
         \n[diagnostics]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    )
}

#[tokio::test]
async fn non_loopback_listen_without_token_is_refused_with_the_reason() {
    let site = diagnostics_support::site(1, "\n[diagnostics]\nlisten = \"0.0.0.0:18080\"\n");
    let e = mrv_gateway::config::load(&site.config_path).expect_err("must be refused");
    assert_eq!(e.key, "diagnostics.token");
    // The gateway itself refuses to start, naming the key, and never binds.
    let out = tokio::process::Command::new(gateway_bin())
        .arg("run")
        .arg("--config")
        .arg(&site.config_path)
        .output()
        .await
        .expect("run the gateway");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("diagnostics.token"), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    // With a token the same address is accepted (validation only: tests
    // never listen beyond loopback).
    let site = diagnostics_support::site(
        1,
        &format!("\n[diagnostics]\nlisten = \"0.0.0.0:18080\"\ntoken = \"{TOKEN}\"\n"),
    );
    let c = mrv_gateway::config::load(&site.config_path).expect("accepted with a token");
    assert!(
        !format!("{:?}", c.diagnostics).contains(TOKEN),
        "Debug must not print the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_gets_401_and_the_cookie_is_not_the_token() {
    let creds = Some(("field".to_string(), MQTT_PASSWORD.to_string()));
    let run = start_site(1, &with_token(), |_| Faults::default(), 3, creds).await;
    let b = &run.base;
    for p in [
        "/api/status",
        "/api/devices",
        "/api/config",
        "/metrics",
        "/",
        "/devices/dev-000",
    ] {
        let url = format!("{b}{p}");
        assert_eq!(get(&url, None).await.0, 401, "{p} without token");
        assert_eq!(
            get(&url, Some("wrong-token-0000000000")).await.0,
            401,
            "{p} wrong token"
        );
        assert_eq!(
            get(&url, Some(&TOKEN[..TOKEN.len() - 1])).await.0,
            401,
            "{p} prefix"
        );
        assert_eq!(get(&url, Some(TOKEN)).await.0, 200, "{p} right token");
    }
    let (_, page) = get(&format!("{b}/"), None).await;
    assert!(page.contains("Log in") && !page.contains(TOKEN));
    // Assets need no token (the login page uses them) and hold no data.
    assert_eq!(get(&format!("{b}/assets/style.css"), None).await.0, 200);

    // The login form: wrong token 401, right token sets a session cookie.
    let c = client();
    let r = c
        .post(format!("{b}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong-token-0000000000")
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(format!("{b}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie set")
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(
        !cookie.contains(TOKEN),
        "the cookie must not carry the token"
    );
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let r = c
        .get(format!("{b}/api/status"))
        .header("cookie", &pair)
        .send()
        .await
        .expect("with cookie");
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(format!("{b}/api/status"))
        .header("cookie", format!("{pair}x"))
        .send()
        .await
        .expect("with bad cookie");
    assert_eq!(r.status().as_u16(), 401);
    run.stop().await;
}

/// Every form a secret could take in text.
fn forms(secret: &[u8]) -> Vec<String> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        format!("{secret:?}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diag_bundle_and_logs_contain_no_key_material() {
    // Keep log lines in the ring as the binary does (main.rs installs this layer).
    use tracing_subscriber::prelude::*;
    let _ = tracing_subscriber::registry()
        .with(mrv_gateway::diagnostics::logs::layer())
        .try_init();
    let creds = Some(("field".to_string(), MQTT_PASSWORD.to_string()));
    let run = start_site(2, &with_token(), |_| Faults::default(), 3, creds).await;
    // A careless log line carrying secrets must still not leak them.
    tracing::warn!("debug dump: token={TOKEN} password={MQTT_PASSWORD}");

    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("bundle.tar.gz");
    let out = tokio::process::Command::new(gateway_bin())
        .args(["diag", "bundle", "--url", &run.base, "--token", TOKEN, "-o"])
        .arg(&out_path)
        .output()
        .await
        .expect("run diag bundle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the token the bundle cannot be taken.
    let denied = tokio::process::Command::new(gateway_bin())
        .args(["diag", "bundle", "--url", &run.base, "-o"])
        .arg(dir.path().join("denied.tar.gz"))
        .output()
        .await
        .expect("run diag bundle");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));

    let mut files = std::collections::BTreeMap::new();
    let bytes = std::fs::read(&out_path).expect("bundle written");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let mut s = String::new();
        e.read_to_string(&mut s).expect("utf8 file");
        files.insert(name, s);
    }
    for f in [
        "README.txt",
        "config.redacted.toml",
        "status.json",
        "devices.json",
        "buffer.json",
        "uploads.json",
        "events.json",
        "logs.json",
        "metrics.txt",
    ] {
        assert!(files.contains_key(f), "{f} missing: {:?}", files.keys());
    }
    let config = &files["config.redacted.toml"];
    assert!(
        config.contains("<redacted>") && config.contains("username = \"field\""),
        "{config}"
    );
    let logs = &files["logs.json"];
    assert!(
        logs.contains("debug dump: token=<redacted> password=<redacted>"),
        "{logs}"
    );
    let status: serde_json::Value = serde_json::from_str(&files["status.json"]).expect("json");
    assert_eq!(status["ingest"]["frames_stored"], 6);
    assert!(status["buffer"]["depth_frames"].is_u64());

    let mut secrets: Vec<(String, String)> = vec![
        ("diagnostics token".into(), TOKEN.into()),
        ("mqtt password".into(), MQTT_PASSWORD.into()),
    ];
    for (id, _, secret) in &run.site.devices {
        for f in forms(secret) {
            secrets.push((format!("{id} private key"), f));
        }
    }
    let api_logs =
        diagnostics_support::get(&format!("{}/api/logs?limit=1000", run.base), Some(TOKEN))
            .await
            .1;
    let page_logs = diagnostics_support::get(&format!("{}/logs", run.base), Some(TOKEN))
        .await
        .1;
    let mut searched = files.clone();
    searched.insert("GET /api/logs".into(), api_logs);
    searched.insert("GET /logs".into(), page_logs);
    for (name, text) in &searched {
        for (what, s) in &secrets {
            assert!(!text.contains(s.as_str()), "{what} found in {name}");
        }
        assert!(!text.contains("PRIVATE KEY"), "PEM private key in {name}");
        assert!(!text.contains("\"d\":"), "JWK private part in {name}");
    }
    run.stop().await;
}
