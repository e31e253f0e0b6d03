//! The simulator against a real MQTT broker (mosquitto, a child process on
//! 127.0.0.1 with a free port) and a tiny fake gateway that decodes every
//! frame, checks signatures and acks the highest contiguous sequence number.
#![allow(clippy::unwrap_used)]

use mrv_firmware::sim::{
    self, DeviceKind, Faults, SimConfig, SimDevice, WireFormat, verifying_key_bytes,
};
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::signature::verify_frame;
use mrv_shared::wire::topic::{ack_topic, parse_up_topic, up_filter};
use mrv_shared::wire::{Ack, AckStatus, Frame, binary, json};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod broker;
use broker::{Broker, free_port};

/// What the fake gateway saw.
#[derive(Default, Debug)]
struct Seen {
    /// Per device: every (seq, boot) received (with duplicates).
    frames: BTreeMap<DeviceId, Vec<(u64, u32)>>,
    /// Per device: distinct seqs stored.
    stored: BTreeMap<DeviceId, BTreeSet<u64>>,
    invalid: u64,
    bad_signatures: u64,
    /// Seqs 1..=known_base are already stored from an earlier life of every
    /// device (its flash was wiped): lower seqs get `SeqRegressed`.
    known_base: u64,
    /// Per device: (seq, base time) of every frame received.
    base_times: BTreeMap<DeviceId, Vec<(u64, Option<u64>)>>,
}

