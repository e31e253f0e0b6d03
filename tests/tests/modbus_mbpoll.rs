//! `mbpoll` (Debian's Modbus master, a peer we did not write) reads our
//! simulated meters: the DIN-rail meter's float input registers and the
//! inverter's SunSpec marker and model chain head.
//!
//! Needs `mbpoll` (`scripts/install-test-deps.sh`). Without it the test is
//! skipped loudly, except under `CI`, where a missing tool fails.

use mrv_firmware::meters::{
    self, MeterHandle, SimClock, SimMeter, din_meter::DinMeterParams,
    sunspec_inverter::InverterParams,
};
use tokio::net::TcpListener;
use tokio::process::Command;

const NOON_MS: u64 = 1_767_225_600_000 + 12 * 3_600_000;

fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is missing under CI: run scripts/install-test-deps.sh");
        }
        eprintln!("SKIPPED: {tool} is not installed (run scripts/install-test-deps.sh)");
    }
    found
}

async fn start(meter: SimMeter) -> MeterHandle {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    meters::serve(l, meter, 1, SimClock::new(NOON_MS, 1.0)).expect("serve")
}

async fn mbpoll(port: u16, args: &[&str]) -> String {
    let out = Command::new("mbpoll")
        .args(["-m", "tcp", "-a", "1", "-0", "-1", "-o", "2", "-p"])
        .arg(port.to_string())
        .args(args)
        .arg("127.0.0.1")
        .output()
        .await
        .expect("mbpoll runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "mbpoll failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The values mbpoll printed, as `(reference, text)`.
fn values(out: &str) -> Vec<(u32, String)> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix('[')?;
            let (r, v) = rest.split_once("]:")?;
            Some((r.parse().ok()?, v.trim().to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_the_din_meter_floats() {
    if !have("mbpoll") {
        return;
    }
    let din = start(SimMeter::DinMeter(DinMeterParams::default())).await;
    // Frequency (70) and import energy (72), big-endian floats.
    let out = mbpoll(
        din.addr.port(),
        &["-t", "3:float", "-B", "-r", "70", "-c", "2"],
    )
    .await;
    let v = values(&out);
    assert_eq!(v.len(), 2, "{out}");
    assert_eq!(v[0].0, 70);
    assert_eq!(v[0].1.parse::<f64>().expect("a number"), 50.0, "{out}");
    let kwh: f64 = v[1].1.parse().expect("a number");
    assert!((1234.5..1234.7).contains(&kwh), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_the_sunspec_marker_and_chain() {
    if !have("mbpoll") {
        return;
    }
    let inv = start(SimMeter::SunSpecInverter(InverterParams::default())).await;
    let out = mbpoll(inv.addr.port(), &["-t", "4:hex", "-r", "40000", "-c", "4"]).await;
    let v = values(&out);
    let words: Vec<&str> = v.iter().map(|(_, s)| s.as_str()).collect();
    // "SunS", then model 1 with length 66.
    assert_eq!(words, ["0x5375", "0x6E53", "0x0001", "0x0042"], "{out}");
    let out = mbpoll(inv.addr.port(), &["-t", "4", "-r", "40070", "-c", "2"]).await;
    let v = values(&out);
    assert_eq!(
        v,
        [(40070, "103".to_string()), (40071, "50".to_string())],
        "{out}"
    );
}
