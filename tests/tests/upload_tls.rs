//! Upload over real TLS to a real receiver on 127.0.0.1: a CA and
//! certificates made at test time, hostname verification on, bearer token,
//! and the mTLS variant.

mod upload_support;

use mrv_receiver::archive::Archive;

use std::time::Duration;
use upload_support::{
    Pki, TestChain, Uploader, https_url, init, start_receiver, start_tls_receiver,
};

const TOKEN: &str = "upload-token-1";
const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_over_tls_in_order_and_new_reports_follow() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(2, 10_000, 600_000);
    chain.extend(10);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(
        rx_dir.path(),
        chain.keys(),
        Some(TOKEN),
        Some(pki.server_tls(false)),
        None,
    )
    .await;
    let url = https_url(&rx);
    let mut cfg = pki.upload_config(&url, Some(TOKEN), false);
    cfg.keep_delivered = TEN_YEARS;
    let mut up = Uploader::start(chain.store.clone(), cfg);
    let s = up.wait(30, |s| s.delivered_upto == 10).await;
    assert_eq!(s.backlog, 0);
    assert!(s.requests >= 3, "batches of 4: {s:?}");
    assert!(s.rejected.is_none() && s.alarms == 0, "{s:?}");

    // New reports are picked up when the uploader is woken.
    chain.extend(3);
    up.wake.notify_one();
    up.wait(30, |s| s.delivered_upto == 13).await;
    up.stop().await;

    let status = rx
        .handle
        .archive()
        .chain_status("gw-test")
        .await
        .expect("io")
        .expect("gateway known");
    assert_eq!((status.reports, status.head_seq), (13, 13));
    assert!(status.equivocations.is_empty());
    assert_eq!(chain.store.delivered_upto(), 13);
    for (i, r) in chain.reports.iter().enumerate() {
        let id = format!("gw-test-{:012}", i + 1);
        let stored = rx
            .handle
            .archive()
            .fetch(&id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(&stored, r, "stored verbatim");
        // Kept at the gateway: nothing deleted before its time.
        assert_eq!(&chain.store.read(i as u64 + 1).expect("kept"), r);
    }
    let st = rx.handle.stats();
    assert_eq!(st.accepted.load(std::sync::atomic::Ordering::SeqCst), 13);
    rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_reports_are_pruned_after_their_keep_time_but_the_head_stays() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(5);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, false).await;
    let url = https_url(&rx);
    // The test periods lie in the past; a one-day keep time expires them.
    let mut cfg = pki.upload_config(&url, None, false);
    cfg.keep_delivered = Duration::from_secs(86_400);
    let mut up = Uploader::start(chain.store.clone(), cfg);
    let s = up.wait(30, |s| s.delivered_upto == 5).await;
    up.stop().await;
    assert_eq!(s.reports_pruned, 4);
    for seq in 1..=4 {
        assert!(
            chain.store.read(seq).is_err(),
            "report {seq} pruned after delivery"
        );
    }
    assert_eq!(chain.store.read(5).expect("head kept"), chain.reports[4]);
    rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_needs_the_client_certificate() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(3);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, true).await;
    let url = https_url(&rx);

    let mut cfg = pki.upload_config(&url, None, false);
    cfg.keep_delivered = TEN_YEARS;
    let mut up = Uploader::start(chain.store.clone(), cfg.clone());
    let s = up.wait(30, |s| s.consecutive_failures >= 2).await;
    up.stop().await;
    assert_eq!(s.delivered_upto, 0, "{s:?}");
    assert!(
        rx.handle
            .archive()
            .chain_status("gw-test")
            .await
            .expect("io")
            .is_none()
    );

    let mut cfg = pki.upload_config(&url, None, true);
    cfg.keep_delivered = TEN_YEARS;
    let mut up = Uploader::start(chain.store.clone(), cfg);
    up.wait(30, |s| s.delivered_upto == 3).await;
    up.stop().await;
    assert_eq!(
        rx.handle
            .archive()
            .chain_status("gw-test")
            .await
            .expect("io")
            .map(|s| s.head_seq),
        Some(3)
    );
    rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_verification_and_the_ca_bundle_are_enforced() {
    init();
    let pki = Pki::new();
    let other = Pki::new();
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(2);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, false).await;
    let port = rx.addr().port();

    // The certificate names `localhost`, not 127.0.0.1.
    let mut up = Uploader::start(
        chain.store.clone(),
        pki.upload_config(&format!("https://127.0.0.1:{port}/"), None, false),
    );
    let s = up.wait(30, |s| s.consecutive_failures >= 2).await;
    up.stop().await;
    assert_eq!(s.delivered_upto, 0);
    let err = s.last_error.unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A CA bundle that did not sign the server certificate.
    let mut up = Uploader::start(
        chain.store.clone(),
        other.upload_config(&format!("https://localhost:{port}/"), None, false),
    );
    let s = up.wait(30, |s| s.consecutive_failures >= 2).await;
    up.stop().await;
    assert_eq!(s.delivered_upto, 0);
    assert!(
        rx.handle
            .archive()
            .chain_status("gw-test")
            .await
            .expect("io")
            .is_none()
    );
    rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_permanent_refusal_that_keeps_the_report_and_raises_an_alarm() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(2);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(
        rx_dir.path(),
        chain.keys(),
        Some(TOKEN),
        Some(pki.server_tls(false)),
        None,
    )
    .await;
    let url = https_url(&rx);
    let mut cfg = pki.upload_config(&url, Some("wrong"), false);
    cfg.keep_delivered = TEN_YEARS;
    let mut up = Uploader::start(chain.store.clone(), cfg);
    let s = up.wait(30, |s| s.rejected.is_some()).await;
    up.stop().await;
    let r = s.rejected.expect("refusal shown");
    assert_eq!(
        (r.seq, r.status, r.reason.as_str()),
        (1, 401, "unauthorized")
    );
    assert_eq!(s.alarms, 1);
    assert_eq!(s.delivered_upto, 0);
    assert_eq!(chain.store.undelivered(), vec![1, 2]);
    assert_eq!(chain.store.read(1).expect("kept"), chain.reports[0]);
    rx.stop().await.expect("stops");
}
