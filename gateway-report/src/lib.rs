//! # mrv-gateway-report: monitoring reports
//!
//! The gateway's report stage: closing periods, building, signing and
//! storing the signed report chain, from what the buffer holds. It takes
//! the device registry (`[[devices]]`: kinds, channels, calibrations) from
//! `mrv-gateway-ingest`'s config.
//!
//! - [`config`]: the `[report]` config section ([`config::ReportSection`]);
//! - [`period`]: UTC-aligned periods and which one is due (pure);
//! - [`builder`]: period + frames + events + registry + parameters +
//!   previous head -> `Report` (pure);
//! - [`signer`]: canonical JSON (RFC 8785) -> JWS compact Ed25519;
//! - [`store`]: `<data_dir>/reports/`, chain head, delivery state (uploader API);
//! - [`retry`]: the report task's failures, backoff and alarm state;
//! - [`synthetic`]: deterministic PV site data for demos, benchmarks, tests;
//! - [`clock_watch`]: wall-clock steps seen, and the report time every
//!   stamp and period close uses (holds a step until it persists);
//! - [`time_sync`]: the clock daemon's sync state for the report header;
//! - [`keys`]: the gateway's Ed25519 signing key files;
//! - this module: the I/O that ties them to the buffer:
//!   [`build_due_reports`] (synchronous, for tests and the demo) and
//!   [`run_report_task`] (the task the runtime spawns).
//!
//! Flow for each due period (crash-safe by construction):
//! 1. read the unreported frames that belong to the period (buffer order,
//!    after the head's cursor, see [`belongs_to`]) and the events after the
//!    head's last event id with time before the period end;
//! 2. build and sign the report (seq = head + 1, prev_hash = hash of head);
//! 3. store it under its seq (atomic write, fsync) with the cursor it covers;
//! 4. only then move the buffer's "reported" cursor.
//!
//! A crash after 3 and before 4 is repaired at the next call (the cursor is
//! moved to the head's); a crash before 3 leaves nothing, and the same
//! period is built again. A stored seq is never built twice.

pub mod builder;
pub mod clock_watch;
pub mod config;
pub mod keys;
pub mod period;
pub mod retry;
pub mod signer;
pub mod store;
pub mod synthetic;
pub mod time_sync;

use crate::keys::KeyError;
use builder::{BuildError, BuildInput, Identity, InputFrame};
use config::{CalculationConfig, ReportSection};
use ed25519_dalek::SigningKey;
use mrv_gateway_buffer::{Buffer, CursorName, FrameKey};
use mrv_gateway_ingest::config::DeviceRegistry;
use mrv_shared::clock::Clock;
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::DeviceId;
use mrv_shared::methodology::awd::AwdState;
use mrv_shared::report::Report;
use mrv_shared::report::canonical::CanonicalError;
use mrv_shared::report::continuity::positions;
use mrv_shared::report::jws::parse_compact;
use mrv_shared::report::model::{
    Calibration, ClockState, DeviceRecord, GENESIS_PREV_HASH, Period, Point, Signing,
};
use mrv_shared::report::series::{SeriesKey, next_baselines, stated_baselines};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use store::{CursorMeta, ReportMeta, ReportStore};

/// Why reports could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The buffer failed.
    #[error("buffer: {0}")]
    Buffer(#[from] mrv_gateway_buffer::StoreError),
    /// Building failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Canonical JSON failed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// The signing key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The previous stored report could not be read back.
    #[error("previous report {seq}: {why}")]
    Previous {
        /// Its seq.
        seq: u64,
        /// Why.
        why: String,
    },
}

/// What [`build_due_reports`] produced, per report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportInfo {
    /// Seq.
    pub seq: u64,
    /// Report id.
    pub report_id: String,
    /// Period.
    pub period: Period,
    /// Readings in it.
    pub readings: u64,
    /// Exact ER of each calculation, tCO2e, by calculation id.
    pub er: BTreeMap<String, String>,
    /// Stored file.
    pub path: PathBuf,
    /// Size of the stored JWS, bytes.
    pub bytes: u64,
}

