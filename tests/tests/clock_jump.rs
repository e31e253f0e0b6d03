//! Clock jumps: the gateway runs on a wall clock that is the system clock
//! plus an offset the test steps by +1 h and back (the system clock itself
//! is shared with everything else on the machine and is not touched); each
//! step is recorded as one `clock_jump` event with the step in ms, and
//! time passing normally records nothing.

use mrv_e2e::TestSite;
use mrv_gateway::clock::{Clock, SystemClock};
use mrv_shared::event::EventKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// The system clock plus a step the test sets; it can jump like the real one.
#[derive(Default)]
struct SteppedClock(AtomicI64);

impl Clock for SteppedClock {
    fn now_ms(&self) -> u64 {
        SystemClock
            .now_ms()
            .saturating_add_signed(self.0.load(Ordering::SeqCst))
    }
    fn can_jump(&self) -> bool {
        true
    }
}

fn jumps(b: &mrv_gateway::buffer::Buffer) -> Vec<String> {
    b.events_after(None)
        .map(|e| e.expect("event reads").1)
        .filter(|e| e.kind == EventKind::ClockJump)
        .map(|e| e.detail)
        .collect()
}

async fn until_jumps(b: &mrv_gateway::buffer::Buffer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j = jumps(b);
        if j.len() >= n {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "{n} clock jumps expected, got {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step_of(detail: &str) -> i64 {
    detail
        .strip_prefix("wall clock stepped by ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected detail {detail:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_the_wall_clock_forward_and_back_is_recorded_as_two_clock_jump_events() {
    let site = TestSite::new(1, "");
    let clock = Arc::new(SteppedClock::default());
    let gw = mrv_gateway::runtime::start(site.config(), clock.clone())
        .await
        .expect("gateway starts");
    // Three ticks of time passing normally: nothing.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_eq!(jumps(&gw.state.buffer), Vec::<String>::new());
    clock.0.store(3_600_000, Ordering::SeqCst);
    let forward = until_jumps(&gw.state.buffer, 1).await;
    clock.0.store(0, Ordering::SeqCst);
    let both = until_jumps(&gw.state.buffer, 2).await;
    assert_eq!(both[0], forward[0]);
    let (f, b) = (step_of(&both[0]), step_of(&both[1]));
    // The step is measured against the monotonic clock between two ticks.
    assert!((f - 3_600_000).abs() < 500, "forward step {f}");
    assert!((b + 3_600_000).abs() < 500, "backward step {b}");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(jumps(&gw.state.buffer).len(), 2, "one event per step");
    gw.shutdown().await;
    eprintln!("clock stepped +1 h and back: events {both:?}");
}

/// Reports across a backward step: the gateway's clock (x120, 15-minute
/// periods) steps back 1 h five minutes into a period and forward again
/// five (simulated) minutes later, while a device with its own (unstepped)
/// clock publishes a frame every 12 simulated seconds. Every frame is in exactly
/// one report, in order; report seqs and periods are contiguous; every
/// frame's sample time lies inside its report's period (or before it,
/// flagged late); the steps are in the reports as `clock_jump` events with
/// `max_skew_ms` 3,600,000. (A forward step is not handled yet: see
/// docs/RELIABILITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backward_step_and_back_mid_period_misfiles_and_duplicates_no_frame() {
    use mrv_gateway::clock::ScaledClock;
    use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
    use mrv_shared::quantity::{Quantity, ValueKind};
    use mrv_shared::reading::{Channel, Quality, Sample};
    use mrv_shared::report::Report;
    use mrv_shared::report::jws::parse_compact;
    use mrv_shared::wire::{Frame, binary};
    const MIN: u64 = 60_000;
    let site = TestSite::new(
        0,
        "\n[[devices]]\nid = \"m-1\"\nkind = \"solar_meter\"\n\n[report]\nperiod_minutes = 15\n\
         grace_seconds = 10\nkey_file = \"keys/gateway.key\"\ntime_sync = \"off\"\n",
    );
    mrv_gateway::keys::generate(&site.data_dir.join("keys"), "gateway").expect("keygen");
    let start = SystemClock.now_ms() / (15 * MIN) * (15 * MIN);
    let clock = Arc::new(ScaledClock::new(start, 120));
    let gw = mrv_gateway::runtime::start(site.config(), clock.clone())
        .await
        .expect("gateway starts");
    let step = Arc::new(AtomicI64::new(0));
    let device_now = {
        let (clock, step) = (clock.clone(), step.clone());
        move || {
            clock
                .now_ms()
                .saturating_add_signed(-step.load(Ordering::SeqCst))
        }
    };
    let (client, mut el) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("m-1", "127.0.0.1", site.mqtt_port),
        1000,
    );
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let poller = {
        let acks = acks.clone();
        tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = ev {
                    acks.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let mut seq = 0u64;
    let publish = async |seq: u64, t: u64| {
        let bytes = binary::encode_frame(&Frame {
            site: SiteId::new("demo-site").expect("valid"),
            device: DeviceId::new("m-1").expect("valid"),
            seq,
            boot: 1,
            firmware: String::new(),
            base_time_ms: Some(t),
            channels: vec![Channel {
                id: ChannelId::new("energy").expect("valid"),
                quantity: Quantity::Energy,
                kind: ValueKind::Counter,
            }],
            samples: vec![Sample {
                channel: 0,
                offset_ms: 0,
                value: seq as i64,
                quality: Quality::GOOD,
            }],
            signature: None,
        });
        client
            .publish(
                "mrv/demo-site/m-1/up",
                rumqttc::QoS::AtLeastOnce,
                false,
                bytes,
            )
            .await
            .expect("queued");
    };
    // Run until 45 minutes (simulated) after the start; step back at 20 min
    // (mid period), forward again at 25 min (the watch reads the clocks every
    // real second, 2 simulated minutes).
    let mut stepped = (false, false);
    loop {
        let t = device_now();
        if !stepped.0 && t >= start + 20 * MIN {
            step.store(-3_600_000, Ordering::SeqCst);
            clock.set_step(-3_600_000);
            stepped.0 = true;
        }
        if stepped.0 && !stepped.1 && t >= start + 25 * MIN {
            step.store(0, Ordering::SeqCst);
            clock.set_step(0);
            stepped.1 = true;
        }
        if t >= start + 45 * MIN {
            break;
        }
        seq += 1;
        publish(seq, device_now()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = seq;
    let t0 = Instant::now();
    while acks.load(Ordering::SeqCst) < last {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "frames not PUBACKed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every frame reported: the buffer has nothing unreported.
    let t0 = Instant::now();
    while gw.state.buffer.stats().unreported_frames > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "frames not reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poller.abort();
    gw.shutdown().await;
    let dir = site.data_dir.join("reports");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("reports")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jws"))
        .collect();
    files.sort();
    let mut seqs = Vec::new();
    let mut prev: Option<Report> = None;
    let mut steps = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let bytes = std::fs::read(p).expect("read");
        let r: Report =
            serde_json::from_slice(&parse_compact(&bytes).expect("JWS").payload).expect("report");
        assert_eq!(r.header.seq, i as u64 + 1, "report seqs gap-free");
        if let Some(p) = &prev {
            assert_eq!(
                r.header.period.start_ms, p.header.period.end_ms,
                "periods contiguous"
            );
        }
        for f in &r.readings.frames {
            let t = f.base_time_ms.expect("device clock");
            let p = r.header.period;
            assert!(
                t < p.end_ms,
                "frame {} at {t} filed in {p:?} (after its end)",
                f.seq
            );
            assert_eq!(f.late, t < p.start_ms, "frame {} late flag in {p:?}", f.seq);
            assert!(
                !f.late,
                "frame {} misfiled into a later period {p:?}",
                f.seq
            );
            seqs.push(f.seq);
        }
        for e in r.events.iter().filter(|e| e.kind == EventKind::ClockJump) {
            steps.push((r.header.seq, step_of(&e.detail), r.header.clock.max_skew_ms));
        }
        prev = Some(r);
    }
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<u64>>(),
        "each frame once, in order"
    );
    assert_eq!(steps.len(), 2, "{steps:?}");
    for (_, s, skew) in &steps {
        assert!((s.abs() - 3_600_000).abs() < 240_000, "{steps:?}");
        assert!(*skew >= 3_360_000, "{steps:?}");
    }
    eprintln!(
        "backward step: {last} frames in {} reports, each once and in its period; steps {steps:?}",
        files.len()
    );
}
