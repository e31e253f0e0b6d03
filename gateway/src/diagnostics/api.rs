//! The JSON API behind every diagnostics page: the view types (serialised
//! by the gateway, parsed back by the `status`/`devices` CLI) and the
//! functions that assemble them from a running gateway's state.
//!
//! Endpoints (all `GET` unless noted, all JSON, all behind the token when one
//! is configured):
//!
//! | path | body |
//! |---|---|
//! | `/api/status` | [`StatusView`]: site, buffer, ingest, uploads, Modbus, device counts, free disk space |
//! | `/api/devices` | `[`[`DeviceRow`]`]` |
//! | `/api/devices/{id}?range=1h\|24h\|7d` | [`DeviceDetail`]: the row plus each channel's points (1 h) or buckets (24 h, 7 d) |
//! | `/api/quarantine?device=` | `[`[`QuarantineEntry`]`]`: rejected payloads, hex and text, newest last |
//! | `/api/devices/{id}/tail?after_ms=` | [`TailView`]: stored frames and rejected payloads |
//! | `/api/buffer` | [`BufferView`] |
//! | `/api/uploads` | [`UploadsView`] |
//! | `/api/events?limit=` | `[`[`EventView`]`]`, newest last |
//! | `/api/logs?limit=` | `[`[`LogLine`]`]`, newest last |
//! | `/api/config` | [`ConfigView`]: the config file with secrets replaced |
//! | `POST /api/modbus/probe` | [`ProbeRequest`] -> [`ProbeResult`] |
//!
//! Values: every value stays an exact integer in its base unit (`value`,
//! `unit`), and each carries its `display` form (`58.43 %`) from
//! [`mrv_shared::display`] beside it.
//!
//! Invariant: no view carries a secret. Device public keys are shown only as
//! their key id; the config is redacted by [`super::bundle::redact_config`].

use super::config::ValidDiagnosticsConfig;
use super::logs::LogLine;
use super::state::{Bucket, LiveStore, NotKept, Point, Range, TailEntry};
use crate::buffer::{BufferStats, DeviceSummary};
use crate::config::GatewayConfig;
use crate::ingest::quarantine::Quarantined;
use crate::ingest::stats::IngestStats;
use crate::modbus::health::Health;
use crate::modbus::status::DeviceStatus as ModbusDeviceStatus;
use crate::report::store::ReportMeta;
use mrv_shared::event::Event;
use mrv_shared::ids::DeviceId;
use mrv_shared::reading::Quality;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Site identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    /// Site id.
    pub id: String,
    /// Name.
    pub name: String,
    /// JCM project reference.
    pub project: String,
    /// Methodology reference.
    pub methodology: String,
}

/// Device counts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    /// Devices known (registered or seen).
    pub total: usize,
    /// Reporting, good quality.
    pub ok: usize,
    /// Last frame older than the staleness threshold.
    pub stale: usize,
    /// Recent rejects, unusable values or Modbus errors.
    pub failing: usize,
    /// Registered but never heard from.
    pub silent: usize,
    /// Reporting, but some of its payloads were rejected recently, or some
    /// of its values unavailable (a Modbus device answering part of its map).
    #[serde(default)]
    pub degraded: usize,
}

/// Buffer summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferView {
    /// Frames not yet covered by a report (the depth).
    pub depth_frames: u64,
    /// Readings not yet covered by a report.
    pub unreported_readings: u64,
    /// Frames kept.
    pub frames: u64,
    /// Readings kept.
    pub readings: u64,
    /// Logical bytes kept (what the limit counts).
    pub bytes: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// The byte limit.
    pub max_bytes: u64,
    /// `bytes / max_bytes`, percent.
    pub fill_percent: f64,
    /// Receipt time of the oldest unreported frame, Unix ms.
    pub oldest_unreported_ms: Option<u64>,
    /// Its age, s.
    pub oldest_unreported_age_s: Option<u64>,
    /// New frames are refused: at the byte limit, or the file system is
    /// nearly full (then `alarm` says so).
    pub full: bool,
    /// Times the buffer became full.
    pub full_events: u64,
    /// Alarm text when full or above 90 %.
    pub alarm: Option<String>,
}

/// Ingest counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestView {
    /// MQTT publishes received.
    pub messages: u64,
    /// Frames stored.
    pub frames_stored: u64,
    /// Readings stored.
    pub readings_stored: u64,
    /// Duplicate frames.
    pub duplicates: u64,
    /// Frames refused with a full buffer.
    pub refused_buffer_full: u64,
    /// Group commits.
    pub commits: u64,
    /// Application acks published.
    pub acks_published: u64,
    /// Signatures verified.
    pub signatures_verified: u64,
    /// Rejected payloads by reason.
    pub rejects: BTreeMap<String, u64>,
    /// Rejected payloads in total.
    pub rejects_total: u64,
    /// Buffer writes that failed (I/O error, disk full).
    #[serde(default)]
    pub write_failures: u64,
    /// Times the buffer was reopened in-process after a failed write.
    #[serde(default)]
    pub buffer_reopens: u64,
    /// Frames refused (not acked) while the buffer was being reopened.
    #[serde(default)]
    pub refused_unavailable: u64,
    /// Third-party messages mapped to a frame (`[[mapping]]`).
    #[serde(default)]
    pub mapped_messages: u64,
    /// Third-party messages recognised as duplicates by their mapping.
    #[serde(default)]
    pub mapped_duplicates: u64,
    /// Retained messages an external broker replayed, ignored.
    #[serde(default)]
    pub retained_ignored: u64,
    /// LoRaWAN uplinks lost (fCnt jumps within an epoch, summed).
    #[serde(default)]
    pub lorawan_uplinks_lost: u64,
    /// LoRaWAN frame-counter epochs started (join, devAddr change, fCnt
    /// going backwards).
    #[serde(default)]
    pub lorawan_session_resets: u64,
    /// ChirpStack `log` events received.
    #[serde(default)]
    pub lorawan_logs: u64,
}

