//! `docs/openapi.yaml` against the real receiver: every documented
//! operation is a real route, every route is documented, and the status
//! codes the upload operations really return are documented for them.

mod upload_support;

use std::collections::BTreeSet;
use upload_support::{TestChain, init, start_receiver};

/// `(METHOD, path)` and documented status codes of each operation, read
/// from the `paths:` block (two-space indented paths, four-space methods,
/// eight-space response codes).
fn documented() -> Vec<(String, String, BTreeSet<u16>)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .expect("docs/openapi.yaml");
    assert!(text.starts_with("openapi: 3."), "an OpenAPI 3 document");
    let mut out: Vec<(String, String, BTreeSet<u16>)> = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ")
            && !m.starts_with(' ')
            && let Some(m) = m.strip_suffix(':')
            && ["get", "put", "post", "delete", "patch"].contains(&m)
        {
            out.push((m.to_ascii_uppercase(), path.clone(), BTreeSet::new()));
        } else if let Some(code) = line.strip_prefix("        \"")
            && let Some(code) = code.strip_suffix("\":")
            && let Ok(code) = code.parse::<u16>()
        {
            out.last_mut()
                .expect("a code under an operation")
                .2
                .insert(code);
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_operation_exists() {
    let doc: BTreeSet<(String, String)> =
        documented().into_iter().map(|(m, p, _)| (m, p)).collect();
    let real: BTreeSet<(String, String)> = mrv_receiver::routes::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(doc, real);
}

/// Method, documented path, real path, body, with token.
type Case = (&'static str, &'static str, String, Option<Vec<u8>>, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_operations_answer_on_a_live_receiver_with_documented_codes() {
    init();
    let mut chain = TestChain::new(1, 60_000, 600_000);
    chain.extend(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = start_receiver(dir.path(), chain.keys(), Some("tok"), None, None).await;
    let base = format!("http://{}", rx.addr());
    let http = reqwest::Client::new();
    let docs = documented();
    let codes = |m: &str, p: &str| {
        docs.iter()
            .find(|(dm, dp, _)| dm == m && dp == p)
            .map(|d| d.2.clone())
            .expect("documented")
    };
    let id1 = "gw-test-000000000001";
    // (method, doc path, real path, body, token) -> the code must be documented.
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/v1/reports/{report_id}",
            format!("/v1/reports/{id1}"),
            Some(chain.reports[0].clone()),
            false,
        ),
        (
            "PUT",
            "/v1/reports/{report_id}",
            format!("/v1/reports/{id1}"),
            Some(chain.reports[0].clone()),
            true,
        ),
        (
            "PUT",
            "/v1/reports/{report_id}",
            format!("/v1/reports/{id1}"),
            Some(chain.reports[0].clone()),
            true,
        ),
        (
            "PUT",
            "/v1/reports/{report_id}",
            format!("/v1/reports/{id1}"),
            Some(b"junk".to_vec()),
            true,
        ),
        (
            "POST",
            "/v1/reports",
            String::from("/v1/reports"),
            Some(chain.reports[1].clone()),
            true,
        ),
        (
            "GET",
            "/v1/reports/{report_id}",
            format!("/v1/reports/{id1}"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/reports/{report_id}",
            String::from("/v1/reports/nope"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/gateways",
            String::from("/v1/gateways"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/gateways/{gateway}/chain",
            String::from("/v1/gateways/gw-test/chain"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/gateways/{gateway}/chain",
            String::from("/v1/gateways/nope/chain"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/gateways/{gateway}/reports",
            String::from("/v1/gateways/gw-test/reports?after=0&limit=1"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/reports/{report_id}/receipt",
            format!("/v1/reports/{id1}/receipt"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/reports/{report_id}/receipt",
            String::from("/v1/reports/nope/receipt"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/equivocations",
            String::from("/v1/equivocations"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/equivocations/{offered_hash}",
            format!("/v1/equivocations/{}", "0".repeat(64)),
            None,
            false,
        ),
        (
            "GET",
            "/v1/log/checkpoint",
            String::from("/v1/log/checkpoint"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/log/consistency",
            String::from("/v1/log/consistency?old=1&new=2"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/log/consistency",
            String::from("/v1/log/consistency?old=1&new=99"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/log/key",
            String::from("/v1/log/key"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/ledger/totals",
            String::from("/v1/ledger/totals?project=JCM-TH-0042&from=2025-11-26&to=2025-11-26"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/ledger/totals",
            String::from("/v1/ledger/totals?project=JCM-TH-0042&from=2025-11-31&to=2025-12-01"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/ledger/reports",
            String::from(
                "/v1/ledger/reports?project=JCM-TH-0042&site=th-solar-01&from=2025-11-26&to=2025-11-26",
            ),
            None,
            false,
        ),
        (
            "GET",
            "/v1/registry",
            String::from("/v1/registry"),
            None,
            true,
        ),
        (
            "POST",
            "/v1/registry/changes",
            String::from("/v1/registry/changes"),
            Some(b"{}".to_vec()),
            true,
        ),
        (
            "GET",
            "/v1/registry/history",
            String::from("/v1/registry/history"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/registry/sites/{site}/devices",
            String::from("/v1/registry/sites/th-solar-01/devices"),
            None,
            false,
        ),
        (
            "GET",
            "/v1/metrics",
            String::from("/v1/metrics"),
            None,
            false,
        ),
        ("GET", "/v1/health", String::from("/v1/health"), None, false),
    ];
    let mut seen = BTreeSet::new();
    for (m, doc_path, path, body, token) in cases {
        let mut req = http.request(m.parse().expect("method"), format!("{base}{path}"));
        if let Some(b) = body {
            req = req.body(b);
        }
        if token {
            req = req.bearer_auth("tok");
        }
        let r = req.send().await.expect("answer");
        let code = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        assert!(
            codes(m, doc_path).contains(&code),
            "{m} {path} answered {code}, not documented for {doc_path}"
        );
        // Handler answers carry a body; the router's own 404/405 do not.
        assert!(
            !body.is_empty(),
            "{m} {path}: {code} from the router itself"
        );
        seen.insert((m, code));
    }
    for want in [
        ("PUT", 401),
        ("PUT", 201),
        ("PUT", 200),
        ("PUT", 400),
        ("POST", 200),
        ("GET", 404),
    ] {
        assert!(seen.contains(&want), "{want:?} exercised");
    }
    rx.stop().await.expect("stops");
}
