//! Power cuts: the gateway's data dir on a FUSE file system that keeps
//! only what was fsynced (`mrv_e2e::power_cut_fs`), the power cut at random
//! points (after the Nth sync, in the middle of a write, torn write-back of
//! unsynced blocks and directories) while devices publish; after each cut
//! the gateway process is killed, the file system "reboots" with only its
//! durable image, and the gateway starts again on it without a hand repair.
//! At the end every frame any gateway instance acked is stored exactly
//! once. The report store gets the same treatment in-process: every report
//! whose `put` returned is there, byte for byte, after every cut. And fsync
//! fails at random while the gateway runs, each failure losing the file's
//! unsynced blocks as Linux does after a write-back error: nothing acked is
//! among them.
//!
//! `POWER_CUT_CYCLES` (default 6) and `POWER_CUT_SEED` replay or lengthen
//! a run (the soak in docs/RELIABILITY.md uses 60 cycles).

use mrv_e2e::power_cut_fs::{Cut, PowerCutFs};
use mrv_e2e::{KillOnDrop, TestSite, assert_gap_free, stored_seqs, wait_for_port};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Killed and reaped when dropped: a failing test leaves no gateway behind.
fn spawn_gateway(site: &TestSite) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .env("RUST_BACKTRACE", "0")
        .args(["--log", "error,rumqttd=off,sled=off", "run", "--config"])
        .arg(&site.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway child starts");
    let child = KillOnDrop(child);
    wait_for_port(site.mqtt_port, Duration::from_secs(30));
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_frames_survive_random_power_cuts() {
    let seed = env_u64("POWER_CUT_SEED").unwrap_or_else(rand::random);
    let cycles = env_u64("POWER_CUT_CYCLES").unwrap_or(6);
    eprintln!("power-cut test seed {seed}, {cycles} cycles (POWER_CUT_SEED / POWER_CUT_CYCLES)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Some(mut fs) = PowerCutFs::mount(seed) else {
        return;
    };
    let site = TestSite::with_data_dir(4, "", Some(&fs.path().join("data")));
    let frames = 150 * cycles.max(2);
    let mut cfg = site.sim_config(site.mqtt_port, 2, Duration::from_millis(4), Some(frames));
    cfg.ack_timeout = Duration::from_millis(800);
    let mut child = spawn_gateway(&site);
    let sim = mrv_firmware::sim::start(cfg)
        .await
        .expect("simulator starts");
    let mut cuts = Vec::new();
    for cycle in 0..cycles {
        // Let this instance make progress, then cut at a random point ahead.
        let before = sim.stats().totals.acks_received;
        let deadline = Instant::now() + Duration::from_secs(30);
        while sim.stats().totals.acks_received == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let torn = rng.gen_bool(0.5);
        let (syncs, writes) = fs.counts();
        let cut = if rng.gen_bool(0.5) {
            Cut::AfterSync(syncs + rng.gen_range(1..60))
        } else {
            Cut::MidWrite(writes + rng.gen_range(1..200))
        };
        fs.arm(cut, torn);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fs.is_off() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The process dies with the power.
        child.kill();
        fs.reboot().expect("the file system reboots");
        let acked: u64 = sim.acked_seqs().values().sum();
        eprintln!(
            "cycle {cycle}: {cut:?} torn={torn}: {}; devices hold acks for {acked} frames",
            fs.last_cut()
        );
        cuts.push(fs.last_cut());
        child = spawn_gateway(&site);
    }
    assert!(
        sim.wait_all_acked(Duration::from_secs(180)).await,
        "not all frames acked in the end: {:?}",
        sim.stats().totals
    );
    let acked = sim.acked_seqs();
    sim.stop().await;
    child.kill();
    let config = site.config();
    let buffer = Buffer::open(BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    })
    .expect("buffer opens after the last cut");
    assert!(acked.values().all(|&s| s == frames), "acked: {acked:?}");
    assert_eq!(assert_gap_free(&stored_seqs(&buffer), &acked), 4 * frames);
    let report = buffer.verify(|_| {}).expect("verify runs");
    assert!(report.is_ok(), "buffer verify: {:?}", report.problems);
    eprintln!(
        "{} power cuts, {} frames acked, all stored once; repairs at the last open: {:?}",
        cuts.len(),
        4 * frames,
        buffer.repairs()
    );
}

