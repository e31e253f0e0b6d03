//! systemd integration of `mrv-gateway run`: with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` set (as systemd does for `Type=notify` + `WatchdogSec`),
//! the gateway sends `READY=1` once it runs and then `WATCHDOG=1` pings; on
//! SIGTERM it sends `STOPPING=1` and exits cleanly. The "systemd" here is a Unix datagram socket
//! the test reads.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, gateway_bin};
use std::time::Duration;
use tokio::net::UnixDatagram;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_ready_and_pings_the_watchdog() {
    let site = diagnostics_support::site(1, DIAG_LOOPBACK);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let mut child = tokio::process::Command::new(gateway_bin())
        .arg("run")
        .arg("--config")
        .arg(&site.config_path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(true)
        .spawn()
        .expect("start the gateway");
    let mut ready = false;
    let mut pings = 0;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(ready && pings >= 2) {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .expect("notifications within 60 s")
            .expect("recv");
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.lines().any(|l| l == "READY=1") {
            assert!(!ready, "READY sent twice");
            ready = true;
        }
        if msg.lines().any(|l| l == "WATCHDOG=1") {
            assert!(ready, "watchdog ping before READY=1: {msg}");
            pings += 1;
        }
    }
    let pid = child.id().expect("running").to_string();
    let st = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(st.success());
    // systemd is told the gateway is stopping before it exits.
    let stopping = async {
        loop {
            let n = sock.recv(&mut buf).await.expect("recv");
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "STOPPING=1")
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("STOPPING=1 after SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s after SIGTERM")
        .expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}
