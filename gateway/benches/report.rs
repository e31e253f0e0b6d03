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
    let t = Instant::now();
    let signed = sign(&report, "gw-bench", &key).expect("signs");
    let sign_time = t.elapsed();
    println!("build (pure, incl. device signature checks): {build_time:.2?}");
    println!("sign (JCS + JWS Ed25519):                    {sign_time:.2?}");
    println!(
        "build + sign:                                {:.2?}  (target <= 2 s)",
        build_time + sign_time
    );

    let mut keys = KeySet::new();
    keys.insert("gw-bench", key.verifying_key());
    let trust = pv_trust(&site);
    let t = Instant::now();
    let v = verify_report(&signed.bytes, &keys, &trust).expect("verifies");
    let verify_time = t.elapsed();
    assert_eq!(v.report.readings.count as usize, readings);
    println!(
        "verify (JWS, registry, Merkle, device sigs, continuity, aggregates, ER from bindings): {verify_time:.2?}  (target <= 2 s)"
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
