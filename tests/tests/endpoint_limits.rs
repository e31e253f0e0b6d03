//! The embedded endpoint under many clients and bad clients: 1,000
//! concurrent connections, 200 devices reconnecting at the same moment
//! (taking over their old connections), and clients that send garbage,
//! oversized packets, a wrong password, or publish on another device's topic.
//! Each bad one is refused or disconnected with a clear log line and a
//! counter, and a good device publishing meanwhile is unaffected.

use bytes::BytesMut;
use mrv_e2e::TestSite;
use mrv_gateway::clock::SystemClock;
use mrv_gateway::endpoint::EndpointStats;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Frame, binary};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Log lines of the in-process gateways (INFO and above).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(w.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().expect("log buffer")).contains(needle)
}

/// A site whose `[mqtt]` section gets `mqtt_lines`.
fn site(mqtt_lines: &str, extra: &str) -> TestSite {
    let site = TestSite::new(0, extra);
    let text = std::fs::read_to_string(&site.config_path).expect("config");
    let text = text.replacen(
        "mode = \"embedded\"\n",
        &format!("mode = \"embedded\"\n{mqtt_lines}\n"),
        1,
    );
    std::fs::write(&site.config_path, text).expect("config");
    site
}

fn frame(device: &str, seq: u64) -> Vec<u8> {
    binary::encode_frame(&Frame {
        site: SiteId::new("demo-site").expect("valid"),
        device: DeviceId::new(device).expect("valid"),
        seq,
        boot: 1,
        firmware: "limits".into(),
        base_time_ms: Some(1_764_115_200_000 + seq * 1000),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: vec![Sample {
            channel: 0,
            offset_ms: 0,
            value: seq as i64,
            quality: Quality::GOOD,
        }],
        signature: None,
    })
}

