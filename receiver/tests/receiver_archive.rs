//! The archive on its own: what survives a crash (leftover temporary files,
//! a torn last line of `flags.jsonl`) and what reopening rebuilds.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use mrv_receiver::archive::{Archive, ItemStatus};
use upload_support::TestChain;

#[test]
fn reopening_after_a_crash_rebuilds_the_chain_and_ignores_debris() {
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(3);
    let mut other = TestChain::new(2, 60_000, 600_000);
    other.extend(1);
    let keys = chain.keys();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let a = Archive::open(dir.path()).expect("open");
        for r in &chain.reports[..2] {
            assert_eq!(
                a.offer(r, &keys, 1).expect("io").status,
                ItemStatus::Accepted
            );
        }
        let eq = a.offer(&other.reports[0], &keys, 2).expect("io");
        assert_eq!(eq.reason.as_deref(), Some("equivocation"));
    }
    // Debris of a crash: a half-written temporary report and a torn flag line.
    let gw = dir.path().join("gateways/gw-test");
    std::fs::write(gw.join(".000000000003.jws.tmp"), b"eyJhbGciOi").expect("write");
    let flags = dir.path().join("flags.jsonl");
    let mut text = std::fs::read_to_string(&flags).expect("flags");
    text.push_str("{\"time_ms\":3,\"gatew");
    std::fs::write(&flags, text).expect("write");

    let a = Archive::open(dir.path()).expect("reopen");
    let st = a.chain_status("gw-test").expect("known");
    assert_eq!((st.reports, st.head_seq, st.equivocations.len()), (2, 2, 1));
    assert_eq!(
        st.head_hash.as_deref(),
        Some(
            mrv_shared::report::verify_jws(&chain.reports[1], &keys)
                .expect("verifies")
                .hash_hex()
                .as_str()
        )
    );
    // The chain continues where it stopped; the old ones are duplicates.
    let r = a.offer(&chain.reports[2], &keys, 4).expect("io");
    assert_eq!(r.status, ItemStatus::Accepted);
    let r = a.offer(&chain.reports[0], &keys, 5).expect("io");
    assert_eq!(r.status, ItemStatus::Duplicate);
    assert_eq!(
        a.fetch("gw-test-000000000003").expect("io").as_deref(),
        Some(chain.reports[2].as_slice())
    );
    let listed: Vec<u64> = a
        .list("gw-test", 0, 10)
        .expect("known")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(listed, vec![1, 2, 3]);
}
