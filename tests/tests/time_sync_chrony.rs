//! The report header's clock comes from a real chronyd: two chronyd
//! processes started by the test with `-x` (they never touch the system
//! clock), loopback only (the server binds 127.0.0.1 on a free UDP port and
//! allows only 127.0.0.1; the client's NTP port is off; each has its own
//! pid, drift and command socket files in a temp dir). The gateway reads
//! the client through its command socket (`[report] chrony_socket`).
//!
//! - synchronised: `clock.last_sync_ms` is chrony's reference time (within
//!   the test's run), `clock.source` the configured one;
//! - a chronyd whose only server never answers: `source` `unsynced`,
//!   `last_sync_ms` null.
//!
//! Needs `chronyd`/`chronyc` (Debian `chrony`, installed by
//! scripts/install-test-deps.sh); skips loudly without them, fails under CI.

use mrv_e2e::{KillOnDrop, TestSite};
use mrv_gateway::clock::{Clock, ScaledClock};
use mrv_shared::report::Report;
use mrv_shared::report::jws::parse_compact;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `chronyd -x -d` with `conf` (written to `dir/<name>.conf`).
fn chronyd(dir: &Path, name: &str, conf: &str) -> KillOnDrop {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).expect("write chrony.conf");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    KillOnDrop(
        Command::new("chronyd")
            .args(["-x", "-u", "root", "-d", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chronyd starts"),
    )
}

/// A client chronyd of `server_port` on 127.0.0.1, its command socket in `dir`.
fn client_conf(dir: &Path, name: &str, server_port: u16) -> String {
    let d = dir.display();
    format!(
        "server 127.0.0.1 port {server_port} iburst minpoll -4 maxpoll -4\nport 0\ncmdport 0\n\
         bindcmdaddress {d}/{name}.sock\npidfile {d}/{name}.pid\ndriftfile {d}/{name}.drift\n"
    )
}

fn chronyc_tracking(sock: &Path) -> String {
    let out = Command::new("chronyc")
        .arg("-h")
        .arg(sock)
        .args(["-c", "-n", "tracking"])
        .output()
        .expect("chronyc runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reports(site: &TestSite) -> Vec<Report> {
    let dir = site.data_dir.join("reports");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jws"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("read");
            let jws = parse_compact(&bytes).expect("JWS");
            serde_json::from_slice(&jws.payload).expect("report")
        })
        .collect()
}

async fn publish_one_frame(port: u16, base_ms: u64) {
    use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
    use mrv_shared::quantity::{Quantity, ValueKind};
    use mrv_shared::reading::{Channel, Quality, Sample};
    use mrv_shared::wire::{Frame, binary};
    let bytes = binary::encode_frame(&Frame {
        site: SiteId::new("demo-site").expect("valid"),
        device: DeviceId::new("m-1").expect("valid"),
        seq: 1,
        boot: 1,
        firmware: String::new(),
        base_time_ms: Some(base_ms),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: vec![Sample {
            channel: 0,
            offset_ms: 0,
            value: 1,
            quality: Quality::GOOD,
        }],
        signature: None,
    });
    let (client, mut el) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("m-1", "127.0.0.1", port), 10);
    client
        .publish(
            "mrv/demo-site/m-1/up",
            rumqttc::QoS::AtLeastOnce,
            false,
            bytes,
        )
        .await
        .expect("queued");
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("publishing the frame: {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no PUBACK");
    }
    let _ = client.disconnect().await;
}

/// Runs a gateway (clock x60 from now, 1-minute reports) reading chrony
/// through `sock` until it stored two reports; returns them.
async fn reports_with_chrony(sock: &Path) -> Vec<Report> {
    let site = TestSite::new(
        0,
        &format!(
            "\n[[devices]]\nid = \"m-1\"\nkind = \"solar_meter\"\n\n[report]\nperiod_minutes = 1\ngrace_seconds = 1\nkey_file = \"keys/gateway.key\"\n\
             clock_source = \"ntp\"\ntime_sync = \"chrony\"\nchrony_socket = \"{}\"\n",
            sock.display()
        ),
    );
    mrv_gateway::keys::generate(&site.data_dir.join("keys"), "gateway").expect("keygen");
    let clock = Arc::new(ScaledClock::new(now_ms(), 60));
    let gw = mrv_gateway::runtime::start(site.config(), clock.clone())
        .await
        .expect("gateway starts");
    // Reports start with the first data: one frame, PUBACKed.
    publish_one_frame(site.mqtt_port, clock.now_ms()).await;
    let t = Instant::now();
    let r = loop {
        let r = reports(&site);
        if r.len() >= 2 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no reports");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gw.shutdown().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_header_carries_chronys_last_sync_and_says_unsynced_when_chrony_does() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    if !mrv_e2e::require_tool("chronyd") || !mrv_e2e::require_tool("chronyc") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // chronyd refuses a command socket directory others can write to.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let port = free_udp_port();
    let _server = chronyd(
        d,
        "server",
        &format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n\
             pidfile {0}/server.pid\ndriftfile {0}/server.drift\n",
            d.display()
        ),
    );
    let started = now_ms();
    let _client = chronyd(d, "client", &client_conf(d, "client", port));
    let sock = d.join("client.sock");
    wait_for("the client chronyd synchronises to the server", 30, || {
        chronyc_tracking(&sock).trim_end().ends_with(",Normal")
    });
    let r = reports_with_chrony(&sock).await;
    for rep in &r {
        let c = &rep.header.clock;
        assert_eq!(c.source, "ntp", "{c:?}");
        let last = c.last_sync_ms.expect("last_sync_ms from chrony");
        assert!(
            last >= started.saturating_sub(1_000) && last <= now_ms(),
            "last sync {last} outside the run ({started}..)"
        );
    }

    // A chronyd whose only server (a port nothing listens on) never answers.
    let dead = free_udp_port();
    let _lonely = chronyd(d, "lonely", &client_conf(d, "lonely", dead));
    let sock = d.join("lonely.sock");
    wait_for("the lonely chronyd answers", 30, || {
        chronyc_tracking(&sock).contains("Not synchronised")
    });
    let r = reports_with_chrony(&sock).await;
    for rep in &r {
        let c = &rep.header.clock;
        assert_eq!(
            (c.source.as_str(), c.last_sync_ms),
            ("unsynced", None),
            "{c:?}"
        );
    }
}
