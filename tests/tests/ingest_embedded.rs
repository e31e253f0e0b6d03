//! End to end on the embedded endpoint: simulated signed devices, the MQTT endpoint inside
//! the gateway, ingest, sled. Every frame is stored once, acked, gap-free.

use mrv_e2e::{TestSite, assert_gap_free, stored_seqs};
use mrv_gateway::clock::SystemClock;
use mrv_gateway::ingest::stats::IngestStats;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_frames_are_stored_once_acked_and_verified() {
    let site = TestSite::new(4, "");
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    let frames_per_device = 150;
    let sim = mrv_firmware::sim::start(site.sim_config(
        site.mqtt_port,
        3,
        Duration::from_millis(2),
        Some(frames_per_device),
    ))
    .await
    .expect("simulator starts");
    assert!(
        sim.wait_all_acked(Duration::from_secs(60)).await,
        "not every frame was acked: {:?}",
        sim.stats().totals
    );
    let acked = sim.acked_seqs();
    assert!(
        acked.values().all(|&s| s == frames_per_device),
        "acked: {acked:?}"
    );
    let stored = stored_seqs(&gw.state.buffer);
    assert_eq!(assert_gap_free(&stored, &acked), 4 * frames_per_device);
    let ingest = &gw.state.ingest;
    assert_eq!(
        IngestStats::get(&ingest.frames_stored),
        4 * frames_per_device
    );
    let buffered_readings: u64 = gw
        .state
        .buffer
        .scan(None)
        .map(|f| f.expect("scan").frame.samples.len() as u64)
        .sum();
    assert!(
        buffered_readings >= 4 * frames_per_device * 3,
        "at least 3 readings per frame"
    );
    assert_eq!(IngestStats::get(&ingest.readings_stored), buffered_readings);
    assert_eq!(gw.state.buffer.stats().readings, buffered_readings);
    assert_eq!(
        IngestStats::get(&ingest.signatures_verified),
        IngestStats::get(&ingest.messages)
    );
    assert_eq!(ingest.rejects_total(), 0);
    // Every stored frame still carries a device signature that verifies.
    for f in gw.state.buffer.scan(None) {
        let f = f.expect("scan");
        let key = gw
            .state
            .config
            .devices
            .get(&f.frame.device)
            .and_then(|d| d.public_key)
            .expect("registered key");
        mrv_shared::wire::signature::verify_frame(&f.frame, &key)
            .expect("stored frame signature verifies");
    }
    sim.stop().await;
    gw.shutdown().await;
}
