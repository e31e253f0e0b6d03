//! The durable writer: the single task that appends frames to the buffer.
//!
//! Group commit by natural batching: while one batch is being written and
//! flushed, new requests queue up; the next batch takes all of them (up to
//! `max_frames`). Under load, batches grow and flushes per frame fall; when
//! idle, a lone frame is written at once. Before a commit the writer yields
//! once so that connections already holding publishes queue them too. An
//! optional `window` (off by default) waits a little longer for more frames
//! before a small commit: fewer flushes on flash that wears, at the cost of
//! that much latency on every commit.
//!
//! Invariant: a request's reply (and its device's application ack) is sent
//! only after `Buffer::append` returned, i.e. after the flush.
//!
//! Holes (go-back-N, see `buffer::ledger`): a frame above a hole is refused
//! as `OutOfOrder` and the device re-sends from its acked seq. When
//! `give_up_after` is set, [`HoleWatch`] (pure) notices a device that has
//! been sending only frames above the same hole for that long, and the
//! writer gives the missing seqs up ([`Buffer::give_up`], a recorded
//! `frames_given_up` event) so the device's later frames are stored again.
//!
//! After a failed write (I/O error, disk full) the buffer refuses writes
//! until it is reopened. The writer then reopens it itself, with backoff
//! (0.1 s doubling to 30 s), until that works: frames that arrive meanwhile
//! are refused without an ack (devices keep them and send them again), and
//! counted (`refused_unavailable`). The reopened buffer holds what is on
//! disk (see `Buffer::reopen`), so an ack after it never covers a frame the
//! kernel dropped. A `buffer_reopened` event records each recovery.

use super::admit::WireFormat;
use super::intake::HourlyEventGate;
use super::stats::IngestStats;
use mrv_gateway_buffer::{AppendOutcome, Buffer, Incoming};
use mrv_shared::event::{Event, EventKind};
use mrv_shared::ids::DeviceId;
use mrv_shared::wire::Ack;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use mrv_gateway_buffer::write_request::{Origin, WriteRequest};

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

/// The frames one group commit stored, with their assigned seqs, in commit
/// order: what the writer broadcasts to the live view, once per commit.
pub type StoredFrames = Arc<Vec<Incoming>>;

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Wait this long for more frames before committing a batch smaller than
    /// `max_frames` (zero: commit what is queued after one yield).
    pub window: Duration,
    /// Most frames per commit.
    pub max_frames: usize,
    /// Give a hole up once a device has sent only frames above it for this
    /// long (`None`: only an operator gives frames up).
    pub give_up_after: Option<Duration>,
}

/// Which devices are stuck above a hole, and since when. Pure: the writer
/// feeds it outcomes and the time, and asks which holes are due.
#[derive(Debug, Default)]
pub struct HoleWatch {
    /// Device -> (first refusal ms, lowest seq refused as out of order).
    stuck: HashMap<DeviceId, (u64, u64)>,
}

impl HoleWatch {
    /// A frame `seq` of `device` was refused as out of order at `now_ms`.
    pub fn out_of_order(&mut self, device: &DeviceId, seq: u64, now_ms: u64) {
        let e = self.stuck.entry(device.clone()).or_insert((now_ms, seq));
        e.1 = e.1.min(seq);
    }

    /// A frame of `device` was stored: its hole (if any) is closed.
    pub fn stored(&mut self, device: &DeviceId) {
        self.stuck.remove(device);
    }

    /// Devices stuck for at least `after` at `now_ms`, with the last seq to
    /// give up (one below the lowest seq they sent above the hole); they are
    /// forgotten (a give-up that finds nothing missing is harmless).
    pub fn due(&mut self, now_ms: u64, after: Duration) -> Vec<(DeviceId, u64)> {
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let due: Vec<(DeviceId, u64)> = self
            .stuck
            .iter()
            .filter(|(_, (since, _))| now_ms.saturating_sub(*since) >= after_ms)
            .map(|(d, (_, lowest))| (d.clone(), lowest.saturating_sub(1)))
            .collect();
        for (d, _) in &due {
            self.stuck.remove(d);
        }
        due
    }
}

