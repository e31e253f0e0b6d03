//! The archive contract (`receiver/src/archive/mod.rs`), run against both
//! stores: the file archive in a temporary directory and the PostgreSQL
//! archive on a throwaway server (one per test binary, a fresh database per
//! test).

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use ed25519_dalek::SigningKey;
use mrv_receiver::archive::file::FileArchive;
use mrv_receiver::archive::postgres::PgArchive;
use mrv_receiver::archive::{AnyArchive, Archive, ItemResult, ItemStatus, LogIdentity};
use mrv_receiver::throwaway_postgres::fresh_database;
use mrv_receiver::verification::Trust;
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::receipt::{verify_consistency_between, verify_receipt};
use std::path::PathBuf;
use upload_support::TestChain;

fn identity() -> LogIdentity {
    LogIdentity::new("mrv.test/log", SigningKey::from_bytes(&[5; 32])).expect("identity")
}

/// How to (re)open one store of each kind.
enum Kind {
    Files(tempfile::TempDir),
    Postgres(String),
}

impl Kind {
    async fn files() -> Kind {
        Kind::Files(tempfile::tempdir().expect("tempdir"))
    }
    async fn postgres() -> Kind {
        Kind::Postgres(fresh_database("contract").await)
    }
    async fn open(&self) -> AnyArchive {
        match self {
            Kind::Files(d) => {
                let dir: PathBuf = d.path().to_path_buf();
                AnyArchive::File(
                    tokio::task::spawn_blocking(move || FileArchive::open(&dir, identity()))
                        .await
                        .expect("join")
                        .expect("open"),
                )
            }
            Kind::Postgres(url) => AnyArchive::Postgres(Box::new(
                PgArchive::connect(url, 4, identity())
                    .await
                    .expect("connect"),
            )),
        }
    }
}

async fn offer(a: &AnyArchive, bytes: &[u8], trust: &Trust) -> ItemResult {
    offer_at(a, bytes, trust, 1).await
}

/// The receiver's own path (registry, verification, commit) at `now_ms`.
async fn offer_at(a: &AnyArchive, bytes: &[u8], trust: &Trust, now_ms: u64) -> ItemResult {
    let t = std::sync::Arc::new(trust.clone());
    mrv_receiver::verification::offer(a, &t, bytes.to_vec(), now_ms, None)
        .await
        .expect("io")
        .0
}

fn trust(chain: &TestChain) -> Trust {
    Trust {
        keys: chain.keys(),
        devices: upload_support::synthetic_trust(),
    }
}

/// Runs `$body` (an async block using `$kind`) against both stores.
macro_rules! both {
    ($name:ident, |$kind:ident| $body:block) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn files() {
                let $kind = Kind::files().await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $kind = Kind::postgres().await;
                $body
            }
        }
    };
}

