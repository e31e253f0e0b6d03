//! The monitoring report, as signed (JSON, canonicalised by RFC 8785).
//!
//! The normative description, with byte layouts, rules and test vectors,
//! is `docs/REPORT-FORMAT.md`; this module is its implementation.
//!
//! ```text
//! Report (schema 2)
//!   header        schema, report_id, site, project, methodology, gateway, kid,
//!                 period [start_ms, end_ms), seq (gap-free per gateway),
//!                 prev_hash (hex SHA-256 of the previous report's stored JWS
//!                 bytes; 64 zeros for seq 1), clock {source, last_sync_ms, max_skew_ms}
//!   devices       id, kind, serial, meter_class, calibration, signing (device
//!                 key: public JWK x, or "unsigned"), sample_interval_ms,
//!                 counter_modulus
//!   continuity    per device: the seqs this report accounts for (after the
//!                 previous report's last), frames, ranges given up
//!   series        per (device, channel): unit, expected/received/usable counts,
//!                 first/last time, aggregates, counter deltas, gaps
//!   readings      count, merkle_root, frames (each frame's header fields,
//!                 samples as [channel, offset_ms, value, quality], device signature)
//!   events        gateway restarts, clock jumps, buffer full, devices offline
//!                 or back, frames given up, rejected frames ...
//!   calculations  per calculation: id, methodology, bindings (role -> device,
//!                 channel), parameters {value, unit, source}, inputs,
//!                 completeness per binding, exact RE/PE/ER, exclusions, treatment
//! ```
//!
//! Invariants: every number is an integer (base units of
//! [`crate::quantity`]; times are Unix ms); exact fractions are strings
//! (see [`crate::methodology::Ratio`]). Frames are sorted by
//! `(device, seq)`, samples keep their frame order, series are sorted by
//! `(device, channel)`, devices by id.
//!
//! Merkle leaves: one per sample, in frame order then sample order; the
//! leaf bytes are the JCS array
//! `[device, frame_seq, sample_index, channel, time_ms, value, quality]`
//! ([`reading_leaf`]), where `time_ms` is the frame base time plus the
//! sample offset, or the gateway receipt time for frames without a clock.

use crate::event::{Event, SeqRange};
use crate::ids::{ChannelId, DeviceId, SiteId};
use crate::methodology::awd::AwdState;
use crate::methodology::{MethodologyKind, Params, Role};
use crate::quantity::{Quantity, ValueKind};
use crate::reading::Channel;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 2;

/// `prev_hash` of the first report of a gateway.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// One signed monitoring report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Who, when, which chain position.
    pub header: Header,
    /// Devices that contributed (or were expected to).
    pub devices: Vec<DeviceRecord>,
    /// Per device, the frame seqs this report accounts for.
    pub continuity: Vec<DeviceContinuity>,
    /// Aggregates per (device, channel).
    pub series: Vec<Series>,
    /// The readings themselves, grouped by frame.
    pub readings: Readings,
    /// Events of the period.
    pub events: Vec<Event>,
    /// The emission-reduction calculations (one per methodology the site
    /// runs), sorted by id.
    pub calculations: Vec<Calculation>,
}

/// Which of a device's frame seqs a report accounts for (see
/// [`super::continuity`]). Every seq in `after_seq + 1 ..= last_seq` is
/// either a frame of the report or inside one of `given_up`; across a
/// gateway's chain, `after_seq` is the previous report's `last_seq` (0 for
/// a device's first appearance: numbering starts at 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceContinuity {
    /// The device.
    pub device: DeviceId,
    /// Last seq accounted for before this report (0: none; the device's
    /// first appearance in the chain).
    pub after_seq: u64,
    /// First seq this report accounts for (`None`: nothing new).
    pub first_seq: Option<u64>,
    /// Last seq accounted for after this report (= `after_seq` when nothing new).
    pub last_seq: u64,
    /// Frames of the device in this report.
    pub frames: u64,
    /// Seq ranges given up, each explained by a `frames_given_up` event of
    /// this report with the same device and range; ascending.
    pub given_up: Vec<SeqRange>,
}

