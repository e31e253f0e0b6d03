//! Shared by the upload and receiver tests (and `receiver/tests/`, which
//! includes this file by path): a signed report chain in a real
//! [`ReportStore`], a test PKI (CA, server and client certificates made at
//! test time with rcgen), a receiver on `127.0.0.1:0`, an uploader task, and
//! a TCP fault proxy (a real peer that resets or stalls connections).

#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use mrv_gateway::clock::SystemClock;
use mrv_gateway::report::builder::{self, BuildInput, Identity};
use mrv_gateway::report::signer;
use mrv_gateway::report::store::{ReportMeta, ReportStore};
use mrv_gateway::report::synthetic::{PvSite, pv_calculation, pv_devices, pv_frames};
use mrv_gateway::upload::config::UploadConfig;
use mrv_gateway::upload::{UploadContext, UploadStatus, run_upload_task};
use mrv_receiver::tls::TlsSettings;
use mrv_receiver::{ReceiverConfig, RunningReceiver};
use mrv_shared::ids::SiteId;
use mrv_shared::report::jwk::Jwk;
use mrv_shared::report::model::{ClockState, GENESIS_PREV_HASH, Period, Point};
use mrv_shared::report::series::{SeriesKey, next_baselines};
use mrv_shared::report::{KeySet, hex};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// 2025-11-26T00:00:00Z.
pub const T0: u64 = 1_764_115_200_000;
/// Gateway id of the test chain.
pub const GATEWAY: &str = "gw-test";
/// Key id of the test chain.
pub const KID: &str = "gw-test-2025";

/// Installs the ring provider (reqwest is built with `rustls-no-provider`).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A signed chain in a report store.
pub struct TestChain {
    /// Keeps the store directory alive.
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: ReportStore,
    /// Gateway signing key.
    pub key: SigningKey,
    /// Every report built, byte for byte, index = seq - 1.
    pub reports: Vec<Vec<u8>>,
    identity: Identity,
    site: PvSite,
    period_ms: u64,
    baselines: BTreeMap<SeriesKey, Point>,
    positions: BTreeMap<mrv_shared::ids::DeviceId, u64>,
    prev_hash: String,
    persist: bool,
}

impl TestChain {
    /// An empty chain: `devices` PV meters sampling every `interval_ms`,
    /// reports of `period_ms`.
    pub fn new(devices: usize, interval_ms: u64, period_ms: u64) -> TestChain {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ReportStore::open(dir.path()).expect("open store");
        TestChain {
            dir,
            store,
            key: SigningKey::from_bytes(&[42u8; 32]),
            reports: Vec::new(),
            identity: Identity {
                site: SiteId::new("th-solar-01").expect("valid"),
                project: String::from("JCM-TH-0042"),
                methodology_ref: String::from("TH_AM001 ver01.0"),
                gateway: String::from(GATEWAY),
                kid: String::from(KID),
            },
            site: PvSite {
                devices,
                interval_ms,
                samples_per_frame: 60,
                wh_per_sample: 2,
                epoch_ms: T0,
            },
            period_ms,
            baselines: BTreeMap::new(),
            positions: BTreeMap::new(),
            prev_hash: String::from(GENESIS_PREV_HASH),
            persist: true,
        }
    }

    /// Signs with `key` under `kid` from now on.
    pub fn set_signer(&mut self, key: SigningKey, kid: &str) {
        self.key = key;
        self.identity.kid = kid.to_string();
    }

    /// Reports are built and signed but not put in the store (fast: no
    /// fsync), for tests that upload them by hand.
    pub fn unstored(mut self) -> TestChain {
        self.persist = false;
        self
    }

    /// Reports claim to come from `gateway` from now on.
    pub fn set_gateway(&mut self, gateway: &str) {
        self.identity.gateway = gateway.to_string();
    }

    /// The gateway the reports claim to come from.
    pub fn reports_gateway(&self) -> &str {
        &self.identity.gateway
    }

    /// Readings per report.
    pub fn readings_per_report(&self) -> u64 {
        self.site.devices as u64 * (self.period_ms / self.site.interval_ms)
    }

