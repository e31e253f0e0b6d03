//! The gateway's Modbus pollers against the simulated meters (real
//! tokio-modbus TCP servers on 127.0.0.1): decoding of a SunSpec inverter
//! and a DIN-rail meter, failure isolation (dead, silent and slow devices
//! never delay a healthy one), exceptions as unavailable readings plus one
//! event.

use mrv_firmware::meters::{
    self, Faults, MeterHandle, SimClock, SimMeter, din_meter::DinMeterParams,
    sunspec_inverter::InverterParams,
};
use mrv_gateway::ingest::writer::WriteRequest;
use mrv_gateway::modbus::config::{ValidModbusConfig, parse_section};
use mrv_gateway::modbus::spawn_pollers;
use mrv_gateway::modbus::status::ModbusStatus;
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::SiteId;
use mrv_shared::reading::Quality;
use mrv_shared::wire::Frame;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Noon UTC on some day: the simulated sun is up.
const NOON_MS: u64 = 1_767_225_600_000 + 12 * 3_600_000;

async fn start(meter: SimMeter) -> MeterHandle {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    meters::serve(l, meter, 1, SimClock::new(NOON_MS, 1.0)).expect("serve")
}

fn config(text: &str) -> ValidModbusConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    parse_section(text, &dir.join("gateway.toml"))
        .expect("parses")
        .validate(&dir)
        .expect("valid")
}

fn device(id: &str, port: u16, extra: &str) -> String {
    format!(
        "[[modbus.devices]]\nid = \"{id}\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\ntimeout_ms = 200\nretries = 0\n{extra}\n"
    )
}

fn value(f: &Frame, ch: &str) -> (i64, Quality) {
    let i = f
        .channels
        .iter()
        .position(|c| c.id.as_str() == ch)
        .unwrap_or_else(|| panic!("channel {ch} in {:?}", f.channels));
    let s = f
        .samples
        .iter()
        .find(|s| usize::from(s.channel) == i)
        .expect("sample");
    (s.value, s.quality)
}

struct Run {
    frames: mpsc::Receiver<WriteRequest>,
    events: mpsc::Receiver<Event>,
    status: ModbusStatus,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn run(cfg: &ValidModbusConfig) -> Run {
    let (wtx, wrx) = mpsc::channel(1024);
    let (etx, erx) = mpsc::channel(1024);
    let status = ModbusStatus::new();
    let tasks = spawn_pollers(
        cfg,
        SiteId::new("site-a").expect("valid"),
        wtx,
        etx,
        status.clone(),
    )
    .await;
    Run {
        frames: wrx,
        events: erx,
        status,
        _tasks: tasks,
    }
}

impl Run {
    /// Frames by device until `device` has delivered `n` frames.
    async fn until(&mut self, device: &str, n: usize) -> BTreeMap<String, Vec<Frame>> {
        let mut by: BTreeMap<String, Vec<Frame>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while by.get(device).map_or(0, Vec::len) < n {
            let req = tokio::time::timeout_at(deadline, self.frames.recv())
                .await
                .expect("frames keep coming")
                .expect("pollers alive");
            let f = req.incoming.frame;
            assert_eq!(f.seq, 0, "the writer assigns sequence numbers");
            let mut check = f.clone();
            check.seq = 1;
            check.validate().expect("frame rules hold");
            by.entry(f.device.as_str().to_string()).or_default().push(f);
        }
        by
    }

    async fn next_frame(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(20), self.frames.recv())
            .await
            .expect("a frame")
            .expect("pollers alive")
            .incoming
            .frame
    }

    fn drain_events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            v.push(e);
        }
        v
    }
}

