//! Benchmark: a one-hour report for 200 devices at 1 Hz (720,000 readings).
//!
//! Prints: build time (pure builder, including device signature checks),
//! sign time (RFC 8785 canonical JSON + JWS Ed25519), the same from a real
//! sled buffer through `build_due_reports` (scan, decode, build, sign,
//! store), verify time (`mrv_shared::report::verify_report`: JWS, canonical
//! payload, device registry, Merkle root, 12,000 device signatures, device
//! continuity, aggregates, the calculation recomputed from its bindings), and
//! the report size raw and gzipped. Targets (issues 4 and 10): build + sign
//! <= 2 s, verify <= 2 s, with continuity and bindings checked.
//!
//! Run: `cargo bench -p mrv-gateway --bench report`
//! (`MRV_BENCH_DEVICES=20` for a smaller run; results in docs/BENCHMARKS.md).

use flate2::Compression;
use flate2::write::GzEncoder;
use mrv_gateway::buffer::{Buffer, BufferConfig, Incoming};
use mrv_gateway::clock::ManualClock;
use mrv_gateway::report::builder::{BuildInput, Identity, build};
use mrv_gateway::report::config::{DeviceReportSettings, ReportSection};
use mrv_gateway::report::signer::sign;
use mrv_gateway::report::store::ReportStore;
use mrv_gateway::report::synthetic::{PvSite, pv_calculation, pv_devices, pv_frames, pv_trust};
use mrv_gateway::report::{ReportContext, build_due_reports};
use mrv_shared::ids::SiteId;
use mrv_shared::report::model::{ClockState, GENESIS_PREV_HASH, Period};
use mrv_shared::report::{KeySet, verify_report};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: u64 = 1_764_115_200_000;

/// CPU time (user + system, all threads) this process has used so far, from
/// `/proc/self/stat` (Linux; 10 ms ticks). On a shared machine wall times
/// grow with the load; CPU time does not, and on an idle machine with `n`
/// cores the parallel steps take about CPU time / n of wall time.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| String::from("unknown"))
}

