//! A backend gone for a day, time compressed: the real gateway binary runs
//! on a clock `rate` times faster than real time (`MRV_E2E_CLOCK`, see
//! `tests/src/bin/e2e_gateway.rs`), the real receiver binary is the backend
//! (HTTPS, bearer token, file archive), and a fleet of devices sampling at
//! 1 Hz (60 samples per frame, one frame per simulated minute, on the same
//! compressed time) publishes to the embedded MQTT endpoint, PUBACK-only.
//!
//! Timeline (simulated): the backend takes the first report, is SIGKILLed,
//! stays down for `OUTAGE_HOURS`, then comes back on the same port and data
//! directory. Checked:
//! - while it is down, reports pile up and the buffer only grows (nothing
//!   is pruned before delivery), the backlog alarm is raised
//!   (`/api/status`, the health banner, `/metrics`) once the oldest report
//!   waits longer than `backlog_alarm_minutes`;
//! - when it is back, the backlog drains (measured: reports and readings
//!   per second of wall time), the alarm clears;
//! - in the receiver's archive, every report verifies and chains, every
//!   device's frames appear exactly once and in order (1, 2, ..., last
//!   published), every sample is there, and the `upload_backlog_high` /
//!   `upload_backlog_cleared` events travel in the signed reports.
//!
//! CI runs the smoke version (40 devices, a simulated hour of outage,
//! 10-minute reports, clock x240: about 30 s of wall time). The soak, 200
//! devices and a full day with hourly reports (x60, so that the debug
//! build's drain outpaces the fleet's production):
//! `OUTAGE_DEVICES=200 OUTAGE_HOURS=24 OUTAGE_RATE=60 OUTAGE_PERIOD_MINUTES=60 OUTAGE_ALARM_MINUTES=360 cargo test -p mrv-e2e --test backend_outage -- --nocapture`
//! (`OUTAGE_GATEWAY_BIN` / `OUTAGE_RECEIVER_BIN` run other builds of the two
//! binaries, e.g. `cargo build --release -p mrv-e2e --bin mrv-e2e-gateway
//! --bin mrv-e2e-receiver`; the devices and checks stay in this process).

use mrv_e2e::puback_device::{self, PubackDevice, PubackOptions};
use mrv_e2e::{KillOnDrop, TestSite, free_port, wait_for_port};
use mrv_shared::event::EventKind;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::verify::Chain;
use mrv_shared::report::{DeviceRegistry, DeviceTrust, KeySet, verify_report};
use mrv_shared::wire::{Frame, binary};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod upload_support;

/// 2025-11-26T00:00:00Z: a period start.
const T0: u64 = 1_764_115_200_000;
const MINUTE: u64 = 60_000;
const SAMPLES_PER_FRAME: u64 = 60;

/// The gateway binary under test: `OUTAGE_GATEWAY_BIN` (e.g. a release
/// build of `mrv-e2e-gateway`, for the soak), else this build's.
fn gateway_bin() -> String {
    std::env::var("OUTAGE_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mrv-e2e-gateway").to_string())
}

/// The receiver binary: `OUTAGE_RECEIVER_BIN` (e.g. a release build of
/// `mrv-e2e-receiver` or `mrv-receiver`), else this build's.
fn receiver_bin() -> String {
    std::env::var("OUTAGE_RECEIVER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mrv-e2e-receiver").to_string())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Simulated time, the same formula as the gateway's `ScaledClock`, from
/// a reading of the gateway's clock (the devices' clocks run a little
/// behind the gateway's, as a device's clock that is ahead would date
/// samples after the receipt).
#[derive(Clone, Copy)]
struct SimTime {
    origin: Instant,
    start_ms: u64,
    rate: u64,
}

impl SimTime {
    fn now_ms(&self) -> u64 {
        self.start_ms + self.origin.elapsed().as_millis() as u64 * self.rate
    }
    fn real(&self, sim_ms: u64) -> Duration {
        Duration::from_millis(sim_ms / self.rate)
    }
}

fn frame(device: &DeviceId, seq: u64) -> Vec<u8> {
    let base = T0 + (seq - 1) * MINUTE;
    binary::encode_frame(&Frame {
        site: SiteId::new("demo-site").expect("valid"),
        device: device.clone(),
        seq,
        boot: 1,
        firmware: "outage-fleet".into(),
        base_time_ms: Some(base),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: (0..SAMPLES_PER_FRAME)
            .map(|i| Sample {
                channel: 0,
                offset_ms: (i * 1000) as u32,
                value: ((seq - 1) * SAMPLES_PER_FRAME + i) as i64,
                quality: Quality::GOOD,
            })
            .collect(),
        signature: None,
    })
}

