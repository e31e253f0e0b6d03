//! The HTTP API (normative: `docs/RECEIVER-API.md` and `docs/openapi.yaml`;
//! a test checks the routes and the document agree).
//!
//! | method | path | job |
//! |---|---|---|
//! | `POST` | `/v1/reports` | upload a batch: JWS compact reports, one per line, in chain order |
//! | `PUT` | `/v1/reports/{report_id}` | upload one report (idempotent by bytes) |
//! | `GET` | `/v1/reports/{report_id}` | the stored bytes (`application/jose`) |
//! | `GET` | `/v1/reports/{report_id}/receipt` | a receipt against the current checkpoint |
//! | `GET` | `/v1/gateways` | chain status of every gateway |
//! | `GET` | `/v1/gateways/{gateway}/chain` | chain status of one gateway |
//! | `GET` | `/v1/gateways/{gateway}/reports` | stored reports, `?after=<seq>&limit=<n>` |
//! | `GET` | `/v1/equivocations` | every equivocation flag |
//! | `GET` | `/v1/equivocations/{offered_hash}` | the evidence: the refused bytes |
//! | `GET` | `/v1/log/checkpoint` | the current signed checkpoint (`text/plain`) |
//! | `GET` | `/v1/log/consistency` | consistency proof, `?old=<size>&new=<size>` |
//! | `GET` | `/v1/log/key` | the log's note verifier key (`text/plain`) |
//! | `GET` | `/v1/ledger/totals` | crediting totals, `?project=&site=&from=&to=` ([`crate::ledger`]) |
//! | `GET` | `/v1/ledger/reports` | the ledger entries behind them, same query |
//! | `GET` | `/v1/registry` | the registry: enrolled gateways and their keys, sites' devices (admin) |
//! | `POST` | `/v1/registry/changes` | one audited registry change ([`crate::registry::Change`]) (admin) |
//! | `GET` | `/v1/registry/history` | the audit trail, `?after=<seq>&limit=<n>` (admin) |
//! | `GET` | `/v1/registry/sites/{site}/devices` | a site's device registry (REPORT-FORMAT §10) (admin) |
//! | `GET` | `/v1/metrics` | counters, Prometheus text format |
//! | `GET` | `/v1/health` | liveness |
//!
//! Registry routes need `Authorization: Bearer <admin token>`; the token
//! names the actor recorded in the audit trail ([`AdminTokens`]).
//!
//! Upload bodies may be `Content-Encoding: gzip`; they are decoded and
//! processed one report (line) at a time, so a batch never sits decoded in
//! memory as a whole. Bounds ([`crate::limits::Limits`]): body bytes on the
//! wire, bytes of one decoded report, decoded bytes of a batch, time to
//! receive a body, and the memory all bodies in flight may hold together
//! (over it: `503` with `Retry-After`). Verification runs on at most
//! `verify_slots` reports at once.
//!
//! Status codes of `PUT`: `201` stored, `200` duplicate (same bytes already
//! stored), `400` malformed or id mismatch, `401` token, `408` body too
//! slow, `409` chain conflict (`seq_gap`, `prev_hash_mismatch`,
//! `period_discontinuity`, `baseline_mismatch`, `equivocation`), `413` too
//! large, `415` encoding, `422` verification failure (`bad_signature`,
//! `unknown_kid`, `merkle_mismatch`, `kid_gateway_mismatch`, the registry's
//! `unknown_gateway`, `key_revoked`, `key_not_valid`, `site_mismatch`,
//! `project_mismatch`, `device_key_revoked`, ...), `500` storage, `503`
//! maintenance or busy.
//! `POST` answers `200` with one result per report, in order, stopping
//! after the first rejection; whole-request problems use the same codes as
//! `PUT`. Every `accepted` and `duplicate` result carries a receipt.