/// Everything the report task needs. Cheap to clone.
#[derive(Clone)]
pub struct ReportContext {
    /// Site and signer identity.
    pub identity: Identity,
    /// `[report]` settings (validated).
    pub section: ReportSection,
    /// The calculations (validated against the devices and channels).
    pub calculations: Vec<CalculationConfig>,
    /// Device records for reports.
    pub devices: Vec<DeviceRecord>,
    /// Gateway signing key.
    pub signing_key: SigningKey,
    /// The buffer frames come from.
    pub buffer: Buffer,
    /// Where reports go.
    pub store: ReportStore,
    /// Time source for the task.
    pub clock: Arc<dyn Clock>,
    /// The clock daemon's latest state for the header's clock (`None`: not
    /// read; `last_sync_ms` stays null).
    pub time_sync: Option<crate::time_sync::TimeSyncStatus>,
}

impl std::fmt::Debug for ReportContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportContext")
            .field("identity", &self.identity)
            .field("store", &self.store.dir())
            .finish_non_exhaustive()
    }
}

/// Device records for reports from the registry and `[report.devices]`.
pub fn device_records(registry: &DeviceRegistry, section: &ReportSection) -> Vec<DeviceRecord> {
    registry
        .iter()
        .map(|d| {
            let extra = section
                .devices
                .get(d.id.as_str())
                .copied()
                .unwrap_or_default();
            DeviceRecord {
                id: d.id.clone(),
                kind: serde_json::to_value(d.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| String::from("other")),
                serial: d.serial.clone(),
                meter_class: d.meter_class.clone(),
                calibration: d.calibration.as_ref().map(|c| Calibration {
                    certificate: c.certificate.clone(),
                    calibrated_on: c.calibrated_on.clone(),
                    due_on: c.due.clone(),
                }),
                signing: match (d.public_key, d.key_id()) {
                    (Some(k), Some(kid)) => Signing::Ed25519 {
                        kid,
                        x: mrv_shared::report::jwk::b64(k.as_bytes()),
                    },
                    _ => Signing::Unsigned,
                },
                sample_interval_ms: extra.sample_interval_ms,
                counter_modulus: extra.counter_modulus,
            }
        })
        .collect()
}

fn key_of(c: CursorMeta) -> FrameKey {
    FrameKey {
        batch: c.batch,
        index: c.index,
    }
}

/// What the report after `head` starts from: counter baselines, AWD states
/// by calculation id, silent devices, device seq positions.
#[derive(Debug, Clone, Default)]
struct Carry {
    baselines: BTreeMap<SeriesKey, Point>,
    awd: BTreeMap<String, BTreeMap<String, AwdState>>,
    silent: BTreeSet<DeviceId>,
    positions: BTreeMap<DeviceId, u64>,
}

impl Carry {
    fn after(&self, report: &Report) -> Carry {
        Carry {
            baselines: next_baselines(&self.baselines, &report.series),
            awd: report
                .calculations
                .iter()
                .filter_map(|c| Some((c.id.clone(), c.awd_end.clone()?)))
                .collect(),
            silent: builder::silent_devices(report),
            positions: positions(&report.continuity),
        }
    }
}

fn carry_from(store: &ReportStore, head: Option<&ReportMeta>) -> Result<Carry, ReportError> {
    let Some(head) = head else {
        return Ok(Carry::default());
    };
    let bytes = store.read(head.seq)?;
    let prev = |why: String| ReportError::Previous { seq: head.seq, why };
    let jws = parse_compact(&bytes).map_err(|e| prev(e.to_string()))?;
    let report: Report = serde_json::from_slice(&jws.payload).map_err(|e| prev(e.to_string()))?;
    let start = Carry {
        baselines: stated_baselines(&report.series),
        ..Carry::default()
    };
    let mut carry = start.after(&report);
    if let Some(saved) = &head.next_baselines {
        carry.baselines = saved
            .iter()
            .map(|b| ((b.device.clone(), b.channel.clone()), b.point))
            .collect();
    }
    Ok(carry)
}

