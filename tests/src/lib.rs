//! Support for the end-to-end tests in `tests/tests/`: real peers on
//! 127.0.0.1 with ephemeral ports.
//!
//! - [`TestSite`]: a data dir, a generated config (site, signed devices) and
//!   the simulator settings that go with it;
//! - [`Mosquitto`]: a real mosquitto broker as a child process;
//! - [`power_cut_fs::PowerCutFs`]: a FUSE file system that keeps only what
//!   was fsynced and cuts the power at chosen or random points;
//! - [`small_fs::SmallFs`]: a small loop-mounted ext4 or tmpfs that fills up;
//! - [`require_tool`]: external programs are installed by
//!   `scripts/install-test-deps.sh`; under `CI=true` a missing one fails the
//!   test, elsewhere the test says loudly that it is skipped;
//! - [`qemu`]: the node's QEMU image as a child process, and a tap on its
//!   modem UART;
//! - [`puback_device`]: an MQTT device whose only commit point is the
//!   PUBACK (re-sends all unacked frames after every reconnect).

pub mod puback_device;
pub mod qemu;

#[cfg(feature = "power-cut")]
pub mod power_cut_fs;
pub mod small_fs;

use mrv_firmware::sim::{DeviceKind, Faults, SimConfig, SimDevice, WireFormat};
use mrv_gateway::buffer::Buffer;
use mrv_shared::ids::{DeviceId, SiteId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// True when `program` is on PATH. Under CI a missing tool panics (the test
/// command installs it); elsewhere the caller should skip loudly.
pub fn require_tool(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed; scripts/install-test-deps.sh installs it");
        }
        eprintln!("SKIPPED: {program} is not installed (run scripts/install-test-deps.sh)");
    }
    found
}

/// A test site: temp data dir, config file, device keys.
pub struct TestSite {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The gateway's data dir.
    pub data_dir: PathBuf,
    /// The config file.
    pub config_path: PathBuf,
    /// MQTT port devices connect to.
    pub mqtt_port: u16,
    /// Site id.
    pub site: SiteId,
    /// Devices with their kinds and secret keys.
    pub devices: Vec<(DeviceId, DeviceKind, [u8; 32])>,
}

impl TestSite {
    /// A site with `n` signed devices (kinds cycling) and an embedded broker
    /// on a free port. `extra` is appended to the config text.
    pub fn new(n: usize, extra: &str) -> TestSite {
        Self::with_data_dir(n, extra, None)
    }

    /// As [`TestSite::new`], with the data dir at `data_dir` (e.g. on a
    /// small file system of its own) instead of inside the temp dir.
    pub fn with_data_dir(n: usize, extra: &str, data_dir: Option<&Path>) -> TestSite {
        let dir = tempfile::tempdir().expect("temp dir");
        let mqtt_port = free_port();
        let devices: Vec<_> = (0..n)
            .map(|i| {
                let kind = DeviceKind::ALL[i % 4];
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                (
                    DeviceId::new(&format!("dev-{i:03}")).expect("valid id"),
                    kind,
                    secret,
                )
            })
            .collect();
        let data_dir = data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let mut text = mrv_gateway::cli::demo::demo_config_text(&data_dir, mqtt_port, &devices);
        // Tests run in parallel: the diagnostics page takes any free port.
        text.push_str("\n[diagnostics]\nlisten = \"127.0.0.1:0\"\n");
        text.push_str(extra);
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, text).expect("write config");
        TestSite {
            dir,
            data_dir,
            config_path,
            mqtt_port,
            site: SiteId::new("demo-site").expect("valid"),
            devices,
        }
    }

    /// Rewrites the `[mqtt]` section to use an external broker on `port`.
    pub fn use_external_broker(&self, port: u16) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let text = text.replace(
            &format!(
                "mode = \"embedded\"\nlisten = \"127.0.0.1:{}\"",
                self.mqtt_port
            ),
            &format!("mode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}"),
        );
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// The validated config.
    pub fn config(&self) -> mrv_gateway::config::GatewayConfig {
        mrv_gateway::config::load(&self.config_path).expect("test config is valid")
    }

    /// The buffer directory.
    pub fn buffer_dir(&self) -> PathBuf {
        self.data_dir.join("buffer")
    }

    /// Simulator settings for this site's devices against `port`.
    pub fn sim_config(
        &self,
        port: u16,
        samples_per_frame: usize,
        interval: Duration,
        max_frames: Option<u64>,
    ) -> SimConfig {
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: port,
            credentials: None,
            site: self.site.clone(),
            devices: self
                .devices
                .iter()
                .map(|(id, kind, secret)| SimDevice {
                    id: id.clone(),
                    kind: *kind,
                    signing_key: Some(*secret),
                    faults: Faults::default(),
                })
                .collect(),
            sample_interval: interval,
            samples_per_frame,
            ack_timeout: Duration::from_secs(2),
            max_outbox: 100_000,
            format: WireFormat::Binary,
            max_frames,
        }
    }
}