use crate::archive::{AnyArchive, Archive, ArchiveError, ItemResult, ItemStatus, LogIdentity};
use crate::ledger::LedgerQuery;
use crate::limits::Limits;
use crate::registry::Change;
use crate::verification::Trust;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every route, as `(method, path)`, in axum path syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/reports"),
    ("PUT", "/v1/reports/{report_id}"),
    ("GET", "/v1/reports/{report_id}"),
    ("GET", "/v1/reports/{report_id}/receipt"),
    ("GET", "/v1/gateways"),
    ("GET", "/v1/gateways/{gateway}/chain"),
    ("GET", "/v1/gateways/{gateway}/reports"),
    ("GET", "/v1/equivocations"),
    ("GET", "/v1/equivocations/{offered_hash}"),
    ("GET", "/v1/log/checkpoint"),
    ("GET", "/v1/log/consistency"),
    ("GET", "/v1/log/key"),
    ("GET", "/v1/ledger/totals"),
    ("GET", "/v1/ledger/reports"),
    ("GET", "/v1/registry"),
    ("POST", "/v1/registry/changes"),
    ("GET", "/v1/registry/history"),
    ("GET", "/v1/registry/sites/{site}/devices"),
    ("GET", "/v1/metrics"),
    ("GET", "/v1/health"),
];

/// Admin tokens, each naming its actor (the audit trail's "who").
///
/// File format (`--admin-tokens FILE`): one `<actor> <token>` per line,
/// `#` comments and blank lines ignored; actors and tokens unique, tokens
/// at least 16 characters.
#[derive(Clone, Default)]
pub struct AdminTokens {
    tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(a, _)| a))
            .finish()
    }
}

impl AdminTokens {
    /// Parses the token file's text.
    pub fn parse(text: &str) -> Result<AdminTokens, String> {
        let mut tokens: Vec<(String, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(actor), Some(token), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("line {}: expected `<actor> <token>`", n + 1));
            };
            if token.len() < 16 {
                return Err(format!(
                    "line {}: the token of {actor:?} is shorter than 16 characters",
                    n + 1
                ));
            }
            if tokens.iter().any(|(a, t)| a == actor || t == token) {
                return Err(format!(
                    "line {}: actor {actor:?} or its token appears twice",
                    n + 1
                ));
            }
            tokens.push((actor.to_string(), token.to_string()));
        }
        Ok(AdminTokens { tokens })
    }

    /// One actor with one token (tests, embedding).
    pub fn single(actor: &str, token: &str) -> AdminTokens {
        AdminTokens {
            tokens: vec![(actor.to_string(), token.to_string())],
        }
    }

    /// True when no admin is configured (registry routes are then closed).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The actor whose token `given` is (compared in constant time).
    fn actor(&self, given: &str) -> Option<&str> {
        let mut found = None;
        for (actor, token) in &self.tokens {
            if constant_time_eq(given, token) {
                found = Some(actor.as_str());
            }
        }
        found
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Counters of a running receiver.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Upload requests answered.
    pub requests: AtomicU64,
    /// Reports newly stored.
    pub accepted: AtomicU64,
    /// Duplicates answered.
    pub duplicates: AtomicU64,
    /// Reports rejected.
    pub rejected: AtomicU64,
    /// Upload body bytes received (on the wire, before decoding).
    pub wire_bytes: AtomicU64,
    /// Uploads refused as a whole (token, size, encoding, slow body, busy).
    pub refused: AtomicU64,
    /// Nanoseconds spent verifying reports (sum over reports).
    pub verify_ns: AtomicU64,
    /// Nanoseconds spent in the archive's chain decision and storage (sum).
    pub commit_ns: AtomicU64,
    /// Rejected reports by reason.
    pub rejections: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Registry changes recorded.
    pub registry_changes: AtomicU64,
    /// Registry changes refused (auth, invalid, conflict, not found).
    pub registry_refused: AtomicU64,
}

