//! Ingest benchmarks (issues: foundation, 11). Prints figures; see docs/BENCHMARKS.md.
//!
//! 1. One reading per message, as a ratio to raw mosquitto pub -> sub of the
//!    same messages in the same run: the embedded endpoint to the last
//!    durable PUBACK (target >= 1.5), and via mosquitto to the durable
//!    application ack (for comparison).
//! 2. Batched frames (100 readings each): readings/s durable (target >= 200,000).
//! 3. RSS of the whole gateway process (embedded endpoint included) with 200
//!    devices at 1 Hz and 1M readings buffered (target <= 16 MB), the
//!    gateway's start-up time with that buffer (target <= 300 ms), and the
//!    memory of 1,000 more idle connections (target <= 8 KB each).
//!
//! Run: `cargo bench -p mrv-gateway --bench ingest` (needs mosquitto:
//! `scripts/install-test-deps.sh`). `INGEST_BENCH_QUICK=1` shrinks the runs.

use mrv_gateway::buffer::{Buffer, BufferConfig, Incoming};
use mrv_gateway::clock::SystemClock;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Frame, binary, topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SITE: &str = "bench-site";

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing on port {port}");
}

struct Mosquitto(Child, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(port: u16) -> Mosquitto {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("m.conf");
    // Raise the per-client queues so mosquitto does not drop QoS1 messages
    // (its defaults drop them for a slow subscriber; see the foundation issue).
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nlog_type error\n"))
        .expect("conf");
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mosquitto");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (install it: scripts/install-test-deps.sh)");
    wait_port(port);
    Mosquitto(child, dir)
}

fn frame(device: &DeviceId, seq: u64, readings: usize) -> Frame {
    Frame {
        site: SiteId::new(SITE).expect("valid"),
        device: device.clone(),
        seq,
        boot: 1,
        firmware: "bench".into(),
        base_time_ms: Some(1_764_115_200_000 + seq * 1000),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: (0..readings)
            .map(|i| Sample {
                channel: 0,
                offset_ms: i as u32 * 10,
                value: (seq * 1000 + i as u64) as i64,
                quality: Quality::GOOD,
            })
            .collect(),
        signature: None,
    }
}

fn client(id: &str, port: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_inflight(100)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 10_000)
}

/// When a run is over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// A plain subscriber received every message (raw mosquitto).
    RawSink,
    /// Every device got the application ack for its last frame.
    AppAcks,
    /// Every device got every PUBACK (embedded endpoint: PUBACK = durable).
    PubAcks,
}

