//! Bad input: a corpus of malformed, forged and misaddressed payloads,
//! published through the real broker while good devices run. The gateway
//! keeps running, counts each payload under the right reason, quarantines
//! it, and the good devices' data is complete.

use mrv_e2e::{TestSite, assert_gap_free, stored_seqs};
use mrv_gateway::clock::SystemClock;
use mrv_gateway::ingest::stats::IngestStats;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::wire::{Frame, binary, json, signature, topic};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn frame(site: &str, device: &str, seq: u64, boot: u32) -> Frame {
    Frame {
        site: SiteId::new(site).expect("valid"),
        device: DeviceId::new(device).expect("valid"),
        seq,
        boot,
        firmware: "attacker".into(),
        base_time_ms: Some(1_764_115_200_000),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("valid"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: vec![Sample {
            channel: 0,
            offset_ms: 0,
            value: 42,
            quality: Quality::GOOD,
        }],
        signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_counted_quarantined_and_harmless() {
    let site = TestSite::new(2, "");
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    mrv_e2e::wait_until_subscribed(&gw).await;
    let good = mrv_firmware::sim::start(site.sim_config(
        site.mqtt_port,
        2,
        Duration::from_millis(3),
        Some(200),
    ))
    .await
    .expect("simulator starts");

    let victim = site.devices[0].0.to_string();
    let victim_key = ed25519_dalek::SigningKey::from_bytes(&site.devices[0].2);
    let wrong_key = ed25519_dalek::SigningKey::from_bytes(&[0xee; 32]);
    let up = |d: &str| format!("mrv/demo-site/{d}/up");

    let mut corpus: Vec<(&'static str, String, Vec<u8>)> = vec![
        ("empty", up(&victim), vec![]),
        (
            "bad_magic",
            up(&victim),
            b"\x00\x01\x02 random garbage".to_vec(),
        ),
        (
            "truncated",
            up(&victim),
            b"MF\x01\x01\x40\x00\x00\x00abc".to_vec(),
        ),
        (
            "unsupported_version",
            up(&victim),
            b"MF\x09\x00\x00\x00\x00\x00".to_vec(),
        ),
        (
            "bad_json",
            up(&victim),
            br#"{"v":1,"site":"demo-site","device":"x","seq":1,"readings":[{"chanel":"e"}]}"#
                .to_vec(),
        ),
        // Larger than the gateway accepts (64 KiB) but within the broker's limit.
        ("oversized", up(&victim), vec![b'{'; 66_000]),
        (
            "unknown_device",
            up("intruder-9"),
            binary::encode_frame(&frame("demo-site", "intruder-9", 1, 0)),
        ),
        ("device_mismatch", up(&victim), {
            let mut f = frame("demo-site", "dev-001", 1, 0);
            signature::sign_frame(&mut f, &victim_key);
            binary::encode_frame(&f)
        }),
        (
            "wrong_site",
            up(&victim),
            json::encode_frame(&frame("other-site", &victim, 1, 0)),
        ),
        (
            "missing_signature",
            up(&victim),
            binary::encode_frame(&frame("demo-site", &victim, 1, 0)),
        ),
        ("bad_signature", up(&victim), {
            let mut f = frame("demo-site", &victim, 1, 0);
            signature::sign_frame(&mut f, &wrong_key);
            binary::encode_frame(&f)
        }),
    ];
    // A valid frame with one flipped byte inside the body: checksum mismatch.
    let mut flipped = {
        let mut f = frame("demo-site", &victim, 1, 0);
        signature::sign_frame(&mut f, &victim_key);
        binary::encode_frame(&f)
    };
    flipped[12] ^= 0x40;
    corpus.push(("bad_checksum", up(&victim), flipped));

    let mut opts = MqttOptions::new("attacker", "127.0.0.1", site.mqtt_port);
    opts.set_max_packet_size(200_000, 200_000);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    for (_, t, payload) in &corpus {
        client
            .publish(t.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queue publish");
    }

    assert!(
        good.wait_all_acked(Duration::from_secs(60)).await,
        "good devices not acked: {:?}",
        good.stats().totals
    );
    // The corpus went in before the good devices finished; wait until all of it is counted.
    let expected: BTreeMap<&str, u64> = corpus.iter().fold(BTreeMap::new(), |mut m, (r, _, _)| {
        *m.entry(*r).or_insert(0) += 1;
        m
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while gw.state.ingest.rejects_total() < corpus.len() as u64
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.state.ingest.rejects(), expected, "rejects by reason");
    let q = gw
        .state
        .quarantine
        .lock()
        .expect("lock")
        .entries()
        .map(|e| e.reason)
        .collect::<Vec<_>>();
    assert_eq!(q.len(), corpus.len());

    let acked = good.acked_seqs();
    assert_eq!(
        assert_gap_free(&stored_seqs(&gw.state.buffer), &acked),
        2 * 200
    );
    assert!(
        stored_seqs(&gw.state.buffer)
            .keys()
            .all(|d| site.devices.iter().any(|(id, _, _)| id == d))
    );
    assert_eq!(IngestStats::get(&gw.state.ingest.frames_stored), 400);

    // After all that, a device that lost its counter (later boot, old seq) is refused and told so.
    let mut reset = frame("demo-site", &victim, 3, 99);
    signature::sign_frame(&mut reset, &victim_key);
    client
        .publish(
            topic::up_topic(&site.site, &site.devices[0].0),
            QoS::AtLeastOnce,
            false,
            binary::encode_frame(&reset),
        )
        .await
        .expect("queue publish");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw.state.ingest.rejects().contains_key("seq_regressed")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.state.ingest.rejects().get("seq_regressed"), Some(&1));
    assert_eq!(IngestStats::get(&gw.state.ingest.frames_stored), 400);
    driver.abort();
    good.stop().await;
    gw.shutdown().await;
}
