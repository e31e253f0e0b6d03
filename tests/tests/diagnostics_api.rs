//! Diagnostics API, pages, `/metrics` and the `status`/`devices` CLI against
//! a running gateway with simulated devices (one unplugged, one registered
//! but silent). The gateway's clock is a manual clock, so "stale" is reached
//! by moving it rather than by waiting.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, GHOST_DEVICE, gateway_bin, get, get_json, start_site};
use mrv_firmware::sim::Faults;

const FRAMES: u64 = 10;

fn row<'a>(rows: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    rows.as_array()
        .expect("array")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {rows}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pages_metrics_and_cli_show_a_running_site() {
    let extra = format!("{GHOST_DEVICE}{DIAG_LOOPBACK}");
    let unplugged = |i: usize| Faults {
        unplugged: i == 2,
        ..Faults::default()
    };
    let run = start_site(3, &extra, unplugged, FRAMES, None).await;
    let b = &run.base;

    // Status: counts, buffer, ingest.
    let s = get_json(&format!("{b}/api/status"), None).await;
    assert_eq!(s["site"]["id"], "demo-site");
    assert_eq!(s["auth"], false);
    assert_eq!(s["devices"]["total"], 4, "{s}");
    assert_eq!(s["devices"]["ok"], 2, "{s}");
    assert_eq!(s["devices"]["failing"], 1, "{s}");
    assert_eq!(s["devices"]["silent"], 1, "{s}");
    assert_eq!(s["ingest"]["frames_stored"], 3 * FRAMES, "{s}");
    assert_eq!(s["buffer"]["depth_frames"], 3 * FRAMES, "{s}");
    assert_eq!(s["buffer"]["full"], false);
    assert!(s["buffer"]["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(s["uploads"]["reports_configured"], false);
    assert!(s["modbus"].is_null(), "no pollers attached: {s}");

    // Devices: values, quality, signature, ack state.
    let rows = get_json(&format!("{b}/api/devices"), None).await;
    let ok = row(&rows, "dev-000");
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(ok["signature"], "verified");
    assert_eq!(ok["acked_seq"], FRAMES);
    assert_eq!(ok["frames"], FRAMES);
    assert_eq!(ok["missing_frames"], 0);
    assert!(ok["quality"].as_array().expect("quality").is_empty());
    assert!(!ok["values"].as_array().expect("values").is_empty(), "{ok}");
    // Exact integers stay; the display form is beside them.
    for v in ok["values"].as_array().expect("values") {
        assert!(v["value"].is_i64(), "{v}");
        assert!(!v["display"].as_str().expect("display").is_empty(), "{v}");
    }
    let bad = row(&rows, "dev-002");
    assert_eq!(bad["status"], "failing", "{bad}");
    assert!(
        bad["status_reason"]
            .as_str()
            .expect("reason")
            .contains("unusable"),
        "{bad}"
    );
    let ghost = row(&rows, "ghost-01");
    assert_eq!(ghost["status"], "silent");
    assert_eq!(ghost["serial"], "GHOST-1");
    assert!(ghost["last_received_ms"].is_null());

    // Device detail: one series per channel, every reading of the window.
    let d = get_json(&format!("{b}/api/devices/dev-000"), None).await;
    let channels = d["channels"].as_array().expect("channels");
    assert!(!channels.is_empty());
    let points: usize = channels
        .iter()
        .map(|c| c["points"].as_array().expect("points").len())
        .sum();
    assert_eq!(points as u64, s_readings(&run, "dev-000"), "{d}");
    assert!(d["firmware"].is_string());

    // Live tail: every stored frame of the device.
    let t = get_json(&format!("{b}/api/devices/dev-000/tail?after_ms=0"), None).await;
    let entries = t["entries"].as_array().expect("entries");
    assert_eq!(entries.len() as u64, FRAMES, "{t}");
    assert!(entries.iter().all(|e| e["kind"] == "stored"));
    assert!(
        entries[0]["summary"]
            .as_str()
            .expect("s")
            .starts_with("seq 1 ")
    );

    // Without a token only loopback Host names are served (DNS rebinding).
    let r = diagnostics_support::client()
        .get(format!("{b}/api/status"))
        .header("host", "attacker.example")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);

    // Unknown devices are 404, bad ids 400.
    assert_eq!(get(&format!("{b}/api/devices/nope"), None).await.0, 404);
    assert_eq!(get(&format!("{b}/api/devices/bad%20id"), None).await.0, 400);

    // Events: the gateway start is recorded.
    let ev = get_json(&format!("{b}/api/events?limit=50"), None).await;
    assert!(
        ev.as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "gateway_started"),
        "{ev}"
    );

    // Metrics in Prometheus text format.
    let (st, m) = get(&format!("{b}/metrics"), None).await;
    assert_eq!(st, 200);
    for line in [
        format!("mrv_ingest_frames_stored_total {}", 3 * FRAMES),
        format!("mrv_buffer_depth_frames {}", 3 * FRAMES),
        "mrv_buffer_full 0".to_string(),
        "mrv_device_up{device=\"dev-000\"} 1".to_string(),
        "mrv_device_up{device=\"dev-002\"} 0".to_string(),
        "# TYPE mrv_ingest_rejects_total counter".to_string(),
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }

    // Pages: rendered on the server with rows, values and a chart, and
    // allowed to load nothing from elsewhere.
    let r = diagnostics_support::client()
        .get(format!("{b}/"))
        .send()
        .await
        .expect("page");
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("CSP header")
        .to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(
        r.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let (st, html) = get(&format!("{b}/"), None).await;
    assert_eq!(st, 200);
    assert!(html.contains("data-device=\"dev-000\""), "{html}");
    assert!(
        html.contains("device-row st-failing"),
        "failing row stands out"
    );
    assert!(html.contains("device-row st-silent"));
    let (st, html) = get(&format!("{b}/devices/dev-000"), None).await;
    assert_eq!(st, 200);
    assert!(html.contains("<path class=\"line\" d=\"M"), "{html}");
    assert!(html.contains("id=\"tail\""));
    for p in [
        "/events",
        "/logs",
        "/modbus",
        "/assets/app.js",
        "/assets/style.css",
    ] {
        assert_eq!(get(&format!("{b}{p}"), None).await.0, 200, "{p}");
    }

    // The CLI reads the same API.
    let out = tokio::process::Command::new(gateway_bin())
        .args(["status", "--url", b])
        .output()
        .await
        .expect("run status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("4 total: 2 ok, 0 degraded, 0 stale, 1 failing, 1 silent"),
        "{text}"
    );
    // The health banner leads, naming the part that needs a look.
    assert!(
        text.starts_with(
            "health    WARN: ingest WARN, buffer OK, reports OFF, upload OFF, clock OK\n"
        ),
        "{text}"
    );
    // Values in display units in the table (no `0.01degC`, `mV`, `bool`).
    for base in ["0.01degC", "0.01%vol", " bool", " mV"] {
        assert!(!text.contains(base), "base unit {base} shown: {text}");
    }
    assert!(text.contains("REJECTS"), "{text}");
    assert!(
        text.contains("dev-000") && text.contains("SIGNATURE"),
        "{text}"
    );
    let out = tokio::process::Command::new(gateway_bin())
        .args(["devices", "--json", "--url", b])
        .output()
        .await
        .expect("run devices");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("devices JSON");
    assert_eq!(v.as_array().expect("rows").len(), 4);

    // Ten minutes without frames: the reporting devices turn stale.
    run.clock.advance(10 * 60 * 1000);
    let rows = get_json(&format!("{b}/api/devices"), None).await;
    assert_eq!(row(&rows, "dev-000")["status"], "stale", "{rows}");
    assert_eq!(row(&rows, "dev-001")["status"], "stale");

    run.stop().await;
}

fn s_readings(run: &diagnostics_support::Running, device: &str) -> u64 {
    run.gw
        .state
        .buffer
        .devices()
        .iter()
        .find(|d| d.device.as_str() == device)
        .map_or(0, |d| d.readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_payloads_show_in_the_tail_the_row_and_the_metrics() {
    let garbage = |_| Faults {
        garbage_every_frames: Some(2),
        ..Faults::default()
    };
    // MQTT keeps one connection's publishes in order and the gateway admits
    // them in order, so when frame 6 is acked the garbage published after
    // frames 2 and 4 has been rejected.
    let run = start_site(1, DIAG_LOOPBACK, garbage, 6, None).await;
    let b = &run.base;
    let t = get_json(&format!("{b}/api/devices/dev-000/tail?after_ms=0"), None).await;
    let entries = t["entries"].as_array().expect("entries");
    let rejected: Vec<_> = entries.iter().filter(|e| e["kind"] == "rejected").collect();
    assert!(rejected.len() >= 2, "{t}");
    assert_eq!(entries.iter().filter(|e| e["kind"] == "stored").count(), 6);
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["time_ms"].as_u64() <= w[1]["time_ms"].as_u64()),
        "oldest first: {t}"
    );
    let rows = get_json(&format!("{b}/api/devices"), None).await;
    let r = row(&rows, "dev-000");
    assert!(r["recent_rejects"].as_u64().expect("n") >= 2);
    // Frames still arrive, some are rejected: degraded, not a green "ok".
    assert_eq!(r["status"], "degraded", "{r}");
    assert!(r["rejects"].as_u64().expect("rejects") >= 2, "{r}");
    // The quarantine shows the raw payloads, as hex and as text.
    let q = get_json(&format!("{b}/api/quarantine?device=dev-000"), None).await;
    let q = q.as_array().expect("entries");
    assert!(q.len() >= 2, "{q:?}");
    for e in q {
        assert_eq!(e["device"], "dev-000");
        let hex = e["payload_hex"].as_str().expect("hex");
        assert!(
            !hex.is_empty() && hex.len() % 2 == 0 && hex.chars().all(|c| c.is_ascii_hexdigit())
        );
        assert!(e["payload_text"].is_string());
    }
    let (code, page) = get(&format!("{b}/quarantine"), None).await;
    assert_eq!(code, 200);
    assert!(page.contains("<pre class=\"hex\">00000000  "), "{page}");
    assert!(page.contains("class=\"card qentry\""), "{page}");
    let s = get_json(&format!("{b}/api/status"), None).await;
    let total = s["ingest"]["rejects_total"].as_u64().expect("total");
    assert!(total >= 2, "{s}");
    let (_, m) = get(&format!("{b}/metrics"), None).await;
    let in_metrics: u64 = m
        .lines()
        .filter(|l| l.starts_with("mrv_ingest_rejects_total{reason="))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(in_metrics >= 2, "{m}");
    let by_device: u64 = m
        .lines()
        .filter(|l| l.starts_with("mrv_device_rejects_total{device=\"dev-000\",reason="))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(by_device >= 2, "{m}");
    assert!(
        m.contains("mrv_device_status{device=\"dev-000\",status=\"degraded\"} 1"),
        "{m}"
    );
    run.stop().await;
}

/// Polls `/api/events` until an entry of `kind` appears (the diagnostics
/// watcher looks once a second).
async fn wait_for_event(base: &str, kind: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ev = get_json(&format!("{base}/api/events?limit=200"), None).await;
        if let Some(e) = ev
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["kind"] == kind)
        {
            return e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} entry in {ev}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mqtt_login_is_an_event_naming_client_user_and_peer() {
    if !mrv_e2e::require_tool("mosquitto_pub") {
        return;
    }
    let password = "field-pw-5d1e";
    let extra = format!(
        "\n[[mqtt.users]]\nusername = \"field\"\npassword = \"{password}\"\n{DIAG_LOOPBACK}"
    );
    let creds = Some(("field".to_string(), password.to_string()));
    let run = start_site(1, &extra, |_| Faults::default(), 2, creds).await;
    let b = &run.base;
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &run.site.mqtt_port.to_string()])
        .args(["-V", "mqttv311", "-i", "intruder-7", "-u", "field", "-P"])
        .arg("not-the-password")
        .args(["-t", "mrv/demo-site/dev-000/up", "-m", "x", "-q", "1"])
        .output()
        .await
        .expect("mosquitto_pub runs");
    assert!(!out.status.success(), "a wrong password must be refused");
    let e = wait_for_event(b, "mqtt_login_refused").await;
    let detail = e["detail"].as_str().expect("detail");
    for part in [
        "1 MQTT login(s) refused",
        "client id \"intruder-7\"",
        "user \"field\"",
        "from 127.0.0.1:",
        "wrong user name or password",
    ] {
        assert!(detail.contains(part), "{part:?} missing in {e}");
    }
    assert!(!detail.contains("not-the-password"), "{e}");
    assert_eq!(e["recorded"], false, "diagnostics-only: {e}");
    // The events page shows it too, and the counter is in the status.
    let (code, page) = get(&format!("{b}/events"), None).await;
    assert_eq!(code, 200);
    assert!(page.contains("mqtt_login_refused"), "{page}");
    assert!(page.contains("intruder-7"), "{page}");
    let s = get_json(&format!("{b}/api/status"), None).await;
    assert_eq!(s["mqtt"]["auth_failures"], 1, "{s}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_the_gateways_login_is_an_event_with_the_fix() {
    if !mrv_e2e::mosquitto_available() || !mrv_e2e::require_tool("mosquitto_passwd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let passwords = dir.path().join("passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["gateway", "right-pw"])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(made.success());
    let broker = mrv_e2e::Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}",
        passwords.display()
    ));
    let site = diagnostics_support::site(0, DIAG_LOOPBACK);
    site.use_external_broker(broker.port);
    let text = std::fs::read_to_string(&site.config_path).expect("config");
    let text = text.replacen(
        &format!("port = {}\n", broker.port),
        &format!(
            "port = {}\nusername = \"gateway\"\npassword = \"wrong-pw\"\n",
            broker.port
        ),
        1,
    );
    std::fs::write(&site.config_path, text).expect("config");
    let gw = mrv_gateway::runtime::start(
        site.config(),
        std::sync::Arc::new(mrv_gateway::clock::SystemClock),
    )
    .await
    .expect("gateway starts");
    let addr = gw.state.diagnostics_addr.expect("diagnostics listening");
    let e = wait_for_event(&format!("http://{addr}"), "mqtt_login_refused").await;
    let detail = e["detail"].as_str().expect("detail");
    for part in [
        format!("the MQTT broker 127.0.0.1:{} refused", broker.port),
        "login as \"gateway\"".to_string(),
        // mosquitto answers a wrong password with "not authorised".
        "not authorised".to_string(),
        "check [mqtt] username and password".to_string(),
    ] {
        assert!(detail.contains(&part), "{part:?} missing in {e}");
    }
    assert!(!detail.contains("wrong-pw"), "{e}");
    let s = get_json(&format!("http://{addr}/api/status"), None).await;
    assert!(
        s["mqtt"]["broker_logins_refused"].as_u64().unwrap_or(0) >= 1,
        "{s}"
    );
    gw.shutdown().await;
}
