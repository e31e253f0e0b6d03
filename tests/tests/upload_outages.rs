//! Outages between gateway and backend, over real TLS to a real receiver:
//! receiver down then up, 503 with Retry-After, answers slower than the
//! timeout, connections reset mid-body. In every case each report is
//! delivered exactly once, in order, the chain is valid at the receiver, and
//! nothing is deleted early at the gateway. (SIGKILL of the receiver
//! process: `receiver/tests/receiver_sigkill.rs`.)

mod upload_support;

use mrv_receiver::RunningReceiver;
use mrv_receiver::archive::Archive;
use mrv_shared::report::verify::Chain;
use mrv_shared::report::verify_report;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use upload_support::{
    Fault, FaultProxy, Pki, TestChain, Uploader, init, start_receiver, start_tls_receiver,
};

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Exactly once, in order, verbatim, chain valid; nothing lost locally.
async fn assert_delivered_exactly_once(rx: &RunningReceiver, chain: &TestChain) {
    let a = rx.handle.archive();
    let n = chain.reports.len() as u64;
    let status = a
        .chain_status("gw-test")
        .await
        .expect("io")
        .expect("gateway known");
    assert_eq!((status.reports, status.head_seq), (n, n));
    assert!(status.equivocations.is_empty());
    assert_eq!(
        rx.handle.stats().accepted.load(Ordering::SeqCst),
        n,
        "each report stored once"
    );
    let keys = chain.keys();
    let mut c = Chain::new(false);
    for (i, r) in chain.reports.iter().enumerate() {
        let stored = a
            .fetch(&format!("gw-test-{:012}", i + 1))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(&stored, r);
        let v =
            verify_report(&stored, &keys, &upload_support::synthetic_trust()).expect("verifies");
        c.push(&v).expect("chain continues");
        assert_eq!(&chain.store.read(i as u64 + 1).expect("kept locally"), r);
    }
    assert_eq!(chain.store.delivered_upto(), n);
}

fn config(pki: &Pki, port: u16) -> mrv_gateway::upload::config::UploadConfig {
    let mut c = pki.upload_config(&format!("https://localhost:{port}/"), None, false);
    c.keep_delivered = TEN_YEARS;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(2, 30_000, 600_000);
    chain.extend(9);
    // A free port with nobody listening.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut up = Uploader::start(chain.store.clone(), config(&pki, addr.port()));
    let s = up.wait(30, |s| s.consecutive_failures >= 3).await;
    assert_eq!(s.delivered_upto, 0);
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("connect"),
        "{s:?}"
    );
    assert_eq!(chain.store.undelivered().len(), 9, "nothing marked early");

    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(
        rx_dir.path(),
        chain.keys(),
        None,
        Some(pki.server_tls(false)),
        Some(addr),
    )
    .await;
    let s = up.wait(30, |s| s.delivered_upto == 9).await;
    assert!(s.last_error.is_none(), "progress clears the error: {s:?}");
    up.stop().await;
    assert_delivered_exactly_once(&rx, &chain).await;
    rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_with_retry_after_is_honoured() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(2, 30_000, 600_000);
    chain.extend(6);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, false).await;
    rx.handle.set_maintenance(Some(1));
    let started = Instant::now();
    let mut up = Uploader::start(chain.store.clone(), config(&pki, rx.addr().port()));
    let s = up.wait(30, |s| s.consecutive_failures >= 1).await;
    let err = s.last_error.clone().unwrap_or_default();
    assert!(err.contains("503") && err.contains("maintenance"), "{err}");
    assert!(s.next_retry_ms.is_some(), "retry scheduled: {s:?}");
    // Still in maintenance at the second attempt: it comes >= 1 s later.
    up.wait(30, |s| s.consecutive_failures >= 2).await;
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(rx.handle.stats().requests.load(Ordering::SeqCst), 2);
    rx.handle.set_maintenance(None);
    up.wait(30, |s| s.delivered_upto == 6).await;
    up.stop().await;
    assert_delivered_exactly_once(&rx, &chain).await;
    rx.stop().await.expect("stops");
}

/// A chain of 8 reports, a TLS receiver behind a fault proxy that holds
/// the first connection's answer (after the request went through) for 3 s,
/// and an upload config through the proxy with a floor `timeout` and
/// `bytes_per_second(&chain)` as its `timeout_bytes_per_second`.
/// (Fields in reverse order of creation: they drop as the set-up's locals
/// did in each test.)
struct StalledAnswer {
    cfg: mrv_gateway::upload::config::UploadConfig,
    proxy: FaultProxy,
    rx: RunningReceiver,
    _rx_dir: tempfile::TempDir,
    chain: TestChain,
    _pki: Pki,
}

