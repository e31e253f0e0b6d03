//! The report builder: a pure function from (period, frames, events, device
//! registry, parameters, previous report head) to a [`Report`].
//!
//! Which frames belong to a period is decided by the caller (the I/O part
//! takes every unreported frame the gateway *received* before the period
//! end, in buffer order); the builder only shapes them:
//! - frames are sorted by (device, seq) and de-duplicated;
//! - a frame for another site, or a signed device's frame whose signature is
//!   missing or does not verify, is left out and becomes a
//!   `signature_rejected` / `frame_rejected` event plus a `frames_given_up`
//!   event for its seq (cause `left_out`; ingest rejects these already; this
//!   is the last line of defence, so a report never fails verification
//!   because of one frame);
//! - device continuity (`mrv_shared::report::continuity`): from each
//!   device's position after the previous report, a repeated frame is left
//!   out (with an event) and any hole becomes a `frames_given_up` event
//!   (cause `missing_from_buffer`), so the report states every device's
//!   seqs as one contiguous, fully explained range;
//! - a frame whose first sample lies before the period is kept and flagged
//!   `late` (it was not in any earlier report: late data is never lost);
//! - a device that sent frames but is not registered gets a device record of
//!   kind `unregistered` (no credit, see `mrv_shared::report::calc`);
//! - a registered device without frames in the period gets a
//!   `device_offline` event, and a `device_online` event when it sends
//!   again after such a period.
//!
//! Same input, same report: nothing here reads a clock or a file.

