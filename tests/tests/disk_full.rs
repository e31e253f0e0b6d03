//! Disk full: the buffer on a small file system of its own (loop-mounted
//! ext4 and tmpfs) that another program fills up.
//!
//! Needs root to mount (CI runs as root); skipped loudly elsewhere.

use mrv_e2e::small_fs::{Kind, SmallFs};
use mrv_gateway::buffer::{AppendOutcome, Buffer, BufferConfig, Incoming, RepairReason};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::Frame;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn config(path: &Path) -> BufferConfig {
    BufferConfig {
        path: path.to_path_buf(),
        max_bytes: u64::MAX,
        cache_bytes: 1 << 20,
        keep_delivered: Duration::from_secs(3600),
    }
}

/// A frame whose values deflate cannot shrink much.
fn frame(device: usize, seq: u64, rng: &mut u64) -> Frame {
    Frame {
        site: SiteId::new("site").expect("id"),
        device: DeviceId::new(&format!("dev-{device}")).expect("id"),
        seq,
        boot: 0,
        firmware: "fw".into(),
        base_time_ms: Some(1_764_115_200_000 + seq * 60_000),
        channels: vec![Channel {
            id: ChannelId::new("power").expect("id"),
            quantity: Quantity::Power,
            kind: ValueKind::Instant,
        }],
        samples: (0..60)
            .map(|i| {
                *rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                Sample {
                    channel: 0,
                    offset_ms: i * 1000,
                    value: (*rng >> 20) as i64,
                    quality: Quality::GOOD,
                }
            })
            .collect(),
        signature: None,
    }
}

/// Appends 4 devices' frames until a write fails; returns what was acked
/// (highest contiguous seq per device, all stored frames being Stored).
fn append_until_enospc(b: &Buffer) -> BTreeMap<DeviceId, u64> {
    let mut acked = BTreeMap::new();
    let mut seq = 0u64;
    let mut rng = 7u64;
    loop {
        seq += 1;
        let batch: Vec<Incoming> = (0..4)
            .map(|d| Incoming {
                frame: frame(d, seq, &mut rng),
                received_ms: 1_764_115_200_000 + seq,
            })
            .collect();
        match b.append(batch) {
            Ok(r) => {
                assert!(r.outcomes.iter().all(|o| *o == AppendOutcome::Stored));
                for (d, ack) in r.acks {
                    acked.insert(d, ack.acked_seq);
                }
            }
            Err(e) => {
                eprintln!("append {seq} failed as the disk filled: {e}");
                return acked;
            }
        }
        assert!(seq < 1_000_000, "the disk never filled");
    }
}

fn check_acked_present(b: &Buffer, acked: &BTreeMap<DeviceId, u64>) {
    let mut stored: BTreeMap<DeviceId, Vec<u64>> = BTreeMap::new();
    for f in b.scan(None) {
        let f = f.expect("readable frame");
        stored.entry(f.frame.device).or_default().push(f.frame.seq);
    }
    for (d, &n) in acked {
        let seqs = stored.get(d).cloned().unwrap_or_default();
        assert!(
            seqs.len() as u64 >= n && seqs.iter().take(n as usize).copied().eq(1..=n),
            "{d}: acked 1..={n}, stored {} frames",
            seqs.len()
        );
    }
    let rep = b.verify(|_| {}).expect("verify");
    assert!(rep.is_ok(), "{:?}", rep.problems);
}

