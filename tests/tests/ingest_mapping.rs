//! Third-party MQTT payloads, as the shipped example mappings
//! (`config/mappings/`) describe them, sent by real `mosquitto_pub` (QoS 1)
//! on both paths:
//! - to the **embedded endpoint** (the Tasmota plug and the Shelly publish
//!   on their own topics to the gateway): `mosquitto_pub` returns only
//!   after its PUBACK, and each frame is in the buffer by then; a
//!   device-bound login may not send for another device; the mapped devices
//!   reach a signed report as unsigned, gateway-sequenced devices with
//!   continuity, and `verify` accepts it against the registry that
//!   `registry export` writes;
//! - to the **embedded endpoint of a child gateway that is SIGKILLed** right
//!   after the PUBACK: the message is in the buffer after the kill;
//! - through an **external mosquitto**: the retained message the broker
//!   replays at subscription is ignored and counted.
//!
//! Everywhere: exact mW/Wh values (`rounded` flagged where the payload has
//! finer digits), a redelivered duplicate caught, bad input quarantined with
//! its payload and reason, counted per device.

use mrv_e2e::{KillOnDrop, Mosquitto, TestSite, mosquitto_available, wait_for_port};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use mrv_gateway::clock::{Clock, ManualClock, SystemClock};
use mrv_gateway::ingest::stats::IngestStats;
use mrv_gateway::runtime::RunningGateway;
use mrv_shared::reading::Quality;
use mrv_shared::report::model::Signing;
use mrv_shared::wire::Frame;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const SHELLY: &str = include_str!("../../config/mappings/shelly_gen2_switch.toml");
const TASMOTA: &str = include_str!("../../config/mappings/tasmota_energy_plug.toml");
const PLUG: &str = "tas-pump-plug-3";
const PLUG_TOPIC: &str = "tele/pump-plug-3/SENSOR";
const SHELLY_ID: &str = "shellyplusplugs-e465b8b2f0c4";
const SHELLY_TOPIC: &str = "shellyplusplugs-e465b8b2f0c4/status/switch:0";

/// The mapped devices as the site registers them: unsigned, with the
/// channels a report binds.
const DEVICES: &str = r#"
[[devices]]
id = "shellyplusplugs-e465b8b2f0c4"
kind = "solar_meter"
serial = "e465b8b2f0c4"
meter_class = "Shelly Plus Plug S (not certified)"
channels = [{ id = "energy", quantity = "energy", kind = "counter" }]

[[devices]]
id = "tas-pump-plug-3"
kind = "irrigation_pump"
serial = "pump-plug-3"
meter_class = "Tasmota plug (not certified)"
"#;

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

fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("valid time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// A Tasmota `tele/<topic>/SENSOR` message (Tasmota docs, SetOption52 1).
fn tas(ms: u64, total: &str, power: &str) -> String {
    format!(
        r#"{{"Time":"{}","ENERGY":{{"TotalStartTime":"2025-01-01T00:00:00","Total":{total},"Yesterday":1.234,"Today":0.567,"Period":5,"Power":{power},"ApparentPower":50,"ReactivePower":22,"Factor":0.90,"Voltage":231,"Current":0.217}}}}"#,
        rfc3339(ms)
    )
}

/// A Shelly Gen2 `<id>/status/switch:0` message (Shelly API docs, Switch).
fn shelly(p: &str, total: &str) -> String {
    format!(
        r#"{{"id":0,"source":"init","output":true,"apower":{p},"voltage":230.1,"freq":50.0,"current":6.523,"aenergy":{{"total":{total},"by_minute":[0,0,0],"minute_ts":1764590400}},"temperature":{{"tC":41.2,"tF":106.2}}}}"#
    )
}

fn frames_of(buffer: &Buffer, device: &str) -> Vec<Frame> {
    buffer
        .scan(None)
        .map(|f| f.expect("buffer reads").frame)
        .filter(|f| f.device.as_str() == device)
        .collect()
}

fn value(f: &Frame, ch: &str) -> (i64, Quality) {
    let i = f
        .channels
        .iter()
        .position(|c| c.id.as_str() == ch)
        .expect("channel");
    let s = f
        .samples
        .iter()
        .find(|s| usize::from(s.channel) == i)
        .expect("sample");
    (s.value, s.quality)
}

async fn wait_for(gw: &RunningGateway, stored: u64, rejects: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ingest = &gw.state.ingest;
    while IngestStats::get(&ingest.frames_stored) < stored || ingest.rejects_total() < rejects {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored {} rejects {:?}",
            IngestStats::get(&ingest.frames_stored),
            ingest.rejects()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same six messages on either path: two plug readings, a redelivered
/// duplicate, two bad plug messages, two Shelly readings. `login` is the
/// plug's (device-bound on the embedded endpoint) and the Shelly's.
fn send_the_messages(
    port: u16,
    now: u64,
    plug: Option<(&str, &str)>,
    site: Option<(&str, &str)>,
    after_each_stored: &dyn Fn(usize),
) {
    publish(
        port,
        plug,
        PLUG_TOPIC,
        &tas(now - 2_000, "123.456", "45"),
        false,
    );
    after_each_stored(1);
    publish(
        port,
        plug,
        PLUG_TOPIC,
        &tas(now - 1_000, "123.457", "1500.25"),
        false,
    );
    after_each_stored(2);
    // A redelivery of the first message (same device and Time): a duplicate.
    publish(
        port,
        plug,
        PLUG_TOPIC,
        &tas(now - 2_000, "123.456", "45"),
        false,
    );
    // Bad input: a string where a number belongs, and a Time without offset.
    publish(port, plug, PLUG_TOPIC, &tas(now, "\"12.5\"", "45"), false);
    publish(
        port,
        plug,
        PLUG_TOPIC,
        r#"{"Time":"2025-12-01T12:00:00","ENERGY":{"Total":1,"Power":2,"Voltage":230,"Current":0.1}}"#,
        false,
    );
    publish(
        port,
        site,
        SHELLY_TOPIC,
        &shelly("1500.25", "12345.678"),
        false,
    );
    after_each_stored(3);
    publish(port, site, SHELLY_TOPIC, &shelly("0", "12346"), false);
    after_each_stored(4);
}

/// What both paths must have stored and refused.
fn check_stored_and_refused(gw: &RunningGateway, now: u64) {
    let ingest = &gw.state.ingest;
    assert_eq!(IngestStats::get(&ingest.frames_stored), 4);
    assert_eq!(IngestStats::get(&ingest.mapped_messages), 4);
    assert_eq!(IngestStats::get(&ingest.mapped_duplicates), 1);
    let rejects = ingest.device_rejects();
    for reason in ["not_a_number", "bad_timestamp"] {
        assert_eq!(
            rejects.get(&(PLUG.into(), reason)),
            Some(&1),
            "{reason}: {rejects:?}"
        );
    }

    let buffer = &gw.state.buffer;
    let plug = frames_of(buffer, PLUG);
    assert_eq!(
        plug.iter().map(|f| f.seq).collect::<Vec<_>>(),
        [1, 2],
        "gateway-sequenced"
    );
    assert!(
        plug.iter()
            .all(|f| f.firmware == "map:tasmota-energy" && f.signature.is_none())
    );
    assert_eq!(
        plug[0].base_time_ms,
        Some(now - 2_000),
        "payload time, to the ms"
    );
    assert_eq!(value(&plug[0], "energy"), (123_456, Quality::GOOD));
    assert_eq!(value(&plug[0], "power"), (45_000, Quality::GOOD));
    assert_eq!(value(&plug[1], "energy"), (123_457, Quality::GOOD));
    assert_eq!(value(&plug[1], "power"), (1_500_250, Quality::GOOD));
    assert_eq!(value(&plug[0], "voltage"), (231_000, Quality::GOOD));
    assert_eq!(value(&plug[0], "current"), (217, Quality::GOOD));

    let sh = frames_of(buffer, SHELLY_ID);
    assert_eq!(sh.iter().map(|f| f.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(sh[0].firmware, "map:shelly-switch");
    assert_eq!(sh[0].base_time_ms, None, "no payload time: receipt time");
    assert_eq!(value(&sh[0], "power"), (1_500_250, Quality::GOOD));
    assert_eq!(value(&sh[0], "energy"), (12_346, Quality::ROUNDED));
    assert_eq!(value(&sh[0], "voltage"), (230_100, Quality::GOOD));
    assert_eq!(value(&sh[0], "frequency"), (50_000, Quality::GOOD));
    assert_eq!(value(&sh[0], "relay"), (1, Quality::GOOD));
    assert_eq!(value(&sh[1], "power"), (0, Quality::GOOD));
    assert_eq!(value(&sh[1], "energy"), (12_346, Quality::GOOD));

    let q = gw.state.quarantine.lock().expect("quarantine");
    let bad = q
        .entries()
        .find(|e| e.reason == "not_a_number")
        .expect("quarantined with its reason")
        .clone();
    assert!(q.entries().any(|e| e.reason == "bad_timestamp"
        && e.detail.contains("$.Time")
        && String::from_utf8_lossy(&e.payload).contains("2025-12-01T12:00:00\"")));
    drop(q);
    assert_eq!(bad.topic, PLUG_TOPIC);
    assert_eq!(bad.device.as_deref(), Some(PLUG));
    assert!(String::from_utf8_lossy(&bad.payload).contains("\"Total\":\"12.5\""));
    assert!(
        bad.detail.contains("$.ENERGY.Total is a string"),
        "{}",
        bad.detail
    );
}

fn report_section() -> &'static str {
    r#"
[[mqtt.users]]
username = "site"
password = "site-pw"

[[mqtt.users]]
username = "plug3"
password = "plug3-pw"
device = "tas-pump-plug-3"

[report]
period_minutes = 60
grace_seconds = 5
key_file = "keys/gateway.key"
clock_source = "manual test clock"

[report.calculations.pv]
methodology = "solar_pv"
inputs = [{ role = "generation", device = "shellyplusplugs-e465b8b2f0c4", channel = "energy" }]

[report.calculations.pv.parameters.ef]
value = "0.5113"
unit = "tCO2/MWh"
source = "illustrative grid EF"
"#
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
async fn third_party_devices_on_the_embedded_endpoint_reach_a_report_that_verifies() {
    if !mrv_e2e::require_tool("mosquitto_pub") {
        return;
    }
    let site = TestSite::new(
        0,
        &format!("\n{SHELLY}\n{TASMOTA}\n{DEVICES}\n{}", report_section()),
    );
    mrv_gateway::keys::generate(&site.dir.path().join("data/keys"), "gateway").expect("keygen");
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a period start
    let clock = ManualClock::new(t0 + 60_000);
    let now = clock.now_ms();
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    let port = site.mqtt_port;
    let plug = Some(("plug3", "plug3-pw"));
    let login = Some(("site", "site-pw"));
    // mosquitto_pub has returned, so its PUBACK came: the frame must be on
    // disk already (the PUBACK waits for the group commit).
    let buffer = &gw.state.buffer;
    send_the_messages(port, now, plug, login, &|n| {
        assert_eq!(
            buffer.scan(None).count(),
            n,
            "PUBACKed before it was stored"
        );
    });
    // The plug's login is bound to the plug: it may not send for the Shelly.
    publish(port, plug, SHELLY_TOPIC, &shelly("7", "12347"), false);
    wait_for(&gw, 4, 3).await;
    check_stored_and_refused(&gw, now);
    // On the endpoint the retain flag is the publisher's: new data, stored
    // (the endpoint keeps nothing and never replays).
    publish(port, login, SHELLY_TOPIC, &shelly("10", "12350"), true);
    assert_eq!(frames_of(&gw.state.buffer, SHELLY_ID).len(), 3);
    let rejects = gw.state.ingest.device_rejects();
    assert_eq!(
        rejects.get(&(SHELLY_ID.into(), "not_bound_device")),
        Some(&1),
        "{rejects:?}"
    );
    assert_eq!(IngestStats::get(&gw.state.ingest.retained_ignored), 0);

    // Close the period: one signed report.
    clock.set(t0 + 3_600_000 + 10_000);
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
    for (id, n) in [(SHELLY_ID, 3), (PLUG, 2)] {
        let d = r
            .devices
            .iter()
            .find(|d| d.id.as_str() == id)
            .expect("listed");
        assert_eq!(d.signing, Signing::Unsigned, "{id}");
        assert_ne!(d.kind, "unregistered", "{id} is registered");
        let c = r
            .continuity
            .iter()
            .find(|c| c.device.as_str() == id)
            .expect("continuity record");
        assert_eq!(
            (c.after_seq, c.first_seq, c.last_seq, c.frames),
            (0, Some(1), n, n),
            "{id}: {c:?}"
        );
        assert!(c.given_up.is_empty());
        let mut seqs: Vec<u64> = r
            .readings
            .frames
            .iter()
            .filter(|f| f.device.as_str() == id)
            .map(|f| f.seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=n).collect::<Vec<u64>>(), "{id}");
    }
    assert_eq!(r.calculations.len(), 1);

    // The registry an operator exports, and the verifier's verdict with it.
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
    let reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&registry).expect("registry written")).expect("json");
    for id in [SHELLY_ID, PLUG] {
        assert!(
            reg["devices"]
                .as_array()
                .expect("devices")
                .iter()
                .any(|d| d["id"] == id && d["unsigned"] == true),
            "{id} registered unsigned: {reg}"
        );
    }
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
    // A registry that claims the Shelly signs: the report must be refused.
    let mut forged = reg.clone();
    for d in forged["devices"].as_array_mut().expect("devices") {
        if d["id"] == SHELLY_ID {
            *d = serde_json::json!({"id": SHELLY_ID, "keys": [{"jwk": {
                "kty": "OKP", "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k"}}]});
        }
    }
    let forged_path = site.dir.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).expect("write");
    let (ok, out) = gateway_cli(&[
        "verify".as_ref(),
        "--keys".as_ref(),
        keys_dir.as_os_str(),
        "--devices".as_ref(),
        forged_path.as_os_str(),
        file.as_os_str(),
    ]);
    assert!(!ok, "a relabelled device must fail verification: {out}");
    assert!(out.contains("device_unsigned_mismatch"), "{out}");
}

#[test]
fn a_puback_from_the_embedded_endpoint_survives_a_sigkill() {
    if !mrv_e2e::require_tool("mosquitto_pub") {
        return;
    }
    let site = TestSite::new(0, &format!("\n{TASMOTA}\n{DEVICES}\n"));
    let child = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args(["--log", "warn", "run", "--config"])
        .arg(&site.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway child starts");
    let mut child = KillOnDrop(child);
    wait_for_port(site.mqtt_port, Duration::from_secs(20));
    let now = SystemClock.now_ms();
    publish(
        site.mqtt_port,
        None,
        PLUG_TOPIC,
        &tas(now, "77.001", "12.5"),
        false,
    );
    // PUBACK received: SIGKILL at once, no chance to flush anything more.
    child.kill();
    let config = site.config();
    let buffer = Buffer::open(BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    })
    .expect("buffer reopens after SIGKILL");
    let plug = frames_of(&buffer, PLUG);
    assert_eq!(plug.len(), 1, "the PUBACKed message is on disk");
    assert_eq!(value(&plug[0], "energy"), (77_001, Quality::GOOD));
    assert_eq!(value(&plug[0], "power"), (12_500, Quality::GOOD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_devices_through_an_external_mosquitto() {
    if !mosquitto_available() || !mrv_e2e::require_tool("mosquitto_pub") {
        return;
    }
    let broker = Mosquitto::start("");
    // Old state, retained at the broker before the gateway subscribes.
    let now = SystemClock.now_ms();
    publish(
        broker.port,
        None,
        "tele/old-plug/SENSOR",
        &tas(now - 3_600_000, "1", "1"),
        true,
    );

    let site = TestSite::new(1, &format!("\n{SHELLY}\n{TASMOTA}\n{DEVICES}\n"));
    site.use_external_broker(broker.port);
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    // Three subscriptions: mrv/<site>/+/up and the two mappings.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while IngestStats::get(&gw.state.ingest.subscribed) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_the_messages(broker.port, now, None, None, &|_| {});
    wait_for(&gw, 4, 2).await;
    // The replayed retained message is counted (and not data); let anything
    // late arrive, then check nothing more was stored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while IngestStats::get(&gw.state.ingest.retained_ignored) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retained replay not seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_stored_and_refused(&gw, now);
    assert_eq!(IngestStats::get(&gw.state.ingest.retained_ignored), 1);
    assert!(
        frames_of(&gw.state.buffer, "tas-old-plug").is_empty(),
        "the retained replay is not data"
    );
    gw.shutdown().await;
}