/// A fake gateway: subscribes to the site's up filter, stores frames,
/// acks the highest contiguous seq (with `status` while `refuse` is set,
/// it acks without storing anything new: BufferFull).
async fn fake_gateway(
    port: u16,
    site: SiteId,
    keys: HashMap<DeviceId, ed25519_dalek::VerifyingKey>,
    seen: Arc<Mutex<Seen>>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut opts = MqttOptions::new("fake-gw", "127.0.0.1", port);
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 1000);
    loop {
        let ev = match el.poll().await {
            Ok(ev) => ev,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let p = match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                client
                    .try_subscribe(up_filter(&site), QoS::AtLeastOnce)
                    .unwrap();
                continue;
            }
            Event::Incoming(Packet::Publish(p)) => p,
            _ => continue,
        };
        let Ok((site, device)) = parse_up_topic(&p.topic) else {
            continue;
        };
        let is_json = p.payload.first() == Some(&b'{');
        let frame: Result<Frame, _> = if is_json {
            json::decode_frame(&p.payload)
        } else {
            binary::decode_frame_exact(&p.payload)
        };
        let Ok(frame) = frame else {
            seen.lock().unwrap().invalid += 1;
            continue;
        };
        let ack = {
            let mut s = seen.lock().unwrap();
            if let Some(k) = keys.get(&device)
                && verify_frame(&frame, k).is_err()
            {
                s.bad_signatures += 1;
                continue;
            }
            s.frames
                .entry(device.clone())
                .or_default()
                .push((frame.seq, frame.boot));
            s.base_times
                .entry(device.clone())
                .or_default()
                .push((frame.seq, frame.base_time_ms));
            let refusing = refuse.load(std::sync::atomic::Ordering::SeqCst);
            let base = s.known_base;
            let regressed = frame.seq <= base;
            let stored = s.stored.entry(device.clone()).or_default();
            if !refusing && !regressed {
                stored.insert(frame.seq);
            }
            let mut hi = base;
            while stored.contains(&(hi + 1)) {
                hi += 1;
            }
            Ack {
                acked_seq: hi,
                status: if regressed {
                    AckStatus::SeqRegressed
                } else if refusing {
                    AckStatus::BufferFull
                } else {
                    AckStatus::Ok
                },
            }
        };
        let payload = if is_json {
            json::encode_ack(&ack)
        } else {
            binary::encode_ack(&ack).to_vec()
        };
        client
            .publish(ack_topic(&site, &device), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

fn devices(n: usize, signed: bool) -> Vec<SimDevice> {
    (0..n)
        .map(|i| SimDevice {
            id: DeviceId::new(&format!("dev-{i}")).unwrap(),
            kind: DeviceKind::ALL[i % 4],
            signing_key: signed.then_some([i as u8 + 1; 32]),
            faults: Faults::default(),
        })
        .collect()
}

fn config(port: u16, devices: Vec<SimDevice>, format: WireFormat, max_frames: u64) -> SimConfig {
    SimConfig {
        broker_host: "127.0.0.1".into(),
        broker_port: port,
        credentials: None,
        site: SiteId::new("site-t").unwrap(),
        devices,
        sample_interval: Duration::from_millis(5),
        samples_per_frame: 3,
        ack_timeout: Duration::from_millis(300),
        max_outbox: 1000,
        format,
        max_frames: Some(max_frames),
    }
}

async fn run_case(format: WireFormat, faults: Faults, refuse_first: bool) {
    if !broker::available() {
        return;
    }
    let broker = Broker::start();
    let port = broker.port;
    let mut devs = devices(4, true);
    for d in &mut devs {
        d.faults = faults.clone();
    }
    let keys: HashMap<_, _> = devs
        .iter()
        .map(|d| {
            let pk = verifying_key_bytes(&d.signing_key.unwrap());
            (
                d.id.clone(),
                ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap(),
            )
        })
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(refuse_first));
    let site = SiteId::new("site-t").unwrap();
    let gw = tokio::spawn(fake_gateway(port, site, keys, seen.clone(), refuse.clone()));
    let cfg = config(port, devs.clone(), format, 40);
    let handle = sim::start(cfg).await.unwrap();
    if refuse_first {
        // Let every device get a BufferFull answer, then accept.
        let waited = handle
            .wait_for(Duration::from_secs(20), |st| {
                st.devices
                    .values()
                    .all(|d| d.last_ack_status == Some(AckStatus::BufferFull))
            })
            .await;
        assert!(waited, "devices never saw BufferFull");
        refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    assert!(
        handle.wait_all_acked(Duration::from_secs(30)).await,
        "not all acked: {:?}",
        handle.stats()
    );
    let stats = handle.stats();
    let acked = handle.acked_seqs();
    handle.stop().await;
    gw.abort();

    let s = seen.lock().unwrap();
    assert_eq!(s.bad_signatures, 0);
    for d in &devs {
        assert_eq!(acked[&d.id], 40, "{}", d.id);
        let stored = &s.stored[&d.id];
        assert_eq!(
            stored.iter().copied().collect::<Vec<_>>(),
            (1..=40).collect::<Vec<_>>(),
            "gap-free 1..=40 for {}",
            d.id
        );
        let ds = &stats.devices[&d.id];
        assert_eq!(ds.frames_produced, 40);
        assert_eq!(ds.outbox_len, 0);
    }
    if let Some(n) = faults.garbage_every_frames {
        assert!(s.invalid >= (4 * 40 / n) / 2, "garbage seen: {}", s.invalid);
    }
    if let Some(n) = faults.reboot_every_frames {
        for d in &devs {
            let boots = stats.devices[&d.id].boots;
            assert!(boots > 40 / n - 1, "boots {boots}");
            let max_boot = s.frames[&d.id].iter().map(|f| f.1).max().unwrap();
            assert!(max_boot >= 2);
        }
    }
    if refuse_first {
        assert!(stats.totals.frames_resent > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_all_acked_gap_free_and_signed() {
    run_case(WireFormat::Binary, Faults::default(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_frames_with_garbage_on_the_wire_are_all_acked() {
    let faults = Faults {
        garbage_every_frames: Some(5),
        noise: 0.1,
        ..Faults::default()
    };
    run_case(WireFormat::Json, faults, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboots_keep_numbering_and_lose_no_frame() {
    let faults = Faults {
        reboot_every_frames: Some(10),
        ..Faults::default()
    };
    run_case(WireFormat::Binary, faults, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_full_keeps_frames_until_the_gateway_accepts() {
    run_case(WireFormat::Binary, Faults::default(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sample_into_the_outbox_while_the_broker_is_down_and_deliver_later() {
    if !broker::available() {
        return;
    }
    // Nothing listens on this port at first.
    let port = free_port();
    let devs = devices(2, false);
    let mut cfg = config(port, devs.clone(), WireFormat::Binary, 20);
    cfg.max_outbox = 10;
    let handle = sim::start(cfg).await.unwrap();
    // Wait until both devices have a full outbox and drop samples.
    let full = handle
        .wait_for(Duration::from_secs(20), |st| {
            st.devices
                .values()
                .all(|d| d.outbox_len == 10 && d.samples_dropped > 0)
        })
        .await;
    assert!(full, "outboxes fill while the broker is down");
    assert_eq!(handle.stats().totals.frames_sent, 0);
    // Now the broker and the gateway come up on that port.
    let _broker = Broker::start_on(port);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gw = tokio::spawn(fake_gateway(
        port,
        SiteId::new("site-t").unwrap(),
        HashMap::new(),
        seen.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ));
    assert!(
        handle.wait_all_acked(Duration::from_secs(30)).await,
        "{:?}",
        handle.stats()
    );
    let stats = handle.stats();
    handle.stop().await;
    gw.abort();
    let s = seen.lock().unwrap();
    for d in &devs {
        assert_eq!(
            s.stored[&d.id].iter().copied().collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        assert!(stats.devices[&d.id].samples_dropped > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mrv_sim_binary_runs_devices_until_all_frames_are_acked() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start();
    let port = broker.port;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gw = tokio::spawn(fake_gateway(
        port,
        SiteId::new("site-bin").unwrap(),
        HashMap::new(),
        seen.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mrv-sim"))
        .args([
            "--port",
            &port.to_string(),
            "--site",
            "site-bin",
            "-n",
            "3",
            "--interval-ms",
            "5",
            "--samples-per-frame",
            "2",
            "--max-frames",
            "6",
            "--key-seed",
            "test-seed",
            "--ack-wait-s",
            "30",
        ])
        .output()
        .await
        .unwrap();
    gw.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("public_key").count(), 3, "{stdout}");
    let s = seen.lock().unwrap();
    for n in 1..=3 {
        let id = DeviceId::new(&format!("dev-{n}")).unwrap();
        assert_eq!(
            s.stored[&id].iter().copied().collect::<Vec<_>>(),
            (1..=6).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_changed_at_run_time_skew_the_device_clock() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start();
    let port = broker.port;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gw = tokio::spawn(fake_gateway(
        port,
        SiteId::new("site-t").unwrap(),
        HashMap::new(),
        seen.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ));
    let devs = devices(1, false);
    let id = devs[0].id.clone();
    let mut cfg = config(port, devs, WireFormat::Binary, 1000);
    cfg.max_frames = None;
    let handle = sim::start(cfg).await.unwrap();
    assert!(
        handle
            .wait_for(Duration::from_secs(20), |st| st.totals.highest_acked_seq
                >= 5)
            .await
    );
    const SKEW_MS: i64 = 3_600_000;
    assert!(handle.set_faults(
        &id,
        Faults {
            clock_skew_ms: SKEW_MS,
            ..Faults::default()
        }
    ));
    assert!(!handle.set_faults(&DeviceId::new("nobody").unwrap(), Faults::default()));
    let switched = handle.stats().devices[&id].next_seq;
    assert!(
        handle
            .wait_for(Duration::from_secs(20), |st| st.totals.highest_acked_seq
                >= switched + 5)
            .await
    );
    handle.stop().await;
    gw.abort();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let s = seen.lock().unwrap();
    let times = &s.base_times[&id];
    let early = times.iter().find(|(seq, _)| *seq == 1).unwrap().1.unwrap();
    let late = times
        .iter()
        .find(|(seq, _)| *seq == switched + 2)
        .unwrap()
        .1
        .unwrap();
    assert!(early <= now_ms, "unskewed frames are not from the future");
    assert!(
        late > now_ms + (SKEW_MS as u64) / 2,
        "skewed frames are an hour ahead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_regressed_renumbers_after_the_gateway_seq_without_loss() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start();
    let port = broker.port;
    let seen = Arc::new(Mutex::new(Seen {
        known_base: 50,
        ..Seen::default()
    }));
    let devs = devices(2, true);
    let keys: HashMap<_, _> = devs
        .iter()
        .map(|d| {
            let pk = verifying_key_bytes(&d.signing_key.unwrap());
            (
                d.id.clone(),
                ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap(),
            )
        })
        .collect();
    let gw = tokio::spawn(fake_gateway(
        port,
        SiteId::new("site-t").unwrap(),
        keys,
        seen.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ));
    let handle = sim::start(config(port, devs.clone(), WireFormat::Binary, 20))
        .await
        .unwrap();
    assert!(
        handle.wait_all_acked(Duration::from_secs(30)).await,
        "{:?}",
        handle.stats()
    );
    let stats = handle.stats();
    let acked = handle.acked_seqs();
    handle.stop().await;
    gw.abort();
    let s = seen.lock().unwrap();
    assert_eq!(s.bad_signatures, 0, "renumbered frames are re-signed");
    for d in &devs {
        // 20 frames produced; the gateway holds 51..=70, gap-free, once.
        assert_eq!(
            s.stored[&d.id].iter().copied().collect::<Vec<_>>(),
            (51..=70).collect::<Vec<_>>()
        );
        assert_eq!(acked[&d.id], 70);
        let ds = &stats.devices[&d.id];
        assert_eq!(ds.frames_produced, 20);
        assert!(ds.frames_renumbered >= 1);
        assert_eq!(ds.next_seq, 71);
    }
}
