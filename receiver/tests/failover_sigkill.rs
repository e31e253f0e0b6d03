//! Two `mrv-receiver` processes on one PostgreSQL database; the gateway's
//! uploader is given both URLs. One receiver is killed with SIGKILL in the
//! middle of the upload: the gateway fails over to the other, and every
//! report ends up stored exactly once, in order, verbatim, with one log
//! entry each; every report's receipt is kept at the gateway and checks
//! out, and the kept checkpoint is consistent with the backend's log.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use mrv_receiver::archive::postgres::PgArchive;
use mrv_receiver::archive::{Archive, LogIdentity};
use mrv_receiver::throwaway_postgres::fresh_database;
use mrv_shared::report::verify::Chain;
use mrv_shared::report::verify_report;
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::receipt::verify_receipt;
use std::path::Path;
use std::process::Child;
use std::time::Duration;
use upload_support::{Pki, TestChain, Uploader, init};

/// Starts `mrv-receiver` on the database and returns it with its port.
fn spawn(url: &str, log_key: &Path, pki_dir: &Path, gw_key: &Path) -> (Child, u16) {
    let (child, addr) = upload_support::spawn_receiver(
        env!("CARGO_BIN_EXE_mrv-receiver"),
        "127.0.0.1:0",
        &[
            "--database-url".as_ref(),
            url.as_ref(),
            "--db-pool".as_ref(),
            "4".as_ref(),
            "--log-key".as_ref(),
            log_key.as_os_str(),
        ],
        pki_dir,
        gw_key,
    );
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"));
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_receiver_mid_upload_fails_over_losing_and_duplicating_nothing() {
    init();
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write(dir.path());
    let mut chain = TestChain::new(2, 10_000, 600_000);
    chain.extend(40);
    let gw_key = dir.path().join("gw.jwk");
    std::fs::write(&gw_key, serde_json::to_vec(&chain.jwk()).expect("JWK")).expect("write");
    std::fs::write(
        dir.path().join("registry.json"),
        serde_json::to_vec(&upload_support::synthetic_registry()).expect("registry JSON"),
    )
    .expect("write registry");
    let log_key = dir.path().join("log.jwk");
    let identity: LogIdentity =
        mrv_receiver::log_key::load_or_create(&log_key, Some("mrv.failover/log")).expect("key");
    let url = fresh_database("failover").await;

    let (mut a, port_a) = spawn(&url, &log_key, dir.path(), &gw_key);
    let (mut b, port_b) = spawn(&url, &log_key, dir.path(), &gw_key);
    let mut cfg = pki.upload_config(&format!("https://localhost:{port_a}/"), Some("tok"), false);
    cfg.fallback_urls = vec![format!("https://localhost:{port_b}/")];
    cfg.log_key = Some(identity.verifier().clone());
    cfg.batch_size = 1;
    cfg.keep_delivered = Duration::from_secs(10 * 365 * 86_400);
    let mut up = Uploader::start(chain.store.clone(), cfg);
    up.wait(60, |s| s.delivered_upto >= 8).await;
    a.kill().expect("SIGKILL");
    a.wait().expect("reaped");
    let at_kill = up.status.borrow().delivered_upto;
    assert!(at_kill < 40, "killed mid-upload ({at_kill} delivered)");
    let s = up.wait(60, |s| s.delivered_upto == 40).await;
    up.stop().await;
    assert_eq!(s.endpoint, 1, "finished on the surviving receiver");
    assert_eq!(s.log_alarm, None);
    assert_eq!(s.log_size, Some(40));
    b.kill().expect("stop");
    b.wait().expect("reaped");

    // The database: each report once, verbatim, chain valid, one log entry each.
    let archive = PgArchive::connect(&url, 2, identity.clone())
        .await
        .expect("connect");
    let st = archive
        .chain_status("gw-test")
        .await
        .expect("io")
        .expect("known");
    assert_eq!((st.reports, st.head_seq), (40, 40));
    assert!(
        st.equivocations.is_empty(),
        "a resend is a duplicate, never an equivocation"
    );
    let cp = Checkpoint::open(
        &archive.checkpoint().await.expect("io"),
        identity.verifier(),
    )
    .expect("signed");
    assert_eq!(cp.size, 40, "one log entry per report, none twice");
    let keys = chain.keys();
    let mut c = Chain::new(false);
    let receipts = mrv_gateway::upload::receipts::ReceiptStore::open(
        chain.store.dir(),
        Some(identity.verifier().clone()),
    )
    .expect("receipts");
    assert_eq!(receipts.latest().map(|c| c.size), Some(40));
    for (i, r) in chain.reports.iter().enumerate() {
        let seq = i as u64 + 1;
        let stored = archive
            .fetch(&format!("gw-test-{seq:012}"))
            .await
            .expect("io")
            .expect("stored");
        assert_eq!(&stored, r, "seq {seq} verbatim");
        c.push(
            &verify_report(&stored, &keys, &upload_support::synthetic_trust()).expect("verifies"),
        )
        .expect("chain continues");
        let kept = receipts.get(seq).expect("io").expect("receipt kept");
        verify_receipt(&kept, Some(r), identity.verifier()).expect("receipt checks out");
    }
    assert_eq!(chain.store.delivered_upto(), 40);
}