/// The MQTT side: the embedded endpoint's connections and refusals, or the
/// external broker's session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttView {
    /// `embedded` or `external`.
    pub mode: String,
    /// Device connections open now (embedded).
    pub connections_open: u64,
    /// Connections accepted since start (embedded).
    pub connections_accepted: u64,
    /// Connections closed at accept: `max_connections` reached (embedded).
    pub connections_refused_limit: u64,
    /// Logins refused (embedded).
    pub auth_failures: u64,
    /// Connections closed for garbage or malformed packets (embedded).
    pub malformed: u64,
    /// Connections closed for oversized packets (embedded).
    pub oversized: u64,
    /// Connections closed for other protocol violations (embedded).
    pub protocol_errors: u64,
    /// Publishes refused: topic not allowed for the credential (embedded).
    pub publish_not_authorized: u64,
    /// Subscriptions refused (embedded).
    pub subscribe_refused: u64,
    /// Keep-alive / connect timeouts (embedded).
    pub timeouts: u64,
    /// QoS 0 publishes (best effort, never acked) (embedded).
    pub qos0_received: u64,
    /// QoS 1 publishes (embedded).
    pub qos1_received: u64,
    /// QoS 2 publishes (embedded).
    pub qos2_received: u64,
    /// PUBACK/PUBREC sent, each after the durable outcome (embedded).
    pub pubacks_sent: u64,
    /// Publishes that waited for buffer space (embedded).
    pub waits_for_space: u64,
    /// Reconnects where the external broker had lost the gateway's session.
    pub broker_sessions_lost: u64,
    /// Connection attempts where the external broker refused the gateway's login.
    pub broker_logins_refused: u64,
}

/// Free space on the data directory's file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskView {
    /// The directory watched.
    pub path: String,
    /// Bytes free for the gateway (last sample).
    pub free_bytes: Option<u64>,
    /// Size of the file system.
    pub total_bytes: Option<u64>,
    /// `free / total`, percent.
    pub free_percent: Option<f64>,
    /// `ok`, `low` (alarm) or `critical` (new frames refused).
    pub level: String,
    /// Alarm threshold, bytes.
    pub warn_free_bytes: u64,
    /// Refusal threshold, bytes.
    pub min_free_bytes: u64,
    /// When the level last changed, Unix ms.
    pub since_ms: Option<u64>,
    /// Alarm text when low or critical.
    pub alarm: Option<String>,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
}

/// The disk view (pure).
pub fn disk_view(r: &crate::free_space::SpaceReport) -> DiskView {
    use crate::free_space::Level;
    let free_percent = r
        .sample
        .filter(|s| s.total_bytes > 0)
        .map(|s| (s.free_bytes as f64 * 1000.0 / s.total_bytes as f64).round() / 10.0);
    let free = r.sample.map(|s| s.free_bytes);
    let alarm = match r.level {
        Level::Ok => None,
        Level::Low => Some(format!(
            "disk space low: {} bytes free; new frames are refused below {}",
            free.unwrap_or(0),
            r.thresholds.refuse_below
        )),
        Level::Critical => Some(format!(
            "disk space CRITICAL: {} bytes free, below {}: new frames are refused (devices keep them)",
            free.unwrap_or(0),
            r.thresholds.refuse_below
        )),
    };
    DiskView {
        path: r.path.display().to_string(),
        free_bytes: free,
        total_bytes: r.sample.map(|s| s.total_bytes),
        free_percent,
        level: serde_json::to_value(r.level)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        warn_free_bytes: r.thresholds.warn_below,
        min_free_bytes: r.thresholds.refuse_below,
        since_ms: r.since_ms,
        alarm,
        error: r.error.clone(),
    }
}

/// Reports and uploads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadsView {
    /// A report store is attached.
    pub reports_configured: bool,
    /// Newest stored report.
    pub head_seq: Option<u64>,
    /// Its period end, Unix ms.
    pub head_period_end_ms: Option<u64>,
    /// Reports stored but not confirmed by the backend (the backlog).
    pub backlog: Option<u64>,
    /// Every report up to this seq is delivered.
    pub delivered_upto: Option<u64>,
    /// An uploader is attached.
    pub upload_configured: bool,
    /// The uploader's own status (last success, last error, next retry, ...)
    /// as it reports it.
    pub upload: Option<serde_json::Value>,
    /// The report task's failures and retries (e.g. the disk is full).
    #[serde(default)]
    pub report_task: Option<crate::report::retry::ReportTaskReport>,
    /// Alarm text while reports cannot be built or stored.
    #[serde(default)]
    pub report_alarm: Option<String>,
}

/// Modbus status of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModbusView {
    /// `up` (every value read), `degraded` (some), `down` (none); absent
    /// before the first poll.
    #[serde(default)]
    pub state: Option<String>,
    /// Since when in that state, Unix ms.
    #[serde(default)]
    pub state_since_ms: Option<u64>,
    /// Last poll, Unix ms.
    pub last_poll_ms: Option<u64>,
    /// Last poll that read every value, Unix ms.
    pub last_success_ms: Option<u64>,
    /// What is wrong now (the last poll's failure); `None` when its last
    /// poll had none.
    #[serde(default)]
    pub problem: Option<String>,
    /// The most recent failure seen (kept after recovery, with its time).
    pub last_error: Option<String>,
    /// When `last_error` happened, Unix ms.
    #[serde(default)]
    pub last_error_ms: Option<u64>,
    /// Values read in the last poll.
    #[serde(default)]
    pub values_good: usize,
    /// Values configured.
    #[serde(default)]
    pub values_total: usize,
    /// Values unavailable in the last poll.
    #[serde(default)]
    pub unavailable: Vec<String>,
    /// Polls done.
    pub polls: u64,
    /// Polls that read some but not all values.
    #[serde(default)]
    pub polls_degraded: u64,
    /// Polls that read no value.
    #[serde(default)]
    pub polls_down: u64,
    /// Polls with a failure, by the first failure's kind.
    pub errors: BTreeMap<String, u64>,
    /// Read requests per poll.
    pub requests_per_poll: usize,
}

