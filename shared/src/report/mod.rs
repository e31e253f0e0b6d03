//! Signed monitoring reports: everything a gateway needs to build one and
//! everything an MRV backend or auditor needs to check one.
//!
//! - [`model`]: the report ([`Report`]) and the Merkle leaf format;
//! - [`canonical`]: RFC 8785 JCS, the bytes that are signed;
//! - [`merkle`]: RFC 6962 tree hash and inclusion proofs over readings;
//! - [`continuity`]: per-device frame seq ranges, so omissions are caught;
//! - [`series`]: aggregates per (device, channel), gaps, counter deltas;
//! - [`calc`]: the calculation blocks (bindings, exclusions, inputs, RE/PE/ER);
//! - [`jws`], [`jwk`]: JWS compact Ed25519 and JWK keys;
//! - [`registry`]: the device registry verification trusts (fails closed);
//! - [`parallel`]: chunked parallel map for per-reading work;
//! - [`verify`]: [`verify_jws`], [`check_contents`], [`verify_report`], [`Chain`].
//!
//! The normative specification of all of it, with test vectors, is
//! `docs/REPORT-FORMAT.md`.
//!
//! The stored form of a report is its compact JWS, byte for byte; the chain
//! hash (`prev_hash` of the next report) is SHA-256 of exactly those bytes.
//! Verifiers never re-serialise before checking a signature.

pub mod calc;
pub mod canonical;
pub mod continuity;
pub mod jwk;
pub mod jws;
pub mod merkle;
pub mod model;
pub mod parallel;
pub mod registry;
pub mod series;
pub mod verify;

pub use continuity::ContinuityError;
pub use model::Report;
pub use registry::{DeviceRegistry, TrustedDevices};
pub use verify::{
    Chain, DeviceTrust, KeySet, VerifiedReport, check_contents, verify_jws, verify_report,
};

use crate::ids::DeviceId;
use alloc::string::String;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Why a report is not accepted. Each variant names one reason;
/// [`ReportError::label`] gives a stable short name for scripts and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not a compact JWS, bad base64, or a payload that is not a report.
    #[error("malformed: {0}")]
    Malformed(String),
    /// `alg` other than `EdDSA` / `Ed25519`.
    #[error("unsupported JWS algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No trusted key under the JWS `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// A key that cannot be used.
    #[error("bad key: {0}")]
    BadKey(String),
    /// The gateway signature does not verify with the trusted key of its `kid`.
    #[error(
        "bad signature: the JWS does not verify with the trusted key for kid {kid:?} (thumbprint {thumbprint})"
    )]
    BadSignature {
        /// The JWS `kid`.
        kid: String,
        /// RFC 7638 thumbprint of the key that was tried.
        thumbprint: String,
    },
    /// Schema version unknown.
    #[error("unsupported report schema {0}")]
    UnsupportedSchema(u32),
    /// JWS `kid` differs from the report header's.
    #[error("JWS kid {header:?} differs from report kid {report:?}")]
    KidMismatch {
        /// In the JWS header.
        header: String,
        /// In the report header.
        report: String,
    },
    /// A sequence number was skipped (a report is missing or reordered).
    #[error(
        "broken chain: expected seq {expected}, found {found} (verifying a slice of a chain? allow a start after seq 1, e.g. `verify --allow-mid-chain`)"
    )]
    ChainSeqGap {
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// `prev_hash` is not the hash of the previous report.
    #[error("broken chain: prev_hash of seq {seq} does not match the previous report")]
    PrevHashMismatch {
        /// Seq of the report.
        seq: u64,
    },
    /// A sequence number seen before (replay).
    #[error("replay: seq {seq} was already accepted")]
    Replay {
        /// Seq.
        seq: u64,
    },
    /// The period does not start where the previous one ended.
    #[error("broken chain: period of seq {seq} does not follow the previous period")]
    PeriodDiscontinuity {
        /// Seq.
        seq: u64,
    },
    /// A counter baseline is not the previous report's last value.
    #[error(
        "broken chain: counter baseline of {device}/{channel} differs from the previous report"
    )]
    BaselineMismatch {
        /// Device.
        device: DeviceId,
        /// Channel.
        channel: String,
    },
    /// Frames not sorted by (device, seq) or duplicated.
    #[error("frames out of order or duplicated at {device} seq {seq}")]
    FrameOrder {
        /// Device.
        device: DeviceId,
        /// Frame seq.
        seq: u64,
    },
    /// `late` flag wrong.
    #[error("late flag wrong on frame {device} seq {seq}")]
    LateFlagMismatch {
        /// Device.
        device: DeviceId,
        /// Frame seq.
        seq: u64,
    },
    /// Stated reading count differs from the readings.
    #[error("reading count {stated} stated, {actual} present")]
    ReadingCountMismatch {
        /// Stated.
        stated: u64,
        /// Present.
        actual: u64,
    },
    /// Merkle root differs from the readings.
    #[error("Merkle root does not match the readings")]
    MerkleMismatch,
    /// A frame from a device not listed in the report.
    #[error("frame from unlisted device {0}")]
    UnknownDevice(DeviceId),
    /// A signed device's frame has no signature.
    #[error("device signature missing on {device} frame {seq}")]
    DeviceSignatureMissing {
        /// Device.
        device: DeviceId,
        /// Frame seq.
        seq: u64,
    },
    /// The report lists a device key other than one the registry trusts
    /// for it over the period.
    #[error("device {0} is listed with a key the device registry does not trust for this period")]
    DeviceKeyMismatch(DeviceId),
    /// A device the registry does not know.
    #[error("device {0} is not in the device registry")]
    DeviceNotRegistered(DeviceId),
    /// A device registered as unsigned appears with a key.
    #[error("device {0} is registered as unsigned but listed with a key")]
    DeviceKeyNotRegistered(DeviceId),
    /// A device registered with keys appears unsigned.
    #[error("device {0} is registered with a signing key but listed as unsigned")]
    DeviceUnsignedMismatch(DeviceId),
    /// The frames and give-ups of a device are not continuous.
    #[error("continuity: {0}")]
    Continuity(#[from] ContinuityError),
    /// A continuity record differs from the frames and events.
    #[error("continuity record of {0} does not match the report's frames and given-up events")]
    ContinuityMismatch(DeviceId),
    /// A device's continuity does not follow the previous report.
    #[error("broken chain: device {device} {}, but {}", match stated { Some(s) => alloc::format!("continues after seq {s}"), None => alloc::string::String::from("has no continuity record") }, match expected { Some(e) => alloc::format!("the chain ended it at seq {e}"), None => alloc::string::String::from("the chain has not seen it") })]
    ContinuityChain {
        /// Device.
        device: DeviceId,
        /// The report's `after_seq` (`None`: the report has no record for it).
        stated: Option<u64>,
        /// The chain's last seq for it (`None`: not seen before).
        expected: Option<u64>,
    },
    /// The bindings of a calculation are not valid.
    #[error("bindings of calculation {calculation:?}: {why}")]
    BindingInvalid {
        /// Calculation id.
        calculation: String,
        /// What is wrong.
        why: String,
    },
    /// A calibration date that is not a real date.
    #[error("{0}")]
    InvalidDate(String),
    /// A rice AWD calculation does not start from the chain's last end state.
    #[error(
        "broken chain: awd_start of calculation {calculation:?} differs from the previous awd_end"
    )]
    AwdChainMismatch {
        /// Calculation id.
        calculation: String,
    },
    /// A device signature does not verify.
    #[error("device signature invalid on {device} frame {seq}")]
    DeviceSignatureInvalid {
        /// Device.
        device: DeviceId,
        /// Frame seq.
        seq: u64,
    },
    /// The set of series differs from the readings.
    #[error("series do not match the readings (missing or extra series)")]
    SeriesSetMismatch,
    /// A series' aggregates differ from the readings.
    #[error("aggregates of {device}/{channel} do not match the readings")]
    AggregateMismatch {
        /// Device.
        device: DeviceId,
        /// Channel.
        channel: String,
    },
    /// The calculation differs when recomputed (names the field).
    #[error("calculation mismatch: {0}")]
    CalculationMismatch(String),
}

