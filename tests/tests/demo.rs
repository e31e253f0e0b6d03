//! The README's main command: `demo` runs a whole site on embedded defaults
//! and reports progress; here it runs briefly as a child process.

use std::process::Command;

#[test]
fn demo_site_collects_from_every_device_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args([
            "--log",
            "warn",
            "demo",
            "--duration",
            "8",
            "--interval-ms",
            "100",
            "--diagnostics-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // 4 simulated devices + 2 Modbus meters, all seen within the run.
    let last = stdout
        .lines()
        .rfind(|l| l.contains("online"))
        .expect("progress lines");
    assert!(last.contains("devices 6/6 online"), "{last}");
    let stored: u64 = last
        .split("stored ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("stored frame count");
    assert!(stored > 20, "{last}");
    assert!(stdout.contains("MRV backend"), "{stdout}");
    // The saved config names the port the page really listened on.
    let url = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("diagnostics   http://"))
        .expect("diagnostics line in the banner");
    let addr = url.trim_end_matches('/');
    let saved = std::fs::read_to_string(dir.path().join("gateway.toml")).expect("saved config");
    assert!(
        saved.contains(&format!("[diagnostics]\nlisten = \"{addr}\"")),
        "banner says {addr}, config says:\n{saved}"
    );
    assert!(dir.path().join("buffer").exists() && dir.path().join("keys/gateway.key").exists());
}