impl From<ModbusDeviceStatus> for ModbusView {
    fn from(s: ModbusDeviceStatus) -> Self {
        Self {
            state: s.state.map(|h| h.name().to_string()),
            state_since_ms: s.state_since_ms,
            last_poll_ms: s.last_poll_ms,
            last_success_ms: s.last_success_ms,
            problem: s.problem,
            last_error: s.last_error,
            last_error_ms: s.last_error_ms,
            values_good: s.values_good,
            values_total: s.values_total,
            unavailable: s.unavailable,
            polls: s.polls,
            polls_degraded: s.polls_degraded,
            polls_down: s.polls_down,
            errors: s.errors,
            requests_per_poll: s.requests_per_poll,
        }
    }
}

/// `/api/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Site.
    pub site: SiteView,
    /// Gateway id.
    pub gateway: String,
    /// Gateway version.
    pub version: String,
    /// Gateway clock, Unix ms.
    pub now_ms: u64,
    /// Uptime of the diagnostics server, s.
    pub uptime_s: u64,
    /// Token required.
    pub auth: bool,
    /// Device counts.
    pub devices: DeviceCounts,
    /// Buffer.
    pub buffer: BufferView,
    /// Ingest.
    pub ingest: IngestView,
    /// MQTT endpoint or external broker.
    #[serde(default)]
    pub mqtt: MqttView,
    /// Reports and uploads.
    pub uploads: UploadsView,
    /// Modbus devices (absent when no poller is attached).
    pub modbus: Option<BTreeMap<String, ModbusView>>,
    /// Overall health: ingest, buffer, reports, upload, clock.
    #[serde(default)]
    pub health: HealthView,
    /// Free space on the data directory's file system.
    #[serde(default)]
    pub disk: Option<DiskView>,
    /// LoRaWAN devices (ChirpStack mappings): frame-counter session per
    /// devEui, by device (`docs/LORAWAN.md` §5).
    #[serde(default)]
    pub lorawan: Vec<crate::mapping::chirpstack::SessionView>,
    /// The diagnostics charts' memory: estimated bytes, budget
    /// (`diagnostics.chart_memory_bytes`), points and buckets kept and
    /// dropped.
    #[serde(default)]
    pub chart_memory: super::state::ChartMemoryStats,
    /// The third-party mappings' dedup memory: estimated bytes, budget,
    /// keys remembered, keys dropped for the budget before their window
    /// ended (`docs/MAPPING.md` §4).
    #[serde(default)]
    pub dedup_memory: crate::mapping::stage::DedupMemoryStats,
}

/// The latest value of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelValue {
    /// Channel id.
    pub channel: String,
    /// Quantity (snake_case).
    pub quantity: String,
    /// Base unit.
    pub unit: String,
    /// Value in base units.
    pub value: i64,
    /// How a person reads it (`58.43 %`, `on`), or `unavailable` when its
    /// quality makes it unusable.
    #[serde(default)]
    pub display: String,
    /// False when the quality flags make the value unusable.
    #[serde(default = "yes")]
    pub available: bool,
    /// Reading time, Unix ms.
    pub t_ms: u64,
    /// Quality flag names (empty = good).
    pub quality: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One row of the site overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    /// Device id.
    pub id: String,
    /// Kind (registry), or `unregistered`.
    pub kind: String,
    /// Serial number (registry).
    pub serial: String,
    /// `ok`, `degraded` (reporting, but payloads rejected recently, or some
    /// Modbus values unavailable), `stale`, `failing` or `silent`.
    pub status: String,
    /// Why it has that status.
    pub status_reason: String,
    /// Last frame receipt, Unix ms.
    pub last_received_ms: Option<u64>,
    /// Its age, s.
    pub age_s: Option<u64>,
    /// Highest contiguous durable seq (what the device was acked).
    pub acked_seq: u64,
    /// Frames kept.
    pub frames: u64,
    /// Readings kept.
    pub readings: u64,
    /// Missing sequence numbers (sum of gap lengths).
    pub missing_frames: u64,
    /// Quality flags of the last frame (union; empty = good).
    pub quality: Vec<String>,
    /// `verified`, `unsigned`, `gateway` (Modbus), `rejected` or `expected`.
    pub signature: String,
    /// Key id of the registered public key (never the key itself).
    pub key_id: Option<String>,
    /// Rejected payloads from this device in the staleness window.
    pub recent_rejects: u64,
    /// Rejected payloads naming this device since the gateway started.
    #[serde(default)]
    pub rejects: u64,
    /// The same by reason.
    #[serde(default)]
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Latest value per channel.
    pub values: Vec<ChannelValue>,
    /// What is wrong with the Modbus poll now, if polled by the gateway
    /// (`None` once a poll succeeds).
    pub modbus_error: Option<String>,
}

/// A channel's values over a chart range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSeries {
    /// Channel id.
    pub channel: String,
    /// Quantity.
    pub quantity: String,
    /// Base unit.
    pub unit: String,
    /// The unit values are displayed in at a typical size.
    #[serde(default)]
    pub display_unit: String,
    /// The range: `1h`, `24h` or `7d`.
    #[serde(default)]
    pub range: Range,
    /// Window start, Unix ms (the range's length before `to_ms`).
    #[serde(default)]
    pub from_ms: u64,
    /// Window end (now), Unix ms.
    #[serde(default)]
    pub to_ms: u64,
    /// Longest pause still drawn as a line, ms (longer is a gap).
    #[serde(default)]
    pub gap_ms: u64,
    /// The newest value as a person reads it.
    #[serde(default)]
    pub latest_display: Option<String>,
    /// Raw points, oldest first (range `1h`).
    pub points: Vec<Point>,
    /// Buckets, oldest first: `1h`: one-minute buckets before the oldest
    /// raw point kept; `24h`: ten minutes; `7d`: one hour.
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    /// Width of `buckets`, ms.
    #[serde(default)]
    pub bucket_ms: u64,
    /// Spans whose buckets were dropped for the chart memory budget
    /// (`diagnostics.chart_memory_bytes`): not kept, which is not a gap.
    #[serde(default)]
    pub not_kept: Vec<NotKept>,
}