impl ReportError {
    /// Stable short reason.
    pub fn label(&self) -> &'static str {
        match self {
            ReportError::Malformed(_) => "malformed",
            ReportError::UnsupportedAlgorithm(_) => "unsupported_alg",
            ReportError::UnknownKid(_) => "unknown_kid",
            ReportError::BadKey(_) => "bad_key",
            ReportError::BadSignature { .. } => "bad_signature",
            ReportError::UnsupportedSchema(_) => "unsupported_schema",
            ReportError::KidMismatch { .. } => "kid_mismatch",
            ReportError::ChainSeqGap { .. } => "seq_gap",
            ReportError::PrevHashMismatch { .. } => "prev_hash_mismatch",
            ReportError::Replay { .. } => "replay",
            ReportError::PeriodDiscontinuity { .. } => "period_discontinuity",
            ReportError::BaselineMismatch { .. } => "baseline_mismatch",
            ReportError::FrameOrder { .. } => "frame_order",
            ReportError::LateFlagMismatch { .. } => "late_flag_mismatch",
            ReportError::ReadingCountMismatch { .. } => "reading_count_mismatch",
            ReportError::MerkleMismatch => "merkle_mismatch",
            ReportError::UnknownDevice(_) => "unknown_device",
            ReportError::DeviceSignatureMissing { .. } => "device_signature_missing",
            ReportError::DeviceKeyMismatch(_) => "device_key_mismatch",
            ReportError::DeviceNotRegistered(_) => "device_not_registered",
            ReportError::DeviceKeyNotRegistered(_) => "device_key_not_registered",
            ReportError::DeviceUnsignedMismatch(_) => "device_unsigned_mismatch",
            ReportError::Continuity(ContinuityError::Hole { .. }) => "continuity_hole",
            ReportError::Continuity(ContinuityError::Repeat { .. }) => "continuity_repeat",
            ReportError::Continuity(ContinuityError::BadGiveUp { .. }) => "bad_give_up_event",
            ReportError::ContinuityMismatch(_) => "continuity_mismatch",
            ReportError::ContinuityChain { .. } => "continuity_chain",
            ReportError::BindingInvalid { .. } => "binding_invalid",
            ReportError::InvalidDate(_) => "invalid_date",
            ReportError::AwdChainMismatch { .. } => "awd_chain_mismatch",
            ReportError::DeviceSignatureInvalid { .. } => "device_signature_invalid",
            ReportError::SeriesSetMismatch => "series_mismatch",
            ReportError::AggregateMismatch { .. } => "aggregate_mismatch",
            ReportError::CalculationMismatch(_) => "calculation_mismatch",
        }
    }
}
