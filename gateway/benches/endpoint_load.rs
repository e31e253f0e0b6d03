//! Load through the embedded MQTT endpoint, with the gateway as its own
//! process (the production binary when `MRV_GATEWAY_BIN` points at it) and
//! mosquitto measured by the same load generator in the same run. Prints
//! figures; see docs/BENCHMARKS.md ("Endpoint load").
//!
//! 1. Issue 12's workload: 200 devices over 4 MQTT connections publish QoS 1
//!    JSON `{"device":"dev17","ts":<send ms>,"energy_wh":N,"power_w":N}` on
//!    `sensors/<device>/data` through the mapping stage (`[[mapping]]`).
//!    Bursts of 20k and 100k messages (drain time: first send to last
//!    durable PUBACK), then fixed rates of 1k/2k/5k/10k/20k/40k msg/s for
//!    20 s each: *sustained* when every message of the phase was PUBACKed
//!    (= on disk: the endpoint PUBACKs after the group commit's fdatasync)
//!    within 2 s of the end of the publisher's 20 s schedule. Gateway CPU
//!    (user + system, % of one core) and RSS (max of 10 samples a second)
//!    per phase. Afterwards the gateway is stopped and the buffer opened:
//!    every message is looked up there (device, `energy_wh` = its number
//!    per device), so loss and duplicates are counted from the buffer, not
//!    from the PUBACKs. Targets: >= 30,000 msg/s sustained, 0 lost, 0
//!    duplicated, RSS <= 24 MB.
//! 2. Issue 11's ratio: one reading per message (our binary frame, 4
//!    devices x 25,000, `ENDPOINT_LOAD_PER_DEVICE`), the endpoint to the last durable PUBACK, against
//!    raw mosquitto pub -> sub of the same messages (same generator, a
//!    subscriber that PUBACKs each delivery), 3 rounds, median. Target >= 1.5.
//!
//! The load generator is deliberately lean (one task pair per connection,
//! rumqttc's MQTT 3.1.1 codec, PUBLISHes written in batches, an in-flight
//! window per connection like a real client's), so that on 2 cores it takes
//! as little CPU from the measured process as possible.
//!
//! Run: `cargo bench -p mrv-gateway --bench endpoint_load` (needs mosquitto:
//! `scripts/install-test-deps.sh`); for the production binary build it
//! first (`cargo build --release -p mrv-gateway --no-default-features`) and
//! set `MRV_GATEWAY_BIN`. `ENDPOINT_LOAD_QUICK=1`: bursts of 2k/10k, rates
//! 1k/5k/20k for 3 s each, one ratio round. `ENDPOINT_LOAD_CHART_MEMORY`
//! and `ENDPOINT_LOAD_DEDUP_MEMORY` (bytes) set the gateway's
//! `diagnostics.chart_memory_bytes` and `mqtt.mapping_dedup_memory_bytes`
//! (default: the gateway's defaults).

