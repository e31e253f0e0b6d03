//! Shared by the `diagnostics_*` tests: a running gateway (in-process, real
//! embedded broker, real sled buffer, diagnostics on `127.0.0.1:0`) fed by
//! simulated signed devices, and a small HTTP helper.

#![allow(dead_code)]

use mrv_e2e::TestSite;
use mrv_firmware::sim::{Faults, SimHandle};
use mrv_gateway::clock::{Clock, ManualClock, SystemClock};
use mrv_gateway::runtime::RunningGateway;
use std::sync::Arc;
use std::time::Duration;

/// Diagnostics on a free loopback port.
pub const DIAG_LOOPBACK: &str = "\n[diagnostics]\nlisten = \"127.0.0.1:0\"\n";

/// A registered device that never sends.
pub const GHOST_DEVICE: &str =
    "\n[[devices]]\nid = \"ghost-01\"\nkind = \"solar_meter\"\nserial = \"GHOST-1\"\n";

/// A test site whose `[diagnostics]` section is the one in `extra` (the
/// shared `TestSite` may add a default one; it is dropped here so the
/// section is not defined twice).
pub fn site(n: usize, extra: &str) -> TestSite {
    let site = TestSite::new(n, extra);
    if extra.contains("[diagnostics]") {
        let text = std::fs::read_to_string(&site.config_path).expect("read config");
        let default = "\n[diagnostics]\nlisten = \"127.0.0.1:0\"\n";
        if text.matches("[diagnostics]").count() > 1 {
            let text = text.replacen(default, "\n", 1);
            std::fs::write(&site.config_path, text).expect("write config");
        }
    }
    site
}

/// A running site.
pub struct Running {
    /// The site (keeps the temp dir alive).
    pub site: TestSite,
    /// The gateway.
    pub gw: RunningGateway,
    /// The devices.
    pub sim: SimHandle,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The gateway's clock (starts at the system time).
    pub clock: ManualClock,
}

impl Running {
    /// Stops devices and gateway.
    pub async fn stop(self) {
        self.sim.stop().await;
        self.gw.shutdown().await;
    }
}

/// Starts a site of `n` signed devices with `extra` config, device `i`
/// getting `faults(i)`; waits until every device's `frames` frames are acked.
pub async fn start_site(
    n: usize,
    extra: &str,
    faults: impl Fn(usize) -> Faults,
    frames: u64,
    credentials: Option<(String, String)>,
) -> Running {
    let site = site(n, extra);
    let clock = ManualClock::new(SystemClock.now_ms());
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    let addr = gw.state.diagnostics_addr.expect("diagnostics listening");
    let mut cfg = site.sim_config(site.mqtt_port, 3, Duration::from_millis(5), Some(frames));
    for (i, d) in cfg.devices.iter_mut().enumerate() {
        d.faults = faults(i);
    }
    cfg.credentials = credentials;
    let sim = mrv_firmware::sim::start(cfg)
        .await
        .expect("simulator starts");
    assert!(
        sim.wait_all_acked(Duration::from_secs(60)).await,
        "not every frame was acked: {:?}",
        sim.stats().totals
    );
    Running {
        site,
        gw,
        sim,
        base: format!("http://{addr}"),
        clock,
    }
}

/// A plain HTTP client (no redirects followed, so 303s can be checked).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET `url` with an optional bearer token: status and body.
pub async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut r = client().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// GET and parse JSON, asserting 200.
pub async fn get_json(url: &str, token: Option<&str>) -> serde_json::Value {
    let (s, body) = get(url, token).await;
    assert_eq!(s, 200, "{url}: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

/// The gateway CLI built by the e2e crate.
pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mrv-e2e-gateway")
}