/// One rejected payload (`/api/quarantine`, the quarantine page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// Gateway receipt time, Unix ms.
    pub received_ms: u64,
    /// MQTT topic.
    pub topic: String,
    /// Device, if it could be told.
    pub device: Option<String>,
    /// Reason label (as in `mrv_ingest_rejects_total{reason}`).
    pub reason: String,
    /// What was wrong.
    pub detail: String,
    /// Original payload length, bytes.
    pub len: usize,
    /// The kept bytes (at most 1024), lower-case hex.
    pub payload_hex: String,
    /// The kept bytes as text: UTF-8 where valid, `\xNN` for other bytes,
    /// control characters escaped.
    pub payload_text: String,
    /// True when the payload was longer than what is kept.
    pub truncated: bool,
}

/// One line of the health banner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthItem {
    /// `ingest`, `buffer`, `reports`, `upload` or `clock`.
    pub name: String,
    /// `ok`, `warn`, `fail` or `off` (not configured).
    pub status: String,
    /// One sentence: why.
    pub detail: String,
}

/// The overall health banner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// The worst status of the items (`off` counts as `ok`).
    pub overall: String,
    /// One item per part of the gateway.
    pub items: Vec<HealthItem>,
}

/// `/api/devices/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceDetail {
    /// The overview row.
    pub row: DeviceRow,
    /// Firmware of the last frame.
    pub firmware: Option<String>,
    /// Boot counter of the last frame.
    pub boot: Option<u32>,
    /// Channels with their points.
    pub channels: Vec<ChannelSeries>,
}

/// `/api/devices/{id}/tail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailView {
    /// Device id.
    pub device: String,
    /// Entries newer than the request's `after_ms`, oldest first.
    pub entries: Vec<TailEntry>,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// Event id in the buffer.
    pub id: u64,
    /// Time, Unix ms.
    pub time_ms: u64,
    /// Kind (snake_case).
    pub kind: String,
    /// Device.
    pub device: Option<String>,
    /// Detail.
    pub detail: String,
    /// True for events recorded in the buffer (and carried into reports);
    /// false for gateway activity shown beside them (`report_signed` from
    /// the report store, `upload_failed` seen by the diagnostics server).
    #[serde(default = "yes")]
    pub recorded: bool,
}

impl EventView {
    /// From a stored event.
    pub fn new(id: u64, e: &Event) -> Self {
        Self {
            id,
            time_ms: e.time_ms,
            kind: e.kind.name().to_string(),
            device: e.device.as_ref().map(|d| d.to_string()),
            detail: e.detail.clone(),
            recorded: true,
        }
    }
}

/// `/api/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// Config file path.
    pub path: String,
    /// Its text with every secret replaced by `<redacted>`.
    pub redacted: String,
}

/// `POST /api/modbus/probe`: read registers from a Modbus TCP device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    /// A configured Modbus TCP device: its address, unit and register map
    /// are used (`address` and `unit` are then ignored).
    #[serde(default)]
    pub device: Option<String>,
    /// `host:port` of the device.
    #[serde(default)]
    pub address: String,
    /// Unit id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// `holding` or `input`.
    #[serde(default = "default_table")]
    pub table: String,
    /// First register address (0-based).
    #[serde(default)]
    pub start: u16,
    /// Number of registers (0-125; 0 = decode only).
    #[serde(default)]
    pub count: u16,
    /// Name of a profile (`profiles/<name>.toml` beside the config, or a
    /// built-in one such as `sunspec`): the whole profile is read and
    /// decoded, after SunSpec discovery for SunSpec profiles.
    #[serde(default)]
    pub profile: Option<String>,
}

fn default_unit() -> u8 {
    1
}

fn default_table() -> String {
    "holding".into()
}

/// Answer of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Raw words read, or empty on failure.
    pub words: Vec<u16>,
    /// Decoded values of the profile or device map, one line each
    /// (`name  58.43 %  (5843 0.01%vol)`), as `modbus read --profile` prints.
    pub decoded: Vec<String>,
    /// The failure, if any (exception with its meaning, timeout, link).
    pub error: Option<String>,
    /// Round trip, ms.
    pub elapsed_ms: u64,
}

/// Everything a view needs, borrowed from a running gateway.
pub struct Inputs<'a> {
    /// Config.
    pub config: &'a GatewayConfig,
    /// Diagnostics settings.
    pub diag: &'a ValidDiagnosticsConfig,
    /// Buffer totals.
    pub buffer: &'a BufferStats,
    /// Buffer's per-device ledger.
    pub buffer_devices: &'a [DeviceSummary],
    /// Live values.
    pub live: &'a LiveStore,
    /// Rejected payloads, oldest first.
    pub quarantine: &'a [Quarantined],
    /// Rejected payloads since start by (device, reason).
    pub reject_counts: &'a BTreeMap<(Option<String>, &'static str), u64>,
    /// Modbus status, if pollers run.
    pub modbus: Option<&'a BTreeMap<DeviceId, ModbusDeviceStatus>>,
    /// Now, Unix ms.
    pub now_ms: u64,
}