both!(
    a_chain_is_stored_verbatim_with_receipts_that_verify_offline,
    |kind| {
        let mut chain = TestChain::new(1, 60_000, 600_000);
        chain.extend(5);
        let t = trust(&chain);
        let a = kind.open().await;
        let log = identity();
        let mut last: Option<Checkpoint> = None;
        for (i, r) in chain.reports.iter().enumerate() {
            let res = offer(&a, r, &t).await;
            assert_eq!(res.status, ItemStatus::Accepted, "{res:?}");
            assert_eq!(res.seq, Some(i as u64 + 1));
            let receipt = res.receipt.expect("a receipt with every acceptance");
            assert_eq!(
                (receipt.log_index, receipt.tree_size),
                (i as u64, i as u64 + 1)
            );
            let cp = verify_receipt(&receipt, Some(r), log.verifier()).expect("receipt verifies");
            if let Some(prev) = &last {
                let proof = a.consistency(prev.size, cp.size).await.expect("proof");
                verify_consistency_between(prev, &cp, &proof).expect("consistent");
            }
            last = Some(cp);
        }
        // Same bytes again: duplicate, nothing changes, a receipt against today's tree.
        let dup = offer(&a, &chain.reports[1], &t).await;
        assert_eq!(dup.status, ItemStatus::Duplicate);
        let receipt = dup.receipt.expect("duplicates carry a receipt");
        assert_eq!((receipt.log_index, receipt.tree_size), (1, 5));
        verify_receipt(&receipt, Some(&chain.reports[1]), log.verifier()).expect("verifies");
        assert!(verify_receipt(&receipt, Some(&chain.reports[2]), log.verifier()).is_err());
        // Fetch, list, status, receipt by id, checkpoint.
        for (i, r) in chain.reports.iter().enumerate() {
            let id = format!("gw-test-{:012}", i + 1);
            assert_eq!(
                a.fetch(&id).await.expect("io").as_deref(),
                Some(r.as_slice())
            );
            let rc = a.receipt(&id).await.expect("io").expect("known");
            verify_receipt(&rc, Some(r), log.verifier()).expect("verifies");
        }
        assert_eq!(a.fetch("gw-test-000000000099").await.expect("io"), None);
        let listed = a.list("gw-test", 2, 2).await.expect("io").expect("known");
        assert_eq!(listed.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(listed[0].log_index, 2);
        let st = a.chain_status("gw-test").await.expect("io").expect("known");
        assert_eq!((st.reports, st.head_seq, st.readings), (5, 5, 50));
        assert_eq!(
            a.gateways().await.expect("io"),
            vec![String::from("gw-test")]
        );
        let cp =
            Checkpoint::open(&a.checkpoint().await.expect("io"), log.verifier()).expect("signed");
        assert_eq!(Some(cp), last);
        assert!(a.consistency(3, 9).await.is_err(), "beyond the log");
    }
);

both!(
    an_equivocation_is_rejected_flagged_and_its_bytes_kept,
    |kind| {
        let mut chain = TestChain::new(1, 60_000, 600_000);
        chain.extend(2);
        // Same gateway, key and seqs, different readings.
        let mut other = TestChain::new(2, 60_000, 600_000);
        other.extend(1);
        let t = trust(&chain);
        let a = kind.open().await;
        assert_eq!(
            offer(&a, &chain.reports[0], &t).await.status,
            ItemStatus::Accepted
        );
        let eq = offer(&a, &other.reports[0], &t).await;
        assert_eq!(eq.status, ItemStatus::Rejected);
        assert_eq!(eq.reason.as_deref(), Some("equivocation"));
        assert!(eq.receipt.is_none());
        let flags = a.flags().await.expect("io");
        assert_eq!(flags.len(), 1);
        let f = &flags[0];
        assert_eq!((f.gateway.as_str(), f.seq), ("gw-test", 1));
        let stored = mrv_shared::report::verify_jws(&chain.reports[0], &chain.keys()).expect("ok");
        let offered = mrv_shared::report::verify_jws(&other.reports[0], &chain.keys()).expect("ok");
        assert_eq!(
            (f.stored_hash.clone(), f.offered_hash.clone()),
            (stored.hash_hex(), offered.hash_hex())
        );
        assert_eq!(
            a.evidence(&f.offered_hash).await.expect("io").as_deref(),
            Some(other.reports[0].as_slice()),
            "the refused bytes are the evidence"
        );
        assert_eq!(a.evidence(&f.stored_hash).await.expect("io"), None);
        // The chain goes on from the stored report; the log holds only it.
        assert_eq!(
            offer(&a, &chain.reports[1], &t).await.status,
            ItemStatus::Accepted
        );
        let st = a.chain_status("gw-test").await.expect("io").expect("known");
        assert_eq!((st.head_seq, st.equivocations.len()), (2, 1));
        let cp = Checkpoint::open(&a.checkpoint().await.expect("io"), identity().verifier())
            .expect("ok");
        assert_eq!(cp.size, 2);
    }
);

both!(chain_breaks_are_rejected_and_store_nothing, |kind| {
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(3);
    let t = trust(&chain);
    let a = kind.open().await;
    let r = offer(&a, &chain.reports[1], &t).await;
    assert_eq!(r.reason.as_deref(), Some("seq_gap"), "seq 2 first");
    assert_eq!(
        a.gateways().await.expect("io"),
        Vec::<String>::new(),
        "nothing stored"
    );
    assert_eq!(
        offer(&a, &chain.reports[0], &t).await.status,
        ItemStatus::Accepted
    );
    let r = offer(&a, &chain.reports[2], &t).await;
    assert_eq!(r.reason.as_deref(), Some("seq_gap"));
    // An unknown key: refused by verification, nothing stored.
    let mut stranger = TestChain::new(1, 60_000, 600_000);
    stranger.set_signer(SigningKey::from_bytes(&[77; 32]), "stranger");
    stranger.set_gateway("gw-stranger");
    stranger.extend(1);
    let r = offer(&a, &stranger.reports[0], &t).await;
    assert_eq!(r.reason.as_deref(), Some("unknown_kid"));
    let st = a.chain_status("gw-test").await.expect("io").expect("known");
    assert_eq!((st.reports, st.head_seq), (1, 1));
    assert!(a.chain_status("gw-stranger").await.expect("io").is_none());
    let cp =
        Checkpoint::open(&a.checkpoint().await.expect("io"), identity().verifier()).expect("ok");
    assert_eq!(cp.size, 1, "only the accepted report is logged");
});

both!(a_key_signs_for_one_gateway_only, |kind| {
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(1);
    let mut other = TestChain::new(1, 60_000, 600_000);
    other.set_gateway("gw-other");
    other.extend(1);
    let t = trust(&chain);
    let a = kind.open().await;
    assert_eq!(
        offer(&a, &chain.reports[0], &t).await.status,
        ItemStatus::Accepted
    );
    let r = offer(&a, &other.reports[0], &t).await;
    assert_eq!(r.reason.as_deref(), Some("kid_gateway_mismatch"), "{r:?}");
    assert!(a.chain_status("gw-other").await.expect("io").is_none());
});

both!(
    reopening_keeps_everything_and_the_chain_and_log_continue,
    |kind| {
        let mut chain = TestChain::new(1, 60_000, 600_000);
        chain.extend(4);
        let mut other = TestChain::new(2, 60_000, 600_000);
        other.extend(1);
        let t = trust(&chain);
        let first_cp = {
            let a = kind.open().await;
            for r in &chain.reports[..3] {
                assert_eq!(offer(&a, r, &t).await.status, ItemStatus::Accepted);
            }
            assert_eq!(
                offer(&a, &other.reports[0], &t).await.reason.as_deref(),
                Some("equivocation")
            );
            Checkpoint::open(&a.checkpoint().await.expect("io"), identity().verifier()).expect("ok")
        };
        let a = kind.open().await;
        let st = a.chain_status("gw-test").await.expect("io").expect("known");
        assert_eq!((st.reports, st.head_seq, st.equivocations.len()), (3, 3, 1));
        let r = offer(&a, &chain.reports[3], &t).await;
        assert_eq!(r.status, ItemStatus::Accepted);
        let cp = verify_receipt(
            r.receipt.as_ref().expect("receipt"),
            Some(&chain.reports[3]),
            identity().verifier(),
        )
        .expect("verifies");
        assert_eq!(cp.size, 4);
        let proof = a.consistency(first_cp.size, cp.size).await.expect("proof");
        verify_consistency_between(&first_cp, &cp, &proof)
            .expect("the reopened log extends the old one");
        assert_eq!(
            offer(&a, &chain.reports[0], &t).await.status,
            ItemStatus::Duplicate
        );
    }
);

both!(
    concurrent_offers_for_many_gateways_each_get_one_log_entry,
    |kind| {
        let a = std::sync::Arc::new(kind.open().await);
        let mut chains = Vec::new();
        for g in 0..12 {
            let mut c = TestChain::new(1, 60_000, 600_000);
            c.set_gateway(&format!("gw-{g}"));
            c.set_signer(SigningKey::from_bytes(&[42; 32]), &format!("kid-{g}"));
            c.extend(3);
            chains.push(c);
        }
        let mut keys = mrv_shared::report::KeySet::new();
        for g in 0..12 {
            keys.insert(
                &format!("kid-{g}"),
                SigningKey::from_bytes(&[42; 32]).verifying_key(),
            );
        }
        let t = std::sync::Arc::new(Trust {
            keys,
            devices: upload_support::synthetic_trust(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for c in &chains {
            let (a, t, reports) = (a.clone(), t.clone(), c.reports.clone());
            tasks.spawn(async move {
                let mut indexes = Vec::new();
                for r in &reports {
                    let res = offer(&a, r, &t).await;
                    assert_eq!(res.status, ItemStatus::Accepted, "{res:?}");
                    indexes.push(res.receipt.expect("receipt").log_index);
                }
                indexes
            });
        }
        let mut all: Vec<u64> = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.expect("task"));
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (0..36).collect::<Vec<u64>>(),
            "every entry once, no gaps"
        );
        let cp = Checkpoint::open(&a.checkpoint().await.expect("io"), identity().verifier())
            .expect("ok");
        assert_eq!(cp.size, 36);
        for c in &chains {
            for (i, r) in c.reports.iter().enumerate() {
                let id = format!("{}-{:012}", c.reports_gateway(), i + 1);
                let rc = a.receipt(&id).await.expect("io").expect("known");
                let got = verify_receipt(&rc, Some(r), identity().verifier()).expect("verifies");
                assert_eq!(got, cp);
            }
        }
    }
);

/// The exact ER of each calculation, straight from the JWS payload.
fn payload_er(jws: &[u8]) -> Vec<(String, String)> {
    let parsed = mrv_shared::report::jws::parse_compact(jws).expect("JWS");
    let v: serde_json::Value = serde_json::from_slice(&parsed.payload).expect("JSON");
    v["calculations"]
        .as_array()
        .expect("calculations")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_string(),
                c["er"]["exact"].as_str().expect("exact").to_string(),
            )
        })
        .collect()
}

