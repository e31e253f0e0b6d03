//! Verification of signed reports: what an MRV backend, an auditor, the
//! gateway's `verify` command and the reference receiver all run.
//!
//! - [`verify_jws`] checks the JWS (algorithm, known `kid`, Ed25519 signature over
//!   the bytes as stored), then the payload parses as a [`Report`] of a
//!   known schema signed by the key its header names;
//! - [`DeviceTrust`] checks the devices a report lists against the device
//!   registry (fails closed; see [`super::registry`]);
//! - [`check_contents`] checks frames sorted and unique, late flags, reading count
//!   and Merkle root, every device signature, device continuity (frames and
//!   given-up ranges), every series aggregate, and every calculation
//!   recomputed from its bindings;
//! - [`verify_report`] runs all three;
//! - [`Chain`] checks continuity across reports of one gateway: gap-free `seq`,
//!   `prev_hash` = SHA-256 of the previous stored bytes, no replay,
//!   contiguous periods, counter baselines = previous last values, and each
//!   device's frames continuing where the previous report ended.

use super::ReportError;
use super::calc::{CalculationSpec, calculate};
use super::continuity::{derive, positions, stated_positions};
use super::hex;
use super::jwk::{Jwk, b64, unb64};
use super::jws::{check_signature, parse_compact};
use super::merkle::Hash;
use super::model::{GENESIS_PREV_HASH, Report, SCHEMA_VERSION, Signing, readings_root};
use super::registry::TrustedDevices;
use super::series::{compute_series, stated_baselines};
use crate::ids::DeviceId;
use crate::reading::Sample;
use crate::wire::Frame;
use crate::wire::signature::verify_frame;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// Trusted gateway public keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> KeySet {
        KeySet::default()
    }
    /// Adds a key under `kid`.
    pub fn insert(&mut self, kid: &str, key: VerifyingKey) {
        self.keys.insert(String::from(kid), key);
    }
    /// Adds a public JWK (its `kid` is required).
    pub fn insert_jwk(&mut self, jwk: &Jwk) -> Result<(), ReportError> {
        let kid = jwk
            .kid
            .as_deref()
            .ok_or_else(|| ReportError::BadKey(String::from("JWK without kid")))?;
        let key = jwk.verifying_key()?;
        self.insert(kid, key);
        Ok(())
    }
    /// The key for `kid` (its id, or its RFC 7638 thumbprint).
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid).or_else(|| {
            self.keys
                .values()
                .find(|k| super::jwk::thumbprint(k) == kid)
        })
    }

    /// Each key as `kid (thumbprint T)`, for messages.
    pub fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(kid, k)| alloc::format!("{kid} (thumbprint {})", super::jwk::thumbprint(k)))
            .collect()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A report whose JWS verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    /// The report.
    pub report: Report,
    /// SHA-256 of the stored bytes (the next report's `prev_hash`).
    pub hash: Hash,
    /// Key id that signed it.
    pub kid: String,
}

impl VerifiedReport {
    /// Report id.
    pub fn id(&self) -> &str {
        &self.report.header.report_id
    }
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.report.header.seq
    }
    /// Hex hash of the previous report.
    pub fn prev_hash(&self) -> &str {
        &self.report.header.prev_hash
    }
    /// Gateway id.
    pub fn gateway(&self) -> &str {
        &self.report.header.gateway
    }
    /// Hex SHA-256 of this report's bytes.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// Checks the JWS of stored report `bytes` and parses the report.