impl ReceiverStats {
    /// Rejections with `reason` so far.
    pub fn rejected_for(&self, reason: &str) -> u64 {
        self.rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The archive.
    pub archive: Arc<AnyArchive>,
    /// What verification trusts.
    pub trust: Arc<Trust>,
    /// The log's identity (its verifier key is served).
    pub identity: Arc<LogIdentity>,
    /// Upload token (`None`: uploads are open).
    pub token: Option<Arc<str>>,
    /// `Some(seconds)`: maintenance, uploads get 503 with this Retry-After.
    pub maintenance: Arc<Mutex<Option<u64>>>,
    /// Counters.
    pub stats: Arc<ReceiverStats>,
    /// Bounds on bodies and work.
    pub limits: Arc<Limits>,
    /// Memory budget of bodies in flight, one permit per KiB.
    pub body_budget: Arc<Semaphore>,
    /// Reports being verified at once.
    pub verify_slots: Arc<Semaphore>,
    /// Connection counters of the accept loop.
    pub serve_stats: Arc<crate::serve::ServeStats>,
    /// Who may change the registry.
    pub admins: Arc<AdminTokens>,
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/reports", post(upload_batch))
        .route("/v1/reports/{report_id}", get(fetch).put(upload_one))
        .route("/v1/reports/{report_id}/receipt", get(receipt))
        .route("/v1/gateways", get(gateways))
        .route("/v1/gateways/{gateway}/chain", get(chain))
        .route("/v1/gateways/{gateway}/reports", get(list))
        .route("/v1/equivocations", get(equivocations))
        .route("/v1/equivocations/{offered_hash}", get(evidence))
        .route("/v1/log/checkpoint", get(checkpoint))
        .route("/v1/log/consistency", get(consistency))
        .route("/v1/log/key", get(log_key))
        .route("/v1/ledger/totals", get(ledger_totals))
        .route("/v1/ledger/reports", get(ledger_reports))
        .route("/v1/registry", get(registry_show))
        .route("/v1/registry/changes", post(registry_change))
        .route("/v1/registry/history", get(registry_history))
        .route(
            "/v1/registry/sites/{site}/devices",
            get(registry_site_devices),
        )
        .route("/v1/metrics", get(metrics))
        .route("/v1/health", get(health))
        .with_state(state)
}

/// Error body of whole-request failures and single uploads.
#[derive(Debug, Serialize, Deserialize)]
struct Problem {
    status: ItemStatus,
    reason: String,
    detail: String,
}

fn problem(code: StatusCode, reason: &str, detail: impl Into<String>) -> Response {
    (
        code,
        axum::Json(Problem {
            status: ItemStatus::Rejected,
            reason: reason.to_string(),
            detail: detail.into(),
        }),
    )
        .into_response()
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
    );
    r
}

fn storage_problem(e: &ArchiveError) -> Response {
    tracing::error!(error = %e, "storage failed");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A received upload body and the budget it holds while it is processed.
struct Admitted {
    body: bytes::Bytes,
    gzip: bool,
    _budget: OwnedSemaphorePermit,
}

/// Token, maintenance, encoding, size, time and memory budget: everything
/// decided about an upload before its first report is looked at.
async fn admit(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Admitted, Response> {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let refuse = |r: Response| {
        state.stats.refused.fetch_add(1, Ordering::Relaxed);
        r
    };
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return Err(refuse(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            )));
        }
    }
    let maintenance = *state.maintenance.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(secs) = maintenance {
        return Err(refuse(with_retry_after(
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "maintenance",
                "the receiver is in maintenance; retry later",
            ),
            secs,
        )));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(refuse(problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("content-encoding {other:?}: use gzip or none"),
            )));
        }
    };
    let limits = &state.limits;
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body exceeds {} bytes", limits.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(refuse(too_large()));
    }
    // Memory budget: what the body may occupy (its declared length, or the
    // maximum when it is chunked).
    let kib = declared
        .unwrap_or(limits.max_body_bytes)
        .div_ceil(1024)
        .max(1);
    let kib = u32::try_from(kib).unwrap_or(u32::MAX);
    let budget = match tokio::time::timeout(
        limits.budget_wait,
        state.body_budget.clone().acquire_many_owned(kib),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return Err(refuse(with_retry_after(
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many uploads in progress; retry later",
                ),
                limits.busy_retry_after_secs,
            )));
        }
    };
    let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let body =
        match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                // Over the limit, or the connection broke mid-body.
                let too_big = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return Err(refuse(if too_big {
                    too_large()
                } else {
                    problem(StatusCode::BAD_REQUEST, "malformed", format!("body: {e}"))
                }));
            }
            Err(_) => {
                return Err(refuse(problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the body did not arrive within {} s",
                        limits.body_timeout.as_secs()
                    ),
                )));
            }
        };
    state
        .stats
        .wire_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    Ok(Admitted {
        body,
        gzip,
        _budget: budget,
    })
}

/// Decoded reports of a body, one line at a time, each at most
/// `max_report` bytes, `max_total` together.
struct Lines {
    reader: BufReader<Box<dyn Read + Send>>,
    max_report: u64,
    left: u64,
}

/// Why a body's next report could not be read.
enum LineError {
    TooLarge(String),
    Malformed(String),
}

