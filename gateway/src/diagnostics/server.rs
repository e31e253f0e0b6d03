//! The diagnostics HTTP server (axum): routes, token check, handlers.
//!
//! Routes: pages `/`, `/devices/{id}?range=`, `/events`, `/logs`, `/modbus`,
//! `/quarantine`, `/login`; assets `/assets/style.css`, `/assets/app.js`; the JSON API
//! (see [`super::api`]); `/metrics` (see [`super::metrics`]).
//!
//! Access rule: with no token configured (only allowed on loopback, see
//! [`super::config`]) every request is served. With a token, every request
//! except the assets and the login form needs either `Authorization: Bearer
//! <token>` or the session cookie the login form sets; anything else gets
//! `401` (a login page for pages, JSON for the API, text for `/metrics`).
//! The cookie holds `SHA-256(random salt of this process || token)`, never
//! the token, and it is `HttpOnly; SameSite=Strict`.

use super::api::{
    self, ConfigView, DeviceRow, EventView, Inputs, ProbeRequest, ProbeResult, StatusView,
};
use super::bundle::redact_config;
use super::config::ValidDiagnosticsConfig;
use super::logs::LogRing;
use super::page;
use super::state::{LiveStore, Range, SharedLive, run_live_feed};
use super::{DiagnosticsError, metrics};
use crate::buffer::{BufferStats, DeviceSummary};
use crate::ingest::quarantine::Quarantined;
use crate::modbus::status::DeviceStatus as ModbusDeviceStatus;
use crate::runtime::GatewayState;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mrv_shared::ids::DeviceId;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Name of the session cookie.
pub const COOKIE: &str = "mrv_diag";

/// What every handler sees.
#[derive(Clone)]
pub struct DiagContext {
    gw: GatewayState,
    live: SharedLive,
    cfg: Arc<ValidDiagnosticsConfig>,
    started_ms: u64,
    logs: &'static LogRing,
    session: Option<Arc<String>>,
    activity: Arc<Mutex<std::collections::VecDeque<EventView>>>,
}

/// Diagnostics-only activity (failed uploads, refused logins) kept in memory
/// for the events list (newest last).
pub const ACTIVITY_LEN: usize = 200;

/// Refused-login counters as last seen by the diagnostics watcher.
#[derive(Debug, Default, Clone, Copy)]
struct LoginCounts {
    endpoint: u64,
    broker: u64,
}

/// One consistent copy of the state a view is built from.
struct Snapshot {
    now_ms: u64,
    buffer: BufferStats,
    devices: Vec<DeviceSummary>,
    quarantine: Vec<Quarantined>,
    reject_counts: BTreeMap<(Option<String>, &'static str), u64>,
    modbus: Option<BTreeMap<DeviceId, ModbusDeviceStatus>>,
    /// `clock_jump` events in the last 24 h (read from the buffer).
    clock_jumps_24h: u64,
}

impl DiagContext {
    /// A context over a running gateway's state.
    pub fn new(gw: GatewayState, cfg: ValidDiagnosticsConfig, logs: &'static LogRing) -> Self {
        let live = Arc::new(Mutex::new(LiveStore::with_budget(
            cfg.chart_window.as_millis() as u64,
            cfg.chart_memory_bytes,
        )));
        let session = cfg.token.as_ref().map(|t| {
            let salt: [u8; 16] = rand::random();
            let mut h = Sha256::new();
            h.update(salt);
            h.update(t.expose().as_bytes());
            Arc::new(hex(&h.finalize()))
        });
        Self {
            started_ms: gw.clock.now_ms(),
            gw,
            live,
            cfg: Arc::new(cfg),
            logs,
            session,
            activity: Arc::new(Mutex::new(std::collections::VecDeque::new())),
        }
    }

    /// The live store (fed by [`run_live_feed`]).
    pub fn live(&self) -> SharedLive {
        self.live.clone()
    }