/// Report header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// `<gateway>-<seq, 12 digits>`.
    pub report_id: String,
    /// The site.
    pub site: SiteId,
    /// Project reference (registry id).
    pub project: String,
    /// Methodology reference (e.g. `TH_AM001 ver01.0`).
    pub methodology: String,
    /// Gateway id.
    pub gateway: String,
    /// Key id of the gateway signing key (also in the JWS header).
    pub kid: String,
    /// Monitoring period.
    pub period: Period,
    /// Gap-free sequence number per gateway, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the previous report's stored bytes ([`GENESIS_PREV_HASH`] for seq 1).
    pub prev_hash: String,
    /// Gateway clock state over the period.
    pub clock: ClockState,
}

/// A half-open period `[start_ms, end_ms)` (Unix ms, UTC-aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// First millisecond in the period.
    pub start_ms: u64,
    /// First millisecond after the period.
    pub end_ms: u64,
}

impl Period {
    /// True when `t` lies in the period.
    pub fn contains(&self, t: u64) -> bool {
        self.start_ms <= t && t < self.end_ms
    }
    /// Length in ms.
    pub fn len_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// Gateway clock state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockState {
    /// Time source (`ntp`, `gps`, `rtc`, `unsynced`).
    pub source: String,
    /// Last successful synchronisation (Unix ms), if any.
    pub last_sync_ms: Option<u64>,
    /// Largest clock correction or skew seen in the period, ms.
    pub max_skew_ms: i64,
}

/// How a device's frames are authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Signing {
    /// Frames are signed by the device key: Ed25519 public key, base64url (JWK `x`).
    Ed25519 {
        /// Key id.
        kid: String,
        /// Public key, base64url without padding.
        x: String,
    },
    /// A third-party device that does not sign its frames.
    Unsigned,
}

/// A meter's calibration record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Certificate number.
    pub certificate: String,
    /// Date of calibration, `YYYY-MM-DD`.
    pub calibrated_on: String,
    /// Date the calibration expires, `YYYY-MM-DD` (exclusive).
    pub due_on: String,
}

/// A device as registered in the gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// Device id.
    pub id: DeviceId,
    /// Kind (`pv_meter`, `pump_controller`, `biogas_skid`, `water_tube`,
    /// ...; `unregistered` for a device missing from the config).
    pub kind: String,
    /// Serial number.
    pub serial: String,
    /// Meter accuracy class (e.g. `IEC 62053-21 class 1`).
    pub meter_class: String,
    /// Calibration, if the device is a calibrated meter.
    pub calibration: Option<Calibration>,
    /// Device key or `unsigned`.
    pub signing: Signing,
    /// Nominal interval between samples of each channel, ms (gap detection
    /// and expected counts); `None` when the device reports irregularly.
    pub sample_interval_ms: Option<u64>,
    /// Counter rollover modulus (e.g. 2^32) for counter channels, if known.
    pub counter_modulus: Option<u64>,
}

/// A time and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Unix ms.
    pub time_ms: u64,
    /// Value, base unit.
    pub value: i64,
}

/// A gap in a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    /// Last covered instant before the gap (or period start).
    pub start_ms: u64,
    /// First covered instant after the gap (or period end).
    pub end_ms: u64,
    /// `no_data` or `unusable_quality`.
    pub reason: String,
}

/// Counter aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterAggregate {
    /// Last usable value of the previous report (the start of the first step).
    pub baseline: Option<Point>,
    /// Last usable value in this report.
    pub last: Option<Point>,
    /// Sum of credited steps (both ends observed, no gap between, no reset).
    pub delta: i64,
    /// Sum of steps spanning a gap: measured, but not credited.
    pub gap_delta: i64,
    /// Steps where the counter went back without rollover (reset): no credit.
    pub resets: u32,
    /// Steps where the counter wrapped at its modulus.
    pub rollovers: u32,
}