pub fn verify_jws(bytes: &[u8], keys: &KeySet) -> Result<VerifiedReport, ReportError> {
    let jws = parse_compact(bytes)?;
    let key = keys
        .get(&jws.header.kid)
        .ok_or_else(|| ReportError::UnknownKid(jws.header.kid.clone()))?;
    check_signature(&jws, key)?;
    // The schema first, so that a report of another schema is named as such
    // rather than as a shape it does not have.
    #[derive(serde::Deserialize)]
    struct SchemaOnly {
        header: SchemaHeader,
    }
    #[derive(serde::Deserialize)]
    struct SchemaHeader {
        schema: u32,
    }
    if let Ok(s) = serde_json::from_slice::<SchemaOnly>(&jws.payload)
        && s.header.schema != SCHEMA_VERSION
    {
        return Err(ReportError::UnsupportedSchema(s.header.schema));
    }
    let report: Report = serde_json::from_slice(&jws.payload)
        .map_err(|e| ReportError::Malformed(alloc::format!("report payload: {e}")))?;
    if report.header.schema != SCHEMA_VERSION {
        return Err(ReportError::UnsupportedSchema(report.header.schema));
    }
    let canonical = super::model::report_canonical(&report)
        .map_err(|e| ReportError::Malformed(alloc::format!("report payload: {e}")))?;
    if canonical != jws.payload {
        return Err(ReportError::Malformed(String::from(
            "the payload is not the RFC 8785 canonical form of the report",
        )));
    }
    if report.header.kid != jws.header.kid {
        return Err(ReportError::KidMismatch {
            header: jws.header.kid.clone(),
            report: report.header.kid.clone(),
        });
    }
    Ok(VerifiedReport {
        hash: Sha256::digest(bytes).into(),
        kid: jws.header.kid.clone(),
        report,
    })
}

/// Rebuilds the wire frame a frame record came from, without its signature.
fn wire_frame_of(report: &Report, f: &super::model::FrameRecord) -> Frame {
    Frame {
        site: report.header.site.clone(),
        device: f.device.clone(),
        seq: f.seq,
        boot: f.boot,
        firmware: f.firmware.clone(),
        base_time_ms: f.base_time_ms,
        channels: f.channels.clone(),
        samples: f
            .samples
            .iter()
            .map(|&(channel, offset_ms, value, q)| Sample {
                channel,
                offset_ms,
                value,
                quality: crate::reading::Quality(q),
            })
            .collect(),
        signature: None,
    }
}

/// Rebuilds the wire frame a frame record came from.
fn wire_frame(report: &Report, i: usize) -> Result<Frame, ReportError> {
    let f = &report.readings.frames[i];
    let signature = match &f.sig {
        Some(s) => Some(
            unb64(s)?
                .try_into()
                .map_err(|_| ReportError::DeviceSignatureInvalid {
                    device: f.device.clone(),
                    seq: f.seq,
                })?,
        ),
        None => None,
    };
    Ok(Frame {
        signature,
        ..wire_frame_of(report, f)
    })
}

