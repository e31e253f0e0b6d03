//! Diagnostics benchmark (harness = false; prints figures).
//!
//! A site of `DEVICES` devices x 4 channels with one hour of 1 Hz values in
//! the live store (3600 points per channel; frames of 10 samples per
//! channel, as a 10 s reporting device sends). Measures:
//! - live-store intake (frames/s recorded, what the writer's broadcast feeds);
//! - building every device row (`/api/devices`) and the overview page (`/`);
//! - rendering one device page with its four one-hour charts;
//! - `/metrics` text;
//! - the store's memory (points x size) for the hour.
//!
//! Run: `cargo bench -p mrv-gateway --bench diagnostics` (add `-- <devices>`).

use mrv_gateway::buffer::{Buffer, BufferConfig, Incoming};
use mrv_gateway::diagnostics::api::{self, Inputs};
use mrv_gateway::diagnostics::config::ValidDiagnosticsConfig;
use mrv_gateway::diagnostics::state::{LiveStore, Point, Range};
use mrv_gateway::diagnostics::{metrics, page};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::Frame;
use std::path::Path;
use std::time::{Duration, Instant};

const T0: u64 = 1_764_115_200_000;

fn frame(device: &DeviceId, seq: u64, base_ms: u64) -> Incoming {
    let channels = [
        ("energy", Quantity::Energy, ValueKind::Counter),
        ("power", Quantity::Power, ValueKind::Instant),
        ("voltage", Quantity::Voltage, ValueKind::Instant),
        ("temp", Quantity::Temperature, ValueKind::Instant),
    ];
    let mut samples = Vec::new();
    for i in 0..10u32 {
        for c in 0..4u8 {
            samples.push(Sample {
                channel: c,
                offset_ms: i * 1000,
                value: (seq as i64 * 10 + i64::from(i)) * (i64::from(c) + 1) % 100_000,
                quality: Quality::GOOD,
            });
        }
    }
    Incoming {
        frame: Frame {
            site: SiteId::new("bench").expect("id"),
            device: device.clone(),
            seq,
            boot: 1,
            firmware: "bench".into(),
            base_time_ms: Some(base_ms),
            channels: channels
                .iter()
                .map(|(id, q, k)| Channel {
                    id: ChannelId::new(id).expect("id"),
                    quantity: *q,
                    kind: *k,
                })
                .collect(),
            samples,
            signature: Some([7; 64]),
        },
        received_ms: base_ms + 10_000,
    }
}

fn per_op(total: Duration, n: u32) -> String {
    format!("{:.3} ms", total.as_secs_f64() * 1000.0 / f64::from(n))
}

fn main() {
    let devices: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let frames_per_device = 360u64; // one hour of 10 s frames
    let ids: Vec<DeviceId> = (0..devices)
        .map(|i| DeviceId::new(&format!("dev-{i:03}")).expect("id"))
        .collect();
    let now = T0 + frames_per_device * 10_000 + 10_000;

    // Intake.
    let mut live = LiveStore::new(3_600_000);
    let frames: Vec<Incoming> = (0..frames_per_device)
        .flat_map(|s| ids.iter().map(move |d| frame(d, s + 1, T0 + s * 10_000)))
        .collect();
    let t = Instant::now();
    for f in &frames {
        live.record(f, f.received_ms);
    }
    let intake = t.elapsed();
    let points: usize = ids
        .iter()
        .map(|d| {
            live.channels(d)
                .iter()
                .map(|(_, s)| s.points.len())
                .sum::<usize>()
        })
        .sum();

    // State a view is built from.
    let dir = tempfile::tempdir().expect("tempdir");
    let buffer = Buffer::open(BufferConfig {
        path: dir.path().join("buffer"),
        max_bytes: 1 << 30,
        cache_bytes: 4 << 20,
        keep_delivered: Duration::from_secs(86_400),
    })
    .expect("buffer");
    let stats = buffer.stats();
    let config = mrv_gateway::config::parse(
        "[site]\nid = \"bench\"\n[gateway]\nid = \"gw\"\ndata_dir = \"data\"\n",
        Path::new("/tmp/bench.toml"),
    )
    .expect("config");
    let diag = ValidDiagnosticsConfig::loopback("127.0.0.1:0".parse().expect("addr"));
    let inputs = Inputs {
        config: &config,
        diag: &diag,
        buffer: &stats,
        buffer_devices: &[],
        live: &live,
        quarantine: &[],
        reject_counts: &std::collections::BTreeMap::new(),
        modbus: None,
        now_ms: now,
    };

    let n = 20;
    let t = Instant::now();
    let mut rows = Vec::new();
    for _ in 0..n {
        rows = api::device_rows(&inputs);
    }
    let rows_time = t.elapsed();
    let status: api::StatusView = serde_json::from_value(serde_json::json!({
        "site": {"id": "bench", "name": "", "project": "", "methodology": ""},
        "gateway": "gw", "version": "0", "now_ms": now, "uptime_s": 3600, "auth": false,
        "devices": api::device_counts(&rows),
        "buffer": api::buffer_view(&stats, now),
        "ingest": api::IngestView::default(),
        "uploads": api::UploadsView::default(),
        "modbus": null
    }))
    .expect("status");
    let t = Instant::now();
    let mut html_len = 0;
    for _ in 0..n {
        html_len = page::overview(&status, &rows, &[]).len();
    }
    let overview_time = t.elapsed();
    let t = Instant::now();
    let mut json_len = 0;
    for _ in 0..n {
        json_len = serde_json::to_vec(&rows).expect("json").len();
    }
    let json_time = t.elapsed();
    let t = Instant::now();
    let mut dev_len = 0;
    for _ in 0..n {
        let d = api::device_detail(&inputs, &ids[0], Range::Hour);
        dev_len = page::device_page("bench", &d, Range::Hour).len();
    }
    let device_time = t.elapsed();
    let t = Instant::now();
    let mut week_len = 0;
    for _ in 0..n {
        let d = api::device_detail(&inputs, &ids[0], Range::Week);
        week_len = page::device_page("bench", &d, Range::Week).len();
    }
    let week_time = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        let _ = metrics::render(&status, &rows);
    }
    let metrics_time = t.elapsed();

    println!("diagnostics bench: {devices} devices x 4 channels, one hour at 1 Hz");
    println!(
        "  live-store intake      {:.0} frames/s ({} frames of 40 samples in {:.2} s)",
        frames.len() as f64 / intake.as_secs_f64(),
        frames.len(),
        intake.as_secs_f64()
    );
    println!(
        "  points kept            {points} ({:.1} MiB of points at {} B each)",
        (points * std::mem::size_of::<Point>()) as f64 / 1_048_576.0,
        std::mem::size_of::<Point>()
    );
    println!("  device rows (all)      {} per call", per_op(rows_time, n));
    println!(
        "  /api/devices JSON      {} per call ({json_len} bytes)",
        per_op(json_time, n)
    );
    println!(
        "  overview page          {} per call ({html_len} bytes)",
        per_op(overview_time, n)
    );
    println!(
        "  device page, 4 charts  {} per call ({dev_len} bytes)",
        per_op(device_time, n)
    );
    println!(
        "  device page, 7 d       {} per call ({week_len} bytes)",
        per_op(week_time, n)
    );
    println!(
        "  /metrics               {} per call",
        per_op(metrics_time, n)
    );
}
