//! The diagnostics page in a real browser: headless Chromium (Debian package,
//! installed by `scripts/install-test-deps.sh`) loads the pages of a running
//! site, and assertions on the rendered DOM check that device rows, values,
//! an SVG chart and the script-driven MQTT tail are there. Screenshots are
//! taken too; with `MRV_UPDATE_SCREENSHOTS=1` they replace
//! `docs/screenshot-*.png`.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, start_site};
use mrv_firmware::sim::Faults;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHROMIUM: &str = "chromium";

async fn chromium(args: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium runs")
}

async fn dump_dom(url: &str) -> String {
    let out = chromium(&["--dump-dom".into(), url.into()]).await;
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("DOM is UTF-8")
}

async fn screenshot(url: &str, to: &Path) {
    let out = chromium(&[
        "--window-size=1280,900".into(),
        format!("--screenshot={}", to.display()),
        url.into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(to).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "suspiciously small screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_devices_values_and_charts_in_headless_chromium() {
    if !mrv_e2e::require_tool(CHROMIUM) {
        return;
    }
    let run = start_site(4, DIAG_LOOPBACK, |_| Faults::default(), 15, None).await;
    let b = run.base.clone();

    let dom = dump_dom(&format!("{b}/")).await;
    assert_eq!(
        dom.matches("class=\"device-row st-ok\"").count(),
        4,
        "four ok device rows:\n{dom}"
    );
    for i in 0..4 {
        assert!(
            dom.contains(&format!("data-device=\"dev-{i:03}\"")),
            "{dom}"
        );
    }
    // Values with units are in the value cells.
    assert!(dom.contains("<span class=\"val\" data-channel="), "{dom}");
    assert!(dom.contains(" Wh</b>") || dom.contains(" W</b>"), "{dom}");
    assert!(
        dom.contains("id=\"buffer-depth\">60<"),
        "buffer depth shown: {dom}"
    );

    let dom = dump_dom(&format!("{b}/devices/dev-000")).await;
    assert!(dom.contains("<svg class=\"chart\""), "{dom}");
    assert!(dom.contains("<path class=\"line\" d=\"M"), "{dom}");
    // The script ran in the browser and filled the MQTT tail from the API.
    assert!(
        dom.contains("<span class=\"stored\">"),
        "tail lines appended by app.js:\n{dom}"
    );

    let dir = if std::env::var_os("MRV_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        std::env::temp_dir().join(format!("mrv-screens-{}", std::process::id()))
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    screenshot(&format!("{b}/"), &dir.join("screenshot-overview.png")).await;
    screenshot(
        &format!("{b}/devices/dev-000"),
        &dir.join("screenshot-device.png"),
    )
    .await;
    run.stop().await;
}
