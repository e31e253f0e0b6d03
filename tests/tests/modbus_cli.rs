//! `mrv-gateway modbus read | scan | sunspec` against the simulated meters
//! (real Modbus TCP servers on 127.0.0.1): decoded output with units, and
//! errors that say what failed.

use mrv_firmware::meters::{
    self, Faults, MeterHandle, SimClock, SimMeter, din_meter::DinMeterParams,
    sunspec_inverter::InverterParams,
};
use mrv_gateway::cli::{Cli, Command};
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

const NOON_MS: u64 = 1_767_225_600_000 + 12 * 3_600_000;

async fn start(meter: SimMeter) -> MeterHandle {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    meters::serve(l, meter, 1, SimClock::new(NOON_MS, 1.0)).expect("serve")
}

/// Runs `mrv-gateway modbus ...` in-process; returns (output, result text).
async fn cli(args: &[&str]) -> (String, Result<(), String>) {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .to_string_lossy()
        .to_string();
    let mut argv: Vec<String> = ["mrv-gateway", "modbus"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(args.iter().map(|s| s.to_string()));
    if matches!(args[0], "read" | "sunspec") {
        argv.push("--config-dir".into());
        argv.push(config_dir);
    }
    tokio::task::spawn_blocking(move || {
        let parsed = <Cli as clap::Parser>::try_parse_from(&argv).expect("arguments parse");
        let Command::Modbus(a) = parsed.command else {
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
async fn read_decodes_a_profile_and_ad_hoc_registers_with_units() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let port = din.addr.port().to_string();
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--profile",
        "din_meter",
    ])
    .await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("8 values in 3 requests"), "{out}");
    assert!(
        out.contains("import_energy") && out.contains("1234500 Wh"),
        "{out}"
    );
    assert!(
        out.contains("frequency") && out.contains("50000 mHz"),
        "{out}"
    );

    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "-r",
        "input:70:f32",
        "-r",
        "input:70:raw2",
    ])
    .await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("f32") && out.contains(" 50\n"), "{out}");
    assert!(out.contains("0x4248 0x0000"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_hoc_registers_take_a_scale_quantity_and_unit() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let port = din.addr.port().to_string();
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "-r",
        "input:12:f32:quantity=power:unit=W",
        "-r",
        "input:12:type=f32:scale=0.001",
    ])
    .await;
    assert_eq!(r, Ok(()), "{out}");
    // The meter's 1500.25 W: exactly 1500250 mW as the gateway stores it.
    assert!(
        out.contains("1500.25  -> ") && out.contains("(1500250 mW)"),
        "{out}"
    );
    assert!(out.contains("x 0.001 = 1.50025"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_path_is_relative_to_the_working_directory_and_refused_reads_are_split() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let port = din.addr.port().to_string();
    // The working directory of this test is the `tests` package; the path
    // does not exist relative to --config-dir (../config/python/...).
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--profile",
        "python/../../config/profiles/din_meter.toml",
    ])
    .await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("1500250 mW"), "{out}");
    // A profile whose last value lies beyond the meter's registers, right
    // next to a readable one: the coalesced read is refused, split, and the
    // readable neighbour is read.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        "description = \"edge\"\n\
         [[registers]]\nname = \"last_real\"\nfunction = \"input\"\naddress = 396\ntype = \"f32\"\nquantity = \"count\"\n\
         [[registers]]\nname = \"next_real\"\nfunction = \"input\"\naddress = 398\ntype = \"u32\"\nquantity = \"count\"\n\
         [[registers]]\nname = \"past_the_end\"\nfunction = \"input\"\naddress = 400\ntype = \"u16\"\nquantity = \"count\"\n",
    )
    .expect("write profile");
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--profile",
        path.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(r, Err("1 value(s) unavailable".into()), "{out}");
    assert!(
        out.contains("(refused, read in smaller parts: input 396+5: exception 0x02"),
        "{out}"
    );
    assert!(out.contains("3 values in 2 requests"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    assert!(line("last_real").ends_with("(0 1)"), "{out}");
    assert!(line("next_real").ends_with("(0 1)"), "{out}");
    assert!(
        line("past_the_end").contains("unavailable: exception 0x02"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_unit_id_is_named_as_the_likely_cause() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let port = din.addr.port().to_string();
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "3",
        "--profile",
        "din_meter",
    ])
    .await;
    assert!(r.is_err(), "{out}");
    assert!(
        out.contains("the unit id may be wrong (configured unit 3"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_exception_timeout_or_refused() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let port = din.addr.port().to_string();
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "-r",
        "input:500:f32",
    ])
    .await;
    assert!(
        out.contains("exception 0x02 (illegal data address"),
        "{out}"
    );
    assert_eq!(r, Err("1 read(s) failed".into()));

    din.set_faults(Faults {
        silent: true,
        delay: None,
    });
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--timeout-ms",
        "150",
        "-r",
        "input:0:f32",
    ])
    .await;
    assert!(out.contains("timeout: no answer within 150ms"), "{out}");
    assert!(r.is_err());

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port().to_string()
    };
    let (_, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &closed,
        "-r",
        "holding:0",
    ])
    .await;
    let e = r.expect_err("nothing listens");
    assert!(e.contains("connection refused"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunspec_lists_the_models_and_skips_unknown_ones() {
    let inv = start(SimMeter::SunSpecInverter(InverterParams::default())).await;
    let port = inv.addr.port().to_string();
    let (out, r) = cli(&["sunspec", "--host", "127.0.0.1", "--port", &port]).await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("SunS marker at 40000"), "{out}");
    assert!(out.contains("serial \"SIM-INV-0001\""), "{out}");
    assert!(
        out.contains("model   103 at 40070,  50 registers\n"),
        "{out}"
    );
    assert!(
        out.contains("model 64100 at 40229,   4 registers  (not decoded: skipped)"),
        "{out}"
    );
    assert!(
        out.contains("inverter_ac_frequency") && out.contains("50000 mHz"),
        "{out}"
    );
    // VA is "not implemented" in the simulator; it is not a profile point,
    // but the energy counter is and must be a number.
    assert!(out.contains("inverter_ac_energy"), "{out}");
    assert!(
        out.contains("model   203 at 40122, 105 registers\n"),
        "{out}"
    );
    assert!(
        out.contains("meter_frequency") && out.contains("meter_export_energy"),
        "{out}"
    );
    let (out, r) = cli(&[
        "read",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--profile",
        "sunspec",
    ])
    .await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(
        out.contains("SunSpec models skipped, not in the profile: [64100]"),
        "{out}"
    );
    assert!(
        out.contains("inverter_ac_voltage_a") && out.contains("230000 mV"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_the_one_unit_that_answers() {
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    let port = din.addr.port().to_string();
    let (out, r) = tokio::time::timeout(
        Duration::from_secs(20),
        cli(&[
            "scan",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "1",
            "--to",
            "6",
            "--probe",
            "input:0",
            "--timeout-ms",
            "200",
        ]),
    )
    .await
    .expect("scan finishes");
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("1 unit(s) answer with data: [1]"), "{out}");
    // A probe register the meter does not have: unit 1 answers exception
    // 0x02, which is listed but not counted as a unit found.
    let (out, r) = cli(&[
        "scan",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "1",
        "--to",
        "2",
        "--probe",
        "input:500",
        "--timeout-ms",
        "200",
    ])
    .await;
    assert_eq!(r, Ok(()), "{out}");
    assert!(out.contains("0 unit(s) answer with data: []"), "{out}");
    assert!(
        out.contains("unit   1: answers with exception 0x02") && out.contains("not counted"),
        "{out}"
    );
    assert!(
        out.contains("1 unit(s) answer only with exceptions: [1]"),
        "{out}"
    );
}
