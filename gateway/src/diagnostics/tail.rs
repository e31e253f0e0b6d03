//! A device's live tail: its last stored frames, kept compact and turned
//! into text only when a tail is asked for.
//!
//! Recording runs for every stored frame; reading a tail is rare (a
//! technician's page). So a [`DeviceTail`] keeps per frame only numbers:
//! seq, boot, sample count, signature flag, quality bits, and the last value
//! of each channel as an index into the device's channel table. Frames of up
//! to [`INLINE_VALUES`] channels are kept without any allocation; the table
//! holds each (channel id, quantity) pair of the device once.
//!
//! Invariants: entries are in recording order, at most `limit` of them (the
//! caller's bound); a value index always points into the channel table (the
//! table only grows, and is dropped with the tail).

use crate::buffer::Incoming;
use mrv_shared::ids::ChannelId;
use mrv_shared::quantity::Quantity;
use mrv_shared::reading::Quality;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// Channel values an entry holds without a heap allocation.
pub const INLINE_VALUES: usize = 2;

/// One channel's last value in a frame: the channel's index in the device's
/// table, and the value (`None`: unavailable; never shown as 0).
type Value = (u16, Option<i64>);

/// The channel values of one entry.
#[derive(Debug, Clone)]
enum Values {
    Inline(u8, [Value; INLINE_VALUES]),
    Heap(Box<[Value]>),
}

impl Values {
    fn as_slice(&self) -> &[Value] {
        match self {
            Values::Inline(n, v) => &v[..usize::from(*n)],
            Values::Heap(v) => v,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Values::Inline(..) => 0,
            Values::Heap(v) => std::mem::size_of_val(&**v) + 16,
        }
    }
}

/// One stored frame, as the tail keeps it.
#[derive(Debug, Clone)]
struct Entry {
    time_ms: u64,
    seq: u64,
    boot: u32,
    samples: u32,
    quality: u8,
    signed: bool,
    values: Values,
}

/// Bytes an entry costs when its values are inline (its slot in the deque).
pub const ENTRY_COST: usize = std::mem::size_of::<Entry>();

/// The tail of one device (see the module doc).
#[derive(Debug, Default)]
pub struct DeviceTail {
    channels: Vec<(ChannelId, Quantity)>,
    entries: VecDeque<Entry>,
}

