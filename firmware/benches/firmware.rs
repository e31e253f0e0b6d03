//! Firmware figures on the host: frames signed per second, the full seal
//! path (sign + encode + flash journal write), bytes per reading on the
//! wire, and the simulator end to end against an embedded MQTT broker.
//!
//! Run: `cargo bench -p mrv-firmware --features sim --bench firmware`
//! (set `MRV_BENCH_QUICK=1` for a short smoke run).

use ed25519_dalek::SigningKey;
use mrv_firmware::app::{App, AppConfig, Encoding, Identity, Uplink};
use mrv_firmware::sim::{self, DeviceKind, Faults, SimConfig, SimDevice, WireFormat};
use mrv_firmware::storage::ram_flash::RamFlash;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::signature::sign_frame;
use mrv_shared::wire::topic::{ack_topic, parse_up_topic, up_filter};
use mrv_shared::wire::{Ack, AckStatus, Frame, binary, json};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../tests/broker/mod.rs"]
mod broker;
use broker::Broker;

fn quick() -> bool {
    std::env::var_os("MRV_BENCH_QUICK").is_some()
}

fn frame(samples: usize) -> Frame {
    let channels = vec![
        Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        },
        Channel {
            id: ChannelId::new("power").expect("valid"),
            quantity: Quantity::Power,
            kind: ValueKind::Instant,
        },
    ];
    let samples = (0..samples)
        .map(|i| Sample {
            channel: (i % 2) as u8,
            offset_ms: (i / 2) as u32 * 1000,
            value: if i % 2 == 0 {
                1_234_567 + i as i64 * 14
            } else {
                41_000 + (i as i64 * 37) % 900
            },
            quality: Quality::GOOD,
        })
        .collect();
    Frame {
        site: SiteId::new("site-a").expect("valid"),
        device: DeviceId::new("pv-meter-01").expect("valid"),
        seq: 123_456,
        boot: 3,
        firmware: "mrv-f411-0.1.0".into(),
        base_time_ms: Some(1_764_115_200_000),
        channels,
        samples,
        signature: None,
    }
}

fn bench_signing() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut f = frame(10);
    let dur = if quick() { 0.2 } else { 2.0 };
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < dur {
        f.seq += 1;
        sign_frame(&mut f, &key);
        black_box(&f.signature);
        n += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    println!("sign_frame (10 samples, Ed25519): {rate:.0} frames/s ({n} in {dur} s)");
}

struct Sink(u64);
impl Uplink for Sink {
    type Error = ();
    fn send(&mut self, _seq: u64, payload: &[u8]) -> Result<(), ()> {
        self.0 += payload.len() as u64;
        Ok(())
    }
}

fn bench_seal_path() {
    let id = Identity {
        site: SiteId::new("site-a").expect("valid"),
        device: DeviceId::new("pv-meter-01").expect("valid"),
        firmware: "bench".into(),
        key: Some(SigningKey::from_bytes(&[7; 32])),
    };
    let cfg = AppConfig {
        samples_per_frame: 10,
        max_outbox: 256,
        ack_timeout_ms: 1000,
        encoding: Encoding::Binary,
        has_wall_clock: true,
    };
    let channels = frame(1).channels;
    let mut app: App<RamFlash, 16> =
        App::boot(RamFlash::new(16), 0, 16, id, cfg, channels).expect("boots");
    let mut up = Sink(0);
    let dur = if quick() { 0.2 } else { 2.0 };
    let t0 = Instant::now();
    let mut frames = 0u64;
    let mut t = 0u64;
    while t0.elapsed().as_secs_f64() < dur {
        for i in 0..10 {
            app.record((i % 2) as u8, 1000 + i, Quality::GOOD, t)
                .expect("room");
            t += 500;
        }
        let seq = app.seal().expect("flash ok").expect("outbox has room");
        app.service(&mut up, t).expect("flash ok");
        app.on_ack(Ack {
            acked_seq: seq,
            status: AckStatus::Ok,
        })
        .expect("flash ok");
        frames += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let erases: Vec<u32> = app.erase_counts().collect();
    println!(
        "App seal+send+ack (10 samples, signed, RAM NOR flash journal): {:.0} frames/s, {:.0} bytes/frame sent, sector erase counts {:?}",
        frames as f64 / secs,
        up.0 as f64 / frames as f64,
        erases
    );
}

fn bench_bytes_per_reading() {
    let key = SigningKey::from_bytes(&[7; 32]);
    println!("bytes per reading on the wire (2 channels, realistic values):");
    println!("| samples/frame | binary | binary signed | JSON | JSON signed |");
    println!("|---|---|---|---|---|");
    for n in [1usize, 2, 10, 60, 600] {
        let f = frame(n);
        let mut s = f.clone();
        sign_frame(&mut s, &key);
        let per = |b: usize| b as f64 / n as f64;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} |",
            per(binary::encode_frame(&f).len()),
            per(binary::encode_frame(&s).len()),
            per(json::encode_frame(&f).len()),
            per(json::encode_frame(&s).len()),
        );
    }
}