both!(
    the_ledger_holds_exactly_the_accepted_reports_and_totals_round_down_once,
    |kind| {
        use mrv_receiver::ledger::{LedgerQuery, totals};
        use mrv_shared::methodology::Ratio;
        let mut chain = TestChain::new(2, 60_000, 600_000);
        chain.extend(6);
        let mut other = TestChain::new(1, 60_000, 600_000);
        other.extend(1);
        let t = trust(&chain);
        let a = kind.open().await;
        // Seq 3 before seq 2: rejected (gap), nothing indexed.
        assert_eq!(
            offer(&a, &chain.reports[0], &t).await.status,
            ItemStatus::Accepted
        );
        assert_eq!(
            offer(&a, &chain.reports[2], &t).await.reason.as_deref(),
            Some("seq_gap")
        );
        // An equivocation: flagged, nothing indexed.
        assert_eq!(
            offer(&a, &other.reports[0], &t).await.reason.as_deref(),
            Some("equivocation")
        );
        for r in &chain.reports[1..] {
            assert_eq!(offer(&a, r, &t).await.status, ItemStatus::Accepted);
        }
        // A duplicate adds nothing.
        assert_eq!(
            offer(&a, &chain.reports[3], &t).await.status,
            ItemStatus::Duplicate
        );
        let q = LedgerQuery::new("JCM-TH-0042", None, "2025-11-26", "2025-11-26").expect("query");
        let entries = a.ledger(&q).await.expect("io");
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
        // Each entry is what its report states.
        for (e, r) in entries.iter().zip(&chain.reports) {
            let er: Vec<(String, String)> = e
                .calculations
                .iter()
                .map(|c| (c.id.clone(), c.er.clone()))
                .collect();
            assert_eq!(er, payload_er(r));
            assert_eq!(e.site, "th-solar-01");
            assert_eq!(
                e.calculations[0].completeness.len(),
                e.calculations[0].bindings.len()
            );
            assert!(!e.devices.is_empty());
        }
        // Totals: the exact sum of the payloads' ER, rounded down once.
        let mut sum = Ratio::ZERO;
        for r in &chain.reports {
            for (_, er) in payload_er(r) {
                sum = sum
                    .checked_add(Ratio::parse_exact(&er).expect("exact"))
                    .expect("fits");
            }
        }
        assert_ne!(sum, Ratio::ZERO, "the reports credit something");
        let tot = totals(&q, &entries).expect("totals");
        assert_eq!(tot.reports, 6);
        assert_eq!(tot.amounts.er.exact, sum.to_string());
        assert_eq!(
            tot.amounts.er.decimal,
            sum.to_decimal_floor(6).expect("fits")
        );
        assert_eq!(tot.amounts.er.tonnes, sum.floor());
        assert_eq!(tot.coverage.len(), 1);
        assert_eq!(tot.coverage[0].covered_ms, 6 * 600_000);
        assert_eq!(tot.coverage[0].seqs, (1, 6));
        // Per binding: 2 meters, 10 samples each per report.
        assert_eq!(tot.completeness.len(), 2);
        assert!(
            tot.completeness
                .iter()
                .all(|c| c.received == 60 && c.reports == 6)
        );
        // Other project, other site, other day: nothing.
        for q in [
            LedgerQuery::new("OTHER", None, "2025-11-26", "2025-11-26"),
            LedgerQuery::new("JCM-TH-0042", Some("elsewhere"), "2025-11-26", "2025-11-26"),
            LedgerQuery::new(
                "JCM-TH-0042",
                Some("th-solar-01"),
                "2025-11-27",
                "2025-12-31",
            ),
        ] {
            assert!(a.ledger(&q.expect("query")).await.expect("io").is_empty());
        }
        // Reopened: the same ledger.
        drop(a);
        let b = kind.open().await;
        assert_eq!(b.ledger(&q).await.expect("io"), entries);
    }
);

