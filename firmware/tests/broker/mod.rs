//! A real MQTT broker for the simulator's tests and bench: Debian's
//! mosquitto as a child process on 127.0.0.1 (installed by
//! `scripts/install-test-deps.sh`). The gateway's own endpoint is not a
//! general broker (it takes device frames, not a fake gateway's
//! subscription), so these tests use a general one.
//!
//! Shared by `tests/sim_mqtt.rs` and `benches/firmware.rs` (`#[path]`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mosquitto child process; killed on drop.
pub struct Broker {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("bound socket has an address").port()
}

fn mosquitto_path() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// True when mosquitto is installed. Without it the caller skips loudly;
/// under `CI` a missing broker is a failure, not a skip.
pub fn available() -> bool {
    if mosquitto_path().is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("mosquitto is required under CI (scripts/install-test-deps.sh)");
    }
    eprintln!("SKIPPED: mosquitto not found; run scripts/install-test-deps.sh");
    false
}

impl Broker {
    /// Starts mosquitto on a free port and waits until it accepts TCP.
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// Starts mosquitto on 127.0.0.1:`port` and waits until it accepts TCP.
    /// Limits are raised so that the broker never drops what a test sends
    /// (mosquitto's defaults queue 1,000 messages and keep 20 in flight).
    pub fn start_on(port: u16) -> Broker {
        let exe = mosquitto_path().expect("mosquitto is installed (check available() first)");
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\n\
                 max_connections -1\nlog_dest stderr\nlog_type error\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(exe)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto starts");
        let broker = Broker {
            child,
            port,
            _dir: dir,
        };
        broker.wait_listening(Duration::from_secs(10));
        broker
    }

    fn wait_listening(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "mosquitto did not listen on {} within {timeout:?}",
            self.port
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