/// First and longest wait between reopen attempts after a failed write.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// Runs until every sender of `requests` is dropped. A failed buffer write
/// does not end it: the buffer is reopened in-process (see the module doc).
pub async fn run_writer(
    buffer: Buffer,
    mut requests: mpsc::UnboundedReceiver<WriteRequest>,
    acks: mpsc::UnboundedSender<AckOut>,
    stats: Arc<IngestStats>,
    stored: tokio::sync::broadcast::Sender<StoredFrames>,
    settings: WriterSettings,
    now_ms: impl Fn() -> u64 + Send + 'static,
) {
    let mut holes = HoleWatch::default();
    let mut invalid_gate = HourlyEventGate::default();
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
        let buf = buffer.clone();
        let result = tokio::task::spawn_blocking(move || buf.append(incoming)).await;
        let mut result = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // Replies are dropped: the frames are not acked, devices keep
                // them and send them again. Every error of `append` leaves
                // the buffer refusing writes until it is reopened (a failed
                // commit poisons it; a poisoned one answers only errors).
                IngestStats::add(&stats.write_failures, 1);
                tracing::error!(error = %e, frames = frames.len(), "buffer write failed; frames are not acked (devices keep them); reopening the buffer");
                reopen_until_it_works(&buffer, &mut requests, &stats, &now_ms, &e).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "buffer write task failed");
                continue;
            }
        };
        IngestStats::add(&stats.commits, 1);
        // The stored frames come back from the buffer (with their assigned
        // seqs), so the live view gets them without a copy, and as one
        // message per commit: one wake-up of the live feed, not one a frame.
        if stored.receiver_count() > 0 && !result.stored.is_empty() {
            let _ = stored.send(Arc::new(std::mem::take(&mut result.stored)));
        }
        let mut replies = Vec::with_capacity(meta.len());
        let mut formats: HashMap<DeviceId, WireFormat> = HashMap::new();
        let mut events = Vec::new();
        for (index, ((outcome, (origin, reply)), (device, seq, n))) in result
            .outcomes
            .into_iter()
            .zip(meta)
            .zip(frames)
            .enumerate()
        {
            match &outcome {
                AppendOutcome::Stored => {
                    IngestStats::add(&stats.frames_stored, 1);
                    IngestStats::add(&stats.readings_stored, n as u64);
                    holes.stored(&device);
                }
                AppendOutcome::OutOfOrder => {
                    IngestStats::add(&stats.out_of_order, 1);
                    holes.out_of_order(&device, seq, now_ms());
                    tracing::debug!(%device, seq, "frame above a hole refused; the device re-sends from its acked seq");
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
                        seqs: None,
                        detail: format!("seq_regressed: seq {seq} re-used after a device reset"),
                    });
                }
                AppendOutcome::Invalid => {
                    // Counted every time; logged and recorded once per
                    // device per hour (a bug that makes every frame of a
                    // source invalid must not flood the log and the reports).
                    stats.count_device_reject(device.as_str(), "invalid_frame");
                    let now = now_ms();
                    if invalid_gate.allow(device.as_str(), "invalid_frame", now) {
                        let why = result
                            .invalid
                            .iter()
                            .find(|(i, _)| *i == index)
                            .map_or_else(|| "reason not given".to_string(), |(_, r)| r.to_string());
                        let which = if seq == 0 {
                            "a gateway-numbered frame".to_string()
                        } else {
                            format!("seq {seq}")
                        };
                        tracing::warn!(%device, frame = %which, reason = %why, "frame refused by the buffer: it {why}; the other frames of its commit are stored (logged once an hour per device, every one counted as invalid_frame)");
                        events.push(Event {
                            time_ms: now,
                            kind: EventKind::FrameRejected,
                            device: Some(device.clone()),
                            seqs: None,
                            detail: format!("invalid_frame: {which} {why} (recorded once an hour per device; all are counted)"),
                        });
                    }
                }
            }
            if let Origin::Device(format) = origin {
                formats.insert(device, format);
            }
            if let Some(reply) = reply {
                replies.push((reply, outcome));
            }
        }
        // Last to first: a connection waits only on its oldest outcome, so
        // it is woken once, with all of its outcomes of this commit already
        // there (first to first would wake it for each, each wake-up a
        // PUBACK write, while this loop runs on).
        for (reply, outcome) in replies.into_iter().rev() {
            let _ = reply.send(outcome);
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
        if let Some(after) = settings.give_up_after {
            for (device, through) in holes.due(now_ms(), after) {
                let buf = buffer.clone();
                let why = format!(
                    "timeout: the device sent only frames above the hole for {} min",
                    after.as_secs() / 60
                );
                let at = now_ms();
                let d = device.clone();
                match tokio::task::spawn_blocking(move || buf.give_up(&d, through, &why, at)).await
                {
                    Ok(Ok(Some(_))) => IngestStats::add(&stats.given_up_by_timeout, 1),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        // A failed write poisons the buffer: the next append
                        // fails and reopens it.
                        tracing::error!(error = %e, %device, "giving up missing frames failed");
                    }
                    Err(e) => tracing::error!(error = %e, "give-up task failed"),
                }
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
}

/// Reopens `buffer` with backoff until it works; meanwhile refuses (drops
/// without a reply) every request that arrives. Records a `buffer_reopened`
/// event (and the repairs the reopen made) when done.
async fn reopen_until_it_works(
    buffer: &Buffer,
    requests: &mut mpsc::UnboundedReceiver<WriteRequest>,
    stats: &IngestStats,
    now_ms: &impl Fn() -> u64,
    cause: &mrv_gateway_buffer::StoreError,
) {
    let failed_ms = now_ms();
    let mut wait = REOPEN_BACKOFF.0;
    let mut attempts = 0u64;
    let mut last_error = String::new();
    loop {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                r = requests.recv() => match r {
                    Some(_) => IngestStats::add(&stats.refused_unavailable, 1),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        attempts += 1;
        let b = buffer.clone();
        match tokio::task::spawn_blocking(move || b.reopen()).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(error = %text, attempts, "buffer cannot be reopened yet; retrying");
                    last_error = text;
                }
            }
            Err(e) => tracing::error!(error = %e, "buffer reopen task failed"),
        }
        wait = (wait * 2).min(REOPEN_BACKOFF.1);
    }
    IngestStats::add(&stats.reopens, 1);
    let now = now_ms();
    tracing::info!(
        attempts,
        after_ms = now.saturating_sub(failed_ms),
        "buffer reopened; ingest resumes"
    );
    let mut events: Vec<Event> = buffer
        .take_repairs()
        .into_iter()
        .map(|r| Event {
            time_ms: now,
            kind: EventKind::BufferRepaired,
            device: None,
            seqs: None,
            detail: r.to_string(),
        })
        .collect();
    events.push(Event {
        time_ms: now,
        kind: EventKind::BufferReopened,
        device: None,
        seqs: None,
        detail: format!(
            "buffer write failed ({cause}); reopened from disk after {} ms, {attempts} attempt(s); unacked frames are sent again by their devices",
            now.saturating_sub(failed_ms)
        ),
    });
    let b = buffer.clone();
    match tokio::task::spawn_blocking(move || b.record_events(&events)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not record the reopen event"),
        Err(e) => tracing::error!(error = %e, "event write task failed"),
    }
}

