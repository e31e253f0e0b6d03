//! Device frame continuity: which of each device's frame seqs a report
//! accounts for, so that an omitted frame is visible and rejected.
//!
//! Device signatures stop a frame from being altered; they do not stop a
//! frame from being left out. Continuity does: every device numbers its
//! frames 1, 2, 3, ... (or the gateway numbers them, for Modbus and
//! third-party devices), the gateway stores them with no hole (go-back-N),
//! and every report states per device the range of seqs it accounts for.
//!
//! Rules ([`derive`] computes the records; a verifier compares them with
//! the report's, and [`super::verify::Chain`] links them across reports):
//! - a device's *items* in a report are its frames (one seq each) and the
//!   ranges of its `frames_given_up` events (`seqs`, inclusive);
//! - sorted by first seq, the items must tile `after_seq + 1 ..= last_seq`
//!   exactly: no seq twice (a repeat, or a give-up over a frame), no seq
//!   missing (a hole); a device's first appearance in the chain has
//!   `after_seq = 0`, so its numbering starts at 1 like every device's;
//! - `after_seq` is the previous report's `last_seq` for that device
//!   (carried unchanged through reports where it has nothing new); the
//!   records list every device the chain has seen, sorted by id.
//!
//! A `frames_given_up` event is the gateway's statement that those frames
//! will never arrive (operator decision, timeout, or a record missing from
//! its buffer: the detail starts with the cause). It cannot be proven by
//! the device; it is carried, shown to the auditor, and the given-up frames
//! earn nothing (their time is a gap in the series).

use super::model::{DeviceContinuity, FrameRecord};
use crate::event::{Event, EventKind, SeqRange};
use crate::ids::DeviceId;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Why a report's frames and give-ups do not form a continuous sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuityError {
    /// Seqs missing between two items (or after the previous report), not
    /// given up.
    #[error("device {device}: seqs {first}..={last} are missing and not given up")]
    Hole {
        /// Device.
        device: DeviceId,
        /// First missing seq.
        first: u64,
        /// Last missing seq.
        last: u64,
    },
    /// A seq accounted for twice (a repeat, a step back, or a give-up over
    /// a frame).
    #[error(
        "device {device}: seq {seq} is accounted for twice (repeat, step back, or given up while present)"
    )]
    Repeat {
        /// Device.
        device: DeviceId,
        /// The seq.
        seq: u64,
    },
    /// A `frames_given_up` event without a device or a valid seq range.
    #[error("a frames_given_up event at {time_ms} has no device or no valid seq range")]
    BadGiveUp {
        /// Its time.
        time_ms: u64,
    },
}

/// One device's items: (first, last, is_frame).
type Items = BTreeMap<DeviceId, Vec<(u64, u64, bool)>>;

