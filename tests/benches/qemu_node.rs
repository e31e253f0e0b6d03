//! Measures the node firmware on the emulated Cortex-M4 (QEMU `mps2-an386`
//! running `firmware/image-mps2`): instructions per signed frame (QEMU's
//! `-icount`: virtual time advances exactly 2^shift ns per instruction, and
//! the node times each seal with its 25 MHz timer), peak stack (stack
//! painting) and peak heap (the allocator's high-water mark), in steady
//! state and with the outbox full (512 unacked frames, the F411's limit),
//! then after one ack drops them all.
//!
//! Run: `scripts/build-firmware-image.sh && cargo bench -p mrv-e2e --bench qemu_node`
//! (about a minute; needs qemu-system-arm). Figures: docs/BENCHMARKS.md.

use ed25519_dalek::SigningKey;
use mrv_e2e::qemu::{ConsoleLine, Qemu, QemuRun, erased_psram, mps2_image};
use mrv_firmware::bridge::link_rx::LinkReceiver;
use mrv_firmware::serial_link::encode_ack_frame;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::provisioning::{Provisioning, encode};
use mrv_shared::wire::signature::verify_frame;
use mrv_shared::wire::{Ack, AckStatus, binary};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// 2^6 ns per instruction: 15.6 M instructions per virtual second, so the
/// node (a frame every 250 ms) is not CPU-bound and a full outbox is
/// reached in seconds.
const SHIFT: u32 = 6;
const TICK_NS: f64 = 40.0; // 25 MHz

fn insns(ticks: u64) -> f64 {
    ticks as f64 * TICK_NS / f64::from(1u32 << SHIFT)
}

/// A gateway stand-in on the node's UART: verifies every frame's signature
/// and, while `acking`, acks the contiguous seq after each frame.
struct Peer {
    acking: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    contiguous: Arc<AtomicU64>,
    stream: std::net::TcpStream,
}

fn start_peer(listener: TcpListener, key: ed25519_dalek::VerifyingKey) -> Peer {
    let (stream, _) = listener.accept().expect("QEMU connects");
    let acking = Arc::new(AtomicBool::new(true));
    let frames = Arc::new(AtomicU64::new(0));
    let contiguous = Arc::new(AtomicU64::new(0));
    let (a, f, c) = (
        Arc::clone(&acking),
        Arc::clone(&frames),
        Arc::clone(&contiguous),
    );
    let mut r = stream.try_clone().expect("clone");
    let mut w = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut rx = LinkReceiver::new(u16::MAX as usize);
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = r.read(&mut buf) {
            for p in rx.push(&buf[..n]) {
                let frame = binary::decode_frame_exact(&p).expect("a frame");
                verify_frame(&frame, &key).expect("signed by the provisioned key");
                f.fetch_add(1, Ordering::SeqCst);
                if frame.seq == c.load(Ordering::SeqCst) + 1 {
                    c.store(frame.seq, Ordering::SeqCst);
                }
                if a.load(Ordering::SeqCst) {
                    let ack = Ack {
                        acked_seq: c.load(Ordering::SeqCst),
                        status: AckStatus::Ok,
                    };
                    let _ = w.write_all(&encode_ack_frame(&ack));
                }
            }
        }
    });
    Peer {
        acking,
        frames,
        contiguous,
        stream,
    }
}

fn stats_line(q: &Qemu, what: &str, pred: impl FnMut(&ConsoleLine) -> bool) -> ConsoleLine {
    q.wait_for(what, Duration::from_secs(300), pred)
}

