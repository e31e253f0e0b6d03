//! The gateway polls a pymodbus server (a Modbus implementation we did not
//! write, `tests/python/modbus_pymodbus_server.py`) over TCP and, through a
//! socat pseudo-terminal pair, over RTU; every value decodes correctly:
//! word-swapped floats (rounded to Wh and flagged), 32-bit counters above
//! i32::MAX, byte-swapped and
//! little-endian 64-bit values, NaN as unavailable, an exception range as
//! unavailable plus one event, and a hole the map marks unreadable never
//! read.
//!
//! Needs python3 with pymodbus 3.8 and socat (`scripts/install-test-deps.sh`).
//! Without them the tests are skipped loudly, except under `CI`.

use mrv_gateway::ingest::writer::WriteRequest;
use mrv_gateway::modbus::config::{ValidModbusConfig, parse_section};
use mrv_gateway::modbus::spawn_pollers;
use mrv_gateway::modbus::status::ModbusStatus;
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::SiteId;
use mrv_shared::reading::Quality;
use mrv_shared::wire::Frame;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

fn have(check: &str, what: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(check)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{what} is missing under CI: run scripts/install-test-deps.sh");
        }
        eprintln!("SKIPPED: {what} is not installed (run scripts/install-test-deps.sh)");
    }
    ok
}

fn have_pymodbus() -> bool {
    have(
        "python3 -c 'import pymodbus, serial'",
        "python3 with pymodbus",
    )
}

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/python/modbus_pymodbus_server.py"
);

/// Starts the pymodbus server; returns it and the text after "READY ".
async fn pymodbus(args: &[&str]) -> (Child, String) {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.expect("reads stdout") {
            if let Some(rest) = l.strip_prefix("READY ") {
                return rest.to_string();
            }
        }
        panic!("pymodbus server exited before READY");
    })
    .await
    .expect("pymodbus server starts");
    (child, ready)
}

/// The register map of the served data, as the gateway config writes it.
const REGISTERS: &str = r#"
max_gap = 16
[[modbus.devices.registers]]
name = "swapped_float"
function = "holding"
address = 0
type = "f32"
byte_order = "CDAB"
scale = 1000
quantity = "energy"
[[modbus.devices.registers]]
name = "counter_abcd"
function = "holding"
address = 2
type = "u32"
quantity = "energy"
kind = "counter"
[[modbus.devices.registers]]
name = "counter_cdab"
function = "holding"
address = 4
type = "u32"
byte_order = "CDAB"
quantity = "energy"
kind = "counter"
[[modbus.devices.registers]]
name = "signed16"
function = "holding"
address = 6
type = "i16"
quantity = "temperature"
[[modbus.devices.registers]]
name = "unsigned16"
function = "holding"
address = 7
type = "u16"
quantity = "count"
[[modbus.devices.registers]]
name = "badc32"
function = "holding"
address = 8
type = "i32"
byte_order = "BADC"
quantity = "power"
unit = "mW"
[[modbus.devices.registers]]
name = "double"
function = "holding"
address = 10
type = "f64"
scale = 1000
quantity = "water_volume"
[[modbus.devices.registers]]
name = "little64"
function = "holding"
address = 14
type = "u64"
byte_order = "DCBA"
quantity = "count"
[[modbus.devices.registers]]
name = "nan_float"
function = "holding"
address = 20
type = "f32"
quantity = "power"
unit = "W"
[[modbus.devices.registers]]
name = "past_the_hole"
function = "holding"
address = 30
type = "u16"
quantity = "count"
[[modbus.devices.unreadable]]
function = "holding"
start = 22
count = 8
[[modbus.devices.registers]]
name = "exception_range"
function = "holding"
address = 100
type = "u16"
quantity = "count"
[[modbus.devices.registers]]
name = "input_dcba"
function = "input"
address = 0
type = "f32"
byte_order = "DCBA"
scale = 1000
quantity = "voltage"
[[modbus.devices.registers]]
name = "coil0"
function = "coils"
address = 0
type = "bool"
quantity = "status"
[[modbus.devices.registers]]
name = "coil1"
function = "coils"
address = 1
type = "bool"
quantity = "status"
[[modbus.devices.registers]]
name = "discrete0"
function = "discrete_inputs"
address = 0
type = "bool"
quantity = "status"
"#;

fn config(text: &str) -> ValidModbusConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    parse_section(text, &dir.join("gateway.toml"))
        .expect("parses")
        .validate(&dir)
        .expect("valid")
}