/// Aggregates of one (device, channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Device.
    pub device: DeviceId,
    /// Channel.
    pub channel: ChannelId,
    /// Quantity.
    pub quantity: Quantity,
    /// Value kind.
    pub kind: ValueKind,
    /// Unit of every value.
    pub unit: String,
    /// Samples expected in the period (`None` without a nominal interval).
    pub expected: Option<u64>,
    /// Samples received (including late ones and unusable ones).
    pub received: u64,
    /// Samples whose quality allows use.
    pub usable: u64,
    /// Earliest sample time.
    pub first_ms: Option<u64>,
    /// Latest sample time.
    pub last_ms: Option<u64>,
    /// Sum of usable values (instant and delta series).
    pub sum: Option<i64>,
    /// Smallest usable value.
    pub min: Option<i64>,
    /// Largest usable value.
    pub max: Option<i64>,
    /// Counter aggregates (counter series).
    pub counter: Option<CounterAggregate>,
    /// Gaps inside the period (needs a nominal interval).
    pub gaps: Vec<Gap>,
}

/// One frame as carried in the report: everything needed to rebuild its
/// canonical binary bytes (see [`crate::wire::binary`]) and check the device
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameRecord {
    /// Device.
    pub device: DeviceId,
    /// Frame sequence number.
    pub seq: u64,
    /// Device boot counter.
    pub boot: u32,
    /// Firmware version.
    pub firmware: String,
    /// Device base time, if the device has a clock.
    pub base_time_ms: Option<u64>,
    /// Gateway receipt time.
    pub received_ms: u64,
    /// Channel table.
    pub channels: Vec<Channel>,
    /// Samples: `[channel index, offset_ms, value, quality]`.
    pub samples: Vec<(u8, u32, i64, u8)>,
    /// Device signature, base64url, if signed.
    pub sig: Option<String>,
    /// True when the frame's first sample lies before the period (arrived late).
    pub late: bool,
}

impl FrameRecord {
    /// Time of sample `i` (see the module doc).
    pub fn sample_time_ms(&self, offset_ms: u32) -> u64 {
        match self.base_time_ms {
            Some(t) => t.saturating_add(u64::from(offset_ms)),
            None => self.received_ms,
        }
    }
}

/// The period's readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readings {
    /// Number of samples over all frames (= Merkle leaves).
    pub count: u64,
    /// Hex RFC 6962 root over [`reading_leaf`] of every sample.
    pub merkle_root: String,
    /// Frames, sorted by (device, seq).
    pub frames: Vec<FrameRecord>,
}

/// An exact amount in tCO2e.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// Exact rational, `"n"` or `"n/d"` in lowest terms, tCO2e. This is the
    /// value; nothing in a report is rounded to whole tonnes (a crediting
    /// total rounds down once, over many reports).
    pub exact: String,
    /// The same to six decimals, rounded toward negative infinity, tCO2e
    /// (for reading; derived from `exact`).
    pub decimal: String,
}

/// Something left out of a calculation, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Device.
    pub device: DeviceId,
    /// `unregistered`, `calibration_expired`, `calibration_not_yet_valid`,
    /// `binding_series_mismatch`, `subtracted_input_missing`.
    pub reason: String,
}

/// One methodology input bound to one series. Ordered as reports sort
/// bindings: by role name (as a string), device, channel, group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// What the series is to the methodology.
    pub role: Role,
    /// Device.
    pub device: DeviceId,
    /// Channel of the device.
    pub channel: ChannelId,
    /// The quantity the role needs (and the series must have).
    pub quantity: Quantity,
    /// Pairing group (biogas digesters: the flow, CH4, temperature,
    /// pressure and flame of one digester share a group); `""` otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
}

impl Binding {
    fn sort_key(&self) -> (&str, &DeviceId, &ChannelId, &str) {
        (self.role.name(), &self.device, &self.channel, &self.group)
    }
}

