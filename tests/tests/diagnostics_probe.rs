//! The Modbus probe behind the diagnostics form, against a simulated
//! DIN-rail meter (a real Modbus TCP server on 127.0.0.1): raw words, words
//! decoded with the built-in profile, and failures that say whether the
//! device answered with an exception or the link failed.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, client};
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
    let decoded = v["decoded"][0].as_str().expect("decoded line");
    let mv: i64 = decoded
        .strip_prefix("voltage_l1 @0 = ")
        .and_then(|r| r.strip_suffix(" mV"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected decode: {decoded}"));
    assert!((200_000..=260_000).contains(&mv), "{decoded}");

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
    assert!(v["error"].as_str().expect("error").contains("1 to 125"));
    meter.stop();
    gw.shutdown().await;
}
