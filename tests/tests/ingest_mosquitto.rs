//! End to end through a real mosquitto (external broker mode), binary and
//! JSON devices. mosquitto is configured to queue very few QoS1 messages for
//! the gateway's session, so it drops messages as it does in the field with
//! a slow subscriber; the end-to-end ack makes devices re-send, and nothing
//! is lost or duplicated.

use mrv_e2e::{Mosquitto, TestSite, assert_gap_free, mosquitto_available, stored_seqs};
use mrv_firmware::sim::WireFormat;
use mrv_gateway::clock::SystemClock;
use mrv_gateway::ingest::stats::IngestStats;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_survive_a_lossy_mosquitto_in_binary_and_json() {
    if !mosquitto_available() {
        return;
    }
    let broker = Mosquitto::start("max_queued_messages 20\nmax_inflight_messages 10\n");
    let site = TestSite::new(6, "");
    site.use_external_broker(broker.port);
    let gw = mrv_gateway::runtime::start(site.config(), Arc::new(SystemClock))
        .await
        .expect("gateway starts");
    mrv_e2e::wait_until_subscribed(&gw).await;
    let frames = 120;
    let mut binary = site.sim_config(broker.port, 2, Duration::from_millis(1), Some(frames));
    let mut json = binary.clone();
    binary.devices.truncate(3);
    json.devices.drain(..3);
    json.format = WireFormat::Json;
    let a = mrv_firmware::sim::start(binary)
        .await
        .expect("binary devices start");
    let b = mrv_firmware::sim::start(json)
        .await
        .expect("json devices start");
    assert!(
        a.wait_all_acked(Duration::from_secs(90)).await,
        "binary devices not fully acked: {:?}",
        a.stats().totals
    );
    assert!(
        b.wait_all_acked(Duration::from_secs(90)).await,
        "json devices not fully acked: {:?}",
        b.stats().totals
    );
    let mut acked = a.acked_seqs();
    acked.extend(b.acked_seqs());
    assert_eq!(acked.len(), 6);
    let stored = stored_seqs(&gw.state.buffer);
    assert_eq!(assert_gap_free(&stored, &acked), 6 * frames);
    assert_eq!(IngestStats::get(&gw.state.ingest.frames_stored), 6 * frames);
    assert_eq!(gw.state.ingest.rejects_total(), 0);
    let resent = a.stats().totals.frames_resent + b.stats().totals.frames_resent;
    eprintln!(
        "devices re-sent {resent} frames; gateway saw {} duplicates",
        IngestStats::get(&gw.state.ingest.duplicates)
    );
    a.stop().await;
    b.stop().await;
    gw.shutdown().await;
}
