//! Injected I/O errors: the real gateway binary runs under libfiu's
//! `fiu-run -x` (Debian `fiu-utils`), simulated devices publish, and
//! fsync, fdatasync, sync_file_range (EIO) and pwrite (EIO, ENOSPC) fail at
//! random while they do. Every failed buffer write must be counted
//! (`mrv_ingest_write_failures_total`) and logged, the gateway must reopen
//! its buffer by itself (`mrv_buffer_reopens_total`, same process, no
//! restart), and afterwards every acked frame is in the buffer exactly once.
//!
//! The failures are switched on with `fiu-ctrl` once the gateway is up and
//! off before it stops, so start-up and the final check are not what is
//! tested. CI runs a short version (4 devices x 150 frames, 2 % per call);
//! the soak: `FIU_FRAMES=1200 FIU_PROBABILITY=0.02 cargo test -p mrv-e2e
//! --test injected_io_errors -- --nocapture`.
//!
//! Found with it: an I/O error inside a sled iterator is returned again at
//! every `next()`, and the diagnostics page skipped errors
//! (`filter_map(Result::ok)`), so `/metrics` spun for ever on a runtime
//! worker and the gateway hung; the buffer's iterators now end after an
//! error.
//!
//! Skipped loudly when `fiu-run` is missing (scripts/install-test-deps.sh
//! installs it).

use mrv_e2e::{KillOnDrop, TestSite, assert_gap_free, stored_seqs, thread_stacks, wait_for_port};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// libfiu failure points and the errno each fails with (libfiu's POSIX
/// wrappers take `failinfo` as the errno). sled writes its log with pwrite
/// and makes it durable with sync_file_range + fsync; the gateway's own
/// files use fdatasync.
const POINTS: [(&str, i32); 4] = [
    ("posix/io/sync/fsync", EIO),
    ("posix/io/sync/fdatasync", EIO),
    ("linux/io/sync_file_range", EIO),
    ("posix/io/rw/pwrite", ENOSPC),
];
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fiu_ctrl(fifo: &Path, pid: u32, command: &str) {
    let st = Command::new("fiu-ctrl")
        .arg("-f")
        .arg(fifo)
        .args(["-c", command])
        .arg(pid.to_string())
        .status()
        .expect("fiu-ctrl runs");
    assert!(st.success(), "fiu-ctrl -c {command:?} failed: {st}");
}