fn main() {
    let Some(image) = mps2_image() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let key = SigningKey::from_bytes(&[42; 32]);
    let record = dir.path().join("node.mrvk");
    std::fs::write(
        &record,
        encode(&Provisioning {
            site: SiteId::new("bench").expect("id"),
            device: DeviceId::new("node-bench").expect("id"),
            key: key.clone(),
        }),
    )
    .expect("record");
    let psram = dir.path().join("psram.bin");
    erased_psram(&psram);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let qemu = Qemu::start(&QemuRun {
        image,
        psram,
        provisioning: Some(record),
        modem: Some(listener.local_addr().expect("addr")),
        icount_shift: Some(SHIFT),
    });
    let peer = start_peer(listener, key.verifying_key());

    let calib = stats_line(&qemu, "calibration", |l| l.kind == "calib");
    let expected = 2 * calib.num("iterations");
    let measured = insns(calib.num("ticks"));
    println!(
        "calibration: {} iterations of a 2-instruction loop = {measured:.0} instructions by the timer (expected {expected})",
        calib.num("iterations")
    );

    // Steady state: 40 frames, each acked.
    stats_line(&qemu, "steady state", |l| {
        l.kind == "stats" && l.num("acked_seq") >= 40
    });
    let lines = qemu.lines();
    let seals: Vec<f64> = lines
        .iter()
        .filter(|l| l.kind == "seal" && l.num("seq") > 1)
        .map(|l| insns(l.num("ticks")))
        .collect();
    let sends: Vec<f64> = lines
        .iter()
        .filter(|l| l.kind == "send" && l.num("frames") == 1)
        .map(|l| insns(l.num("ticks")))
        .collect();
    let first_seal = lines
        .iter()
        .find(|l| l.kind == "seal")
        .map(|l| insns(l.num("ticks")))
        .expect("a seal");
    let steady = stats_line(&qemu, "stats", |l| l.kind == "stats");
    let stat = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (s[0], s[s.len() / 2], s[s.len() - 1], s.len())
    };
    let (lo, med, hi, n) = stat(&seals);
    println!(
        "seal (sign + encode + journal write), 40 samples/frame: median {med:.0} instructions (min {lo:.0}, max {hi:.0}, {n} frames); first frame {first_seal:.0}"
    );
    let (lo, med, hi, n) = stat(&sends);
    println!(
        "send one frame to the modem UART: median {med:.0} instructions (min {lo:.0}, max {hi:.0}, {n} sends)"
    );
    println!(
        "steady state (outbox {}): stack peak {} of {} bytes, heap peak {} of {} bytes",
        steady.num("outbox"),
        steady.num("stack_peak"),
        steady.num("stack_size"),
        steady.num("heap_peak"),
        steady.num("heap_size")
    );

    // No acks: the outbox fills to its limit, then samples are dropped.
    peer.acking.store(false, Ordering::SeqCst);
    let full = stats_line(&qemu, "a full outbox", |l| {
        l.kind == "stats" && l.num("outbox") >= 512 && l.num("dropped") > 0
    });
    println!(
        "outbox full ({} frames unacked, {} samples dropped): stack peak {} bytes, heap peak {} bytes, failed allocations {}",
        full.num("outbox"),
        full.num("dropped"),
        full.num("stack_peak"),
        full.num("heap_peak"),
        full.num("heap_failed")
    );

    // One ack for everything: 512 frames leave, their sectors are erased.
    let top = full.num("next_seq") - 1;
    let mut w = peer.stream.try_clone().expect("clone");
    w.write_all(&encode_ack_frame(&Ack {
        acked_seq: top,
        status: AckStatus::Ok,
    }))
    .expect("ack");
    peer.acking.store(true, Ordering::SeqCst);
    let drained = stats_line(&qemu, "the outbox drained", |l| {
        l.kind == "stats" && l.num("acked_seq") >= top && l.num("outbox") < 4
    });
    println!(
        "after one ack for {top} frames: outbox {}, stack peak {} bytes, heap peak {} bytes, errors {}",
        drained.num("outbox"),
        drained.num("stack_peak"),
        drained.num("heap_peak"),
        drained.num("errors")
    );
    println!(
        "frames verified by the peer: {}, contiguous {}; wall time {:.1} s",
        peer.frames.load(Ordering::SeqCst),
        peer.contiguous.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    drop(qemu.kill());
}
