//! [`LinkReceiver`]: the modem side of the serial link as a pure state
//! machine: bytes from the node's UART in, whole publish payloads out, and
//! everything else dropped and counted by reason ([`LinkCounters`]).
//!
//! The caller owns the clock: when the line has been idle for longer than
//! a frame takes it calls [`LinkReceiver::line_idle`], which turns a frame
//! still waiting for bytes into a counted truncation.

use crate::serial_link::{LinkCounters, LinkDecode, TYPE_PUBLISH, decode_link_frame};
use std::vec::Vec;

/// Reassembles type-1 link frames from UART bytes.
#[derive(Debug, Clone)]
pub struct LinkReceiver {
    buf: Vec<u8>,
    max_payload: usize,
    counters: LinkCounters,
}

impl LinkReceiver {
    /// A receiver accepting payloads of up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_payload,
            counters: LinkCounters::default(),
        }
    }

    /// What was dropped so far.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// True while part of a frame is buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Feeds bytes; returns the payloads of the frames they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        self.drain(false)
    }

    /// The line went idle: whatever is buffered will not grow, so a partial
    /// frame is counted as truncated and the bytes after its start byte are
    /// searched for further frames.
    pub fn line_idle(&mut self) -> Vec<Vec<u8>> {
        self.drain(true)
    }

    fn drain(&mut self, idle: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match decode_link_frame(&self.buf[at..], TYPE_PUBLISH, self.max_payload) {
                LinkDecode::Incomplete if idle && at < self.buf.len() => {
                    self.counters.truncated += 1;
                    at += 1;
                }
                LinkDecode::Incomplete => break,
                LinkDecode::Frame { payload, used, .. } => {
                    out.push(payload.to_vec());
                    at += used;
                }
                LinkDecode::Invalid { skip, reason } => {
                    self.counters.count(reason, skip);
                    at += skip;
                }
            }
        }
        self.buf.drain(..at);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::serial_link::encode_link_frame;

    #[test]
    fn frames_split_across_reads_noise_bad_crc_and_a_cut_frame_are_told_apart() {
        let f1 = encode_link_frame(TYPE_PUBLISH, b"frame-one").unwrap();
        let f2 = encode_link_frame(TYPE_PUBLISH, b"frame-two").unwrap();
        let mut bad = f2.clone();
        bad[6] ^= 0x40;
        let mut rx = LinkReceiver::new(1024);
        assert!(rx.push(&f1[..5]).is_empty());
        assert!(rx.has_partial());
        assert_eq!(rx.push(&f1[5..]), [b"frame-one".to_vec()]);
        let mut line = b"boot noise".to_vec();
        line.extend_from_slice(&bad);
        line.extend_from_slice(&f2);
        line.extend_from_slice(&f1[..7]);
        assert_eq!(rx.push(&line), [b"frame-two".to_vec()]);
        assert!(rx.has_partial());
        assert!(rx.line_idle().is_empty());
        assert!(!rx.has_partial());
        let c = rx.counters();
        // "boot noise" (10), the corrupt frame after its start byte (16),
        // the cut frame after its start byte (6).
        assert_eq!(c.noise_bytes, 10 + 16 + 6);
        assert_eq!((c.bad_crc, c.truncated), (1, 1));
        assert_eq!(c.rejected_frames(), 2);
    }
}
