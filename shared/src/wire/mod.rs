//! The wire between devices and the gateway.
//!
//! - [`frame`]: [`Frame`], one device's batch of samples with a gap-free
//!   sequence number, and [`Ack`], the gateway's durable acknowledgement.
//! - [`binary`]: the compact, versioned, canonical binary form (our firmware).
//! - [`json`]: the JSON form (third-party devices).
//! - [`topic`]: the MQTT topic scheme.
//! - [`signature`]: device signatures (Ed25519 over the canonical binary form).
//!
//! Decoders return [`DecodeError::Incomplete`] when given a prefix of a valid
//! message (the caller may wait for more bytes; nothing is consumed) and
//! [`DecodeError::Invalid`] with a [`Invalid`] reason for anything else.
//! The protocol is documented in `docs/PROTOCOL.md`.

pub mod binary;
pub mod frame;
pub mod json;
pub mod signature;
pub mod topic;
pub mod varint;

pub use frame::{Ack, AckStatus, Frame, FrameError};

/// The form a device used for a frame; its acks go back in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// Compact binary (starts with `"MF"`), [`binary`].
    Binary,
    /// JSON (starts with `{`), [`json`].
    Json,
}

use core::fmt;

/// Largest encoded frame we accept, in bytes (binary or JSON).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Most samples in one frame.
pub const MAX_SAMPLES: usize = 4096;

/// A decoder's answer when it cannot return a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A valid prefix: at least `needed` more bytes are required.
    #[error("incomplete message: {needed} more bytes needed")]
    Incomplete {
        /// Lower bound on the missing bytes.
        needed: usize,
    },
    /// Not a valid message, and no more bytes will make it one.
    #[error("invalid message: {0}")]
    Invalid(Invalid),
}

/// Why a message is invalid. Each variant is also a counter label
/// ([`Invalid::label`]), so keep labels stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// First bytes are not our magic number.
    BadMagic,
    /// A version this decoder does not know.
    UnsupportedVersion(u8),
    /// Flag bits that are reserved are set.
    ReservedFlags(u8),
    /// Message larger than [`MAX_FRAME_BYTES`].
    TooLarge(usize),
    /// CRC mismatch.
    BadChecksum {
        /// CRC in the message.
        stored: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// A varint that is too long or not minimally encoded.
    BadVarint(&'static str),
    /// An identifier breaks the identifier rules.
    BadId(&'static str),
    /// A text field is not UTF-8 or too long.
    BadText(&'static str),
    /// Unknown quantity code.
    UnknownQuantity(u8),
    /// Unknown value-kind code.
    UnknownKind(u8),
    /// Unknown quality bits.
    UnknownQuality(u8),
    /// The frame breaks a frame rule (see [`FrameError`]).
    Frame(FrameError),
    /// The body length does not match the fields it holds.
    LengthMismatch,
    /// Bytes after the end of the message.
    TrailingBytes(usize),
    /// JSON that does not parse or does not fit the schema.
    Json(alloc::string::String),
}

impl Invalid {
    /// A short, stable name for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Invalid::BadMagic => "bad_magic",
            Invalid::UnsupportedVersion(_) => "unsupported_version",
            Invalid::ReservedFlags(_) => "reserved_flags",
            Invalid::TooLarge(_) => "oversized",
            Invalid::BadChecksum { .. } => "bad_checksum",
            Invalid::BadVarint(_) => "bad_varint",
            Invalid::BadId(_) => "bad_id",
            Invalid::BadText(_) => "bad_text",
            Invalid::UnknownQuantity(_) => "unknown_quantity",
            Invalid::UnknownKind(_) => "unknown_kind",
            Invalid::UnknownQuality(_) => "unknown_quality",
            Invalid::Frame(_) => "frame_rule",
            Invalid::LengthMismatch => "length_mismatch",
            Invalid::TrailingBytes(_) => "trailing_bytes",
            Invalid::Json(_) => "bad_json",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::BadMagic => write!(f, "bad magic number"),
            Invalid::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            Invalid::ReservedFlags(b) => write!(f, "reserved flag bits set: {b:#04x}"),
            Invalid::TooLarge(n) => write!(f, "{n} bytes, at most {MAX_FRAME_BYTES} allowed"),
            Invalid::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum {stored:#010x} does not match computed {computed:#010x}"
                )
            }
            Invalid::BadVarint(field) => write!(f, "bad varint in field {field}"),
            Invalid::BadId(field) => write!(f, "invalid identifier in field {field}"),
            Invalid::BadText(field) => write!(f, "invalid text in field {field}"),
            Invalid::UnknownQuantity(c) => write!(f, "unknown quantity code {c}"),
            Invalid::UnknownKind(c) => write!(f, "unknown value kind code {c}"),
            Invalid::UnknownQuality(b) => write!(f, "unknown quality bits {b:#04x}"),
            Invalid::Frame(e) => write!(f, "{e}"),
            Invalid::LengthMismatch => write!(f, "body length does not match its fields"),
            Invalid::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
            Invalid::Json(e) => write!(f, "JSON: {e}"),
        }
    }
}

impl From<Invalid> for DecodeError {
    fn from(i: Invalid) -> Self {
        DecodeError::Invalid(i)
    }
}
