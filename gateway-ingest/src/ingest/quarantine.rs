//! A bounded quarantine of rejected payloads, kept raw for diagnosis.
//!
//! Invariant: never holds more than its capacity; the oldest entry goes first.
//! Besides the ring, it counts every payload it was given by (device,
//! reason) since start, for at most [`MAX_COUNTED_DEVICES`] devices (payloads
//! naming more devices are counted under "no device"), so `/metrics` and the
//! device table show rejects per device even after the ring moved on.
//! Payloads are kept at most [`MAX_KEPT_BYTES`] long (the rest is cut and the
//! original length recorded), so an attacker cannot fill memory.

use std::collections::{BTreeMap, VecDeque};

/// Most distinct devices counted per reason (an attacker inventing device
/// ids cannot grow the counters without bound).
pub const MAX_COUNTED_DEVICES: usize = 1024;

/// Longest payload prefix kept per entry.
pub const MAX_KEPT_BYTES: usize = 1024;

/// One rejected payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// Gateway clock at receipt (Unix ms).
    pub received_ms: u64,
    /// MQTT topic it came on.
    pub topic: String,
    /// Device, if it could be told.
    pub device: Option<String>,
    /// Reason label (also the counter name).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// Original payload length.
    pub len: usize,
    /// First bytes of the payload.
    #[serde(with = "hex_bytes")]
    pub payload: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        s.serialize_str(&hex)
    }
}

/// The quarantine ring.
#[derive(Debug)]
pub struct Quarantine {
    capacity: usize,
    entries: VecDeque<Quarantined>,
    counts: BTreeMap<(Option<String>, &'static str), u64>,
    devices_counted: usize,
}

impl Quarantine {
    /// A quarantine keeping at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: VecDeque::with_capacity(capacity.min(1024)),
            counts: BTreeMap::new(),
            devices_counted: 0,
        }
    }

    fn count(&mut self, device: Option<&str>, reason: &'static str) {
        let known = device.is_some_and(|d| {
            self.counts
                .range((Some(d.to_string()), "")..)
                .next()
                .is_some_and(|((k, _), _)| k.as_deref() == Some(d))
        });
        let device = match device {
            Some(d) if known || self.devices_counted < MAX_COUNTED_DEVICES => {
                if !known {
                    self.devices_counted += 1;
                }
                Some(d.to_string())
            }
            _ => None,
        };
        *self.counts.entry((device, reason)).or_insert(0) += 1;
    }

    /// Rejected payloads since start by (device, reason); `None` = the
    /// device could not be told (or too many devices).
    pub fn counts(&self) -> &BTreeMap<(Option<String>, &'static str), u64> {
        &self.counts
    }

    /// Rejected payloads since start naming `device`.
    pub fn count_for(&self, device: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((d, _), _)| d.as_deref() == Some(device))
            .map(|(_, n)| n)
            .sum()
    }

    /// Keeps a rejected payload, dropping the oldest entry when full.
    pub fn keep(&mut self, mut entry: Quarantined) {
        self.count(entry.device.as_deref(), entry.reason);
        if self.capacity == 0 {
            return;
        }
        entry.payload.truncate(MAX_KEPT_BYTES);
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Quarantined> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, len: usize) -> Quarantined {
        Quarantined {
            received_ms: i as u64,
            topic: "t".into(),
            device: None,
            reason: "bad_magic",
            detail: String::new(),
            len,
            payload: vec![0; len],
        }
    }

    #[test]
    fn keeps_the_newest_within_capacity_and_cuts_payloads() {
        let mut q = Quarantine::new(3);
        for i in 0..5 {
            q.keep(entry(i, 5000));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(
            q.entries().map(|e| e.received_ms).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert!(
            q.entries()
                .all(|e| e.payload.len() == MAX_KEPT_BYTES && e.len == 5000)
        );
        assert_eq!(q.counts().get(&(None, "bad_magic")), Some(&5));
    }

    #[test]
    fn rejects_are_counted_per_device_beyond_the_ring_and_bounded() {
        let mut q = Quarantine::new(1);
        for i in 0..(MAX_COUNTED_DEVICES + 10) {
            let mut e = entry(i, 1);
            e.device = Some(format!("d{i}"));
            q.keep(e.clone());
            q.keep(e);
        }
        assert_eq!(q.count_for("d0"), 2);
        assert_eq!(q.count_for(&format!("d{MAX_COUNTED_DEVICES}")), 0);
        assert_eq!(q.counts().get(&(None, "bad_magic")), Some(&20));
        assert_eq!(q.counts().len(), MAX_COUNTED_DEVICES + 1);
    }
}