both!(
    the_ledger_in_pages_is_the_ledger_in_order_and_a_page_after_the_last_is_empty,
    |kind| {
        use mrv_receiver::ledger::{LedgerKey, LedgerQuery};
        let mut one = TestChain::new(1, 60_000, 600_000);
        one.extend(4);
        let mut two = TestChain::new(1, 60_000, 600_000);
        two.set_gateway("gw-two");
        two.set_signer(SigningKey::from_bytes(&[43; 32]), "gw-two-2025");
        two.extend(3);
        let mut t = trust(&one);
        t.keys.insert("gw-two-2025", two.key.verifying_key());
        let a = kind.open().await;
        // Interleaved uploads: the pages still come in (site, gateway, seq) order.
        for i in 0..4 {
            for c in [&one, &two] {
                if let Some(r) = c.reports.get(i) {
                    assert_eq!(offer(&a, r, &t).await.status, ItemStatus::Accepted);
                }
            }
        }
        let q = LedgerQuery::new("JCM-TH-0042", None, "2025-11-26", "2025-11-26").expect("query");
        let whole = a.ledger(&q).await.expect("io");
        assert_eq!(whole.len(), 7);
        for limit in [1, 2, 3, 7, 100] {
            let mut paged = Vec::new();
            let mut after: Option<LedgerKey> = None;
            loop {
                let page = a.ledger_page(&q, after.as_ref(), limit).await.expect("io");
                assert!(page.len() <= limit);
                let Some(last) = page.last() else { break };
                after = Some(LedgerKey::of(last));
                paged.extend(page);
            }
            assert_eq!(paged, whole, "pages of {limit}");
        }
        let keys: Vec<(String, u64)> = whole.iter().map(|e| (e.gateway.clone(), e.seq)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "(site, gateway, seq) order");
        // A query the ledger has nothing for: an empty first page.
        let other = LedgerQuery::new("JCM-TH-0042", Some("elsewhere"), "2025-11-26", "2025-11-26")
            .expect("query");
        assert!(
            a.ledger_page(&other, None, 10)
                .await
                .expect("io")
                .is_empty()
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_database_gets_its_stored_reports_indexed_in_the_ledger_at_connect() {
    use mrv_receiver::ledger::LedgerQuery;
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(3);
    let t = trust(&chain);
    let kind = Kind::postgres().await;
    let a = kind.open().await;
    for r in &chain.reports {
        assert_eq!(offer(&a, r, &t).await.status, ItemStatus::Accepted);
    }
    let q = LedgerQuery::new("JCM-TH-0042", None, "2025-11-26", "2025-11-26").expect("query");
    let before = a.ledger(&q).await.expect("io");
    assert_eq!(before.len(), 3);
    drop(a);
    // Make it a schema 1 database: no ledger tables.
    let Kind::Postgres(url) = &kind else {
        unreachable!("a PostgreSQL kind")
    };
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE ledger_events; DROP TABLE ledger_calculations; DROP TABLE ledger_reports; \
             UPDATE meta SET value = '1' WHERE key = 'schema_version'",
        )
        .await
        .expect("downgrade");
    drop(client);
    let _ = conn.await;
    let b = kind.open().await;
    assert_eq!(b.ledger(&q).await.expect("io"), before);
    // And it is schema 2 now: the chain goes on, indexed.
    let mut more = chain;
    more.extend(1);
    assert_eq!(
        offer(&b, &more.reports[3], &t).await.status,
        ItemStatus::Accepted
    );
    assert_eq!(b.ledger(&q).await.expect("io").len(), 4);
}

// ---- The registry (receiver/src/registry): both stores ----

use mrv_receiver::registry::{Change, RegistryError};
use mrv_shared::report::KeySet;

const P: u64 = 600_000;

fn no_bootstrap() -> Trust {
    Trust {
        keys: KeySet::new(),
        devices: mrv_shared::report::DeviceTrust::Registry(Default::default()),
    }
}

fn enrol_test_gateway(chain: &TestChain) -> Change {
    Change::EnrolGateway {
        gateway: String::from(upload_support::GATEWAY),
        site: String::from("th-solar-01"),
        project: String::from("JCM-TH-0042"),
        key: chain.jwk(),
        valid_from: Some(String::from("2025-11-26T00:00:00Z")),
    }
}

fn import_site() -> Change {
    Change::ImportDevices {
        site: String::from("th-solar-01"),
        registry: upload_support::synthetic_registry(),
    }
}

both!(registry_changes_are_audited_and_survive_reopening, |kind| {
    let chain = TestChain::new(1, 60_000, P);
    let a = kind.open().await;
    let t0 = upload_support::T0;
    let rec = a
        .registry_change(&enrol_test_gateway(&chain), "alice", t0)
        .await
        .expect("io")
        .expect("enrols");
    assert_eq!((rec.seq, rec.actor.as_str()), (1, "alice"));
    let again = a
        .registry_change(&enrol_test_gateway(&chain), "alice", t0 + 1)
        .await
        .expect("io");
    assert!(
        matches!(again, Err(RegistryError::Conflict(_))),
        "{again:?}"
    );
    a.registry_change(&import_site(), "bob", t0 + 2)
        .await
        .expect("io")
        .expect("imports");
    let new_key = SigningKey::from_bytes(&[43; 32]);
    let rec = a
        .registry_change(
            &Change::RotateGatewayKey {
                gateway: String::from(upload_support::GATEWAY),
                key: mrv_shared::report::jwk::Jwk::public("k2", &new_key.verifying_key()),
                at: None,
            },
            "carol",
            t0 + 3,
        )
        .await
        .expect("io")
        .expect("rotates");
    assert_eq!(rec.seq, 3, "a refused change takes no seq");
    let history = a.registry_history(0, 100).await.expect("io");
    assert_eq!(
        history
            .iter()
            .map(|r| (r.seq, r.actor.as_str(), r.time_ms))
            .collect::<Vec<_>>(),
        vec![(1, "alice", t0), (2, "bob", t0 + 2), (3, "carol", t0 + 3)]
    );
    assert_eq!(a.registry_history(2, 100).await.expect("io").len(), 1);
    // "Every record", as the statement pack asks for the whole trail.
    assert_eq!(
        a.registry_history(0, usize::MAX).await.expect("io"),
        history
    );
    let before = a.registry().await.expect("io");
    assert_eq!(before.gateways["gw-test"].keys.len(), 2);
    assert_eq!(before.sites["th-solar-01"].registry.devices.len(), 64);
    drop(a);
    let a = kind.open().await;
    assert_eq!(
        a.registry().await.expect("io"),
        before,
        "the same after reopening"
    );
    assert_eq!(a.registry_history(0, 100).await.expect("io"), history);
});

both!(
    the_registry_admits_reports_by_key_validity_and_refuses_after_revocation,
    |kind| {
        let a = kind.open().await;
        let none = no_bootstrap();
        // Chain A: reports 1-2 by k1, then 3-4 by k2; chain B: the same
        // reports 1-3 all by k1 (deterministic: B's 1-2 are A's 1-2).
        let mut ca = TestChain::new(1, 60_000, P).unstored();
        let mut cb = TestChain::new(1, 60_000, P).unstored();
        ca.extend(2);
        cb.extend(3);
        assert_eq!(ca.reports[..2], cb.reports[..2]);
        let enrol_k1 = enrol_test_gateway(&ca);
        let k2 = SigningKey::from_bytes(&[43; 32]);
        ca.set_signer(k2.clone(), "k2");
        ca.extend(2);
        let status = |r: &ItemResult| (r.status, r.reason.clone());
        let rejected = |reason: &str| (ItemStatus::Rejected, Some(reason.to_string()));
        // Nothing enrolled, no bootstrap keys: an unknown gateway.
        let r = offer(&a, &ca.reports[0], &none).await;
        assert_eq!(status(&r), rejected("unknown_gateway"), "{r:?}");
        // Enrolled, but its site has no devices and there is no fallback.
        a.registry_change(&enrol_k1, "alice", 10)
            .await
            .expect("io")
            .expect("enrols");
        let r = offer(&a, &ca.reports[0], &none).await;
        assert_eq!(status(&r), rejected("device_not_registered"), "{r:?}");
        a.registry_change(&import_site(), "alice", 11)
            .await
            .expect("io")
            .expect("imports");
        assert_eq!(
            offer(&a, &ca.reports[0], &none).await.status,
            ItemStatus::Accepted
        );
        // Rotation at the end of report 2's period.
        let at = mrv_receiver::registry::rfc3339(upload_support::T0 + 2 * P);
        a.registry_change(
            &Change::RotateGatewayKey {
                gateway: String::from(upload_support::GATEWAY),
                key: mrv_shared::report::jwk::Jwk::public("k2", &k2.verifying_key()),
                at: Some(at),
            },
            "alice",
            12,
        )
        .await
        .expect("io")
        .expect("rotates");
        // The old key still signs the backlog before the rotation...
        assert_eq!(
            offer(&a, &ca.reports[1], &none).await.status,
            ItemStatus::Accepted
        );
        // ...but not a period after it.
        let r = offer(&a, &cb.reports[2], &none).await;
        assert_eq!(status(&r), rejected("key_not_valid"), "{r:?}");
        assert_eq!(
            offer(&a, &ca.reports[2], &none).await.status,
            ItemStatus::Accepted
        );
        // Revocation: the last seq accepted before it is recorded, and
        // nothing signed by the key is accepted after it.
        let rec = a
            .registry_change(
                &Change::RevokeGatewayKey {
                    gateway: String::from(upload_support::GATEWAY),
                    kid: String::from("k2"),
                    reason: String::from("stolen"),
                },
                "carol",
                13,
            )
            .await
            .expect("io")
            .expect("revokes");
        assert_eq!(rec.last_seq_accepted, Some(3));
        let r = offer(&a, &ca.reports[3], &none).await;
        assert_eq!(status(&r), rejected("key_revoked"), "{r:?}");
        let st = a.chain_status("gw-test").await.expect("io").expect("known");
        assert_eq!(
            (st.reports, st.head_seq),
            (3, 3),
            "nothing stored after the revocation"
        );
        assert!(a.fetch("gw-test-000000000004").await.expect("io").is_none());
        // A report already accepted is still answered as a duplicate.
        assert_eq!(
            offer(&a, &ca.reports[2], &none).await.status,
            ItemStatus::Duplicate
        );
    }
);

both!(
    an_enrolled_gateway_signs_only_with_its_keys_and_bootstrap_keys_still_work,
    |kind| {
        let a = kind.open().await;
        let mut chain = TestChain::new(1, 60_000, P).unstored();
        chain.extend(2);
        // Bootstrap: the command-line key, the command-line devices.
        let boot = trust(&chain);
        assert_eq!(
            offer(&a, &chain.reports[0], &boot).await.status,
            ItemStatus::Accepted
        );
        // Once the gateway is enrolled with another key, the bootstrap key
        // no longer signs for it.
        let other = SigningKey::from_bytes(&[44; 32]);
        a.registry_change(
            &Change::EnrolGateway {
                gateway: String::from(upload_support::GATEWAY),
                site: String::from("th-solar-01"),
                project: String::from("JCM-TH-0042"),
                key: mrv_shared::report::jwk::Jwk::public("other", &other.verifying_key()),
                valid_from: None,
            },
            "alice",
            5,
        )
        .await
        .expect("io")
        .expect("enrols");
        let r = offer(&a, &chain.reports[1], &boot).await;
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (ItemStatus::Rejected, Some("unknown_kid")),
            "{r:?}"
        );
        // A device key revocation at a site refuses reports listing it.
        let mut c2 = TestChain::new(1, 60_000, P).unstored();
        c2.set_gateway("gw-two");
        c2.set_signer(SigningKey::from_bytes(&[45; 32]), "kid-two");
        c2.extend(2);
        a.registry_change(
            &Change::EnrolGateway {
                gateway: String::from("gw-two"),
                site: String::from("th-solar-01"),
                project: String::from("JCM-TH-0042"),
                key: c2.jwk(),
                valid_from: None,
            },
            "alice",
            6,
        )
        .await
        .expect("io")
        .expect("enrols");
        a.registry_change(&import_site(), "alice", 7)
            .await
            .expect("io")
            .expect("imports");
        let none = no_bootstrap();
        assert_eq!(
            offer(&a, &c2.reports[0], &none).await.status,
            ItemStatus::Accepted
        );
        let x = upload_support::synthetic_registry().devices[0].keys[0]
            .jwk
            .x
            .clone();
        a.registry_change(
            &Change::RevokeDeviceKey {
                site: String::from("th-solar-01"),
                device: String::from("pv-0000"),
                x,
                reason: String::from("meter tampered"),
            },
            "bob",
            8,
        )
        .await
        .expect("io")
        .expect("revokes");
        let r = offer(&a, &c2.reports[1], &none).await;
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (ItemStatus::Rejected, Some("device_key_revoked")),
            "{r:?}"
        );
        // A different site or project than enrolled is refused.
        let mut c3 = TestChain::new(1, 60_000, P).unstored();
        c3.set_gateway("gw-three");
        c3.set_signer(SigningKey::from_bytes(&[46; 32]), "kid-three");
        c3.extend(1);
        a.registry_change(
            &Change::EnrolGateway {
                gateway: String::from("gw-three"),
                site: String::from("elsewhere"),
                project: String::from("JCM-TH-0042"),
                key: c3.jwk(),
                valid_from: None,
            },
            "alice",
            9,
        )
        .await
        .expect("io")
        .expect("enrols");
        let r = offer(&a, &c3.reports[0], &none).await;
        assert_eq!(r.reason.as_deref(), Some("site_mismatch"), "{r:?}");
    }
);