use bytes::BytesMut;
use mrv_gateway::buffer::{Buffer, BufferConfig};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Frame, binary, topic};
use rumqttc::{Packet, PubAck, Publish, QoS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const SITE: &str = "bench-site";
const CONNECTIONS: usize = 4;
const DEVICES: usize = 200;
/// In flight per connection, and the gateway's `mqtt.receive_maximum`:
/// `ENDPOINT_LOAD_WINDOW`, default 100 (the endpoint's default).
fn window() -> usize {
    std::env::var("ENDPOINT_LOAD_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&w| (1..=65_535).contains(&w))
        .unwrap_or(100)
}
const MAX_PACKET: usize = 1 << 20;
/// Issue 11's messages per device: `ENDPOINT_LOAD_PER_DEVICE`, default
/// 25,000 (100,000 a round: about a second at the measured rates; shorter
/// rounds were dominated by start-up and scheduling noise).
fn per_device_11(quick: bool) -> u64 {
    std::env::var("ENDPOINT_LOAD_PER_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(if quick { 5_000 } else { 25_000 })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(port: u16) {
    for _ in 0..1000 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing on port {port}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A child process killed when dropped (mosquitto, or a gateway on panic).
struct Proc(Child, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(port: u16) -> Proc {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("m.conf");
    // Per-client queues raised so that mosquitto drops nothing for the sink.
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
    Proc(child, dir)
}

// ---------------------------------------------------------------- process figures

/// (utime + stime) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime, stime are fields 14 and 15 (1-based), i.e. 11, 12 after ")".
    get(11) + get(12)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS ten times a second; `take_max` returns the
/// largest since the last call.
struct RssProbe {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}
impl RssProbe {
    fn start(pid: u32) -> Self {
        let max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { max, stop }
    }
    fn take_max(&self) -> u64 {
        self.max.swap(0, Ordering::Relaxed)
    }
}
impl Drop for RssProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn ticks_per_s() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux we run on.
    100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- load generator

fn encode(p: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    p.write(&mut b, MAX_PACKET).expect("encodes");
    b
}

/// Connects and logs in (MQTT 3.1.1, clean session), optionally subscribes.
async fn connect(port: u16, client_id: &str, subscribe: Option<&str>) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut c = rumqttc::Connect::new(client_id);
    c.keep_alive = 0;
    s.write_all(&encode(&Packet::Connect(c)))
        .await
        .expect("CONNECT");
    if let Some(filter) = subscribe {
        let mut sub = rumqttc::Subscribe::new(filter, QoS::AtLeastOnce);
        sub.pkid = 1;
        s.write_all(&encode(&Packet::Subscribe(sub)))
            .await
            .expect("SUBSCRIBE");
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut connacked = false;
    let mut subacked = subscribe.is_none();
    while !(connacked && subacked) {
        match Packet::read(&mut buf, MAX_PACKET) {
            Ok(Packet::ConnAck(a)) => {
                assert_eq!(a.code, rumqttc::ConnectReturnCode::Success, "accepted");
                connacked = true;
            }
            Ok(Packet::SubAck(_)) => subacked = true,
            Ok(other) => panic!("unexpected {other:?} while connecting"),
            Err(rumqttc::Error::InsufficientBytes(_)) => {
                let n = s.read_buf(&mut buf).await.expect("read");
                assert!(n > 0, "closed while connecting");
            }
            Err(e) => panic!("bad packet while connecting: {e}"),
        }
    }
    (s, buf)
}

/// What one publishing connection sends: message `i` (0-based) of this
/// connection as (topic, payload), made when it is sent.
type MakeMessage = Box<dyn FnMut(u64) -> (String, Vec<u8>) + Send>;

struct ConnResult {
    sent: u64,
    last_send: Instant,
    last_ack: Instant,
}

/// Publishes `count` QoS 1 messages on one connection, at `rate` msg/s
/// (`None`: as fast as the window allows), with at most `window()` unacked;
/// returns when every PUBACK arrived.
async fn publish_conn(
    port: u16,
    client_id: String,
    count: u64,
    rate: Option<f64>,
    start: Instant,
    mut make: MakeMessage,
    acked: Arc<AtomicU64>,
) -> ConnResult {
    let (s, mut rbuf) = connect(port, &client_id, None).await;
    let (mut rd, mut wr) = s.into_split();
    let window = Arc::new(Semaphore::new(window()));
    let reader = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut got = 0u64;
            let mut last = Instant::now();
            while got < count {
                match Packet::read(&mut rbuf, MAX_PACKET) {
                    Ok(Packet::PubAck(_)) => {
                        got += 1;
                        acked.fetch_add(1, Ordering::Relaxed);
                        window.add_permits(1);
                        last = Instant::now();
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(rumqttc::Error::InsufficientBytes(_)) => {
                        let n = rd.read_buf(&mut rbuf).await.expect("read");
                        assert!(n > 0, "{client_id}: connection closed after {got} PUBACKs");
                    }
                    Err(e) => panic!("bad packet: {e}"),
                }
            }
            last
        })
    };
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut pkid: u16 = 0;
    let mut i = 0u64;
    while i < count {
        // Everything due by now (all of it when unpaced).
        let due = match rate {
            None => count,
            Some(r) => ((start.elapsed().as_secs_f64() * r) as u64 + 1).min(count),
        };
        if i >= due {
            let next = start + Duration::from_secs_f64(i as f64 / rate.expect("paced"));
            tokio::time::sleep_until(next.into()).await;
            continue;
        }
        while i < due && out.len() < 32 * 1024 {
            match window.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => {
                    if !out.is_empty() {
                        break;
                    }
                    window.acquire().await.expect("open").forget();
                }
            }
            let (t, payload) = make(i);
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            let mut p = Publish::new(t, QoS::AtLeastOnce, payload);
            p.pkid = pkid;
            Packet::Publish(p)
                .write(&mut out, MAX_PACKET)
                .expect("encodes");
            i += 1;
        }
        wr.write_all(&out).await.expect("write");
        out.clear();
    }
    let last_send = Instant::now();
    let last_ack = reader.await.expect("reader");
    ConnResult {
        sent: count,
        last_send,
        last_ack,
    }
}

/// A subscriber on mosquitto that PUBACKs every delivery; resolves with the
/// time the `total`-th message arrived.
async fn sink(port: u16, filter: &str, total: u64) -> tokio::task::JoinHandle<Instant> {
    let (s, mut buf) = connect(port, "bench-sink", Some(filter)).await;
    tokio::spawn(async move {
        let (mut rd, mut wr) = s.into_split();
        let mut got = 0u64;
        let mut acks = BytesMut::new();
        loop {
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(Packet::Publish(p)) => {
                    got += 1;
                    PubAck::new(p.pkid).write(&mut acks).expect("encodes");
                    if got == total {
                        let _ = wr.write_all(&acks).await;
                        return Instant::now();
                    }
                }
                Ok(_) => {}
                Err(rumqttc::Error::InsufficientBytes(_)) => {
                    if !acks.is_empty() {
                        wr.write_all(&acks).await.expect("write acks");
                        acks.clear();
                    }
                    let n = rd.read_buf(&mut buf).await.expect("read");
                    assert!(n > 0, "sink closed after {got}");
                }
                Err(e) => panic!("bad packet: {e}"),
            }
        }
    })
}

// ---------------------------------------------------------------- issue 12 workload

/// Per device: messages sent so far (its next `energy_wh` is this + 1) and
/// the last `ts` sent (kept strictly increasing per device, so that the
/// mapping's (device, timestamp) dedup never takes two messages for one).
struct DeviceCounters {
    sent: Vec<AtomicU64>,
    last_ts: Vec<AtomicU64>,
}

fn device_name(d: usize) -> String {
    format!("dev{d}")
}

/// One phase's messages for connection `c`: round-robin over its devices.
fn json_messages(c: usize, counters: Arc<DeviceCounters>) -> MakeMessage {
    let per = DEVICES / CONNECTIONS;
    let topics: Vec<String> = (0..per)
        .map(|k| format!("sensors/{}/data", device_name(c * per + k)))
        .collect();
    Box::new(move |i| {
        let k = (i % per as u64) as usize;
        let d = c * per + k;
        let n = counters.sent[d].fetch_add(1, Ordering::Relaxed) + 1;
        let prev = counters.last_ts[d].load(Ordering::Relaxed);
        let ts = now_ms().max(prev + 1);
        counters.last_ts[d].store(ts, Ordering::Relaxed);
        let payload = format!(
            "{{\"device\":\"{}\",\"ts\":{ts},\"energy_wh\":{n},\"power_w\":{}}}",
            device_name(d),
            1000 + (n % 500)
        );
        (topics[k].clone(), payload.into_bytes())
    })
}

struct PhaseResult {
    sent: u64,
    /// First send to the last PUBACK.
    drain: Duration,
    /// Start to the last send.
    send_span: Duration,
    /// PUBACKed within the schedule + 2 s (paced phases).
    acked_in_time: u64,
}

/// Runs one phase on `CONNECTIONS` connections; `total` messages overall.
async fn run_phase(
    port: u16,
    tag: &str,
    total: u64,
    rate: Option<f64>,
    counters: &Arc<DeviceCounters>,
    deadline_after: Option<Duration>,
) -> PhaseResult {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per_conn = total / CONNECTIONS as u64;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(publish_conn(
            port,
            format!("{tag}-{c}"),
            per_conn,
            rate.map(|r| r / CONNECTIONS as f64),
            start,
            json_messages(c, counters.clone()),
            acked.clone(),
        )));
    }
    let acked_in_time = match deadline_after {
        Some(d) => {
            let watch = acked.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until((start + d).into()).await;
                watch.load(Ordering::Relaxed)
            })
        }
        None => tokio::spawn(async { 0 }),
    };
    let mut sent = 0;
    let mut last_send = start;
    let mut last_ack = start;
    for t in tasks {
        let r = t.await.expect("connection task");
        sent += r.sent;
        last_send = last_send.max(r.last_send);
        last_ack = last_ack.max(r.last_ack);
    }
    PhaseResult {
        sent,
        drain: last_ack - start,
        send_span: last_send - start,
        acked_in_time: acked_in_time.await.expect("watch"),
    }
}