impl PartialOrd for Binding {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Binding {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// How complete one bound series was over the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completeness {
    /// Role of the binding.
    pub role: Role,
    /// Device.
    pub device: DeviceId,
    /// Channel.
    pub channel: ChannelId,
    /// Samples expected (`None` without a nominal interval).
    pub expected: Option<u64>,
    /// Samples received.
    pub received: u64,
    /// Usable samples.
    pub usable: u64,
    /// Milliseconds of the period inside gaps (`None` without a nominal
    /// interval).
    pub gap_ms: Option<u64>,
}

/// One calculation block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calculation {
    /// Name of the calculation on this site (config key), e.g. `pv`.
    pub id: String,
    /// Calculator.
    pub methodology: MethodologyKind,
    /// Which series feed which input, sorted.
    pub bindings: Vec<Binding>,
    /// Every parameter, `{value, unit, source}`.
    pub parameters: Params,
    /// Named inputs the calculator used, exact (e.g. `re_energy_wh`).
    pub inputs: BTreeMap<String, String>,
    /// Per binding, how complete its series was (binding order).
    pub completeness: Vec<Completeness>,
    /// AWD tube states at period start, per `device/channel` (rice AWD only).
    pub awd_start: Option<BTreeMap<String, AwdState>>,
    /// AWD tube states at period end.
    pub awd_end: Option<BTreeMap<String, AwdState>>,
    /// Reference emissions RE_p.
    pub re: Amount,
    /// Project emissions PE_p.
    pub pe: Amount,
    /// Emission reductions ER_p = RE_p - PE_p, exact.
    pub er: Amount,
    /// Bound devices left out and why, sorted.
    pub excluded: Vec<Exclusion>,
    /// The conservative treatment of gaps applied, in words.
    pub treatment: String,
}

/// Leaf bytes of sample `index` of `frame` (see the module doc).
pub fn reading_leaf(frame: &FrameRecord, index: usize) -> Vec<u8> {
    let mut s = String::with_capacity(64);
    write_reading_leaf(&mut s, frame, index);
    s.into_bytes()
}

/// Appends the leaf bytes of sample `index` of `frame` to `s`.
pub fn write_reading_leaf(s: &mut String, frame: &FrameRecord, index: usize) {
    use core::fmt::Write;
    let (ch, offset, value, quality) = frame.samples[index];
    let channel = frame
        .channels
        .get(usize::from(ch))
        .map(|c| c.id.as_str())
        .unwrap_or("");
    s.push('[');
    super::canonical::write_string(s, frame.device.as_str());
    write!(s, ",{},{},", frame.seq, index).expect("writing to a String cannot fail");
    super::canonical::write_string(s, channel);
    write!(
        s,
        ",{},{},{}]",
        frame.sample_time_ms(offset),
        value,
        quality
    )
    .expect("writing to a String cannot fail");
}

/// RFC 6962 root over every sample of `frames` (leaves hashed in parallel
/// with the `std` feature).
pub fn readings_root(frames: &[FrameRecord]) -> (u64, super::merkle::Hash) {
    let per_frame = super::parallel::map(frames, |f| {
        let mut s = String::with_capacity(96);
        (0..f.samples.len())
            .map(|i| {
                s.clear();
                write_reading_leaf(&mut s, f, i);
                super::merkle::leaf_hash(s.as_bytes())
            })
            .collect::<Vec<_>>()
    });
    let hashes: Vec<super::merkle::Hash> = per_frame.into_iter().flatten().collect();
    (
        hashes.len() as u64,
        super::merkle::root_of_leaf_hashes(hashes),
    )
}

