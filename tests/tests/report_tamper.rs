//! A corpus of altered, forged, reordered, dropped and replayed reports is
//! rejected by the auditor's `verify` with the right reason.

mod report_support;

use ed25519_dalek::SigningKey;
use mrv_gateway::cli::verify::verify_files;
use mrv_gateway::keys::load_signing_key;
use mrv_shared::report::verify::{Chain, verify_report};
use report_support::*;
use serde_json::Value;
use std::path::PathBuf;

struct Corpus {
    site: TestSite,
    reports: Vec<Vec<u8>>,
    key: SigningKey,
    kid: String,
}

fn corpus() -> Corpus {
    let site = TestSite::new();
    for n in 0..3 {
        site.receive_period(n);
    }
    site.close_through(2);
    let reports = site
        .report_files()
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let (kid, key) = load_signing_key(&site.dir.path().join("keys/gw-th-01.key")).expect("key");
    Corpus {
        site,
        reports,
        key,
        kid,
    }
}

/// Verifies one report on its own; the reason label, or "ok".
fn reason(c: &Corpus, bytes: &[u8]) -> String {
    match verify_report(bytes, &keys(&c.site)) {
        Ok(_) => String::from("ok"),
        Err(e) => e.label().to_string(),
    }
}

fn edit(c: &Corpus, i: usize, f: impl FnOnce(&mut Value)) -> Value {
    let mut p = payload(&c.reports[i]);
    f(&mut p);
    p
}

#[test]
fn the_untouched_reports_verify() {
    let c = corpus();
    for r in &c.reports {
        assert_eq!(reason(&c, r), "ok");
    }
}

#[test]
fn altered_content_without_the_gateway_key_breaks_the_signature() {
    let c = corpus();
    let p = edit(&c, 1, |p| {
        p["calculation"]["er_rounded_down"] = Value::from(1000)
    });
    assert_eq!(
        reason(&c, &swap_payload(&c.reports[1], &p)),
        "bad_signature"
    );
    // A forger's key under the gateway's kid.
    let forger = SigningKey::from_bytes(&[42u8; 32]);
    assert_eq!(reason(&c, &resign(&p, &c.kid, &forger)), "bad_signature");
    // A key nobody trusts.
    assert_eq!(
        reason(&c, &resign(&p, "someone-else", &forger)),
        "unknown_kid"
    );
    // Truncated, or not a JWS at all.
    assert_eq!(reason(&c, &c.reports[1][..100]), "malformed");
    assert_eq!(reason(&c, b"{\"not\":\"a jws\"}"), "malformed");
}

#[test]
fn an_unsupported_algorithm_is_refused() {
    let c = corpus();
    let text = std::str::from_utf8(&c.reports[0]).expect("ascii");
    let rest = text.split_once('.').expect("dot").1;
    let header = mrv_shared::report::jwk::b64(br#"{"alg":"HS256","kid":"gw-th-01"}"#);
    assert_eq!(
        reason(&c, format!("{header}.{rest}").as_bytes()),
        "unsupported_alg"
    );
}

/// An insider holding the gateway key still cannot change readings,
/// aggregates or ER without the verifier noticing.
#[test]
fn content_altered_and_re_signed_with_the_gateway_key_is_caught_by_recomputation() {
    let c = corpus();
    let cases: Vec<(&str, Value)> = vec![
        (
            "merkle_mismatch",
            edit(&c, 1, |p| {
                p["readings"]["frames"][0]["samples"][3][2] = Value::from(999_999)
            }),
        ),
        (
            "reading_count_mismatch",
            edit(&c, 1, |p| p["readings"]["count"] = Value::from(121)),
        ),
        (
            "aggregate_mismatch",
            edit(&c, 1, |p| p["series"][0]["max"] = Value::from(1)),
        ),
        (
            "calculation_mismatch",
            edit(&c, 1, |p| {
                p["calculation"]["er"]["exact"] = Value::from("1000")
            }),
        ),
        (
            "calculation_mismatch",
            edit(&c, 1, |p| {
                p["calculation"]["parameters"]["ef"]["value"] = Value::from("0.9")
            }),
        ),
        (
            "frame_order",
            edit(&c, 1, |p| {
                let frames = p["readings"]["frames"].as_array_mut().expect("frames");
                frames.swap(0, 1);
            }),
        ),
        (
            "late_flag_mismatch",
            edit(&c, 1, |p| {
                p["readings"]["frames"][0]["late"] = Value::from(true)
            }),
        ),
    ];
    for (want, p) in cases {
        assert_eq!(reason(&c, &resign(&p, &c.kid, &c.key)), want);
    }
    // Change a reading and fix the Merkle root and aggregates: the device
    // signature over the frame still gives it away.
    let mut p = edit(&c, 1, |p| {
        p["readings"]["frames"][0]["samples"][3][3] = Value::from(4)
    });
    let frames: Vec<mrv_shared::report::model::FrameRecord> =
        serde_json::from_value(p["readings"]["frames"].clone()).expect("frames");
    let (_, root) = mrv_shared::report::model::readings_root(&frames);
    p["readings"]["merkle_root"] = Value::from(mrv_shared::report::hex(&root));
    assert_eq!(
        reason(&c, &resign(&p, &c.kid, &c.key)),
        "device_signature_invalid"
    );
}

fn write_all(c: &Corpus, name: &str, reports: &[Vec<u8>]) -> Vec<PathBuf> {
    let dir = c.site.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = dir.join(format!("{i:03}.jws"));
            std::fs::write(&p, r).expect("write");
            p
        })
        .collect()
}