    /// What the pages and views are drawn from. Reading it takes the
    /// buffer's lock (which an append's fsync or an in-process reopen holds
    /// for a while) and reads events from sled, so it runs on a blocking
    /// thread: a slow disk must not stall the runtime workers that ingest
    /// and acks also run on.
    async fn snapshot(&self) -> Snapshot {
        let ctx = self.clone();
        match tokio::task::spawn_blocking(move || ctx.snapshot_now()).await {
            Ok(s) => s,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn snapshot_now(&self) -> Snapshot {
        let now_ms = self.gw.clock.now_ms();
        let clock_jumps_24h = self.clock_jumps_24h(now_ms);
        let q = self.gw.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            clock_jumps_24h,
            now_ms,
            buffer: self.gw.buffer.stats(),
            devices: self.gw.buffer.devices(),
            quarantine: q.entries().cloned().collect(),
            reject_counts: q.counts().clone(),
            modbus: self.gw.modbus_status.as_ref().map(|m| m.snapshot()),
        }
    }

    fn with_inputs<T>(&self, s: &Snapshot, f: impl FnOnce(&Inputs<'_>) -> T) -> T {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let inputs = Inputs {
            config: &self.gw.config,
            diag: &self.cfg,
            buffer: &s.buffer,
            buffer_devices: &s.devices,
            live: &live,
            quarantine: &s.quarantine,
            reject_counts: &s.reject_counts,
            modbus: s.modbus.as_ref(),
            now_ms: s.now_ms,
        };
        f(&inputs)
    }

    fn rows(&self, s: &Snapshot) -> Vec<DeviceRow> {
        self.with_inputs(s, api::device_rows)
    }

    fn uploads(&self) -> api::UploadsView {
        let reports = self.gw.reports.as_ref();
        let head = reports.and_then(|r| r.head());
        let backlog = reports.map(|r| r.undelivered().len() as u64);
        let delivered = reports.map(|r| r.delivered_upto());
        let upload = self.gw.upload_status.as_ref().map(|p| p());
        let mut v = api::uploads_view(head.as_ref(), backlog, delivered, upload, reports.is_some());
        if reports.is_some() {
            let t = self.gw.report_task.get();
            v.report_alarm = t.alarm();
            v.report_task = Some(t);
        }
        v
    }

    fn status(&self, s: &Snapshot, rows: &[DeviceRow]) -> StatusView {
        let c = &self.gw.config;
        let mut v = StatusView {
            site: api::SiteView {
                id: c.site.id.to_string(),
                name: c.site.name.clone(),
                project: c.site.project.clone(),
                methodology: c.site.methodology.clone(),
            },
            gateway: c.gateway_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            now_ms: s.now_ms,
            uptime_s: s.now_ms.saturating_sub(self.started_ms) / 1000,
            auth: self.cfg.token.is_some(),
            devices: api::device_counts(rows),
            buffer: api::buffer_view(&s.buffer, s.now_ms),
            ingest: api::ingest_view(&self.gw.ingest),
            mqtt: api::mqtt_view(c.mqtt.mode, &self.gw.endpoint, &self.gw.ingest),
            uploads: self.uploads(),
            modbus: s.modbus.as_ref().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.clone().into()))
                    .collect()
            }),
            health: api::HealthView::default(),
            disk: Some(api::disk_view(&self.gw.disk.get())),
            lorawan: self.gw.intake.lorawan_sessions(),
            chart_memory: self.live.lock().unwrap_or_else(|p| p.into_inner()).memory(),
            dedup_memory: self.gw.intake.dedup_memory(),
        };
        let facts = api::HealthFacts {
            ingest_subscribed: crate::ingest::stats::IngestStats::get(&self.gw.ingest.subscribed)
                > 0,
            report_period_ms: c.report.as_ref().map(|r| r.period_ms() + r.grace_ms()),
            clock_jumps_24h: s.clock_jumps_24h,
        };
        v.health = api::health(&v, facts);
        v
    }

    fn clock_jumps_24h(&self, now_ms: u64) -> u64 {
        // Events are few; the newest 200 are enough to see a recent jump.
        let next = self.gw.buffer.stats().next_event_id;
        self.gw
            .buffer
            .events_after(next.checked_sub(201))
            .filter_map(Result::ok)
            .filter(|(_, e)| {
                e.kind == mrv_shared::event::EventKind::ClockJump
                    && now_ms.saturating_sub(e.time_ms) <= 86_400_000
            })
            .count() as u64
    }

    /// Signed reports as events (newest `limit`), from the report store.
    fn report_events(&self, limit: usize) -> Vec<EventView> {
        let Some(store) = self.gw.reports.as_ref() else {
            return Vec::new();
        };
        let Some(head) = store.head() else {
            return Vec::new();
        };
        let first = head.seq.saturating_sub(limit as u64 - 1).max(1);
        (first..=head.seq)
            .filter_map(|seq| store.meta(seq).ok())
            .map(|m| {
                let path = store.path(m.seq);
                let time_ms = std::fs::metadata(&path)
                    .and_then(|md| md.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(m.period.end_ms, |d| d.as_millis() as u64);
                EventView {
                    id: 0,
                    time_ms,
                    kind: "report_signed".into(),
                    device: None,
                    detail: format!(
                        "report #{} signed: period {} to {} UTC, {} readings",
                        m.seq,
                        page::utc(m.period.start_ms),
                        page::utc(m.period.end_ms),
                        m.readings
                    ),
                    recorded: false,
                }
            })
            .collect()
    }

    /// Records a failed upload attempt when the uploader's error count grew.
    fn watch_upload(&self, last_errors: &mut u64) {
        let Some(v) = self.gw.upload_status.as_ref().map(|p| p()) else {
            return;
        };
        let errors = v
            .get("errors")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if errors > *last_errors {
            let text = v
                .get("last_error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .or_else(|| {
                    v.get("rejected")
                        .filter(|r| !r.is_null())
                        .map(|r| r.to_string())
                })
                .unwrap_or_else(|| "upload attempt failed".into());
            let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            a.push_back(EventView {
                id: 0,
                time_ms: self.gw.clock.now_ms(),
                kind: "upload_failed".into(),
                device: None,
                detail: format!(
                    "{} failed attempt(s): {}",
                    errors - *last_errors,
                    super::bundle::redact_url_credentials(&text)
                ),
                recorded: false,
            });
            while a.len() > ACTIVITY_LEN {
                a.pop_front();
            }
        }
        *last_errors = errors;
    }

    /// Records refused MQTT logins when their counters grew: a device's (or
    /// anyone's) login at the embedded endpoint, or the gateway's own login
    /// at an external broker. Diagnostics-only entries (`recorded: false`):
    /// they are not evidence about the data, so they stay out of the signed
    /// reports. Never contains a password.
    fn watch_logins(&self, last: &mut LoginCounts) {
        use crate::endpoint::EndpointStats;
        use crate::ingest::stats::IngestStats;
        let endpoint = EndpointStats::get(&self.gw.endpoint.auth_failures);
        let broker = IngestStats::get(&self.gw.ingest.broker_logins_refused);
        let mut entries = Vec::new();
        if endpoint > last.endpoint {
            let newest = self
                .gw
                .endpoint
                .last_refused_login
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let what = newest.map_or_else(
                || "details not kept".to_string(),
                |l| {
                    format!(
                        "newest: client id {:?}, {} from {} (MQTT {}): {}",
                        l.client_id,
                        l.username
                            .as_deref()
                            .map_or_else(|| "no user name".to_string(), |u| format!("user {u:?}")),
                        l.peer,
                        l.version,
                        if l.username.is_some() {
                            "wrong user name or password"
                        } else {
                            "user name and password required"
                        }
                    )
                },
            );
            entries.push(format!(
                "{} MQTT login(s) refused at the gateway's endpoint; {what}",
                endpoint - last.endpoint
            ));
        }
        if broker > last.broker {
            let newest = self
                .gw
                .ingest
                .last_broker_login_refusal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "the MQTT broker refused the gateway's login".into());
            entries.push(format!("{} time(s): {newest}", broker - last.broker));
        }
        *last = LoginCounts { endpoint, broker };
        if entries.is_empty() {
            return;
        }
        let now = self.gw.clock.now_ms();
        let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        for detail in entries {
            a.push_back(EventView {
                id: 0,
                time_ms: now,
                kind: "mqtt_login_refused".into(),
                device: None,
                detail,
                recorded: false,
            });
        }
        while a.len() > ACTIVITY_LEN {
            a.pop_front();
        }
    }

    /// The newest `limit` events: those recorded in the buffer, merged with
    /// signed reports and failed upload attempts, in time order.
    async fn events(&self, limit: usize) -> Vec<EventView> {
        let ctx = self.clone();
        let limit = limit.clamp(1, 10_000);
        tokio::task::spawn_blocking(move || {
            let buffer = &ctx.gw.buffer;
            let next = buffer.stats().next_event_id;
            let after = next.checked_sub(limit as u64 + 1);
            let mut all: Vec<EventView> = buffer
                .events_after(after)
                .filter_map(Result::ok)
                .map(|(id, e)| EventView::new(id, &e))
                .collect();
            all.extend(ctx.report_events(limit.min(50)));
            all.extend(
                ctx.activity
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned(),
            );
            all.sort_by_key(|e| e.time_ms);
            let cut = all.len().saturating_sub(limit);
            all.split_off(cut)
        })
        .await
        .unwrap_or_default()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.cfg.token else {
            return true;
        };
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ")
        {
            return token.matches(t.trim());
        }
        let Some(session) = &self.session else {
            return false;
        };
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && super::config::Token::new(session.as_str()).matches(v))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// True when a `Host` header names this machine (`localhost`, a loopback
/// IP) or is absent (HTTP/1.0).
pub fn host_is_loopback(host: Option<&str>) -> bool {
    let Some(h) = host else {
        return true;
    };
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Headers on every answer: nothing cached (the pages show live state and
/// sometimes a login), no framing, no sniffing, and a content security
/// policy that lets the page load only what this gateway serves.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r
}

async fn require_token(State(ctx): State<DiagContext>, req: Request, next: Next) -> Response {
    harden(check_token(ctx, req, next).await)
}

async fn check_token(ctx: DiagContext, req: Request, next: Next) -> Response {
    // Without a token the page is only for this machine: a request naming
    // another host (DNS rebinding from a web page) is refused.
    if ctx.cfg.token.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !host_is_loopback(host) {
            return (
                StatusCode::FORBIDDEN,
                "this gateway's diagnostics answer only to 127.0.0.1 / localhost without a token\n",
            )
                .into_response();
        }
    }
    let path = req.uri().path();
    if path.starts_with("/assets/") || path == "/login" || ctx.authorized(req.headers()) {
        return next.run(req).await;
    }
    let mut resp = if path.starts_with("/api/") {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "missing or wrong token"})),
        )
            .into_response()
    } else if path == "/metrics" {
        (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response()
    } else {
        (StatusCode::UNAUTHORIZED, Html(page::login_page(false))).into_response()
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mrv-gateway\""),
    );
    resp
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form() -> Html<String> {
    Html(page::login_page(false))
}

