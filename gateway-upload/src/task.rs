//! The upload task: the thin async driver of [`UploadMachine`]. It reads
//! reports from the [`ReportStore`], sends them with the [`HttpUplink`],
//! feeds the classified answers to the machine and carries out its actions:
//!
//! - `MarkDelivered(n)`: `store.mark_delivered(n)` (durable) first, then the
//!   buffer's `Delivered` cursor to the last frame report `n` covers and its
//!   "events delivered" id (so readings and events are pruned only once
//!   every report covering them is delivered), then pruning: delivered
//!   reports whose period ended more than `keep_delivered` ago, and the
//!   buffer's delivered readings past its own retention. A crash between
//!   the steps is repaired at the next start (the cursor is moved again to
//!   match `delivered_upto`).
//! - `Alarm`: an error log line, the `alarms` counter and the `rejected`
//!   field of [`UploadStatus`] (what diagnostics show).
//! - Receipts in the answer: checked and kept, and the backend log's
//!   consistency checked ([`super::receipts`]); a receipt that does not
//!   check out or a log that is not consistent raises the `log_alarm`.
//!
//! Each request goes to the endpoint the machine names (failover between
//! `url` and `fallback_urls`).
//!
//! Status is published on a `watch` channel ([`UploadStatus`]), so
//! diagnostics and tests see every change without polling. Each round also
//! measures the backlog (reports, bytes, age of the oldest) for the
//! [`super::backlog`] alarm, whose events go to the buffer's event recorder.

use super::backlog::{BacklogLimits, BacklogSample, BacklogWatch};
use super::config::UploadConfig;
use super::http::{HttpError, HttpUplink, batch_body};
use super::machine::{Action, MachineConfig, Next, Rejection, UploadMachine};
use super::receipts::{ReceiptStore, Step};
use mrv_gateway_buffer::{Buffer, CursorName, FrameKey};
use mrv_gateway_report::store::{ReportStore, StoreError};
use mrv_shared::clock::Clock;
use mrv_shared::event::Event;
use mrv_shared::tlog::receipt::Receipt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Most report bytes (uncompressed) read into one request; a batch is cut
/// short there (at least one report is always sent).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Why a delivery could not be recorded locally.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The report store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The buffer failed.
    #[error("buffer: {0}")]
    Buffer(#[from] mrv_gateway_buffer::StoreError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// A refused report, as diagnostics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionStatus {
    /// The report seq blocking the chain.
    pub seq: u64,
    /// HTTP status.
    pub status: u16,
    /// The backend's reason.
    pub reason: String,
    /// Detail.
    pub detail: String,
    /// First refused at (Unix ms).
    pub since_ms: u64,
    /// Times refused.
    pub count: u64,
}

impl From<&Rejection> for RejectionStatus {
    fn from(r: &Rejection) -> Self {
        RejectionStatus {
            seq: r.seq,
            status: r.status,
            reason: r.reason.clone(),
            detail: r.detail.clone(),
            since_ms: r.since_ms,
            count: r.count,
        }
    }
}

/// What the uploader is doing (published on a `watch` channel).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UploadStatus {
    /// Backend base URL.
    pub url: String,
    /// Highest report seq the backend confirmed.
    pub delivered_upto: u64,
    /// Highest stored report seq.
    pub head: u64,
    /// Reports waiting for confirmation.
    pub backlog: u64,
    /// Bytes of the reports waiting (signed JWS files).
    pub backlog_bytes: u64,
    /// Period end of the oldest report waiting, Unix ms.
    pub oldest_waiting_end_ms: Option<u64>,
    /// How long ago that period ended, ms (0 when none waits).
    pub backlog_age_ms: u64,
    /// The backlog alarm's text while it is raised ([`super::backlog`]).
    pub backlog_alarm: Option<String>,
    /// The backlog alarm's limits (0: off).
    pub backlog_limits: BacklogLimits,
    /// Last time a report was confirmed (Unix ms).
    pub last_success_ms: Option<u64>,
    /// Last failure (cleared by progress).
    pub last_error: Option<String>,
    /// Next attempt not before (Unix ms), while backing off.
    pub next_retry_ms: Option<u64>,
    /// Consecutive transient failures.
    pub consecutive_failures: u32,
    /// The report the backend refused, blocking the chain (an alarm).
    pub rejected: Option<RejectionStatus>,
    /// Permanent refusals since start (alarms raised).
    pub alarms: u64,
    /// Upload requests sent.
    pub requests: u64,
    /// Failed upload attempts (transient failures and refusals).
    pub errors: u64,
    /// Reports confirmed since start.
    pub reports_confirmed: u64,
    /// Body bytes sent (gzip), all attempts.
    pub bytes_sent: u64,
    /// Uncompressed report bytes of those requests.
    pub raw_bytes: u64,
    /// Delivered reports pruned from the gateway since start.
    pub reports_pruned: u64,
    /// Index of the endpoint in use (0: `url`, then `fallback_urls`).
    pub endpoint: usize,
    /// Receipts checked and kept since start.
    pub receipts_kept: u64,
    /// Size of the backend log's latest checkpoint kept.
    pub log_size: Option<u64>,
    /// The backend's log misbehaved (a receipt that does not check out, a
    /// checkpoint not consistent with the one kept): an alarm, kept until
    /// restart.
    pub log_alarm: Option<String>,
}