/// fsync fails (EIO) at random under load, and each failure loses the
/// file's unsynced blocks as Linux does after a write-back error (a later
/// fsync succeeds without writing them): the gateway reopens its buffer
/// in-process and acks nothing those blocks held. After the faults stop and
/// every frame is acked, the power is cut: every acked frame is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acked_is_lost_when_fsync_fails_and_the_kernel_drops_the_unsynced_pages() {
    let seed = env_u64("POWER_CUT_SEED").unwrap_or_else(rand::random);
    let probability = 0.05;
    eprintln!("failed-fsync test seed {seed}, p={probability} per file sync");
    let Some(mut fs) = PowerCutFs::mount(seed) else {
        return;
    };
    let site = TestSite::with_data_dir(4, "", Some(&fs.path().join("data")));
    let frames = 300;
    let mut cfg = site.sim_config(site.mqtt_port, 2, Duration::from_millis(4), Some(frames));
    cfg.ack_timeout = Duration::from_millis(800);
    let mut child = spawn_gateway(&site);
    let sim = mrv_firmware::sim::start(cfg)
        .await
        .expect("simulator starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().totals.acks_received == 0 {
        assert!(Instant::now() < deadline, "devices get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fs.fail_syncs(probability);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs.failed_syncs().1 < 5 || sim.stats().totals.frames_produced < 4 * frames {
        assert!(
            Instant::now() < deadline,
            "{:?} failed syncs / lost blocks, {} frames produced",
            fs.failed_syncs(),
            sim.stats().totals.frames_produced
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fs.fail_syncs(0.0);
    let (failed, lost_blocks) = fs.failed_syncs();
    assert!(
        sim.wait_all_acked(Duration::from_secs(120)).await,
        "not all frames acked after the faults stopped: {:?}",
        sim.stats().totals
    );
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the gateway recovered in-process (no restart)"
    );
    let acked = sim.acked_seqs();
    let resent = sim.stats().totals.frames_resent;
    sim.stop().await;
    child.kill();
    fs.reboot()
        .expect("the power is cut, the file system reboots");
    let config = site.config();
    let buffer = Buffer::open(BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    })
    .expect("buffer opens after the cut");
    assert!(acked.values().all(|&s| s == frames), "acked: {acked:?}");
    assert_eq!(assert_gap_free(&stored_seqs(&buffer), &acked), 4 * frames);
    let report = buffer.verify(|_| {}).expect("verify runs");
    assert!(report.is_ok(), "buffer verify: {:?}", report.problems);
    eprintln!(
        "{failed} failed fsyncs losing {lost_blocks} unsynced blocks, {} frames acked, all stored once after a power cut; {resent} frames re-sent by devices; same gateway process throughout",
        4 * frames
    );
}

/// The report store: reports put one after the other while the power is
/// cut at random syncs; after each reboot every `put` that returned is
/// there byte for byte, nothing else but possibly the one in flight, and
/// the store opens without a hand repair (no leftover temporary file).
#[test]
fn every_stored_report_survives_random_power_cuts() {
    use mrv_gateway::report::store::{ReportMeta, ReportStore};
    use mrv_shared::report::model::Period;
    let seed = env_u64("POWER_CUT_SEED").unwrap_or_else(rand::random);
    eprintln!("report power-cut seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Some(mut fs) = PowerCutFs::mount(seed ^ 0x5eed) else {
        return;
    };
    let data = fs.path().join("data");
    let body = |seq: u64| {
        format!("report {seq} ")
            .repeat(300 + seq as usize % 7)
            .into_bytes()
    };
    let mut confirmed = 0u64;
    for cycle in 0..20 {
        let store = ReportStore::open(&data).expect("the store opens after a cut");
        let head = store.head().map_or(0, |h| h.seq);
        assert!(
            head >= confirmed,
            "cycle {cycle}: head {head} < confirmed {confirmed}"
        );
        assert!(
            head <= confirmed + 1,
            "cycle {cycle}: head {head} beyond the one in flight"
        );
        for seq in 1..=head {
            assert_eq!(
                store.read(seq).expect("stored report"),
                body(seq),
                "report {seq}"
            );
        }
        confirmed = head;
        let (syncs, _) = fs.counts();
        fs.arm(
            Cut::AfterSync(syncs + rng.gen_range(1..12)),
            rng.gen_bool(0.5),
        );
        let mut seq = head;
        loop {
            seq += 1;
            let meta = ReportMeta {
                seq,
                report_id: format!("r-{seq}"),
                hash: String::new(),
                period: Period {
                    start_ms: seq * 1000,
                    end_ms: seq * 1000 + 1000,
                },
                cursor: None,
                last_event_id: None,
                readings: 0,
                er: Default::default(),
                next_baselines: None,
            };
            match store.put(&meta, &body(seq)) {
                Ok(()) => confirmed = seq,
                Err(_) => break,
            }
        }
        drop(store);
        fs.reboot().expect("reboot");
        let left: Vec<String> = std::fs::read_dir(data.join("reports"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".tmp"))
                    .collect()
            })
            .unwrap_or_default();
        eprintln!(
            "cycle {cycle}: {}; confirmed up to {confirmed}; tmp files {left:?}",
            fs.last_cut()
        );
    }
    let store = ReportStore::open(&data).expect("final open");
    assert!(store.head().map_or(0, |h| h.seq) >= confirmed);
    assert!(confirmed > 10, "too few reports stored: {confirmed}");
}