impl DeviceTail {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the stored frame `incoming`, dropping the oldest entries so
    /// that at most `limit` remain.
    pub fn push(&mut self, incoming: &Incoming, limit: usize) {
        let frame = &incoming.frame;
        let mut quality = 0u8;
        let mut inline = [(0u16, None); INLINE_VALUES];
        let mut n = 0usize;
        let mut heap: Vec<Value> = Vec::new();
        for s in &frame.samples {
            quality |= s.quality.0;
            let Some(ch) = frame.channels.get(usize::from(s.channel)) else {
                continue;
            };
            let Some(idx) = self.channel_index(&ch.id, ch.quantity) else {
                continue;
            };
            // An unavailable sample has no value: never print its 0.
            let v = (!s.quality.contains(Quality::UNAVAILABLE)).then_some(s.value);
            // The last sample of a channel wins.
            let held = if heap.is_empty() {
                &mut inline[..n]
            } else {
                &mut heap[..]
            };
            if let Some(slot) = held.iter_mut().find(|(i, _)| *i == idx) {
                slot.1 = v;
            } else if heap.is_empty() && n < INLINE_VALUES {
                inline[n] = (idx, v);
                n += 1;
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(&inline[..n]);
                }
                heap.push((idx, v));
            }
        }
        let values = if heap.is_empty() {
            Values::Inline(n as u8, inline)
        } else {
            Values::Heap(heap.into_boxed_slice())
        };
        while self.entries.len() >= limit.max(1) {
            self.entries.pop_front();
        }
        super::state::reserve_bounded(&mut self.entries, limit);
        self.entries.push_back(Entry {
            time_ms: incoming.received_ms,
            seq: frame.seq,
            boot: frame.boot,
            samples: u32::try_from(frame.samples.len()).unwrap_or(u32::MAX),
            quality,
            signed: frame.signature.is_some(),
            values,
        });
    }

    /// The table index of (`id`, `quantity`), added if new (`None` only if
    /// a device has declared more than 65,535 distinct channels).
    fn channel_index(&mut self, id: &ChannelId, quantity: Quantity) -> Option<u16> {
        if let Some(i) = self
            .channels
            .iter()
            .position(|(c, q)| c == id && *q == quantity)
        {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.channels.len()).ok()?;
        self.channels.push((id.clone(), quantity));
        Some(i)
    }

    /// Drops the oldest entries so that at most `limit` remain, and the
    /// spare capacity above it.
    pub fn truncate_front(&mut self, limit: usize) {
        while self.entries.len() > limit {
            self.entries.pop_front();
        }
        if self.entries.capacity() > limit {
            self.entries.shrink_to(limit);
        }
    }

    /// Estimated bytes held: entry slots, heap-held values, channel table.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * ENTRY_COST + self.value_bytes() + self.table_bytes()
    }

    /// Estimated bytes of the values held on the heap (frames of more than
    /// [`INLINE_VALUES`] channels).
    pub fn value_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.values.heap_bytes()).sum()
    }

    /// Estimated bytes of the channel table.
    pub fn table_bytes(&self) -> usize {
        self.channels.capacity() * std::mem::size_of::<(ChannelId, Quantity)>()
            + self
                .channels
                .iter()
                .map(|(c, _)| c.as_str().len() + 16)
                .sum::<usize>()
    }

    /// Entries newer than `after_ms`, oldest first, as (receipt ms, text):
    /// `seq S boot B samples N[ signed]`, then ` channel=value` per channel in
    /// channel-id order (`unavailable` for a value without one), then
    /// ` quality=a|b` when any quality bit is set.
    pub fn render(&self, after_ms: u64) -> Vec<(u64, String)> {
        self.entries
            .iter()
            .filter(|e| e.time_ms > after_ms)
            .map(|e| (e.time_ms, self.summary(e)))
            .collect()
    }

    fn summary(&self, e: &Entry) -> String {
        let mut s = String::with_capacity(64);
        let _ = write!(
            s,
            "seq {} boot {} samples {}{}",
            e.seq,
            e.boot,
            e.samples,
            if e.signed { " signed" } else { "" }
        );
        let mut values: Vec<(&str, Quantity, Option<i64>)> = e
            .values
            .as_slice()
            .iter()
            .filter_map(|(i, v)| {
                self.channels
                    .get(usize::from(*i))
                    .map(|(c, q)| (c.as_str(), *q, *v))
            })
            .collect();
        values.sort_by(|a, b| a.0.cmp(b.0));
        for (ch, q, v) in values {
            match v {
                Some(v) => {
                    let _ = write!(s, " {ch}={}", mrv_shared::display::display(q, v));
                }
                None => {
                    let _ = write!(s, " {ch}=unavailable");
                }
            }
        }
        if e.quality != 0 {
            let names: Vec<_> = Quality(e.quality).names().collect();
            let _ = write!(s, " quality={}", names.join("|"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mrv_shared::ids::{DeviceId, SiteId};
    use mrv_shared::quantity::ValueKind;
    use mrv_shared::reading::{Channel, Sample};
    use mrv_shared::wire::Frame;

    /// A frame of `samples` (channel index, value, quality) over channels
    /// `names` (all power), received at `at`.
    fn incoming(seq: u64, at: u64, names: &[&str], samples: &[(u8, i64, Quality)]) -> Incoming {
        Incoming {
            frame: Frame {
                site: SiteId::new("s").expect("id"),
                device: DeviceId::new("d").expect("id"),
                seq,
                boot: 3,
                firmware: "fw".into(),
                base_time_ms: Some(at),
                channels: names
                    .iter()
                    .map(|n| Channel {
                        id: ChannelId::new(n).expect("id"),
                        quantity: Quantity::Power,
                        kind: ValueKind::Instant,
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(channel, value, quality)| Sample {
                        channel,
                        offset_ms: 0,
                        value,
                        quality,
                    })
                    .collect(),
                signature: None,
            },
            received_ms: at,
        }
    }

    #[test]
    fn text_lists_the_last_value_of_each_channel_in_id_order_and_never_an_unavailable_zero() {
        let mut t = DeviceTail::default();
        let g = Quality::GOOD;
        // Three channels: the values spill to the heap; "b" twice, the last wins.
        t.push(
            &incoming(
                7,
                1_000,
                &["c", "b", "a"],
                &[
                    (1, 1, g),
                    (0, 5, g),
                    (1, 2, g),
                    (2, 0, Quality::UNAVAILABLE),
                ],
            ),
            10,
        );
        // One channel, inline.
        t.push(&incoming(8, 2_000, &["b"], &[(0, 9, Quality::SUSPECT)]), 10);
        let r = t.render(0);
        assert_eq!(r.len(), 2);
        let p = |v| mrv_shared::display::display(Quantity::Power, v).to_string();
        assert_eq!(
            r[0],
            (
                1_000,
                format!(
                    "seq 7 boot 3 samples 4 a=unavailable b={} c={} quality=unavailable",
                    p(2),
                    p(5)
                )
            )
        );
        assert_eq!(
            r[1],
            (
                2_000,
                format!("seq 8 boot 3 samples 1 b={} quality=suspect", p(9))
            )
        );
        assert_eq!(t.render(1_000).len(), 1, "only entries newer than after_ms");
        // "b" is in the table once although two frames declared it.
        assert_eq!(t.channels.len(), 3);
    }

    #[test]
    fn at_most_limit_entries_are_kept_oldest_dropped_first() {
        let mut t = DeviceTail::default();
        for seq in 1..=25 {
            t.push(
                &incoming(seq, seq * 10, &["p"], &[(0, 1, Quality::GOOD)]),
                10,
            );
        }
        assert_eq!(t.len(), 10);
        let r = t.render(0);
        assert!(r[0].1.starts_with("seq 16 "), "{r:?}");
        assert!(r[9].1.starts_with("seq 25 "), "{r:?}");
        t.truncate_front(4);
        assert_eq!(t.len(), 4);
        assert!(t.bytes() >= 4 * ENTRY_COST);
    }
}
