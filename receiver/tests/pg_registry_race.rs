//! A registry change racing uploads, on PostgreSQL with two receivers: for
//! each of 40 gateways (`REGISTRY_RACE_ROUNDS=n`), its chain is uploaded
//! to both receivers at once, report after report, while its key is
//! revoked through the admin API of one of them at a moment inside the
//! chain. The revocation's audit record states the gateway's last seq
//! accepted before it (`last_seq_accepted`, read under the registry row
//! lock every acceptance share-locks). Checked each round:
//!
//! - every report up to that seq was accepted (or answered duplicate) by
//!   a receiver, and the chain holds exactly those: no report signed by
//!   the key was accepted once the revocation committed;
//! - every report after it was refused `key_revoked` by both receivers, and
//!   so is every upload started after the revocation answered;
//! - nothing half-stored: the log and the ledger hold exactly the accepted
//!   reports; the refusals are counted in both receivers' metrics.

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use ed25519_dalek::SigningKey;
use mrv_receiver::archive::{Archive, LogIdentity};
use mrv_receiver::routes::AdminTokens;
use mrv_receiver::throwaway_postgres::fresh_database;
use mrv_receiver::{ReceiverConfig, Store};
use mrv_shared::report::KeySet;
use mrv_shared::tlog::checkpoint::Checkpoint;
use std::sync::Arc;
use std::time::Duration;
use upload_support::{TestChain, init};

const ADMIN: &str = "admin-token-0123456789";
const CHAIN: usize = 10;

fn identity() -> LogIdentity {
    LogIdentity::new("mrv.registry-race/log", SigningKey::from_bytes(&[12; 32])).expect("identity")
}