    /// Builds, signs and stores `n` more reports.
    pub fn extend(&mut self, n: usize) {
        let devices = pv_devices(&self.site);
        let calcs = [pv_calculation(&self.site)];
        for _ in 0..n {
            let seq = self.reports.len() as u64 + 1;
            let start = T0 + (seq - 1) * self.period_ms;
            let period = Period {
                start_ms: start,
                end_ms: start + self.period_ms,
            };
            let frames = pv_frames(&self.site, &self.identity.site, period);
            let report = builder::build(BuildInput {
                identity: &self.identity,
                period,
                seq,
                prev_hash: self.prev_hash.clone(),
                clock: ClockState {
                    source: String::from("ntp"),
                    last_sync_ms: None,
                    max_skew_ms: 0,
                },
                devices: &devices,
                frames,
                events: vec![],
                calculations: &calcs,
                baselines: self.baselines.clone(),
                awd_start: Default::default(),
                positions: self.positions.clone(),
                // Every meter reports in every period.
                silent_before: Default::default(),
            })
            .expect("report builds");
            let signed = signer::sign(&report, &self.identity.kid, &self.key).expect("signs");
            let meta = ReportMeta {
                seq,
                report_id: report.header.report_id.clone(),
                hash: hex(&signed.hash),
                period,
                cursor: None,
                last_event_id: None,
                readings: report.readings.count,
                er: report
                    .calculations
                    .iter()
                    .map(|c| (c.id.clone(), c.er.exact.clone()))
                    .collect(),
                next_baselines: None,
            };
            if self.persist {
                self.store.put(&meta, &signed.bytes).expect("stored");
            }
            self.baselines = next_baselines(&self.baselines, &report.series);
            self.positions = mrv_shared::report::continuity::positions(&report.continuity);
            self.prev_hash = hex(&signed.hash);
            self.reports.push(signed.bytes);
        }
    }

    /// The gateway's public key as the receiver registers it.
    pub fn keys(&self) -> KeySet {
        let mut k = KeySet::new();
        k.insert(&self.identity.kid, self.key.verifying_key());
        k
    }

    /// The public JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk::public(&self.identity.kid, &self.key.verifying_key())
    }
}

/// A CA with a server certificate for `localhost` and a client certificate.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Server certificate (SAN `localhost` only), PEM.
    pub server_cert_pem: String,
    /// Server key, PEM.
    pub server_key_pem: String,
    /// Client certificate, PEM.
    pub client_cert_pem: String,
    /// Client key, PEM.
    pub client_key_pem: String,
}

impl Pki {
    /// A fresh PKI.
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "MRV test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, client: bool| {
            let key = KeyPair::generate().expect("leaf key");
            let mut p = CertificateParams::new(names).expect("leaf params");
            p.extended_key_usages = vec![if client {
                rcgen::ExtendedKeyUsagePurpose::ClientAuth
            } else {
                rcgen::ExtendedKeyUsagePurpose::ServerAuth
            }];
            let cert = p.signed_by(&key, &issuer).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) = leaf(vec![String::from("localhost")], false);
        let (client_cert_pem, client_key_pem) = leaf(vec![String::from("gw-test")], true);
        Pki {
            ca_pem: ca_cert.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    /// Writes the PEM files into `dir` (ca.pem, server.pem, server.key,
    /// client.pem, client.key).
    pub fn write(&self, dir: &Path) {
        for (name, text) in [
            ("ca.pem", &self.ca_pem),
            ("server.pem", &self.server_cert_pem),
            ("server.key", &self.server_key_pem),
            ("client.pem", &self.client_cert_pem),
            ("client.key", &self.client_key_pem),
        ] {
            std::fs::write(dir.join(name), text).expect("write PEM");
        }
    }

    /// Server TLS settings (mTLS when `require_client_cert`).
    pub fn server_tls(&self, require_client_cert: bool) -> TlsSettings {
        let dir = tempfile::tempdir().expect("tempdir");
        self.write(dir.path());
        let p = |n: &str| dir.path().join(n);
        TlsSettings::from_pem_files(
            &p("server.pem"),
            &p("server.key"),
            require_client_cert.then(|| p("ca.pem")).as_deref(),
        )
        .expect("server TLS settings")
    }

    /// Uploader settings trusting this CA, with the client identity when
    /// `client_cert`.
    pub fn upload_config(&self, url: &str, token: Option<&str>, client_cert: bool) -> UploadConfig {
        let mut c = UploadConfig::for_url(url);
        c.ca_pem = Some(self.ca_pem.clone().into_bytes());
        c.token = token.map(str::to_string);
        if client_cert {
            c.identity_pem =
                Some(format!("{}\n{}", self.client_cert_pem, self.client_key_pem).into_bytes());
        }
        c.timeout = Duration::from_secs(5);
        c.backoff_base_ms = 20;
        c.backoff_max_ms = 300;
        c.batch_size = 4;
        c
    }
}