/// The value of a Prometheus counter without labels.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_eio_and_enospc_are_counted_recovered_from_in_process_and_lose_no_acked_frame() {
    if Command::new("fiu-run").arg("-h").output().is_err() {
        eprintln!("SKIPPED: fiu-run not installed (apt-get install fiu-utils)");
        return;
    }
    // reqwest is built without a default rustls provider here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let frames: u64 = env_or("FIU_FRAMES", 150);
    let probability: f64 = env_or("FIU_PROBABILITY", 0.02);
    let site = TestSite::new(4, "");
    let fifo = site.dir.path().join("fiu-ctrl");
    let mut child = KillOnDrop(
        Command::new("fiu-run")
            .arg("-x")
            .arg("-f")
            .arg(&fifo)
            .arg(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
            .args(["--log", "info", "run", "--config"])
            .arg(&site.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fiu-run starts the gateway"),
    );
    let pid = child.0.id();
    // The log: kept for the checks, and the diagnostics address read from it.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.0.stderr.take().expect("piped");
    let lines = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("diagnostics page listening")
                && let Some(a) = line.split("addr=").nth(1)
            {
                let _ = addr_tx.send(a.split_whitespace().next().unwrap_or("").to_string());
            }
            lines.lock().expect("log").push(line);
        }
    });
    let diag = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the gateway logs its diagnostics address");
    wait_for_port(site.mqtt_port, Duration::from_secs(20));
    // A bounded wait: a gateway that hangs must fail the test (with its
    // threads' stacks), not stall it. Generous: an in-process reopen holds
    // the buffer for a while, longer on a loaded CI machine.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let metrics = || async {
        match http.get(format!("http://{diag}/metrics")).send().await {
            Ok(r) => r.text().await.expect("metrics body"),
            Err(e) => panic!(
                "GET /metrics: {e}; the gateway's threads:\n{}",
                thread_stacks(pid)
            ),
        }
    };

    let sim = mrv_firmware::sim::start(site.sim_config(
        site.mqtt_port,
        10,
        Duration::from_millis(5),
        Some(frames),
    ))
    .await
    .expect("simulator starts");
    assert!(
        sim.wait_for(Duration::from_secs(30), |s| s.totals.highest_acked_seq > 8)
            .await,
        "devices get going"
    );
    let started = Instant::now();
    for (name, errno) in POINTS {
        fiu_ctrl(
            &fifo,
            pid,
            &format!("enable_random name={name},probability={probability},failinfo={errno}"),
        );
    }
    // Faults on while the devices produce their frames.
    let producing = Duration::from_millis(50) * frames as u32;
    let deadline = Instant::now() + producing + Duration::from_secs(30);
    loop {
        let failures = counter(&metrics().await, "mrv_ingest_write_failures_total");
        let produced = sim.stats().totals.frames_produced;
        if failures >= 1 && produced >= frames * 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no injected failure hit a buffer write ({failures} failures, {produced} frames produced)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, _) in POINTS {
        fiu_ctrl(&fifo, pid, &format!("disable name={name}"));
    }
    let faulty_for = started.elapsed();
    assert!(
        sim.wait_all_acked(Duration::from_secs(120)).await,
        "not all acked after the faults stopped: {:?}",
        sim.stats().totals
    );
    let acked = sim.acked_seqs();
    let resent = sim.stats().totals.frames_resent;
    sim.stop().await;
    let m = metrics().await;
    let failures = counter(&m, "mrv_ingest_write_failures_total");
    let reopens = counter(&m, "mrv_buffer_reopens_total");
    let refused = counter(&m, "mrv_ingest_refused_unavailable_total");
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the gateway is still the same process"
    );
    assert!(
        failures >= 1 && reopens >= 1,
        "{failures} failures, {reopens} reopens"
    );
    // SIGTERM: a clean stop, then the buffer is read without libfiu.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let stopped = Instant::now();
    while child.0.try_wait().expect("wait").is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "gateway does not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("log reader");
    let log = log.lock().expect("log").clone();
    let logged_failures = log
        .iter()
        .filter(|l| {
            l.contains("buffer write failed; frames are not acked (devices keep them); reopening")
        })
        .count() as u64;
    let logged_reopens = log
        .iter()
        .filter(|l| l.contains("buffer reopened; ingest resumes"))
        .count() as u64;
    assert_eq!(
        logged_failures, failures,
        "each failed write is logged once"
    );
    assert_eq!(logged_reopens, reopens, "each reopen is logged once");
    let c = site.config();
    let b = Buffer::open(BufferConfig {
        path: c.buffer.path.clone(),
        max_bytes: c.buffer.max_bytes,
        cache_bytes: c.buffer.cache_bytes,
        keep_delivered: c.buffer.keep_delivered,
    })
    .expect("buffer opens");
    assert!(acked.values().all(|&s| s == frames), "acked: {acked:?}");
    let stored = assert_gap_free(&stored_seqs(&b), &acked);
    assert_eq!(stored, frames * acked.len() as u64, "stored exactly once");
    let rep = b.verify(|_| {}).expect("verify");
    assert!(rep.is_ok(), "{:?}", rep.problems);
    eprintln!(
        "injected I/O errors (p={probability} per call, {faulty_for:.1?} with faults on): \
         {} frames acked, {stored} stored, 0 lost, 0 duplicated; {failures} failed buffer writes \
         (logged {logged_failures}), {reopens} in-process reopens, {refused} frames refused while \
         reopening, {resent} frames re-sent by devices; same process throughout",
        acked.values().sum::<u64>()
    );
}
