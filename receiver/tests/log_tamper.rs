//! A backend that drops an accepted report and rebuilds its log without it
//! (signing new checkpoints with its real key) is caught by the gateway,
//! which cannot get a consistency proof to the checkpoint it kept, and by an
//! auditor holding the gateway's receipts (`mrv-gateway receipts audit`).

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use mrv_gateway::cli::receipts::{audit_online, check_offline};
use sha2::{Digest, Sha256};
use std::time::Duration;
use upload_support::{TestChain, Uploader, init, start_receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_drops_an_accepted_report_is_caught_by_the_gateway_and_the_auditor() {
    init();
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(3);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(rx_dir.path(), chain.keys(), None, None, None).await;
    let addr = rx.addr();
    let key = rx.handle.log().verifier().clone();
    let url = format!("http://{addr}/");
    let mut cfg = mrv_gateway::upload::config::UploadConfig::for_url(&url);
    cfg.log_key = Some(key.clone());
    cfg.batch_size = 1;
    cfg.backoff_base_ms = 20;
    cfg.backoff_max_ms = 200;
    cfg.keep_delivered = Duration::from_secs(10 * 365 * 86_400);
    let mut up = Uploader::start(chain.store.clone(), cfg.clone());
    let s = up
        .wait(30, |s| s.delivered_upto == 3 && s.log_size == Some(3))
        .await;
    assert_eq!((s.receipts_kept, s.log_alarm.clone()), (3, None));
    up.stop().await;
    // An honest backend passes the audit.
    let http = reqwest::Client::new();
    let gw_data = chain.dir.path().to_path_buf();
    let gw_data = gw_data.as_path();
    let v = audit_online(gw_data, &http, &url, Some(&key))
        .await
        .expect("audit");
    assert!(v.iter().all(|v| v.problem.is_none()), "{v:?}");
    assert!(
        check_offline(gw_data, Some(&key))
            .expect("check")
            .iter()
            .all(|v| v.problem.is_none())
    );
    rx.stop().await.expect("stops");

    // The backend drops report 2 and rewrites its log without it.
    let gw = rx_dir.path().join("gateways/gw-test");
    std::fs::remove_file(gw.join("000000000002.jws")).expect("rm");
    let mut entries = Vec::new();
    for seq in [1, 3] {
        let bytes = std::fs::read(gw.join(format!("{seq:012}.jws"))).expect("read");
        entries.extend_from_slice(&Sha256::digest(&bytes));
    }
    std::fs::write(rx_dir.path().join("log/entries"), entries).expect("rewrite the log");
    let rx = start_receiver(rx_dir.path(), chain.keys(), None, None, Some(addr)).await;

    // The gateway carries on uploading and notices.
    chain.extend(2);
    let mut up = Uploader::start(chain.store.clone(), cfg);
    let s = up
        .wait(30, |s| s.delivered_upto == 5 && s.log_alarm.is_some())
        .await;
    up.stop().await;
    let alarm = s.log_alarm.expect("alarm");
    assert!(
        alarm.contains("forked") || alarm.contains("not consistent"),
        "{alarm}"
    );
    assert_eq!(
        s.log_size,
        Some(3),
        "the honest checkpoint is kept as evidence"
    );
    // The auditor with the receipts sees which report went missing.
    let v = audit_online(gw_data, &http, &url, Some(&key))
        .await
        .expect("audit");
    let bad: Vec<u64> = v
        .iter()
        .filter(|v| v.problem.is_some())
        .map(|v| v.seq)
        .collect();
    assert!(bad.contains(&2), "{v:?}");
    let two = v.iter().find(|v| v.seq == 2).expect("seq 2");
    let (reason, _) = two.problem.clone().expect("a problem");
    assert!(
        reason == "consistency_failed" || reason == "report_missing",
        "{two}"
    );
    rx.stop().await.expect("stops");
}