/// Recomputes everything in a report from its readings and compares.
pub fn check_contents(report: &Report) -> Result<(), ReportError> {
    let h = &report.header;
    let period = h.period;
    if period.start_ms >= period.end_ms {
        return Err(ReportError::Malformed(String::from("empty period")));
    }
    let want_id = alloc::format!("{}-{:012}", h.gateway, h.seq);
    if h.report_id != want_id {
        return Err(ReportError::Malformed(alloc::format!(
            "report_id {:?} is not {want_id:?}",
            h.report_id
        )));
    }
    for d in &report.devices {
        if d.sample_interval_ms == Some(0) || d.counter_modulus.is_some_and(|m| m < 2) {
            return Err(ReportError::Malformed(alloc::format!(
                "device {}: sample_interval_ms must be > 0 and counter_modulus >= 2",
                d.id
            )));
        }
    }
    for e in &report.events {
        if e.seqs.is_some() && e.kind != crate::event::EventKind::FramesGivenUp {
            return Err(ReportError::Malformed(alloc::format!(
                "a {} event carries seqs (only frames_given_up does)",
                e.kind.name()
            )));
        }
    }
    for w in report.devices.windows(2) {
        if w[0].id >= w[1].id {
            return Err(ReportError::Malformed(alloc::format!(
                "devices not sorted by id and unique at {}",
                w[1].id
            )));
        }
    }
    for w in report.events.windows(2) {
        if w[0].time_ms > w[1].time_ms {
            return Err(ReportError::Malformed(String::from(
                "events not sorted by time",
            )));
        }
    }
    for d in &report.devices {
        if let Some(c) = &d.calibration {
            for (field, value) in [("calibrated_on", &c.calibrated_on), ("due_on", &c.due_on)] {
                if super::calc::date_start_ms(value).is_none() {
                    return Err(ReportError::InvalidDate(alloc::format!(
                        "device {}: calibration.{field} = {value:?} is not a valid date YYYY-MM-DD",
                        d.id
                    )));
                }
            }
        }
    }
    let frames = &report.readings.frames;
    for f in frames {
        let rebuilt = wire_frame_of(report, f);
        if let Err(e) = rebuilt.validate() {
            return Err(ReportError::Malformed(alloc::format!(
                "frame {} seq {}: {e}",
                f.device,
                f.seq
            )));
        }
    }
    for w in frames.windows(2) {
        if (&w[0].device, w[0].seq) >= (&w[1].device, w[1].seq) {
            return Err(ReportError::FrameOrder {
                device: w[1].device.clone(),
                seq: w[1].seq,
            });
        }
    }
    // Merkle root and count.
    let (count, root) = readings_root(frames);
    if count != report.readings.count {
        return Err(ReportError::ReadingCountMismatch {
            stated: report.readings.count,
            actual: count,
        });
    }
    if hex(&root) != report.readings.merkle_root {
        return Err(ReportError::MerkleMismatch);
    }
    // Device signatures: cheap checks in order, then the Ed25519 checks
    // in parallel; the first failing frame (in report order) is reported.
    let devices: BTreeMap<&DeviceId, &super::model::DeviceRecord> =
        report.devices.iter().map(|d| (&d.id, d)).collect();
    let mut keys: BTreeMap<&DeviceId, VerifyingKey> = BTreeMap::new();
    let mut to_check: Vec<(usize, VerifyingKey)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let first = f.samples.first().map(|s| f.sample_time_ms(s.1));
        if f.late != first.is_some_and(|t| t < period.start_ms) {
            return Err(ReportError::LateFlagMismatch {
                device: f.device.clone(),
                seq: f.seq,
            });
        }
        let dev = devices
            .get(&f.device)
            .ok_or_else(|| ReportError::UnknownDevice(f.device.clone()))?;
        if dev.signing == Signing::Unsigned && f.sig.is_some() {
            return Err(ReportError::Malformed(alloc::format!(
                "frame {} seq {} of an unsigned device carries a signature",
                f.device,
                f.seq
            )));
        }
        if let Signing::Ed25519 { x, .. } = &dev.signing {
            if f.sig.is_none() {
                return Err(ReportError::DeviceSignatureMissing {
                    device: f.device.clone(),
                    seq: f.seq,
                });
            }
            let key = match keys.get(&f.device) {
                Some(k) => *k,
                None => {
                    let bad = || ReportError::BadKey(alloc::format!("device {} key", f.device));
                    let bytes: [u8; 32] = unb64(x)?.try_into().map_err(|_| bad())?;
                    let k = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
                    keys.insert(&f.device, k);
                    k
                }
            };
            to_check.push((i, key));
        }
    }
    let results = super::parallel::map(&to_check, |(i, key)| {
        wire_frame(report, *i).and_then(|frame| {
            verify_frame(&frame, key).map_err(|_| ReportError::DeviceSignatureInvalid {
                device: frame.device.clone(),
                seq: frame.seq,
            })
        })
    });
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e);
    }
    // Continuity: frames and given-up ranges tile each device's range.
    let derived = derive(
        &stated_positions(&report.continuity),
        frames,
        &report.events,
    )?;
    if derived.len() != report.continuity.len() {
        let stated: alloc::collections::BTreeSet<&DeviceId> =
            report.continuity.iter().map(|c| &c.device).collect();
        let device = derived
            .iter()
            .map(|c| &c.device)
            .find(|d| !stated.contains(d))
            .or_else(|| report.continuity.first().map(|c| &c.device))
            .cloned()
            .ok_or_else(|| ReportError::Malformed(String::from("continuity records")))?;
        return Err(ReportError::ContinuityMismatch(device));
    }
    for (a, b) in derived.iter().zip(&report.continuity) {
        if a != b {
            return Err(ReportError::ContinuityMismatch(b.device.clone()));
        }
    }
    // Series.
    let series = compute_series(
        frames,
        &report.devices,
        &period,
        &stated_baselines(&report.series),
    );
    if series.len() != report.series.len() {
        return Err(ReportError::SeriesSetMismatch);
    }
    for (a, b) in series.iter().zip(&report.series) {
        if a != b {
            return Err(ReportError::AggregateMismatch {
                device: b.device.clone(),
                channel: b.channel.to_string(),
            });
        }
    }
    // Calculations, each recomputed from its bindings.
    for w in report.calculations.windows(2) {
        if w[0].id >= w[1].id {
            return Err(ReportError::Malformed(String::from(
                "calculations are not sorted by id and unique",
            )));
        }
    }
    for c in &report.calculations {
        let again = calculate(
            CalculationSpec {
                id: &c.id,
                methodology: c.methodology,
                bindings: &c.bindings,
                params: &c.parameters,
            },
            frames,
            &report.series,
            &report.devices,
            &period,
            c.awd_start.as_ref(),
        )
        .map_err(|e| match e {
            crate::methodology::CalcError::Binding(why) => ReportError::BindingInvalid {
                calculation: c.id.clone(),
                why,
            },
            e @ crate::methodology::CalcError::BadDate { .. } => {
                ReportError::InvalidDate(alloc::format!("{e}"))
            }
            e => {
                ReportError::CalculationMismatch(alloc::format!("{}: cannot recompute: {e}", c.id))
            }
        })?;
        for (name, same) in [
            ("inputs", again.inputs == c.inputs),
            ("completeness", again.completeness == c.completeness),
            ("re", again.re == c.re),
            ("pe", again.pe == c.pe),
            ("er", again.er == c.er),
            ("excluded", again.excluded == c.excluded),
            ("awd_end", again.awd_end == c.awd_end),
            ("treatment", again.treatment == c.treatment),
        ] {
            if !same {
                return Err(ReportError::CalculationMismatch(alloc::format!(
                    "{}: {name}",
                    c.id
                )));
            }
        }
    }
    Ok(())
}