/// The device registry of every synthetic site the tests build (meters
/// `pv-0000` to `pv-0063`).
pub fn synthetic_registry() -> mrv_shared::report::DeviceRegistry {
    mrv_gateway::report::synthetic::pv_registry(&PvSite {
        devices: 64,
        interval_ms: 1000,
        samples_per_frame: 60,
        wh_per_sample: 2,
        epoch_ms: T0,
    })
}

/// [`synthetic_registry`] as a receiver or verifier trusts it.
pub fn synthetic_trust() -> mrv_shared::report::DeviceTrust {
    mrv_shared::report::DeviceTrust::Registry(
        synthetic_registry()
            .trusted()
            .expect("the synthetic registry is valid"),
    )
}

/// Starts a receiver on `127.0.0.1:0` (or `addr`) storing into `data_dir`.
pub async fn start_receiver(
    data_dir: &Path,
    keys: KeySet,
    token: Option<&str>,
    tls: Option<TlsSettings>,
    addr: Option<SocketAddr>,
) -> RunningReceiver {
    let listener = TcpListener::bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("bind receiver");
    let mut cfg = ReceiverConfig::files(data_dir, keys, synthetic_trust());
    cfg.token = token.map(str::to_string);
    cfg.tls = tls;
    mrv_receiver::start(listener, cfg)
        .await
        .expect("receiver starts")
}

/// Starts a receiver on `127.0.0.1:0` with TLS from `pki` (client
/// certificates required with `mtls`), no upload token.
pub async fn start_tls_receiver(
    data_dir: &Path,
    keys: KeySet,
    pki: &Pki,
    mtls: bool,
) -> RunningReceiver {
    start_receiver(data_dir, keys, None, Some(pki.server_tls(mtls)), None).await
}

/// The HTTPS base URL of `rx` by the name its certificate carries.
pub fn https_url(rx: &RunningReceiver) -> String {
    format!("https://localhost:{}/", rx.addr().port())
}

/// A running uploader.
pub struct Uploader {
    /// Its status.
    pub status: watch::Receiver<UploadStatus>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Wakes it (new reports).
    pub wake: Arc<tokio::sync::Notify>,
}

impl Uploader {
    /// Starts the upload task over `store`.
    pub fn start(store: ReportStore, cfg: UploadConfig) -> Uploader {
        Uploader::start_with_buffer(store, cfg, None)
    }

    /// Starts the upload task over `store`, moving `buffer`'s delivered
    /// cursor as reports are confirmed.
    pub fn start_with_buffer(
        store: ReportStore,
        cfg: UploadConfig,
        buffer: Option<mrv_gateway::buffer::Buffer>,
    ) -> Uploader {
        let (mut ctx, status) = UploadContext::new(cfg, store, buffer, Arc::new(SystemClock));
        ctx.poll_interval = Duration::from_millis(100);
        let wake = ctx.wake.clone();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(run_upload_task(ctx, rx));
        Uploader {
            status,
            shutdown,
            task,
            wake,
        }
    }

