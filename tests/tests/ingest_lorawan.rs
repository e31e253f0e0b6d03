//! LoRaWAN through ChirpStack v4: events in ChirpStack's documented JSON
//! (the Protobuf JSON mapping of `integration.proto`: `deduplicationId`,
//! `time`, `deviceInfo`, `devAddr`, `fCnt`, `object`, `rxInfo`; `join`;
//! `log` with `UPLINK_CODEC`) published by real `mosquitto_pub -q 1`, through
//! the shipped example mapping `config/mappings/chirpstack_paddy_water_level.toml`:
//! - through an **external mosquitto** (the usual set-up: ChirpStack
//!   publishes to its own broker): a retained uplink replayed at
//!   subscription is not data; duplicates by `deduplicationId` and by
//!   (devEui, epoch, fCnt) are not stored; an fCnt jump is recorded as
//!   `lorawan_uplinks_lost` and the missing time is a `no_data` gap in the
//!   signed report; a join and an fCnt going backwards start epochs
//!   (`lorawan_session_reset`); a codec failure and a bad value are
//!   quarantined with their reasons. The paddy tube's levels feed the
//!   `rice_awd` calculation (one drainage, coverage minus the gap) of a
//!   signed report that `mrv-gateway verify` and the independent Python
//!   verifier accept against the exported registry;
//! - to the **embedded endpoint** (ChirpStack's integration pointed at the
//!   gateway, site login): the same dedup and loss tracking, each uplink on
//!   disk when its PUBACK arrives.

mod diagnostics_support;

use diagnostics_support::{get, get_json};
use mrv_e2e::{Mosquitto, TestSite, mosquitto_available};
use mrv_gateway::clock::{Clock, ManualClock};
use mrv_gateway::ingest::stats::IngestStats;
use mrv_gateway::runtime::RunningGateway;
use mrv_shared::event::EventKind;
use mrv_shared::report::model::Signing;
use mrv_shared::wire::Frame;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const PADDY: &str = include_str!("../../config/mappings/chirpstack_paddy_water_level.toml");
const TUBE: &str = "awd-tube-3";
const DEV_EUI: &str = "a84041000181c0d3";
const APP: &str = "3f1c2b9e-5d1a-4c33-9a87-0d2b7f4e1a10";
/// 2026-01-01T00:00:00Z, a period start.
const T0: u64 = 1_767_225_600_000;
const MIN: u64 = 60_000;

const DEVICES: &str = r#"
[[devices]]
id = "awd-tube-3"
kind = "paddy_water_level"
serial = "a84041000181c0d3"
meter_class = "AWD field tube, ultrasonic level sensor (not certified)"
channels = [{ id = "water_level", quantity = "water_level", kind = "instant" }]
"#;

const REPORT: &str = r#"
[report]
period_minutes = 60
grace_seconds = 5
key_file = "keys/gateway.key"
clock_source = "manual test clock"

[report.devices.awd-tube-3]
sample_interval_ms = 600000

[report.calculations.paddy]
methodology = "rice_awd"
inputs = [{ role = "water_level", device = "awd-tube-3", channel = "water_level" }]

[report.calculations.paddy.parameters]
area_ha = { value = "2.5", unit = "ha", source = "test field" }
ef_c = { value = "1.19", unit = "kgCH4/ha/day", source = "IPCC 2019 Refinement, Vol. 4 Ch. 5, Table 5.11" }
sf_p = { value = "1.00", unit = "1", source = "IPCC 2019" }
sf_o = { value = "1.00", unit = "1", source = "IPCC 2019" }
sf_w_baseline = { value = "1.00", unit = "1", source = "IPCC 2019, continuously flooded" }
sf_w_single = { value = "0.71", unit = "1", source = "IPCC 2019, single drainage" }
sf_w_multiple = { value = "0.55", unit = "1", source = "IPCC 2019, multiple drainage" }
gwp_ch4 = { value = "28", unit = "tCO2e/tCH4", source = "IPCC AR5 GWP100" }
drainage_min_days = { value = "0.01", unit = "day", source = "test: 14.4 minutes" }
dry_threshold_mm = { value = "-150", unit = "mm", source = "safe AWD re-irrigation level" }
"#;

fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("valid time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn topic(event: &str) -> String {
    format!("application/{APP}/device/{DEV_EUI}/event/{event}")
}

fn device_info() -> String {
    format!(
        r#"{{"tenantId":"52f14cd4-c6f1-4fbd-8f87-4025e1d49242","tenantName":"Farm co-op","applicationId":"{APP}","applicationName":"paddy","deviceProfileId":"2e5d2b64-3a8e-4b47-9d1e-6c2b1f0f0c31","deviceProfileName":"AWD tube sensor","deviceName":"{TUBE}","devEui":"{DEV_EUI}","deviceClassEnabled":"CLASS_A","tags":{{"field":"north-3"}}}}"#
    )
}

/// A ChirpStack v4 `up` event; `object` `None` = no decoded object.
fn up(dedup: &str, ms: u64, dev_addr: &str, fcnt: u32, object: Option<&str>) -> String {
    let object = object.map_or(String::new(), |o| format!(r#""object":{o},"#));
    format!(
        r#"{{"deduplicationId":"{dedup}","time":"{}","deviceInfo":{},"devAddr":"{dev_addr}","adr":true,"dr":5,"fCnt":{fcnt},"fPort":2,"confirmed":false,"data":"AP8B",{object}"rxInfo":[{{"gatewayId":"0016c001f153a14c","uplinkId":4217,"nsTime":"{}","rssi":-97,"snr":7.5,"channel":2,"location":{{}},"context":"xwx0GQ==","metadata":{{"region_config_id":"eu868"}},"crcStatus":"CRC_OK"}}],"txInfo":{{"frequency":868100000,"modulation":{{"lora":{{"bandwidth":125000,"spreadingFactor":7,"codeRate":"CR_4_5"}}}}}}}}"#,
        rfc3339(ms),
        device_info(),
        rfc3339(ms),
    )
}

fn level(cm: &str) -> String {
    format!(r#"{{"water_level_cm":{cm},"battery_v":3.61}}"#)
}

fn join(dedup: &str, ms: u64, dev_addr: &str) -> String {
    format!(
        r#"{{"deduplicationId":"{dedup}","time":"{}","deviceInfo":{},"devAddr":"{dev_addr}","relayRxInfo":null}}"#,
        rfc3339(ms),
        device_info()
    )
}

fn codec_log(dedup: &str, ms: u64) -> String {
    format!(
        r#"{{"time":"{}","deviceInfo":{},"level":"ERROR","code":"UPLINK_CODEC","description":"TypeError: Cannot read properties of undefined (reading '3')","context":{{"deduplication_id":"{dedup}"}}}}"#,
        rfc3339(ms),
        device_info()
    )
}

/// Runs `mosquitto_pub -q 1` (it exits once the PUBACK arrived).
fn publish(port: u16, login: Option<(&str, &str)>, topic: &str, payload: &str, retain: bool) {
    let mut c = Command::new("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    c.args(["-t", topic, "-m", payload]);
    if let Some((u, p)) = login {
        c.args(["-u", u, "-P", p]);
    }
    if retain {
        c.arg("-r");
    }
    let out = c.output().expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets the clock to `ms`, publishes, and waits until the gateway handled
/// the message (so each message is received at its own time).
async fn send(
    gw: &RunningGateway,
    clock: &ManualClock,
    port: u16,
    ms: u64,
    event: &str,
    payload: &str,
) {
    clock.set(ms);
    let before = IngestStats::get(&gw.state.ingest.messages);
    publish(port, None, &topic(event), payload, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while IngestStats::get(&gw.state.ingest.messages) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{event} not received"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_stored(gw: &RunningGateway, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while IngestStats::get(&gw.state.ingest.frames_stored) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored {}",
            IngestStats::get(&gw.state.ingest.frames_stored)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn frames_of(gw: &RunningGateway) -> Vec<Frame> {
    gw.state
        .buffer
        .scan(None)
        .map(|f| f.expect("buffer reads").frame)
        .filter(|f| f.device.as_str() == TUBE)
        .collect()
}

fn levels(frames: &[Frame]) -> Vec<(u64, i64)> {
    frames
        .iter()
        .map(|f| (f.base_time_ms.expect("event time"), f.samples[0].value))
        .collect()
}

fn events(gw: &RunningGateway, kind: EventKind) -> Vec<String> {
    gw.state
        .buffer
        .events_after(None)
        .map(|e| e.expect("event reads").1)
        .filter(|e| e.kind == kind && e.device.as_ref().is_some_and(|d| d.as_str() == TUBE))
        .map(|e| e.detail)
        .collect()
}

fn gateway_cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args(args)
        .output()
        .expect("gateway CLI runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paddy_sensor_through_chirpstack_on_an_external_mosquitto_reaches_a_verified_awd_report()
{
    if !mosquitto_available() || !mrv_e2e::require_tool("mosquitto_pub") {
        return;
    }
    let broker = Mosquitto::start("");
    let bp = broker.port;
    // An old uplink retained at the broker: replayed at subscription, not data.
    publish(
        bp,
        None,
        &topic("up"),
        &up(
            "retained-1",
            T0 - 86_400_000,
            "00e1a2b3",
            3,
            Some(&level("-1")),
        ),
        true,
    );
    let site = TestSite::new(0, &format!("\n{PADDY}\n{DEVICES}\n{REPORT}"));
    site.use_external_broker(bp);
    mrv_gateway::keys::generate(&site.dir.path().join("data/keys"), "gateway").expect("keygen");
    let clock = ManualClock::new(T0 + 30_000);
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while IngestStats::get(&gw.state.ingest.retained_ignored) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retained replay not seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = "00e1a2b3";
    let b = "01f7c9d2";
    // Epoch 0: fCnt 10, 11, 12; 13 and 14 are lost; 15.
    send(
        &gw,
        &clock,
        bp,
        T0 + MIN,
        "up",
        &up("d-10", T0 + MIN, a, 10, Some(&level("-2"))),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 11 * MIN,
        "up",
        &up("d-11", T0 + 11 * MIN, a, 11, Some(&level("-3.5"))),
    )
    .await;
    // ChirpStack redelivers (same deduplicationId), and the same uplink
    // arrives under another deduplicationId (same devEui, epoch, fCnt).
    send(
        &gw,
        &clock,
        bp,
        T0 + 11 * MIN + 5_000,
        "up",
        &up("d-11", T0 + 11 * MIN, a, 11, Some(&level("-3.5"))),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 11 * MIN + 6_000,
        "up",
        &up("d-11b", T0 + 11 * MIN, a, 11, Some(&level("-3.5"))),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 21 * MIN,
        "up",
        &up("d-12", T0 + 21 * MIN, a, 12, Some(&level("-16"))),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 51 * MIN,
        "up",
        &up("d-15", T0 + 51 * MIN, a, 15, Some(&level("-18.2"))),
    )
    .await;
    // The codec fails on fCnt 16: ChirpStack logs it, then sends the up
    // without an object.
    send(
        &gw,
        &clock,
        bp,
        T0 + 52 * MIN,
        "log",
        &codec_log("d-16", T0 + 52 * MIN),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 52 * MIN,
        "up",
        &up("d-16", T0 + 52 * MIN, a, 16, None),
    )
    .await;
    // A codec that returns text where the level belongs.
    send(
        &gw,
        &clock,
        bp,
        T0 + 53 * MIN,
        "up",
        &up(
            "d-17",
            T0 + 53 * MIN,
            a,
            17,
            Some(r#"{"water_level_cm":"-17 cm"}"#),
        ),
    )
    .await;
    // The device rejoins (new devAddr); epoch 1 starts at fCnt 0.
    send(
        &gw,
        &clock,
        bp,
        T0 + 54 * MIN,
        "join",
        &join("j-1", T0 + 54 * MIN, b),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 55 * MIN,
        "up",
        &up("d-e1-0", T0 + 55 * MIN, b, 0, Some(&level("-17"))),
    )
    .await;
    send(
        &gw,
        &clock,
        bp,
        T0 + 56 * MIN,
        "up",
        &up("d-e1-1", T0 + 56 * MIN, b, 1, Some(&level("-12"))),
    )
    .await;
    // fCnt back to 0 without a join (the device reset its counter): epoch 2.
    send(
        &gw,
        &clock,
        bp,
        T0 + 58 * MIN,
        "up",
        &up("d-e2-0", T0 + 58 * MIN, b, 0, Some(&level("-5"))),
    )
    .await;
    wait_stored(&gw, 7).await;

    let ingest = &gw.state.ingest;
    assert_eq!(IngestStats::get(&ingest.frames_stored), 7);
    assert_eq!(IngestStats::get(&ingest.mapped_duplicates), 2);
    assert_eq!(IngestStats::get(&ingest.retained_ignored), 1);
    assert_eq!(IngestStats::get(&ingest.lorawan_uplinks_lost), 2);
    assert_eq!(IngestStats::get(&ingest.lorawan_session_resets), 2);
    assert_eq!(IngestStats::get(&ingest.lorawan_logs), 1);
    let frames = frames_of(&gw);
    assert_eq!(
        frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>(),
        "gateway-sequenced"
    );
    assert!(
        frames
            .iter()
            .all(|f| f.firmware == "map:paddy-awd" && f.signature.is_none())
    );
    // Exact mm from cm, at the event's `time` (payload time source).
    assert_eq!(
        levels(&frames),
        [
            (T0 + MIN, -20),
            (T0 + 11 * MIN, -35),
            (T0 + 21 * MIN, -160),
            (T0 + 51 * MIN, -182),
            (T0 + 55 * MIN, -170),
            (T0 + 56 * MIN, -120),
            (T0 + 58 * MIN, -50),
        ]
    );
    let rejects = ingest.device_rejects();
    for reason in ["codec_error", "not_a_number"] {
        assert_eq!(
            rejects.get(&(TUBE.into(), reason)),
            Some(&1),
            "{reason}: {rejects:?}"
        );
    }
    {
        let q = gw.state.quarantine.lock().expect("quarantine");
        let codec = q
            .entries()
            .find(|e| e.reason == "codec_error")
            .expect("codec failure quarantined");
        assert!(
            codec.detail.contains("fCnt 16") && codec.detail.contains("reading '3'"),
            "{}",
            codec.detail
        );
        assert!(String::from_utf8_lossy(&codec.payload).contains("\"d-16\""));
        assert!(q.entries().any(|e| e.reason == "not_a_number"
            && e.detail.contains("$.object.water_level_cm is a string")));
    }
    let lost = events(&gw, EventKind::LorawanUplinksLost);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].starts_with("fCnt 13..=14 (2 uplinks) lost"),
        "{}",
        lost[0]
    );
    let resets = events(&gw, EventKind::LorawanSessionReset);
    assert_eq!(resets.len(), 2, "{resets:?}");
    assert!(
        resets[0].starts_with("join: devEui a84041000181c0d3, epoch 1, last fCnt 17"),
        "{}",
        resets[0]
    );
    assert!(
        resets[1].starts_with(
            "fcnt_backwards: devEui a84041000181c0d3, epoch 2, last fCnt 1, now fCnt 0"
        ),
        "{}",
        resets[1]
    );
    let rejected = events(&gw, EventKind::FrameRejected);
    assert!(
        rejected.iter().any(|d| d.starts_with("codec_error")),
        "{rejected:?}"
    );

    // The technician sees it on the diagnostics page: the events (recorded
    // ones marked so) and the counters.
    let diag = gw.state.diagnostics_addr.expect("diagnostics listens");
    let ev = get_json(&format!("http://{diag}/api/events?limit=100"), None).await;
    let shown = |kind: &str, starts: &str| {
        ev.as_array().expect("events").iter().any(|e| {
            e["kind"] == kind
                && e["device"] == TUBE
                && e["recorded"] == true
                && e["detail"].as_str().is_some_and(|d| d.starts_with(starts))
        })
    };
    assert!(shown("lorawan_uplinks_lost", "fCnt 13..=14"), "{ev}");
    assert!(shown("lorawan_session_reset", "join"), "{ev}");
    assert!(shown("lorawan_session_reset", "fcnt_backwards"), "{ev}");
    assert!(shown("frame_rejected", "codec_error"), "{ev}");
    let st = get_json(&format!("http://{diag}/api/status"), None).await;
    assert_eq!(
        st["lorawan"],
        serde_json::json!([{"mapping": "paddy-awd", "device": TUBE, "dev_eui": DEV_EUI,
            "epoch": 2, "dev_addr": b, "last_fcnt": 0, "last_heard_ms": T0 + 58 * MIN,
            "uplinks_lost": 2, "resets": 2}]),
        "{st}"
    );
    let (status, metrics) = get(&format!("http://{diag}/metrics"), None).await;
    assert_eq!(status, 200);
    for line in [
        "mrv_lorawan_uplinks_lost_total 2",
        "mrv_lorawan_session_resets_total 2",
        "mrv_lorawan_logs_total 1",
        "mrv_mapping_duplicates_total 2",
        "mrv_mapping_retained_ignored_total 1",
        r#"mrv_lorawan_device_uplinks_lost_total{device="awd-tube-3",dev_eui="a84041000181c0d3"} 2"#,
        r#"mrv_lorawan_device_epoch{device="awd-tube-3",dev_eui="a84041000181c0d3"} 2"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    assert!(
        metrics.contains(r#"mrv_device_rejects_total{device="awd-tube-3",reason="codec_error"} 1"#),
        "{metrics}"
    );

    // Close the period: one signed report.
    clock.set(T0 + 60 * MIN + 10_000);
    let reports = gw.state.reports.clone().expect("reports are built");
    gw.shutdown().await;
    let head = reports.head().expect("a report was built");
    assert_eq!(head.seq, 1);
    let file = reports.path(1);
    let keys = mrv_gateway::keys::load_public_keys(&[site.dir.path().join("data/keys")])
        .expect("gateway key");
    let r = mrv_shared::report::verify::verify_jws(&std::fs::read(&file).expect("read"), &keys)
        .expect("report signature verifies")
        .report;
    let d = r
        .devices
        .iter()
        .find(|d| d.id.as_str() == TUBE)
        .expect("listed");
    assert_eq!(
        (d.signing.clone(), d.kind.as_str()),
        (Signing::Unsigned, "paddy_water_level")
    );
    let c = r
        .continuity
        .iter()
        .find(|c| c.device.as_str() == TUBE)
        .expect("continuity");
    assert_eq!(
        (c.after_seq, c.first_seq, c.last_seq, c.frames),
        (0, Some(1), 7, 7)
    );
    // The lost uplinks are a gap record in the series, explained by the event.
    let s = r
        .series
        .iter()
        .find(|s| s.device.as_str() == TUBE)
        .expect("series");
    let gaps: Vec<_> = s
        .gaps
        .iter()
        .map(|g| (g.start_ms, g.end_ms, g.reason.as_str()))
        .collect();
    assert_eq!(gaps, [(T0 + 21 * MIN, T0 + 51 * MIN, "no_data")]);
    assert_eq!((s.expected, s.received), (Some(6), 7));
    let kinds: Vec<&str> = r.events.iter().map(|e| e.kind.name()).collect();
    assert!(kinds.contains(&"lorawan_uplinks_lost"), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "lorawan_session_reset")
            .count(),
        2
    );
    // AWD: dry (< -150 mm) from 00:21 to 00:55 (> 14.4 min): one drainage;
    // coverage is the hour minus the 30-minute gap.
    let calc = &r.calculations[0];
    let tube = format!("{TUBE}/water_level");
    assert_eq!(
        calc.inputs
            .get(&format!("drainage_events:{tube}"))
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        calc.inputs
            .get(&format!("observed_ms:{tube}"))
            .map(String::as_str),
        Some("1800000")
    );
    assert!(
        !calc.er.exact.starts_with('-') && calc.er.exact != "0",
        "er {:?}",
        calc.er
    );

    // The operator's registry; both verifiers accept the report with it.
    let registry = site.dir.path().join("registry.json");
    let (ok, out) = gateway_cli(&[
        "registry".as_ref(),
        "export".as_ref(),
        "--config".as_ref(),
        site.config_path.as_os_str(),
        "--out".as_ref(),
        registry.as_os_str(),
    ]);
    assert!(ok, "{out}");
    let keys_dir = site.dir.path().join("data/keys");
    let (ok, out) = gateway_cli(&[
        "verify".as_ref(),
        "--keys".as_ref(),
        keys_dir.as_os_str(),
        "--devices".as_ref(),
        registry.as_os_str(),
        file.as_os_str(),
    ]);
    assert!(ok, "verify refused the report: {out}");
    if python_ready() {
        let out = Command::new("python3")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/verify_report.py"))
            .arg("--keys")
            .arg(keys_dir.join("gateway.pub.jwk"))
            .arg("--devices")
            .arg(&registry)
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "the Python verifier refused the report: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let verdict: serde_json::Value = serde_json::from_slice(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .expect("a verdict")
                .as_bytes(),
        )
        .expect("verdict JSON");
        assert_eq!(verdict["ok"], true, "{verdict}");
        // The same exact figures, computed independently.
        assert_eq!(
            verdict["calculations"]["paddy"]["er_exact"],
            calc.er.exact.as_str(),
            "{verdict}"
        );
        assert_eq!(
            verdict["calculations"]["paddy"]["inputs"][format!("drainage_events:{tube}")],
            "1"
        );
    }
}

/// The Python verifier's dependencies (`scripts/install-test-deps.sh`);
/// required under `CI`.
fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import joserfc, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with joserfc and cryptography is required under CI"
        );
        eprintln!("SKIPPED the Python verifier: python3 with joserfc + cryptography not found");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_publishing_to_the_embedded_endpoint_is_deduplicated_and_loss_tracked() {
    if !mrv_e2e::require_tool("mosquitto_pub") {
        return;
    }
    let login = "\n[[mqtt.users]]\nusername = \"chirpstack\"\npassword = \"chirpstack-pw\"\n\n[[mqtt.users]]\nusername = \"tube\"\npassword = \"tube-pw\"\ndevice = \"awd-tube-3\"\n";
    let site = TestSite::new(0, &format!("\n{PADDY}\n{DEVICES}\n{login}"));
    let clock = ManualClock::new(T0 + MIN);
    let now = clock.now_ms();
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    let port = site.mqtt_port;
    let cs = Some(("chirpstack", "chirpstack-pw"));
    let a = "00e1a2b3";
    publish(
        port,
        cs,
        &topic("up"),
        &up("e-1", now, a, 1, Some(&level("-2"))),
        false,
    );
    // PUBACKed: on disk.
    assert_eq!(frames_of(&gw).len(), 1, "PUBACKed before it was stored");
    publish(
        port,
        cs,
        &topic("up"),
        &up("e-1", now, a, 1, Some(&level("-2"))),
        false,
    );
    publish(
        port,
        cs,
        &topic("up"),
        &up("e-3", now + 1_000, a, 3, Some(&level("-4"))),
        false,
    );
    assert_eq!(frames_of(&gw).len(), 2);
    publish(
        port,
        cs,
        &topic("status"),
        &format!(
            r#"{{"deduplicationId":"s-1","time":"{}","deviceInfo":{},"margin":7,"batteryLevel":91.5}}"#,
            rfc3339(now),
            device_info()
        ),
        false,
    );
    let ingest = &gw.state.ingest;
    assert_eq!(IngestStats::get(&ingest.mapped_duplicates), 1);
    assert_eq!(IngestStats::get(&ingest.lorawan_uplinks_lost), 1);
    assert_eq!(levels(&frames_of(&gw)), [(now, -20), (now + 1_000, -40)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events(&gw, EventKind::LorawanUplinksLost).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lorawan_uplinks_lost event"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        events(&gw, EventKind::LorawanUplinksLost)[0].starts_with("fCnt 2..=2 (1 uplink) lost")
    );
    assert_eq!(ingest.rejects_total(), 0, "{:?}", ingest.rejects());
    // A device-bound login may not speak for the network server (a join
    // would restart the tube's session): refused by the endpoint.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-u",
            "tube",
            "-P",
            "tube-pw",
        ])
        .args(["-t", &topic("join"), "-m", &join("j-x", now, "0badbeef")])
        .output()
        .expect("mosquitto_pub runs");
    let _ = out.status; // the endpoint answers PUBACK 0x87 (MQTT 5) or closes (3.1.1)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mrv_gateway::endpoint::EndpointStats::get(&gw.state.endpoint.publish_not_authorized) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the device login's join was not refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(IngestStats::get(&ingest.lorawan_session_resets), 0);
    gw.shutdown().await;
}