/// What a buffer holds, per device: every stored seq and how often.
pub fn stored_seqs(buffer: &Buffer) -> BTreeMap<DeviceId, BTreeMap<u64, u32>> {
    let mut out: BTreeMap<DeviceId, BTreeMap<u64, u32>> = BTreeMap::new();
    for f in buffer.scan(None) {
        let f = f.expect("buffer scan reads every frame");
        *out.entry(f.frame.device.clone())
            .or_default()
            .entry(f.frame.seq)
            .or_insert(0) += 1;
    }
    out
}

/// Asserts that each device's stored seqs are exactly 1..=n once each, with
/// `n >= acked[device]`; returns the total frames.
pub fn assert_gap_free(
    stored: &BTreeMap<DeviceId, BTreeMap<u64, u32>>,
    acked: &BTreeMap<DeviceId, u64>,
) -> u64 {
    let mut total = 0;
    for (device, &acked_seq) in acked {
        let seqs = stored.get(device).cloned().unwrap_or_default();
        let dups: Vec<_> = seqs
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect();
        assert!(
            dups.is_empty(),
            "{device}: duplicate frames stored for seqs {dups:?}"
        );
        let max = seqs.keys().next_back().copied().unwrap_or(0);
        assert!(
            max >= acked_seq,
            "{device}: acked up to {acked_seq} but the buffer only holds up to {max}"
        );
        let missing: Vec<u64> = (1..=max)
            .filter(|s| !seqs.contains_key(s))
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "{device}: gaps in stored seqs, first missing {missing:?}"
        );
        total += seqs.len() as u64;
    }
    total
}

/// Waits (at most 10 s) until the broker confirmed the gateway's
/// subscription, so devices started afterwards are heard from their first
/// frame.
pub async fn wait_until_subscribed(gw: &mrv_gateway::runtime::RunningGateway) {
    use mrv_gateway::ingest::stats::IngestStats;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while IngestStats::get(&gw.state.ingest.subscribed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never subscribed at its broker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A mosquitto broker as a child process on a free loopback port.
pub struct Mosquitto {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto with `extra` config lines; waits until it accepts connections.
    /// A free port can be taken by another test between `free_port` and
    /// mosquitto's bind (mosquitto then exits): such a start is retried on
    /// another port.
    pub fn start(extra: &str) -> Mosquitto {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n{extra}\n"),
            )
            .expect("write mosquitto.conf");
            let mut child = Command::new(mosquitto_path())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("mosquitto starts");
            // Up when the listening socket on `port` is the child's own (a
            // connect could reach another test's listener on the same port).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                if listens_on(child.id(), port) {
                    return Mosquitto {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "mosquitto did not listen on port {port} within 10 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.wait();
        }
        panic!("mosquitto did not stay up on any of 5 free ports");
    }
}

/// True when process `pid` holds a socket listening on 127.0.0.1:`port`
/// (Linux: the LISTEN entries of `/proc/net/tcp` matched by inode against
/// the process's open files).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_path() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}

/// True when mosquitto is installed (see [`require_tool`]).
pub fn mosquitto_available() -> bool {
    if mosquitto_path().is_absolute() {
        return true;
    }
    require_tool("mosquitto")
}

/// Blocks until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

/// Every thread's stack of the running process `pid`, from gdb (empty
/// when gdb is missing): printed by a test that finds the gateway hung, so
/// a CI log says where it hung.
pub fn thread_stacks(pid: u32) -> String {
    match std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(no thread stacks: gdb: {e})"),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a
/// failing test leaves no gateway or client behind.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// SIGKILLs and reaps the child now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