/// Connects as `device`, subscribes to its ack topic, publishes `seq` and
/// reports on `done` once both the PUBACK and the application ack for it
/// arrived; then returns true, or with `stay` keeps the connection open
/// until `hold` changes. False: the connection failed first.
#[allow(clippy::too_many_arguments)]
async fn one_device(
    port: u16,
    device: String,
    seq: u64,
    login: Option<(&'static str, &'static str)>,
    stay: bool,
    hold: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::mpsc::UnboundedSender<String>,
) -> bool {
    let mut o = MqttOptions::new(device.clone(), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 10);
    let (mut puback, mut app_ack) = (false, false);
    let mut hold = hold;
    loop {
        tokio::select! {
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_subscribe(format!("mrv/demo-site/{device}/ack"), QoS::AtLeastOnce).expect("queue");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    client.try_publish(format!("mrv/demo-site/{device}/up"), QoS::AtLeastOnce, false, frame(&device, seq)).expect("queue");
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => puback = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if binary::decode_ack(&p.payload).is_ok_and(|a| a.acked_seq == seq) {
                        app_ack = true;
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            },
            _ = hold.changed() => return true,
        }
        if puback && app_ack {
            let _ = done.send(device.clone());
            puback = false;
            app_ack = false;
            if !stay {
                return true;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_and_two_hundred_reconnecting_at_once() {
    logs();
    let site = site("accept_unknown_devices = true\nmax_connections = 1500", "");
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    let port = site.mqtt_port;
    let n = 1000;
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    for i in 0..n {
        tokio::spawn(one_device(
            port,
            format!("c-{i:04}"),
            1,
            None,
            true,
            hold_rx.clone(),
            done_tx.clone(),
        ));
    }
    let mut acked = 0;
    while acked < n {
        tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
            .await
            .expect("every device acked within 60 s")
            .expect("sender alive");
        acked += 1;
    }
    let e = &gw.state.endpoint;
    eprintln!(
        "{n} devices connected, published and got PUBACK + application ack in {:?}; {} connections open",
        start.elapsed(),
        EndpointStats::get(&e.connections_open)
    );
    assert_eq!(EndpointStats::get(&e.connections_open), n as u64);
    // 200 of them reconnect at the same moment, while their old connections
    // are still open (as after a network blip): the new ones take over.
    let (hold2_tx, hold2_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    for i in 0..200 {
        tokio::spawn(one_device(
            port,
            format!("c-{i:04}"),
            2,
            None,
            true,
            hold2_rx.clone(),
            done_tx.clone(),
        ));
    }
    let mut again = 0;
    while again < 200 {
        tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
            .await
            .expect("every reconnected device acked within 60 s")
            .expect("sender alive");
        again += 1;
    }
    eprintln!(
        "200 devices reconnected at once and were acked again in {:?}",
        start.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while EndpointStats::get(&e.taken_over) < 200 {
        assert!(
            Instant::now() < deadline,
            "old connections were not taken over: {}",
            EndpointStats::get(&e.taken_over)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(EndpointStats::get(&e.connections_open), n as u64);
    assert_eq!(
        EndpointStats::get(&gw.state.ingest.frames_stored),
        n as u64 + 200
    );
    assert!(logged("a new connection with the same client id took over"));
    let _ = hold_tx.send(true);
    let _ = hold2_tx.send(true);
    gw.shutdown().await;
}

fn raw_connect() -> Vec<u8> {
    let mut b = BytesMut::new();
    let mut c = rumqttc::Connect::new("raw-client");
    c.set_login("site", "site-pw");
    rumqttc::Packet::Connect(c)
        .write(&mut b, usize::MAX)
        .expect("encodes");
    b.to_vec()
}

/// Writes `bytes` and reads until the server closes; returns what it sent.
fn send_and_wait_for_close(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_refused_with_a_log_line_and_a_counter_and_others_are_unaffected() {
    logs();
    let extra = "\n[[mqtt.users]]\nusername = \"site\"\npassword = \"site-pw\"\n\
        \n[[mqtt.users]]\nusername = \"good\"\npassword = \"good-pw\"\ndevice = \"good\"\n\
        \n[[devices]]\nid = \"good\"\nkind = \"solar_meter\"\n\
        \n[[devices]]\nid = \"other\"\nkind = \"solar_meter\"\n";
    let site = site("max_connections = 8", extra);
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    let port = site.mqtt_port;
    let e = gw.state.endpoint.clone();
    // A good device publishing all along, with its own credential.
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let good = {
        let (hold_rx, done_tx) = (hold_rx.clone(), done_tx.clone());
        tokio::spawn(async move {
            for seq in 1..=40u64 {
                // Retried while the connection limit test fills every slot.
                while !one_device(
                    port,
                    "good".into(),
                    seq,
                    Some(("good", "good-pw")),
                    false,
                    hold_rx.clone(),
                    done_tx.clone(),
                )
                .await
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
        .await
        .expect("good device acked")
        .expect("alive");

    let bad = tokio::task::spawn_blocking(move || {
        // Garbage bytes.
        send_and_wait_for_close(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // A valid login, then a PUBLISH announcing 10 MB.
        let mut b = raw_connect();
        b.extend_from_slice(&[0x32, 0x80, 0xAD, 0xE2, 0x04]);
        let got = send_and_wait_for_close(port, &b);
        assert_eq!(
            &got[..4],
            &[0x20, 0x02, 0x00, 0x00],
            "CONNACK accepted before the oversized packet"
        );
        // Wrong password (3.1.1 and 5, mosquitto_pub).
        for v in ["mqttv311", "mqttv5"] {
            let out = std::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-V",
                    v,
                    "-u",
                    "site",
                    "-P",
                    "wrong",
                ])
                .args(["-t", "mrv/demo-site/good/up", "-m", "x", "-q", "1"])
                .output()
                .expect("mosquitto_pub runs");
            assert!(
                !out.status.success(),
                "{v}: a wrong password must be refused"
            );
        }
        // Another device's topic with a per-device credential: 3.1.1 is disconnected.
        let out = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-V",
                "mqttv311",
                "-u",
                "good",
                "-P",
                "good-pw",
            ])
            .args([
                "-i",
                "good-impostor",
                "-t",
                "mrv/demo-site/other/up",
                "-q",
                "1",
            ])
            .arg("-m")
            .arg(unsafe_utf8(&frame("other", 1)))
            .output()
            .expect("mosquitto_pub runs");
        assert!(
            !out.status.success(),
            "3.1.1 publish on another device's topic must fail"
        );
        // ... and MQTT 5 gets PUBACK 0x87 (mosquitto_pub reports it).
        let out = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-V",
                "mqttv5",
                "-u",
                "good",
                "-P",
                "good-pw",
            ])
            .args([
                "-i",
                "good-impostor5",
                "-t",
                "mrv/demo-site/other/up",
                "-q",
                "1",
                "-m",
                "x",
            ])
            .output()
            .expect("mosquitto_pub runs");
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            said.to_lowercase().contains("not authorized"),
            "MQTT 5 refusal not reported: {said:?}"
        );
        // Connection limit (8): of 10 connections at least 2 are closed at
        // once without an answer (the accepted ones wait for a CONNECT).
        let held: Vec<_> = (0..10)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        let closed = held
            .iter()
            .filter(|s| {
                let mut s = *s;
                s.set_read_timeout(Some(Duration::from_millis(1500)))
                    .expect("timeout");
                let mut buf = [0u8; 8];
                match s.read(&mut buf) {
                    Ok(0) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => false,
                }
            })
            .count();
        assert!(
            closed >= 2,
            "over the limit connections are closed at once ({closed} of 10 were)"
        );
        drop(held);
    });
    if !mrv_e2e::require_tool("mosquitto_pub") {
        let _ = hold_tx.send(true);
        return;
    }
    bad.await.expect("bad clients ran");
    let deadline = Instant::now() + Duration::from_secs(15);
    let counted = |e: &EndpointStats| {
        EndpointStats::get(&e.malformed) >= 1
            && EndpointStats::get(&e.oversized) >= 1
            && EndpointStats::get(&e.auth_failures) >= 2
            && EndpointStats::get(&e.publish_not_authorized) >= 2
            && EndpointStats::get(&e.connections_refused_limit) >= 1
    };
    while !counted(&e) {
        assert!(
            Instant::now() < deadline,
            "counters: malformed {} oversized {} auth {} not_authorized {} limit {}",
            EndpointStats::get(&e.malformed),
            EndpointStats::get(&e.oversized),
            EndpointStats::get(&e.auth_failures),
            EndpointStats::get(&e.publish_not_authorized),
            EndpointStats::get(&e.connections_refused_limit)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in [
        "malformed MQTT: first bytes are not an MQTT CONNECT",
        "exceeds the limit of",
        "login refused: wrong user name or password for \"site\"",
        "publish on \"mrv/demo-site/other/up\" not allowed for this credential",
        "publish refused: this credential may publish only on its own device's up topic",
        "connection limit reached",
    ] {
        assert!(logged(line), "no log line {line:?}");
    }
    // The good device kept going: all 40 frames acked and stored, nothing from "other".
    let mut acked = 1;
    while acked < 40 {
        tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
            .await
            .expect("good device keeps being acked")
            .expect("alive");
        acked += 1;
    }
    let stored = mrv_e2e::stored_seqs(&gw.state.buffer);
    assert_eq!(
        stored
            .get(&DeviceId::new("good").expect("valid"))
            .map(|m| m.len()),
        Some(40)
    );
    assert!(!stored.contains_key(&DeviceId::new("other").expect("valid")));
    good.abort();
    let _ = hold_tx.send(true);
    gw.shutdown().await;
}

/// mosquitto_pub takes the message as an argument; a binary frame is passed
/// through unchanged as long as it has no NUL byte (ours: refused either way).
fn unsafe_utf8(b: &[u8]) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(b.iter().map(|&x| if x == 0 { 1 } else { x }).collect())
}