#[tokio::test]
async fn a_sunspec_inverter_and_a_din_meter_are_polled_and_decoded() {
    let inv = start(SimMeter::SunSpecInverter(InverterParams::default())).await;
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let cfg = config(&format!(
        "{}{}",
        device("inverter-1", inv.addr.port(), "profile = \"sunspec\""),
        device("meter-1", din.addr.port(), "profile = \"din_meter\"")
    ));
    let mut r = run(&cfg).await;
    let by = r.until("inverter-1", 3).await;
    let by2 = r.until("meter-1", 3).await;

    let invf = &by["inverter-1"];
    let f = invf.last().expect("frames");
    assert_eq!(f.firmware, "modbus");
    assert!(f.base_time_ms.is_some());
    let (w, q) = value(f, "inverter_ac_power");
    // Power in mW: the i16 W register times 1000.
    assert!(q.is_good() && w > 0 && w <= 5_000_000, "power {w} {q:?}");
    assert_eq!(value(f, "inverter_ac_frequency"), (50_000, Quality::GOOD));
    assert_eq!(value(f, "inverter_ac_voltage_a"), (230_000, Quality::GOOD));
    let (t, q) = value(f, "inverter_cabinet_temp");
    assert!(q.is_good() && (3000..=4500).contains(&t), "temp {t}");
    let energies: Vec<i64> = invf
        .iter()
        .map(|f| value(f, "inverter_ac_energy").0)
        .collect();
    assert!(energies.windows(2).all(|w| w[0] <= w[1]), "{energies:?}");
    assert!(energies[0] >= 1_000_000);
    // The vendor model 64100 in the chain was skipped, not fatal; the
    // channels are model 103's and model 203's points.
    assert!(f.channels.iter().all(|c| {
        let n = c.id.as_str();
        n.starts_with("inverter_") || n.starts_with("meter_")
    }));
    // Model 203 (meter at the grid connection): net export = power - 300 W.
    let (mw, q) = value(f, "meter_power");
    assert!(
        q.is_good() && (mw - (w - 300_000)).abs() <= 50_000,
        "meter {mw} vs inverter {w}"
    );
    assert_eq!(value(f, "meter_frequency"), (50_000, Quality::GOOD));
    assert_eq!(value(f, "meter_voltage"), (230_000, Quality::GOOD));
    let (exp, q) = value(f, "meter_export_energy");
    assert!(q.is_good() && exp >= 800_000, "export {exp}");
    let (imp, q) = value(f, "meter_import_energy");
    assert!(q.is_good() && imp >= 50_000, "import {imp}");

    let m = by2["meter-1"].last().expect("frames");
    let (v, q) = value(m, "voltage_l1");
    assert!(
        q.is_good() && (227_000..=233_000).contains(&v),
        "voltage {v}"
    );
    assert_eq!(value(m, "frequency"), (50_000, Quality::GOOD));
    let (e, q) = value(m, "import_energy");
    assert!(
        q.is_good() && (1_234_500..1_234_600).contains(&e),
        "energy {e}"
    );
    // 1500.25 W in an f32 register: exactly 1500250 mW, not rounded.
    assert_eq!(value(m, "power_l1"), (1_500_250, Quality::GOOD));

    let st = r.status.snapshot();
    let s = &st[&mrv_shared::ids::DeviceId::new("meter-1").expect("valid")];
    assert!(s.polls >= 3 && s.errors.is_empty(), "{s:?}");
    // The DIN profile's 8 floats, three clusters: 0..14, 52..76, 342..344.
    assert_eq!(s.requests_per_poll, 3);
    assert!(r.drain_events().is_empty());
}

#[tokio::test]
async fn dead_silent_and_slow_devices_never_delay_a_healthy_one() {
    let healthy = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let silent = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    silent.set_faults(Faults {
        silent: true,
        delay: None,
    });
    let slow = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    slow.set_faults(Faults {
        silent: false,
        delay: Some(Duration::from_secs(2)),
    });
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = config(&format!(
        "{}{}{}{}",
        device("healthy", healthy.addr.port(), "profile = \"din_meter\""),
        device("silent", silent.addr.port(), "profile = \"din_meter\""),
        device("slow", slow.addr.port(), "profile = \"din_meter\""),
        device("dead", dead_port, "profile = \"din_meter\""),
    ));
    let mut r = run(&cfg).await;
    let by = r.until("healthy", 15).await;
    let h = &by["healthy"];
    // On its 100 ms grid: no gap between polls beyond one interval + slack.
    let times: Vec<u64> = h.iter().map(|f| f.base_time_ms.expect("time")).collect();
    let worst = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .expect("15 frames");
    // A poller that waited for the others would show >= 500 ms gaps (two
    // 200 ms timeouts plus the interval); the bound leaves room for a loaded
    // CI machine.
    assert!(worst <= 400, "healthy device delayed: worst gap {worst} ms");
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    assert!(
        median <= 150,
        "healthy device slowed: median gap {median} ms"
    );
    assert!(
        h.iter()
            .all(|f| f.samples.iter().all(|s| s.quality.is_good()))
    );
    for bad in ["silent", "slow", "dead"] {
        let frames = by.get(bad).unwrap_or_else(|| panic!("{bad} yields frames"));
        for f in frames {
            assert!(
                f.samples
                    .iter()
                    .all(|s| s.quality == Quality::UNAVAILABLE && s.value == 0),
                "{bad}: {f:?}"
            );
        }
    }
    let events = r.drain_events();
    for bad in ["silent", "slow", "dead"] {
        // Nothing listens for "dead": that is "unreachable", not a timeout.
        let want = if bad == "dead" {
            EventKind::ModbusUnreachable
        } else {
            EventKind::ModbusTimeout
        };
        let n = events
            .iter()
            .filter(|e| e.device.as_ref().is_some_and(|d| d.as_str() == bad))
            .inspect(|e| assert_eq!(e.kind, want, "{e:?}"))
            .inspect(|e| assert!(e.detail.starts_with("down: "), "{e:?}"))
            .count();
        // One event per state change: down once, repeats are not reported.
        assert_eq!(n, 1, "{bad}: {n} events: {events:?}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.detail.contains("connection refused"))
    );
    let st = r.status.snapshot();
    let dead = &st[&mrv_shared::ids::DeviceId::new("dead").expect("valid")];
    assert!(dead.last_success_ms.is_none() && dead.errors.contains_key("unreachable"));
    assert_eq!(dead.state, Some(mrv_gateway::modbus::health::Health::Down));
    assert!(dead.polls_down >= 1 && dead.polls_degraded == 0);
}

#[tokio::test]
async fn an_exception_makes_only_its_register_unavailable_and_one_event() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let extra = "profile = \"din_meter\"\n[[modbus.devices.registers]]\nname = \"missing\"\nfunction = \"input\"\naddress = 500\ntype = \"f32\"\nquantity = \"power\"\nunit = \"W\"\n";
    let cfg = config(&device("meter-x", din.addr.port(), extra));
    let mut r = run(&cfg).await;
    let by = r.until("meter-x", 4).await;
    for f in &by["meter-x"] {
        assert_eq!(value(f, "missing"), (0, Quality::UNAVAILABLE));
        assert!(value(f, "voltage_l1").1.is_good());
        assert!(value(f, "import_energy").1.is_good());
    }
    let events = r.drain_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::ModbusException);
    assert!(
        events[0].detail.contains("input 500+2")
            && events[0].detail.contains("illegal data address"),
        "{}",
        events[0].detail
    );
}