/// What one device knows.
#[derive(Default)]
struct DeviceState {
    /// Frames generated so far (frame `k` covers simulated minute `k`).
    generated: u64,
    /// Generated, not yet PUBACKed (kept and re-sent after a reconnect).
    unacked: VecDeque<u64>,
    pubacked: u64,
}

/// A device: every simulated minute one frame of 60 one-second samples,
/// until `last_frame`; PUBACK is its commit point.
struct Device {
    sim: SimTime,
    last_frame: Arc<AtomicU64>,
    state: Arc<Mutex<DeviceState>>,
}

impl PubackDevice for Device {
    fn unacked(&self) -> Vec<u64> {
        Vec::from(self.state.lock().expect("state").unacked.clone())
    }

    /// Every frame whose minute has passed (catching up if late).
    fn due(&mut self) -> Vec<u64> {
        let now = self.sim.now_ms();
        let mut s = self.state.lock().expect("state");
        let mut v = Vec::new();
        let last_frame = self.last_frame.load(Ordering::SeqCst);
        while s.generated < last_frame && T0 + (s.generated + 1) * MINUTE <= now {
            s.generated += 1;
            let g = s.generated;
            s.unacked.push_back(g);
            v.push(g);
        }
        v
    }

    fn acked(&mut self, seq: u64) {
        let mut s = self.state.lock().expect("state");
        if let Some(pos) = s.unacked.iter().position(|&x| x == seq) {
            s.unacked.remove(pos);
            s.pubacked += 1;
        }
    }
}

async fn run_device(
    id: DeviceId,
    port: u16,
    sim: SimTime,
    last_frame: Arc<AtomicU64>,
    state: Arc<Mutex<DeviceState>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let opts = PubackOptions {
        device: id,
        port,
        keep_alive: Duration::from_secs(30),
        tick: sim.real(MINUTE) / 4,
        reconnect_delay: Duration::from_millis(50),
        frame,
    };
    let device = Device {
        sim,
        last_frame,
        state,
    };
    puback_device::run(opts, device, stop).await;
}

fn spawn_receiver(data: &Path, pki_dir: &Path, key: &Path, listen: &str) -> (KillOnDrop, String) {
    let (child, addr) = upload_support::spawn_receiver(
        &receiver_bin(),
        listen,
        &["--data-dir".as_ref(), data.as_os_str()],
        pki_dir,
        key,
    );
    (KillOnDrop(child), addr)
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .expect("JSON")
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text")
}

