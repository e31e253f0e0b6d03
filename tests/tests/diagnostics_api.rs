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