#[tokio::test]
async fn an_unreachable_sunspec_device_with_expected_models_yields_unavailable_readings() {
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = config(&device(
        "inverter-down",
        dead_port,
        "profile = \"sunspec\"\nsunspec_models = [103]",
    ));
    let mut r = run(&cfg).await;
    let by = r.until("inverter-down", 2).await;
    for f in &by["inverter-down"] {
        assert!(
            f.channels
                .iter()
                .any(|c| c.id.as_str() == "inverter_ac_energy")
        );
        assert!(
            f.samples
                .iter()
                .all(|s| s.quality == Quality::UNAVAILABLE && s.value == 0)
        );
    }
    let events = r.drain_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::ModbusUnreachable);
    assert!(
        events[0].detail.contains("SunSpec discovery"),
        "{}",
        events[0].detail
    );
}

#[tokio::test]
async fn a_meter_that_goes_away_and_comes_back_is_reconnected() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let clock = SimClock::new(NOON_MS, 1.0);
    let meter =
        meters::serve(l, SimMeter::DinMeter(DinMeterParams::default()), 1, clock).expect("serve");
    let cfg = config(&device("flaky", addr.port(), "profile = \"din_meter\""));
    let mut r = run(&cfg).await;
    let good = |f: &Frame| f.samples.iter().all(|s| s.quality.is_good());
    let unavailable = |f: &Frame| f.samples.iter().all(|s| s.quality == Quality::UNAVAILABLE);
    assert!(good(&r.next_frame().await));
    meter.stop();
    // Frames keep coming, all unavailable, while the meter is gone.
    let mut down = 0;
    while down < 3 {
        let f = r.next_frame().await;
        if unavailable(&f) {
            down += 1;
        } else {
            assert_eq!(down, 0, "no good frame once the meter is gone");
        }
    }
    // The meter comes back on the same port; the poller reconnects at the
    // next scheduled poll (its backoff never exceeds half the interval) and
    // good frames resume.
    let l = TcpListener::bind(addr).await.expect("rebind the same port");
    let _back =
        meters::serve(l, SimMeter::DinMeter(DinMeterParams::default()), 1, clock).expect("serve");
    let mut late = 0;
    loop {
        let f = r.next_frame().await;
        if good(&f) {
            break;
        }
        assert!(unavailable(&f), "never a partial or stale frame: {f:?}");
        late += 1;
    }
    // At most the poll in flight at the rebind, and the one after it.
    assert!(
        late <= 2,
        "{late} unavailable frames after the meter came back"
    );
    let events = r.drain_events();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    // The connection broke, reconnecting was refused, then it recovered:
    // one event per state change, the last one "recovered".
    assert_eq!(
        kinds.first(),
        Some(&EventKind::ModbusLinkError),
        "{events:?}"
    );
    assert_eq!(
        kinds.last(),
        Some(&EventKind::ModbusRecovered),
        "{events:?}"
    );
    assert!(kinds.len() <= 3, "{events:?}");
    let st = r.status.snapshot();
    let flaky = &st[&mrv_shared::ids::DeviceId::new("flaky").expect("valid")];
    assert_eq!(flaky.problem, None, "the old error does not linger");
    assert!(flaky.last_error.is_some());
}
