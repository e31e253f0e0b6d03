//! Two stateless receivers on one PostgreSQL database, raced: for each of
//! 1,000 gateways, two conflicting first reports (same gateway, key and
//! seq, different readings) are uploaded at the same moment, one to each
//! receiver. Exactly one is accepted each time; the other is answered
//! `409 equivocation`, flagged, its bytes kept as evidence; the log holds
//! exactly the accepted ones. (`RACE_ROUNDS=n` changes the count.)

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use ed25519_dalek::SigningKey;
use mrv_receiver::archive::{Archive, LogIdentity};
use mrv_receiver::throwaway_postgres::fresh_database;
use mrv_receiver::{ReceiverConfig, Store};
use mrv_shared::report::KeySet;
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::receipt::{Receipt, verify_receipt};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use upload_support::{TestChain, init};

fn identity() -> LogIdentity {
    LogIdentity::new("mrv.race/log", SigningKey::from_bytes(&[11; 32])).expect("identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_pairs_raced_to_two_receivers_are_accepted_exactly_once() {
    init();
    let rounds: usize = std::env::var("RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let key = SigningKey::from_bytes(&[42; 32]);
    let mut keys = KeySet::new();
    let mut pairs = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let kid = format!("kid-r{i}");
        keys.insert(&kid, key.verifying_key());
        let mut a = TestChain::new(1, 300_000, 600_000).unstored();
        let mut b = TestChain::new(2, 300_000, 600_000).unstored();
        for c in [&mut a, &mut b] {
            c.set_gateway(&format!("gw-r{i}"));
            c.set_signer(key.clone(), &kid);
            c.extend(1);
        }
        pairs.push((a.reports[0].clone(), b.reports[0].clone()));
    }
    let url = fresh_database("race").await;
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut cfg = ReceiverConfig::files(
            "/nonexistent",
            keys.clone(),
            upload_support::synthetic_trust(),
        );
        cfg.store = Store::Postgres {
            url: url.clone(),
            pool: 8,
        };
        cfg.log = Some(identity());
        receivers.push(mrv_receiver::start(listener, cfg).await.expect("starts"));
    }
    let bases: Arc<Vec<String>> = Arc::new(
        receivers
            .iter()
            .map(|r| format!("http://{}", r.addr()))
            .collect(),
    );
    let http = reqwest::Client::new();
    let put = |base: String, id: String, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let r = http
                .put(format!("{base}/v1/reports/{id}"))
                .body(body)
                .send()
                .await
                .expect("answer");
            let code = r.status().as_u16();
            let v: serde_json::Value = r.json().await.expect("JSON");
            (code, v)
        }
    };
    let pairs = Arc::new(pairs);
    let mut winners: Vec<Option<Vec<u8>>> = vec![None; rounds];
    let mut losers: Vec<Option<Vec<u8>>> = vec![None; rounds];
    // Four rounds in flight at a time; within a round the two uploads race.
    for chunk in (0..rounds).collect::<Vec<_>>().chunks(4) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (a, b) = pairs[i].clone();
            let id = format!("gw-r{i}-000000000001");
            // Alternate which report goes to which receiver.
            let (to0, to1) = if i % 2 == 0 { (a, b) } else { (b, a) };
            let f0 = put(bases[0].clone(), id.clone(), to0.clone());
            let f1 = put(bases[1].clone(), id, to1.clone());
            set.spawn(async move {
                let (r0, r1) = tokio::join!(f0, f1);
                (i, [(r0, to0), (r1, to1)])
            });
        }
        while let Some(done) = set.join_next().await {
            let (i, answers) = done.expect("round");
            let accepted: Vec<_> = answers.iter().filter(|((c, _), _)| *c == 201).collect();
            let refused: Vec<_> = answers.iter().filter(|((c, _), _)| *c == 409).collect();
            assert_eq!(
                (accepted.len(), refused.len()),
                (1, 1),
                "round {i}: exactly one accepted, one refused: {answers:?}"
            );
            let ((_, ok), won) = accepted[0];
            let ((_, no), lost) = refused[0];
            assert_eq!(no["reason"], "equivocation", "round {i}: {no}");
            let receipt: Receipt =
                serde_json::from_value(ok["receipt"].clone()).expect("a receipt");
            verify_receipt(&receipt, Some(won), identity().verifier()).expect("receipt verifies");
            winners[i] = Some(won.clone());
            losers[i] = Some(lost.clone());
        }
    }
    // The database agrees: one report per gateway, one flag each, with the
    // loser's bytes as evidence, and exactly the winners in the log.
    let archive = receivers[0].handle.archive();
    let flags = archive.flags().await.expect("io");
    assert_eq!(flags.len(), rounds);
    for i in 0..rounds {
        let gw = format!("gw-r{i}");
        let st = archive.chain_status(&gw).await.expect("io").expect("known");
        assert_eq!(
            (st.reports, st.head_seq, st.equivocations.len()),
            (1, 1, 1),
            "{gw}"
        );
        let won = winners[i].as_ref().expect("winner");
        let lost = losers[i].as_ref().expect("loser");
        let f = &st.equivocations[0];
        assert_eq!(f.stored_hash, mrv_shared::report::hex(&Sha256::digest(won)));
        assert_eq!(
            f.offered_hash,
            mrv_shared::report::hex(&Sha256::digest(lost))
        );
        assert_eq!(
            archive
                .evidence(&f.offered_hash)
                .await
                .expect("io")
                .as_deref(),
            Some(lost.as_slice())
        );
        assert_eq!(
            archive
                .fetch(&format!("{gw}-000000000001"))
                .await
                .expect("io")
                .as_deref(),
            Some(won.as_slice())
        );
    }
    let cp = Checkpoint::open(
        &archive.checkpoint().await.expect("io"),
        identity().verifier(),
    )
    .expect("signed");
    assert_eq!(
        cp.size, rounds as u64,
        "the log holds exactly the accepted reports"
    );
    for r in receivers {
        r.stop().await.expect("stops");
    }
}
