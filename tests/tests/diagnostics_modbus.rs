//! A Modbus meter that answers 8 of its 9 values, as the technician found
//! it, seen through a running gateway: the API marks it `degraded` (not
//! failing), its unavailable value is marked unavailable (never shown as 0)
//! in the row, the series and the live tail, `/metrics` says it is up and degraded, and the
//! `status`/`devices` CLI prints the same.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, gateway_bin, get, get_json, start_site};
use mrv_firmware::meters::{self, SimClock, SimMeter, din_meter::DinMeterParams};
use mrv_firmware::sim::Faults;
use std::time::Duration;
use tokio::net::TcpListener;

const NOON_MS: u64 = 1_767_225_600_000 + 12 * 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_answering_meter_is_degraded_and_its_missing_value_is_unavailable() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let din = meters::serve(
        l,
        SimMeter::DinMeter(DinMeterParams::default()),
        1,
        SimClock::new(NOON_MS, 1.0),
    )
    .expect("serve");
    let extra = format!(
        "{DIAG_LOOPBACK}\n[[modbus.devices]]\nid = \"meter-9\"\nhost = \"127.0.0.1\"\nport = {}\n\
         profile = \"din_meter\"\npoll_interval_ms = 100\ntimeout_ms = 500\n\
         [[modbus.devices.registers]]\nname = \"aux_energy\"\nfunction = \"input\"\naddress = 500\n\
         type = \"f32\"\nquantity = \"energy\"\nunit = \"kWh\"\nkind = \"counter\"\n",
        din.addr.port()
    );
    let run = start_site(1, &extra, |_| Faults::default(), 2, None).await;
    let b = &run.base;

    // Wait for a few polls.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = get_json(&format!("{b}/api/status"), None).await;
        if s["modbus"]["meter-9"]["polls"].as_u64().unwrap_or(0) >= 3 {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no polls: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = &status["modbus"]["meter-9"];
    assert_eq!(m["state"], "degraded", "{m}");
    assert_eq!(
        (m["values_good"].as_u64(), m["values_total"].as_u64()),
        (Some(8), Some(9))
    );
    assert_eq!(m["unavailable"], serde_json::json!(["aux_energy"]), "{m}");
    assert_eq!(m["polls_down"], 0, "{m}");
    assert_eq!(m["polls_degraded"], m["polls"], "{m}");
    assert!(
        m["problem"]
            .as_str()
            .is_some_and(|p| p.contains("illegal data address")),
        "{m}"
    );
    assert_eq!(status["devices"]["degraded"], 1, "{status}");

    let rows = get_json(&format!("{b}/api/devices"), None).await;
    let row = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["id"] == "meter-9")
        .expect("the meter's row")
        .clone();
    assert_eq!(row["status"], "degraded", "{row}");
    assert!(
        row["status_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Modbus: 8 of 9 values; unavailable: aux_energy")),
        "{row}"
    );
    let value = |ch: &str| {
        row["values"]
            .as_array()
            .expect("values")
            .iter()
            .find(|v| v["channel"] == ch)
            .unwrap_or_else(|| panic!("{ch} in {row}"))
            .clone()
    };
    assert_eq!(value("aux_energy")["available"], false, "{row}");
    assert_eq!(value("aux_energy")["display"], "unavailable", "{row}");
    assert_eq!(value("power_l1")["value"], 1_500_250, "{row}");

    let d = get_json(&format!("{b}/api/devices/meter-9"), None).await;
    let hole = d["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel"] == "aux_energy")
        .expect("series");
    let points = hole["points"].as_array().expect("points");
    // Every point of the missing value carries the unavailable quality bit,
    // and the series says so.
    assert!(
        !points.is_empty()
            && points
                .iter()
                .all(|p| p["quality"].as_u64().is_some_and(|q| q & 1 == 1)),
        "{hole}"
    );
    assert_eq!(hole["latest_display"], "unavailable", "{hole}");

    let t = get_json(&format!("{b}/api/devices/meter-9/tail?after_ms=0"), None).await;
    let last = t["entries"]
        .as_array()
        .and_then(|e| e.last())
        .expect("tail entries")["summary"]
        .as_str()
        .expect("summary")
        .to_string();
    assert!(last.contains(" aux_energy=unavailable"), "{last}");
    assert!(!last.contains("aux_energy=0"), "{last}");

    let (code, metrics) = get(&format!("{b}/metrics"), None).await;
    assert_eq!(code, 200);
    for line in [
        "mrv_device_up{device=\"meter-9\"} 1",
        "mrv_device_degraded{device=\"meter-9\"} 1",
        "mrv_modbus_up{device=\"meter-9\"} 0",
        "mrv_modbus_values_unavailable{device=\"meter-9\"} 1",
        "mrv_modbus_polls_down_total{device=\"meter-9\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    for (cmd, want) in [
        ("devices", "aux_energy=unavailable"),
        ("status", "meter-9: DEGRADED"),
    ] {
        let out = tokio::process::Command::new(gateway_bin())
            .args([cmd, "--url", b])
            .output()
            .await
            .expect("run the CLI");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(want), "{cmd}: {want} in\n{text}");
    }
    run.stop().await;
}