/// The buffer summary (pure).
pub fn buffer_view(s: &BufferStats, now_ms: u64) -> BufferView {
    let fill = if s.max_bytes == 0 {
        0.0
    } else {
        s.bytes as f64 * 100.0 / s.max_bytes as f64
    };
    let alarm = if s.space_low {
        Some(
            "new frames are refused: the data directory's file system is nearly full \
             (see disk); they stay on the devices"
                .to_string(),
        )
    } else if s.full {
        Some(format!(
            "buffer FULL ({} of {} bytes): new frames are refused and stay on the devices; \
             reports must be delivered before space is freed",
            s.bytes, s.max_bytes
        ))
    } else if fill >= 90.0 {
        Some(format!("buffer {fill:.1} % full"))
    } else {
        None
    };
    BufferView {
        depth_frames: s.unreported_frames,
        unreported_readings: s.unreported_readings,
        frames: s.frames,
        readings: s.readings,
        bytes: s.bytes,
        disk_bytes: s.disk_bytes,
        max_bytes: s.max_bytes,
        fill_percent: (fill * 10.0).round() / 10.0,
        oldest_unreported_ms: s.oldest_unreported_ms,
        oldest_unreported_age_s: s
            .oldest_unreported_ms
            .map(|t| now_ms.saturating_sub(t) / 1000),
        full: s.full || s.space_low,
        full_events: s.full_events,
        alarm,
    }
}

/// The ingest counters.
pub fn ingest_view(s: &IngestStats) -> IngestView {
    let rejects: BTreeMap<String, u64> = s
        .rejects()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    IngestView {
        messages: IngestStats::get(&s.messages),
        frames_stored: IngestStats::get(&s.frames_stored),
        readings_stored: IngestStats::get(&s.readings_stored),
        duplicates: IngestStats::get(&s.duplicates),
        refused_buffer_full: IngestStats::get(&s.refused_buffer_full),
        commits: IngestStats::get(&s.commits),
        acks_published: IngestStats::get(&s.acks_published),
        signatures_verified: IngestStats::get(&s.signatures_verified),
        rejects_total: rejects.values().sum(),
        rejects,
        write_failures: IngestStats::get(&s.write_failures),
        buffer_reopens: IngestStats::get(&s.reopens),
        refused_unavailable: IngestStats::get(&s.refused_unavailable),
        mapped_messages: IngestStats::get(&s.mapped_messages),
        mapped_duplicates: IngestStats::get(&s.mapped_duplicates),
        retained_ignored: IngestStats::get(&s.retained_ignored),
        lorawan_uplinks_lost: IngestStats::get(&s.lorawan_uplinks_lost),
        lorawan_session_resets: IngestStats::get(&s.lorawan_session_resets),
        lorawan_logs: IngestStats::get(&s.lorawan_logs),
    }
}

/// The MQTT counters.
pub fn mqtt_view(
    mode: crate::config::BrokerMode,
    e: &crate::endpoint::EndpointStats,
    i: &IngestStats,
) -> MqttView {
    use crate::endpoint::EndpointStats as E;
    MqttView {
        mode: match mode {
            crate::config::BrokerMode::Embedded => "embedded",
            crate::config::BrokerMode::External => "external",
        }
        .into(),
        connections_open: E::get(&e.connections_open),
        connections_accepted: E::get(&e.connections_accepted),
        connections_refused_limit: E::get(&e.connections_refused_limit),
        auth_failures: E::get(&e.auth_failures),
        malformed: E::get(&e.malformed),
        oversized: E::get(&e.oversized),
        protocol_errors: E::get(&e.protocol_errors),
        publish_not_authorized: E::get(&e.publish_not_authorized),
        subscribe_refused: E::get(&e.subscribe_refused),
        timeouts: E::get(&e.timeouts),
        qos0_received: E::get(&e.qos0_received),
        qos1_received: E::get(&e.qos1_received),
        qos2_received: E::get(&e.qos2_received),
        pubacks_sent: E::get(&e.acks_sent),
        waits_for_space: E::get(&e.waits_for_space),
        broker_sessions_lost: IngestStats::get(&i.broker_sessions_lost),
        broker_logins_refused: IngestStats::get(&i.broker_logins_refused),
    }
}

/// Reports part of the uploads view.
pub fn uploads_view(
    head: Option<&ReportMeta>,
    backlog: Option<u64>,
    delivered_upto: Option<u64>,
    upload: Option<serde_json::Value>,
    reports_configured: bool,
) -> UploadsView {
    UploadsView {
        reports_configured,
        head_seq: head.map(|h| h.seq),
        head_period_end_ms: head.map(|h| h.period.end_ms),
        backlog,
        delivered_upto,
        upload_configured: upload.is_some(),
        upload: upload.map(scrub_urls),
        report_task: None,
        report_alarm: None,
    }
}

/// Replaces credentials inside URLs anywhere in a JSON value (the uploader
/// reports its backend URL, which may carry `user:pass@`).
pub fn scrub_urls(mut v: serde_json::Value) -> serde_json::Value {
    match &mut v {
        serde_json::Value::String(s) if s.contains("://") => {
            *s = super::bundle::redact_url_credentials(s);
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                *x = scrub_urls(std::mem::take(x));
            }
        }
        serde_json::Value::Object(m) => {
            for x in m.values_mut() {
                *x = scrub_urls(std::mem::take(x));
            }
        }
        _ => {}
    }
    v
}

fn quality_names(bits: u8) -> Vec<String> {
    Quality(bits).names().map(str::to_string).collect()
}

/// Every device row: registered devices first (config order), then devices
/// seen in the buffer or live store but not registered (pure).
pub fn device_rows(i: &Inputs<'_>) -> Vec<DeviceRow> {
    let mut ids: Vec<DeviceId> = i.config.devices.iter().map(|d| d.id.clone()).collect();
    let mut extra: Vec<DeviceId> = i
        .buffer_devices
        .iter()
        .map(|d| d.device.clone())
        .chain(i.live.devices().cloned())
        .chain(i.modbus.into_iter().flat_map(|m| m.keys().cloned()))
        .filter(|d| !ids.contains(d))
        .collect();
    extra.sort();
    extra.dedup();
    ids.extend(extra);
    ids.iter().map(|id| device_row(i, id)).collect()
}