fn value(f: &Frame, ch: &str) -> (i64, Quality) {
    let i = f
        .channels
        .iter()
        .position(|c| c.id.as_str() == ch)
        .unwrap_or_else(|| panic!("channel {ch}"));
    let s = f
        .samples
        .iter()
        .find(|s| usize::from(s.channel) == i)
        .expect("sample");
    (s.value, s.quality)
}

/// Checks every value of one frame of the served map; `signed16` differs
/// per unit.
fn check_frame(f: &Frame, signed16: i64) {
    let good = Quality::GOOD;
    // f32 1234.5678 reads back as 1234.5677 kWh (its shortest decimal):
    // 1234567.7 Wh does not fit the Wh base unit, so it is rounded (half
    // away from zero) and flagged.
    assert_eq!(value(f, "swapped_float"), (1_234_568, Quality::ROUNDED));
    assert_eq!(value(f, "counter_abcd"), (4_000_000_000, good));
    assert_eq!(value(f, "counter_cdab"), (0x1234_5678, good));
    assert_eq!(value(f, "signed16"), (signed16, good));
    assert_eq!(value(f, "unsigned16"), (65_535, good));
    assert_eq!(value(f, "badc32"), (-123_456, good));
    assert_eq!(value(f, "double"), (12_345_678, good));
    assert_eq!(value(f, "little64"), ((1_i64 << 40) + 7, good));
    assert_eq!(value(f, "nan_float"), (0, Quality::UNAVAILABLE));
    assert_eq!(value(f, "past_the_hole"), (7, good));
    assert_eq!(value(f, "exception_range"), (0, Quality::UNAVAILABLE));
    assert_eq!(value(f, "input_dcba"), (230_500, good));
    assert_eq!(value(f, "coil0"), (1, good));
    assert_eq!(value(f, "coil1"), (0, good));
    assert_eq!(value(f, "discrete0"), (1, good));
}

