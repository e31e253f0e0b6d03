//! The diagnostics API's handling of what a browser or script sends: the
//! query strings its handlers extract (with axum's own `Query` extractor,
//! as the router does), the path's device id, the `Host` check, and the
//! quarantine page, which shows hostile payloads, topics and device names
//! back to the technician.
//!
//! Input: the query string (up to the first NUL byte), then the text used
//! as a quarantined message's topic, device and payload (split at the next
//! NUL bytes).

use axum::extract::Query;
use axum::http::Uri;
use mrv_gateway::diagnostics::api::quarantine_view;
use mrv_gateway::diagnostics::page::quarantine_page;
use mrv_gateway::diagnostics::server::{
    DeviceQuery, LimitQuery, RangeQuery, TailQuery, host_is_loopback,
};
use mrv_gateway::diagnostics::state::Range;
use mrv_gateway::ingest::quarantine::Quarantined;
use mrv_shared::ids::DeviceId;

/// The body of the `diagnostics_query` target.
pub fn query(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == 0);
    let query = parts.next().unwrap_or_default();
    let topic = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let device = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let payload = parts.next().unwrap_or_default();
    let query_text = String::from_utf8_lossy(query);
    let mut filter = None;

    // The query extractors of the API routes, on a URI as the router gets it.
    if let Ok(uri) = format!("/api/devices/x?{query_text}").parse::<Uri>() {
        if let Ok(Query(q)) = Query::<RangeQuery>::try_from_uri(&uri) {
            let r = q.range();
            if let Some(s) = q.range.as_deref()
                && let Some(parsed) = Range::parse(s)
            {
                assert_eq!(parsed.code(), s);
                assert_eq!(r, parsed);
            }
        }
        if let Ok(Query(q)) = Query::<LimitQuery>::try_from_uri(&uri) {
            let _ = q.limit;
        }
        if let Ok(Query(q)) = Query::<TailQuery>::try_from_uri(&uri) {
            let _ = q.after_ms;
        }
        if let Ok(Query(q)) = Query::<DeviceQuery>::try_from_uri(&uri) {
            filter = q.device;
        }
    }
    // The path's device id.
    if let Ok(id) = DeviceId::new(&query_text) {
        assert_eq!(id.as_str(), query_text);
    }
    let _ = host_is_loopback(Some(&query_text));
    quarantine(&topic, &device, payload, filter.as_deref());
}

/// The quarantine page with one hostile entry: no markup from the input
/// gets through. The page is rendered twice, once with the input and once
/// with its markup characters replaced: the structure (every `<`, `>` and
/// `"` the page itself writes) must be the same.
fn quarantine(topic: &str, device: &str, payload: &[u8], filter: Option<&str>) {
    let page = |topic: &str, device: &str, payload: &[u8], filter: Option<&str>| {
        let q = [Quarantined {
            received_ms: 1_764_590_400_000,
            topic: topic.to_string(),
            device: (!device.is_empty()).then(|| device.to_string()),
            reason: "bad_json",
            detail: format!("topic {topic}"),
            len: payload.len(),
            payload: payload.to_vec(),
        }];
        let entries = quarantine_view(&q, filter.or((!device.is_empty()).then_some(device)));
        assert_eq!(entries.len(), 1, "the entry of its own device is shown");
        quarantine_page("site-a", &entries, filter, 100)
    };
    let defuse = |s: &str| s.replace(['<', '>', '"', '\'', '&'], "_");
    let defused_payload: Vec<u8> = payload
        .iter()
        .map(|b| if b"<>\"'&".contains(b) { b'_' } else { *b })
        .collect();
    let filter = filter.filter(|f| !device.is_empty() && *f == device);
    let hostile = page(topic, device, payload, filter);
    let markup = |s: &str| s.contains(['<', '>', '"', '\'', '&']);
    if !markup(topic) && !markup(device) && !payload.iter().any(|b| b"<>\"'&".contains(b)) {
        // Nothing to escape: the page with the input is the plain page.
        return;
    }
    let plain = page(
        &defuse(topic),
        &defuse(device),
        &defused_payload,
        filter.map(defuse).as_deref(),
    );
    for c in ['<', '>', '"'] {
        assert_eq!(
            hostile.matches(c).count(),
            plain.matches(c).count(),
            "input markup {c:?} reached the quarantine page"
        );
    }
}
