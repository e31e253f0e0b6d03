//! The report builder: a pure function from (period, frames, events, device
//! registry, parameters, previous report head) to a [`Report`].
//!
//! Which frames belong to a period is decided by the caller (the I/O part
//! takes every unreported frame the gateway *received* before the period
//! end, in buffer order); the builder only shapes them:
//! - frames are sorted by (device, seq) and de-duplicated;
//! - a frame for another site, or a signed device's frame whose signature is
//!   missing or does not verify, is left out and becomes a
//!   `signature_rejected` / `frame_rejected` event (ingest rejects these
//!   already; this is the last line of defence, so a report never fails
//!   verification because of one frame);
//! - a frame whose first sample lies before the period is kept and flagged
//!   `late` (it was not in any earlier report: late data is never lost);
//! - a device that sent frames but is not registered gets a device record of
//!   kind `unregistered` (no credit, see `mrv_shared::report::calc`).
//!
//! Same input, same report: nothing here reads a clock or a file.

use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::SiteId;
use mrv_shared::methodology::awd::AwdState;
use mrv_shared::methodology::{CalcError, MethodologyKind, Params};
use mrv_shared::report::calc::calculate;
use mrv_shared::report::model::{
    ClockState, DeviceRecord, FrameRecord, Header, Period, Point, Readings, Report, SCHEMA_VERSION,
    Signing, readings_root,
};
use mrv_shared::report::series::{SeriesKey, compute_series};
use mrv_shared::report::{hex, jwk};
use mrv_shared::wire::Frame;
use mrv_shared::wire::signature::verify_frame;
use std::collections::BTreeMap;

/// A frame as read from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFrame {
    /// The frame.
    pub frame: Frame,
    /// Gateway receipt time (Unix ms).
    pub received_ms: u64,
}

/// Who signs and what the site is (constant for a gateway run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Site.
    pub site: SiteId,
    /// Project reference.
    pub project: String,
    /// Methodology reference text.
    pub methodology_ref: String,
    /// Gateway id.
    pub gateway: String,
    /// Gateway key id.
    pub kid: String,
}

/// Everything one report is built from.
#[derive(Debug, Clone)]
pub struct BuildInput<'a> {
    /// Site and signer.
    pub identity: &'a Identity,
    /// The period.
    pub period: Period,
    /// Sequence number of this report.
    pub seq: u64,
    /// Hex SHA-256 of the previous stored report (genesis hash for seq 1).
    pub prev_hash: String,
    /// Gateway clock state.
    pub clock: ClockState,
    /// Registered devices.
    pub devices: &'a [DeviceRecord],
    /// Frames of the period.
    pub frames: Vec<InputFrame>,
    /// Events of the period.
    pub events: Vec<Event>,
    /// Calculator.
    pub methodology: MethodologyKind,
    /// Parameters.
    pub params: &'a Params,
    /// Counter baselines from the previous report.
    pub baselines: BTreeMap<SeriesKey, Point>,
    /// AWD tube states from the previous report (rice AWD).
    pub awd_start: Option<BTreeMap<String, AwdState>>,
}

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The calculation failed (parameters, overflow).
    #[error("calculation: {0}")]
    Calc(#[from] CalcError),
}

/// The report id of `seq` for `gateway`.
pub fn report_id(gateway: &str, seq: u64) -> String {
    format!("{gateway}-{seq:012}")
}

/// Builds the report (see the module doc).
pub fn build(input: BuildInput<'_>) -> Result<Report, BuildError> {
    let BuildInput {
        identity,
        period,
        seq,
        prev_hash,
        clock,
        devices,
        mut frames,
        mut events,
        methodology,
        params,
        baselines,
        awd_start,
    } = input;
    let mut devices: Vec<DeviceRecord> = devices.to_vec();
    let keys: BTreeMap<_, _> = devices
        .iter()
        .filter_map(|d| match &d.signing {
            Signing::Ed25519 { x, .. } => {
                let bytes: [u8; 32] = jwk::unb64(x).ok()?.try_into().ok()?;
                Some((
                    d.id.clone(),
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok(),
                ))
            }
            Signing::Unsigned => None,
        })
        .collect();
    frames.sort_by(|a, b| (&a.frame.device, a.frame.seq).cmp(&(&b.frame.device, b.frame.seq)));
    frames.dedup_by(|b, a| a.frame.device == b.frame.device && a.frame.seq == b.frame.seq);
    let mut records = Vec::with_capacity(frames.len());
    for InputFrame { frame, received_ms } in frames {
        if frame.site != identity.site {
            events.push(Event {
                time_ms: received_ms,
                kind: EventKind::FrameRejected,
                device: Some(frame.device.clone()),
                detail: format!(
                    "frame {} is for site {}, left out of the report",
                    frame.seq, frame.site
                ),
            });
            continue;
        }
        if let Some(key) = keys.get(&frame.device) {
            let ok = key
                .as_ref()
                .is_some_and(|k| verify_frame(&frame, k).is_ok());
            if !ok {
                events.push(Event {
                    time_ms: received_ms,
                    kind: EventKind::SignatureRejected,
                    device: Some(frame.device.clone()),
                    detail: format!(
                        "frame {} has no valid device signature, left out of the report",
                        frame.seq
                    ),
                });
                continue;
            }
        }
        if !devices.iter().any(|d| d.id == frame.device) {
            devices.push(DeviceRecord {
                id: frame.device.clone(),
                kind: String::from("unregistered"),
                serial: String::new(),
                meter_class: String::new(),
                calibration: None,
                signing: Signing::Unsigned,
                sample_interval_ms: None,
                counter_modulus: None,
            });
        }
        let signed = keys.contains_key(&frame.device);
        let mut rec = FrameRecord {
            device: frame.device,
            seq: frame.seq,
            boot: frame.boot,
            firmware: frame.firmware,
            base_time_ms: frame.base_time_ms,
            received_ms,
            channels: frame.channels,
            samples: frame
                .samples
                .iter()
                .map(|s| (s.channel, s.offset_ms, s.value, s.quality.0))
                .collect(),
            sig: if signed {
                frame.signature.as_ref().map(|s| jwk::b64(s))
            } else {
                None
            },
            late: false,
        };
        rec.late = rec
            .samples
            .first()
            .is_some_and(|s| rec.sample_time_ms(s.1) < period.start_ms);
        records.push(rec);
    }
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    events.sort_by_key(|e| e.time_ms);
    let (count, root) = readings_root(&records);
    let series = compute_series(&records, &devices, &period, &baselines);
    let calculation = calculate(
        methodology,
        params,
        &records,
        &series,
        &devices,
        &period,
        awd_start.as_ref(),
    )?;
    Ok(Report {
        header: Header {
            schema: SCHEMA_VERSION,
            report_id: report_id(&identity.gateway, seq),
            site: identity.site.clone(),
            project: identity.project.clone(),
            methodology: identity.methodology_ref.clone(),
            gateway: identity.gateway.clone(),
            kid: identity.kid.clone(),
            period,
            seq,
            prev_hash,
            clock,
        },
        devices,
        series,
        readings: Readings {
            count,
            merkle_root: hex(&root),
            frames: records,
        },
        events,
        calculation,
    })
}
