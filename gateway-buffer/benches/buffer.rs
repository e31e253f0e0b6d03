//! Buffer benchmark (harness = false): durable batched ingest rate, disk
//! bytes per buffered reading, open time with the readings buffered, and
//! RSS, for two frame shapes:
//!
//! - `realistic`: signed frames of 4 channels x 15 samples (60 readings, a
//!   15-minute frame of a PV meter node), 10 devices, 50 frames per append;
//! - `single`: unsigned frames of one reading each, 10 devices, 1000 frames
//!   per append (the worst case for per-frame overhead);
//! - `small-appends`: realistic frames, one frame per append (every frame
//!   pays a flush).
//!
//! Each scenario runs in a child process (the bench re-executes itself) so
//! its RSS is its own. Usage:
//! `cargo bench -p mrv-gateway-buffer --bench buffer [-- <readings>]` (default 1,000,000).
//! Targets from the issue: >= 200,000 readings/s durable, <= 64 disk bytes
//! per reading, open <= 300 ms with 1M readings buffered.

use mrv_gateway_buffer::{Buffer, BufferConfig, Incoming};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::Frame;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CACHE_BYTES: u64 = 4 << 20;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("--ingest") => {
            let readings = args.get(2).and_then(|s| s.parse().ok()).expect("count");
            ingest(&args[1], readings, Path::new(&args[3]));
            return;
        }
        Some("--open") => {
            open_and_scan(Path::new(&args[1]));
            return;
        }
        _ => {}
    }
    let readings: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let exe = std::env::current_exe().expect("own path");
    println!(
        "buffer bench: {readings} readings per scenario, cache {} MiB, {} CPUs",
        CACHE_BYTES >> 20,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for name in ["realistic", "single", "small-appends"] {
        let n = if name == "small-appends" {
            readings / 10
        } else {
            readings
        };
        let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
            .expect("tempdir");
        let path = dir.path().join("buffer");
        let path_s = path.to_str().expect("utf-8 temp path");
        for args in [
            vec!["--ingest", name, &n.to_string(), path_s],
            vec!["--open", path_s],
        ] {
            let status = Command::new(&exe).args(&args).status().expect("run child");
            assert!(status.success(), "{args:?} failed");
        }
    }
}