async fn login(
    State(ctx): State<DiagContext>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    match (&ctx.cfg.token, &ctx.session) {
        (Some(t), Some(session)) if t.matches(form.token.trim()) => {
            let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        (None, _) => Redirect::to("/").into_response(),
        _ => (StatusCode::UNAUTHORIZED, Html(page::login_page(true))).into_response(),
    }
}

/// `?limit=N` of `/api/events` and `/api/logs` (clamped by the handler).
#[derive(Debug, serde::Deserialize)]
pub struct LimitQuery {
    /// Most entries to return.
    pub limit: Option<usize>,
}

/// `?range=1h|24h|7d` of the device page and `/api/devices/{id}`.
#[derive(Debug, serde::Deserialize)]
pub struct RangeQuery {
    /// A [`Range::code`]; anything else means the default range.
    pub range: Option<String>,
}

impl RangeQuery {
    /// The range asked for, or the default one.
    pub fn range(&self) -> Range {
        self.range
            .as_deref()
            .and_then(Range::parse)
            .unwrap_or_default()
    }
}

/// `?device=ID` of the quarantine page and `/api/quarantine`.
#[derive(Debug, serde::Deserialize)]
pub struct DeviceQuery {
    /// Show only this device's entries.
    pub device: Option<String>,
}

/// `?after_ms=T` of `/api/devices/{id}/tail`.
#[derive(Debug, serde::Deserialize)]
pub struct TailQuery {
    /// Only frames stored after this time (Unix ms).
    pub after_ms: Option<u64>,
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": what })),
    )
        .into_response()
}