/// The finding: the disk fills, the write fails, a restart while
/// still full fails too (sled leaves an empty `snap.<lsn>.generating`);
/// once space returns the buffer opens with every acked frame, and says
/// what it repaired.
#[test]
fn a_buffer_restarted_while_the_disk_is_full_opens_once_space_returns() {
    for kind in [Kind::Ext4, Kind::Tmpfs] {
        let Some(fs) = SmallFs::mount(kind, 24 << 20) else {
            return;
        };
        let path = fs.path().join("data").join("buffer");
        let b = Buffer::open(config(&path)).expect("open");
        fs.fill(1 << 20);
        let acked = append_until_enospc(&b);
        assert!(acked.values().all(|&n| n > 0), "{acked:?}");
        drop(b);
        // Restarts while the disk is still full (what systemd does).
        let mut failed = 0;
        for _ in 0..3 {
            match Buffer::open(config(&path)) {
                Ok(b) => check_acked_present(&b, &acked),
                Err(e) => {
                    eprintln!("{kind:?}: open while full: {e}");
                    failed += 1;
                }
            }
        }
        let leftovers: Vec<String> = std::fs::read_dir(&path)
            .expect("ls")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".generating"))
            .collect();
        eprintln!("{kind:?}: {failed} of 3 opens failed while full; left behind: {leftovers:?}");
        fs.unfill();
        let b = Buffer::open(config(&path)).expect("opens once space returns");
        check_acked_present(&b, &acked);
        if !leftovers.is_empty() {
            assert!(
                b.repairs()
                    .iter()
                    .any(|r| r.why == RepairReason::UnfinishedSnapshot),
                "{:?}",
                b.repairs()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The whole gateway on a small file system, devices publishing.

use mrv_e2e::{TestSite, assert_gap_free, stored_seqs, wait_until_subscribed};
use mrv_gateway::clock::SystemClock;
use mrv_gateway::ingest::stats::IngestStats;
use mrv_shared::event::EventKind;
use std::sync::Arc;
use std::time::Instant;

const FRAMES: u64 = 400;

/// Waits (polling, bounded) until `f` holds.
async fn until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event_kinds(b: &Buffer) -> Vec<EventKind> {
    b.events_after(None)
        .map(|e| e.expect("event reads").1.kind)
        .collect()
}

fn check_final(site: &TestSite, acked: &BTreeMap<DeviceId, u64>) -> Buffer {
    let c = site.config();
    let b = Buffer::open(BufferConfig {
        path: c.buffer.path.clone(),
        max_bytes: c.buffer.max_bytes,
        cache_bytes: c.buffer.cache_bytes,
        keep_delivered: c.buffer.keep_delivered,
    })
    .expect("buffer opens");
    assert!(acked.values().all(|&s| s == FRAMES), "acked: {acked:?}");
    assert_eq!(
        assert_gap_free(&stored_seqs(&b), acked),
        FRAMES * acked.len() as u64
    );
    let rep = b.verify(|_| {}).expect("verify");
    assert!(rep.is_ok(), "{:?}", rep.problems);
    b
}

/// In-process path, thresholds off: the disk fills up, a buffer write
/// fails, nothing more is acked; once space returns the gateway reopens
/// its buffer by itself and every frame arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_resumes_by_itself_after_a_write_failed_on_a_full_disk() {
    let Some(fs) = SmallFs::mount(Kind::Ext4, 32 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let site = TestSite::with_data_dir(
        4,
        "\n[buffer]\nmin_free_bytes = 0\nwarn_free_bytes = 0\n",
        Some(&data),
    );
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    wait_until_subscribed(&gw).await;
    let sim = mrv_firmware::sim::start(site.sim_config(
        site.mqtt_port,
        10,
        Duration::from_millis(5),
        Some(FRAMES),
    ))
    .await
    .expect("simulator starts");
    assert!(
        sim.wait_for(Duration::from_secs(30), |s| s.totals.highest_acked_seq > 40)
            .await
    );
    fs.fill(0);
    let ingest = gw.state.ingest.clone();
    until("a failed buffer write", Duration::from_secs(60), || {
        IngestStats::get(&ingest.write_failures) > 0
    })
    .await;
    // Nothing is acked while the disk is full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during: u64 = sim.acked_seqs().values().sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.acked_seqs().values().sum::<u64>(), during);
    assert!(
        during < 4 * FRAMES,
        "everything acked before the disk filled"
    );
    fs.unfill();
    assert!(
        sim.wait_all_acked(Duration::from_secs(120)).await,
        "not all acked after space returned: {:?}, acked {:?}, {:?}, {:?}",
        sim.stats().totals,
        sim.acked_seqs(),
        gw.state.ingest,
        gw.state.endpoint
    );
    assert!(IngestStats::get(&ingest.reopens) >= 1);
    let acked = sim.acked_seqs();
    sim.stop().await;
    let kinds = event_kinds(&gw.state.buffer);
    assert!(kinds.contains(&EventKind::BufferReopened), "{kinds:?}");
    gw.shutdown().await;
    check_final(&site, &acked);
}

/// With the thresholds on, the gateway stops taking new frames before the
/// file system is full (devices keep them, `buffer_full` acks), alarms,
/// records events, and takes them again when space returns; no write fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_frames_are_refused_before_the_disk_is_full_and_taken_when_space_returns() {
    let Some(fs) = SmallFs::mount(Kind::Ext4, 32 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let site = TestSite::with_data_dir(
        4,
        "\n[buffer]\nmin_free_bytes = 4194304\nwarn_free_bytes = 8388608\n",
        Some(&data),
    );
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    wait_until_subscribed(&gw).await;
    let sim = mrv_firmware::sim::start(site.sim_config(
        site.mqtt_port,
        10,
        Duration::from_millis(5),
        Some(FRAMES),
    ))
    .await
    .expect("simulator starts");
    assert!(
        sim.wait_for(Duration::from_secs(30), |s| s.totals.highest_acked_seq > 40)
            .await
    );
    let disk = gw.state.disk.clone();
    fs.fill(6 << 20);
    until("the disk-space alarm", Duration::from_secs(20), || {
        disk.get().level == mrv_gateway::free_space::Level::Low
    })
    .await;
    fs.fill(2 << 20);
    until("new frames refused", Duration::from_secs(20), || {
        disk.get().level == mrv_gateway::free_space::Level::Critical
    })
    .await;
    let buffer = gw.state.buffer.clone();
    assert!(buffer.stats().space_low);
    let ingest = gw.state.ingest.clone();
    until("a refused frame", Duration::from_secs(20), || {
        IngestStats::get(&ingest.refused_buffer_full) > 0
    })
    .await;
    let during: u64 = sim.acked_seqs().values().sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.acked_seqs().values().sum::<u64>(), during);
    fs.unfill();
    assert!(
        sim.wait_all_acked(Duration::from_secs(120)).await,
        "not all acked after space returned: {:?}",
        sim.stats().totals
    );
    assert_eq!(IngestStats::get(&ingest.write_failures), 0);
    let acked = sim.acked_seqs();
    sim.stop().await;
    let kinds = event_kinds(&buffer);
    for k in [
        EventKind::DiskSpaceLow,
        EventKind::DiskSpaceCritical,
        EventKind::DiskSpaceRecovered,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    drop(buffer);
    gw.shutdown().await;
    check_final(&site, &acked);
}

/// systemd path: the gateway process dies (SIGKILL) while the disk is full;
/// every restart fails while it stays full (and may leave sled's unfinished
/// snapshot behind); once space returns the next restart works without a
/// hand repair and every acked frame is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_while_the_disk_is_full_fail_until_space_returns_then_work() {
    use std::process::{Command, Stdio};
    let Some(fs) = SmallFs::mount(Kind::Tmpfs, 32 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let site = TestSite::with_data_dir(
        4,
        "\n[buffer]\nmin_free_bytes = 0\nwarn_free_bytes = 0\n",
        Some(&data),
    );
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
            .env("RUST_BACKTRACE", "0")
            .args(["--log", "warn,rumqttd=off", "run", "--config"])
            .arg(&site.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gateway child starts")
    };
    let mut child = spawn();
    mrv_e2e::wait_for_port(site.mqtt_port, Duration::from_secs(20));
    let sim = mrv_firmware::sim::start(site.sim_config(
        site.mqtt_port,
        10,
        Duration::from_millis(5),
        Some(FRAMES),
    ))
    .await
    .expect("simulator starts");
    assert!(
        sim.wait_for(Duration::from_secs(30), |s| s.totals.highest_acked_seq > 40)
            .await
    );
    fs.fill(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let mut failed = 0;
    for _ in 0..3 {
        let status = spawn().wait().expect("gateway exits");
        assert!(!status.success(), "a gateway cannot start on a full disk");
        failed += 1;
    }
    let left: Vec<String> = std::fs::read_dir(site.buffer_dir())
        .expect("ls")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".generating"))
        .collect();
    eprintln!("{failed} restarts failed on the full disk; left behind: {left:?}");
    fs.unfill();
    let mut child = spawn();
    mrv_e2e::wait_for_port(site.mqtt_port, Duration::from_secs(20));
    assert!(
        sim.wait_all_acked(Duration::from_secs(120)).await,
        "not all acked after the restart: {:?}",
        sim.stats().totals
    );
    let acked = sim.acked_seqs();
    sim.stop().await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let b = check_final(&site, &acked);
    if !left.is_empty() {
        let kinds = event_kinds(&b);
        assert!(kinds.contains(&EventKind::BufferRepaired), "{kinds:?}");
    }
}
