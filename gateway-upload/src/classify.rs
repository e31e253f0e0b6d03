//! What the backend's answer to one upload means (pure).
//!
//! "The peer said no" is not "the link broke": [`classify_response`] turns
//! an HTTP answer to a batch upload, and [`classify_transport`] a failure to
//! get one, into an [`Outcome`]: which reports of the batch the backend
//! confirmed, and whether the rest is done, to be retried (with the
//! backend's `Retry-After` if it gave one), permanently rejected, or too
//! large for one request.
//!
//! Rules:
//! - `2xx` with a result list (`{"results":[{seq, status, reason}]}`, see
//!   `docs/openapi.yaml`): `accepted` and `duplicate` ("already have this
//!   exact report") confirm their report; the first `rejected` is a
//!   permanent rejection of that report; results that stop short of the
//!   batch without a rejection leave the rest to retry. `2xx` without a
//!   result list confirms the whole batch.
//! - `409` whose reason is `duplicate` / `already_exists`: confirmed.
//! - `408`, `425`, `429` and every `5xx`: retry (a `5xx` result list still
//!   confirms the reports it lists as stored).
//! - `413`: too large (the caller shrinks the batch).
//! - any other `4xx` (and `3xx`, `1xx`): permanent for the first report of
//!   the batch that is not confirmed.
//! - no answer (refused, reset, timeout, TLS failure): retry.

use serde::Deserialize;

/// What one upload attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Highest seq of the batch the backend confirmed holding (`None`: none).
    pub confirmed_upto: Option<u64>,
    /// What to do about the rest.
    pub verdict: Verdict,
}

/// The part of a batch that was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing left: every report of the batch was confirmed.
    Done,
    /// A transient failure: try again later.
    Retry {
        /// The backend's `Retry-After`, ms from now.
        retry_after_ms: Option<u64>,
        /// What happened, for logs and diagnostics.
        why: String,
    },
    /// The backend refused this report; it will not accept it as it is.
    Rejected {
        /// The report.
        seq: u64,
        /// HTTP status.
        status: u16,
        /// Stable short reason (the backend's, or `http_<status>`).
        reason: String,
        /// Detail for the operator.
        detail: String,
    },
    /// `413`: the request was too large.
    TooLarge,
}

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// Connection refused / unreachable / DNS.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection broke (reset, closed mid-body, TLS failure).
    Broken,
}