fn main() {
    let devices: usize = std::env::var("MRV_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let site = PvSite {
        devices,
        interval_ms: 1000,
        samples_per_frame: 60,
        wh_per_sample: 2,
        epoch_ms: T0,
    };
    let period = Period {
        start_ms: T0,
        end_ms: T0 + 3_600_000,
    };
    let identity = Identity {
        site: SiteId::new("bench-site").expect("valid"),
        project: String::from("JCM-BENCH"),
        methodology_ref: String::from("TH_AM001 ver01.0"),
        gateway: String::from("gw-bench"),
        kid: String::from("gw-bench"),
    };
    let calcs = [pv_calculation(&site)];
    let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let records = pv_devices(&site);
    let t = Instant::now();
    let frames = pv_frames(&site, &identity.site, period);
    let readings: usize = frames.iter().map(|f| f.frame.samples.len()).sum();
    println!(
        "input: {devices} devices x 1 Hz x 1 h = {readings} readings in {} signed frames (generated in {:.2?})",
        frames.len(),
        t.elapsed()
    );

    println!(
        "machine: {} cores, load average {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let c = cpu();
    let t = Instant::now();
    let report = build(BuildInput {
        identity: &identity,
        period,
        seq: 1,
        prev_hash: String::from(GENESIS_PREV_HASH),
        clock: ClockState {
            source: String::from("ntp"),
            last_sync_ms: None,
            max_skew_ms: 0,
        },
        devices: &records,
        frames: frames.clone(),
        events: vec![],
        calculations: &calcs,
        baselines: BTreeMap::new(),
        awd_start: BTreeMap::new(),
        positions: BTreeMap::new(),
        silent_before: Default::default(),
    })
    .expect("builds");
    let build_time = t.elapsed();
    let build_cpu = cpu() - c;
    let c = cpu();
    let t = Instant::now();
    let signed = sign(&report, "gw-bench", &key).expect("signs");
    let sign_time = t.elapsed();
    let sign_cpu = cpu() - c;
    println!("build (pure, incl. device signature checks): {build_time:.2?} (cpu {build_cpu:.2?})");
    println!("sign (JCS + JWS Ed25519):                    {sign_time:.2?} (cpu {sign_cpu:.2?})");
    println!(
        "build + sign:                                {:.2?} (cpu {:.2?})  (target <= 2 s)",
        build_time + sign_time,
        build_cpu + sign_cpu
    );

    let mut keys = KeySet::new();
    keys.insert("gw-bench", key.verifying_key());
    let trust = pv_trust(&site);
    let c = cpu();
    let t = Instant::now();
    let v = verify_report(&signed.bytes, &keys, &trust).expect("verifies");
    let verify_time = t.elapsed();
    let verify_cpu = cpu() - c;
    assert_eq!(v.report.readings.count as usize, readings);
    println!(
        "verify (JWS, registry, Merkle, device sigs, continuity, aggregates, ER from bindings): {verify_time:.2?} (cpu {verify_cpu:.2?})  (target <= 2 s)"
    );
    // Where verify's time goes: the JWS step (signature, parse, canonical
    // form re-written and compared) and the rest (registry, contents).
    let (c, t) = (cpu(), Instant::now());
    let parsed = mrv_shared::report::verify_jws(&signed.bytes, &keys).expect("verifies");
    let (jws_time, jws_cpu) = (t.elapsed(), cpu() - c);
    let (c, t) = (cpu(), Instant::now());
    trust.check(&parsed.report).expect("registry");
    mrv_shared::report::check_contents(&parsed.report).expect("contents");
    let (contents_time, contents_cpu) = (t.elapsed(), cpu() - c);
    println!(
        "  of which JWS + parse + canonical check: {jws_time:.2?} (cpu {jws_cpu:.2?}), registry + contents: {contents_time:.2?} (cpu {contents_cpu:.2?})"
    );

    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&signed.bytes).expect("gzip");
    let gz = gz.finish().expect("gzip");
    println!(
        "size: {} bytes raw ({:.1} MB), {} bytes gzipped ({:.1} MB), {:.1} bytes/reading raw",
        signed.bytes.len(),
        signed.bytes.len() as f64 / 1e6,
        gz.len(),
        gz.len() as f64 / 1e6,
        signed.bytes.len() as f64 / readings as f64
    );

    // The same hour through the real I/O path: sled buffer -> report store.
    let dir = tempfile::tempdir().expect("tempdir");
    let buffer = Buffer::open(BufferConfig {
        path: dir.path().join("buffer"),
        max_bytes: 4 << 30,
        cache_bytes: 64 << 20,
        keep_delivered: Duration::from_secs(3600),
    })
    .expect("buffer");
    for chunk in frames.chunks(500) {
        buffer
            .append(
                chunk
                    .iter()
                    .map(|f| Incoming {
                        frame: f.frame.clone(),
                        received_ms: f.received_ms,
                    })
                    .collect(),
            )
            .expect("append");
    }
    let mut section = ReportSection::default();
    for d in &records {
        section.devices.insert(
            d.id.to_string(),
            DeviceReportSettings {
                sample_interval_ms: Some(1000),
                counter_modulus: Some(1 << 32),
            },
        );
    }
    let ctx = ReportContext {
        identity: identity.clone(),
        section,
        calculations: calcs.to_vec(),
        devices: records.clone(),
        signing_key: key.clone(),
        buffer,
        store: ReportStore::open(dir.path()).expect("store"),
        clock: Arc::new(ManualClock::new(period.end_ms + 120_000)),
        time_sync: None,
    };
    let t = Instant::now();
    let infos = build_due_reports(&ctx, period.end_ms + 120_000).expect("builds");
    println!(
        "from sled buffer (scan, decode, build, sign, fsync'd store): {:.2?} for {} report(s), {} readings",
        t.elapsed(),
        infos.len(),
        infos.iter().map(|i| i.readings).sum::<u64>()
    );
}