/// A device whose payloads are rejected and that stored no good frame for
/// this long is `failing` (before: `degraded`).
pub const FAILING_AFTER_MS: u64 = 30_000;

/// One device's row (pure).
pub fn device_row(i: &Inputs<'_>, id: &DeviceId) -> DeviceRow {
    let info = i.config.devices.get(id);
    let summary = i.buffer_devices.iter().find(|d| &d.device == id);
    let last = i.live.last(id);
    let modbus = i.modbus.and_then(|m| m.get(id));
    let stale_ms = i.diag.stale_after.as_millis() as u64;
    let last_received_ms = match (summary.and_then(|s| s.last_received_ms), last) {
        (Some(a), Some(l)) => Some(a.max(l.received_ms)),
        (a, l) => a.or(l.map(|l| l.received_ms)),
    };
    let age_ms = last_received_ms.map(|t| i.now_ms.saturating_sub(t));
    let recent: Vec<&Quarantined> = i
        .quarantine
        .iter()
        .filter(|q| q.device.as_deref() == Some(id.as_str()))
        .filter(|q| i.now_ms.saturating_sub(q.received_ms) <= stale_ms)
        .collect();
    let last_reject = recent.iter().map(|q| q.received_ms).max();
    let signature_rejects = recent
        .iter()
        .any(|q| matches!(q.reason, "bad_signature" | "missing_signature"));
    let has_key = info.is_some_and(|d| d.public_key.is_some());
    let signature = if signature_rejects && last_reject >= last.map(|l| l.received_ms) {
        "rejected"
    } else if modbus.is_some() {
        "gateway"
    } else if has_key {
        match last {
            Some(l) if l.signed => "verified",
            Some(_) => "unsigned",
            None => "expected",
        }
    } else {
        "unsigned"
    };
    let quality_bits = last.map_or(0, |l| l.quality);
    let unusable = !Quality(quality_bits).is_usable();
    let modbus_state = modbus.and_then(|m| m.state);
    let modbus_failing = modbus_state == Some(Health::Down);
    let modbus_degraded = modbus_state == Some(Health::Degraded);
    // Failing: payloads rejected and no good frame since, for a while (a
    // device that alternates good and bad payloads is degraded, not failing).
    let rejects_after_last = last_reject.is_some_and(|r| {
        last.is_none_or(|l| {
            r > l.received_ms && i.now_ms.saturating_sub(l.received_ms) > FAILING_AFTER_MS
        })
    });
    let (status, reason) = if rejects_after_last {
        let q = recent
            .last()
            .expect("a reject exists when last_reject is set");
        (
            "failing",
            format!("payload rejected: {} ({})", q.reason, q.detail),
        )
    } else if modbus_failing {
        (
            "failing",
            format!(
                "Modbus: down: {}",
                modbus.and_then(|m| m.problem.clone()).unwrap_or_default()
            ),
        )
    } else if last_received_ms.is_none() {
        ("silent", "no frame received yet".to_string())
    } else if age_ms.is_some_and(|a| a > stale_ms) {
        (
            "stale",
            format!(
                "last frame {} s ago (threshold {} s)",
                age_ms.unwrap_or(0) / 1000,
                stale_ms / 1000
            ),
        )
    } else if let (true, Some(m)) = (modbus_degraded, modbus) {
        (
            "degraded",
            format!(
                "Modbus: {} of {} values; unavailable: {}{}",
                m.values_good,
                m.values_total,
                m.unavailable.join(", "),
                m.problem
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ),
        )
    } else if unusable && last.is_some() {
        (
            "failing",
            format!(
                "last values unusable: {}",
                quality_names(quality_bits).join(", ")
            ),
        )
    } else if let Some(q) = recent.last() {
        (
            "degraded",
            format!(
                "reporting, but {} payload(s) rejected in the last {} s; latest: {} ({})",
                recent.len(),
                stale_ms / 1000,
                q.reason,
                q.detail
            ),
        )
    } else {
        ("ok", "reporting".to_string())
    };
    let rejects_by_reason: BTreeMap<String, u64> = i
        .reject_counts
        .iter()
        .filter(|((d, _), _)| d.as_deref() == Some(id.as_str()))
        .map(|((_, r), n)| (r.to_string(), *n))
        .collect();
    let values = i
        .live
        .latest(id)
        .into_iter()
        .map(|(ch, q, p)| {
            let available = Quality(p.quality).is_usable();
            ChannelValue {
                channel: ch.to_string(),
                quantity: quantity_name(q),
                unit: q.unit().to_string(),
                value: p.value,
                display: if available {
                    mrv_shared::display::display(q, p.value).to_string()
                } else {
                    "unavailable".to_string()
                },
                available,
                t_ms: p.t_ms,
                quality: quality_names(p.quality),
            }
        })
        .collect();
    DeviceRow {
        id: id.to_string(),
        kind: info.map_or_else(
            || {
                if modbus.is_some() {
                    "modbus_meter".to_string()
                } else {
                    "unregistered".to_string()
                }
            },
            |d| quantity_like_name(&d.kind),
        ),
        serial: info.map(|d| d.serial.clone()).unwrap_or_default(),
        status: status.to_string(),
        status_reason: reason,
        last_received_ms,
        age_s: age_ms.map(|a| a / 1000),
        acked_seq: summary.map_or(0, |s| s.acked_seq),
        frames: summary.map_or(0, |s| s.frames),
        readings: summary.map_or(0, |s| s.readings),
        missing_frames: summary.map_or(0, |s| {
            s.gaps
                .iter()
                .map(|(a, b)| b.saturating_sub(*a).saturating_add(1))
                .sum()
        }),
        quality: quality_names(quality_bits),
        signature: signature.to_string(),
        key_id: info.and_then(|d| d.key_id()),
        recent_rejects: recent.len() as u64,
        rejects: rejects_by_reason.values().sum(),
        rejects_by_reason,
        values,
        modbus_error: modbus.and_then(|m| m.problem.clone()),
    }
}

