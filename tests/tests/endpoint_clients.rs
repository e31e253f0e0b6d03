//! Standard MQTT clients we did not write (mosquitto_pub/sub, Python
//! paho-mqtt), in MQTT 3.1.1 and 5, against the gateway's embedded endpoint:
//! they connect, publish QoS 0 and 1, receive application acks, and a PUBACK
//! means the frame is on disk: the gateway is SIGKILLed while paho devices
//! publish, and every frame paho saw PUBACKed is in the reopened buffer.

use mrv_e2e::{KillOnDrop, TestSite, require_tool, stored_seqs, wait_for_port};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use mrv_gateway::clock::SystemClock;
use mrv_gateway::endpoint::EndpointStats;
use mrv_shared::ids::DeviceId;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: [&str; 4] = ["mq-311", "mq-5", "py-311", "py-5"];

fn site() -> TestSite {
    let mut extra = String::new();
    for d in DEVICES {
        extra.push_str(&format!(
            "\n[[devices]]\nid = \"{d}\"\nkind = \"solar_meter\"\n"
        ));
    }
    TestSite::new(0, &extra)
}

fn json_frame(device: &str, seq: u64) -> String {
    format!(
        r#"{{"v":1,"site":"demo-site","device":"{device}","seq":{seq},"boot":1,"fw":"cli","time_ms":{},"readings":[{{"channel":"energy","quantity":"energy","kind":"counter","value":{}}}]}}"#,
        1_764_115_200_000 + seq * 1000,
        seq * 10
    )
}

fn stored(buffer: &Buffer, device: &str) -> BTreeSet<u64> {
    let d = DeviceId::new(device).expect("valid");
    stored_seqs(buffer)
        .get(&d)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_qos0_and_qos1_and_get_acks_in_3_1_1_and_5() {
    if !require_tool("mosquitto_pub") || !require_tool("mosquitto_sub") {
        return;
    }
    let site = site();
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    let port = site.mqtt_port.to_string();
    for (device, version) in [("mq-311", "mqttv311"), ("mq-5", "mqttv5")] {
        // A subscriber on the device's ack topic, as the device itself would.
        let ack_topic = format!("mrv/demo-site/{device}/ack");
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-q",
                "1",
                "-C",
                "1",
                "-W",
                "20",
            ])
            .args(["-i", &format!("{device}-acks"), "-t", &ack_topic])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub starts");
        // Wait until the subscription is routed (an ack published before would be missed).
        let deadline = Instant::now() + Duration::from_secs(10);
        while EndpointStats::get(&gw.state.endpoint.connections_open) < 1 {
            assert!(Instant::now() < deadline, "mosquitto_sub never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // QoS 1: mosquitto_pub exits after the PUBACK; the frame must already be in the buffer.
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "1"])
            .args(["-i", device, "-t", &format!("mrv/demo-site/{device}/up")])
            .args(["-m", &json_frame(device, 1)])
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success(), "{version}: mosquitto_pub QoS 1 failed");
        assert!(
            stored(&gw.state.buffer, device).contains(&1),
            "{version}: PUBACK arrived but the frame is not in the buffer"
        );
        let out = sub.wait_with_output().expect("mosquitto_sub ends");
        let ack = String::from_utf8_lossy(&out.stdout);
        assert!(
            ack.contains(r#""acked_seq":1"#) && ack.contains(r#""status":"ok""#),
            "{version}: application ack not delivered: {ack:?}"
        );
        // QoS 0: best effort, counted separately, stored here (buffer not full).
        let qos0_before = EndpointStats::get(&gw.state.endpoint.qos0_received);
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "0"])
            .args(["-i", device, "-t", &format!("mrv/demo-site/{device}/up")])
            .args(["-m", &json_frame(device, 2)])
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success(), "{version}: mosquitto_pub QoS 0 failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stored(&gw.state.buffer, device).contains(&2) {
            assert!(
                Instant::now() < deadline,
                "{version}: QoS 0 frame never stored"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            EndpointStats::get(&gw.state.endpoint.qos0_received),
            qos0_before + 1
        );
    }
    let e = &gw.state.endpoint;
    assert_eq!(EndpointStats::get(&e.qos1_received), 2);
    assert_eq!(EndpointStats::get(&e.acks_sent), 2);
    assert_eq!(
        EndpointStats::get(&e.auth_failures) + EndpointStats::get(&e.malformed),
        0
    );
    gw.shutdown().await;
}

#[test]
fn paho_pubacks_in_3_1_1_and_5_mean_on_disk_even_when_the_gateway_is_killed() {
    if !require_tool("python3") {
        return;
    }
    let has_paho = Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_paho {
        if std::env::var_os("CI").is_some() {
            panic!("paho-mqtt is not installed; scripts/install-test-deps.sh installs it");
        }
        eprintln!("SKIPPED: paho-mqtt is not installed (run scripts/install-test-deps.sh)");
        return;
    }
    let site = site();
    let mut gateway = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
            .args(["--log", "warn", "run", "--config"])
            .arg(&site.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gateway starts"),
    );
    wait_for_port(site.mqtt_port, Duration::from_secs(20));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/endpoint_support/paho_device.py"
    );
    let count = 3000;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, u64)>();
    let mut devices = Vec::new();
    for (i, (device, version)) in [("py-311", "3"), ("py-5", "5")].into_iter().enumerate() {
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "127.0.0.1",
                &site.mqtt_port.to_string(),
                version,
                "demo-site",
                device,
            ])
            .arg(count.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("paho device starts");
        let out = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ack")
                    && let (Some(Ok(seq)), Some("0")) =
                        (parts.next().map(str::parse::<u64>), parts.next())
                {
                    let _ = tx.send((i, seq));
                }
            }
        });
        devices.push(KillOnDrop(child));
    }
    drop(tx);
    // Kill the gateway while both devices are mid-stream.
    let mut acked = [BTreeSet::new(), BTreeSet::new()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.iter().any(|a| a.len() < 200) {
        assert!(
            Instant::now() < deadline,
            "paho devices got too few PUBACKs: {} / {}",
            acked[0].len(),
            acked[1].len()
        );
        if let Ok((i, seq)) = rx.recv_timeout(Duration::from_millis(100)) {
            acked[i].insert(seq);
        }
    }
    gateway.kill();
    // PUBACKs that were already on their way when the gateway died count too.
    while let Ok((i, seq)) = rx.recv_timeout(Duration::from_millis(300)) {
        acked[i].insert(seq);
    }
    drop(devices);
    let config = site.config();
    let buffer = Buffer::open(BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    })
    .expect("buffer reopens after SIGKILL");
    for (i, device) in ["py-311", "py-5"].into_iter().enumerate() {
        let on_disk = stored(&buffer, device);
        let lost: Vec<_> = acked[i].difference(&on_disk).take(10).collect();
        eprintln!(
            "{device}: {} PUBACKed before the kill, {} on disk",
            acked[i].len(),
            on_disk.len()
        );
        assert!(
            lost.is_empty(),
            "{device}: PUBACKed but not on disk: {lost:?}"
        );
        assert!(
            acked[i].len() < count as usize,
            "{device}: the kill came too late to test anything"
        );
    }
}