#[derive(Debug, Deserialize)]
struct ItemResult {
    #[serde(default)]
    seq: Option<u64>,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    receipt: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct BatchResults {
    results: Vec<ItemResult>,
}

#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

const DUPLICATE_REASONS: &[&str] = &["duplicate", "already_exists", "already_stored"];

/// Classifies the answer to uploading `seqs` (the batch, in order).
/// `retry_after` is the raw `Retry-After` header; `now_ms` resolves its
/// HTTP-date form.
pub fn classify_response(
    seqs: &[u64],
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Outcome {
    let retry_after_ms = retry_after.and_then(|v| parse_retry_after(v, now_ms));
    let results = serde_json::from_slice::<BatchResults>(body)
        .ok()
        .map(|b| b.results);
    let problem = serde_json::from_slice::<Problem>(body).ok();
    let reason_of = |p: &Option<Problem>| {
        p.as_ref()
            .and_then(|p| p.reason.clone())
            .unwrap_or_else(|| format!("http_{status}"))
    };
    let detail_of = |p: &Option<Problem>| {
        p.as_ref()
            .and_then(|p| p.detail.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
    };
    match status {
        200..=299 => match results {
            None => Outcome {
                confirmed_upto: seqs.last().copied(),
                verdict: Verdict::Done,
            },
            Some(results) => walk_results(seqs, &results, status),
        },
        409 if DUPLICATE_REASONS.contains(&reason_of(&problem).as_str()) => Outcome {
            confirmed_upto: seqs.last().copied(),
            verdict: Verdict::Done,
        },
        413 => Outcome {
            confirmed_upto: None,
            verdict: Verdict::TooLarge,
        },
        408 | 425 | 429 | 500..=599 => {
            let confirmed_upto = results
                .as_deref()
                .and_then(|r| walk_results(seqs, r, status).confirmed_upto);
            Outcome {
                confirmed_upto,
                verdict: Verdict::Retry {
                    retry_after_ms,
                    why: format!(
                        "HTTP {status} {}: {}",
                        reason_of(&problem),
                        detail_of(&problem)
                    ),
                },
            }
        }
        _ => Outcome {
            confirmed_upto: None,
            verdict: match seqs.first() {
                Some(&seq) => Verdict::Rejected {
                    seq,
                    status,
                    reason: reason_of(&problem),
                    detail: detail_of(&problem),
                },
                None => Verdict::Done,
            },
        },
    }
}

fn walk_results(seqs: &[u64], results: &[ItemResult], status: u16) -> Outcome {
    let mut confirmed_upto = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let Some(r) = results.get(i) else {
            return Outcome {
                confirmed_upto,
                verdict: Verdict::Retry {
                    retry_after_ms: None,
                    why: format!(
                        "backend answered for {} of {} reports",
                        results.len(),
                        seqs.len()
                    ),
                },
            };
        };
        if r.seq.is_some_and(|s| s != seq) {
            return Outcome {
                confirmed_upto,
                verdict: Verdict::Retry {
                    retry_after_ms: None,
                    why: format!("backend result {i} is for seq {:?}, expected {seq}", r.seq),
                },
            };
        }
        match r.status.as_str() {
            "accepted" | "duplicate" => confirmed_upto = Some(seq),
            _ if r
                .reason
                .as_deref()
                .is_some_and(|x| DUPLICATE_REASONS.contains(&x)) =>
            {
                confirmed_upto = Some(seq);
            }
            _ => {
                return Outcome {
                    confirmed_upto,
                    verdict: Verdict::Rejected {
                        seq,
                        status,
                        reason: r.reason.clone().unwrap_or_else(|| r.status.clone()),
                        detail: r.detail.clone().unwrap_or_default(),
                    },
                };
            }
        }
    }
    Outcome {
        confirmed_upto,
        verdict: Verdict::Done,
    }
}

/// The receipts in a `2xx` (or `5xx`) batch answer, by seq: one per
/// `accepted` or `duplicate` result that matches its place in the batch and
/// carries a well-formed receipt. (Checking them is
/// [`super::receipts`]'s job.)
pub fn receipts_in(
    seqs: &[u64],
    status: u16,
    body: &[u8],
) -> Vec<(u64, mrv_shared::tlog::receipt::Receipt)> {
    if !(200..300).contains(&status) && !(500..600).contains(&status) {
        return Vec::new();
    }
    let Ok(b) = serde_json::from_slice::<BatchResults>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (r, &seq) in b.results.into_iter().zip(seqs) {
        if r.seq.is_some_and(|s| s != seq) || !matches!(r.status.as_str(), "accepted" | "duplicate")
        {
            break;
        }
        if let Some(Ok(receipt)) = r.receipt.map(serde_json::from_value) {
            out.push((seq, receipt));
        }
    }
    out
}

/// Classifies a failure to get any answer.
pub fn classify_transport(failure: TransportFailure, detail: &str) -> Outcome {
    let what = match failure {
        TransportFailure::Connect => "cannot connect",
        TransportFailure::Timeout => "timed out",
        TransportFailure::Broken => "connection broke",
    };
    Outcome {
        confirmed_upto: None,
        verdict: Verdict::Retry {
            retry_after_ms: None,
            why: format!("{what}: {detail}"),
        },
    }
}

/// `Retry-After` as ms from `now_ms`: delta-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`). `None` if unparseable.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = parse_imf_fixdate(v)?;
    Some(at.saturating_sub(now_ms))
}

fn parse_imf_fixdate(v: &str) -> Option<u64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (_, rest) = v.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let s: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(items: &str) -> Vec<u8> {
        format!("{{\"results\":[{items}]}}").into_bytes()
    }

