//! The HTTP API (documented in `docs/openapi.yaml`; a test checks the two
//! agree): upload (batch and single), fetch, listing and chain status.
//!
//! | method | path | job |
//! |---|---|---|
//! | `POST` | `/v1/reports` | upload a batch: JWS compact reports, one per line, in chain order |
//! | `PUT` | `/v1/reports/{report_id}` | upload one report (idempotent by id) |
//! | `GET` | `/v1/reports/{report_id}` | the stored bytes (`application/jose`) |
//! | `GET` | `/v1/gateways` | chain status of every gateway |
//! | `GET` | `/v1/gateways/{gateway}/chain` | chain status of one gateway |
//! | `GET` | `/v1/gateways/{gateway}/reports` | stored reports, `?after=<seq>&limit=<n>` |
//! | `GET` | `/v1/health` | liveness |
//!
//! Upload bodies may be `Content-Encoding: gzip`. Upload routes need
//! `Authorization: Bearer <token>` when a token is configured. While the
//! receiver is in maintenance ([`crate::ReceiverHandle::set_maintenance`])
//! uploads get `503` with `Retry-After`.
//!
//! Status codes of `PUT`: `201` stored, `200` duplicate (same bytes already
//! stored), `400` malformed or id mismatch, `401` token, `409` chain
//! conflict (`seq_gap`, `prev_hash_mismatch`, `period_discontinuity`,
//! `baseline_mismatch`, `equivocation`), `413` too large, `415` encoding,
//! `422` verification failure (`bad_signature`, `unknown_kid`,
//! `merkle_mismatch`, ...), `500` storage, `503` maintenance. `POST` answers
//! `200` with one result per report, in order, stopping after the first
//! rejection; whole-request problems use the same codes as `PUT`.

use crate::archive::{Archive, ItemResult, ItemStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mrv_shared::report::KeySet;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest upload body on the wire.
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Largest upload body after gzip decoding.
pub const MAX_DECODED_BYTES: u64 = 256 << 20;

/// Every route, as `(method, path)`, in axum path syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/reports"),
    ("PUT", "/v1/reports/{report_id}"),
    ("GET", "/v1/reports/{report_id}"),
    ("GET", "/v1/gateways"),
    ("GET", "/v1/gateways/{gateway}/chain"),
    ("GET", "/v1/gateways/{gateway}/reports"),
    ("GET", "/v1/health"),
];

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
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The archive.
    pub archive: Arc<Archive>,
    /// Registered gateway keys.
    pub keys: Arc<KeySet>,
    /// Upload token (`None`: uploads are open).
    pub token: Option<Arc<str>>,
    /// `Some(seconds)`: maintenance, uploads get 503 with this Retry-After.
    pub maintenance: Arc<Mutex<Option<u64>>>,
    /// Counters.
    pub stats: Arc<ReceiverStats>,
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/reports", post(upload_batch))
        .route("/v1/reports/{report_id}", get(fetch).put(upload_one))
        .route("/v1/gateways", get(gateways))
        .route("/v1/gateways/{gateway}/chain", get(chain))
        .route("/v1/gateways/{gateway}/reports", get(list))
        .route("/v1/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Token, maintenance and body decoding shared by both upload routes.
fn admit(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Vec<u8>, Box<Response>> {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    state
        .stats
        .wire_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
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
            return Err(Box::new(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            )));
        }
    }
    let maintenance = *state.maintenance.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(secs) = maintenance {
        let mut r = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "maintenance",
            "the receiver is in maintenance; retry later",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
        );
        return Err(Box::new(r));
    }
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::GzDecoder::new(&body[..])
                .take(MAX_DECODED_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    Box::new(problem(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!("gzip: {e}"),
                    ))
                })?;
            if out.len() as u64 > MAX_DECODED_BYTES {
                return Err(Box::new(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("decoded body exceeds {MAX_DECODED_BYTES} bytes"),
                )));
            }
            Ok(out)
        }
        Some(other) => Err(Box::new(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("content-encoding {other:?}: use gzip or none"),
        ))),
    }
}

fn count(state: &AppState, r: &ItemResult) {
    let c = match r.status {
        ItemStatus::Accepted => &state.stats.accepted,
        ItemStatus::Duplicate => &state.stats.duplicates,
        ItemStatus::Rejected => &state.stats.rejected,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// Result list of a batch upload.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResults {
    /// One per report, in order, up to and including the first rejection.
    pub results: Vec<ItemResult>,
}

async fn upload_batch(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let decoded = match admit(&state, &headers, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let st = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        let now = now_ms();
        for line in decoded.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            match st.archive.offer(line, &st.keys, now) {
                Ok(r) => {
                    count(&st, &r);
                    let stop = r.status == ItemStatus::Rejected;
                    results.push(r);
                    if stop {
                        break;
                    }
                }
                Err(e) => return (results, Some(e.to_string())),
            }
        }
        (results, None)
    })
    .await;
    match outcome {
        Ok((results, None)) => {
            (StatusCode::OK, axum::Json(BatchResults { results })).into_response()
        }
        Ok((results, Some(e))) => {
            tracing::error!(error = %e, "storage failed during a batch upload");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(BatchResults { results }),
            )
                .into_response()
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn upload_one(
    State(state): State<AppState>,
    Path(report_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let decoded = match admit(&state, &headers, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let st = state.clone();
    let outcome =
        tokio::task::spawn_blocking(move || st.archive.offer(&decoded, &st.keys, now_ms())).await;
    let r = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storage failed during an upload");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string());
        }
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
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
    match state.archive.fetch(&report_id) {
        Ok(Some(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jose")],
            bytes,
        )
            .into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no such report"),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
    }
}

async fn gateways(State(state): State<AppState>) -> Response {
    let all: Vec<_> = state
        .archive
        .gateways()
        .iter()
        .filter_map(|g| state.archive.chain_status(g))
        .collect();
    axum::Json(all).into_response()
}

async fn chain(State(state): State<AppState>, Path(gateway): Path<String>) -> Response {
    match state.archive.chain_status(&gateway) {
        Some(s) => axum::Json(s).into_response(),
        None => problem(StatusCode::NOT_FOUND, "not_found", "no such gateway"),
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
    match state.archive.list(&gateway, q.after, q.limit.min(10_000)) {
        Some(v) => axum::Json(v).into_response(),
        None => problem(StatusCode::NOT_FOUND, "not_found", "no such gateway"),
    }
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}
