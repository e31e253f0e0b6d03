//! Ingest counters, shared between the ingest tasks and diagnostics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the ingest path. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// MQTT publishes received on the uplink filter.
    pub messages: AtomicU64,
    /// Frames written as new.
    pub frames_stored: AtomicU64,
    /// Readings in frames written as new.
    pub readings_stored: AtomicU64,
    /// Frames that were already stored (re-sent by a device).
    pub duplicates: AtomicU64,
    /// Frames refused because the buffer is full.
    pub refused_buffer_full: AtomicU64,
    /// Frames refused because they lie above a hole (go-back-N: the device
    /// re-sends from its acked seq).
    pub out_of_order: AtomicU64,
    /// Holes given up after `buffer.give_up_after_minutes`.
    pub given_up_by_timeout: AtomicU64,
    /// Frames refused while the buffer could not be written (after a failed
    /// write, until it was reopened); not acked, devices keep them.
    pub refused_unavailable: AtomicU64,
    /// Buffer writes that failed (I/O error, disk full).
    pub write_failures: AtomicU64,
    /// Times the buffer was reopened in-process after a failed write.
    pub reopens: AtomicU64,
    /// Group commits done.
    pub commits: AtomicU64,
    /// Application acks published.
    pub acks_published: AtomicU64,
    /// Greater than 0 once ingest is live: the embedded endpoint listens, or
    /// the external broker confirmed the gateway's subscription (SUBACK).
    pub subscribed: AtomicU64,
    /// External broker: reconnects where the broker had lost the gateway's
    /// session (`session_present = 0`).
    pub broker_sessions_lost: AtomicU64,
    /// External broker: connection attempts where the broker refused the
    /// gateway's login (bad user name or password, not authorised).
    pub broker_logins_refused: AtomicU64,
    /// What the newest of those said, for diagnostics' events list.
    pub last_broker_login_refusal: Mutex<Option<String>>,
    /// Frames whose signature verified.
    pub signatures_verified: AtomicU64,
    /// Third-party messages mapped to a frame (`mapping`), before the store.
    pub mapped_messages: AtomicU64,
    /// Third-party messages recognised as duplicates by the mapping's dedup.
    pub mapped_duplicates: AtomicU64,
    /// Retained messages replayed by the broker at (re)subscription, ignored.
    pub retained_ignored: AtomicU64,
    /// LoRaWAN (ChirpStack) uplinks lost: fCnt jumps within an epoch, summed.
    pub lorawan_uplinks_lost: AtomicU64,
    /// LoRaWAN frame-counter epochs started (join, devAddr change, fCnt
    /// going backwards).
    pub lorawan_session_resets: AtomicU64,
    /// ChirpStack `log` events received (codec errors and others).
    pub lorawan_logs: AtomicU64,
    rejects: Mutex<BTreeMap<&'static str, u64>>,
    device_rejects: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl IngestStats {
    /// Counts one rejected payload under `reason`.
    pub fn count_reject(&self, reason: &'static str) {
        let mut m = self
            .rejects
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        *m.entry(reason).or_insert(0) += 1;
    }

    /// Counts one rejected payload of `device` under `reason` (also in
    /// [`Self::rejects`]).
    pub fn count_device_reject(&self, device: &str, reason: &'static str) {
        self.count_reject(reason);
        let mut m = self
            .device_rejects
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        *m.entry((device.to_string(), reason)).or_insert(0) += 1;
    }

    /// Rejected payloads by (device, reason) where the device was known
    /// (third-party mappings).
    pub fn device_rejects(&self) -> BTreeMap<(String, &'static str), u64> {
        self.device_rejects
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .clone()
    }

    /// Rejected payloads by reason.
    pub fn rejects(&self) -> BTreeMap<&'static str, u64> {
        self.rejects
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .clone()
    }

    /// Total rejected payloads.
    pub fn rejects_total(&self) -> u64 {
        self.rejects().values().sum()
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