/// Collects the next commit's batch after its first request: everything
/// already queued, then everything queued once the tasks that were ready
/// have run (one scheduler yield, no timer), then, only with a non-zero
/// `window`, whatever arrives until the window ends. Without a window a
/// commit never waits for frames that may not come: with window-limited
/// clients (every in-flight publish already in the batch) a timed wait
/// only adds its length to every commit.
async fn gather(
    requests: &mut mpsc::UnboundedReceiver<WriteRequest>,
    batch: &mut Vec<WriteRequest>,
    s: WriterSettings,
) {
    drain_queued(requests, batch, s.max_frames);
    if batch.len() < s.max_frames {
        tokio::task::yield_now().await;
        drain_queued(requests, batch, s.max_frames);
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

/// Moves queued requests into `batch` until it holds `max` or none is left.
fn drain_queued(
    requests: &mut mpsc::UnboundedReceiver<WriteRequest>,
    batch: &mut Vec<WriteRequest>,
    max: usize,
) {
    batch.reserve(requests.len().min(max.saturating_sub(batch.len())));
    while batch.len() < max {
        match requests.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_stuck_above_a_hole_is_due_after_the_timeout_and_only_then() {
        let d = DeviceId::new("d").expect("valid id");
        let e = DeviceId::new("e").expect("valid id");
        let mut w = HoleWatch::default();
        let after = Duration::from_secs(60);
        w.out_of_order(&d, 9, 1_000);
        w.out_of_order(&d, 7, 30_000);
        w.out_of_order(&e, 4, 1_000);
        w.stored(&e);
        assert!(w.due(60_999, after).is_empty());
        assert_eq!(w.due(61_000, after), vec![(d.clone(), 6)]);
        assert!(w.due(1_000_000, after).is_empty(), "forgotten once due");
    }
}
