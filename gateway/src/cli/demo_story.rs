//! The demo's story: one visible fault, and a closing summary drawn from
//! the signed reports.
//!
//! The fault ([`FaultPlan`], unless `demo --no-fault`): some seconds into
//! the run one device is switched off for a while (the simulator's
//! `powered_off` fault: no samples, no MQTT session, then a reboot from its
//! flash). Halfway through, a frame claiming to be that device, with the
//! next seq it would use and signed with a key that is not its registered
//! key, is published on its up topic ([`forged_frame`]). Expected outcome,
//! which the summary shows from the reports rather than asserting it: the
//! gateway refuses the forgery (`bad_signature`, quarantined, a
//! `signature_rejected` event in the period's report) and the switched-off
//! time is a gap (`no_data`) in the device's series, so its completeness
//! drops below 100 % and no counter step across the gap is credited.
//!
//! The summary ([`summary_lines`]) is a pure function of the reports as
//! `verify` accepted them (the same check, run in-process on the gateway's
//! report files) plus the backend's counters: reports signed and accepted by
//! the MRV backend, completeness per device (usable of expected samples over
//! all reports, and each gap with what explains it), exact ER per
//! calculation summed over the reports, the fault as the reports record it,
//! and the command that verifies the same files offline.

use mrv_shared::event::EventKind;
use mrv_shared::ids::{ChannelId, DeviceId, SiteId};
use mrv_shared::methodology::Ratio;
use mrv_shared::quantity::{Quantity, ValueKind};
use mrv_shared::reading::{Channel, Quality, Sample};
use mrv_shared::report::model::Report;
use mrv_shared::wire::{Frame, binary, signature};
use std::collections::BTreeMap;
use std::time::Duration;

/// When the demo's fault happens, relative to the devices' start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// The device switched off (and impersonated by the forgery).
    pub device: DeviceId,
    /// From the devices' start to the switch-off.
    pub after: Duration,
    /// How long the device stays off.
    pub offline: Duration,
}

/// One step of the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStep {
    /// Switch the device off.
    SwitchOff,
    /// Publish the forged frame.
    Forge,
    /// Switch the device on again.
    SwitchOn,
}

impl FaultPlan {
    /// The steps in order, each with its time from the devices' start.
    pub fn steps(&self) -> [(Duration, FaultStep); 3] {
        [
            (self.after, FaultStep::SwitchOff),
            (self.after + self.offline / 2, FaultStep::Forge),
            (self.after + self.offline, FaultStep::SwitchOn),
        ]
    }
}

/// What the demo did, as it happened (Unix ms of the gateway clock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultRecord {
    /// The device.
    pub device: Option<DeviceId>,
    /// When it was switched off.
    pub off_ms: Option<u64>,
    /// When it was switched on again.
    pub on_ms: Option<u64>,
    /// Seq the forged frame claimed.
    pub forged_seq: Option<u64>,
    /// When the forged frame was published.
    pub forged_ms: Option<u64>,
    /// The gateway's reason for refusing it (from its quarantine), if it did.
    pub forged_refused: Option<String>,
}

/// A frame claiming to come from `device` (seq `seq`, one energy reading
/// at `time_ms`, far above anything the device measured), signed with a
/// fresh key that no registry lists.
pub fn forged_frame(site: &SiteId, device: &DeviceId, seq: u64, time_ms: u64) -> Vec<u8> {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    let mut frame = Frame {
        site: site.clone(),
        device: device.clone(),
        seq,
        boot: 1,
        firmware: String::from("forged"),
        base_time_ms: Some(time_ms),
        channels: vec![Channel {
            id: ChannelId::new("energy").expect("a valid channel id"),
            quantity: Quantity::Energy,
            kind: ValueKind::Counter,
        }],
        samples: vec![Sample {
            channel: 0,
            offset_ms: 0,
            value: 1_000_000_000,
            quality: Quality::GOOD,
        }],
        signature: None,
    };
    signature::sign_frame(&mut frame, &key);
    binary::encode_frame(&frame)
}

