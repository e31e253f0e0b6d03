//! The diagnostics page in a real browser: headless Chromium (Debian package,
//! installed by `scripts/install-test-deps.sh`) loads the pages of a running
//! site at 1400 px and at 400 px (a phone), driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: JSON messages separated
//! by NUL on file descriptors 3 and 4, no WebSocket, no extra crate), and
//! assertions on the rendered page check: no horizontal overflow, values in
//! display units, the health banner, a chart with time and value axes and a
//! unit, a gap drawn as a gap, unavailable values, the 24 h range, the
//! quarantine page with hex and text, and the script-driven MQTT tail.
//! Screenshots are taken too; with `MRV_UPDATE_SCREENSHOTS=1` they replace
//! `docs/screenshot-*.png`.

mod diagnostics_support;

use diagnostics_support::{DIAG_LOOPBACK, start_site};
use mrv_firmware::sim::Faults;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const CHROMIUM: &str = "chromium";

/// A browser driven over the DevTools protocol on a pipe.
struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        // fd 3: commands to the browser (our stdin pipe); fd 4: its answers
        // (our stdout pipe). The shell moves them there, then execs.
        let script = format!(
            "exec 3<&0 4>&1 </dev/null >/dev/null; exec {CHROMIUM} --headless --no-sandbox --disable-gpu \
             --disable-quic --no-first-run --disable-background-networking --disable-component-update \
             --disable-sync --hide-scrollbars --remote-debugging-pipe --user-data-dir={} about:blank",
            profile.path().display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut b = Browser {
            _child: child,
            _profile: profile,
            input,
            output,
            next_id: 0,
            session: String::new(),
        };
        let t = b
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target = t["targetId"].as_str().expect("targetId").to_string();
        let s = b
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        b.session = s["sessionId"].as_str().expect("sessionId").to_string();
        b
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.input
            .write_all(&bytes)
            .await
            .expect("write to chromium");
        self.input.flush().await.expect("flush");
        let read = async {
            loop {
                let mut buf = Vec::new();
                let n = self
                    .output
                    .read_until(0, &mut buf)
                    .await
                    .expect("read from chromium");
                assert!(n > 0, "chromium closed the pipe");
                buf.pop();
                let v: Value = serde_json::from_slice(&buf).expect("a DevTools message");
                if v["id"] == id {
                    assert!(v["error"].is_null(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
    }

    async fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call(Some(&s), method, params).await
    }

    /// Evaluates `expr` in the page and returns its JSON value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Opens `url` at `width` px and waits until it is loaded and the
    /// page's script had a moment to run.
    async fn open(&mut self, url: &str, width: u32) {
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
        self.page("Page.navigate", json!({"url": url})).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let state = self.eval("document.readyState + ' ' + location.href").await;
            if state
                .as_str()
                .is_some_and(|s| s == format!("complete {url}"))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} did not load: {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // app.js polls the tail once a second: wait for its first answer.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    /// Page width vs viewport width.
    async fn overflow(&mut self) -> (i64, i64) {
        let v = self
            .eval("[document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        (v[0].as_i64().expect("w"), v[1].as_i64().expect("w"))
    }

    async fn screenshot(&mut self, to: &std::path::Path) {
        let r = self
            .page("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(png.len() > 10_000, "suspiciously small screenshot");
        std::fs::write(to, png).expect("write screenshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_at_desktop_and_phone_width_in_headless_chromium() {
    if !mrv_e2e::require_tool(CHROMIUM) {
        return;
    }
    // dev-001 sends some garbage (quarantine); dev-002's sensor is
    // unplugged (its values are unavailable).
    let faults = |i: usize| match i {
        1 => Faults {
            garbage_every_frames: Some(4),
            ..Faults::default()
        },
        2 => Faults {
            unplugged: true,
            ..Faults::default()
        },
        _ => Faults::default(),
    };
    let run = start_site(4, DIAG_LOOPBACK, faults, 15, None).await;
    // The devices sent all they will: two minutes later the charts show the
    // silence since as a gap.
    run.clock.advance(120_000);
    let b = run.base.clone();
    let mut br = Browser::start().await;

    for width in [1400, 400] {
        br.open(&format!("{b}/"), width).await;
        let (scroll, view) = br.overflow().await;
        assert!(
            scroll <= view,
            "overview overflows at {width} px: {scroll} > {view}"
        );
        let v = br
            .eval(
                "({rows: document.querySelectorAll('tr.device-row').length, \
                  values: [...document.querySelectorAll('.val b')].map(e => e.textContent), \
                  health: [...document.querySelectorAll('#health .hitem')].map(e => e.dataset.part), \
                  rowsFit: [...document.querySelectorAll('tr.device-row')].every(r => r.getBoundingClientRect().right <= window.innerWidth + 1)})",
            )
            .await;
        assert_eq!(v["rows"], 4, "{v}");
        assert_eq!(
            v["health"],
            json!(["ingest", "buffer", "reports", "upload", "clock"]),
            "{v}"
        );
        assert_eq!(v["rowsFit"], true, "device rows fit at {width} px: {v}");
        let values: Vec<&str> = v["values"]
            .as_array()
            .expect("values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(!values.is_empty(), "{v}");
        for text in &values {
            for base in ["0.01degC", "0.01%vol", "mV", "mHz", "bool"] {
                assert!(!text.contains(base), "base unit in {text:?}");
            }
        }
        assert!(
            values.iter().any(|t| *t == "on" || *t == "off"),
            "a status reads on/off, not 1/0: {values:?}"
        );
        assert!(
            values.contains(&"unavailable"),
            "unplugged sensor: {values:?}"
        );

        for dev in ["dev-000", "dev-002"] {
            br.open(&format!("{b}/devices/{dev}"), width).await;
            let (scroll, view) = br.overflow().await;
            assert!(
                scroll <= view,
                "{dev} overflows at {width} px: {scroll} > {view}"
            );
            let c = br
                .eval(
                    "(() => { const s = document.querySelector('svg.chart'); const r = s.getBoundingClientRect(); \
                      return {title: document.getElementById('range-title').textContent, label: s.getAttribute('aria-label'), \
                      xticks: s.querySelectorAll('text.tick-x').length, yticks: s.querySelectorAll('text.tick-y').length, \
                      unit: (s.querySelector('text.unit') || {}).textContent, gaps: s.querySelectorAll('rect.gap').length, \
                      unavail: document.querySelectorAll('svg.chart rect.unavail').length, \
                      lines: s.querySelectorAll('path.line').length, fits: r.right <= window.innerWidth + 1 && r.width > 200, \
                      tail: document.querySelectorAll('#tail span.stored').length}; })()",
                )
                .await;
            assert_eq!(c["title"], "Last hour", "{c}");
            assert!(
                c["label"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("Last hour")),
                "{c}"
            );
            assert!(c["xticks"].as_u64() >= Some(3), "time axis: {c}");
            assert_eq!(c["fits"], true, "chart fits at {width} px: {c}");
            assert!(
                c["tail"].as_u64() >= Some(1),
                "tail lines appended by app.js: {c}"
            );
            assert!(c["gaps"].as_u64() >= Some(1), "the silence is a gap: {c}");
            if dev == "dev-000" {
                assert!(c["yticks"].as_u64() >= Some(2), "value axis: {c}");
                assert!(c["unit"].as_str().is_some_and(|u| !u.is_empty()), "{c}");
                assert!(c["lines"].as_u64() >= Some(1), "{c}");
            } else {
                assert!(
                    c["unavail"].as_u64() >= Some(1),
                    "unavailable values marked: {c}"
                );
            }
        }

        br.open(&format!("{b}/devices/dev-000?range=24h"), width)
            .await;
        let r = br
            .eval("({title: document.getElementById('range-title').textContent, range: document.querySelector('svg.chart').dataset.range, active: document.querySelector('nav.ranges a.active').textContent})")
            .await;
        assert_eq!(
            r,
            json!({"title": "Last 24 hours", "range": "24h", "active": "24 h"}),
            "{r}"
        );

        br.open(&format!("{b}/quarantine"), width).await;
        let (scroll, view) = br.overflow().await;
        assert!(
            scroll <= view,
            "quarantine overflows at {width} px: {scroll} > {view}"
        );
        let q = br
            .eval("({n: document.querySelectorAll('.qentry').length, hex: (document.querySelector('pre.hex') || {}).textContent || '', device: (document.querySelector('.qentry h3 a') || {}).textContent})")
            .await;
        assert!(q["n"].as_u64() >= Some(1), "{q}");
        assert!(
            q["hex"]
                .as_str()
                .is_some_and(|h| h.starts_with("00000000  ")),
            "{q}"
        );
        assert_eq!(q["device"], "dev-001", "{q}");

        for p in ["/events", "/logs", "/modbus"] {
            br.open(&format!("{b}{p}"), width).await;
            let (scroll, view) = br.overflow().await;
            assert!(
                scroll <= view,
                "{p} overflows at {width} px: {scroll} > {view}"
            );
        }
    }

    let dir = if std::env::var_os("MRV_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        std::env::temp_dir().join(format!("mrv-screens-{}", std::process::id()))
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    br.open(&format!("{b}/"), 1280).await;
    br.screenshot(&dir.join("screenshot-overview.png")).await;
    br.open(&format!("{b}/devices/dev-000"), 1280).await;
    br.screenshot(&dir.join("screenshot-device.png")).await;
    br.open(&format!("{b}/devices/dev-000"), 400).await;
    br.screenshot(&dir.join("screenshot-phone.png")).await;
    let _ = br.call(None, "Browser.close", json!({})).await;
    run.stop().await;
}
