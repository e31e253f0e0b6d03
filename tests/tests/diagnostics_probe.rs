//! The Modbus probe behind the diagnostics form, against a simulated
//! DIN-rail meter and a SunSpec inverter (real Modbus TCP servers on
//! 127.0.0.1): raw words, a profile decoded in display units (SunSpec
//! discovered first), a configured device picked by id, and failures that
//! say whether the device answered with an exception or the link failed.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, client};
use mrv_firmware::meters::sunspec_inverter::InverterParams;
use mrv_firmware::meters::{self, SimClock, SimMeter, din_meter::DinMeterParams};
use mrv_gateway::clock::SystemClock;
use std::sync::Arc;
use tokio::net::TcpListener;

async fn probe(base: &str, body: serde_json::Value) -> serde_json::Value {
    let r = client()
        .post(format!("{base}/api/modbus/probe"))
        .json(&body)
        .send()
        .await
        .expect("probe request");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("probe JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_decodes_and_tells_exceptions_from_link_faults() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let meter = meters::serve(
        l,
        SimMeter::DinMeter(DinMeterParams::default()),
        1,
        SimClock::real_time(),
    )
    .expect("meter serves");
    let site = diagnostics_support::site(1, DIAG_LOOPBACK);
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    let base = format!("http://{}", gw.state.diagnostics_addr.expect("listening"));
    let addr = meter.addr.to_string();

    let v = probe(
        &base,
        serde_json::json!({"address": addr, "unit": 1, "table": "input", "start": 0, "count": 2, "profile": "din_meter"}),
    )
    .await;
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["words"].as_array().expect("words").len(), 2, "{v}");
    // The whole profile, as `modbus read --profile` prints it: display
    // units first, the exact base-unit value beside them.
    let decoded: Vec<&str> = v["decoded"]
        .as_array()
        .expect("decoded")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let line = decoded
        .iter()
        .find(|l| l.starts_with("voltage_l1 "))
        .unwrap_or_else(|| panic!("no voltage line: {v}"));
    let (shown, exact) = line
        .trim_start_matches("voltage_l1")
        .trim()
        .split_once("  (")
        .unwrap_or_else(|| panic!("unexpected decode: {line}"));
    assert!(shown.ends_with(" V"), "{line}");
    let mv: i64 = exact
        .strip_suffix(" mV)")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected decode: {line}"));
    assert!((200_000..=260_000).contains(&mv), "{line}");
    let volts: f64 = shown.trim_end_matches(" V").parse().expect("volts");
    assert!((volts - mv as f64 / 1000.0).abs() < 0.051, "{line}");
    assert!(
        decoded
            .iter()
            .any(|l| l.starts_with("frequency ") && l.contains(" Hz  (")),
        "{v}"
    );

    // A register the meter does not have: the device answers "no".
    let v = probe(
        &base,
        serde_json::json!({"address": addr, "table": "input", "start": 9000, "count": 2}),
    )
    .await;
    let e = v["error"].as_str().expect("error");
    assert!(e.contains("exception 0x02"), "{e}");

    // Nobody listening: a link fault, not an exception.
    let closed = mrv_e2e::free_port();
    let v = probe(
        &base,
        serde_json::json!({"address": format!("127.0.0.1:{closed}"), "start": 0, "count": 1}),
    )
    .await;
    let e = v["error"].as_str().expect("error");
    assert!(e.starts_with("link error"), "{e}");

    // Bad requests are refused before any I/O.
    let v = probe(
        &base,
        serde_json::json!({"address": addr, "start": 0, "count": 200}),
    )
    .await;
    assert!(v["error"].as_str().expect("error").contains("0 to 125"));
    let v = probe(&base, serde_json::json!({"address": addr, "count": 0})).await;
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("nothing to do"),
        "{v}"
    );

    // SunSpec: discovery first, then the models decoded (no more "no
    // profile register lies wholly in the range").
    let inv = meters::serve(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        SimMeter::SunSpecInverter(InverterParams::default()),
        1,
        SimClock::real_time(),
    )
    .expect("inverter serves");
    let v = probe(
        &base,
        serde_json::json!({"address": inv.addr.to_string(), "count": 0, "profile": "sunspec"}),
    )
    .await;
    assert!(v["error"].is_null(), "{v}");
    let text = v["decoded"].to_string();
    assert!(text.contains("SunSpec marker at 40000"), "{v}");
    assert!(text.contains("SIM-INV-0001"), "{v}");
    assert!(
        text.contains("inverter_ac_frequency") && text.contains("50.00 Hz  (50000 mHz)"),
        "{v}"
    );
    inv.stop();
    meter.stop();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_meters_show_status_values_and_errors_by_device() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let meter = meters::serve(
        l,
        SimMeter::DinMeter(DinMeterParams::default()),
        1,
        SimClock::real_time(),
    )
    .expect("meter serves");
    let dead_port = mrv_e2e::free_port();
    let extra = format!(
        "{DIAG_LOOPBACK}\n[[modbus.devices]]\nid = \"meter\"\nhost = \"127.0.0.1\"\nport = {}\n\
         profile = \"din_meter\"\npoll_interval_ms = 50\n\n[[modbus.devices]]\nid = \"gone\"\n\
         host = \"127.0.0.1\"\nport = {dead_port}\nprofile = \"din_meter\"\npoll_interval_ms = 50\ntimeout_ms = 100\n",
        meter.addr.port()
    );
    let site = diagnostics_support::site(1, &extra);
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    let base = format!("http://{}", gw.state.diagnostics_addr.expect("listening"));
    // Wait (bounded) until both devices were polled a few times; HTTP offers
    // no signal to await, so the API is asked again every 50 ms.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let s = diagnostics_support::get_json(&format!("{base}/api/status"), None).await;
        let polls = |d: &str| s["modbus"][d]["polls"].as_u64().unwrap_or(0);
        if polls("meter") >= 3 && polls("gone") >= 2 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pollers did not run: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        status["modbus"]["meter"]["errors"]
            .as_object()
            .expect("map")
            .is_empty(),
        "{status}"
    );
    assert!(
        status["modbus"]["gone"]["last_error"].is_string(),
        "{status}"
    );
    let rows = diagnostics_support::get_json(&format!("{base}/api/devices"), None).await;
    let row = |id: &str| {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no row {id}: {rows}"))
    };
    let m = row("meter");
    assert_eq!(m["signature"], "gateway", "{m}");
    assert!(
        m["values"]
            .as_array()
            .expect("values")
            .iter()
            .any(|v| v["channel"] == "voltage_l1"
                && v["unit"] == "mV"
                && v["display"].as_str().is_some_and(|d| d.ends_with(" V"))),
        "{m}"
    );
    let g = row("gone");
    assert_eq!(g["status"], "failing", "{g}");
    assert!(
        g["status_reason"]
            .as_str()
            .expect("reason")
            .starts_with("Modbus: "),
        "{g}"
    );
    let (_, metrics) = diagnostics_support::get(&format!("{base}/metrics"), None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mrv_modbus_errors_total{device=\"gone\",kind=")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mrv_modbus_polls_total{device=\"meter\"} ")),
        "{metrics}"
    );
    let (_, page) = diagnostics_support::get(&format!("{base}/modbus"), None).await;
    assert!(
        page.contains("<td>gone</td>") && page.contains("id=\"probe\""),
        "{page}"
    );
    // Errors column: 0, not blank, for the healthy meter.
    assert!(
        page.contains("<tr><td>meter</td>") && page.contains("<td class=\"errors\">0</td>"),
        "{page}"
    );
    // The form offers the configured devices, the first one preselected.
    assert!(
        page.contains(&format!(
            "<option value=\"meter\" data-address=\"127.0.0.1:{}\" data-unit=\"1\" data-profile=\"din_meter\" selected>",
            meter.addr.port()
        )),
        "{page}"
    );
    assert!(page.contains("<option value=\"gone\""), "{page}");
    // Picking a configured device probes it with its own map.
    let v = probe(&base, serde_json::json!({"device": "meter", "count": 0})).await;
    assert!(v["error"].is_null(), "{v}");
    assert!(v["decoded"].to_string().contains("voltage_l1"), "{v}");
    let v = probe(&base, serde_json::json!({"device": "nope", "count": 0})).await;
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("no configured Modbus device"),
        "{v}"
    );
    meter.stop();
    gw.shutdown().await;
}