impl Lines {
    fn new(a: &Admitted, limits: &Limits) -> Lines {
        let raw = std::io::Cursor::new(a.body.clone());
        let inner: Box<dyn Read + Send> = if a.gzip {
            Box::new(flate2::read::GzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        Lines {
            reader: BufReader::with_capacity(64 * 1024, inner),
            max_report: limits.max_report_bytes,
            left: limits.max_decoded_bytes,
        }
    }

    /// The next non-empty line (without `\n` / `\r\n`), `None` at the end.
    fn next_line(&mut self) -> Option<Result<Vec<u8>, LineError>> {
        loop {
            let mut line = Vec::new();
            let cap = self.max_report.min(self.left) + 1;
            let n = match (&mut self.reader).take(cap).read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(e) => return Some(Err(LineError::Malformed(format!("gzip: {e}")))),
            };
            if n == 0 {
                return None;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if n as u64 >= cap {
                return Some(Err(LineError::TooLarge(if self.left < self.max_report {
                    format!(
                        "decoded body exceeds {} bytes",
                        self.left + (n as u64) - cap + 1
                    )
                } else {
                    format!("a report exceeds {} bytes decoded", self.max_report)
                })));
            }
            self.left = self.left.saturating_sub(n as u64);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                return Some(Ok(line));
            }
        }
    }
}

/// Reads the next line on a blocking thread (gzip decoding is CPU work).
async fn next_line(mut lines: Lines) -> (Lines, Option<Result<Vec<u8>, LineError>>) {
    tokio::task::spawn_blocking(move || {
        let l = lines.next_line();
        (lines, l)
    })
    .await
    .expect("line reading does not panic")
}

/// The single path every upload takes ([`crate::verification::offer`]).
async fn offer(state: &AppState, bytes: Vec<u8>) -> Result<ItemResult, ArchiveError> {
    let (r, t) = crate::verification::offer(
        &*state.archive,
        &state.trust,
        bytes,
        now_ms(),
        Some(&state.verify_slots),
    )
    .await?;
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    state
        .stats
        .verify_ns
        .fetch_add(nanos(t.verify), Ordering::Relaxed);
    state
        .stats
        .commit_ns
        .fetch_add(nanos(t.commit), Ordering::Relaxed);
    Ok(r)
}

fn count(state: &AppState, r: &ItemResult) {
    let c = match r.status {
        ItemStatus::Accepted => &state.stats.accepted,
        ItemStatus::Duplicate => &state.stats.duplicates,
        ItemStatus::Rejected => &state.stats.rejected,
    };
    c.fetch_add(1, Ordering::Relaxed);
    if let Some(reason) = &r.reason {
        *state
            .stats
            .rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason.clone())
            .or_default() += 1;
    }
}

/// Result list of a batch upload.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResults {
    /// One per report, in order, up to and including the first rejection.
    pub results: Vec<ItemResult>,
}

async fn upload_batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let admitted = match admit(&state, &headers, body).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut lines = Lines::new(&admitted, &state.limits);
    let mut results = Vec::new();
    loop {
        let (back, next) = next_line(lines).await;
        lines = back;
        let line = match next {
            None => break,
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                state.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let (reason, detail) = match e {
                    LineError::TooLarge(d) => ("too_large", d),
                    LineError::Malformed(d) => ("malformed", d),
                };
                if results.is_empty() {
                    let code = if reason == "too_large" {
                        StatusCode::PAYLOAD_TOO_LARGE
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    return problem(code, reason, detail);
                }
                results.push(ItemResult::rejected(None, reason, detail));
                break;
            }
        };
        match offer(&state, line).await {
            Ok(r) => {
                count(&state, &r);
                let stop = r.status == ItemStatus::Rejected;
                results.push(r);
                if stop {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storage failed during a batch upload");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(BatchResults { results }),
                )
                    .into_response();
            }
        }
    }
    drop(admitted);
    (StatusCode::OK, axum::Json(BatchResults { results })).into_response()
}

