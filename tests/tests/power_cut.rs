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
//! among them. Last, the reference receiver's file archive is cut under
//! uploads: every report it answered 2xx survives, with its receipt, a
//! consistent log and the same log key.
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

mod upload_support;

/// The reference receiver's file archive on the power-cut file system: a
/// chain of reports is uploaded one by one (`PUT`, as a gateway with
/// `batch_size = 1` does) while the power is cut at a random point; the
/// receiver dies with it, the file system reboots with only its durable
/// image, and a new receiver opens the archive without a hand repair. After
/// every cut, every report answered `2xx` is there byte for byte, its
/// receipt from the new receiver proves it is in the log, the new
/// checkpoint is consistent with the newest one a client held, and the
/// upload resumes where the archive's chain ends. At the end the whole chain
/// is stored once, in order, verbatim, and no re-send was taken for an
/// equivocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_report_survives_random_power_cuts_at_the_receiver() {
    use mrv_shared::tlog::checkpoint::Checkpoint;
    use mrv_shared::tlog::note::NoteVerifier;
    use mrv_shared::tlog::receipt::{
        ConsistencyProof, Receipt, check_receipt, verify_consistency_between,
    };
    upload_support::init();
    let seed = env_u64("POWER_CUT_SEED").unwrap_or_else(rand::random);
    let cycles = env_u64("POWER_CUT_CYCLES").unwrap_or(6);
    eprintln!("receiver power-cut seed {seed}, {cycles} cycles");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Some(mut fs) = PowerCutFs::mount(seed ^ 0xa4c1) else {
        return;
    };
    let data = fs.path().join("receiver");
    let total = 12 * cycles as usize + 8;
    let mut chain = upload_support::TestChain::new(2, 10_000, 600_000).unstored();
    chain.extend(total);
    let http = reqwest::Client::new();
    let put = |base: String, i: usize| {
        let http = http.clone();
        let body = chain.reports[i].clone();
        async move {
            let id = report_id(&body);
            let r = http
                .put(format!("{base}v1/reports/{id}"))
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await
                .ok()?;
            let code = r.status().as_u16();
            let v: serde_json::Value = r.json().await.ok()?;
            Some((code, v))
        }
    };
    // Reports answered 2xx so far, the newest checkpoint a client saw, and
    // the log key the first receiver published (a cut must not change it).
    let mut confirmed = 0usize;
    let mut log_key: Option<NoteVerifier> = None;
    let mut newest: Option<Checkpoint> = None;
    let mut cuts = Vec::new();
    for cycle in 0..=cycles {
        let rx = upload_support::start_receiver(&data, chain.keys(), None, None, None).await;
        let base = format!("http://{}/", rx.addr());
        // Everything confirmed before the cut is there, verbatim and logged.
        for (i, bytes) in chain.reports[..confirmed].iter().enumerate() {
            let id = report_id(bytes);
            let got = http
                .get(format!("{base}v1/reports/{id}"))
                .send()
                .await
                .expect("receiver answers");
            assert_eq!(got.status(), 200, "cycle {cycle}: report {} lost", i + 1);
            assert_eq!(
                &got.bytes().await.expect("body")[..],
                &bytes[..],
                "cycle {cycle}: report {} changed",
                i + 1
            );
            let receipt: Receipt = http
                .get(format!("{base}v1/reports/{id}/receipt"))
                .send()
                .await
                .expect("receipt answers")
                .json()
                .await
                .expect("receipt JSON");
            check_receipt(&receipt, Some(bytes), None)
                .unwrap_or_else(|e| panic!("cycle {cycle}: receipt of report {}: {e}", i + 1));
        }
        let note = http
            .get(format!("{base}v1/log/checkpoint"))
            .send()
            .await
            .expect("checkpoint answers")
            .text()
            .await
            .expect("checkpoint");
        let key_text = http
            .get(format!("{base}v1/log/key"))
            .send()
            .await
            .expect("log key answers")
            .text()
            .await
            .expect("log key");
        let key = log_key.get_or_insert_with(|| {
            NoteVerifier::parse(key_text.trim()).expect("a note verifier key")
        });
        assert_eq!(
            key_text.trim(),
            key.to_string(),
            "cycle {cycle}: the log key changed after a power cut"
        );
        let now = Checkpoint::open(&note, key)
            .unwrap_or_else(|e| panic!("cycle {cycle}: checkpoint does not verify: {e}"));
        if let Some(old) = &newest {
            assert!(
                now.size >= old.size,
                "cycle {cycle}: the log shrank from {} to {}",
                old.size,
                now.size
            );
            let proof: ConsistencyProof = http
                .get(format!(
                    "{base}v1/log/consistency?old={}&new={}",
                    old.size, now.size
                ))
                .send()
                .await
                .expect("consistency answers")
                .json()
                .await
                .expect("proof JSON");
            verify_consistency_between(old, &now, &proof).unwrap_or_else(|e| {
                panic!("cycle {cycle}: log after the cut is not consistent with before: {e}")
            });
        }
        newest = Some(now);
        if cycle == cycles {
            // Power stays on: upload the rest.
            for i in confirmed..total {
                let (code, v) = put(base.clone(), i).await.expect("answer");
                assert!(code == 201 || code == 200, "report {}: {code} {v}", i + 1);
            }
            confirmed = total;
            rx.stop().await.expect("receiver stops");
            break;
        }
        let (syncs, writes) = fs.counts();
        let torn = rng.gen_bool(0.5);
        // An accepted report costs about 3 syncs and 2 writes: cut within
        // the next few reports.
        let cut = if rng.gen_bool(0.5) {
            Cut::AfterSync(syncs + rng.gen_range(1..25))
        } else {
            Cut::MidWrite(writes + rng.gen_range(1..16))
        };
        fs.arm(cut, torn);
        // Resume where the archive's chain ends (a gateway asks the chain
        // head; here the first unconfirmed report may already be there).
        let mut i = confirmed;
        while i < total {
            match put(base.clone(), i).await {
                Some((201 | 200, v)) => {
                    let r: Receipt =
                        serde_json::from_value(v["receipt"].clone()).expect("2xx has a receipt");
                    newest = Some(
                        check_receipt(&r, Some(&chain.reports[i]), None)
                            .expect("the receipt of a 2xx verifies"),
                    );
                    confirmed = i + 1;
                    i += 1;
                }
                Some((code, v)) => {
                    assert!(
                        fs.is_off(),
                        "report {}: {code} {v} with the power on",
                        i + 1
                    );
                    break;
                }
                None => break,
            }
            if fs.is_off() {
                break;
            }
        }
        rx.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        fs.reboot().expect("the file system reboots");
        eprintln!(
            "cycle {cycle}: {cut:?} torn={torn}: {}; {confirmed} reports confirmed",
            fs.last_cut()
        );
        cuts.push(fs.last_cut());
    }
    assert_eq!(confirmed, total);
    // The archive holds the whole chain once, verbatim, and flagged nothing.
    let keys = chain.keys();
    let mut c = mrv_shared::report::verify::Chain::new(false);
    let dir = data.join("gateways").join(chain.reports_gateway());
    for (i, r) in chain.reports.iter().enumerate() {
        let stored = std::fs::read(dir.join(format!("{:012}.jws", i + 1))).expect("stored");
        assert_eq!(&stored, r, "seq {} verbatim", i + 1);
        c.push(
            &mrv_shared::report::verify_report(&stored, &keys, &upload_support::synthetic_trust())
                .expect("verifies"),
        )
        .expect("chain continues");
    }
    let jws = std::fs::read_dir(&dir)
        .expect("gateway dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jws"))
        .count();
    assert_eq!(jws, total, "no extra reports");
    assert!(
        !data.join("flags.jsonl").exists(),
        "a re-send after a cut is a duplicate, not an equivocation"
    );
    eprintln!(
        "{} power cuts at the receiver, {total} reports accepted, all stored once",
        cuts.len()
    );
}

/// The `report_id` in a compact JWS's payload.
fn report_id(jws: &[u8]) -> String {
    use base64::Engine as _;
    let text = std::str::from_utf8(jws).expect("ASCII");
    let payload = text.split('.').nth(1).expect("three parts");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON payload");
    v["header"]["report_id"]
        .as_str()
        .expect("report_id")
        .to_string()
}