/// How device keys are trusted.
#[derive(Debug, Clone)]
pub enum DeviceTrust {
    /// Against a device registry (the normal case; fails closed).
    Registry(TrustedDevices),
    /// The keys the report lists are taken as they are: for exploring
    /// reports without a registry. Nothing then stops a gateway from
    /// relabelling or re-keying devices; every verdict must say so.
    ReportListed,
}

impl DeviceTrust {
    /// Checks the report's devices (no-op for [`DeviceTrust::ReportListed`]).
    pub fn check(&self, report: &Report) -> Result<(), ReportError> {
        match self {
            DeviceTrust::Registry(t) => t.check(report),
            DeviceTrust::ReportListed => Ok(()),
        }
    }
}

/// [`verify_jws`], the device registry check, then [`check_contents`].
pub fn verify_report(
    bytes: &[u8],
    keys: &KeySet,
    devices: &DeviceTrust,
) -> Result<VerifiedReport, ReportError> {
    let v = verify_jws(bytes, keys)?;
    devices.check(&v.report)?;
    check_contents(&v.report)?;
    Ok(v)
}

/// What the chain remembers of a gateway's last accepted report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
    /// Its period end.
    pub period_end_ms: u64,
    /// Its counters' last values, by `device/channel`.
    pub counters: BTreeMap<(DeviceId, String), super::model::Point>,
    /// Each device's last accounted frame seq.
    pub positions: BTreeMap<DeviceId, u64>,
    /// Rice AWD tube states at its end, by calculation id.
    pub awd: BTreeMap<String, BTreeMap<String, crate::methodology::awd::AwdState>>,
}

impl ChainHead {
    /// The head after `r`.
    pub fn of(r: &VerifiedReport, previous: Option<&ChainHead>) -> ChainHead {
        let mut counters = previous.map(|p| p.counters.clone()).unwrap_or_default();
        for s in &r.report.series {
            if let Some(last) = s.counter.as_ref().and_then(|c| c.last) {
                counters.insert((s.device.clone(), s.channel.to_string()), last);
            }
        }
        ChainHead {
            seq: r.seq(),
            hash: r.hash,
            period_end_ms: r.report.header.period.end_ms,
            counters,
            positions: positions(&r.report.continuity),
            awd: {
                let mut awd = previous.map(|p| p.awd.clone()).unwrap_or_default();
                for c in &r.report.calculations {
                    if let Some(end) = &c.awd_end {
                        awd.insert(c.id.clone(), end.clone());
                    }
                }
                awd
            },
        }
    }
}

