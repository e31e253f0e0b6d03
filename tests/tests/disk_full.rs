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