/// Deterministic noise (splitmix64) so values and signatures look like
/// real data to the compressor.
fn noise(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn frame(device: usize, seq: u64, channels: usize, per_channel: usize, signed: bool) -> Frame {
    let quantities = [
        Quantity::Energy,
        Quantity::Power,
        Quantity::Voltage,
        Quantity::Temperature,
    ];
    let names = ["energy", "power", "voltage", "temp"];
    let mut samples = Vec::with_capacity(channels * per_channel);
    for i in 0..per_channel {
        for c in 0..channels {
            let t = seq * per_channel as u64 + i as u64;
            let r = noise((device as u64) << 48 ^ t << 4 ^ c as u64);
            let value = match c {
                // Energy register (Wh): grows by 0..=120 Wh a minute.
                0 => 12_345_678 + t as i64 * 60 + (r % 61) as i64,
                // Power (W), voltage (mV), temperature (0.01 degC): noisy.
                1 => 2_000 + (r % 3_000) as i64,
                2 => 228_000 + (r % 6_000) as i64,
                _ => 2_500 + (r % 1_500) as i64,
            };
            samples.push(Sample {
                channel: c as u8,
                offset_ms: (i as u32) * 60_000,
                value,
                quality: Quality::GOOD,
            });
        }
    }
    let signature = signed.then(|| {
        let mut sig = [0u8; 64];
        for (i, chunk) in sig.chunks_mut(8).enumerate() {
            chunk
                .copy_from_slice(&noise(seq << 20 ^ (device as u64) << 8 ^ i as u64).to_le_bytes());
        }
        sig
    });
    Frame {
        site: SiteId::new("kh-solar-01").expect("valid id"),
        device: DeviceId::new(&format!("pv-meter-{device:02}")).expect("valid id"),
        seq,
        boot: 3,
        firmware: "mrv-fw 0.1.0".into(),
        base_time_ms: Some(1_764_115_200_000 + seq * 900_000),
        channels: (0..channels)
            .map(|c| Channel {
                id: ChannelId::new(names[c]).expect("valid id"),
                quantity: quantities[c],
                kind: if c == 0 {
                    ValueKind::Counter
                } else {
                    ValueKind::Instant
                },
            })
            .collect(),
        samples,
        signature,
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut len = 0;
    let mut alloc = 0;
    for e in std::fs::read_dir(p).expect("read dir").flatten() {
        let m = e.metadata().expect("metadata");
        if m.is_dir() {
            let (l, a) = dir_bytes(&e.path());
            len += l;
            alloc += a;
        } else {
            len += m.len();
            alloc += m.blocks() * 512;
        }
    }
    (len, alloc)
}

fn open(path: &Path) -> Buffer {
    Buffer::open(BufferConfig {
        path: path.to_path_buf(),
        max_bytes: u64::MAX,
        cache_bytes: CACHE_BYTES,
        keep_delivered: Duration::from_secs(30 * 86_400),
    })
    .expect("open buffer")
}

fn ingest(name: &str, readings: u64, path: &Path) {
    let (channels, per_channel, signed, per_append) = match name {
        "realistic" => (4, 15, true, 50),
        "single" => (1, 1, false, 1000),
        "small-appends" => (4, 15, true, 1),
        other => panic!("unknown scenario {other}"),
    };
    let per_frame = (channels * per_channel) as u64;
    let frames_total = readings.div_ceil(per_frame);
    let devices = 10;
    // Pre-build the frames so making the test data is not timed.
    let mut batches: Vec<Vec<Incoming>> = Vec::new();
    let mut cur = Vec::with_capacity(per_append);
    for i in 0..frames_total {
        let device = (i % devices) as usize;
        let seq = i / devices + 1;
        cur.push(Incoming {
            frame: frame(device, seq, channels, per_channel, signed),
            received_ms: 1_764_115_200_000 + i,
        });
        if cur.len() == per_append {
            batches.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    let frame_bytes = mrv_shared::wire::binary::encode_frame(&batches[0][0].frame).len();
    let rss_data = rss_kib("VmRSS:");
    let buf = open(path);
    let rss_open = rss_kib("VmRSS:");
    let n_appends = batches.len();
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for b in batches {
        let t1 = Instant::now();
        let r = buf.append(b).expect("append");
        slowest = slowest.max(t1.elapsed());
        assert!(r.keys.len() == r.outcomes.len(), "every frame stored");
    }
    let took = t.elapsed();
    let rss_ingest = rss_kib("VmRSS:");
    let stats = buf.stats();
    assert_eq!(stats.frames, frames_total);
    drop(buf);
    let (file_len, alloc) = dir_bytes(path);
    let blobs = std::fs::read_dir(path.join("blobs")).map_or(0, |d| d.count());
    let n = stats.readings as f64;
    println!("## scenario {name}");
    println!(
        "  shape    {channels} ch x {per_channel} samples = {per_frame} readings/frame, {frame_bytes} B/frame encoded{}, {per_append} frames/append, {devices} devices",
        if signed { " (signed)" } else { "" }
    );
    println!(
        "  ingest   {} readings, {frames_total} frames, {n_appends} appends in {:.2} s = {:.0} readings/s, {:.0} frames/s, {:.0} appends/s durable (slowest append {:.1} ms)",
        stats.readings,
        took.as_secs_f64(),
        n / took.as_secs_f64(),
        frames_total as f64 / took.as_secs_f64(),
        n_appends as f64 / took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    println!(
        "  disk     logical {:.1} B/reading; sled files {:.1} B/reading ({file_len} B, {blobs} blob files), allocated blocks {:.1} B/reading",
        stats.bytes as f64 / n,
        file_len as f64 / n,
        alloc as f64 / n
    );
    println!(
        "  RSS      ingest process: test data {} KiB; open empty buffer +{} KiB; after ingest +{} KiB",
        rss_data,
        rss_open.saturating_sub(rss_data),
        rss_ingest.saturating_sub(rss_open)
    );
}

/// In a fresh process: open time (3 opens), RSS before/after open and after
/// scanning every frame (cache filled up to its cap).
fn open_and_scan(path: &Path) {
    let rss0 = rss_kib("VmRSS:");
    let mut opens = Vec::new();
    let mut readings = 0;
    let mut rss_open = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let b = open(path);
        let s = b.stats();
        opens.push(t.elapsed());
        readings = s.readings;
        rss_open = rss_open.max(rss_kib("VmRSS:"));
    }
    opens.sort();
    let b = open(path);
    let t = Instant::now();
    let mut scanned = 0u64;
    for f in b.scan(None) {
        scanned += f.expect("frame").frame.samples.len() as u64;
    }
    let scan = t.elapsed();
    assert_eq!(scanned, readings);
    let rss_scan = rss_kib("VmRSS:");
    println!(
        "  open     median {:.1} ms, max {:.1} ms (3 opens, {readings} readings buffered); full scan {:.2} s = {:.0} readings/s",
        opens[1].as_secs_f64() * 1e3,
        opens[2].as_secs_f64() * 1e3,
        scan.as_secs_f64(),
        readings as f64 / scan.as_secs_f64()
    );
    println!(
        "  RSS      fresh process {rss0} KiB; after open +{} KiB; after full scan +{} KiB; peak {} KiB",
        rss_open.saturating_sub(rss0),
        rss_scan.saturating_sub(rss0),
        rss_kib("VmHWM:")
    );
}