/// The canonical (RFC 8785) bytes of `report`, fast: the frames, which hold
/// nearly all the bytes, are written directly; the rest goes through the
/// generic [`super::canonical::to_canonical_vec`]. Same bytes as
/// `to_canonical_vec(report)` (checked by tests), several times faster for
/// large reports.
pub fn report_canonical(report: &Report) -> Result<Vec<u8>, super::canonical::CanonicalError> {
    use super::canonical::to_canonical_vec;
    const MARKER: &str = "\u{1}frames\u{1}";
    #[derive(Serialize)]
    struct ReadingsView<'a> {
        count: u64,
        merkle_root: &'a str,
        frames: &'static str,
    }
    #[derive(Serialize)]
    struct View<'a> {
        header: &'a Header,
        devices: &'a [DeviceRecord],
        continuity: &'a [DeviceContinuity],
        series: &'a [Series],
        readings: ReadingsView<'a>,
        events: &'a [Event],
        calculations: &'a [Calculation],
    }
    let rest = to_canonical_vec(&View {
        header: &report.header,
        devices: &report.devices,
        continuity: &report.continuity,
        series: &report.series,
        readings: ReadingsView {
            count: report.readings.count,
            merkle_root: &report.readings.merkle_root,
            frames: MARKER,
        },
        events: &report.events,
        calculations: &report.calculations,
    })?;
    let rest = String::from_utf8(rest).expect("canonical JSON is UTF-8");
    let needle = alloc::format!(
        "\"readings\":{{\"count\":{},\"frames\":\"\\u0001frames\\u0001\"",
        report.readings.count
    );
    let at = rest
        .find(&needle)
        .expect("the readings object is written exactly once, with this prefix");
    let marker_at = at + needle.len() - "\"\\u0001frames\\u0001\"".len();
    let frames = super::parallel::map(&report.readings.frames, |f| {
        let mut s = String::with_capacity(64 + f.samples.len() * 24);
        write_frame_canonical(&mut s, f);
        s
    });
    let total: usize = frames.iter().map(String::len).sum::<usize>() + frames.len() + rest.len();
    let mut out = String::with_capacity(total);
    out.push_str(&rest[..marker_at]);
    out.push('[');
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(f);
    }
    out.push(']');
    out.push_str(&rest[marker_at + "\"\\u0001frames\\u0001\"".len()..]);
    Ok(out.into_bytes())
}

fn value_kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::Instant => "instant",
        ValueKind::Counter => "counter",
        ValueKind::Delta => "delta",
    }
}

/// One frame record as JCS (members in UTF-16 order).
fn write_frame_canonical(s: &mut String, f: &FrameRecord) {
    use super::canonical::write_string;
    use core::fmt::Write;
    let ok = "writing to a String cannot fail";
    s.push_str("{\"base_time_ms\":");
    match f.base_time_ms {
        Some(t) => write!(s, "{t}").expect(ok),
        None => s.push_str("null"),
    }
    write!(s, ",\"boot\":{},\"channels\":[", f.boot).expect(ok);
    for (i, c) in f.channels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"id\":");
        write_string(s, c.id.as_str());
        s.push_str(",\"kind\":\"");
        s.push_str(value_kind_name(c.kind));
        s.push_str("\",\"quantity\":\"");
        s.push_str(c.quantity.name());
        s.push_str("\"}");
    }
    s.push_str("],\"device\":");
    write_string(s, f.device.as_str());
    s.push_str(",\"firmware\":");
    write_string(s, &f.firmware);
    write!(
        s,
        ",\"late\":{},\"received_ms\":{},\"samples\":[",
        f.late, f.received_ms
    )
    .expect(ok);
    for (i, (ch, off, v, q)) in f.samples.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write!(s, "[{ch},{off},{v},{q}]").expect(ok);
    }
    write!(s, "],\"seq\":{},\"sig\":", f.seq).expect(ok);
    match &f.sig {
        Some(sig) => write_string(s, sig),
        None => s.push_str("null"),
    }
    s.push('}');
}

/// Leaf index and RFC 6962 audit path of sample `sample` of frame `frame`,
/// so a single reading can be proven against `readings.merkle_root` with
/// [`super::merkle::verify_inclusion`] without handing over the others.
pub fn reading_proof(
    frames: &[FrameRecord],
    frame: usize,
    sample: usize,
) -> Option<(usize, Vec<super::merkle::Hash>)> {
    if sample >= frames.get(frame)?.samples.len() {
        return None;
    }
    let index = frames[..frame]
        .iter()
        .map(|f| f.samples.len())
        .sum::<usize>()
        + sample;
    let hashes: Vec<super::merkle::Hash> = frames
        .iter()
        .flat_map(|f| {
            (0..f.samples.len()).map(move |i| super::merkle::leaf_hash(&reading_leaf(f, i)))
        })
        .collect();
    Some((index, super::merkle::inclusion_proof(&hashes, index)))
}