/// Everything the upload task needs.
pub struct UploadContext {
    /// Validated `[upload]` settings.
    pub config: UploadConfig,
    /// Where the signed reports are.
    pub store: ReportStore,
    /// The buffer whose delivered cursor follows delivery (`None`: reports
    /// only, e.g. benchmarks).
    pub buffer: Option<Buffer>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Published status.
    pub status: watch::Sender<UploadStatus>,
    /// Notified by whoever stores new reports, to upload without waiting
    /// for the next poll.
    pub wake: Arc<Notify>,
    /// How often the store is checked for new reports when idle.
    pub poll_interval: Duration,
    /// Where backlog alarm events go (the buffer's event recorder);
    /// `None`: not recorded (logged and shown only).
    pub events: Option<mpsc::UnboundedSender<Event>>,
}

impl UploadContext {
    /// A context with a fresh status channel (its receiver is returned) and
    /// a 2 s poll interval.
    pub fn new(
        config: UploadConfig,
        store: ReportStore,
        buffer: Option<Buffer>,
        clock: Arc<dyn Clock>,
    ) -> (UploadContext, watch::Receiver<UploadStatus>) {
        let (tx, rx) = watch::channel(UploadStatus {
            url: config.url.clone(),
            backlog_limits: config.backlog_alarm,
            ..UploadStatus::default()
        });
        (
            UploadContext {
                config,
                store,
                buffer,
                clock,
                status: tx,
                wake: Arc::new(Notify::new()),
                poll_interval: Duration::from_secs(2),
                events: None,
            },
            rx,
        )
    }
}

/// Records delivery up to `upto` (durable), moves the buffer cursors, and
/// prunes. Returns the number of reports pruned. Blocking.
pub fn apply_delivery(
    store: &ReportStore,
    buffer: Option<&Buffer>,
    upto: u64,
    now_ms: u64,
    keep_delivered: Duration,
) -> Result<u64, UploadError> {
    if upto == 0 {
        return Ok(0);
    }
    store.mark_delivered(upto)?;
    if let Some(buffer) = buffer {
        let meta = store.meta(upto)?;
        if let Some(c) = meta.cursor {
            buffer.set_cursor(
                CursorName::Delivered,
                FrameKey {
                    batch: c.batch,
                    index: c.index,
                },
            )?;
        }
        if let Some(id) = meta.last_event_id {
            buffer.set_events_delivered(id)?;
        }
        buffer.prune(now_ms)?;
    }
    let keep_ms = u64::try_from(keep_delivered.as_millis()).unwrap_or(u64::MAX);
    Ok(store.prune(now_ms.saturating_sub(keep_ms))?)
}

fn log_alarm(ctx: &UploadContext, why: String) {
    tracing::error!(%why, "ALARM: the MRV backend's public log misbehaves; receipts and checkpoints kept so far are the evidence");
    ctx.status.send_modify(|s| {
        s.alarms += 1;
        s.log_alarm = Some(why);
    });
}

