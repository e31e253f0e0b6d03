//! A fleet of devices that treat the MQTT PUBACK as their only commit point
//! (no application acks: a frame is forgotten once PUBACKed, everything else
//! is re-sent after a reconnect) publishes to the embedded endpoint while the
//! gateway, a child process, is SIGKILLed at random moments. Afterwards every
//! PUBACKed frame is in the buffer, once, and each restart is measured from
//! exec until every device had a PUBACK again.
//!
//! CI runs a short version (50 devices, 10 frames/s each, 10 kills). The soak:
//! `ENDPOINT_CRASH_KILLS=30 cargo test -p mrv-e2e --test endpoint_crash -- --nocapture`
//! (`CRASH_SEED` replays a run).

use mrv_e2e::puback_device::{self, PubackDevice, PubackOptions};
use mrv_e2e::{KillOnDrop, TestSite, stored_seqs, wait_for_port};
use mrv_gateway::buffer::{Buffer, BufferConfig};
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Frame, binary};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, VecDeque};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEVICES: usize = 50;
const PERIOD: Duration = Duration::from_millis(100);

fn spawn_gateway(site: &TestSite) -> (KillOnDrop, Instant) {
    let exec = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .args(["--log", "warn", "run", "--config"])
        .arg(&site.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway child starts");
    (KillOnDrop(child), exec)
}

fn frame(device: &DeviceId, seq: u64) -> Vec<u8> {
    binary::encode_frame(&Frame {
        site: SiteId::new("demo-site").expect("valid"),
        device: device.clone(),
        seq,
        boot: 1,
        firmware: "puback-only".into(),
        base_time_ms: Some(1_764_115_200_000 + seq * 100),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: vec![Sample {
            channel: 0,
            offset_ms: 0,
            value: seq as i64,
            quality: Quality::GOOD,
        }],
        signature: None,
    })
}

/// What one device knows.
#[derive(Default)]
struct DeviceState {
    next_seq: u64,
    /// Generated, not yet PUBACKed (kept and re-sent).
    unacked: VecDeque<u64>,
    /// Every seq the gateway PUBACKed.
    pubacked: BTreeSet<u64>,
    last_puback: Option<Instant>,
    generating: bool,
}

/// One device of the fleet, its state shared with the test.
struct Device(Arc<Mutex<DeviceState>>);

impl PubackDevice for Device {
    fn unacked(&self) -> Vec<u64> {
        Vec::from(self.0.lock().expect("state").unacked.clone())
    }

    fn due(&mut self) -> Vec<u64> {
        let mut s = self.0.lock().expect("state");
        if !s.generating {
            return Vec::new();
        }
        s.next_seq += 1;
        let seq = s.next_seq;
        s.unacked.push_back(seq);
        vec![seq]
    }

    fn acked(&mut self, seq: u64) {
        let mut s = self.0.lock().expect("state");
        s.unacked.retain(|&x| x != seq);
        s.pubacked.insert(seq);
        s.last_puback = Some(Instant::now());
    }
}

async fn run_device(
    id: DeviceId,
    port: u16,
    state: Arc<Mutex<DeviceState>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let opts = PubackOptions {
        device: id,
        port,
        keep_alive: Duration::from_secs(5),
        tick: PERIOD,
        reconnect_delay: Duration::from_millis(20),
        frame,
    };
    puback_device::run(opts, Device(state), stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubacked_frames_survive_repeated_sigkill_and_devices_recover_at_once() {
    let kills: usize = std::env::var("ENDPOINT_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!(
        "endpoint crash test: {DEVICES} devices, {kills} kills, seed {seed} (set CRASH_SEED to replay)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ids: Vec<DeviceId> = (0..DEVICES)
        .map(|i| DeviceId::new(&format!("fl-{i:03}")).expect("valid"))
        .collect();
    let mut extra = String::new();
    for id in &ids {
        extra.push_str(&format!(
            "\n[[devices]]\nid = \"{id}\"\nkind = \"solar_meter\"\n"
        ));
    }
    let site = TestSite::new(0, &extra);
    let (mut child, _) = spawn_gateway(&site);
    wait_for_port(site.mqtt_port, Duration::from_secs(20));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let states: Vec<Arc<Mutex<DeviceState>>> = ids
        .iter()
        .map(|_| {
            Arc::new(Mutex::new(DeviceState {
                generating: true,
                ..Default::default()
            }))
        })
        .collect();
    let tasks: Vec<_> = ids
        .iter()
        .zip(&states)
        .map(|(id, s)| {
            tokio::spawn(run_device(
                id.clone(),
                site.mqtt_port,
                s.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let all_acked_since = |t: Instant| {
        states
            .iter()
            .all(|s| s.lock().expect("state").last_puback.is_some_and(|p| p > t))
    };
    // Every device gets going first.
    let start = Instant::now();
    while !all_acked_since(start) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "devices never got a first PUBACK"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut recoveries = Vec::new();
    for cycle in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        child.kill();
        let (c, exec) = spawn_gateway(&site);
        child = c;
        while !all_acked_since(exec) {
            assert!(
                exec.elapsed() < Duration::from_secs(20),
                "cycle {cycle}: not every device got a PUBACK within 20 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        recoveries.push(exec.elapsed());
    }
    // Stop generating; let every device's outbox drain through the last gateway.
    for s in &states {
        s.lock().expect("state").generating = false;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while states
        .iter()
        .any(|s| !s.lock().expect("state").unacked.is_empty())
    {
        assert!(Instant::now() < deadline, "device outboxes did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    child.kill();
    let config = site.config();
    let buffer = Buffer::open(BufferConfig {
        path: config.buffer.path.clone(),
        max_bytes: config.buffer.max_bytes,
        cache_bytes: config.buffer.cache_bytes,
        keep_delivered: config.buffer.keep_delivered,
    })
    .expect("buffer reopens after SIGKILL");
    let stored = stored_seqs(&buffer);
    let mut total = 0;
    for (id, s) in ids.iter().zip(&states) {
        let s = s.lock().expect("state");
        let on_disk = stored.get(id).cloned().unwrap_or_default();
        let lost: Vec<_> = s
            .pubacked
            .iter()
            .filter(|q| !on_disk.contains_key(q))
            .take(10)
            .collect();
        assert!(
            lost.is_empty(),
            "{id}: PUBACKed but not in the buffer: {lost:?}"
        );
        let dups: Vec<_> = on_disk
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(q, _)| *q)
            .collect();
        assert!(dups.is_empty(), "{id}: stored more than once: {dups:?}");
        assert_eq!(
            s.pubacked.len() as u64,
            s.next_seq,
            "{id}: every generated frame was PUBACKed in the end"
        );
        assert_eq!(
            on_disk.len() as u64,
            s.next_seq,
            "{id}: buffer holds exactly the generated frames"
        );
        total += s.next_seq;
    }
    recoveries.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "RESULT {total} frames PUBACKed and all on disk, none twice; {kills} kills; exec -> every device PUBACKed again: median {:.0} ms, max {:.0} ms",
        recoveries.get(recoveries.len() / 2).map(ms).unwrap_or(0.0),
        recoveries.last().map(ms).unwrap_or(0.0)
    );
    assert!(
        recoveries
            .last()
            .is_none_or(|d| *d < Duration::from_secs(5)),
        "a restart took {:?} until every device was PUBACKed again",
        recoveries.last()
    );
}