    #[test]
    fn every_report_accepted_or_duplicate_is_done() {
        let body = results(r#"{"seq":4,"status":"accepted"},{"seq":5,"status":"duplicate"}"#);
        let o = classify_response(&[4, 5], 200, None, &body, 0);
        assert_eq!(o.confirmed_upto, Some(5));
        assert_eq!(o.verdict, Verdict::Done);
    }

    #[test]
    fn a_rejected_report_is_permanent_and_confirms_the_ones_before_it() {
        let body = results(
            r#"{"seq":4,"status":"accepted"},{"seq":5,"status":"rejected","reason":"bad_signature","detail":"x"}"#,
        );
        let o = classify_response(&[4, 5, 6], 200, None, &body, 0);
        assert_eq!(o.confirmed_upto, Some(4));
        assert!(
            matches!(o.verdict, Verdict::Rejected { seq: 5, ref reason, .. } if reason == "bad_signature")
        );
    }

    #[test]
    fn results_that_stop_short_leave_the_rest_to_retry() {
        let body = results(r#"{"seq":4,"status":"accepted"}"#);
        let o = classify_response(&[4, 5], 200, None, &body, 0);
        assert_eq!(o.confirmed_upto, Some(4));
        assert!(matches!(o.verdict, Verdict::Retry { .. }));
    }

    #[test]
    fn a_plain_2xx_confirms_the_batch() {
        let o = classify_response(&[1, 2], 204, None, b"", 0);
        assert_eq!(o.confirmed_upto, Some(2));
    }

    #[test]
    fn service_unavailable_with_retry_after_is_retried_after_that_long() {
        let body = br#"{"status":"rejected","reason":"maintenance","detail":"later"}"#;
        let o = classify_response(&[1], 503, Some("7"), body, 0);
        assert_eq!(o.confirmed_upto, None);
        assert!(matches!(
            o.verdict,
            Verdict::Retry {
                retry_after_ms: Some(7000),
                ..
            }
        ));
    }

    #[test]
    fn a_5xx_result_list_still_confirms_what_was_stored() {
        let body = results(r#"{"seq":1,"status":"accepted"}"#);
        let o = classify_response(&[1, 2], 500, None, &body, 0);
        assert_eq!(o.confirmed_upto, Some(1));
        assert!(matches!(o.verdict, Verdict::Retry { .. }));
    }

    #[test]
    fn other_4xx_are_permanent_for_the_first_report_but_409_duplicate_is_accepted() {
        let o = classify_response(&[3, 4], 401, None, br#"{"reason":"unauthorized"}"#, 0);
        assert!(
            matches!(o.verdict, Verdict::Rejected { seq: 3, status: 401, ref reason, .. } if reason == "unauthorized")
        );
        let o = classify_response(&[3], 400, None, b"nope", 0);
        assert!(matches!(o.verdict, Verdict::Rejected { ref reason, .. } if reason == "http_400"));
        let o = classify_response(&[3], 409, None, br#"{"reason":"already_exists"}"#, 0);
        assert_eq!((o.confirmed_upto, o.verdict), (Some(3), Verdict::Done));
        let o = classify_response(&[3], 429, Some("2"), b"", 0);
        assert!(matches!(
            o.verdict,
            Verdict::Retry {
                retry_after_ms: Some(2000),
                ..
            }
        ));
        let o = classify_response(&[3], 413, None, b"", 0);
        assert_eq!(o.verdict, Verdict::TooLarge);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 120 ", 0), Some(120_000));
        // 1994-11-06T08:49:37Z = 784111777 s.
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770_000),
            Some(7000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", u64::MAX),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
