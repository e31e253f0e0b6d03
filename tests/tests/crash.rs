//! Crash safety: the gateway runs as a child process and is killed with
//! SIGKILL at random moments while devices publish, 20 times. After the last
//! restart every frame any gateway instance acked is in the buffer, with no
//! duplicates and no gaps per device.

use mrv_e2e::{TestSite, assert_gap_free, stored_seqs, wait_for_port};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use rand::{Rng, SeedableRng};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CYCLES: usize = 20;

fn spawn_gateway(site: &TestSite) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args(["--log", "warn", "run", "--config"])
        .arg(&site.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway child starts");
    wait_for_port(site.mqtt_port, Duration::from_secs(20));
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_frames_survive_repeated_sigkill() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let site = TestSite::new(4, "");
    let frames = 1200;
    let mut cfg = site.sim_config(site.mqtt_port, 2, Duration::from_millis(4), Some(frames));
    cfg.ack_timeout = Duration::from_millis(800);
    let mut child = spawn_gateway(&site);
    let sim = mrv_firmware::sim::start(cfg)
        .await
        .expect("simulator starts");
    for cycle in 0..CYCLES {
        // Let this instance make progress (acks flow), then kill it at a random moment.
        let before = sim.stats().totals.acks_received;
        let deadline = Instant::now() + Duration::from_secs(20);
        while sim.stats().totals.acks_received == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..250))).await;
        child.kill().expect("SIGKILL the gateway");
        child.wait().expect("reap the gateway");
        let acked: u64 = sim.acked_seqs().values().sum();
        eprintln!("cycle {cycle}: killed; devices hold acks for {acked} frames in total");
        child = spawn_gateway(&site);
    }
    assert!(
        sim.wait_all_acked(Duration::from_secs(120)).await,
        "not all frames acked in the end: {:?}",
        sim.stats().totals
    );
    let acked = sim.acked_seqs();
    sim.stop().await;
    child.kill().expect("SIGKILL the last gateway");
    child.wait().expect("reap");
    let config = site.config();
    let buffer = Buffer::open(BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    })
    .expect("buffer reopens after SIGKILL");
    let stored = stored_seqs(&buffer);
    assert!(acked.values().all(|&s| s == frames), "acked: {acked:?}");
    assert_eq!(assert_gap_free(&stored, &acked), 4 * frames);
    let report = buffer.verify(|_| {}).expect("verify runs");
    assert!(
        report.problems.is_empty(),
        "buffer verify found problems: {:?}",
        report.problems
    );
}