fn parse_device(id: &str) -> Result<DeviceId, Box<Response>> {
    DeviceId::new(id).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({ "error": format!("bad device id: {e}") })),
            )
                .into_response(),
        )
    })
}

fn known(rows: &[DeviceRow], id: &DeviceId) -> bool {
    rows.iter().any(|r| r.id == id.as_str())
}

async fn overview(State(ctx): State<DiagContext>) -> Html<String> {
    let s = ctx.snapshot().await;
    let rows = ctx.rows(&s);
    let status = ctx.status(&s, &rows);
    let events = ctx.events(10).await;
    Html(page::overview(&status, &rows, &events))
}

async fn device_page(
    State(ctx): State<DiagContext>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let id = match parse_device(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let s = ctx.snapshot().await;
    let rows = ctx.rows(&s);
    if !known(&rows, &id) {
        return (
            StatusCode::NOT_FOUND,
            Html(format!("no device {}", page::esc(id.as_str()))),
        )
            .into_response();
    }
    let range = q.range();
    let d = ctx.with_inputs(&s, |i| api::device_detail(i, &id, range));
    Html(page::device_page(ctx.gw.config.site.id.as_str(), &d, range)).into_response()
}

async fn quarantine_page(
    State(ctx): State<DiagContext>,
    Query(q): Query<DeviceQuery>,
) -> Html<String> {
    let s = ctx.snapshot().await;
    let entries = api::quarantine_view(&s.quarantine, q.device.as_deref());
    Html(page::quarantine_page(
        ctx.gw.config.site.id.as_str(),
        &entries,
        q.device.as_deref(),
        ctx.gw.config.mqtt.quarantine_len,
    ))
}

async fn api_quarantine(
    State(ctx): State<DiagContext>,
    Query(q): Query<DeviceQuery>,
) -> axum::Json<Vec<api::QuarantineEntry>> {
    let s = ctx.snapshot().await;
    axum::Json(api::quarantine_view(&s.quarantine, q.device.as_deref()))
}

async fn events_page(State(ctx): State<DiagContext>) -> Html<String> {
    let ev = ctx.events(200).await;
    Html(page::events_page(ctx.gw.config.site.id.as_str(), &ev))
}

async fn logs_page(State(ctx): State<DiagContext>) -> Html<String> {
    Html(page::logs_page(
        ctx.gw.config.site.id.as_str(),
        &ctx.logs.tail(300),
    ))
}

async fn modbus_page(State(ctx): State<DiagContext>) -> Html<String> {
    let s = ctx.snapshot().await;
    let rows = ctx.rows(&s);
    let status = ctx.status(&s, &rows);
    let targets = super::probe::targets(&ctx.gw.config);
    Html(page::modbus_page(
        ctx.gw.config.site.id.as_str(),
        &status,
        &targets,
    ))
}

async fn api_status(State(ctx): State<DiagContext>) -> axum::Json<StatusView> {
    let s = ctx.snapshot().await;
    let rows = ctx.rows(&s);
    axum::Json(ctx.status(&s, &rows))
}

async fn api_devices(State(ctx): State<DiagContext>) -> axum::Json<Vec<DeviceRow>> {
    let s = ctx.snapshot().await;
    axum::Json(ctx.rows(&s))
}

async fn api_device(
    State(ctx): State<DiagContext>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let id = match parse_device(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let s = ctx.snapshot().await;
    if !known(&ctx.rows(&s), &id) {
        return not_found("no such device");
    }
    let range = q.range();
    axum::Json(ctx.with_inputs(&s, |i| api::device_detail(i, &id, range))).into_response()
}

async fn api_tail(
    State(ctx): State<DiagContext>,
    Path(id): Path<String>,
    Query(q): Query<TailQuery>,
) -> Response {
    let id = match parse_device(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let s = ctx.snapshot().await;
    let live = ctx.live.lock().unwrap_or_else(|p| p.into_inner());
    axum::Json(api::tail_view(
        &live,
        &s.quarantine,
        &id,
        q.after_ms.unwrap_or(0),
    ))
    .into_response()
}

async fn api_buffer(State(ctx): State<DiagContext>) -> axum::Json<api::BufferView> {
    let s = ctx.snapshot().await;
    axum::Json(api::buffer_view(&s.buffer, s.now_ms))
}

async fn api_uploads(State(ctx): State<DiagContext>) -> axum::Json<api::UploadsView> {
    axum::Json(ctx.uploads())
}

async fn api_events(
    State(ctx): State<DiagContext>,
    Query(q): Query<LimitQuery>,
) -> axum::Json<Vec<EventView>> {
    axum::Json(ctx.events(q.limit.unwrap_or(100)).await)
}

async fn api_logs(
    State(ctx): State<DiagContext>,
    Query(q): Query<LimitQuery>,
) -> axum::Json<api::LogsView> {
    axum::Json(ctx.logs.tail(q.limit.unwrap_or(200)))
}

async fn api_config(State(ctx): State<DiagContext>) -> axum::Json<ConfigView> {
    let path = ctx.gw.config.source.clone();
    let text = tokio::fs::read_to_string(&path)
        .await
        .unwrap_or_else(|e| format!("# cannot read {}: {e}\n", path.display()));
    axum::Json(ConfigView {
        path: path.display().to_string(),
        redacted: redact_config(&text),
    })
}

async fn api_probe(
    State(ctx): State<DiagContext>,
    axum::Json(req): axum::Json<ProbeRequest>,
) -> axum::Json<ProbeResult> {
    let dir = ctx
        .gw
        .config
        .source
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    axum::Json(super::probe::probe(&req, &dir, &ctx.gw.config).await)
}

/// Body of `POST /api/devices/{id}/give-up`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GiveUpRequest {
    /// Give up every missing seq up to and including this one.
    through: u64,
    /// Why (recorded in the event and every report that carries it).
    reason: String,
}

/// The one write the diagnostics API allows: an operator gives up a
/// device's missing frames (see `buffer::Buffer::give_up`). 200 with the
/// range given up; 409 when nothing below `through` is missing; 400 for a
/// bad device id or an empty reason.
async fn api_give_up(
    State(ctx): State<DiagContext>,
    Path(id): Path<String>,
    axum::Json(req): axum::Json<GiveUpRequest>,
) -> Response {
    let err = |code: StatusCode, msg: String| {
        (code, axum::Json(serde_json::json!({ "error": msg }))).into_response()
    };
    let device = match DeviceId::new(&id) {
        Ok(d) => d,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("device id {id:?}: {e}")),
    };
    let reason = req.reason.trim().to_string();
    if reason.is_empty() {
        return err(
            StatusCode::BAD_REQUEST,
            String::from("say why the frames are given up (\"reason\")"),
        );
    }
    let buffer = ctx.gw.buffer.clone();
    let now = ctx.gw.clock.now_ms();
    let why = format!("operator: {reason}");
    let d = device.clone();
    match tokio::task::spawn_blocking(move || buffer.give_up(&d, req.through, &why, now)).await {
        Ok(Ok(Some(r))) => axum::Json(serde_json::json!({
            "device": device,
            "given_up": { "first": r.first, "last": r.last },
        }))
        .into_response(),
        Ok(Ok(None)) => err(
            StatusCode::CONFLICT,
            format!(
                "nothing to give up: {device} has no missing frame at or below seq {}",
                req.through
            ),
        ),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics_text(State(ctx): State<DiagContext>) -> Response {
    let s = ctx.snapshot().await;
    let rows = ctx.rows(&s);
    let status = ctx.status(&s, &rows);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(&status, &rows),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        page::STYLE_CSS,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        page::APP_JS,
    )
        .into_response()
}

/// The router with every route and the token check.
pub fn router(ctx: DiagContext) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/devices/{id}", get(device_page))
        .route("/events", get(events_page))
        .route("/logs", get(logs_page))
        .route("/modbus", get(modbus_page))
        .route("/quarantine", get(quarantine_page))
        .route("/api/quarantine", get(api_quarantine))
        .route("/login", get(login_form).post(login))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(api_status))
        .route("/api/devices", get(api_devices))
        .route("/api/devices/{id}", get(api_device))
        .route("/api/devices/{id}/tail", get(api_tail))
        .route("/api/buffer", get(api_buffer))
        .route("/api/uploads", get(api_uploads))
        .route("/api/events", get(api_events))
        .route("/api/logs", get(api_logs))
        .route("/api/config", get(api_config))
        .route("/api/modbus/probe", post(api_probe))
        .route("/api/devices/{id}/give-up", post(api_give_up))
        .layer(middleware::from_fn_with_state(ctx.clone(), require_token))
        .with_state(ctx)
}