async fn upload_one(
    State(state): State<AppState>,
    Path(report_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let admitted = match admit(&state, &headers, body).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let lines = Lines::new(&admitted, &state.limits);
    let (_, first) = next_line(lines).await;
    let bytes = match first {
        Some(Ok(b)) => b,
        None => return problem(StatusCode::BAD_REQUEST, "malformed", "empty body"),
        Some(Err(LineError::TooLarge(d))) => {
            return problem(StatusCode::PAYLOAD_TOO_LARGE, "too_large", d);
        }
        Some(Err(LineError::Malformed(d))) => {
            return problem(StatusCode::BAD_REQUEST, "malformed", d);
        }
    };
    let r = match offer(&state, bytes).await {
        Ok(r) => r,
        Err(e) => return storage_problem(&e),
    };
    drop(admitted);
    count(&state, &r);
    if r.status != ItemStatus::Rejected && r.report_id.as_deref() != Some(report_id.as_str()) {
        // Stored (or already stored) under its own id; the path was wrong.
        return problem(
            StatusCode::BAD_REQUEST,
            "id_mismatch",
            format!(
                "the path names {report_id:?} but the report is {:?}",
                r.report_id
            ),
        );
    }
    let code = match r.status {
        ItemStatus::Accepted => StatusCode::CREATED,
        ItemStatus::Duplicate => StatusCode::OK,
        ItemStatus::Rejected if r.is_chain_conflict() => StatusCode::CONFLICT,
        ItemStatus::Rejected if r.reason.as_deref() == Some("malformed") => StatusCode::BAD_REQUEST,
        ItemStatus::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (code, axum::Json(r)).into_response()
}

async fn fetch(State(state): State<AppState>, Path(report_id): Path<String>) -> Response {
    match state.archive.fetch(&report_id).await {
        Ok(Some(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jose")],
            bytes,
        )
            .into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no such report"),
        Err(e) => storage_problem(&e),
    }
}

async fn receipt(State(state): State<AppState>, Path(report_id): Path<String>) -> Response {
    match state.archive.receipt(&report_id).await {
        Ok(Some(r)) => axum::Json(r).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no such report"),
        Err(e) => storage_problem(&e),
    }
}

async fn gateways(State(state): State<AppState>) -> Response {
    let names = match state.archive.gateways().await {
        Ok(n) => n,
        Err(e) => return storage_problem(&e),
    };
    let mut all = Vec::with_capacity(names.len());
    for g in names {
        match state.archive.chain_status(&g).await {
            Ok(Some(s)) => all.push(s),
            Ok(None) => {}
            Err(e) => return storage_problem(&e),
        }
    }
    axum::Json(all).into_response()
}

async fn chain(State(state): State<AppState>, Path(gateway): Path<String>) -> Response {
    match state.archive.chain_status(&gateway).await {
        Ok(Some(s)) => axum::Json(s).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no such gateway"),
        Err(e) => storage_problem(&e),
    }
}

/// Query of the ledger routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerParams {
    project: String,
    #[serde(default)]
    site: Option<String>,
    from: String,
    to: String,
}

async fn ledger_query(
    state: &AppState,
    p: &LedgerParams,
) -> Result<(LedgerQuery, Vec<crate::ledger::LedgerEntry>), Response> {
    let q = LedgerQuery::new(&p.project, p.site.as_deref(), &p.from, &p.to)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, "bad_query", e.to_string()))?;
    let entries = state
        .archive
        .ledger(&q)
        .await
        .map_err(|e| storage_problem(&e))?;
    Ok((q, entries))
}

async fn ledger_totals(State(state): State<AppState>, Query(p): Query<LedgerParams>) -> Response {
    match ledger_query(&state, &p).await {
        Ok((q, entries)) => match crate::ledger::totals(&q, &entries) {
            Ok(t) => axum::Json(t).into_response(),
            Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, "ledger", e.to_string()),
        },
        Err(r) => r,
    }
}

async fn ledger_reports(State(state): State<AppState>, Query(p): Query<LedgerParams>) -> Response {
    match ledger_query(&state, &p).await {
        Ok((_, entries)) => axum::Json(entries).into_response(),
        Err(r) => r,
    }
}

/// Query of the listing route.
#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn list(
    State(state): State<AppState>,
    Path(gateway): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    match state
        .archive
        .list(&gateway, q.after, q.limit.min(10_000))
        .await
    {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no such gateway"),
        Err(e) => storage_problem(&e),
    }
}

async fn equivocations(State(state): State<AppState>) -> Response {
    match state.archive.flags().await {
        Ok(f) => axum::Json(f).into_response(),
        Err(e) => storage_problem(&e),
    }
}

async fn evidence(State(state): State<AppState>, Path(hash): Path<String>) -> Response {
    match state.archive.evidence(&hash).await {
        Ok(Some(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jose")],
            bytes,
        )
            .into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no such evidence"),
        Err(e) => storage_problem(&e),
    }
}

async fn checkpoint(State(state): State<AppState>) -> Response {
    match state.archive.checkpoint().await {
        Ok(note) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            note,
        )
            .into_response(),
        Err(e) => storage_problem(&e),
    }
}

