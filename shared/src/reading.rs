//! Readings: a [`Sample`] inside a device frame, the flattened [`Reading`] a
//! gateway stores and reports, and the [`Quality`] flags both carry.

use crate::ids::{ChannelId, DeviceId};
use crate::quantity::{Quantity, ValueKind};
use serde::{Deserialize, Serialize};

/// Quality flags of one value (a bit set; `0` is good).
///
/// A value with [`Quality::UNAVAILABLE`] carries no measurement (its value is
/// `0` and must not be used); it exists so that "we asked and got nothing"
/// is a recorded fact rather than a silent gap or a stale repeated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quality(pub u8);

impl Quality {
    /// A good measurement.
    pub const GOOD: Quality = Quality(0);
    /// No value: device exception, timeout, sensor unplugged.
    pub const UNAVAILABLE: Quality = Quality(0x01);
    /// Outside plausibility limits or the sensor's range (e.g. 4-20 mA open loop).
    pub const OUT_OF_RANGE: Quality = Quality(0x02);
    /// Plausible but doubtful (noise, unstable reading).
    pub const SUSPECT: Quality = Quality(0x04);
    /// The device clock was not synchronised when the value was taken.
    pub const CLOCK_UNSYNCED: Quality = Quality(0x08);
    /// A counter restarted (device reboot or meter reset) at this value.
    pub const COUNTER_RESET: Quality = Quality(0x10);
    /// The meter was outside its calibration window.
    pub const CALIBRATION_EXPIRED: Quality = Quality(0x20);
    /// The device stated more resolution than the base unit holds: the value
    /// was rounded to the base unit by the rule of [`crate::conversion`]
    /// (nearest, halves away from zero), so it is off by at most half a base
    /// unit. Still usable.
    pub const ROUNDED: Quality = Quality(0x40);
    /// Every flag defined so far; other bits are invalid on the wire.
    pub const KNOWN: u8 = 0x7f;

    /// True when no flag is set.
    pub fn is_good(self) -> bool {
        self.0 == 0
    }
    /// True when every flag of `other` is set in `self`.
    pub fn contains(self, other: Quality) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` with the flags of `other` added.
    #[must_use]
    pub fn with(self, other: Quality) -> Quality {
        Quality(self.0 | other.0)
    }
    /// True when the value may be used in aggregates and calculations.
    pub fn is_usable(self) -> bool {
        !self.contains(Quality::UNAVAILABLE) && !self.contains(Quality::OUT_OF_RANGE)
    }
    /// Names of the set flags, for logs and reports.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        const NAMES: [(u8, &str); 7] = [
            (0x01, "unavailable"),
            (0x02, "out_of_range"),
            (0x04, "suspect"),
            (0x08, "clock_unsynced"),
            (0x10, "counter_reset"),
            (0x20, "calibration_expired"),
            (0x40, "rounded"),
        ];
        NAMES
            .into_iter()
            .filter(move |(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| name)
    }
}

/// A channel of a frame's channel table: what the samples that point at it measure.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Channel {
    /// Channel name, unique within the frame.
    pub id: ChannelId,
    /// What is measured (fixes the unit).
    pub quantity: Quantity,
    /// How values relate over time.
    pub kind: ValueKind,
}

/// One value inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Index into the frame's channel table.
    pub channel: u8,
    /// Milliseconds after the frame's base time.
    pub offset_ms: u32,
    /// Value in the base unit of the channel's quantity.
    pub value: i64,
    /// Quality flags.
    pub quality: Quality,
}

/// A reading as the gateway stores and reports it: one sample, flattened
/// with its device, frame sequence and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reading {
    /// The device that produced it.
    pub device: DeviceId,
    /// The channel of that device.
    pub channel: ChannelId,
    /// What is measured.
    pub quantity: Quantity,
    /// How values relate over time.
    pub kind: ValueKind,
    /// Value in the base unit of `quantity`.
    pub value: i64,
    /// Device clock at the sample (Unix ms), if the device has a clock.
    pub device_time_ms: Option<u64>,
    /// Gateway clock when the frame carrying it was received (Unix ms).
    pub received_ms: u64,
    /// Sequence number of the frame that carried it (gap-free per device).
    pub seq: u64,
    /// Position of the sample within that frame.
    pub index: u16,
    /// Quality flags.
    pub quality: Quality,
}

impl Reading {
    /// The timestamp a report uses: the device time if known, else receipt time.
    pub fn time_ms(&self) -> u64 {
        self.device_time_ms.unwrap_or(self.received_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn quality_flags_compose_and_name() {
        let q = Quality::GOOD
            .with(Quality::SUSPECT)
            .with(Quality::CLOCK_UNSYNCED);
        assert!(!q.is_good());
        assert!(q.is_usable());
        assert!(q.contains(Quality::SUSPECT));
        assert_eq!(q.names().collect::<Vec<_>>(), ["suspect", "clock_unsynced"]);
        assert!(!Quality::UNAVAILABLE.is_usable());
    }
}
