//! Clock jumps: the gateway runs in-process (`runtime::start`, the code the
//! binary runs) on a wall clock that is the system clock plus an offset the
//! test steps (the system clock itself is shared with everything else on
//! the machine and is not touched), or on a time-compressed `ScaledClock`
//! whose step the test sets. Each step is recorded as one `clock_jump`
//! event with the step in ms, time passing normally records nothing, and a
//! step of +1 h or -1 h taken back five minutes later, mid-period, moves
//! no frame out of its period (report time holds a step until it persists
//! for `[report] clock_step_confirm_seconds`; see `gateway-report/src/clock_watch`);
//! a step that persists moves report time once, after the wait.

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

/// What a run across a step produced.
struct StepRun {
    /// The stored reports, in seq order.
    reports: Vec<mrv_shared::report::Report>,
    /// Frames published (seqs 1..=last).
    last: u64,
    /// The device's clock (which never steps) when the gateway stopped.
    stopped_at_ms: u64,
}

const MIN: u64 = 60_000;
const PERIOD: u64 = 15 * MIN;
const GRACE: u64 = 10_000;

/// A clock fault: the gateway's clock steps by `step_ms` 20 (simulated)
/// minutes after a period start, five minutes into a 15-minute period.
#[derive(Clone, Copy)]
struct Scenario {
    step_ms: i64,
    /// `[report] clock_step_confirm_seconds`.
    confirm_s: u32,
    /// Whether the clock steps back at 25 minutes (else it keeps the step).
    back_at_25: bool,
    /// The device publishes until its clock reaches this many minutes.
    end_min: u64,
}

/// A step taken back five minutes later, 45 minutes of frames.
const STEP_AND_BACK: Scenario = Scenario {
    step_ms: 0,
    confirm_s: 600,
    back_at_25: true,
    end_min: 45,
};

/// The gateway's clock (x120, 15-minute periods, 10 s grace) steps as
/// `sc` says while a device with its own (unstepped) clock publishes a
/// frame every 12 simulated seconds. Returns the reports once every frame
/// is reported.
async fn publish_across_a_step(sc: Scenario) -> StepRun {
    let step_ms = sc.step_ms;
    use mrv_gateway::clock::ScaledClock;
    use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
    use mrv_shared::quantity::{Quantity, ValueKind};
    use mrv_shared::reading::{Channel, Quality, Sample};
    use mrv_shared::report::Report;
    use mrv_shared::report::jws::parse_compact;
    use mrv_shared::wire::{Frame, binary};
    let site = TestSite::new(
        0,
        &format!(
            "\n[[devices]]\nid = \"m-1\"\nkind = \"solar_meter\"\n\n[report]\nperiod_minutes = 15\n\
         grace_seconds = 10\nkey_file = \"keys/gateway.key\"\ntime_sync = \"off\"\n\
         clock_step_confirm_seconds = {}\n",
            sc.confirm_s
        ),
    );
    mrv_gateway::keys::generate(&site.data_dir.join("keys"), "gateway").expect("keygen");
    let start = SystemClock.now_ms() / PERIOD * PERIOD;
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
    // Run until 45 minutes (simulated) after the start; step at 20 min (mid
    // period), back at 25 min (the watch reads the clock at least every
    // real second, 2 simulated minutes).
    let mut stepped = (false, false);
    loop {
        let t = device_now();
        if !stepped.0 && t >= start + 20 * MIN {
            step.store(step_ms, Ordering::SeqCst);
            clock.set_step(step_ms);
            stepped.0 = true;
        }
        if sc.back_at_25 && stepped.0 && !stepped.1 && t >= start + 25 * MIN {
            step.store(0, Ordering::SeqCst);
            clock.set_step(0);
            stepped.1 = true;
        }
        if t >= start + sc.end_min * MIN {
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
    let stopped_at_ms = device_now();
    let dir = site.data_dir.join("reports");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("reports")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jws"))
        .collect();
    files.sort();
    let reports = files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("read");
            serde_json::from_slice::<Report>(&parse_compact(&bytes).expect("JWS").payload)
                .expect("report")
        })
        .collect();
    StepRun {
        reports,
        last,
        stopped_at_ms,
    }
}

