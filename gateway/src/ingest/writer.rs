//! The durable writer: the single task that appends frames to the buffer.
//!
//! Group commit by natural batching: while one batch is being written and
//! flushed, new requests queue up; the next batch takes all of them (up to
//! `max_frames`). Under load, batches grow and flushes per frame fall; when
//! idle, a lone frame is written at once. An optional `window` waits a little
//! for more frames before a small commit.
//!
//! Invariant: a request's reply (and its device's application ack) is sent
//! only after `Buffer::append` returned, i.e. after the flush.

use super::admit::WireFormat;
use super::stats::IngestStats;
use crate::buffer::{AppendOutcome, Buffer, Incoming};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::DeviceId;
use mrv_shared::wire::{Ack, Frame};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

/// An application ack to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOut {
    /// To whom.
    pub device: DeviceId,
    /// What.
    pub ack: Ack,
    /// In which form.
    pub format: WireFormat,
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Wait this long for more frames before committing a batch smaller than `max_frames`.
    pub window: Duration,
    /// Most frames per commit.
    pub max_frames: usize,
}

/// Runs until every sender of `requests` is dropped (`Ok`), or until a
/// buffer write fails (`Err`: the buffer must be reopened, i.e. the gateway
/// restarted; nothing unacked is lost, devices still hold it).
pub async fn run_writer(
    buffer: Buffer,
    mut requests: mpsc::UnboundedReceiver<WriteRequest>,
    acks: mpsc::UnboundedSender<AckOut>,
    stats: Arc<IngestStats>,
    stored: tokio::sync::broadcast::Sender<Arc<Incoming>>,
    settings: WriterSettings,
    now_ms: impl Fn() -> u64 + Send + 'static,
) -> Result<(), crate::buffer::StoreError> {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        gather(&mut requests, &mut batch, settings).await;
        let (incoming, meta): (Vec<Incoming>, Vec<_>) = batch
            .into_iter()
            .map(|r| (r.incoming, (r.origin, r.reply)))
            .unzip();
        let frames: Vec<(DeviceId, u64, usize)> = incoming
            .iter()
            .map(|i| (i.frame.device.clone(), i.frame.seq, i.frame.samples.len()))
            .collect();
        let copies = (stored.receiver_count() > 0).then(|| incoming.clone());
        let buf = buffer.clone();
        let result = tokio::task::spawn_blocking(move || buf.append(incoming)).await;
        let result = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // Replies are dropped: the frames are not acked, devices keep
                // them. After a failed write the buffer refuses writes until
                // it is reopened (its memory may be ahead of the disk), so
                // ingest stops here and the gateway restarts.
                tracing::error!(error = %e, frames = frames.len(), "buffer write failed; ingest stops, frames are not acked and devices keep them; the gateway must restart");
                return Err(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "buffer write task failed");
                continue;
            }
        };
        IngestStats::add(&stats.commits, 1);
        for (outcome, copy) in result.outcomes.iter().zip(copies.into_iter().flatten()) {
            if *outcome == AppendOutcome::Stored {
                let _ = stored.send(Arc::new(copy));
            }
        }
        let mut formats: HashMap<DeviceId, WireFormat> = HashMap::new();
        let mut events = Vec::new();
        for ((outcome, (origin, reply)), (device, seq, n)) in
            result.outcomes.into_iter().zip(meta).zip(frames)
        {
            match &outcome {
                AppendOutcome::Stored => {
                    IngestStats::add(&stats.frames_stored, 1);
                    IngestStats::add(&stats.readings_stored, n as u64);
                }
                AppendOutcome::Duplicate => IngestStats::add(&stats.duplicates, 1),
                AppendOutcome::BufferFull => IngestStats::add(&stats.refused_buffer_full, 1),
                AppendOutcome::Regressed => {
                    stats.count_reject("seq_regressed");
                    tracing::warn!(%device, seq, "frame rejected: sequence number from the past after a device reset; device told to renumber");
                    events.push(Event {
                        time_ms: now_ms(),
                        kind: EventKind::FrameRejected,
                        device: Some(device.clone()),
                        detail: format!("seq_regressed: seq {seq} re-used after a device reset"),
                    });
                }
            }
            if let Origin::Device(format) = origin {
                formats.insert(device, format);
            }
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        // Full/recovered transitions are recorded as events by the buffer itself.
        if !events.is_empty() {
            let buf = buffer.clone();
            match tokio::task::spawn_blocking(move || buf.record_events(&events)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "could not record events"),
                Err(e) => tracing::error!(error = %e, "event write task failed"),
            }
        }
        for (device, ack) in result.acks {
            if let Some(&format) = formats.get(&device) {
                let _ = acks.send(AckOut {
                    device,
                    ack,
                    format,
                });
            }
        }
    }
    Ok(())
}

async fn gather(
    requests: &mut mpsc::UnboundedReceiver<WriteRequest>,
    batch: &mut Vec<WriteRequest>,
    s: WriterSettings,
) {
    while batch.len() < s.max_frames {
        match requests.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    if batch.len() < s.max_frames && !s.window.is_zero() {
        let deadline = tokio::time::Instant::now() + s.window;
        while batch.len() < s.max_frames {
            match tokio::time::timeout_at(deadline, requests.recv()).await {
                Ok(Some(r)) => batch.push(r),
                _ => break,
            }
        }
    }
}
