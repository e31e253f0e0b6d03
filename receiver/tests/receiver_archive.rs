//! The file archive on its own: what survives a crash (leftover temporary
//! files, a torn last line of `flags.jsonl`, a torn log entry, a report
//! stored without its log entry) and what reopening rebuilds.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use ed25519_dalek::SigningKey;
use mrv_receiver::archive::file::FileArchive;
use mrv_receiver::archive::{Archive, ItemStatus, LogIdentity};
use mrv_receiver::verification::{Trust, verify_offered};
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::receipt::verify_receipt;
use upload_support::TestChain;

fn identity() -> LogIdentity {
    LogIdentity::new("mrv.test/log", SigningKey::from_bytes(&[5; 32])).expect("identity")
}

async fn offer(a: &FileArchive, bytes: &[u8], t: &Trust) -> mrv_receiver::archive::ItemResult {
    verify_offered(bytes, t).expect("verifies");
    let t = std::sync::Arc::new(t.clone());
    mrv_receiver::verification::offer(a, &t, bytes.to_vec(), 1, None)
        .await
        .expect("io")
        .0
}

#[tokio::test]
async fn reopening_after_a_crash_rebuilds_the_chain_and_the_log_and_ignores_debris() {
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(4);
    let mut other = TestChain::new(2, 60_000, 600_000);
    other.extend(1);
    let t = Trust {
        keys: chain.keys(),
        devices: upload_support::synthetic_trust(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let a = FileArchive::open(dir.path(), identity()).expect("open");
        for r in &chain.reports[..2] {
            assert_eq!(offer(&a, r, &t).await.status, ItemStatus::Accepted);
        }
        let eq = offer(&a, &other.reports[0], &t).await;
        assert_eq!(eq.reason.as_deref(), Some("equivocation"));
    }
    // Debris of crashes: a half-written temporary report, a torn flag line,
    // a report stored whose log entry was never appended, and a torn entry.
    let gw = dir.path().join("gateways/gw-test");
    std::fs::write(gw.join(".000000000004.jws.tmp"), b"eyJhbGciOi").expect("write");
    let flags = dir.path().join("flags.jsonl");
    let mut text = std::fs::read_to_string(&flags).expect("flags");
    text.push_str("{\"time_ms\":3,\"gatew");
    std::fs::write(&flags, text).expect("write");
    std::fs::write(gw.join("000000000003.jws"), &chain.reports[2]).expect("write");
    let entries = dir.path().join("log/entries");
    let mut log = std::fs::read(&entries).expect("log");
    assert_eq!(log.len(), 64);
    log.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&entries, log).expect("write");

    let a = FileArchive::open(dir.path(), identity()).expect("reopen");
    let st = a.chain_status("gw-test").await.expect("io").expect("known");
    assert_eq!((st.reports, st.head_seq, st.equivocations.len()), (3, 3, 1));
    assert_eq!(
        std::fs::read(&entries).expect("log").len(),
        96,
        "torn entry cut, missing one added"
    );
    let cp =
        Checkpoint::open(&a.checkpoint().await.expect("io"), identity().verifier()).expect("ok");
    assert_eq!(cp.size, 3);
    let rc = a
        .receipt("gw-test-000000000003")
        .await
        .expect("io")
        .expect("known");
    verify_receipt(&rc, Some(&chain.reports[2]), identity().verifier()).expect("verifies");
    // The chain continues where it stopped; the old ones are duplicates.
    assert_eq!(
        offer(&a, &chain.reports[3], &t).await.status,
        ItemStatus::Accepted
    );
    assert_eq!(
        offer(&a, &chain.reports[0], &t).await.status,
        ItemStatus::Duplicate
    );
    let listed: Vec<u64> = a
        .list("gw-test", 0, 10)
        .await
        .expect("io")
        .expect("known")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(listed, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_log_entry_that_is_not_a_stored_report_refuses_to_open() {
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(1);
    let t = Trust {
        keys: chain.keys(),
        devices: upload_support::synthetic_trust(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let a = FileArchive::open(dir.path(), identity()).expect("open");
        assert_eq!(
            offer(&a, &chain.reports[0], &t).await.status,
            ItemStatus::Accepted
        );
    }
    // A report deleted behind the log's back: the archive says so.
    std::fs::remove_file(dir.path().join("gateways/gw-test/000000000001.jws")).expect("rm");
    let e = FileArchive::open(dir.path(), identity()).expect_err("refused");
    assert!(e.to_string().contains("is not a stored report"), "{e}");
}