fn items(frames: &[FrameRecord], events: &[Event]) -> Result<Items, ContinuityError> {
    let mut out: Items = BTreeMap::new();
    for f in frames {
        out.entry(f.device.clone())
            .or_default()
            .push((f.seq, f.seq, true));
    }
    for e in events.iter().filter(|e| e.kind == EventKind::FramesGivenUp) {
        match (&e.device, e.seqs) {
            (Some(d), Some(r)) if r.first >= 1 && r.first <= r.last => {
                out.entry(d.clone())
                    .or_default()
                    .push((r.first, r.last, false));
            }
            _ => return Err(ContinuityError::BadGiveUp { time_ms: e.time_ms }),
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

/// The continuity records of a report with these `frames` and `events`,
/// given each device's last accounted seq before it (`before`; a device
/// not in it starts at 0).
pub fn derive(
    before: &BTreeMap<DeviceId, u64>,
    frames: &[FrameRecord],
    events: &[Event],
) -> Result<Vec<DeviceContinuity>, ContinuityError> {
    let mut by_device = items(frames, events)?;
    for d in before.keys() {
        by_device.entry(d.clone()).or_default();
    }
    let mut out = Vec::with_capacity(by_device.len());
    for (device, items) in by_device {
        let after = before.get(&device).copied().unwrap_or(0);
        let mut pos = after;
        let mut first_seq = None;
        let mut n_frames = 0u64;
        let mut given_up = Vec::new();
        for (first, last, is_frame) in items {
            if first <= pos {
                return Err(ContinuityError::Repeat {
                    device,
                    seq: first.max(1),
                });
            }
            if first > pos + 1 {
                return Err(ContinuityError::Hole {
                    device,
                    first: pos + 1,
                    last: first - 1,
                });
            }
            first_seq.get_or_insert(first);
            pos = last;
            if is_frame {
                n_frames += 1;
            } else {
                given_up.push(SeqRange { first, last });
            }
        }
        let last_seq = pos;
        out.push(DeviceContinuity {
            device,
            after_seq: after,
            first_seq,
            last_seq,
            frames: n_frames,
            given_up,
        });
    }
    Ok(out)
}

/// The positions the next report starts from: each device's `last_seq`.
pub fn positions(records: &[DeviceContinuity]) -> BTreeMap<DeviceId, u64> {
    records
        .iter()
        .map(|c| (c.device.clone(), c.last_seq))
        .collect()
}

/// The positions a report itself states it starts from (its records'
/// `after_seq`), what a verifier without the previous report uses.
pub fn stated_positions(records: &[DeviceContinuity]) -> BTreeMap<DeviceId, u64> {
    records
        .iter()
        .map(|c| (c.device.clone(), c.after_seq))
        .collect()
}

/// What the gateway's report builder does before [`derive`], so that what
/// it signs always verifies: frames at or below a device's position (a
/// repeat: never expected with go-back-N) are left out with a
/// `frame_rejected` event; a give-up event reaching at or below the
/// position is narrowed to the part above it (or, if nothing is left, turned
/// into a `frame_rejected` event); and any remaining hole (a record missing
/// from the buffer, a frame left out for another site or a bad signature)
/// becomes a `frames_given_up` event with cause `missing_from_buffer`, at
/// the receipt time of the frame after it, clamped into `[start_ms, end_ms)`.
/// `frames` must be sorted by (device, seq) and unique.
pub fn close_holes(
    before: &BTreeMap<DeviceId, u64>,
    frames: Vec<FrameRecord>,
    events: &mut Vec<Event>,
    start_ms: u64,
    end_ms: u64,
) -> Vec<FrameRecord> {
    let clamp = |t: u64| t.clamp(start_ms, end_ms.saturating_sub(1).max(start_ms));
    // Per device, items sorted by first seq: (first, last, Frame(index) |
    // GiveUp(event index)).
    enum Item {
        Frame(usize),
        GiveUp(usize),
    }
    let mut by_device: BTreeMap<DeviceId, Vec<(u64, u64, Item)>> = BTreeMap::new();
    for (i, f) in frames.iter().enumerate() {
        by_device
            .entry(f.device.clone())
            .or_default()
            .push((f.seq, f.seq, Item::Frame(i)));
    }
    for (i, e) in events.iter().enumerate() {
        if e.kind != EventKind::FramesGivenUp {
            continue;
        }
        if let (Some(d), Some(r)) = (&e.device, e.seqs)
            && r.first >= 1
            && r.first <= r.last
        {
            by_device
                .entry(d.clone())
                .or_default()
                .push((r.first, r.last, Item::GiveUp(i)));
        }
    }
    let mut keep = alloc::vec![true; frames.len()];
    let mut extra = Vec::new();
    for (device, mut items) in by_device {
        items.sort_by_key(|(first, last, _)| (*first, *last));
        let mut pos = Some(before.get(&device).copied().unwrap_or(0));
        for (first, last, item) in items {
            let time_ms = match item {
                Item::Frame(i) => clamp(frames[i].received_ms),
                Item::GiveUp(i) => clamp(events[i].time_ms),
            };
            let mut first = first;
            if let Some(p) = pos {
                if last <= p {
                    match item {
                        Item::Frame(i) => {
                            keep[i] = false;
                            extra.push(Event {
                                time_ms,
                                kind: EventKind::FrameRejected,
                                device: Some(device.clone()),
                                seqs: None,
                                detail: format!(
                                    "frame {first} left out: its seq is already accounted for (repeat)"
                                ),
                            });
                        }
                        Item::GiveUp(i) => {
                            let e = &mut events[i];
                            e.kind = EventKind::FrameRejected;
                            e.seqs = None;
                            e.detail = format!(
                                "stale give-up of seqs {first}..={last} (already accounted for): {}",
                                e.detail
                            );
                        }
                    }
                    continue;
                }
                if first <= p {
                    // Only a give-up can reach here (a frame has first == last).
                    if let Item::GiveUp(i) = item {
                        first = p + 1;
                        events[i].seqs = Some(SeqRange { first, last });
                    }
                }
                if first > p + 1 {
                    extra.push(missing(&device, p + 1, first - 1, time_ms));
                }
            }
            pos = Some(last);
        }
    }
    events.extend(extra);
    frames
        .into_iter()
        .zip(keep)
        .filter_map(|(f, k)| k.then_some(f))
        .collect()
}

fn missing(device: &DeviceId, first: u64, last: u64, time_ms: u64) -> Event {
    Event {
        time_ms,
        kind: EventKind::FramesGivenUp,
        device: Some(device.clone()),
        seqs: Some(SeqRange { first, last }),
        detail: String::from(
            "missing_from_buffer: these frames were not in the buffer when the report was built",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(d: &str, seq: u64) -> FrameRecord {
        FrameRecord {
            device: DeviceId::new(d).expect("id"),
            seq,
            boot: 1,
            firmware: String::new(),
            base_time_ms: None,
            received_ms: 1000 + seq,
            channels: Vec::new(),
            samples: Vec::new(),
            sig: None,
            late: false,
        }
    }

    fn gave_up(d: &str, first: u64, last: u64) -> Event {
        Event {
            time_ms: 1500,
            kind: EventKind::FramesGivenUp,
            device: Some(DeviceId::new(d).expect("id")),
            seqs: Some(SeqRange { first, last }),
            detail: String::from("operator: test"),
        }
    }

    fn id(d: &str) -> DeviceId {
        DeviceId::new(d).expect("id")
    }

    #[test]
    fn frames_and_give_ups_tile_the_range_after_the_previous_report() {
        let before = BTreeMap::from([(id("a"), 10), (id("quiet"), 7)]);
        let frames = [frame("a", 11), frame("a", 14), frame("b", 1), frame("b", 2)];
        let recs = derive(&before, &frames, &[gave_up("a", 12, 13)]).expect("continuous");
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[0],
            DeviceContinuity {
                device: id("a"),
                after_seq: 10,
                first_seq: Some(11),
                last_seq: 14,
                frames: 2,
                given_up: alloc::vec![SeqRange {
                    first: 12,
                    last: 13
                }],
            }
        );
        assert_eq!(
            (recs[1].after_seq, recs[1].first_seq, recs[1].last_seq),
            (0, Some(1), 2)
        );
        assert_eq!(
            (recs[2].after_seq, recs[2].first_seq, recs[2].last_seq),
            (7, None, 7)
        );
        // A device's first appearance starts at 1.
        assert_eq!(
            derive(&BTreeMap::new(), &[frame("c", 500)], &[]),
            Err(ContinuityError::Hole {
                device: id("c"),
                first: 1,
                last: 499
            })
        );
    }

    #[test]
    fn an_omitted_frame_is_a_hole_and_a_repeat_is_refused() {
        let before = BTreeMap::from([(id("a"), 10)]);
        assert_eq!(
            derive(&before, &[frame("a", 12)], &[]),
            Err(ContinuityError::Hole {
                device: id("a"),
                first: 11,
                last: 11
            })
        );
        assert_eq!(
            derive(&before, &[frame("a", 10)], &[]),
            Err(ContinuityError::Repeat {
                device: id("a"),
                seq: 10
            })
        );
        // A give-up over a frame that is present.
        assert!(matches!(
            derive(&before, &[frame("a", 11)], &[gave_up("a", 11, 11)]),
            Err(ContinuityError::Repeat { .. })
        ));
        // A give-up for the wrong seqs leaves the hole unexplained.
        assert!(matches!(
            derive(&before, &[frame("a", 13)], &[gave_up("a", 12, 12)]),
            Err(ContinuityError::Hole {
                first: 11,
                last: 11,
                ..
            })
        ));
        let mut forged = gave_up("a", 11, 12);
        forged.device = None;
        assert!(matches!(
            derive(&before, &[frame("a", 13)], &[forged]),
            Err(ContinuityError::BadGiveUp { .. })
        ));
    }

    #[test]
    fn the_builder_closes_holes_with_recorded_give_ups_so_the_result_derives() {
        let before = BTreeMap::from([(id("a"), 10)]);
        let frames = alloc::vec![
            frame("a", 9),
            frame("a", 11),
            frame("a", 15),
            frame("a", 20)
        ];
        let mut events = alloc::vec![gave_up("a", 12, 13), gave_up("a", 5, 6)];
        let kept = close_holes(&before, frames, &mut events, 1000, 2000);
        assert_eq!(kept.iter().map(|f| f.seq).collect::<Vec<_>>(), [11, 15, 20]);
        let recs = derive(&before, &kept, &events).expect("derives after closing");
        assert_eq!(recs[0].last_seq, 20);
        let ranges: Vec<(u64, u64)> = recs[0].given_up.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(ranges, [(12, 13), (14, 14), (16, 19)]);
        assert!(
            events
                .iter()
                .any(|e| e.kind == EventKind::FrameRejected && e.detail.contains("frame 9"))
        );
        assert!(
            events
                .iter()
                .any(|e| e.kind == EventKind::FrameRejected && e.detail.contains("stale give-up"))
        );
    }
}