    /// Waits (at most `secs`) until the status satisfies `f`; returns it.
    pub async fn wait(&mut self, secs: u64, f: impl Fn(&UploadStatus) -> bool) -> UploadStatus {
        let r = tokio::time::timeout(Duration::from_secs(secs), self.status.wait_for(|s| f(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match r {
            Ok(Ok(s)) => s,
            _ => panic!(
                "uploader did not reach the state in {secs} s: {:#?}",
                *self.status.borrow()
            ),
        }
    }

    /// Stops the task and waits for it.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.task.await.expect("upload task ends cleanly");
    }
}

/// What the fault proxy does to the next `n` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    Pass,
    /// Forward the first `n` client bytes, then reset both sides.
    ResetAfterClientBytes(usize),
    /// Once the client has sent more than `n` bytes (handshake and request
    /// on their way), hold the server's answer for `delay_ms`.
    StallAnswerAfter(usize, u64),
}

/// A TCP proxy on `127.0.0.1:0` in front of `upstream`.
pub struct FaultProxy {
    /// Its address.
    pub addr: SocketAddr,
    fault: Arc<std::sync::Mutex<(Fault, usize)>>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Faults applied.
    pub faults_applied: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts the proxy.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = l.local_addr().expect("addr");
        let fault = Arc::new(std::sync::Mutex::new((Fault::Pass, 0usize)));
        let connections = Arc::new(AtomicU64::new(0));
        let faults_applied = Arc::new(AtomicUsize::new(0));
        let (f2, c2, a2) = (fault.clone(), connections.clone(), faults_applied.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = l.accept().await else {
                    continue;
                };
                c2.fetch_add(1, Ordering::SeqCst);
                let this = {
                    let mut g = f2.lock().expect("proxy lock");
                    if g.1 > 0 {
                        g.1 -= 1;
                        a2.fetch_add(1, Ordering::SeqCst);
                        g.0
                    } else {
                        Fault::Pass
                    }
                };
                tokio::spawn(proxy_conn(client, upstream, this));
            }
        });
        FaultProxy {
            addr,
            fault,
            connections,
            faults_applied,
            task,
        }
    }

    /// Applies `fault` to the next `n` connections.
    pub fn inject(&self, fault: Fault, n: usize) {
        *self.fault.lock().expect("proxy lock") = (fault, n);
    }
}

async fn proxy_conn(client: TcpStream, upstream: SocketAddr, fault: Fault) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let (reset_tx, mut reset_rx) = watch::channel(false);
    let sent2 = sent.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = sent2.fetch_add(n, Ordering::SeqCst);
            if let Fault::ResetAfterClientBytes(limit) = fault
                && before + n > limit
            {
                let keep = limit.saturating_sub(before);
                let _ = sw.write_all(&buf[..keep]).await;
                let _ = reset_tx.send(true);
                return Some((cr, sw));
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
        None
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut stalled = false;
        loop {
            let n = tokio::select! {
                r = sr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = reset_rx.wait_for(|r| *r) => return Some((sr, cw)),
            };
            if let Fault::StallAnswerAfter(limit, ms) = fault
                && !stalled
                && sent.load(Ordering::SeqCst) > limit
            {
                stalled = true;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
        None
    };
    let (u, d) = tokio::join!(up, down);
    // A reset: reunite the halves and drop them with SO_LINGER 0 (RST).
    if let (Some((cr, sw)), Some((sr, cw))) = (u, d) {
        if let Ok(c) = cr.reunite(cw) {
            let _ = c.set_zero_linger();
        }
        if let Ok(s) = sr.reunite(sw) {
            let _ = s.set_zero_linger();
        }
    }
}

/// Starts the `mrv-receiver` binary at `exe` (the receiver crate's tests
/// pass `env!("CARGO_BIN_EXE_mrv-receiver")`) with TLS from `pki_dir`
/// ([`Pki::write`]), the device registry `pki_dir/registry.json`, gateway
/// key `gw_key`, token `tok`, listening on `listen`, and the store given by
/// `store_args` (`--data-dir D`, or `--database-url U ...`). Returns the
/// child and the `host:port` of its `listening on https://` line.
pub fn spawn_receiver(
    exe: &str,
    listen: &str,
    store_args: &[&std::ffi::OsStr],
    pki_dir: &Path,
    gw_key: &Path,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .args(["--listen", listen])
        .args(store_args)
        .arg("--gateway-key")
        .arg(gw_key)
        .arg("--device-registry")
        .arg(pki_dir.join("registry.json"))
        .arg("--tls-cert")
        .arg(pki_dir.join("server.pem"))
        .arg("--tls-key")
        .arg(pki_dir.join("server.key"))
        .args(["--token", "tok"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mrv-receiver");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}