/// Counts rows by status.
pub fn device_counts(rows: &[DeviceRow]) -> DeviceCounts {
    let mut c = DeviceCounts {
        total: rows.len(),
        ..DeviceCounts::default()
    };
    for r in rows {
        match r.status.as_str() {
            "ok" => c.ok += 1,
            "stale" => c.stale += 1,
            "failing" => c.failing += 1,
            "degraded" => c.degraded += 1,
            _ => c.silent += 1,
        }
    }
    c
}

/// The interval a device is expected to sample at: the report's
/// `sample_interval_ms` for it, else its Modbus poll interval.
pub fn expected_interval_ms(config: &GatewayConfig, id: &DeviceId) -> Option<u64> {
    config
        .report
        .as_ref()
        .and_then(|r| r.devices.get(id.as_str()))
        .and_then(|d| d.sample_interval_ms)
        .or_else(|| {
            config
                .modbus
                .devices
                .iter()
                .find(|d| &d.id == id)
                .map(|d| d.poll_interval.as_millis() as u64)
        })
}

/// A device's detail: row plus each channel over `range`.
pub fn device_detail(i: &Inputs<'_>, id: &DeviceId, range: Range) -> DeviceDetail {
    let last = i.live.last(id);
    let expected = expected_interval_ms(i.config, id);
    // Device clocks may run a little ahead of the gateway's: the window
    // ends at the newer of now and the newest point.
    let newest = i
        .live
        .latest(id)
        .iter()
        .map(|(_, _, p)| p.t_ms)
        .max()
        .unwrap_or(0);
    let to_ms = i.now_ms.max(newest);
    let from_ms = to_ms.saturating_sub(match range {
        Range::Hour => i.live.window_ms().min(Range::Hour.ms()),
        r => r.ms(),
    });
    DeviceDetail {
        row: device_row(i, id),
        firmware: last.map(|l| l.firmware.clone()),
        boot: last.map(|l| l.boot),
        channels: i
            .live
            .channels(id)
            .into_iter()
            .map(|(ch, s)| {
                let width = range.bucket_ms();
                let points: Vec<Point> = match range {
                    Range::Hour => s
                        .points
                        .iter()
                        .filter(|p| p.t_ms >= from_ms)
                        .copied()
                        .collect(),
                    _ => Vec::new(),
                };
                // The 1 h chart takes minute buckets only before the
                // oldest raw point kept.
                let raw_from = match range {
                    Range::Hour => s.points.front().map_or(u64::MAX, |p| p.t_ms),
                    _ => u64::MAX,
                };
                let buckets: Vec<Bucket> = s
                    .buckets(range)
                    .into_iter()
                    .filter(|b| b.t_ms + width > from_ms && b.t_ms < raw_from)
                    .collect();
                let chart_points = super::chart::series_points(range, &points, &buckets);
                let latest_display = s.points.back().map(|p| {
                    if Quality(p.quality).is_usable() {
                        mrv_shared::display::display(s.quantity, p.value).to_string()
                    } else {
                        "unavailable".to_string()
                    }
                });
                ChannelSeries {
                    channel: ch.to_string(),
                    quantity: quantity_name(s.quantity),
                    unit: s.quantity.unit().to_string(),
                    display_unit: mrv_shared::display::display_unit(s.quantity).to_string(),
                    range,
                    from_ms,
                    to_ms,
                    gap_ms: super::chart::gap_threshold_ms(expected, &chart_points),
                    latest_display,
                    points,
                    buckets,
                    bucket_ms: width,
                    not_kept: s
                        .not_kept(range)
                        .filter(|n| n.to_ms > from_ms)
                        .into_iter()
                        .collect(),
                }
            })
            .collect(),
    }
}

/// Text of a payload: UTF-8 where valid, `\xNN` for other bytes, control
/// characters (except newline and tab) as `\xNN` too.
pub fn payload_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\n' && c != '\t' {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The quarantine, optionally of one device, oldest first (pure).
pub fn quarantine_view(q: &[Quarantined], device: Option<&str>) -> Vec<QuarantineEntry> {
    q.iter()
        .filter(|e| device.is_none_or(|d| e.device.as_deref() == Some(d)))
        .map(|e| QuarantineEntry {
            received_ms: e.received_ms,
            topic: e.topic.clone(),
            device: e.device.clone(),
            reason: e.reason.to_string(),
            detail: e.detail.clone(),
            len: e.len,
            payload_hex: e.payload.iter().map(|b| format!("{b:02x}")).collect(),
            payload_text: payload_text(&e.payload),
            truncated: e.len > e.payload.len(),
        })
        .collect()
}

/// Facts the health banner needs beyond the status view.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthFacts {
    /// The MQTT ingest has subscribed at least once.
    pub ingest_subscribed: bool,
    /// Report period plus grace, ms, when reports are built.
    pub report_period_ms: Option<u64>,
    /// Clock jumps recorded in the last 24 h.
    pub clock_jumps_24h: u64,
}

fn item(name: &str, status: &str, detail: String) -> HealthItem {
    HealthItem {
        name: name.into(),
        status: status.into(),
        detail,
    }
}