struct Run {
    frames: mpsc::Receiver<WriteRequest>,
    events: mpsc::Receiver<Event>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn run(cfg: &ValidModbusConfig) -> Run {
    let (wtx, wrx) = mpsc::channel(256);
    let (etx, erx) = mpsc::channel(256);
    let tasks = spawn_pollers(
        cfg,
        SiteId::new("site-p").expect("valid"),
        wtx,
        etx,
        ModbusStatus::new(),
    )
    .await;
    Run {
        frames: wrx,
        events: erx,
        _tasks: tasks,
    }
}

impl Run {
    async fn next_of(&mut self, device: &str) -> Frame {
        loop {
            let req = tokio::time::timeout(Duration::from_secs(30), self.frames.recv())
                .await
                .expect("a frame within 30 s")
                .expect("pollers alive");
            if req.incoming.frame.device.as_str() == device {
                let mut f = req.incoming.frame;
                let mut check = f.clone();
                check.seq = 1;
                check.validate().expect("frame rules hold");
                f.seq = 0;
                return f;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_decodes_every_value_a_pymodbus_tcp_server_serves() {
    if !have_pymodbus() {
        return;
    }
    let (_server, port) = pymodbus(&["--tcp"]).await;
    let cfg = config(&format!(
        "[[modbus.devices]]\nid = \"pymodbus-1\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 150\ntimeout_ms = 1000\n{REGISTERS}"
    ));
    // holding 0..31 (one read, the hole 22..29 forces a split), holding 100,
    // input 0, coils 0, discrete 0.
    let mut r = run(&cfg).await;
    for _ in 0..3 {
        let f = r.next_of("pymodbus-1").await;
        check_frame(&f, -42);
    }
    let mut events = Vec::new();
    while let Ok(e) = r.events.try_recv() {
        events.push(e);
    }
    assert_eq!(
        events.len(),
        1,
        "one event for a repeated exception: {events:?}"
    );
    assert_eq!(events[0].kind, EventKind::ModbusException);
    assert!(
        events[0].detail.contains("holding 100+1"),
        "{}",
        events[0].detail
    );
    assert!(
        events[0].detail.contains("exception 0x02"),
        "{}",
        events[0].detail
    );
}

/// A socat pseudo-terminal pair: (socat, gateway end, device end).
async fn pty_pair(dir: &Path) -> (Child, std::path::PathBuf, std::path::PathBuf) {
    let gw_end = dir.join("gateway-end");
    let dev_end = dir.join("device-end");
    let mut socat = Command::new("socat")
        .arg("-d")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", gw_end.display()))
        .arg(format!("pty,raw,echo=0,link={}", dev_end.display()))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("socat starts");
    // socat says when both ptys exist and it relays.
    let stderr = socat.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.expect("reads stderr") {
            if l.contains("starting data transfer loop") {
                return;
            }
        }
        panic!("socat exited");
    })
    .await
    .expect("socat ready");
    // Keep draining socat's stderr so it never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (socat, gw_end, dev_end)
}

/// Runs `mrv-gateway modbus ...` in-process; returns (output, result).
async fn cli(args: Vec<String>) -> (String, Result<(), String>) {
    let mut argv = vec!["mrv-gateway".to_string(), "modbus".to_string()];
    argv.extend(args);
    tokio::task::spawn_blocking(move || {
        let parsed = <mrv_gateway::cli::Cli as clap::Parser>::try_parse_from(&argv)
            .expect("arguments parse");
        let mrv_gateway::cli::Command::Modbus(a) = parsed.command else {
            panic!("not a modbus command")
        };
        let mut out = Vec::new();
        let r = mrv_gateway::cli::modbus::run_to(a, &mut out).map_err(|e| format!("{e:#}"));
        (String::from_utf8(out).expect("utf-8"), r)
    })
    .await
    .expect("cli thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_scans_an_rtu_bus_and_reads_a_unit() {
    if !have_pymodbus() || !have("command -v socat", "socat") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_socat, gw_end, dev_end) = pty_pair(dir.path()).await;
    let (_server, _) = pymodbus(&["--rtu", &dev_end.to_string_lossy()]).await;
    let serial = gw_end.to_string_lossy().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["--serial", &serial, "--baud", "19200"].map(String::from));
        v
    };
    // Wait for the serial server's first answer (a signal, not a sleep).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (out, r) = cli(args(&[
            "read",
            "--unit",
            "2",
            "--timeout-ms",
            "300",
            "-r",
            "holding:6:i16",
        ]))
        .await;
        if r.is_ok() {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the RTU server never answered: {out}"
        );
    };
    assert!(out.contains("holding 6") && out.contains("-43"), "{out}");
    let (out, r) = cli(args(&[
        "scan",
        "--from",
        "1",
        "--to",
        "4",
        "--timeout-ms",
        "150",
    ]))
    .await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("2 unit(s) answer with data: [1, 2]"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_a_pty_pair_reads_two_units_and_survives_a_missing_one() {
    if !have_pymodbus() || !have("command -v socat", "socat") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (socat, gw_end, dev_end) = pty_pair(dir.path()).await;
    let (_server, _) = pymodbus(&["--rtu", &dev_end.to_string_lossy()]).await;

    let unit = |id: &str, unit: u8, timeout: u64| {
        format!(
            "[[modbus.devices]]\nid = \"{id}\"\nbus = \"pty\"\nunit = {unit}\npoll_interval_ms = 300\ntimeout_ms = {timeout}\nretries = 0\n{REGISTERS}"
        )
    };
    let cfg = config(&format!(
        "[[modbus.buses]]\nid = \"pty\"\npath = \"{}\"\nbaud = 19200\n{}{}{}",
        gw_end.display(),
        unit("rtu-1", 1, 1000),
        unit("rtu-2", 2, 1000),
        unit("rtu-missing", 9, 150),
    ));
    let mut r = run(&cfg).await;
    // The serial server may need a moment to open its end: wait for the
    // first good frame of each unit (a signal, not a sleep), then check.
    let mut ok = [false, false];
    let mut missing_seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(ok[0] && ok[1] && missing_seen >= 2) {
        assert!(tokio::time::Instant::now() < deadline, "no good RTU frames");
        let req = tokio::time::timeout(Duration::from_secs(30), r.frames.recv())
            .await
            .expect("a frame")
            .expect("pollers alive");
        let f = req.incoming.frame;
        let all_unavailable = f.samples.iter().all(|s| s.quality == Quality::UNAVAILABLE);
        match f.device.as_str() {
            "rtu-1" if !all_unavailable => {
                check_frame(&f, -42);
                ok[0] = true;
            }
            "rtu-2" if !all_unavailable => {
                check_frame(&f, -43);
                ok[1] = true;
            }
            "rtu-missing" => {
                assert!(all_unavailable, "unit 9 does not exist: {f:?}");
                missing_seen += 1;
            }
            _ => {}
        }
    }
    let mut events = Vec::new();
    while let Ok(e) = r.events.try_recv() {
        events.push(e);
    }
    assert!(
        events.iter().any(|e| e.kind == EventKind::ModbusTimeout
            && e.device
                .as_ref()
                .is_some_and(|d| d.as_str() == "rtu-missing")),
        "a silent unit is a timeout: {events:?}"
    );
    drop(socat);
}