/// One upload's answer: status code and reason.
type Answer = (u16, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_racing_uploads_on_two_receivers_splits_the_chain_cleanly() {
    init();
    let rounds: usize = std::env::var("REGISTRY_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let url = fresh_database("registry_race").await;
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        // Registry only: no command-line keys or devices.
        let mut cfg = ReceiverConfig::files(
            "/nonexistent",
            KeySet::new(),
            mrv_shared::report::DeviceTrust::Registry(Default::default()),
        );
        cfg.store = Store::Postgres {
            url: url.clone(),
            pool: 8,
        };
        cfg.log = Some(identity());
        cfg.admins = AdminTokens::single("ops", ADMIN);
        receivers.push(mrv_receiver::start(listener, cfg).await.expect("starts"));
    }
    let bases: Arc<Vec<String>> = Arc::new(
        receivers
            .iter()
            .map(|r| format!("http://{}", r.addr()))
            .collect(),
    );
    let http = reqwest::Client::new();
    let h = http.clone();
    let change = move |base: String, body: serde_json::Value| {
        let http = h.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/registry/changes"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status().as_u16(), 201, "registry change {body}");
            r.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    change(
        bases[0].clone(),
        serde_json::json!({"action": "import_devices", "site": "th-solar-01",
                           "registry": upload_support::synthetic_registry()}),
    )
    .await;
    let mut chains = Vec::new();
    for i in 0..rounds {
        let mut c = TestChain::new(1, 60_000, 600_000).unstored();
        c.set_gateway(&format!("gw-rr{i}"));
        c.set_signer(SigningKey::from_bytes(&[50; 32]), &format!("kid-rr{i}"));
        c.extend(CHAIN + 1);
        change(
            bases[i % 2].clone(),
            serde_json::json!({"action": "enrol_gateway", "gateway": c.reports_gateway(),
                               "site": "th-solar-01", "project": "JCM-TH-0042", "key": c.jwk()}),
        )
        .await;
        chains.push(c.reports.clone());
    }
    let h = http.clone();
    let put = move |base: String, id: String, body: Vec<u8>| {
        let http = h.clone();
        async move {
            let r = http
                .put(format!("{base}/v1/reports/{id}"))
                .body(body)
                .send()
                .await
                .expect("answer");
            let code = r.status().as_u16();
            let v: serde_json::Value = r.json().await.expect("JSON");
            (code, v["reason"].as_str().map(str::to_string))
        }
    };
    let mut total_accepted = 0u64;
    for chunk in (0..rounds).collect::<Vec<_>>().chunks(4) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let reports = chains[i].clone();
            let bases = bases.clone();
            let gw = format!("gw-rr{i}");
            let put = put.clone();
            let change = change.clone();
            set.spawn(async move {
                let revoked = Arc::new(tokio::sync::OnceCell::<()>::new());
                let uploads = {
                    let (reports, bases, gw, revoked) =
                        (reports.clone(), bases.clone(), gw.clone(), revoked.clone());
                    let put = put.clone();
                    async move {
                        // (seq, started after the revocation answered, answers)
                        let mut log: Vec<(usize, bool, [Answer; 2])> = Vec::new();
                        for (n, r) in reports.iter().take(CHAIN).enumerate() {
                            let seq = n + 1;
                            let id = format!("{gw}-{seq:012}");
                            let after = revoked.initialized();
                            let (a, b) = tokio::join!(
                                put(bases[0].clone(), id.clone(), r.clone()),
                                put(bases[1].clone(), id, r.clone())
                            );
                            let stop = a.0 >= 400 && b.0 >= 400;
                            log.push((seq, after, [a, b]));
                            if stop {
                                break;
                            }
                        }
                        log
                    }
                };
                let revocation = async {
                    // Somewhere inside the chain (each upload takes some ms).
                    tokio::time::sleep(Duration::from_millis((i as u64 * 7 % 10) * 6)).await;
                    let rec = change(
                        bases[(i + 1) % 2].clone(),
                        serde_json::json!({"action": "revoke_gateway_key", "gateway": gw,
                                           "kid": format!("kid-rr{i}"), "reason": "race test"}),
                    )
                    .await;
                    revoked.set(()).expect("once");
                    rec["last_seq_accepted"]
                        .as_u64()
                        .expect("last seq recorded")
                };
                let (log, last) = tokio::join!(uploads, revocation);
                // After the revocation answered, the next report is refused by both.
                let next = last as usize + 1;
                let id = format!("{gw}-{next:012}");
                let after = [
                    put(bases[0].clone(), id.clone(), reports[next - 1].clone()).await,
                    put(bases[1].clone(), id, reports[next - 1].clone()).await,
                ];
                (i, gw, last, log, after)
            });
        }
        while let Some(done) = set.join_next().await {
            let (i, gw, last, log, after) = done.expect("round");
            let revoked = (422, Some(String::from("key_revoked")));
            for (seq, started_after, answers) in &log {
                let stored = answers.iter().any(|(c, _)| *c == 201 || *c == 200);
                if *seq as u64 <= last {
                    assert!(
                        stored,
                        "round {i}: seq {seq} <= last accepted {last}: {answers:?}"
                    );
                    assert!(
                        !started_after,
                        "round {i}: seq {seq} accepted although started after the revocation"
                    );
                    assert!(
                        answers.iter().filter(|(c, _)| *c == 201).count() == 1,
                        "round {i}: seq {seq} accepted exactly once: {answers:?}"
                    );
                } else {
                    assert_eq!(
                        answers,
                        &[revoked.clone(), revoked.clone()],
                        "round {i}: seq {seq} > last accepted {last}"
                    );
                }
            }
            assert_eq!(
                after,
                [revoked.clone(), revoked.clone()],
                "round {i}: after the revocation"
            );
            let archive = receivers[0].handle.archive();
            let st = archive.chain_status(&gw).await.expect("io");
            let head = st.as_ref().map_or(0, |s| s.head_seq);
            assert_eq!(
                head, last,
                "round {i}: the chain ends where the revocation says"
            );
            assert_eq!(st.map_or(0, |s| s.reports), last, "round {i}");
            assert!(
                archive
                    .fetch(&format!("{gw}-{:012}", last + 1))
                    .await
                    .expect("io")
                    .is_none()
            );
            total_accepted += last;
        }
    }
    let archive = receivers[0].handle.archive();
    let cp = Checkpoint::open(
        &archive.checkpoint().await.expect("io"),
        identity().verifier(),
    )
    .expect("signed");
    assert_eq!(
        cp.size, total_accepted,
        "the log holds exactly the accepted reports"
    );
    let q = mrv_receiver::ledger::LedgerQuery::new("JCM-TH-0042", None, "2025-01-01", "2027-12-31")
        .expect("query");
    assert_eq!(
        archive.ledger(&q).await.expect("io").len() as u64,
        total_accepted,
        "the ledger holds exactly the accepted reports"
    );
    let refused: u64 = receivers
        .iter()
        .map(|r| r.handle.stats().rejected_for("key_revoked"))
        .sum();
    assert!(
        refused >= 2 * rounds as u64,
        "every refusal counted: {refused}"
    );
    let mid_chain = archive
        .registry_history(0, 10_000)
        .await
        .expect("io")
        .iter()
        .filter(|r| {
            r.last_seq_accepted
                .is_some_and(|l| l > 0 && l < CHAIN as u64)
        })
        .count();
    eprintln!(
        "{rounds} rounds, {total_accepted} reports accepted, {mid_chain} revocations landed mid-chain, {refused} refusals"
    );
    assert!(
        mid_chain * 2 >= rounds,
        "most revocations raced the uploads: {mid_chain} of {rounds}"
    );
    for r in receivers {
        r.stop().await.expect("stops");
    }
}