fn labels(c: &Corpus, files: &[PathBuf]) -> Vec<String> {
    verify_files(files, &keys(&c.site), false, None)
        .into_iter()
        .map(|v| v.problem.map_or_else(|| String::from("ok"), |p| p.0))
        .collect()
}

#[test]
fn dropped_replayed_and_reordered_reports_break_the_chain() {
    let c = corpus();
    let r = &c.reports;
    // Dropped: 1, 3.
    let files = write_all(&c, "dropped", &[r[0].clone(), r[2].clone()]);
    assert_eq!(labels(&c, &files), ["ok", "seq_gap"]);
    // Replayed: 1, 2, 2, 3.
    let files = write_all(
        &c,
        "replayed",
        &[r[0].clone(), r[1].clone(), r[1].clone(), r[2].clone()],
    );
    assert_eq!(labels(&c, &files), ["ok", "ok", "replay", "ok"]);
    // Files in any order are put in seq order by the auditor...
    let files = write_all(&c, "shuffled", &[r[2].clone(), r[0].clone(), r[1].clone()]);
    assert_eq!(labels(&c, &files), ["ok", "ok", "ok"]);
    // ...but a receiver checking in arrival order sees the gap.
    let keys = keys(&c.site);
    let v: Vec<_> = r
        .iter()
        .map(|b| verify_report(b, &keys).expect("valid"))
        .collect();
    let mut chain = Chain::new(false);
    chain.push(&v[0]).expect("first");
    assert_eq!(chain.push(&v[2]).map_err(|e| e.label()), Err("seq_gap"));
    chain.push(&v[1]).expect("second");
    assert_eq!(chain.push(&v[1]).map_err(|e| e.label()), Err("replay"));
    // A chain that does not start at seq 1 is refused unless allowed.
    let files = write_all(&c, "slice", &[r[1].clone(), r[2].clone()]);
    assert_eq!(labels(&c, &files), ["seq_gap", "seq_gap"]);
    let ok = verify_files(&files, &keys, true, None);
    assert!(ok.iter().all(|v| v.problem.is_none()));
}

#[test]
fn re_signed_reports_that_rewrite_history_break_the_chain() {
    let c = corpus();
    let r = &c.reports;
    // Report 2 re-signed with a different prev_hash.
    let p = edit(&c, 1, |p| {
        p["header"]["prev_hash"] = Value::from("ab".repeat(32))
    });
    let files = write_all(
        &c,
        "prev",
        &[r[0].clone(), resign(&p, &c.kid, &c.key), r[2].clone()],
    );
    assert_eq!(labels(&c, &files), ["ok", "prev_hash_mismatch", "seq_gap"]);
    // Report 3 renumbered as 2 (reordered history): its prev_hash is that of 2.
    let p = edit(&c, 2, |p| p["header"]["seq"] = Value::from(2));
    let files = write_all(
        &c,
        "renumbered",
        &[r[0].clone(), resign(&p, &c.kid, &c.key)],
    );
    assert_eq!(labels(&c, &files), ["ok", "prev_hash_mismatch"]);
    // A shifted period.
    let p = edit(&c, 1, |p| {
        let s = p["header"]["period"]["start_ms"].as_u64().expect("u64");
        p["header"]["period"]["start_ms"] = Value::from(s - 1);
    });
    let files = write_all(&c, "period", &[r[0].clone(), resign(&p, &c.kid, &c.key)]);
    assert_eq!(labels(&c, &files), ["ok", "period_discontinuity"]);
    // A counter baseline that does not match the previous report.
    let p = edit(&c, 1, |p| {
        p["series"][0]["counter"]["baseline"]["value"] = Value::from(0)
    });
    let again = resign(&p, &c.kid, &c.key);
    // (Also changes the recomputed aggregate; the per-report check runs first.)
    let files = write_all(&c, "baseline", &[r[0].clone(), again]);
    let l = labels(&c, &files);
    assert_eq!(l[0], "ok");
    assert!(
        l[1] == "baseline_mismatch" || l[1] == "aggregate_mismatch",
        "{l:?}"
    );
}

#[test]
fn the_fully_specified_ed25519_algorithm_name_is_accepted_on_input() {
    use ed25519_dalek::Signer;
    let c = corpus();
    let text = std::str::from_utf8(&c.reports[0]).expect("ascii");
    let payload = text.split('.').nth(1).expect("payload");
    let header = mrv_shared::report::jwk::b64(
        format!(r#"{{"alg":"Ed25519","kid":"{}"}}"#, c.kid).as_bytes(),
    );
    let input = format!("{header}.{payload}");
    let sig = c.key.sign(input.as_bytes());
    let jws = format!("{input}.{}", mrv_shared::report::jwk::b64(&sig.to_bytes()));
    assert_eq!(reason(&c, jws.as_bytes()), "ok");
}

#[test]
fn a_device_key_other_than_the_trusted_one_is_refused_when_device_keys_are_given() {
    let c = corpus();
    let mut trusted = keys(&c.site);
    // The auditor holds the device registry's keys: the right one passes...
    trusted.insert(
        "pv-0000",
        mrv_gateway::report::synthetic::device_key("pv-0000").verifying_key(),
    );
    assert!(verify_report(&c.reports[0], &trusted).is_ok());
    // ...a different registered key for the same device does not.
    trusted.insert(
        "pv-0001",
        SigningKey::from_bytes(&[5u8; 32]).verifying_key(),
    );
    assert_eq!(
        verify_report(&c.reports[0], &trusted).map_err(|e| e.label()),
        Err("device_key_mismatch")
    );
}
