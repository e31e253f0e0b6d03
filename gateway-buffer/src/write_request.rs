//! The request the gateway's single writer task takes: a frame, where it
//! came from, and where to tell the outcome once it is durable.
//!
//! Every producer on the ingest side (the MQTT intake, the Modbus pollers,
//! the mapping stage) sends these to the writer (`mrv_gateway_ingest::ingest::writer`),
//! which group-commits them with [`crate::Buffer::append`]. Invariant: a
//! `reply` is sent only after the append returned, i.e. after the flush; it
//! is dropped, never answered, when the store failed.

use crate::{AppendOutcome, Incoming};
use mrv_shared::wire::{Frame, WireFormat};
use tokio::sync::oneshot;

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A device over MQTT, in this form; it gets application acks.
    Device(WireFormat),
    /// Produced by the gateway itself (Modbus poller); the buffer assigns the
    /// sequence number; no ack is sent anywhere.
    Gateway,
}

/// One frame to write.
#[derive(Debug)]
pub struct WriteRequest {
    /// The frame and its receipt time.
    pub incoming: Incoming,
    /// Where it came from.
    pub origin: Origin,
    /// Told the outcome once the write is durable (dropped on store failure).
    pub reply: Option<oneshot::Sender<AppendOutcome>>,
}

impl WriteRequest {
    /// A frame the gateway produced (e.g. a Modbus poll): `frame.seq` should
    /// be 0 and the buffer assigns the next gap-free sequence number.
    pub fn gateway_sequenced(frame: Frame, received_ms: u64) -> Self {
        Self {
            incoming: Incoming { frame, received_ms },
            origin: Origin::Gateway,
            reply: None,
        }
    }

    /// A frame from a device; `reply` hears the outcome after the flush.
    pub fn from_device(
        frame: Frame,
        received_ms: u64,
        format: WireFormat,
        reply: oneshot::Sender<AppendOutcome>,
    ) -> Self {
        Self {
            incoming: Incoming { frame, received_ms },
            origin: Origin::Device(format),
            reply: Some(reply),
        }
    }
}