/// Query of the consistency route.
#[derive(Debug, Deserialize)]
struct ConsistencyQuery {
    old: u64,
    new: u64,
}

async fn consistency(State(state): State<AppState>, Query(q): Query<ConsistencyQuery>) -> Response {
    match state.archive.consistency(q.old, q.new).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(ArchiveError::Log(why)) => problem(StatusCode::BAD_REQUEST, "bad_range", why),
        Err(e) => storage_problem(&e),
    }
}

async fn log_key(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", state.identity.verifier()),
    )
        .into_response()
}

/// The actor of an admin request, or the `401` answer.
fn admin(state: &AppState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let refuse = |detail: &str| {
        state.stats.registry_refused.fetch_add(1, Ordering::Relaxed);
        Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            detail.to_string(),
        ))
    };
    if state.admins.is_empty() {
        return Err(refuse(
            "registry routes are closed: the receiver has no admin tokens (--admin-tokens)",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given.and_then(|g| state.admins.actor(g)) {
        Some(actor) => Ok(actor.to_string()),
        None => Err(refuse("missing or wrong admin bearer token")),
    }
}

async fn registry_show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    match state.archive.registry().await {
        Ok(r) => axum::Json(serde_json::json!({
            "gateways": r.gateways.values().collect::<Vec<_>>(),
            "sites": r.sites.values().collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => storage_problem(&e),
    }
}

async fn registry_site_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(site): Path<String>,
) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    match state.archive.registry().await {
        Ok(r) => match r.sites.get(&site) {
            Some(s) => axum::Json(&s.registry).into_response(),
            None => problem(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("site {site:?} has no device registry"),
            ),
        },
        Err(e) => storage_problem(&e),
    }
}

async fn registry_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    match state
        .archive
        .registry_history(q.after, q.limit.min(10_000))
        .await
    {
        Ok(h) => axum::Json(h).into_response(),
        Err(e) => storage_problem(&e),
    }
}

async fn registry_change(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let actor = match admin(&state, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let refused = |code: StatusCode, reason: &str, detail: String| {
        state.stats.registry_refused.fetch_add(1, Ordering::Relaxed);
        problem(code, reason, detail)
    };
    let change: Change = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("not a registry change: {e}"),
            );
        }
    };
    match state
        .archive
        .registry_change(&change, &actor, now_ms())
        .await
    {
        Ok(Ok(record)) => {
            state.stats.registry_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(seq = record.seq, actor = %record.actor, change = ?record.change, "registry change");
            (StatusCode::CREATED, axum::Json(record)).into_response()
        }
        Ok(Err(e)) => {
            let code = match e {
                crate::registry::RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
                crate::registry::RegistryError::Conflict(_) => StatusCode::CONFLICT,
                crate::registry::RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
            };
            refused(code, e.label(), e.to_string())
        }
        Err(e) => storage_problem(&e),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    use std::fmt::Write;
    let s = &state.stats;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, rows: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        "mrv_receiver_upload_requests_total",
        "Upload requests answered.",
        &[(String::new(), get(&s.requests))],
    );
    counter(
        "mrv_receiver_uploads_refused_total",
        "Uploads refused as a whole (token, size, encoding, slow body, busy).",
        &[(String::new(), get(&s.refused))],
    );
    counter(
        "mrv_receiver_reports_total",
        "Offered reports by outcome.",
        &[
            (String::from("{status=\"accepted\"}"), get(&s.accepted)),
            (String::from("{status=\"duplicate\"}"), get(&s.duplicates)),
            (String::from("{status=\"rejected\"}"), get(&s.rejected)),
        ],
    );
    let reasons: Vec<(String, u64)> = s
        .rejections
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), *n))
        .collect();
    counter(
        "mrv_receiver_rejections_total",
        "Rejected reports by reason.",
        &reasons,
    );
    counter(
        "mrv_receiver_registry_changes_total",
        "Registry changes recorded, and refused.",
        &[
            (
                String::from("{outcome=\"recorded\"}"),
                get(&s.registry_changes),
            ),
            (
                String::from("{outcome=\"refused\"}"),
                get(&s.registry_refused),
            ),
        ],
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}