/// The health banner (pure): one item per part, and the worst of them.
pub fn health(s: &StatusView, f: HealthFacts) -> HealthView {
    let mut items = Vec::new();
    let d = &s.devices;
    let i = &s.ingest;
    items.push(if !f.ingest_subscribed {
        item(
            "ingest",
            "fail",
            "not subscribed to the MQTT broker: no device data can arrive".into(),
        )
    } else if d.failing + d.degraded + d.stale > 0 {
        item(
            "ingest",
            "warn",
            format!(
                "{} failing, {} degraded, {} stale of {} devices; {} payloads rejected since start",
                d.failing, d.degraded, d.stale, d.total, i.rejects_total
            ),
        )
    } else {
        item(
            "ingest",
            "ok",
            format!(
                "{} frames stored, {} rejected since start",
                i.frames_stored, i.rejects_total
            ),
        )
    });
    let b = &s.buffer;
    items.push(match (&b.alarm, b.full) {
        (Some(a), true) => item("buffer", "fail", a.clone()),
        (Some(a), false) => item("buffer", "warn", a.clone()),
        (None, _) => item(
            "buffer",
            "ok",
            format!(
                "{:.1} % full, {} frames waiting for a report",
                b.fill_percent, b.depth_frames
            ),
        ),
    });
    let u = &s.uploads;
    items.push(match (u.reports_configured, f.report_period_ms) {
        (false, _) | (_, None) => item("reports", "off", "no [report] section".into()),
        (true, Some(period)) => match u.head_period_end_ms {
            Some(end) if s.now_ms.saturating_sub(end) > 2 * period => item(
                "reports",
                "warn",
                format!(
                    "newest report #{} ends {} ago (more than two periods)",
                    u.head_seq.unwrap_or(0),
                    super::page::age(s.now_ms.saturating_sub(end) / 1000)
                ),
            ),
            Some(_) => item(
                "reports",
                "ok",
                format!("newest report #{} signed", u.head_seq.unwrap_or(0)),
            ),
            None if s.uptime_s * 1000 > 2 * period => item(
                "reports",
                "warn",
                "no report signed yet, though two periods have passed".into(),
            ),
            None => item(
                "reports",
                "ok",
                "first report is signed when its period ends".into(),
            ),
        },
    });
    let field = |k: &str| {
        u.upload
            .as_ref()
            .and_then(|v| v.get(k))
            .filter(|v| !v.is_null())
    };
    items.push(if !u.upload_configured {
        item("upload", "off", "no backend configured".into())
    } else if let Some(r) = field("rejected") {
        item(
            "upload",
            "fail",
            format!("the backend refused a report: {r}"),
        )
    } else if let Some(a) = field("backlog_alarm") {
        item(
            "upload",
            "warn",
            a.as_str().map_or_else(|| a.to_string(), str::to_string),
        )
    } else if let Some(e) = field("last_error") {
        item(
            "upload",
            "warn",
            format!(
                "last attempt failed: {}",
                e.as_str().map_or_else(|| e.to_string(), str::to_string)
            ),
        )
    } else {
        item(
            "upload",
            "ok",
            format!(
                "delivered up to #{}, backlog {}",
                u.delivered_upto.unwrap_or(0),
                u.backlog.unwrap_or(0)
            ),
        )
    });
    // 2024-01-01: a gateway clock before this was never set.
    items.push(if s.now_ms < 1_704_067_200_000 {
        item(
            "clock",
            "fail",
            format!(
                "gateway clock reads {} UTC: not set",
                super::page::utc(s.now_ms)
            ),
        )
    } else if f.clock_jumps_24h > 0 {
        item(
            "clock",
            "warn",
            format!("{} clock jump(s) in the last 24 h", f.clock_jumps_24h),
        )
    } else {
        item("clock", "ok", format!("{} UTC", super::page::utc(s.now_ms)))
    });
    let rank = |st: &str| match st {
        "fail" => 2,
        "warn" => 1,
        _ => 0,
    };
    let overall = items
        .iter()
        .map(|i| i.status.as_str())
        .max_by_key(|s| rank(s))
        .map_or("ok", |s| if rank(s) == 0 { "ok" } else { s })
        .to_string();
    HealthView { overall, items }
}

/// Tail of a device: stored frames from the live store merged with the
/// rejected payloads from the quarantine, oldest first.
pub fn tail_view(
    live: &LiveStore,
    quarantine: &[Quarantined],
    id: &DeviceId,
    after_ms: u64,
) -> TailView {
    let mut entries = live.tail(id, after_ms);
    entries.extend(
        quarantine
            .iter()
            .filter(|q| q.device.as_deref() == Some(id.as_str()) && q.received_ms > after_ms)
            .map(|q| TailEntry {
                time_ms: q.received_ms,
                kind: "rejected".into(),
                summary: format!(
                    "{}: {} ({} bytes on {})",
                    q.reason, q.detail, q.len, q.topic
                ),
            }),
    );
    entries.sort_by_key(|e| e.time_ms);
    TailView {
        device: id.to_string(),
        entries,
    }
}

fn quantity_name(q: mrv_shared::quantity::Quantity) -> String {
    serde_json::to_value(q)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{q:?}"))
}

fn quantity_like_name<T: Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// `/api/logs` body.
pub type LogsView = Vec<LogLine>;

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(bytes: u64, full: bool) -> BufferStats {
        BufferStats {
            bytes,
            disk_bytes: bytes * 2,
            max_bytes: 1000,
            frames: 10,
            readings: 40,
            unreported_frames: 7,
            unreported_readings: 28,
            oldest_unreported_ms: Some(40_000),
            full,
            space_low: false,
            full_events: u64::from(full),
            next_event_id: 1,
            last_key: None,
            reported: None,
            delivered: None,
        }
    }

    #[test]
    fn a_full_buffer_raises_the_alarm_and_a_nearly_full_one_warns() {
        let v = buffer_view(&stats(1000, true), 100_000);
        assert!(v.full && v.alarm.as_deref().is_some_and(|a| a.contains("FULL")));
        assert_eq!(v.depth_frames, 7);
        assert_eq!(v.oldest_unreported_age_s, Some(60));
        let v = buffer_view(&stats(950, false), 100_000);
        assert_eq!(v.alarm.as_deref(), Some("buffer 95.0 % full"));
        assert!(buffer_view(&stats(100, false), 100_000).alarm.is_none());
    }
}