/// Checks and keeps the receipts of one answer, then brings the kept
/// checkpoint forward with a consistency proof from the same endpoint.
async fn keep_receipts(
    ctx: &UploadContext,
    uplink: &HttpUplink,
    receipts: &ReceiptStore,
    endpoint: usize,
    got: Vec<(u64, Receipt)>,
    sent: Vec<(u64, Vec<u8>)>,
) {
    let store = receipts.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (seq, r) in got {
            let Some((_, bytes)) = sent.iter().find(|(s, _)| *s == seq) else {
                continue;
            };
            out.push((seq, store.put(seq, &r, bytes).map(|cp| (cp, r.checkpoint))));
        }
        out
    })
    .await
    .expect("receipt checks do not panic");
    let mut newest: Option<(mrv_shared::tlog::checkpoint::Checkpoint, String)> = None;
    let mut kept = 0;
    for (seq, r) in checked {
        match r {
            Ok((cp, note)) => {
                kept += 1;
                if newest.as_ref().is_none_or(|(n, _)| cp.size > n.size) {
                    newest = Some((cp, note));
                }
            }
            Err(e) => log_alarm(
                ctx,
                format!("the receipt of report {seq} does not check out: {e}"),
            ),
        }
    }
    ctx.status.send_modify(|s| s.receipts_kept += kept);
    let Some((cp, note)) = newest else { return };
    let proof = match receipts.step(&cp) {
        Step::Nothing => return,
        Step::Fork => {
            return log_alarm(
                ctx,
                format!(
                    "the log forked: a checkpoint of size {} with another root than the one kept",
                    cp.size
                ),
            );
        }
        Step::KeepFirst => None,
        Step::Prove { old, new } => match uplink.consistency(endpoint, old, new).await {
            Ok(p) => Some(p),
            Err(e) => {
                // Asked again with the next answer's checkpoint.
                tracing::warn!(error = %e, old, new, "cannot fetch a consistency proof; will ask again");
                return;
            }
        },
    };
    let store = receipts.clone();
    let size = cp.size;
    let r = tokio::task::spawn_blocking(move || store.advance(&note, proof.as_ref()))
        .await
        .expect("receipt checks do not panic");
    match r {
        Ok(_) => ctx.status.send_modify(|s| {
            s.log_size = Some(s.log_size.unwrap_or(0).max(size));
        }),
        Err(super::receipts::ReceiptError::Log(e)) => log_alarm(
            ctx,
            format!("the log is not consistent with the checkpoint kept: {e}"),
        ),
        Err(e) => tracing::error!(error = %e, "cannot keep a checkpoint"),
    }
}

/// The reports waiting, measured for the backlog alarm: sizes and period
/// ends are read once per report and kept until it is delivered.
struct BacklogTracker {
    watch: BacklogWatch,
    /// seq -> (bytes, period end ms) of every report waiting.
    waiting: BTreeMap<u64, (u64, u64)>,
}

impl BacklogTracker {
    fn new(limits: BacklogLimits) -> BacklogTracker {
        BacklogTracker {
            watch: BacklogWatch::new(limits),
            waiting: BTreeMap::new(),
        }
    }

    /// Brings the measures up to date with `delivered_upto..=head`, feeds
    /// the alarm, records its events and publishes the figures.
    async fn observe(&mut self, ctx: &UploadContext, m: &UploadMachine) {
        let (delivered, head) = (m.delivered_upto(), m.delivered_upto() + m.backlog());
        self.waiting
            .retain(|&seq, _| seq > delivered && seq <= head);
        let first_missing = self
            .waiting
            .last_key_value()
            .map_or(delivered + 1, |(&s, _)| s + 1);
        if first_missing <= head {
            let store = ctx.store.clone();
            let read = blocking(move || {
                let mut out = Vec::new();
                for seq in first_missing.max(delivered + 1)..=head {
                    let bytes = std::fs::metadata(store.path(seq)).map_or(0, |m| m.len());
                    out.push((seq, (bytes, store.meta(seq)?.period.end_ms)));
                }
                Ok(out)
            })
            .await;
            match read {
                Ok(v) => self.waiting.extend(v),
                Err(e) => tracing::warn!(error = %e, "cannot measure the upload backlog"),
            }
        }
        let sample = BacklogSample {
            reports: m.backlog(),
            bytes: self.waiting.values().map(|v| v.0).sum(),
            oldest_end_ms: self.waiting.values().next().map(|v| v.1),
        };
        let now = ctx.clock.now_ms();
        if let Some(event) = self.watch.observe(sample, now) {
            if self.watch.alarmed() {
                tracing::error!(detail = %event.detail, "ALARM: the upload backlog is high; reports and their readings are kept until the backend confirms them");
            } else {
                tracing::info!(detail = %event.detail, "the upload backlog alarm is cleared");
            }
            if let Some(tx) = &ctx.events {
                let _ = tx.send(event);
            }
        }
        let alarm = self.watch.alarm_text(sample, now);
        ctx.status.send_if_modified(|s| {
            let before = s.clone();
            s.backlog_bytes = sample.bytes;
            s.oldest_waiting_end_ms = sample.oldest_end_ms;
            s.backlog_age_ms = sample.age_ms(now);
            s.backlog_alarm = alarm;
            *s != before
        });
    }
}

