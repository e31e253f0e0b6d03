//! The reference receiver judges uploads: tampered, reordered, replayed and
//! equivocating reports get the right answer and reason; good ones are
//! stored verbatim and served back. Real HTTP on 127.0.0.1.

mod upload_support;

use mrv_receiver::archive::Archive;

use ed25519_dalek::SigningKey;
use std::io::Write;
use upload_support::{TestChain, init, start_receiver};

const TOKEN: &str = "t0ken";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn put(&self, id: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let r = self
            .http
            .put(format!("{}/v1/reports/{id}", self.base))
            .bearer_auth(TOKEN)
            .body(body.to_vec())
            .send()
            .await
            .expect("answer");
        let code = r.status().as_u16();
        (code, r.json().await.expect("JSON body"))
    }

    async fn batch(&self, reports: &[&[u8]]) -> (u16, serde_json::Value) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&reports.join(&b'\n')).expect("gzip");
        let r = self
            .http
            .post(format!("{}/v1/reports", self.base))
            .bearer_auth(TOKEN)
            .header("content-encoding", "gzip")
            .body(gz.finish().expect("gzip"))
            .send()
            .await
            .expect("answer");
        let code = r.status().as_u16();
        (code, r.json().await.expect("JSON body"))
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("answer");
        (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
    }
}

fn id(seq: u64) -> String {
    format!("gw-test-{seq:012}")
}

/// Flips one character in the middle of the JWS payload.
fn tamper(jws: &[u8]) -> Vec<u8> {
    let mut t = jws.to_vec();
    let first_dot = t.iter().position(|&b| b == b'.').expect("compact JWS");
    let i = first_dot + (t.len() - first_dot) / 3;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    t
}

/// Flips one character of the JWS signature.
fn tamper_signature(jws: &[u8]) -> Vec<u8> {
    let mut t = jws.to_vec();
    let i = t.len() - 10;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_judged_with_the_right_reason() {
    init();
    let mut a = TestChain::new(2, 60_000, 600_000);
    a.extend(4);
    // Same key, different readings: a second history of the same gateway.
    let mut b = TestChain::new(3, 60_000, 600_000);
    b.extend(2);
    // Same ids, a key the receiver does not know.
    let mut stranger = TestChain::new(2, 60_000, 600_000);
    stranger.set_signer(SigningKey::from_bytes(&[9u8; 32]), "stranger-key");
    stranger.extend(1);

    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(dir.path(), a.keys(), Some(TOKEN), None, None).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", rx.addr()),
    };

    // No token.
    let r = c
        .http
        .put(format!("{}/v1/reports/{}", c.base, id(1)))
        .body(a.reports[0].clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 401);

    // Reordered: seq 2 before seq 1.
    let (code, v) = c.put(&id(2), &a.reports[1]).await;
    assert_eq!((code, v["reason"].as_str()), (409, Some("seq_gap")), "{v}");

    // Tampered payload.
    let (code, v) = c.put(&id(1), &tamper(&a.reports[0])).await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["reason"], "bad_signature");

    // Unknown signer.
    let (code, v) = c.put(&id(1), &stranger.reports[0]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (422, Some("unknown_kid")),
        "{v}"
    );

    // Not a JWS at all.
    let (code, v) = c.put(&id(1), b"hello").await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (400, Some("malformed")),
        "{v}"
    );

    // The right one, under the wrong id.
    let (code, v) = c.put(&id(7), &a.reports[0]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (400, Some("id_mismatch")),
        "{v}"
    );
    // It was stored all the same (under its own id); the proper PUT is a duplicate.
    let (code, v) = c.put(&id(1), &a.reports[0]).await;
    assert_eq!(
        (code, v["status"].as_str()),
        (200, Some("duplicate")),
        "{v}"
    );

    // Seq 2 from another history: its prev_hash is not seq 1's hash.
    let (code, v) = c.put(&id(2), &b.reports[1]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (409, Some("prev_hash_mismatch")),
        "{v}"
    );

    let (code, v) = c.put(&id(2), &a.reports[1]).await;
    assert_eq!((code, v["status"].as_str()), (201, Some("accepted")), "{v}");

    // Replayed: the same bytes again change nothing.
    let (code, v) = c.put(&id(1), &a.reports[0]).await;
    assert_eq!(
        (code, v["status"].as_str()),
        (200, Some("duplicate")),
        "{v}"
    );

    // The gateway's key signing for another gateway.
    let mut impostor = TestChain::new(2, 60_000, 600_000);
    impostor.set_gateway("gw-other");
    impostor.extend(1);
    let (code, v) = c.put("gw-other-000000000001", &impostor.reports[0]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (422, Some("kid_gateway_mismatch")),
        "{v}"
    );

    // Equivocation: a different report signed for seq 1.
    let (code, v) = c.put(&id(1), &b.reports[0]).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (409, Some("equivocation")),
        "{v}"
    );

    // Batch: 3 then a tampered 4: 3 stored, 4 refused.
    let t4 = tamper_signature(&a.reports[3]);
    let (code, v) = c.batch(&[&a.reports[1], &a.reports[2], &t4]).await;
    assert_eq!(code, 200, "{v}");
    let res = v["results"].as_array().expect("results");
    let got: Vec<_> = res
        .iter()
        .map(|r| (r["seq"].as_u64(), r["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(2), "duplicate"),
            (Some(3), "accepted"),
            (Some(4), "rejected")
        ]
    );
    assert_eq!(res[2]["reason"], "bad_signature");

    // What the receiver now says and serves.
    let (code, body) = c.get("/v1/gateways/gw-test/chain").await;
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(st["head_seq"], 3);
    assert_eq!(st["reports"], 3);
    let eq = st["equivocations"].as_array().expect("flags");
    assert_eq!(eq.len(), 1);
    assert_eq!(eq[0]["seq"], 1);
    let (code, body) = c.get(&format!("/v1/reports/{}", id(3))).await;
    assert_eq!((code, body.as_slice()), (200, a.reports[2].as_slice()));
    let (code, body) = c.get("/v1/gateways/gw-test/reports?after=1&limit=5").await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let seqs: Vec<_> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![Some(2), Some(3)]);
    let (code, _) = c.get(&format!("/v1/reports/{}", id(4))).await;
    assert_eq!(code, 404);
    rx.stop().await.expect("stops");

    // Flags and evidence are durable; a restarted receiver knows the chain.
    let flags = std::fs::read_to_string(dir.path().join("flags.jsonl")).expect("flags file");
    assert_eq!(flags.lines().count(), 1);
    let evidence = std::fs::read_dir(dir.path().join("gateways/gw-test/evidence"))
        .expect("evidence dir")
        .count();
    assert_eq!(evidence, 1);
    let rx = start_receiver(dir.path(), a.keys(), Some(TOKEN), None, None).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", rx.addr()),
    };
    let (code, v) = c.put(&id(4), &a.reports[3]).await;
    assert_eq!((code, v["status"].as_str()), (201, Some("accepted")), "{v}");
    let st = rx
        .handle
        .archive()
        .chain_status("gw-test")
        .await
        .expect("io")
        .expect("known");
    assert_eq!((st.head_seq, st.equivocations.len()), (4, 1));
    rx.stop().await.expect("stops");
}