use super::config::CalculationConfig;
use mrv_shared::event::{Event, EventKind, SeqRange};
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::methodology::CalcError;
use mrv_shared::methodology::awd::AwdState;
use mrv_shared::report::calc::{CalculationSpec, calculate};
use mrv_shared::report::continuity::{ContinuityError, close_holes, derive};
use mrv_shared::report::model::{
    ClockState, DeviceRecord, FrameRecord, Header, Period, Point, Readings, Report, SCHEMA_VERSION,
    Signing, readings_root,
};
use mrv_shared::report::series::{SeriesKey, compute_series};
use mrv_shared::report::{hex, jwk};
use mrv_shared::wire::Frame;
use mrv_shared::wire::signature::verify_frame;
use std::collections::{BTreeMap, BTreeSet};

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
    /// The calculations to run.
    pub calculations: &'a [CalculationConfig],
    /// Counter baselines from the previous report.
    pub baselines: BTreeMap<SeriesKey, Point>,
    /// AWD tube states from the previous report, by calculation id.
    pub awd_start: BTreeMap<String, BTreeMap<String, AwdState>>,
    /// Each device's last accounted seq after the previous report.
    pub positions: BTreeMap<DeviceId, u64>,
    /// Registered devices that sent nothing in the previous report.
    pub silent_before: BTreeSet<DeviceId>,
}

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The calculation failed (parameters, overflow).
    #[error("calculation: {0}")]
    Calc(#[from] CalcError),
    /// The frames could not be made continuous (a bug: holes are closed
    /// before this check).
    #[error("continuity: {0}")]
    Continuity(#[from] ContinuityError),
}

/// Adds `device_offline` for every registered device without a frame in
/// the report (at the period start), and `device_online` for every device
/// that sends again after a report without its frames (at the receipt of
/// its first frame).
fn device_presence_events(
    devices: &[DeviceRecord],
    records: &[FrameRecord],
    silent_before: &BTreeSet<DeviceId>,
    period: &Period,
    events: &mut Vec<Event>,
) {
    let mut first_seen: BTreeMap<&DeviceId, u64> = BTreeMap::new();
    for r in records {
        let t = first_seen.entry(&r.device).or_insert(r.received_ms);
        *t = (*t).min(r.received_ms);
    }
    for d in devices.iter().filter(|d| d.kind != "unregistered") {
        match first_seen.get(&d.id) {
            None => events.push(Event {
                time_ms: period.start_ms,
                kind: EventKind::DeviceOffline,
                device: Some(d.id.clone()),
                seqs: None,
                detail: String::from("no frames received in this period"),
            }),
            Some(&t) if silent_before.contains(&d.id) => events.push(Event {
                time_ms: t,
                kind: EventKind::DeviceOnline,
                device: Some(d.id.clone()),
                seqs: None,
                detail: String::from("frames received again after a period without any"),
            }),
            Some(_) => {}
        }
    }
}

/// Registered devices that have no frame in `report` (the next report's
/// `silent_before`).
pub fn silent_devices(report: &Report) -> BTreeSet<DeviceId> {
    let seen: BTreeSet<&DeviceId> = report.readings.frames.iter().map(|f| &f.device).collect();
    report
        .devices
        .iter()
        .filter(|d| d.kind != "unregistered" && !seen.contains(&d.id))
        .map(|d| d.id.clone())
        .collect()
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
        calculations,
        baselines,
        awd_start,
        positions,
        silent_before,
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
    // Device signatures checked in parallel; `None` = device not signed.
    let sig_ok: Vec<Option<bool>> = mrv_shared::report::parallel::map(&frames, |f| {
        keys.get(&f.frame.device).map(|key| {
            key.as_ref()
                .is_some_and(|k| verify_frame(&f.frame, k).is_ok())
        })
    });
    let mut records = Vec::with_capacity(frames.len());
    let clamp = |t: u64| t.clamp(period.start_ms, period.end_ms - 1);
    let left_out = |events: &mut Vec<Event>, frame: &mrv_shared::wire::Frame, t: u64, why: &str| {
        events.push(Event {
            time_ms: clamp(t),
            kind: EventKind::FramesGivenUp,
            device: Some(frame.device.clone()),
            seqs: Some(SeqRange {
                first: frame.seq,
                last: frame.seq,
            }),
            detail: format!("left_out: frame {} {why}", frame.seq),
        });
    };
    for (InputFrame { frame, received_ms }, sig_ok) in frames.into_iter().zip(sig_ok) {
        if frame.site != identity.site {
            events.push(Event {
                time_ms: clamp(received_ms),
                kind: EventKind::FrameRejected,
                device: Some(frame.device.clone()),
                seqs: None,
                detail: format!(
                    "frame {} is for site {}, left out of the report",
                    frame.seq, frame.site
                ),
            });
            left_out(&mut events, &frame, received_ms, "is for another site");
            continue;
        }
        if let Some(ok) = sig_ok
            && !ok
        {
            events.push(Event {
                time_ms: clamp(received_ms),
                kind: EventKind::SignatureRejected,
                device: Some(frame.device.clone()),
                seqs: None,
                detail: format!(
                    "frame {} has no valid device signature, left out of the report",
                    frame.seq
                ),
            });
            left_out(
                &mut events,
                &frame,
                received_ms,
                "has no valid device signature",
            );
            continue;
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
    let records = close_holes(
        &positions,
        records,
        &mut events,
        period.start_ms,
        period.end_ms,
    );
    device_presence_events(&devices, &records, &silent_before, &period, &mut events);
    events.sort_by_key(|e| e.time_ms);
    let continuity = derive(&positions, &records, &events)?;
    let (count, root) = readings_root(&records);
    let series = compute_series(&records, &devices, &period, &baselines);
    let mut calcs = Vec::with_capacity(calculations.len());
    for c in calculations {
        calcs.push(calculate(
            CalculationSpec {
                id: &c.id,
                methodology: c.methodology,
                bindings: &c.bindings,
                params: &c.params,
            },
            &records,
            &series,
            &devices,
            &period,
            awd_start.get(&c.id),
        )?);
    }
    calcs.sort_by(|a, b| a.id.cmp(&b.id));
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
        continuity,
        series,
        readings: Readings {
            count,
            merkle_root: hex(&root),
            frames: records,
        },
        events,
        calculations: calcs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::sign;
    use crate::synthetic::{PvSite, device_key, pv_calculation, pv_devices, pv_frames, pv_trust};
    use mrv_shared::report::jwk::Jwk;
    use mrv_shared::report::model::GENESIS_PREV_HASH;
    use mrv_shared::report::{DeviceTrust, KeySet, ReportError as VerifyError, verify_report};
    use std::path::PathBuf;

    /// 2025-11-26T00:00:00Z.
    const T0: u64 = 1_764_115_200_000;
    const SITE: PvSite = PvSite {
        devices: 3,
        interval_ms: 1000,
        samples_per_frame: 60,
        wh_per_sample: 2,
        epoch_ms: T0,
    };

    fn gateway_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    use ed25519_dalek::SigningKey;

    fn identity() -> Identity {
        Identity {
            site: SiteId::new("th-solar-01").expect("valid"),
            project: String::from("JCM-TH-0042"),
            methodology_ref: String::from("TH_AM001 ver01.0"),
            gateway: String::from("gw-th-01"),
            kid: String::from("gw-th-01-2025"),
        }
    }

    fn input<'a>(
        id: &'a Identity,
        devices: &'a [DeviceRecord],
        calculations: &'a [CalculationConfig],
        period: Period,
        frames: Vec<InputFrame>,
    ) -> BuildInput<'a> {
        BuildInput {
            identity: id,
            period,
            seq: 1,
            prev_hash: String::from(GENESIS_PREV_HASH),
            clock: ClockState {
                source: String::from("ntp"),
                last_sync_ms: Some(T0 - 5000),
                max_skew_ms: 12,
            },
            devices,
            frames,
            events: vec![],
            calculations,
            baselines: BTreeMap::new(),
            awd_start: BTreeMap::new(),
            positions: BTreeMap::new(),
            silent_before: BTreeSet::new(),
        }
    }

    fn keys() -> KeySet {
        let mut k = KeySet::new();
        k.insert("gw-th-01-2025", gateway_key().verifying_key());
        k
    }

    #[test]
    fn a_built_and_signed_report_verifies_and_counts_every_reading() {
        let id = identity();
        let devices = pv_devices(&SITE);
        let calcs = [pv_calculation(&SITE)];
        let period = Period {
            start_ms: T0,
            end_ms: T0 + 600_000,
        };
        let frames = pv_frames(&SITE, &id.site, period);
        let report = build(input(&id, &devices, &calcs, period, frames)).expect("builds");
        assert_eq!(report.readings.count, 3 * 600);
        assert_eq!(report.readings.frames.len(), 3 * 10);
        assert_eq!(report.series.len(), 3);
        let s = &report.series[0];
        assert_eq!((s.expected, s.received, s.gaps.len()), (Some(600), 600, 0));
        // 599 steps of 2 Wh per meter (no baseline in the first report).
        let c = &report.calculations[0];
        assert_eq!(c.inputs["re_energy_wh"], "3594");
        assert_eq!(c.inputs["pe_energy_wh"], "0");
        // 3594 Wh x 0.5113 t/MWh = 0.0018376122 t, exactly.
        assert_eq!(c.er.exact, "9188061/5000000000");
        assert_eq!(c.er.decimal, "0.001837");
        assert_eq!(c.completeness.len(), 3);
        assert_eq!(
            (c.completeness[0].expected, c.completeness[0].usable),
            (Some(600), 600)
        );
        // Every device accounted for from seq 1, ten frames each.
        assert_eq!(report.continuity.len(), 3);
        assert!(report.continuity.iter().all(|c| c.after_seq == 0
            && c.first_seq == Some(1)
            && c.last_seq == 10
            && c.frames == 10
            && c.given_up.is_empty()));
        let signed = sign(&report, "gw-th-01-2025", &gateway_key()).expect("signs");
        let v = verify_report(&signed.bytes, &keys(), &pv_trust(&SITE)).expect("verifies");
        assert_eq!(v.report, report);
        assert_eq!(v.hash, signed.hash);
        // Pure and deterministic: the same inputs (in any order) give the
        // same bytes, so rebuilding after a crash cannot fork the chain.
        let mut shuffled = pv_frames(&SITE, &id.site, period);
        shuffled.reverse();
        let again = build(input(&id, &devices, &calcs, period, shuffled)).expect("builds");
        let again = sign(&again, "gw-th-01-2025", &gateway_key()).expect("signs");
        assert_eq!(again.bytes, signed.bytes);
    }

    #[test]
    fn late_unsigned_foreign_and_unregistered_frames_are_handled_conservatively() {
        let id = identity();
        let devices = pv_devices(&SITE);
        let calcs = [pv_calculation(&SITE)];
        let period = Period {
            start_ms: T0 + 600_000,
            end_ms: T0 + 1_200_000,
        };
        let mut frames = pv_frames(&SITE, &id.site, period);
        // A late frame of the previous period.
        let prev = Period {
            start_ms: T0,
            end_ms: T0 + 600_000,
        };
        let late = pv_frames(&SITE, &id.site, prev).pop().expect("a frame");
        frames.push(late.clone());
        // A signed device's frame with a broken signature.
        let mut forged = frames[0].clone();
        forged.frame.seq = 999;
        frames.push(forged);
        // An unregistered device.
        let mut stranger = frames[1].clone();
        stranger.frame.device = DeviceId::new("stranger").expect("valid");
        stranger.frame.signature = None;
        frames.push(stranger);
        // The previous report accounted for seqs 1..=9 of every meter (its
        // last frame, 10, arrives late).
        let mut inp = input(&id, &devices, &calcs, period, frames);
        inp.positions = devices.iter().map(|d| (d.id.clone(), 9)).collect();
        let report = build(inp).expect("builds");
        let late_rec = report
            .readings
            .frames
            .iter()
            .find(|f| f.device == late.frame.device && f.seq == late.frame.seq)
            .expect("late frame kept");
        assert!(late_rec.late);
        assert!(
            report
                .events
                .iter()
                .any(|e| e.kind == EventKind::SignatureRejected)
        );
        assert!(!report.readings.frames.iter().any(|f| f.seq == 999));
        // The forged frame's seq is given up (left out), so pv-0000's
        // continuity still tiles 10..=20 and then 999 is accounted for: the
        // hole 21..=998 is recorded as missing from the buffer.
        let c0 = &report.continuity[0];
        assert_eq!(
            (c0.after_seq, c0.first_seq, c0.last_seq),
            (9, Some(10), 999)
        );
        assert!(
            report
                .events
                .iter()
                .any(|e| e.kind == EventKind::FramesGivenUp && e.detail.starts_with("left_out"))
        );
        // The stranger is not bound to the calculation, so nothing is
        // excluded from it; it is listed as unregistered.
        assert!(report.calculations[0].excluded.is_empty());
        assert!(report.devices.iter().any(|d| d.kind == "unregistered"));
        // The fast canonical writer agrees with the generic one.
        assert_eq!(
            mrv_shared::report::model::report_canonical(&report).expect("fast"),
            mrv_shared::report::canonical::to_canonical_vec(&report).expect("generic")
        );
        let signed = sign(&report, "gw-th-01-2025", &gateway_key()).expect("signs");
        // The stranger is in no registry, but listed as unregistered and
        // unsigned it earns nothing, so the registry lets it through; relabel
        // it as a solar meter and the registry refuses the report.
        verify_report(&signed.bytes, &keys(), &pv_trust(&SITE)).expect("verifies");
        verify_report(&signed.bytes, &keys(), &DeviceTrust::ReportListed).expect("verifies");
        let mut relabelled = report.clone();
        for d in &mut relabelled.devices {
            if d.id.as_str() == "stranger" {
                d.kind = String::from("solar_meter");
            }
        }
        let relabelled = sign(&relabelled, "gw-th-01-2025", &gateway_key()).expect("signs");
        assert_eq!(
            verify_report(&relabelled.bytes, &keys(), &pv_trust(&SITE)).map_err(|e| e.label()),
            Err("device_not_registered")
        );
        // Another gateway key does not verify it, and says which it tried.
        let mut other = KeySet::new();
        other.insert("gw-th-01-2025", device_key("x").verifying_key());
        assert!(matches!(
            verify_report(&signed.bytes, &other, &DeviceTrust::ReportListed),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    fn vectors() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/vectors")
    }

    /// The golden report in `shared/tests/vectors/` is exactly what this
    /// builder produces for its fixed inputs (set `MRV_UPDATE_GOLDEN=1` to
    /// rewrite it after an intended format change).
    #[test]
    fn the_golden_report_is_reproduced_byte_for_byte() {
        let id = identity();
        let site = PvSite {
            devices: 2,
            interval_ms: 10_000,
            samples_per_frame: 6,
            wh_per_sample: 25,
            epoch_ms: T0,
        };
        let devices = pv_devices(&site);
        let calcs = [pv_calculation(&site)];
        let period = Period {
            start_ms: T0,
            end_ms: T0 + 120_000,
        };
        let mut frames = pv_frames(&site, &id.site, period);
        // One unavailable sample, so the golden file shows a gap.
        frames[0].frame.samples[2].quality = mrv_shared::reading::Quality::UNAVAILABLE;
        frames[0].frame.samples[2].value = 0;
        mrv_shared::wire::signature::sign_frame(&mut frames[0].frame, &device_key("pv-0000"));
        let mut inp = input(&id, &devices, &calcs, period, frames);
        inp.events.push(Event {
            time_ms: T0 + 1000,
            kind: EventKind::GatewayStarted,
            device: None,
            seqs: None,
            detail: String::from("mrv-gateway 0.1.0"),
        });
        let report = build(inp).expect("builds");
        let signed = sign(&report, "gw-th-01-2025", &gateway_key()).expect("signs");
        let jws = vectors().join("report_pv_golden.jws");
        let jwk = vectors().join("report_gateway.pub.jwk");
        let payload = vectors().join("report_pv_golden.payload.json");
        let pub_jwk = serde_json::to_vec_pretty(&Jwk::public(
            "gw-th-01-2025",
            &gateway_key().verifying_key(),
        ))
        .expect("serialises");
        let canonical =
            mrv_shared::report::canonical::to_canonical_vec(&report).expect("canonical");
        if std::env::var_os("MRV_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(vectors()).expect("mkdir");
            std::fs::write(&jws, &signed.bytes).expect("write");
            std::fs::write(&jwk, &pub_jwk).expect("write");
            std::fs::write(&payload, &canonical).expect("write");
        }
        assert_eq!(
            std::fs::read(&jws).expect("golden file exists (MRV_UPDATE_GOLDEN=1 writes it)"),
            signed.bytes
        );
        assert_eq!(std::fs::read(&payload).expect("payload"), canonical);
        assert_eq!(std::fs::read(&jwk).expect("jwk"), pub_jwk);
    }
}