fn publish(ctx: &UploadContext, m: &UploadMachine) {
    ctx.status.send_if_modified(|s| {
        let before = s.clone();
        s.delivered_upto = m.delivered_upto();
        s.head = m.delivered_upto() + m.backlog();
        s.backlog = m.backlog();
        s.last_error = m.last_error().map(str::to_string);
        s.next_retry_ms = (m.backlog() > 0 && m.not_before_ms() > 0).then(|| m.not_before_ms());
        s.consecutive_failures = m.failures();
        s.rejected = m.rejected().map(RejectionStatus::from);
        *s != before
    });
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UploadError> + Send + 'static,
) -> Result<T, UploadError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("upload storage work does not panic")
}

/// Runs the uploader until `shutdown` turns true. Never gives up: local
/// errors are logged and retried; see the module doc for what each outcome
/// does.
pub async fn run_upload_task(ctx: UploadContext, mut shutdown: watch::Receiver<bool>) {
    let uplink = match HttpUplink::new(&ctx.config) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "upload disabled: the HTTP client cannot be built");
            ctx.status
                .send_modify(|s| s.last_error = Some(format!("upload disabled: {e}")));
            return;
        }
    };
    let cfg = MachineConfig {
        batch_size: ctx.config.batch_size,
        backoff_base_ms: ctx.config.backoff_base_ms,
        backoff_max_ms: ctx.config.backoff_max_ms,
        endpoints: uplink.bases().len(),
    };
    let receipts = {
        let (dir, key) = (ctx.store.dir().to_path_buf(), ctx.config.log_key.clone());
        match tokio::task::spawn_blocking(move || ReceiptStore::open(&dir, key)).await {
            Ok(Ok(r)) => {
                if r.key().is_none() {
                    tracing::warn!(
                        "no [upload] log_key: receipts are kept and their proofs checked, but checkpoint signatures are not"
                    );
                }
                ctx.status
                    .send_modify(|s| s.log_size = r.latest().map(|c| c.size));
                Some(r)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "ALARM: the kept receipts do not check out; receipts are not kept this run");
                ctx.status
                    .send_modify(|s| s.log_alarm = Some(format!("kept receipts: {e}")));
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "receipt store");
                None
            }
        }
    };
    let head = || ctx.store.head().map_or(0, |h| h.seq);
    let mut machine = UploadMachine::new(cfg, ctx.store.delivered_upto(), head());
    // Repair a crash between recording delivery and moving the cursor.
    {
        let (store, buffer, upto) = (
            ctx.store.clone(),
            ctx.buffer.clone(),
            ctx.store.delivered_upto(),
        );
        let (now, keep) = (ctx.clock.now_ms(), ctx.config.keep_delivered);
        if let Err(e) =
            blocking(move || apply_delivery(&store, buffer.as_ref(), upto, now, keep)).await
        {
            tracing::error!(error = %e, "cannot bring the buffer's delivered cursor up to date");
        }
    }
    let mut backlog = BacklogTracker::new(ctx.config.backlog_alarm);
    publish(&ctx, &machine);
    backlog.observe(&ctx, &machine).await;
    tracing::info!(url = %ctx.config.url, delivered_upto = machine.delivered_upto(), backlog = machine.backlog(), "uploader started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        machine.set_head(head());
        let now = ctx.clock.now_ms();
        let wait = match machine.next(now) {
            Next::Send(batch) => {
                let store = ctx.store.clone();
                let read = blocking(move || {
                    // At most MAX_BATCH_BYTES of reports in memory (always
                    // at least one); the rest goes in the next request.
                    let mut reports = Vec::with_capacity(batch.len());
                    let mut bytes = 0usize;
                    for seq in batch.from..=batch.to {
                        if bytes >= MAX_BATCH_BYTES {
                            break;
                        }
                        let r = store.read(seq)?;
                        bytes += r.len();
                        reports.push(r);
                    }
                    let last = batch.from + reports.len() as u64 - 1;
                    let key = format!(
                        "{}..{}",
                        store.meta(batch.from)?.report_id,
                        store.meta(last)?.report_id
                    );
                    Ok((reports, key, (batch.from..=last).collect::<Vec<u64>>()))
                })
                .await;
                let endpoint = machine.endpoint();
                let mut sent: Vec<(u64, Vec<u8>)> = Vec::new();
                let mut got_receipts: Vec<(u64, Receipt)> = Vec::new();
                let outcome = match read {
                    Ok((reports, key, seqs)) => {
                        let (body, raw) = batch_body(&reports);
                        ctx.status.send_modify(|s| {
                            s.requests += 1;
                            s.bytes_sent += body.len() as u64;
                            s.raw_bytes += raw;
                            s.endpoint = endpoint;
                            s.url = uplink.bases()[endpoint].clone();
                        });
                        let clock = ctx.clock.clone();
                        let timeout = ctx.config.request_timeout(raw);
                        let answer = tokio::select! {
                            a = uplink.send(endpoint, &seqs, &key, body, timeout, move || clock.now_ms()) => a,
                            _ = shutdown.changed() => break,
                        };
                        sent = seqs.into_iter().zip(reports).collect();
                        got_receipts = answer.receipts;
                        answer.outcome
                    }
                    Err(e) => {
                        tracing::error!(error = %e, from = batch.from, to = batch.to, "cannot read reports to upload");
                        super::classify::Outcome {
                            confirmed_upto: None,
                            verdict: super::classify::Verdict::Retry {
                                retry_after_ms: None,
                                why: format!("local report store: {e}"),
                            },
                        }
                    }
                };
                let before = machine.delivered_upto();
                let now = ctx.clock.now_ms();
                for action in machine.on_outcome(outcome, now, rand::random()) {
                    match action {
                        Action::MarkDelivered(n) => {
                            let (store, buffer, keep) = (
                                ctx.store.clone(),
                                ctx.buffer.clone(),
                                ctx.config.keep_delivered,
                            );
                            match blocking(move || {
                                apply_delivery(&store, buffer.as_ref(), n, now, keep)
                            })
                            .await
                            {
                                Ok(pruned) => ctx.status.send_modify(|s| {
                                    s.reports_confirmed += n - before;
                                    s.last_success_ms = Some(now);
                                    s.reports_pruned += pruned;
                                }),
                                // The backend has them; a restart re-sends
                                // and gets "duplicate": nothing is lost.
                                Err(e) => {
                                    tracing::error!(error = %e, upto = n, "delivery confirmed but not recorded locally")
                                }
                            }
                            tracing::debug!(upto = n, "reports delivered");
                        }
                        Action::Alarm(r) => {
                            tracing::error!(seq = r.seq, status = r.status, reason = %r.reason, detail = %r.detail,
                                "ALARM: the MRV backend refused a report; it is kept and the chain waits at it");
                            ctx.status.send_modify(|s| s.alarms += 1);
                        }
                        Action::AlarmCleared(seq) => {
                            tracing::warn!(
                                seq,
                                "the MRV backend accepted the previously refused report"
                            )
                        }
                        Action::RetryAt { at_ms, why } => {
                            ctx.status.send_modify(|s| s.errors += 1);
                            tracing::warn!(retry_in_ms = at_ms.saturating_sub(now), %why, "upload failed; will retry")
                        }
                    }
                }
                if let Some(r) = &receipts
                    && !got_receipts.is_empty()
                {
                    keep_receipts(&ctx, &uplink, r, endpoint, got_receipts, sent).await;
                }
                publish(&ctx, &machine);
                backlog.observe(&ctx, &machine).await;
                continue;
            }
            Next::WaitUntil(t) => {
                Duration::from_millis(t.saturating_sub(now)).min(ctx.poll_interval)
            }
            Next::Idle => ctx.poll_interval,
            Next::Busy => Duration::ZERO,
        };
        publish(&ctx, &machine);
        backlog.observe(&ctx, &machine).await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.wake.notified() => {}
            r = shutdown.changed() => if r.is_err() { break },
        }
    }
    tracing::info!(
        delivered_upto = machine.delivered_upto(),
        backlog = machine.backlog(),
        "uploader stopped"
    );
}