/// Checks a run across a step of `step_ms` and back: report seqs and
/// periods contiguous; no report for a period that had not ended when the
/// gateway stopped, none empty; every frame exactly once, in order, its
/// sample time inside its report's period (none late) and its receipt time
/// too (or within the grace after the end); the two steps in the report of
/// the period they happened in, as `clock_jump` events, with `max_skew_ms`
/// the step, and report time never moved by them.
fn check_step_run(run: &StepRun, step_ms: i64) -> String {
    let mut seqs = Vec::new();
    let mut steps = Vec::new();
    for (i, r) in run.reports.iter().enumerate() {
        let p = r.header.period;
        assert_eq!(r.header.seq, i as u64 + 1, "report seqs gap-free");
        if i > 0 {
            assert_eq!(
                p.start_ms,
                run.reports[i - 1].header.period.end_ms,
                "periods contiguous"
            );
        }
        assert!(
            p.end_ms <= run.stopped_at_ms,
            "report {} for {p:?}, a period that had not ended at {}",
            r.header.seq,
            run.stopped_at_ms
        );
        assert!(
            !r.readings.frames.is_empty(),
            "report {} for {p:?} is empty",
            r.header.seq
        );
        for f in &r.readings.frames {
            let t = f.base_time_ms.expect("device clock");
            assert!(
                (p.start_ms..p.end_ms).contains(&t),
                "frame {} measured at {t} filed in {p:?}",
                f.seq
            );
            assert!(!f.late, "frame {} flagged late in {p:?}", f.seq);
            assert!(
                (p.start_ms..p.end_ms + GRACE).contains(&f.received_ms),
                "frame {} received at {} (report time) filed in {p:?}",
                f.seq,
                f.received_ms
            );
            seqs.push(f.seq);
        }
        for e in r.events.iter().filter(|e| e.kind == EventKind::ClockJump) {
            assert!(
                (p.start_ms..p.end_ms).contains(&e.time_ms),
                "{e:?} in {p:?}"
            );
            steps.push((r.header.seq, step_of(&e.detail), r.header.clock.max_skew_ms));
        }
    }
    assert_eq!(
        seqs,
        (1..=run.last).collect::<Vec<u64>>(),
        "each frame once, in order"
    );
    assert_eq!(
        run.reports.len(),
        3,
        "three 15-minute periods in 45 minutes"
    );
    assert_eq!(steps.len(), 2, "{steps:?}");
    // Both steps happen in the second period (20 and 25 minutes in) and are
    // measured to within a tick of the x120 clock.
    for ((seq, s, skew), want) in steps.iter().zip([step_ms, -step_ms]) {
        assert_eq!(*seq, 2, "{steps:?}");
        assert!((s - want).abs() < 10_000, "{steps:?}");
        assert!((skew - step_ms.abs()).abs() < 10_000, "{steps:?}");
    }
    format!(
        "{} frames in {} reports, each once and in its period; steps {steps:?}",
        run.last,
        run.reports.len()
    )
}

/// A backward step of 1 h and back, mid-period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backward_step_and_back_mid_period_misfiles_and_duplicates_no_frame() {
    let run = publish_across_a_step(Scenario {
        step_ms: -3_600_000,
        ..STEP_AND_BACK
    })
    .await;
    eprintln!("backward step: {}", check_step_run(&run, -3_600_000));
}

/// A forward step of 1 h and back, mid-period: without the report-time
/// rules this closed every period the step jumped over (empty "future"
/// reports) and filed the frames after the step back in the period after
/// them, flagged late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_step_and_back_mid_period_misfiles_and_duplicates_no_frame() {
    let run = publish_across_a_step(Scenario {
        step_ms: 3_600_000,
        ..STEP_AND_BACK
    })
    .await;
    eprintln!("forward step: {}", check_step_run(&run, 3_600_000));
}

/// A forward step of 1 h that persists, with a 5-minute wait: report time
/// follows it 25 minutes in. Reports as REPORT-FORMAT §4.2.2 says: the
/// period the step happened in holds the frames stamped before report time
/// moved; the three periods report time jumped past are empty; the frames
/// after it are in the period of the new report time, flagged late (their
/// device clock did not step); every frame once, in order; both events
/// recorded where they happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_step_that_persists_moves_report_time_once_after_the_wait() {
    const H: u64 = 3_600_000;
    let run = publish_across_a_step(Scenario {
        step_ms: H as i64,
        confirm_s: 300,
        back_at_25: false,
        // Device time 30 min = report time 90 min: the end of the period
        // report time is in after the move.
        end_min: 30,
    })
    .await;
    let mut seqs = Vec::new();
    let mut events = Vec::new();
    let periods: Vec<_> = run.reports.iter().map(|r| r.header.period).collect();
    let start = periods[0].start_ms;
    assert_eq!(
        periods
            .iter()
            .map(|p| ((p.start_ms - start) / MIN, (p.end_ms - start) / MIN))
            .collect::<Vec<_>>(),
        [(0, 15), (15, 30), (30, 45), (45, 60), (60, 75), (75, 90)],
        "contiguous periods, through the jump"
    );
    for r in &run.reports {
        let p = r.header.period;
        let n = r.readings.frames.len();
        match (p.start_ms - start) / MIN {
            30 | 45 | 60 => assert_eq!(n, 0, "{p:?} lies inside the jump"),
            _ => assert!(n > 0, "{p:?} has frames"),
        }
        for f in &r.readings.frames {
            let t = f.base_time_ms.expect("device clock");
            assert!(
                (p.start_ms..p.end_ms + GRACE).contains(&f.received_ms),
                "frame {} received at {} filed in {p:?}",
                f.seq,
                f.received_ms
            );
            // Before the move the device's time and report time agree;
            // after it the device's is an hour behind: late.
            assert_eq!(f.late, p.start_ms >= start + 75 * MIN, "frame {}", f.seq);
            if !f.late {
                assert!(
                    (p.start_ms..p.end_ms).contains(&t),
                    "frame {} measured at {t} in {p:?}",
                    f.seq
                );
            }
            seqs.push(f.seq);
        }
        for e in r.events.iter().filter(|e| e.kind == EventKind::ClockJump) {
            events.push(((p.start_ms - start) / MIN, e.detail.clone()));
        }
    }
    assert_eq!(
        seqs,
        (1..=run.last).collect::<Vec<u64>>(),
        "each frame once, in order"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, 15, "the step, seen 20 min in: {events:?}");
    assert!(
        (step_of(&events[0].1) - H as i64).abs() < 10_000,
        "{events:?}"
    );
    assert_eq!(events[1].0, 75, "report time moved to 85 min: {events:?}");
    assert!(
        events[1].1.starts_with("report time stepped by 3"),
        "{events:?}"
    );
    eprintln!(
        "persisting forward step: {} frames in {} reports (3 empty, inside the jump); events {events:?}",
        run.last,
        run.reports.len()
    );
}
