//! The receiver process is killed with SIGKILL while the gateway uploads,
//! then restarted on the same port and data directory: every report ends up
//! stored exactly once, in order, the chain valid, and nothing was marked
//! delivered at the gateway that the receiver does not hold.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use mrv_shared::report::verify::Chain;
use mrv_shared::report::verify_report;
use std::path::Path;
use std::process::Child;
use std::time::Duration;
use upload_support::{Pki, TestChain, Uploader, init};

/// Starts `mrv-receiver` on the file archive `data`; (child, address).
fn spawn(data: &Path, pki_dir: &Path, key: &Path, listen: &str) -> (Child, String) {
    upload_support::spawn_receiver(
        env!("CARGO_BIN_EXE_mrv-receiver"),
        listen,
        &["--data-dir".as_ref(), data.as_os_str()],
        pki_dir,
        key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_restart_loses_and_duplicates_nothing() {
    init();
    let pki = Pki::new();
    let pki_dir = tempfile::tempdir().expect("tempdir");
    pki.write(pki_dir.path());
    let mut chain = TestChain::new(2, 10_000, 600_000);
    chain.extend(40);
    let key = pki_dir.path().join("gw.jwk");
    std::fs::write(&key, serde_json::to_vec(&chain.jwk()).expect("JWK")).expect("write JWK");
    std::fs::write(
        pki_dir.path().join("registry.json"),
        serde_json::to_vec(&upload_support::synthetic_registry()).expect("registry JSON"),
    )
    .expect("write registry");
    let data = tempfile::tempdir().expect("tempdir");

    let (mut child, addr) = spawn(data.path(), pki_dir.path(), &key, "127.0.0.1:0");
    let port = addr.rsplit(':').next().expect("port").to_string();
    let mut cfg = pki.upload_config(&format!("https://localhost:{port}/"), Some("tok"), false);
    cfg.batch_size = 1;
    cfg.keep_delivered = Duration::from_secs(10 * 365 * 86_400);
    let mut up = Uploader::start(chain.store.clone(), cfg);
    up.wait(60, |s| s.delivered_upto >= 8).await;
    // Uploads keep flowing (one report per request): kill it now.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let at_kill = up.status.borrow().delivered_upto;
    assert!(at_kill < 40, "killed mid-upload");
    let s = up.wait(60, |s| s.consecutive_failures >= 2).await;
    // Nothing marked delivered that the receiver's disk does not hold.
    let on_disk = std::fs::read_dir(data.path().join("gateways/gw-test"))
        .expect("gateway dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jws"))
        .count() as u64;
    assert!(
        s.delivered_upto <= on_disk,
        "delivered {} but only {on_disk} on disk",
        s.delivered_upto
    );

    let (mut child, _) = spawn(data.path(), pki_dir.path(), &key, &addr);
    up.wait(60, |s| s.delivered_upto == 40).await;
    up.stop().await;
    child.kill().expect("stop");
    child.wait().expect("reaped");

    let keys = chain.keys();
    let mut c = Chain::new(false);
    for (i, r) in chain.reports.iter().enumerate() {
        let p = data
            .path()
            .join(format!("gateways/gw-test/{:012}.jws", i + 1));
        let stored = std::fs::read(&p).expect("stored");
        assert_eq!(&stored, r, "seq {} verbatim", i + 1);
        c.push(
            &verify_report(&stored, &keys, &upload_support::synthetic_trust()).expect("verifies"),
        )
        .expect("chain continues");
    }
    let files = std::fs::read_dir(data.path().join("gateways/gw-test"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jws"))
        .count();
    assert_eq!(files, 40, "no extra or temporary reports");
    assert!(
        !data.path().join("flags.jsonl").exists(),
        "a resend after the crash is a duplicate, not an equivocation"
    );
    assert_eq!(chain.store.delivered_upto(), 40);
}
