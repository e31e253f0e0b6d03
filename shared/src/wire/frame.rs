//! [`Frame`]: one device's batch of samples; [`Ack`]: the gateway's answer.
//!
//! Frame rules (checked by [`Frame::validate`], enforced by every decoder):
//! - `seq >= 1`; a device numbers its frames 1, 2, 3, ... with no gaps, across
//!   reboots (the counter lives in flash);
//! - `firmware` is at most 32 bytes of UTF-8;
//! - 1 to 255 channels with distinct ids; 1 to [`MAX_SAMPLES`] samples;
//! - every sample's `channel` indexes the channel table; quality bits are known;
//! - `Status` values are 0 or 1.

use super::MAX_SAMPLES;
use crate::ids::{ChannelId, DeviceId, SiteId};
use crate::quantity::Quantity;
use crate::reading::{Channel, Quality, Reading, Sample};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Longest firmware version string, in bytes.
pub const MAX_FIRMWARE_LEN: usize = 32;

/// A device's batch of samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Site the device belongs to.
    pub site: SiteId,
    /// The device.
    pub device: DeviceId,
    /// Gap-free frame sequence number per device, starting at 1.
    pub seq: u64,
    /// Device boot counter (increments at every start).
    pub boot: u32,
    /// Firmware version, free text up to 32 bytes.
    pub firmware: String,
    /// Device clock (Unix ms) that sample offsets count from; `None` when the
    /// device has no synchronised clock (the gateway's receipt time is used).
    pub base_time_ms: Option<u64>,
    /// Channel table.
    pub channels: Vec<Channel>,
    /// The samples.
    pub samples: Vec<Sample>,
    /// Ed25519 signature by the device key over the canonical binary form
    /// (see [`super::signature`]); `None` for unsigned devices.
    pub signature: Option<[u8; 64]>,
}

/// A frame rule that is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// `seq` was 0.
    ZeroSeq,
    /// Firmware string longer than 32 bytes.
    FirmwareTooLong(usize),
    /// No channels, or more than 255.
    ChannelCount(usize),
    /// Two channels share an id.
    DuplicateChannel(ChannelId),
    /// No samples, or more than [`MAX_SAMPLES`].
    SampleCount(usize),
    /// A sample points past the channel table.
    ChannelIndex(u8),
    /// Unknown quality bits.
    Quality(u8),
    /// A status value other than 0 or 1.
    StatusValue(i64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ZeroSeq => write!(f, "sequence number 0 (sequences start at 1)"),
            FrameError::FirmwareTooLong(n) => {
                write!(
                    f,
                    "firmware version is {n} bytes, at most {MAX_FIRMWARE_LEN}"
                )
            }
            FrameError::ChannelCount(n) => write!(f, "{n} channels, 1 to 255 allowed"),
            FrameError::DuplicateChannel(c) => write!(f, "channel {c} appears twice"),
            FrameError::SampleCount(n) => write!(f, "{n} samples, 1 to {MAX_SAMPLES} allowed"),
            FrameError::ChannelIndex(i) => write!(f, "sample refers to missing channel {i}"),
            FrameError::Quality(b) => write!(f, "unknown quality bits {b:#04x}"),
            FrameError::StatusValue(v) => write!(f, "status value {v}, must be 0 or 1"),
        }
    }
}

impl Frame {
    /// Checks the frame rules listed in the module doc.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.seq == 0 {
            return Err(FrameError::ZeroSeq);
        }
        if self.firmware.len() > MAX_FIRMWARE_LEN {
            return Err(FrameError::FirmwareTooLong(self.firmware.len()));
        }
        if self.channels.is_empty() || self.channels.len() > 255 {
            return Err(FrameError::ChannelCount(self.channels.len()));
        }
        for (i, c) in self.channels.iter().enumerate() {
            if self.channels[..i].iter().any(|o| o.id == c.id) {
                return Err(FrameError::DuplicateChannel(c.id.clone()));
            }
        }
        if self.samples.is_empty() || self.samples.len() > MAX_SAMPLES {
            return Err(FrameError::SampleCount(self.samples.len()));
        }
        for s in &self.samples {
            let Some(ch) = self.channels.get(usize::from(s.channel)) else {
                return Err(FrameError::ChannelIndex(s.channel));
            };
            if s.quality.0 & !Quality::KNOWN != 0 {
                return Err(FrameError::Quality(s.quality.0));
            }
            if ch.quantity == Quantity::Status && !(0..=1).contains(&s.value) {
                return Err(FrameError::StatusValue(s.value));
            }
        }
        Ok(())
    }

    /// Device time of a sample, if the frame has a base time.
    pub fn sample_time_ms(&self, sample: &Sample) -> Option<u64> {
        self.base_time_ms
            .map(|t| t.saturating_add(u64::from(sample.offset_ms)))
    }

    /// Flattens the frame into readings, stamped with the receipt time.
    pub fn readings(&self, received_ms: u64) -> impl Iterator<Item = Reading> + '_ {
        self.samples.iter().enumerate().map(move |(i, s)| {
            let ch = &self.channels[usize::from(s.channel)];
            Reading {
                device: self.device.clone(),
                channel: ch.id.clone(),
                quantity: ch.quantity,
                kind: ch.kind,
                value: s.value,
                device_time_ms: self.sample_time_ms(s),
                received_ms,
                seq: self.seq,
                index: u16::try_from(i).unwrap_or(u16::MAX),
                quality: s.quality,
            }
        })
    }
}

/// What the gateway tells a device about its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckStatus {
    /// Frames up to `acked_seq` are durable; keep sending.
    Ok,
    /// The gateway's buffer is full: frames up to `acked_seq` are durable,
    /// newer ones were not stored. Keep them and retry later.
    BufferFull,
    /// The device sent a sequence number at or below one already stored but
    /// from a later boot (its counter was reset). Continue numbering after
    /// `acked_seq`; the frames it re-used numbers for were not stored.
    SeqRegressed,
}

impl AckStatus {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            AckStatus::Ok => 0,
            AckStatus::BufferFull => 1,
            AckStatus::SeqRegressed => 2,
        }
    }
    /// Status for a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(AckStatus::Ok),
            1 => Some(AckStatus::BufferFull),
            2 => Some(AckStatus::SeqRegressed),
            _ => None,
        }
    }
    /// Name used in the JSON form and logs.
    pub fn name(self) -> &'static str {
        match self {
            AckStatus::Ok => "ok",
            AckStatus::BufferFull => "buffer_full",
            AckStatus::SeqRegressed => "seq_regressed",
        }
    }
}

/// The gateway's application acknowledgement, published on the device's ack
/// topic after a durable write: every frame with `seq <= acked_seq` is on
/// disk at the gateway and the device may forget it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// Highest contiguous durable sequence number (0 = none yet).
    pub acked_seq: u64,
    /// What the device should do next.
    pub status: AckStatus,
}
