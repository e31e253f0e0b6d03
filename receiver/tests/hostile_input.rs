//! The receiver (the real binary, so its memory is its own) under hostile
//! clients: slowloris connections, a 1 GB body, a gzip bomb, and many
//! thousands of connections at once. Each time: bounded memory, a clear
//! answer where one is due, and a real gateway still served.
//!
//! `HOSTILE_CONNECTIONS=10000` for the full many-connections run (CI runs
//! 2,000); run with `--nocapture` to see the figures.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upload_support::{TestChain, init};

struct Receiver {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(chain: &TestChain, extra: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("gw.jwk");
        std::fs::write(&key, serde_json::to_vec(&chain.jwk()).expect("JWK")).expect("write");
        let registry = dir.path().join("registry.json");
        std::fs::write(
            &registry,
            serde_json::to_vec(&upload_support::synthetic_registry()).expect("registry JSON"),
        )
        .expect("write registry");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mrv-receiver"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--gateway-key")
            .arg(&key)
            .arg("--device-registry")
            .arg(&registry)
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mrv-receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        Receiver {
            child,
            addr,
            _dir: dir,
        }
    }

    /// (current, peak) resident memory, MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let s =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let kib = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uploads `chain` report by report; each must be stored, within `within`.
async fn gateway_is_served(addr: &str, chain: &TestChain, within: Duration) {
    let http = reqwest::Client::builder()
        .timeout(within)
        .build()
        .expect("client");
    let t = Instant::now();
    for (i, r) in chain.reports.iter().enumerate() {
        let resp = http
            .put(format!("http://{addr}/v1/reports/gw-test-{:012}", i + 1))
            .body(r.clone())
            .send()
            .await
            .expect("the gateway gets an answer");
        assert!(
            resp.status().is_success(),
            "report {} answered {}",
            i + 1,
            resp.status()
        );
    }
    println!(
        "  gateway upload of {} reports: {:?}",
        chain.reports.len(),
        t.elapsed()
    );
}

/// Reads an HTTP status line from `s` within `within`.
async fn status_of(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while !got.windows(2).any(|w| w == b"\r\n") {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

fn chain() -> TestChain {
    let mut c = TestChain::new(1, 60_000, 600_000).unstored();
    c.extend(3);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_shed_and_a_gateway_is_still_served() {
    init();
    let chain = chain();
    let rx = Receiver::start(
        &chain,
        &["--max-connections", "100", "--header-timeout-secs", "3"],
    );
    let mut socks = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&rx.addr)).await
        {
            let _ = s
                .write_all(b"PUT /v1/reports/x HTTP/1.1\r\nHost: x\r\n")
                .await;
            socks.push(s);
        }
    }
    // Keep dribbling one header byte at a time while the gateway uploads.
    let dribble = tokio::spawn(async move {
        let mut closed = 0usize;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for s in &mut socks {
                let _ = s.write_all(b"X").await;
            }
        }
        for s in &mut socks {
            let mut b = [0u8; 64];
            if matches!(
                tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            ) {
                closed += 1;
            }
        }
        (socks.len(), closed)
    });
    gateway_is_served(&rx.addr, &chain, Duration::from_secs(10)).await;
    let (opened, closed) = dribble.await.expect("dribble");
    let (rss, peak) = rx.rss_mib();
    println!(
        "  slowloris: {opened} connections, {closed} closed by the receiver; RSS {rss:.1} MiB, peak {peak:.1} MiB"
    );
    assert!(
        closed * 10 >= opened * 9,
        "the receiver shed them: {closed} of {opened}"
    );
    assert!(peak < 100.0, "bounded memory: peak {peak:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gb_body_is_refused_before_or_while_reading_with_bounded_memory() {
    init();
    let chain = chain();
    let rx = Receiver::start(&chain, &[]);
    // Declared: refused from the head alone.
    let mut s = TcpStream::connect(&rx.addr).await.expect("connect");
    s.write_all(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        .await
        .expect("head");
    s.write_all(&[0u8; 65536]).await.expect("some body");
    assert_eq!(status_of(&mut s, Duration::from_secs(5)).await, Some(413));
    // Chunked, no length: cut at the limit.
    let mut s = TcpStream::connect(&rx.addr).await.expect("connect");
    s.write_all(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0u64;
        while sent < 1 << 30 {
            if wr.write_all(b"100000\r\n").await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                break;
            }
            sent += 1 << 20;
        }
        sent
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    drop(rd);
    let sent = writer.await.expect("writer");
    let (rss, peak) = rx.rss_mib();
    println!(
        "  1 GB chunked body: answered {:?} after {} MiB sent; RSS {rss:.1} MiB, peak {peak:.1} MiB",
        head.lines().next(),
        sent >> 20
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(sent < 1 << 30, "the receiver stopped reading before 1 GB");
    assert!(peak < 250.0, "bounded memory: peak {peak:.1} MiB");
    gateway_is_served(&rx.addr, &chain, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_cut_at_the_decoded_limit() {
    init();
    let chain = chain();
    let rx = Receiver::start(&chain, &[]);
    // 1 GiB of one "report" line, gzip: about 1 MB on the wire.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'e'; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&zeros).expect("gzip");
    }
    let bomb = gz.finish().expect("gzip");
    let http = reqwest::Client::new();
    let t = Instant::now();
    let r = http
        .post(format!("http://{}/v1/reports", rx.addr))
        .header("Content-Encoding", "gzip")
        .body(bomb.clone())
        .send()
        .await
        .expect("answer");
    let code = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("JSON");
    let (rss, peak) = rx.rss_mib();
    println!(
        "  gzip bomb: {} KiB -> 1 GiB decoded; answered {code} {} in {:?}; RSS {rss:.1} MiB, peak {peak:.1} MiB",
        bomb.len() >> 10,
        body["reason"],
        t.elapsed()
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert!(peak < 250.0, "bounded memory: peak {peak:.1} MiB");
    gateway_is_served(&rx.addr, &chain, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_at_once_leave_memory_bounded_and_a_gateway_served() {
    init();
    let n: usize = std::env::var("HOSTILE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let chain = chain();
    let rx = Receiver::start(&chain, &["--header-timeout-secs", "30"]);
    let before = rx.rss_mib().0;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let addr = rx.addr.clone();
    for i in 0..n {
        let addr = addr.clone();
        set.spawn(async move {
            // Half idle, half with a request head that never ends.
            let mut s = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(&addr))
                .await
                .ok()?
                .ok()?;
            if i % 2 == 1 {
                let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").await;
            }
            Some(s)
        });
    }
    let mut socks = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Some(s) = r.expect("connect task") {
            socks.push(s);
        }
    }
    let opened = socks.len();
    let (rss, peak) = rx.rss_mib();
    println!(
        "  {n} connections: {opened} opened in {:?}; receiver RSS {before:.1} -> {rss:.1} MiB (peak {peak:.1})",
        t.elapsed()
    );
    assert!(
        opened * 10 >= n * 9,
        "most connections were accepted by the kernel: {opened}"
    );
    gateway_is_served(&rx.addr, &chain, Duration::from_secs(20)).await;
    let (rss, peak) = rx.rss_mib();
    println!("  after the gateway's upload: RSS {rss:.1} MiB (peak {peak:.1})");
    assert!(peak < 300.0, "bounded memory: peak {peak:.1} MiB");
    drop(socks);
    let _ = Path::new(".");
}