/// The diagnostics port of the gateway started from this config.
fn diagnostics_port(config: &Path) -> u16 {
    mrv_gateway::config::load(config)
        .expect("config")
        .diagnostics
        .listen
        .port()
}

/// `key = <env var's value>\n` when the variable is set.
fn config_line(key: &str, var: &str) -> String {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or_else(String::new, |v| format!("{key} = {v}\n"))
}

fn write_gateway_config(dir: &Path, port: u16, devices: &[String], mapping: bool) -> PathBuf {
    let mut text = format!(
        "[site]\nid = \"{SITE}\"\n[gateway]\nid = \"gw\"\ndata_dir = \"{}\"\n[mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 2000\nreceive_maximum = {}\n{}[diagnostics]\nlisten = \"127.0.0.1:{}\"\n{}",
        dir.join("data").display(),
        window(),
        config_line("mapping_dedup_memory_bytes", "ENDPOINT_LOAD_DEDUP_MEMORY"),
        free_port(),
        config_line("chart_memory_bytes", "ENDPOINT_LOAD_CHART_MEMORY"),
    );
    for d in devices {
        text.push_str(&format!(
            "[[devices]]\nid = \"{d}\"\nkind = \"solar_meter\"\n"
        ));
    }
    if mapping {
        text.push_str(
            r#"
[[mapping]]
id = "bench-sensors"
topic = "sensors/+/data"
device = { topic_level = 1 }

[mapping.timestamp]
path = "$.ts"
format = "unix_ms"

[[mapping.fields]]
channel = "energy"
path = "$.energy_wh"
quantity = "energy"
unit = "Wh"
kind = "counter"

[[mapping.fields]]
channel = "power"
path = "$.power_w"
quantity = "power"
unit = "W"
"#,
        );
    }
    let p = dir.join("gateway.toml");
    std::fs::write(&p, text).expect("config");
    p
}