fn u(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_without_the_backend_loses_nothing_alarms_and_drains_in_order() {
    upload_support::init();
    let devices = env_u64("OUTAGE_DEVICES", 40) as usize;
    let outage_h = env_u64("OUTAGE_HOURS", 1);
    let rate = env_u64("OUTAGE_RATE", 240);
    let period_min = env_u64("OUTAGE_PERIOD_MINUTES", 10);
    let alarm_min = env_u64("OUTAGE_ALARM_MINUTES", 30);
    let period_ms = period_min * MINUTE;
    // Devices publish up to the end of the period after the drain began
    // (set below, once known); a generous upper bound for the tasks.
    eprintln!(
        "backend outage: {devices} devices at 1 Hz ({SAMPLES_PER_FRAME} samples per frame), \
         outage {outage_h} h simulated, clock x{rate}, reports every {period_min} min, \
         backlog alarm at {alarm_min} min; gateway {}, receiver {}",
        gateway_bin(),
        receiver_bin()
    );

    // Backend: the receiver binary, HTTPS with a test CA, token, file archive.
    let pki = upload_support::Pki::new();
    let pki_dir = tempfile::tempdir().expect("tempdir");
    pki.write(pki_dir.path());
    let archive = tempfile::tempdir().expect("tempdir");
    let rx_port = free_port();
    let rx_listen = format!("127.0.0.1:{rx_port}");

    // Gateway: unsigned PUBACK-only meters, reports, upload to the receiver.
    let ids: Vec<DeviceId> = (0..devices)
        .map(|i| DeviceId::new(&format!("m-{i:03}")).expect("valid"))
        .collect();
    let mut extra = String::new();
    for id in &ids {
        extra.push_str(&format!(
            "\n[[devices]]\nid = \"{id}\"\nkind = \"solar_meter\"\nserial = \"S-{id}\"\nmeter_class = \"class 1\"\n"
        ));
    }
    extra.push_str(&format!(
        "\n[report]\nperiod_minutes = {period_min}\ngrace_seconds = 120\nkey_file = \"keys/gateway.key\"\nclock_source = \"test clock x{rate}\"\n"
    ));
    for id in &ids {
        extra.push_str(&format!(
            "\n[report.devices.{id}]\nsample_interval_ms = 1000\n"
        ));
    }
    extra.push_str(&format!(
        "\n[upload]\nurl = \"https://localhost:{rx_port}/\"\nca_file = \"{}\"\ntoken = \"tok\"\nkeep_delivered_days = 3650\nbacklog_alarm_reports = 0\nbacklog_alarm_bytes = 0\nbacklog_alarm_minutes = {alarm_min}\n",
        pki_dir.path().join("ca.pem").display()
    ));
    let site = TestSite::new(0, &extra);
    let diag_port = free_port();
    let text = std::fs::read_to_string(&site.config_path).expect("config");
    std::fs::write(
        &site.config_path,
        text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{diag_port}\""),
        ),
    )
    .expect("config");
    let keys = mrv_gateway::keys::generate(&site.data_dir.join("keys"), "gateway").expect("keygen");
    let registry = site.dir.path().join("registry.json");
    let out = Command::new(gateway_bin())
        .args(["registry", "export", "--config"])
        .arg(&site.config_path)
        .arg("--out")
        .arg(&registry)
        .output()
        .expect("registry export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&registry, pki_dir.path().join("registry.json")).expect("registry");

    let (mut receiver, _) =
        spawn_receiver(archive.path(), pki_dir.path(), &keys.public, &rx_listen);
    let gateway = Command::new(gateway_bin())
        .env("MRV_E2E_CLOCK", format!("{T0}x{rate}"))
        .args(["--log", "warn", "run", "--config"])
        .arg(&site.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway starts");
    let mut gateway = KillOnDrop(gateway);
    wait_for_port(site.mqtt_port, Duration::from_secs(30));
    wait_for_port(diag_port, Duration::from_secs(30));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let status_url = format!("http://127.0.0.1:{diag_port}/api/status");
    let metrics_url = format!("http://127.0.0.1:{diag_port}/metrics");
    let status = || get_json(&http, &status_url);
    let gw_now = u(&status().await, "/now_ms");
    let sim = SimTime {
        origin: Instant::now(),
        start_ms: gw_now.saturating_sub(2_000),
        rate,
    };

    // Devices publish until told where to stop (phase 4).
    let last_frame = Arc::new(AtomicU64::new(u64::MAX));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let states: Vec<Arc<Mutex<DeviceState>>> = ids
        .iter()
        .map(|_| Arc::new(Mutex::new(DeviceState::default())))
        .collect();
    let tasks: Vec<_> = ids
        .iter()
        .zip(&states)
        .map(|(id, s)| {
            tokio::spawn(run_device(
                id.clone(),
                site.mqtt_port,
                sim,
                last_frame.clone(),
                s.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // Phase 1: the backend takes the first report.
    let wall = Instant::now();
    let s = loop {
        let s = status().await;
        if s.pointer("/uploads/delivered_upto")
            .and_then(serde_json::Value::as_u64)
            >= Some(1)
        {
            break s;
        }
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "first report never delivered: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    receiver.kill();
    let outage_start = sim.now_ms();
    let delivered_before = u(&s, "/uploads/delivered_upto");
    eprintln!(
        "backend SIGKILLed at simulated {} after report {delivered_before} was confirmed",
        mrv_gateway::clock::utc_rfc3339_ms(outage_start)
    );

    // Phase 2: the outage. The buffer only grows; the alarm comes.
    let outage_end = outage_start + outage_h * 3_600_000;
    let mut last_frames = 0u64;
    let mut alarm_seen_at: Option<u64> = None;
    let mut samples_taken = 0;
    let mut last_status = s;
    while sim.now_ms() < outage_end {
        let s = status().await;
        let frames = u(&s, "/buffer/frames");
        assert!(
            frames >= last_frames,
            "the buffer shrank during the outage: {last_frames} -> {frames} (pruned before delivery?)"
        );
        last_frames = frames;
        assert_eq!(
            u(&s, "/uploads/delivered_upto"),
            delivered_before,
            "nothing is confirmed while the backend is down"
        );
        if alarm_seen_at.is_none()
            && s.pointer("/uploads/upload/backlog_alarm")
                .is_some_and(|a| !a.is_null())
        {
            let age = u(&s, "/uploads/upload/backlog_age_ms");
            assert!(
                age >= alarm_min * MINUTE,
                "alarm before its limit: age {age} ms"
            );
            let upload_item = s["health"]["items"]
                .as_array()
                .expect("health items")
                .iter()
                .find(|i| i["name"] == "upload")
                .expect("upload health item")
                .clone();
            assert_eq!(upload_item["status"], "warn", "{upload_item}");
            assert!(
                upload_item["detail"]
                    .as_str()
                    .expect("detail")
                    .starts_with("upload backlog:"),
                "{upload_item}"
            );
            let m = get_text(&http, &metrics_url).await;
            assert_eq!(metric(&m, "mrv_upload_backlog_alarm"), Some(1), "{m}");
            assert!(metric(&m, "mrv_upload_backlog_bytes").is_some_and(|b| b > 0));
            alarm_seen_at = Some(sim.now_ms());
        }
        samples_taken += 1;
        last_status = s;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = last_status;
    let backlog = u(&s, "/uploads/backlog");
    let head_at_return = u(&s, "/uploads/head_seq");
    let alarm_at = alarm_seen_at.expect("the backlog alarm was raised during the outage");
    eprintln!(
        "after {outage_h} h simulated ({samples_taken} status samples): backlog {backlog} reports, {} bytes, oldest waiting {} min; \
         buffer {} frames, {} readings, {} bytes ({} on disk); alarm raised {} min into the outage",
        u(&s, "/uploads/upload/backlog_bytes"),
        u(&s, "/uploads/upload/backlog_age_ms") / MINUTE,
        u(&s, "/buffer/frames"),
        u(&s, "/buffer/readings"),
        u(&s, "/buffer/bytes"),
        u(&s, "/buffer/disk_bytes"),
        (alarm_at - outage_start) / MINUTE,
    );
    assert!(
        backlog >= outage_h * 60 / period_min - 1,
        "reports kept being built: {backlog}"
    );

    // Phase 3: the backend returns (same port, same archive): drain.
    let (mut receiver, _) =
        spawn_receiver(archive.path(), pki_dir.path(), &keys.public, &rx_listen);
    let drain_start = Instant::now();
    let drain_sim_start = sim.now_ms();
    let s = loop {
        let s = status().await;
        if u(&s, "/uploads/delivered_upto") >= head_at_return {
            break s;
        }
        assert!(
            drain_start.elapsed() < Duration::from_secs(600 + outage_h * 120),
            "backlog not drained: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drain = drain_start.elapsed();
    let drain_sim_min = (sim.now_ms() - drain_sim_start) / MINUTE;
    let _ = s;
    // The alarm clears once the backlog is below half of its limits.
    let wall = Instant::now();
    loop {
        let s = status().await;
        if s.pointer("/uploads/upload/backlog_alarm")
            .is_some_and(serde_json::Value::is_null)
        {
            let m = get_text(&http, &metrics_url).await;
            assert_eq!(metric(&m, "mrv_upload_backlog_alarm"), Some(0), "{m}");
            break;
        }
        assert!(
            wall.elapsed() < Duration::from_secs(60),
            "the alarm did not clear: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phase 4: devices stop at the next period boundary; the rest (and the
    // alarm's clearing event) is reported and delivered.
    // Frame k is generated once the device's clock passed T0 + k min, so
    // none beyond the next boundary exists yet.
    let stop_at = (sim.now_ms() / period_ms + 1) * period_ms;
    let final_frame = (stop_at - T0) / MINUTE;
    last_frame.store(final_frame, Ordering::SeqCst);
    let wall = Instant::now();
    loop {
        let done = states.iter().all(|st| {
            let s = st.lock().expect("state");
            s.generated >= final_frame && s.unacked.is_empty()
        });
        if done {
            break;
        }
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "devices did not reach frame {final_frame}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let published: Vec<u64> = states
        .iter()
        .map(|s| s.lock().expect("state").generated)
        .collect();
    let total_frames: u64 = published.iter().sum();
    let total_acked: u64 = states
        .iter()
        .map(|s| s.lock().expect("state").pubacked)
        .sum();
    assert_eq!(
        total_acked, total_frames,
        "every generated frame was PUBACKed"
    );
    assert!(published.iter().all(|&n| n == final_frame), "{published:?}");
    let wall = Instant::now();
    let s = loop {
        let s = status().await;
        let done = u(&s, "/buffer/depth_frames") == 0
            && s.pointer("/uploads/head_seq")
                .and_then(serde_json::Value::as_u64)
                == s.pointer("/uploads/delivered_upto")
                    .and_then(serde_json::Value::as_u64)
            && u(&s, "/uploads/head_period_end_ms") >= stop_at;
        if done {
            break s;
        }
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "the last reports were not delivered: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let head = u(&s, "/uploads/head_seq");
    // What the uploads cost: requests, failed ones (timeouts among them)
    // and bytes, gzip on the wire and raw.
    eprintln!(
        "uploads: {} requests, {} failed, {} bytes sent (gzip) for {} raw report bytes",
        u(&s, "/uploads/upload/requests"),
        u(&s, "/uploads/upload/errors"),
        u(&s, "/uploads/upload/bytes_sent"),
        u(&s, "/uploads/upload/raw_bytes"),
    );
    gateway.0.kill().expect("stop the gateway");
    let _ = gateway.0.wait();
    receiver.kill();

    // The receiver's archive: every report verifies and chains; every
    // device's frames exactly once, in order; every sample.
    let mut ks = KeySet::new();
    let jwk: Jwk = serde_json::from_slice(&std::fs::read(&keys.public).expect("JWK")).expect("JWK");
    ks.insert(
        jwk.kid.as_deref().expect("kid"),
        jwk.verifying_key().expect("key"),
    );
    let trust = DeviceTrust::Registry(
        DeviceRegistry::from_json(&std::fs::read(&registry).expect("registry"))
            .expect("registry")
            .trusted()
            .expect("trusted"),
    );
    let mut chain = Chain::new(false);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut readings = 0u64;
    let mut drained_readings = 0u64;
    let mut backlog_events = Vec::new();
    let dir = archive.path().join("gateways/demo-gw");
    for seq in 1..=head {
        let bytes = std::fs::read(dir.join(format!("{seq:012}.jws")))
            .unwrap_or_else(|e| panic!("report {seq} in the archive: {e}"));
        let v = verify_report(&bytes, &ks, &trust).unwrap_or_else(|e| panic!("report {seq}: {e}"));
        chain
            .push(&v)
            .unwrap_or_else(|e| panic!("report {seq} chains: {e}"));
        readings += v.report.readings.count;
        if seq > delivered_before && seq <= head_at_return {
            drained_readings += v.report.readings.count;
        }
        for f in &v.report.readings.frames {
            seen.entry(f.device.to_string()).or_default().push(f.seq);
        }
        for e in &v.report.events {
            if matches!(
                e.kind,
                EventKind::UploadBacklogHigh | EventKind::UploadBacklogCleared
            ) {
                backlog_events.push((seq, e.kind.name()));
            }
        }
    }
    let files = std::fs::read_dir(&dir)
        .expect("archive dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jws"))
        .count() as u64;
    assert_eq!(files, head, "no extra reports in the archive");
    for (id, n) in ids.iter().zip(&published) {
        let got = seen.remove(id.as_str()).unwrap_or_default();
        let want: Vec<u64> = (1..=*n).collect();
        assert!(
            got == want,
            "{id}: frames not delivered exactly once in order: {} frames, first differences {:?}",
            got.len(),
            got.iter().zip(&want).find(|(a, b)| a != b)
        );
    }
    assert!(
        seen.is_empty(),
        "frames of unknown devices: {:?}",
        seen.keys()
    );
    assert_eq!(
        readings,
        total_frames * SAMPLES_PER_FRAME,
        "every sample delivered"
    );
    assert_eq!(
        backlog_events.iter().map(|e| e.1).collect::<Vec<_>>(),
        ["upload_backlog_high", "upload_backlog_cleared"],
        "one alarm and one clearing, recorded in signed reports: {backlog_events:?}"
    );
    let drained = head_at_return - delivered_before;
    eprintln!(
        "drain: {drained} reports, {drained_readings} readings in {:.2} s wall \
         ({:.2} reports/s, {:.0} readings/s; {drain_sim_min} simulated min)",
        drain.as_secs_f64(),
        drained as f64 / drain.as_secs_f64(),
        drained_readings as f64 / drain.as_secs_f64(),
    );
    eprintln!(
        "delivered: {head} reports, {total_frames} frames, {readings} readings from {devices} devices, \
         each frame once and in order; 0 lost, 0 duplicated; {:.1} s wall in all",
        sim.origin.elapsed().as_secs_f64()
    );
}
