//! Shared set-up of the report tests: a real sled buffer filled with signed
//! synthetic PV frames, a report context over it with a manual clock, and
//! helpers to tamper with signed reports.

#![allow(dead_code)]

use mrv_gateway::buffer::{Buffer, BufferConfig, Incoming};
use mrv_gateway::clock::ManualClock;
use mrv_gateway::keys::{generate, load_signing_key};
use mrv_gateway::report::builder::Identity;
use mrv_gateway::report::config::{DeviceReportSettings, ReportSection};
use mrv_gateway::report::store::ReportStore;
use mrv_gateway::report::synthetic::{PvSite, pv_calculation, pv_devices, pv_frames};
use mrv_gateway::report::{ReportContext, build_due_reports};
use mrv_shared::ids::SiteId;
use mrv_shared::report::model::Period;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// 2025-11-26T00:00:00Z.
pub const T0: u64 = 1_764_115_200_000;
/// Ten minutes.
pub const PERIOD_MS: u64 = 600_000;

/// Two meters, a sample every 10 s, frames of 6 samples, 25 Wh per sample.
pub const SITE: PvSite = PvSite {
    devices: 2,
    interval_ms: 10_000,
    samples_per_frame: 6,
    wh_per_sample: 25,
    epoch_ms: T0,
};

/// The `n`-th period (0-based) from [`T0`].
pub fn period(n: u64) -> Period {
    Period {
        start_ms: T0 + n * PERIOD_MS,
        end_ms: T0 + (n + 1) * PERIOD_MS,
    }
}

/// The site id.
pub fn site_id() -> SiteId {
    SiteId::new("th-solar-01").expect("valid id")
}

/// A test site: data dir, buffer, context, clock, public key file.
pub struct TestSite {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The buffer.
    pub buffer: Buffer,
    /// The context.
    pub ctx: ReportContext,
    /// The clock.
    pub clock: ManualClock,
    /// Gateway public JWK.
    pub public_jwk: PathBuf,
}

/// The `[report]` section of the test site.
pub fn section() -> ReportSection {
    let mut s = ReportSection {
        period_minutes: 10,
        grace_seconds: 30,
        ..ReportSection::default()
    };
    for d in 0..SITE.devices {
        s.devices.insert(
            format!("pv-{d:04}"),
            DeviceReportSettings {
                sample_interval_ms: Some(SITE.interval_ms),
                counter_modulus: Some(1 << 32),
            },
        );
    }
    s
}

/// Opens a buffer in `data_dir/buffer`.
pub fn open_buffer(data_dir: &Path) -> Buffer {
    Buffer::open(BufferConfig {
        path: data_dir.join("buffer"),
        max_bytes: 256 << 20,
        cache_bytes: 8 << 20,
        keep_delivered: Duration::from_secs(3600),
    })
    .expect("buffer opens")
}

/// A context over `buffer` with the gateway key in `data_dir/keys`.
pub fn context(data_dir: &Path, buffer: Buffer, clock: ManualClock) -> ReportContext {
    let (kid, signing_key) =
        load_signing_key(&data_dir.join("keys/gw-th-01.key")).expect("key loads");
    let section = section();
    ReportContext {
        identity: Identity {
            site: site_id(),
            project: String::from("JCM-TH-0042"),
            methodology_ref: String::from("TH_AM001 ver01.0"),
            gateway: String::from("gw-th-01"),
            kid,
        },
        calculations: vec![pv_calculation(&SITE)],
        devices: pv_devices(&SITE)
            .into_iter()
            .map(|mut d| {
                d.sample_interval_ms = section.devices[d.id.as_str()].sample_interval_ms;
                d
            })
            .collect(),
        section,
        signing_key,
        buffer,
        store: ReportStore::open(data_dir).expect("store opens"),
        clock: Arc::new(clock),
        time_sync: None,
    }
}

impl TestSite {
    /// A fresh site with a generated gateway key.
    pub fn new() -> TestSite {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(&dir.path().join("keys"), "gw-th-01").expect("keygen");
        let buffer = open_buffer(dir.path());
        let clock = ManualClock::new(T0);
        let ctx = context(dir.path(), buffer.clone(), clock.clone());
        TestSite {
            dir,
            buffer,
            ctx,
            clock,
            public_jwk: files.public,
        }
    }

    /// Appends the frames of period `n` to the buffer, as received.
    pub fn receive_period(&self, n: u64) {
        let frames = pv_frames(&SITE, &site_id(), period(n));
        let incoming = frames
            .into_iter()
            .map(|f| Incoming {
                frame: f.frame,
                received_ms: f.received_ms,
            })
            .collect();
        let r = self.buffer.append(incoming).expect("append");
        assert!(
            r.outcomes
                .iter()
                .all(|o| matches!(o, mrv_gateway::buffer::AppendOutcome::Stored)),
            "{:?}",
            r.outcomes
        );
    }

    /// Builds the reports due at the end of period `n` plus grace.
    pub fn close_through(&self, n: u64) -> Vec<mrv_gateway::report::ReportInfo> {
        let now = period(n).end_ms + 30_000;
        self.clock.set(now);
        build_due_reports(&self.ctx, now).expect("reports build")
    }

    /// Report files, in seq order.
    pub fn report_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.ctx.store.dir())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jws"))
            .collect();
        v.sort();
        v
    }
}

/// Public keys of the site.
pub fn keys(site: &TestSite) -> mrv_shared::report::KeySet {
    mrv_gateway::keys::load_public_keys(std::slice::from_ref(&site.public_jwk)).expect("keys")
}

/// The site's device registry, as verifiers trust it.
pub fn trust() -> mrv_shared::report::DeviceTrust {
    mrv_gateway::report::synthetic::pv_trust(&SITE)
}

/// The payload of a compact JWS as JSON.
pub fn payload(jws: &[u8]) -> serde_json::Value {
    let parsed = mrv_shared::report::jws::parse_compact(jws).expect("compact JWS");
    serde_json::from_slice(&parsed.payload).expect("JSON payload")
}

/// Re-signs a (possibly altered) payload with `key` under `kid`.
pub fn resign(payload: &serde_json::Value, kid: &str, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let bytes = mrv_shared::report::canonical::canonicalize(payload).expect("canonical");
    mrv_shared::report::jws::sign_compact(&bytes, kid, key).into_bytes()
}

/// Replaces the payload but keeps the original header and signature.
pub fn swap_payload(jws: &[u8], payload: &serde_json::Value) -> Vec<u8> {
    let text = std::str::from_utf8(jws).expect("ascii");
    let parts: Vec<&str> = text.split('.').collect();
    let bytes = mrv_shared::report::canonical::canonicalize(payload).expect("canonical");
    format!(
        "{}.{}.{}",
        parts[0],
        mrv_shared::report::jwk::b64(&bytes),
        parts[2]
    )
    .into_bytes()
}