/// The gateway's `/api/status`.
fn status(diag_port: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", diag_port)).expect("diagnostics");
    s.write_all(b"GET /api/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).expect("status JSON")
}

/// (frames stored, group commits) from the gateway's `/api/status`.
fn commits(diag_port: u16) -> (u64, u64) {
    let v = status(diag_port);
    let get = |k: &str| v["ingest"][k].as_u64().expect("counter");
    (get("frames_stored"), get("commits"))
}

fn gateway_bin() -> String {
    std::env::var("MRV_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mrv-gateway").to_string())
}

fn start_gateway(config: &Path, port: u16) -> (Child, Duration) {
    let t = Instant::now();
    let child = Command::new(gateway_bin())
        .args(["--log", "warn", "run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway child");
    wait_port(port);
    (child, t.elapsed())
}

/// SIGTERM, then wait for a clean exit.
fn stop_gateway(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Opens the stopped gateway's buffer and counts, per device, every
/// `energy` value 1..=sent: (lost, duplicated, frames).
fn count_from_buffer(config: &Path, sent: &[u64]) -> (u64, u64, u64) {
    let cfg = mrv_gateway::config::load(config).expect("config");
    let buffer = Buffer::open(BufferConfig {
        path: cfg.buffer.path.clone(),
        max_bytes: cfg.buffer.max_bytes,
        cache_bytes: cfg.buffer.cache_bytes,
        keep_delivered: cfg.buffer.keep_delivered,
    })
    .expect("buffer");
    let index: HashMap<String, usize> = (0..DEVICES).map(|d| (device_name(d), d)).collect();
    let mut seen: Vec<Vec<u8>> = sent.iter().map(|&n| vec![0u8; n as usize + 1]).collect();
    let (mut frames, mut dup, mut stray) = (0u64, 0u64, 0u64);
    for f in buffer.scan(None) {
        let f = f.expect("readable frame");
        frames += 1;
        let Some(&d) = index.get(f.frame.device.as_str()) else {
            stray += 1;
            continue;
        };
        let energy = f
            .frame
            .channels
            .iter()
            .position(|c| c.id.as_str() == "energy")
            .and_then(|ch| f.frame.samples.iter().find(|s| s.channel as usize == ch))
            .map(|s| s.value);
        match energy {
            Some(n) if n >= 1 && (n as u64) <= sent[d] => {
                let slot = &mut seen[d][n as usize];
                if *slot > 0 {
                    dup += 1;
                }
                *slot = slot.saturating_add(1);
            }
            _ => stray += 1,
        }
    }
    let lost: u64 = seen
        .iter()
        .map(|s| s.iter().skip(1).filter(|&&c| c == 0).count() as u64)
        .sum();
    assert_eq!(stray, 0, "frames in the buffer that no message explains");
    (lost, dup, frames)
}

fn issue12(rt: &tokio::runtime::Runtime, quick: bool) {
    let bursts: &[u64] = if quick {
        &[2_000, 10_000]
    } else {
        &[20_000, 100_000]
    };
    let rates: &[u64] = if quick {
        &[1_000, 5_000, 20_000]
    } else {
        &[1_000, 2_000, 5_000, 10_000, 20_000, 40_000]
    };
    let secs: u64 = if quick { 3 } else { 20 };
    println!(
        "== issue 12 workload: {DEVICES} devices over {CONNECTIONS} connections, QoS 1 JSON through [[mapping]], window {}/connection; load average {}",
        window(),
        load_average()
    );

    // Reference: raw mosquitto pub -> sub, bursts, same generator.
    let mport = free_port();
    let m = mosquitto(mport);
    for &n in bursts {
        let counters = Arc::new(DeviceCounters {
            sent: (0..DEVICES).map(|_| AtomicU64::new(0)).collect(),
            last_ts: (0..DEVICES).map(|_| AtomicU64::new(0)).collect(),
        });
        let t = rt.block_on(async {
            let done = sink(mport, "sensors/+/data", n).await;
            let start = Instant::now();
            run_phase(mport, "raw", n, None, &counters, None).await;
            done.await.expect("sink") - start
        });
        println!(
            "  mosquitto pub->sub burst {n:>7}: delivered in {:>6.0} ms = {:>7.0} msg/s (reference)",
            t.as_secs_f64() * 1e3,
            n as f64 / t.as_secs_f64()
        );
    }
    drop(m);

    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let devices: Vec<String> = (0..DEVICES).map(device_name).collect();
    let config = write_gateway_config(dir.path(), port, &devices, true);
    let (child, startup) = start_gateway(&config, port);
    let pid = child.id();
    println!(
        "  gateway {} (pid {pid}) listening after {} ms",
        gateway_bin(),
        startup.as_millis()
    );
    let probe = RssProbe::start(pid);
    let counters = Arc::new(DeviceCounters {
        sent: (0..DEVICES).map(|_| AtomicU64::new(0)).collect(),
        last_ts: (0..DEVICES).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut peak_rss = 0u64;
    let mut best_sustained = 0u64;
    let diag = diagnostics_port(&config);
    let mut phase = |label: String, total: u64, rate: Option<f64>, deadline: Option<Duration>| {
        let ticks = cpu_ticks(pid);
        let (f0, c0) = commits(diag);
        probe.take_max();
        let r = rt.block_on(run_phase(port, "load", total, rate, &counters, deadline));
        let cpu = (cpu_ticks(pid) - ticks) as f64 / ticks_per_s() / r.drain.as_secs_f64() * 100.0;
        let rss = probe.take_max().max(rss_kib(pid));
        peak_rss = peak_rss.max(rss);
        let (f1, c1) = commits(diag);
        let group = format!(
            "{} commits ({:.0}/s), {:.1} frames/commit",
            c1 - c0,
            (c1 - c0) as f64 / r.drain.as_secs_f64(),
            (f1 - f0) as f64 / (c1 - c0).max(1) as f64
        );
        (label, r, cpu, rss, group)
    };
    for &n in bursts {
        let (label, r, cpu, rss, group) = phase(format!("burst {n}"), n, None, None);
        println!(
            "  {label:<14}: drained in {:>6.0} ms = {:>7.0} msg/s stored+PUBACKed | {group} | gateway CPU {cpu:>4.0}% of a core | RSS max {:.1} MB | load {}",
            r.drain.as_secs_f64() * 1e3,
            r.sent as f64 / r.drain.as_secs_f64(),
            rss as f64 / 1024.0,
            load_average()
        );
    }
    for &rate in rates {
        let total = rate * secs;
        let deadline = Duration::from_secs(secs + 2);
        let (label, r, cpu, rss, group) = phase(
            format!("rate {rate}/s"),
            total,
            Some(rate as f64),
            Some(deadline),
        );
        let sustained = r.acked_in_time == r.sent;
        if sustained {
            best_sustained = best_sustained.max(rate);
        }
        println!(
            "  {label:<14}: {} msgs, publisher done at {:>5.2} s (schedule {secs} s), last PUBACK at {:>5.2} s; stored within schedule + 2 s: {} of {} -> {} | {group} | gateway CPU {cpu:>4.0}% | RSS max {:.1} MB | load {}",
            r.sent,
            r.send_span.as_secs_f64(),
            r.drain.as_secs_f64(),
            r.acked_in_time,
            r.sent,
            if sustained {
                "SUSTAINED"
            } else {
                "not sustained"
            },
            rss as f64 / 1024.0,
            load_average()
        );
    }
    drop(probe);
    let st = status(diag);
    println!(
        "issue 12: chart_memory {} dedup_memory {}",
        st["chart_memory"], st["dedup_memory"]
    );
    stop_gateway(child);
    let sent: Vec<u64> = counters
        .sent
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let total_sent: u64 = sent.iter().sum();
    let (lost, dup, frames) = count_from_buffer(&config, &sent);
    println!(
        "RESULT issue 12: highest fixed rate sustained {best_sustained} msg/s (target >= 30000); {total_sent} messages sent, {frames} frames in the buffer, {lost} lost, {dup} duplicated (target 0 / 0); gateway RSS max {:.1} MB (target <= 24 MB)",
        peak_rss as f64 / 1024.0
    );
}

// ---------------------------------------------------------------- issue 11 ratio

/// Frame `seq` of `device`: one energy channel, `readings` samples 1 s apart.
fn frame_with(device: &DeviceId, seq: u64, readings: usize) -> Frame {
    Frame {
        site: SiteId::new(SITE).expect("valid"),
        device: device.clone(),
        seq,
        boot: 1,
        firmware: "bench".into(),
        base_time_ms: Some(1_764_115_200_000 + seq * 60_000),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: (0..readings)
            .map(|i| Sample {
                channel: 0,
                offset_ms: i as u32 * 1000,
                value: (seq * 1000 + i as u64) as i64,
                quality: Quality::GOOD,
            })
            .collect(),
        signature: None,
    }
}

/// Frame `seq` of `device` with one reading, encoded.
fn bench_frame(device: &DeviceId, seq: u64) -> Vec<u8> {
    binary::encode_frame(&frame_with(device, seq, 1))
}

/// One device per connection; message `i` is frame seq i+1.
fn frame_messages(d: usize, per_device: u64) -> MakeMessage {
    let id = DeviceId::new(&format!("d{d:04}")).expect("valid");
    let up = topic::up_topic(&SiteId::new(SITE).expect("valid"), &id);
    let frames: Vec<Vec<u8>> = (1..=per_device).map(|s| bench_frame(&id, s)).collect();
    Box::new(move |i| (up.clone(), frames[i as usize].clone()))
}

async fn frames_run(port: u16, devices: usize, per_device: u64) -> Duration {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..devices)
        .map(|d| {
            tokio::spawn(publish_conn(
                port,
                format!("d{d:04}"),
                per_device,
                None,
                start,
                frame_messages(d, per_device),
                acked.clone(),
            ))
        })
        .collect();
    let mut last = start;
    for t in tasks {
        last = last.max(t.await.expect("task").last_ack);
    }
    last - start
}

fn issue11(rt: &tokio::runtime::Runtime, quick: bool) {
    let devices = 4;
    let per_device = per_device_11(quick);
    let rounds = if quick { 1 } else { 3 };
    let total = (devices as u64 * per_device) as f64;
    println!(
        "== issue 11 ratio: {devices} devices x {per_device} binary frames, 1 reading per message, QoS 1, window {}; load average {}",
        window(),
        load_average()
    );
    let (mut raws, mut eps, mut cpus) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let mport = free_port();
        let m = mosquitto(mport);
        let raw = rt.block_on(async {
            let done = sink(mport, &format!("mrv/{SITE}/+/up"), total as u64).await;
            let start = Instant::now();
            frames_run(mport, devices, per_device).await;
            done.await.expect("sink") - start
        });
        drop(m);
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let names: Vec<String> = (0..devices).map(|d| format!("d{d:04}")).collect();
        let config = write_gateway_config(dir.path(), port, &names, false);
        let (child, _) = start_gateway(&config, port);
        let pid = child.id();
        let diag = diagnostics_port(&config);
        let ticks = cpu_ticks(pid);
        let ep = rt.block_on(frames_run(port, devices, per_device));
        let cpu = (cpu_ticks(pid) - ticks) as f64 / ticks_per_s() / ep.as_secs_f64() * 100.0;
        let (frames, commits) = commits(diag);
        stop_gateway(child);
        let (r, e) = (total / raw.as_secs_f64(), total / ep.as_secs_f64());
        println!(
            "  round {round}: raw mosquitto pub->sub {r:>7.0} msg/s | endpoint to the durable PUBACK {e:>7.0} msg/s (gateway CPU {cpu:.0}% of a core, {commits} commits, {:.1} frames/commit) | ratio {:.2} | load {}",
            frames as f64 / commits.max(1) as f64,
            e / r,
            load_average()
        );
        raws.push(r);
        eps.push(e);
        cpus.push(cpu);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v[v.len() / 2]
    };
    let (r, e) = (med(raws), med(eps));
    println!(
        "RESULT issue 11: one reading per message, median of {rounds}: raw mosquitto {r:.0} msg/s, endpoint to the durable PUBACK {e:.0} msg/s, ratio {:.2} (target >= 1.5)",
        e / r
    );
}

// ---------------------------------------------------------------- issue 11 RSS

/// Issue 11's RSS figure with this generator: 1M readings buffered
/// (prefilled, 50 readings a frame), then 200 devices on their own
/// connections at 1 Hz for `secs`; RSS sampled ten times a second while
/// they are connected.
fn issue11_rss(rt: &tokio::runtime::Runtime, quick: bool) {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let names: Vec<String> = (0..DEVICES).map(|d| format!("d{d:04}")).collect();
    let config = write_gateway_config(dir.path(), port, &names, false);
    let cfg = mrv_gateway::config::load(&config).expect("config");
    let target: u64 = if quick { 100_000 } else { 1_000_000 };
    let per_frame = 50usize;
    let frames_per_device = target / (DEVICES as u64 * per_frame as u64);
    {
        let buffer = Buffer::open(BufferConfig {
            path: cfg.buffer.path.clone(),
            max_bytes: cfg.buffer.max_bytes,
            cache_bytes: cfg.buffer.cache_bytes,
            keep_delivered: cfg.buffer.keep_delivered,
        })
        .expect("buffer");
        for seq in 1..=frames_per_device {
            let batch = (0..DEVICES)
                .map(|d| {
                    let device = DeviceId::new(&names[d]).expect("valid");
                    let f = frame_with(&device, seq, per_frame);
                    mrv_gateway::buffer::Incoming {
                        frame: f,
                        received_ms: 1_764_115_200_000 + seq * 50_000,
                    }
                })
                .collect();
            buffer.append(batch).expect("append");
        }
    }
    let secs: u64 = if quick { 10 } else { 30 };
    let (child, startup) = start_gateway(&config, port);
    let pid = child.id();
    let probe = RssProbe::start(pid);
    rt.block_on(async {
        let acked = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..DEVICES)
            .map(|d| {
                let device = DeviceId::new(&names[d]).expect("valid");
                let up = topic::up_topic(&SiteId::new(SITE).expect("valid"), &device);
                let first = frames_per_device + 1;
                tokio::spawn(publish_conn(
                    port,
                    names[d].clone(),
                    secs,
                    Some(1.0),
                    start,
                    Box::new(move |i| (up.clone(), bench_frame(&device, first + i))),
                    acked.clone(),
                ))
            })
            .collect();
        for t in tasks {
            t.await.expect("device");
        }
    });
    let rss = probe.take_max();
    drop(probe);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    println!(
        "RESULT issue 11 RSS: {DEVICES} devices at 1 Hz for {secs} s, {} readings buffered: RSS max {:.1} MB while connected (now {:.1}; anonymous {:.1}, file {:.1}), target <= 16 MB; start-up {} ms; load {}",
        frames_per_device * DEVICES as u64 * per_frame as u64,
        rss as f64 / 1024.0,
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        startup.as_millis(),
        load_average()
    );
    stop_gateway(child);
}

fn main() {
    let quick = std::env::var_os("ENDPOINT_LOAD_QUICK").is_some();
    let only = std::env::var("ENDPOINT_LOAD_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "endpoint load bench{}: gateway {}",
        if quick { " (quick)" } else { "" },
        gateway_bin()
    );
    if only.is_empty() || only == "11" {
        issue11(&rt, quick);
    }
    if only.is_empty() || only == "rss" {
        issue11_rss(&rt, quick);
    }
    if only.is_empty() || only == "12" {
        issue12(&rt, quick);
    }
}
