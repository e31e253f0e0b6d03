//! Events: facts about the site and the gateway that a report must carry
//! besides readings (restarts, clock jumps, full buffer, devices going
//! offline, rejected frames, Modbus faults, upload rejections).
//!
//! Events are recorded durably by the gateway when they happen and copied
//! into the report of the period they fall in.

use crate::ids::DeviceId;
use alloc::string::String;
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The gateway process started (detail: version, buffer state).
    GatewayStarted,
    /// The gateway stopped cleanly.
    GatewayStopped,
    /// The wall clock jumped (detail: by how much).
    ClockJump,
    /// The buffer reached its byte limit; new frames are refused (not acked).
    BufferFull,
    /// The buffer is below its limit again.
    BufferRecovered,
    /// A device stopped reporting.
    DeviceOffline,
    /// A device reports again.
    DeviceOnline,
    /// The configuration changed since the last start.
    ConfigChanged,
    /// A frame was rejected (detail: reason).
    FrameRejected,
    /// A frame's device signature did not verify.
    SignatureRejected,
    /// A device answered a Modbus request with an exception.
    ModbusException,
    /// A Modbus device did not answer in time.
    ModbusTimeout,
    /// The backend refused a report permanently.
    UploadRejected,
    /// The buffer's storage files needed a repair at open (detail: which
    /// file, why; e.g. an unfinished sled snapshot after a full disk).
    BufferRepaired,
    /// Frames of a device will never arrive and were given up, so its
    /// sequence may continue past them (`seqs`: the range; `detail` starts
    /// with the cause: `operator`, `timeout`, `missing_from_buffer`,
    /// `left_out`). Reports account for these seqs as given up.
    FramesGivenUp,
    /// The external MQTT broker lost the gateway's session (reconnect with
    /// `session_present = 0`): messages published meanwhile were not kept.
    BrokerSessionLost,
    /// A Modbus device cannot be reached: connection refused, host name not
    /// resolved, serial port missing.
    ModbusUnreachable,
    /// A Modbus connection broke mid-exchange or the answer was malformed.
    ModbusLinkError,
    /// A Modbus device answers every configured value again (detail: after
    /// how long degraded or down).
    ModbusRecovered,
    /// A Modbus device answered, but a value does not decode (NaN, SunSpec
    /// "not implemented", overflow).
    ModbusBadValue,
    /// A buffer write failed (I/O error, disk full) and the gateway reopened
    /// the buffer from disk (detail: the error, how long it took).
    BufferReopened,
    /// Free space on the data directory's file system fell below the alarm
    /// threshold (or rose back to between the thresholds).
    DiskSpaceLow,
    /// Free space fell below the refusal threshold: new frames are refused
    /// (devices keep them) until space returns.
    DiskSpaceCritical,
    /// Free space is above the alarm threshold again.
    DiskSpaceRecovered,
    /// A LoRaWAN device's uplink frame counter started a new epoch: the
    /// network server reported a join, the device address changed, or the
    /// frame counter went backwards without either (detail: the cause,
    /// `join`, `dev_addr_change` or `fcnt_backwards`, then the devEui, the
    /// counters and addresses). Lost uplinks are counted only within an
    /// epoch.
    LorawanSessionReset,
    /// A LoRaWAN device's frame counter jumped within an epoch: uplinks were
    /// lost on the radio or at the network server (detail: the fCnt range,
    /// how many, between which received uplinks). The readings they carried
    /// are missing; with a nominal sample interval the time is a gap in the
    /// device's series.
    LorawanUplinksLost,
    /// The upload backlog (reports not confirmed by the backend: count,
    /// bytes, or age of the oldest) reached an alarm limit (detail: the
    /// measures and the limits). Readings stay buffered until delivered.
    UploadBacklogHigh,
    /// The upload backlog is below half of every alarm limit again.
    UploadBacklogCleared,
}

impl EventKind {
    /// Stable snake_case name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::GatewayStarted => "gateway_started",
            EventKind::GatewayStopped => "gateway_stopped",
            EventKind::ClockJump => "clock_jump",
            EventKind::BufferFull => "buffer_full",
            EventKind::BufferRecovered => "buffer_recovered",
            EventKind::DeviceOffline => "device_offline",
            EventKind::DeviceOnline => "device_online",
            EventKind::ConfigChanged => "config_changed",
            EventKind::FrameRejected => "frame_rejected",
            EventKind::SignatureRejected => "signature_rejected",
            EventKind::ModbusException => "modbus_exception",
            EventKind::ModbusTimeout => "modbus_timeout",
            EventKind::UploadRejected => "upload_rejected",
            EventKind::BufferRepaired => "buffer_repaired",
            EventKind::FramesGivenUp => "frames_given_up",
            EventKind::BrokerSessionLost => "broker_session_lost",
            EventKind::ModbusUnreachable => "modbus_unreachable",
            EventKind::ModbusLinkError => "modbus_link_error",
            EventKind::ModbusRecovered => "modbus_recovered",
            EventKind::ModbusBadValue => "modbus_bad_value",
            EventKind::BufferReopened => "buffer_reopened",
            EventKind::DiskSpaceLow => "disk_space_low",
            EventKind::DiskSpaceCritical => "disk_space_critical",
            EventKind::DiskSpaceRecovered => "disk_space_recovered",
            EventKind::LorawanSessionReset => "lorawan_session_reset",
            EventKind::LorawanUplinksLost => "lorawan_uplinks_lost",
            EventKind::UploadBacklogHigh => "upload_backlog_high",
            EventKind::UploadBacklogCleared => "upload_backlog_cleared",
        }
    }
}

/// An inclusive range of one device's frame sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqRange {
    /// First seq of the range.
    pub first: u64,
    /// Last seq of the range (`>= first`).
    pub last: u64,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Gateway clock when it happened (Unix ms).
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The device concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// The device's frames concerned (`frames_given_up`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqs: Option<SeqRange>,
    /// Human-readable detail (never secrets).
    pub detail: String,
}

impl Event {
    /// An event without a seq range.
    pub fn new(
        time_ms: u64,
        kind: EventKind,
        device: Option<DeviceId>,
        detail: impl Into<String>,
    ) -> Event {
        Event {
            time_ms,
            kind,
            device,
            seqs: None,
            detail: detail.into(),
        }
    }
}