/// Publishes `per_device` frames from each device as fast as QoS1 allows,
/// until `finish`.
async fn publish_all(
    port: u16,
    devices: usize,
    per_device: u64,
    readings: usize,
    finish: Finish,
) -> Duration {
    let await_acks = finish == Finish::AppAcks;
    let frames: Vec<(DeviceId, Vec<Vec<u8>>)> = (0..devices)
        .map(|d| {
            let id = DeviceId::new(&format!("d{d:04}")).expect("valid");
            let bytes = (1..=per_device)
                .map(|s| binary::encode_frame(&frame(&id, s, readings)))
                .collect();
            (id, bytes)
        })
        .collect();
    let site = SiteId::new(SITE).expect("valid");
    // A plain subscriber for the raw measurement.
    let (sub, mut sub_loop) = client("raw-sink", port);
    let total = devices as u64 * per_device;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    if finish == Finish::RawSink {
        sub.subscribe(format!("mrv/{SITE}/+/up"), QoS::AtLeastOnce)
            .await
            .expect("sub");
        tokio::spawn(async move {
            let mut got = 0u64;
            let mut done = Some(done_tx);
            while let Ok(ev) = sub_loop.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = ev {
                    got += 1;
                    if got == total
                        && let Some(d) = done.take()
                    {
                        let _ = d.send(());
                    }
                }
            }
        });
        // Let the subscription settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
    } else {
        drop(done_tx);
        tokio::spawn(async move { while sub_loop.poll().await.is_ok() {} });
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (id, bytes) in frames {
        let (c, mut el) = client(id.as_str(), port);
        let up = topic::up_topic(&site, &id);
        let ack = topic::ack_topic(&site, &id);
        tasks.push(tokio::spawn(async move {
            if await_acks {
                c.subscribe(ack, QoS::AtLeastOnce).await.expect("sub ack");
            }
            let publisher = {
                let c = c.clone();
                tokio::spawn(async move {
                    for b in bytes {
                        c.publish(up.clone(), QoS::AtLeastOnce, false, b)
                            .await
                            .expect("publish");
                    }
                })
            };
            let mut pubacks = 0u64;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if await_acks => {
                        if let Ok(a) = binary::decode_ack(&p.payload)
                            && a.acked_seq == per_device
                        {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        pubacks += 1;
                        if !await_acks && pubacks == per_device {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("device connection failed: {e}"),
                }
            }
            publisher.await.expect("publisher");
            // Keep polling briefly so queued QoS1 publishes complete.
            let _ = tokio::time::timeout(Duration::from_millis(50), async {
                while el.poll().await.is_ok() {}
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.expect("device task");
    }
    if finish == Finish::RawSink {
        tokio::time::timeout(Duration::from_secs(120), done_rx)
            .await
            .expect("raw sink got everything")
            .expect("sink");
    }
    start.elapsed()
}

fn gateway_config(dir: &Path, mqtt: &str, devices: usize) -> mrv_gateway::config::GatewayConfig {
    let mut text = format!(
        "[site]\nid = \"{SITE}\"\n[gateway]\nid = \"gw\"\ndata_dir = \"{}\"\n{mqtt}\n",
        dir.join("data").display()
    );
    for d in 0..devices {
        text.push_str(&format!(
            "[[devices]]\nid = \"d{d:04}\"\nkind = \"solar_meter\"\n"
        ));
    }
    let p = dir.join("gateway.toml");
    std::fs::write(&p, text).expect("config");
    mrv_gateway::config::load(&p).expect("valid bench config")
}

async fn gateway_run(
    mqtt_port: u16,
    embedded: bool,
    devices: usize,
    per_device: u64,
    readings: usize,
) -> Duration {
    let dir = tempfile::tempdir().expect("tmp");
    let mqtt = if embedded {
        format!("[mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"")
    } else {
        format!("[mqtt]\nmode = \"external\"\nport = {mqtt_port}")
    };
    let gw = mrv_gateway::runtime::start(
        gateway_config(dir.path(), &mqtt, devices),
        Arc::new(SystemClock),
    )
    .await
    .expect("gateway");
    while mrv_gateway::ingest::stats::IngestStats::get(&gw.state.ingest.subscribed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finish = if embedded {
        Finish::PubAcks
    } else {
        Finish::AppAcks
    };
    let t = publish_all(mqtt_port, devices, per_device, readings, finish).await;
    let stored = mrv_gateway::ingest::stats::IngestStats::get(&gw.state.ingest.frames_stored);
    assert_eq!(stored, devices as u64 * per_device, "every frame stored");
    gw.shutdown().await;
    t
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> (u64, u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let quick = std::env::var_os("INGEST_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let devices = 4;
    let per_device: u64 = if quick { 2_000 } else { 10_000 };
    let total = devices as f64 * per_device as f64;
    println!(
        "ingest bench: {devices} devices x {per_device} messages, 1 reading per message, QoS1"
    );
    let port = free_port();
    let m = mosquitto(port);
    let (mut raw, mut via_mosq, mut via_embedded) = (vec![], vec![], vec![]);
    for round in 0..3 {
        let r = rt.block_on(publish_all(port, devices, per_device, 1, Finish::RawSink));
        let g = rt.block_on(gateway_run(port, false, devices, per_device, 1));
        let e = rt.block_on(gateway_run(free_port(), true, devices, per_device, 1));
        let (r, g, e) = (
            total / r.as_secs_f64(),
            total / g.as_secs_f64(),
            total / e.as_secs_f64(),
        );
        println!(
            "  round {round}: raw mosquitto pub->sub {r:>8.0} msg/s | gateway via mosquitto {g:>8.0} msg/s to the durable app ack | gateway embedded endpoint {e:>8.0} msg/s to the durable PUBACK"
        );
        raw.push(r);
        via_mosq.push(g);
        via_embedded.push(e);
    }
    let (r, g, e) = (median(raw), median(via_mosq), median(via_embedded));
    println!(
        "RESULT one-reading messages (median of 3): raw {r:.0} msg/s; gateway via mosquitto {g:.0} msg/s to the app ack (ratio {:.2}); embedded endpoint {e:.0} msg/s to the durable PUBACK (ratio {:.2}, target >= 1.5)",
        g / r,
        e / r
    );

    let batch_frames: u64 = if quick { 200 } else { 1_000 };
    let mut rates = vec![];
    for _ in 0..3 {
        let t = rt.block_on(gateway_run(free_port(), true, devices, batch_frames, 100));
        rates.push(devices as f64 * batch_frames as f64 * 100.0 / t.as_secs_f64());
    }
    println!(
        "RESULT batched frames (100 readings each, {} frames, embedded endpoint): {:.0} readings/s durable (median of 3); target >= 200000",
        devices as u64 * batch_frames,
        median(rates)
    );
    drop(m);

    // RSS with 200 devices at 1 Hz and 1M readings buffered.
    let dir = tempfile::tempdir().expect("tmp");
    let mqtt_port = free_port();
    // 200 devices plus 1,000 idle connections: above the default
    // connection limit (1,024), which would refuse the last ones.
    let cfg = gateway_config(
        dir.path(),
        &format!(
            "[mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"\nmax_connections = 2000"
        ),
        200,
    );
    let target_readings: u64 = if quick { 100_000 } else { 1_000_000 };
    {
        let buffer = Buffer::open(BufferConfig {
            path: cfg.buffer.path.clone(),
            max_bytes: cfg.buffer.max_bytes,
            cache_bytes: cfg.buffer.cache_bytes,
            keep_delivered: cfg.buffer.keep_delivered,
        })
        .expect("buffer");
        let mut seq = vec![0u64; 200];
        let mut written = 0;
        while written < target_readings {
            let batch: Vec<Incoming> = (0..200)
                .map(|d| {
                    seq[d] += 1;
                    let id = DeviceId::new(&format!("d{d:04}")).expect("valid");
                    Incoming {
                        frame: frame(&id, seq[d], 50),
                        received_ms: 1_764_115_200_000 + seq[d] * 50_000,
                    }
                })
                .collect();
            written += 200 * 50;
            buffer.append(batch).expect("append");
        }
        println!(
            "prefilled buffer: {written} readings, {} bytes on disk",
            buffer.stats().disk_bytes
        );
    }
    let start = Instant::now();
    // MRV_GATEWAY_BIN measures another build, e.g. the production one
    // (`--no-default-features`, without the demo's simulator and receiver).
    let bin = std::env::var("MRV_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mrv-gateway").to_string());
    println!("RSS run: gateway binary {bin}");
    let mut child = Command::new(&bin)
        .args(["--log", "warn", "run", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway child");
    wait_port(mqtt_port);
    let startup = start.elapsed();
    let pid = child.id();
    let secs = if quick { 10 } else { 30 };
    let first_seq = target_readings / (200 * 50) + 1;
    let pollers = rt.block_on(async {
        let mut tasks = Vec::new();
        for d in 0..200u64 {
            tasks.push(tokio::spawn(async move {
                let id = DeviceId::new(&format!("d{d:04}")).expect("valid");
                let (c, mut el) = client(id.as_str(), mqtt_port);
                let up = topic::up_topic(&SiteId::new(SITE).expect("valid"), &id);
                let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                for s in 0..secs {
                    tick.tick().await;
                    let f = binary::encode_frame(&frame(&id, first_seq + s, 1));
                    let _ = c.publish(up.clone(), QoS::AtLeastOnce, false, f).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                (poller, c)
            }));
        }
        let mut pollers = Vec::new();
        for t in tasks {
            pollers.push(t.await.expect("device task"));
        }
        pollers
    });
    // Measured while the 200 devices are still connected.
    let (rss, hwm, anon, file) = rss_kib(pid);
    // 1,000 more connections that log in and then stay idle.
    let connect = {
        let mut b = bytes::BytesMut::new();
        let mut c = rumqttc::Connect::new("idle");
        c.keep_alive = 0;
        rumqttc::Packet::Connect(c)
            .write(&mut b, usize::MAX)
            .expect("encodes");
        b.to_vec()
    };
    let idle: Vec<std::net::TcpStream> = (0..1000)
        .map(|i| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).expect("connect");
            let mut pkt = connect.clone();
            // A distinct client id per connection ("idle" -> "i" + 3 digits keeps the length).
            let id = format!("{:04}", i);
            let at = pkt.len() - 4;
            pkt[at..].copy_from_slice(id.as_bytes());
            s.write_all(&pkt).expect("CONNECT");
            let mut ack = [0u8; 4];
            s.read_exact(&mut ack).expect("CONNACK");
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "accepted");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (rss_idle, _, anon_idle, _) = rss_kib(pid);
    println!(
        "RESULT 1000 more idle connections: RSS +{:.0} KB (anonymous +{:.0} KB) = {:.2} KB per idle connection, target <= 8 KB",
        rss_idle as f64 - rss as f64,
        anon_idle as f64 - anon as f64,
        (rss_idle as f64 - rss as f64) / 1000.0
    );
    drop(idle);
    drop(pollers);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "RESULT gateway process with 200 devices at 1 Hz for {secs} s and {target_readings} readings buffered: RSS {:.1} MB (peak {:.1} MB; anonymous {:.1} MB, file-backed {:.1} MB), target <= 16 MB; start-up to endpoint listening {} ms, target <= 300 ms",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        startup.as_millis()
    );
}