async fn stalled_answer(
    timeout: Duration,
    bytes_per_second: impl FnOnce(&TestChain) -> u64,
) -> StalledAnswer {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(2, 30_000, 600_000);
    chain.extend(8);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, false).await;
    let proxy = FaultProxy::start(rx.addr()).await;
    proxy.inject(Fault::StallAnswerAfter(2500, 3000), 1);
    let mut cfg = config(&pki, proxy.addr.port());
    cfg.timeout = timeout;
    cfg.timeout_bytes_per_second = bytes_per_second(&chain);
    StalledAnswer {
        cfg,
        proxy,
        rx,
        _rx_dir: rx_dir,
        chain,
        _pki: pki,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_timeout_are_retried_and_answered_as_duplicates() {
    // The answer is held for 3 s; the uploader gives up after 1 s.
    let setup = stalled_answer(Duration::from_secs(1), |_| 0).await;
    let mut up = Uploader::start(setup.chain.store.clone(), setup.cfg);
    let s = up.wait(30, |s| s.delivered_upto == 8).await;
    up.stop().await;
    assert_eq!(setup.proxy.faults_applied.load(Ordering::SeqCst), 1);
    assert!(s.requests >= 3, "the stalled batch was sent again: {s:?}");
    assert!(
        setup.rx.handle.stats().duplicates.load(Ordering::SeqCst) >= 1,
        "the backend stored the first batch and answered its resend as duplicate"
    );
    assert_delivered_exactly_once(&setup.rx, &setup.chain).await;
    setup.rx.stop().await.expect("stops");
}

/// The same stalled answer, but the request's timeout grows with its
/// size: a floor of 1 s plus the batch's report bytes at a throughput
/// that gives even the smallest report 4 s more, so the 3 s stall is
/// waited for and nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_within_the_size_scaled_timeout_is_waited_for_not_resent() {
    let smallest_report = |chain: &TestChain| {
        chain
            .reports
            .iter()
            .map(|r| r.len() as u64 + 1)
            .min()
            .expect("reports")
    };
    let setup = stalled_answer(Duration::from_secs(1), |c| smallest_report(c) / 4).await;
    let smallest = smallest_report(&setup.chain);
    let timeout = setup.cfg.request_timeout(smallest);
    assert!(
        (Duration::from_secs(5)..Duration::from_millis(5_100)).contains(&timeout),
        "{timeout:?} for {smallest} bytes"
    );
    let started = Instant::now();
    let mut up = Uploader::start(setup.chain.store.clone(), setup.cfg);
    let s = up.wait(30, |s| s.delivered_upto == 8).await;
    up.stop().await;
    assert_eq!(setup.proxy.faults_applied.load(Ordering::SeqCst), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the answer was stalled"
    );
    assert_eq!(s.errors, 0, "the stalled request was waited for: {s:?}");
    assert_eq!(
        setup.rx.handle.stats().duplicates.load(Ordering::SeqCst),
        0,
        "nothing sent twice"
    );
    assert_delivered_exactly_once(&setup.rx, &setup.chain).await;
    setup.rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_body_are_retried() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(2, 30_000, 600_000);
    chain.extend(8);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, false).await;
    let proxy = FaultProxy::start(rx.addr()).await;
    // Handshake done, headers and part of the body through, then RST.
    proxy.inject(Fault::ResetAfterClientBytes(2500), 3);
    let mut up = Uploader::start(chain.store.clone(), config(&pki, proxy.addr.port()));
    let s = up.wait(30, |s| s.delivered_upto == 8).await;
    up.stop().await;
    assert_eq!(proxy.faults_applied.load(Ordering::SeqCst), 3);
    assert!(s.requests >= 5, "{s:?}");
    assert!(
        s.errors >= 3,
        "each reset counted as a failed attempt: {s:?}"
    );
    assert!(
        s.bytes_sent / s.requests > 2500,
        "bodies are longer than the reset point: {s:?}"
    );
    assert_delivered_exactly_once(&rx, &chain).await;
    rx.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_lost_its_delivery_record_resends_and_gets_duplicates() {
    init();
    let pki = Pki::new();
    let mut chain = TestChain::new(2, 30_000, 600_000);
    chain.extend(6);
    let rx_dir = tempfile::tempdir().expect("tempdir");
    let rx = start_tls_receiver(rx_dir.path(), chain.keys(), &pki, false).await;
    let mut up = Uploader::start(chain.store.clone(), config(&pki, rx.addr().port()));
    up.wait(30, |s| s.delivered_upto == 6).await;
    up.stop().await;
    // A crash after the backend stored the reports but before the gateway
    // recorded it: the delivery record is gone.
    std::fs::remove_file(chain.store.dir().join("delivered.json")).expect("remove");
    let reopened = mrv_gateway::report::store::ReportStore::open(chain.dir.path()).expect("reopen");
    assert_eq!(reopened.undelivered().len(), 6);
    let mut up = Uploader::start(reopened.clone(), config(&pki, rx.addr().port()));
    let s = up.wait(30, |s| s.delivered_upto == 6).await;
    up.stop().await;
    assert!(s.alarms == 0 && s.rejected.is_none(), "{s:?}");
    assert_eq!(rx.handle.stats().duplicates.load(Ordering::SeqCst), 6);
    assert_eq!(reopened.delivered_upto(), 6);
    assert_delivered_exactly_once(&rx, &chain).await;
    rx.stop().await.expect("stops");
}