/// Binds the listener (port 0 picks a free port; read `local_addr`).
pub async fn bind(cfg: &ValidDiagnosticsConfig) -> Result<TcpListener, DiagnosticsError> {
    TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| DiagnosticsError::Bind {
            addr: cfg.listen,
            source,
        })
}

/// Serves on a bound listener until `shutdown` turns true. Also runs the
/// live feed that fills the charts, and registers the token and MQTT
/// passwords with the log ring so they never appear in a log line.
///
/// The live feed subscribes to the writer's broadcast when this function is
/// *called* (not when the future is first polled), so no frame stored after
/// the call is missed by the charts.
pub fn serve_on(
    listener: TcpListener,
    state: GatewayState,
    cfg: ValidDiagnosticsConfig,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = Result<(), DiagnosticsError>> + Send {
    let frames = state.stored_frames.subscribe();
    serve_subscribed(listener, state, cfg, shutdown, frames)
}

async fn serve_subscribed(
    listener: TcpListener,
    state: GatewayState,
    cfg: ValidDiagnosticsConfig,
    mut shutdown: watch::Receiver<bool>,
    frames: tokio::sync::broadcast::Receiver<crate::ingest::writer::StoredFrames>,
) -> Result<(), DiagnosticsError> {
    let logs = super::logs::global();
    logs.set_capacity(cfg.log_lines);
    if let Some(t) = &cfg.token {
        logs.register_secret(t.expose());
    }
    for u in &state.config.mqtt.users {
        logs.register_secret(&u.password);
    }
    if let Some((_, p)) = &state.config.mqtt.credentials {
        logs.register_secret(p);
    }
    let clock = state.clock.clone();
    let buffer = state.buffer.clone();
    let ctx = DiagContext::new(state, cfg, logs);
    // Charts survive a restart: refill from the buffer (in the background,
    // so the page answers at once), then record live frames, which the
    // subscription holds meanwhile.
    let live = ctx.live();
    let feed_shutdown = shutdown.clone();
    let feed = tokio::spawn(async move {
        let now = clock.now_ms();
        let l = live.clone();
        let refilled = tokio::task::spawn_blocking(move || {
            super::state::prefill(&l, &buffer, now, super::state::PREFILL_BATCHES)
        })
        .await
        .unwrap_or_default();
        if refilled.frames > 0 {
            tracing::info!(
                frames = refilled.frames,
                "diagnostics charts refilled from the buffer"
            );
        }
        run_live_feed(
            live,
            frames,
            refilled.newest_seq,
            move || clock.now_ms(),
            feed_shutdown,
        )
        .await;
    });
    let watcher = {
        let ctx = ctx.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut errors = 0u64;
            let mut logins = LoginCounts::default();
            ctx.watch_upload(&mut errors);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        ctx.watch_upload(&mut errors);
                        ctx.watch_logins(&mut logins);
                    }
                    _ = shutdown.changed() => if *shutdown.borrow() { break },
                }
            }
        })
    };
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(
        addr = %addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
        auth = ctx.cfg.token.is_some(),
        "diagnostics page listening"
    );
    let app = router(ctx);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .map_err(DiagnosticsError::Serve);
    feed.abort();
    watcher.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_host_headers_pass_without_a_token() {
        for h in [
            None,
            Some("127.0.0.1:8080"),
            Some("localhost:8080"),
            Some("LOCALHOST"),
            Some("[::1]:8080"),
            Some("127.0.0.2"),
        ] {
            assert!(host_is_loopback(h), "{h:?}");
        }
        for h in [
            Some("evil.example:8080"),
            Some("192.168.1.10:8080"),
            Some("localhost.evil.example"),
            Some("[fe80::1]:80"),
        ] {
            assert!(!host_is_loopback(h), "{h:?}");
        }
    }
}