/// What the backend said about the uploads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounts {
    /// Reports the backend verified and stored.
    pub accepted: u64,
    /// Reports it refused.
    pub rejected: u64,
}

/// Everything the summary is drawn from.
#[derive(Debug, Clone)]
pub struct SummaryInput<'a> {
    /// The reports `verify` accepted, in chain order.
    pub reports: &'a [Report],
    /// Report files `verify` found invalid.
    pub invalid: usize,
    /// The backend's counters.
    pub backend: BackendCounts,
    /// When the devices started (Unix ms).
    pub started_ms: u64,
    /// The fault, if one was injected.
    pub fault: Option<&'a FaultRecord>,
    /// End of the period that is open now (Unix ms).
    pub open_period_end_ms: u64,
    /// The command that checks the same report files offline.
    pub verify_command: String,
    /// A note under the command (e.g. that the data dir is temporary).
    pub verify_note: Option<String>,
}

/// A device's completeness over all reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DeviceCompleteness {
    expected: u64,
    usable: u64,
    received: u64,
    without_interval: bool,
    /// Gaps of any of its series, merged, ascending.
    gaps: Vec<(u64, u64)>,
    /// Counter steps across gaps (measured, not credited), per channel.
    gap_delta: BTreeMap<String, i64>,
}

fn merge(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn completeness(reports: &[Report]) -> BTreeMap<DeviceId, DeviceCompleteness> {
    let mut out: BTreeMap<DeviceId, DeviceCompleteness> = BTreeMap::new();
    let mut spans: BTreeMap<DeviceId, Vec<(u64, u64)>> = BTreeMap::new();
    for r in reports {
        for d in &r.devices {
            out.entry(d.id.clone()).or_default();
        }
        for s in &r.series {
            let c = out.entry(s.device.clone()).or_default();
            match s.expected {
                Some(e) => c.expected += e,
                None => c.without_interval = true,
            }
            c.usable += s.usable;
            c.received += s.received;
            if let Some(k) = &s.counter
                && k.gap_delta != 0
            {
                *c.gap_delta.entry(s.channel.to_string()).or_default() += k.gap_delta;
            }
            spans
                .entry(s.device.clone())
                .or_default()
                .extend(s.gaps.iter().map(|g| (g.start_ms, g.end_ms)));
        }
    }
    for (d, v) in spans {
        if let Some(c) = out.get_mut(&d) {
            c.gaps = merge(v);
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn hms(ms: u64) -> String {
    let t = crate::clock::utc_seconds(ms);
    t.split(' ').nth(1).map_or(t.clone(), String::from)
}

/// Usable of expected as a percentage with one decimal, rounded down (a
/// summary never shows 100.0 % for a series that missed a sample).
fn percent(usable: u64, expected: u64) -> String {
    let tenths = (u128::from(usable) * 1000) / u128::from(expected.max(1));
    format!("{}.{} %", tenths / 10, tenths % 10)
}

/// The summary, line by line (see the module doc).
pub fn summary_lines(input: &SummaryInput<'_>) -> Vec<String> {
    let reports = input.reports;
    let mut lines = vec![String::from("Summary")];
    match (reports.first(), reports.last()) {
        (Some(first), Some(last)) => lines.push(format!(
            "  reports       {} signed by the gateway (seq {}..{}, {} .. {} UTC); {} accepted by the MRV backend after verifying each one (gateway key, device registry, chain), {} refused",
            reports.len(),
            first.header.seq,
            last.header.seq,
            crate::clock::utc_seconds(first.header.period.start_ms),
            hms(last.header.period.end_ms),
            input.backend.accepted,
            input.backend.rejected
        )),
        _ => lines.push(format!(
            "  reports       none signed yet: the open period ends at {} UTC and its report follows a few seconds later; run longer",
            hms(input.open_period_end_ms)
        )),
    }
    lines.push(format!(
        "  verified      {} valid, {} invalid: the same check as `verify` below, run here on the gateway's report files",
        reports.len(),
        input.invalid
    ));
    let fault = input.fault;
    let fault_span = fault.and_then(|f| Some((f.off_ms?, f.on_ms?)));
    let per_device = completeness(reports);
    if !per_device.is_empty() {
        lines.push(String::from(
            "  completeness  usable samples of those expected, over all reports:",
        ));
    }
    let width = per_device
        .keys()
        .map(|d| d.as_str().len())
        .max()
        .unwrap_or(0);
    for (device, c) in &per_device {
        let share = if c.expected > 0 {
            format!(
                "{} ({} of {})",
                percent(c.usable, c.expected),
                c.usable,
                c.expected
            )
        } else {
            format!(
                "{} usable of {} received (no nominal interval)",
                c.usable, c.received
            )
        };
        let gaps: Vec<String> = c
            .gaps
            .iter()
            .map(|&(s, e)| {
                let why = if s < input.started_ms {
                    " (before the demo's devices started)"
                } else if fault_span.is_some_and(|(off, on)| s < on && e > off)
                    && fault.and_then(|f| f.device.as_ref()) == Some(device)
                {
                    " (switched off: the injected fault)"
                } else {
                    ""
                };
                format!("{} .. {} ({}){why}", hms(s), hms(e), secs(e - s))
            })
            .collect();
        let gap_text = if gaps.is_empty() {
            String::from("no gaps")
        } else {
            format!("gaps {}", gaps.join(", "))
        };
        lines.push(format!(
            "    {:<width$}  {share}; {gap_text}",
            device.as_str()
        ));
    }
    if let Some(f) = fault {
        let c = f.device.as_ref().and_then(|d| per_device.get(d));
        lines.extend(fault_lines(f, reports, c));
    }
    let mut totals: BTreeMap<String, (String, Ratio, usize)> = BTreeMap::new();
    for r in reports {
        for c in &r.calculations {
            let e = totals.entry(c.id.clone()).or_insert((
                c.methodology.name().to_string(),
                Ratio::ZERO,
                0,
            ));
            match Ratio::parse_exact(&c.er.exact).and_then(|er| e.1.checked_add(er)) {
                Ok(sum) => e.1 = sum,
                Err(why) => lines.push(format!(
                    "  NOTE          report {} calculation {}: ER {} not summed: {why}",
                    r.header.seq, c.id, c.er.exact
                )),
            }
            e.2 += 1;
        }
    }
    if !totals.is_empty() {
        lines.push(String::from(
            "  ER            exact, summed over the reports (tCO2e; a crediting total rounds down once):",
        ));
    }
    let width = totals.keys().map(String::len).max().unwrap_or(0);
    for (id, (methodology, sum, n)) in &totals {
        let decimal = sum
            .to_decimal_floor(6)
            .unwrap_or_else(|_| String::from("?"));
        lines.push(format!(
            "    {id:<width$}  ({methodology}) {sum} exactly = {decimal} to 6 decimals, over {n} report{}",
            if *n == 1 { "" } else { "s" }
        ));
    }
    lines.push(String::from("  verify offline:"));
    lines.push(format!("    {}", input.verify_command));
    if let Some(note) = &input.verify_note {
        lines.push(format!("    ({note})"));
    }
    lines
}

fn fault_lines(f: &FaultRecord, reports: &[Report], c: Option<&DeviceCompleteness>) -> Vec<String> {
    let Some(device) = &f.device else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    match (f.off_ms, f.on_ms) {
        (Some(off), Some(on)) => {
            let covered = reports.last().is_some_and(|r| r.header.period.end_ms >= on);
            let gap: u64 = c.map_or(0, |c| {
                c.gaps
                    .iter()
                    .filter(|&&(s, e)| s < on && e > off)
                    .map(|&(s, e)| e - s)
                    .sum()
            });
            let mut text = format!(
                "  fault         {device} switched off {} .. {} UTC ({}): ",
                hms(off),
                hms(on),
                secs(on - off)
            );
            if !covered {
                text.push_str("that time is not in a signed report yet (its period has not ended); run longer to see it");
            } else if gap > 0 {
                text.push_str(&format!(
                    "the reports show it as a gap of {} (no_data) in its series",
                    secs(gap)
                ));
                let deltas: Vec<String> = c
                    .map(|c| {
                        c.gap_delta
                            .iter()
                            .map(|(ch, d)| format!("{ch} +{d}"))
                            .collect()
                    })
                    .unwrap_or_default();
                if !deltas.is_empty() {
                    text.push_str(&format!(
                        "; counter steps across it not credited: {}",
                        deltas.join(", ")
                    ));
                }
            } else {
                text.push_str("the reports show NO gap for it");
            }
            lines.push(text);
        }
        (Some(off), None) => lines.push(format!(
            "  fault         {device} switched off at {} UTC and not on again before the end",
            hms(off)
        )),
        _ => {}
    }
    if let (Some(seq), Some(at)) = (f.forged_seq, f.forged_ms) {
        let recorded = reports.iter().find(|r| {
            r.events.iter().any(|e| {
                e.kind == EventKind::SignatureRejected
                    && e.device.as_ref() == Some(device)
                    && e.time_ms >= at
            })
        });
        let refused = match &f.forged_refused {
            Some(reason) => format!("refused by the gateway ({reason}, quarantined)"),
            None => String::from("NOT refused by the gateway"),
        };
        let report = match recorded {
            Some(r) => format!(
                "recorded as signature_rejected in report seq {}",
                r.header.seq
            ),
            None if reports.last().is_some_and(|r| r.header.period.end_ms > at) => {
                String::from("NOT recorded in the report of its period")
            }
            None => String::from("its period is not reported yet"),
        };
        lines.push(format!(
            "                forged frame \"{device}\" seq {seq} (signed with a key no registry lists) at {} UTC: {refused}; {report}",
            hms(at)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_touching_across_reports_merge_into_one() {
        assert_eq!(
            merge(vec![(50, 60), (10, 20), (20, 30), (25, 28)]),
            vec![(10, 30), (50, 60)]
        );
    }

    #[test]
    fn a_percentage_below_a_whole_never_reads_as_complete() {
        assert_eq!(percent(999, 1000), "99.9 %");
        assert_eq!(percent(9999, 10000), "99.9 %");
        assert_eq!(percent(1000, 1000), "100.0 %");
        assert_eq!(percent(0, 0), "0.0 %");
    }

    #[test]
    fn the_fault_steps_switch_off_forge_then_switch_on() {
        let plan = FaultPlan {
            device: DeviceId::new("solar-01").expect("valid"),
            after: Duration::from_secs(10),
            offline: Duration::from_secs(20),
        };
        assert_eq!(
            plan.steps(),
            [
                (Duration::from_secs(10), FaultStep::SwitchOff),
                (Duration::from_secs(20), FaultStep::Forge),
                (Duration::from_secs(30), FaultStep::SwitchOn),
            ]
        );
    }

    #[test]
    fn a_forged_frame_decodes_but_does_not_verify_with_any_other_key() {
        let site = SiteId::new("demo-site").expect("valid");
        let device = DeviceId::new("solar-01").expect("valid");
        let bytes = forged_frame(&site, &device, 7, 1_764_115_200_000);
        let frame = binary::decode_frame_exact(&bytes).expect("decodes");
        assert_eq!((frame.seq, &frame.device), (7, &device));
        let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        assert!(signature::verify_frame(&frame, &other).is_err());
    }
}