/// Checks that `next` follows `prev` (or starts a chain when `prev` is
/// `None`: then it must be seq 1 with the genesis hash, unless
/// `allow_mid_chain_start`).
pub fn check_link(
    prev: Option<&ChainHead>,
    next: &VerifiedReport,
    allow_mid_chain_start: bool,
) -> Result<(), ReportError> {
    let seq = next.seq();
    let empty;
    let p = match prev {
        Some(p) => p,
        None if allow_mid_chain_start => return Ok(()),
        None => {
            if seq != 1 {
                return Err(ReportError::ChainSeqGap {
                    expected: 1,
                    found: seq,
                });
            }
            if next.prev_hash() != GENESIS_PREV_HASH {
                return Err(ReportError::PrevHashMismatch { seq });
            }
            // The start of a chain: nothing before it, so no baseline, no
            // device position and no AWD state may be claimed.
            empty = ChainHead {
                seq: 0,
                hash: [0; 32],
                period_end_ms: next.report.header.period.start_ms,
                counters: BTreeMap::new(),
                positions: BTreeMap::new(),
                awd: BTreeMap::new(),
            };
            &empty
        }
    };
    let genesis = prev.is_none();
    if !genesis {
        if seq <= p.seq {
            return Err(ReportError::Replay { seq });
        }
        if seq != p.seq + 1 {
            return Err(ReportError::ChainSeqGap {
                expected: p.seq + 1,
                found: seq,
            });
        }
        if next.prev_hash() != hex(&p.hash) {
            return Err(ReportError::PrevHashMismatch { seq });
        }
    }
    if next.report.header.period.start_ms != p.period_end_ms {
        return Err(ReportError::PeriodDiscontinuity { seq });
    }
    for s in &next.report.series {
        if let Some(c) = &s.counter {
            let want = p.counters.get(&(s.device.clone(), s.channel.to_string()));
            if c.baseline.as_ref() != want {
                return Err(ReportError::BaselineMismatch {
                    device: s.device.clone(),
                    channel: s.channel.to_string(),
                });
            }
        }
    }
    // Every device the chain has seen continues where it ended.
    let stated: BTreeMap<&DeviceId, u64> = next
        .report
        .continuity
        .iter()
        .map(|c| (&c.device, c.after_seq))
        .collect();
    for (device, last) in &p.positions {
        let got = stated.get(device).copied();
        if got != Some(*last) {
            return Err(ReportError::ContinuityChain {
                device: device.clone(),
                stated: got,
                expected: Some(*last),
            });
        }
    }
    for (device, after) in &stated {
        if !p.positions.contains_key(*device) && *after != 0 {
            return Err(ReportError::ContinuityChain {
                device: (*device).clone(),
                stated: Some(*after),
                expected: None,
            });
        }
    }
    // Each AWD calculation starts from the chain's last end state for it.
    for c in &next.report.calculations {
        let Some(start) = &c.awd_start else {
            continue;
        };
        let want = p.awd.get(&c.id).cloned().unwrap_or_default();
        if *start != want {
            return Err(ReportError::AwdChainMismatch {
                calculation: c.id.clone(),
            });
        }
    }
    Ok(())
}

/// Chain continuity over many reports, per gateway.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    heads: BTreeMap<String, ChainHead>,
    seen: BTreeMap<(String, u64), Hash>,
    allow_mid_chain_start: bool,
}

impl Chain {
    /// A chain checker; the first report of each gateway must be seq 1
    /// unless `allow_mid_chain_start` (an auditor given a later slice).
    pub fn new(allow_mid_chain_start: bool) -> Chain {
        Chain {
            allow_mid_chain_start,
            ..Chain::default()
        }
    }

    /// Accepts `r` as the next report of its gateway, or says why not.
    pub fn push(&mut self, r: &VerifiedReport) -> Result<(), ReportError> {
        let gw = String::from(r.gateway());
        if self.seen.contains_key(&(gw.clone(), r.seq())) {
            return Err(ReportError::Replay { seq: r.seq() });
        }
        let prev = self.heads.get(&gw);
        check_link(prev, r, self.allow_mid_chain_start)?;
        let head = ChainHead::of(r, prev);
        self.seen.insert((gw.clone(), r.seq()), r.hash);
        self.heads.insert(gw, head);
        Ok(())
    }

    /// Last accepted head of `gateway`.
    pub fn head(&self, gateway: &str) -> Option<&ChainHead> {
        self.heads.get(gateway)
    }
}

/// A device signature as base64url, for building frame records.
pub fn signature_b64(sig: &[u8; 64]) -> String {
    b64(sig)
}