fn max_skew(events: &[Event]) -> i64 {
    events
        .iter()
        .filter(|e| e.kind == EventKind::ClockJump)
        .flat_map(|e| {
            e.detail
                .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                .filter_map(|t| t.parse::<i64>().ok())
                .map(i64::saturating_abs)
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// Whether a frame (next in buffer order) still belongs to `period`: it was
/// received before the period end, or within the grace after it while its
/// first sample (device time; receipt time without a device clock) lies
/// before the end. The first frame that does not belong ends the period's
/// frames, so the buffer cursor stays contiguous; frames of the period that
/// come later still go into the next report, flagged late.
pub fn belongs_to(
    frame: &mrv_shared::wire::Frame,
    received_ms: u64,
    period: &Period,
    grace_ms: u64,
) -> bool {
    if received_ms < period.end_ms {
        return true;
    }
    let first = frame
        .samples
        .first()
        .and_then(|s| frame.sample_time_ms(s))
        .unwrap_or(received_ms);
    received_ms < period.end_ms.saturating_add(grace_ms) && first < period.end_ms
}

/// Most reports one call builds (a gateway off for a long time catches up
/// over several calls).
pub const MAX_REPORTS_PER_CALL: usize = 1000;

/// Repairs a crash between storing a report and moving the buffer's
/// "reported" cursor: moves the cursor to what the newest stored report
/// covers. The runtime calls it before the uploader starts (whose
/// "delivered" cursor may not pass "reported"). Blocking.
pub fn repair_reported_cursor(ctx: &ReportContext) -> Result<(), ReportError> {
    if let Some(c) = ctx.store.head().and_then(|h| h.cursor) {
        ctx.buffer.set_cursor(CursorName::Reported, key_of(c))?;
    }
    Ok(())
}

/// Builds, signs and stores every report due at `now_ms` (see the module
/// doc for the crash-safety argument). Blocking: call it from
/// `spawn_blocking` in async code.
pub fn build_due_reports(ctx: &ReportContext, now_ms: u64) -> Result<Vec<ReportInfo>, ReportError> {
    let period_ms = ctx.section.period_ms();
    let grace_ms = ctx.section.grace_ms();
    let mut out = Vec::new();
    repair_reported_cursor(ctx)?;
    let mut head = ctx.store.head();
    let mut carry = carry_from(&ctx.store, head.as_ref())?;
    while out.len() < MAX_REPORTS_PER_CALL {
        let after = match &head {
            Some(h) => h.cursor.map(key_of),
            None => ctx.buffer.cursor(CursorName::Reported),
        };
        let first_ms = match &head {
            Some(_) => now_ms,
            None => ctx
                .buffer
                .scan(after)
                .find_map(Result::ok)
                .map_or(now_ms, |f| f.received_ms.min(now_ms)),
        };
        let Some(period) = period::next_due(
            head.as_ref().map(|h| h.period.end_ms),
            first_ms,
            now_ms,
            period_ms,
            grace_ms,
        ) else {
            break;
        };
        let mut frames = Vec::new();
        let mut events = Vec::new();
        let mut cursor = after;
        for item in ctx.buffer.scan(after) {
            match item {
                Ok(f) if belongs_to(&f.frame, f.received_ms, &period, grace_ms) => {
                    cursor = Some(f.key);
                    frames.push(InputFrame {
                        frame: f.frame,
                        received_ms: f.received_ms,
                    });
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "damaged buffer record skipped by the report builder");
                    events.push(Event {
                        time_ms: period.end_ms - 1,
                        kind: EventKind::FrameRejected,
                        device: None,
                        seqs: None,
                        detail: format!("damaged buffer record skipped: {e}"),
                    });
                }
            }
        }
        let mut last_event_id = head.as_ref().and_then(|h| h.last_event_id);
        for item in ctx.buffer.events_after(last_event_id) {
            let (id, ev) = item?;
            if ev.time_ms >= period.end_ms {
                break;
            }
            last_event_id = Some(id);
            events.push(ev);
        }
        let seq = head.as_ref().map_or(1, |h| h.seq + 1);
        let prev_hash = head
            .as_ref()
            .map_or_else(|| String::from(GENESIS_PREV_HASH), |h| h.hash.clone());
        let sync = ctx.time_sync.as_ref().and_then(|t| t.state());
        let (source, last_sync_ms) =
            crate::time_sync::header_clock(&ctx.section.clock_source, sync.as_ref());
        let report = builder::build(BuildInput {
            identity: &ctx.identity,
            period,
            seq,
            prev_hash,
            clock: ClockState {
                source,
                last_sync_ms,
                max_skew_ms: max_skew(&events),
            },
            devices: &ctx.devices,
            frames,
            events,
            calculations: &ctx.calculations,
            baselines: carry.baselines.clone(),
            awd_start: carry.awd.clone(),
            positions: carry.positions.clone(),
            silent_before: carry.silent.clone(),
        })?;
        let signed = signer::sign(&report, &ctx.identity.kid, &ctx.signing_key)?;
        let next = carry.after(&report);
        let meta = ReportMeta {
            seq,
            report_id: report.header.report_id.clone(),
            hash: store::hash_hex(&signed.hash),
            period,
            cursor: cursor.map(|k| CursorMeta {
                batch: k.batch,
                index: k.index,
            }),
            last_event_id,
            readings: report.readings.count,
            er: report
                .calculations
                .iter()
                .map(|c| (c.id.clone(), c.er.exact.clone()))
                .collect(),
            next_baselines: Some(
                next.baselines
                    .iter()
                    .map(|((device, channel), point)| store::BaselineMeta {
                        device: device.clone(),
                        channel: channel.clone(),
                        point: *point,
                    })
                    .collect(),
            ),
        };
        ctx.store.put(&meta, &signed.bytes)?;
        if let Some(k) = cursor
            && Some(k) != after
        {
            ctx.buffer.set_cursor(CursorName::Reported, k)?;
        }
        let er: Vec<String> = meta
            .er
            .iter()
            .map(|(k, v)| format!("{k} {v} tCO2e"))
            .collect();
        tracing::info!(seq, id = %meta.report_id, readings = meta.readings, er = %er.join(", "), "report signed and stored");
        carry = next;
        out.push(ReportInfo {
            seq,
            report_id: meta.report_id.clone(),
            period,
            readings: meta.readings,
            er: meta.er.clone(),
            path: ctx.store.path(seq),
            bytes: signed.bytes.len() as u64,
        });
        head = Some(meta);
    }
    Ok(out)
}

/// The report task: closes periods as they fall due (UTC boundaries plus
/// grace), until `shutdown` becomes true. Each round first builds what is
/// due, then checks `shutdown` (so a shutdown closes every period already
/// due), then waits for the next period close (at most a minute, so clock
/// corrections are noticed). Errors are retried with backoff (see [`retry`]).
pub async fn run_report_task(ctx: ReportContext, shutdown: tokio::sync::watch::Receiver<bool>) {
    run_report_task_notifying(ctx, shutdown, None).await;
}

/// As [`run_report_task`], and wakes `on_stored` (the uploader) whenever new
/// reports were stored, so they leave without waiting for its next poll.
pub async fn run_report_task_notifying(
    ctx: ReportContext,
    shutdown: tokio::sync::watch::Receiver<bool>,
    on_stored: Option<Arc<tokio::sync::Notify>>,
) {
    run_report_task_with_status(ctx, shutdown, on_stored, retry::ReportTaskStatus::default()).await;
}

/// As [`run_report_task_notifying`], publishing failures and retries in
/// `status`. A failed round is retried with backoff ([`retry`]), logged at
/// ERROR once per distinct error.
pub async fn run_report_task_with_status(
    ctx: ReportContext,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    on_stored: Option<Arc<tokio::sync::Notify>>,
    status: retry::ReportTaskStatus,
) {
    let ctx = Arc::new(ctx);
    let mut pacing = retry::RetryPacing::default();
    let mut last_error = String::new();
    loop {
        let now = ctx.clock.now_ms();
        let c = Arc::clone(&ctx);
        let failure = match tokio::task::spawn_blocking(move || build_due_reports(&c, now)).await {
            Ok(Ok(built)) => {
                if let (false, Some(n)) = (built.is_empty(), &on_stored) {
                    n.notify_one();
                }
                None
            }
            Ok(Err(e)) => Some(format!("building reports failed: {e}")),
            Err(e) => Some(format!("report builder panicked: {e}")),
        };
        if *shutdown.borrow() {
            break;
        }
        let wait = match failure {
            None => {
                if pacing.failures() > 0 {
                    tracing::info!(
                        after = pacing.failures(),
                        "reports are built and stored again"
                    );
                }
                pacing.on_success();
                last_error.clear();
                status.succeeded(ctx.clock.now_ms());
                let next = period::next_close_ms(
                    ctx.store.head().map(|h| h.period.end_ms),
                    ctx.clock.now_ms(),
                    ctx.section.period_ms(),
                    ctx.section.grace_ms(),
                );
                next.saturating_sub(ctx.clock.now_ms()).clamp(1000, 60_000)
            }
            Some(e) => {
                let wait = pacing.on_failure();
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                if e != last_error {
                    tracing::error!(error = %e, retry_in_s = wait.as_secs(), "reports cannot be built or stored; retrying with backoff");
                    last_error = e.clone();
                }
                let now = ctx.clock.now_ms();
                status.failed(e, pacing.failures(), now, now.saturating_add(wait_ms));
                wait_ms
            }
        };
        // `wait` is clock time; a time-compressed clock is waited on in
        // proportion (see mrv_shared::clock).
        tokio::select! {
            _ = tokio::time::sleep(ctx.clock.real_wait(wait)) => {}
            r = shutdown.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mrv_shared::ids::{ChannelId, SiteId};
    use mrv_shared::quantity::{Quantity, ValueKind};
    use mrv_shared::reading::{Channel, Quality, Sample};
    use mrv_shared::wire::Frame;

    fn frame(base: Option<u64>) -> Frame {
        Frame {
            site: SiteId::new("s").expect("valid"),
            device: DeviceId::new("d").expect("valid"),
            seq: 1,
            boot: 1,
            firmware: String::new(),
            base_time_ms: base,
            channels: vec![Channel {
                id: ChannelId::new("e").expect("valid"),
                quantity: Quantity::Energy,
                kind: ValueKind::Counter,
            }],
            samples: vec![Sample {
                channel: 0,
                offset_ms: 500,
                value: 1,
                quality: Quality::GOOD,
            }],
            signature: None,
        }
    }

    #[test]
    fn a_frame_belongs_to_the_period_it_was_received_in_or_measured_in_within_grace() {
        let p = Period {
            start_ms: 1000,
            end_ms: 2000,
        };
        // Received before the end: always (even with a device clock ahead).
        assert!(belongs_to(&frame(Some(5000)), 1999, &p, 100));
        // Received within the grace, measured before the end.
        assert!(belongs_to(&frame(Some(1400)), 2050, &p, 100));
        // Measured after the end, or received after the grace.
        assert!(!belongs_to(&frame(Some(1600)), 2050, &p, 100));
        assert!(!belongs_to(&frame(Some(1400)), 2100, &p, 100));
        // Without a device clock the receipt time decides.
        assert!(!belongs_to(&frame(None), 2050, &p, 100));
    }
}