/// A minimal acking gateway: highest contiguous seq per device, binary acks.
async fn acking_gateway(port: u16, site: SiteId) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new("bench-gw", "127.0.0.1", port);
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    opts.set_inflight(1000);
    let (client, mut el) = AsyncClient::new(opts, 10_000);
    let mut hi: HashMap<DeviceId, (u64, std::collections::BTreeSet<u64>)> = HashMap::new();
    loop {
        let Ok(ev) = el.poll().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                let _ = client.try_subscribe(up_filter(&site), QoS::AtLeastOnce);
            }
            Event::Incoming(Packet::Publish(p)) => {
                let Ok((site, dev)) = parse_up_topic(&p.topic) else {
                    continue;
                };
                let Ok(f) = binary::decode_frame_exact(&p.payload) else {
                    continue;
                };
                let e = hi.entry(dev.clone()).or_default();
                e.1.insert(f.seq);
                while e.1.remove(&(e.0 + 1)) {
                    e.0 += 1;
                }
                let ack = binary::encode_ack(&Ack {
                    acked_seq: e.0,
                    status: AckStatus::Ok,
                });
                let _ = client.try_publish(
                    ack_topic(&site, &dev),
                    QoS::AtLeastOnce,
                    false,
                    ack.to_vec(),
                );
            }
            _ => {}
        }
    }
}

fn bench_sim_end_to_end(devices: usize, frames: u64, interval: Duration, spf: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let broker = Broker::start();
        let port = broker.port;
        let site = SiteId::new("bench").expect("valid");
        let gw = tokio::spawn(acking_gateway(port, site.clone()));
        let cfg = SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: port,
            credentials: None,
            site,
            devices: (0..devices)
                .map(|i| SimDevice {
                    id: DeviceId::new(&format!("d{i}")).expect("valid"),
                    kind: DeviceKind::ALL[i % 4],
                    signing_key: Some([i as u8; 32]),
                    faults: Faults::default(),
                })
                .collect(),
            sample_interval: interval,
            samples_per_frame: spf,
            ack_timeout: Duration::from_secs(5),
            max_outbox: 1000,
            format: WireFormat::Binary,
            max_frames: Some(frames),
        };
        let t0 = Instant::now();
        let h = sim::start(cfg).await.expect("starts");
        let ok = h.wait_all_acked(Duration::from_secs(300)).await;
        let secs = t0.elapsed().as_secs_f64();
        let st = h.stats().totals;
        h.stop().await;
        gw.abort();
        println!(
            "sim end to end ({devices} devices (kinds mixed), {} ms sampling, {spf} samples/frame, signed, mosquitto + acking gateway): all acked {ok}, {} frames in {secs:.2} s = {:.0} frames/s acked, {} re-sent",
            interval.as_millis(),
            st.frames_produced,
            st.frames_produced as f64 / secs,
            st.frames_resent
        );
    });
}

fn main() {
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    bench_signing();
    bench_seal_path();
    bench_bytes_per_reading();
    if !broker::available() {
        return;
    }
    if quick() {
        bench_sim_end_to_end(10, 20, Duration::from_millis(2), 10);
    } else {
        bench_sim_end_to_end(100, 100, Duration::from_millis(2), 10);
        bench_sim_end_to_end(100, 300, Duration::from_millis(2), 1);
    }
}
