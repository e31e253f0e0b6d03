//! Uplink over a UART to a network co-processor (a Wi-Fi/cellular/Ethernet
//! module running the MQTT client), with a checksummed framing both ways.
//!
//! ## Link frame
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | start byte `0xC0` |
//! | 1 | 1 | type: `0x01` publish frame (node to modem), `0x02` ack (modem to node) |
//! | 2 | 2 | payload length `L`, u16 LE |
//! | 4 | L | payload: an encoded frame (type 1) or a 12-byte binary ack (type 2) |
//! | 4+L | 4 | CRC-32 (IEEE) of bytes `[1, 4+L)` |
//!
//! The modem publishes type-1 payloads QoS 1 on the node's up topic and
//! forwards whatever arrives on its ack topic as type 2. [`SerialUplink`]
//! implements [`Uplink`]; [`AckParser`] is a pure byte-at-a-time parser
//! that resynchronises on the next start byte after garbage.

use crate::app::Uplink;
use embedded_io::Write;
use mrv_shared::wire::{Ack, binary};

/// Start byte.
pub const START: u8 = 0xC0;
/// Type: frame to publish.
pub const TYPE_PUBLISH: u8 = 0x01;
/// Type: ack received.
pub const TYPE_ACK: u8 = 0x02;

/// Writes the link header for a payload of `len` bytes of `kind`.
pub fn header(kind: u8, len: u16) -> [u8; 4] {
    let l = len.to_le_bytes();
    [START, kind, l[0], l[1]]
}

/// CRC of a link frame (type, length, payload).
pub fn link_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let l = (payload.len() as u16).to_le_bytes();
    h.update(&[kind, l[0], l[1]]);
    h.update(payload);
    h.finalize()
}

/// Why a frame could not be handed to the modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError<E> {
    /// The UART failed.
    Uart(E),
    /// The payload is longer than 65535 bytes.
    TooLong,
}

/// The uplink: frames go out over `uart` to the modem.
#[derive(Debug)]
pub struct SerialUplink<W> {
    uart: W,
}

impl<W: Write> SerialUplink<W> {
    /// An uplink writing to `uart`.
    pub fn new(uart: W) -> Self {
        Self { uart }
    }
    /// The UART (e.g. to flush it from an interrupt-free shutdown path).
    pub fn uart_mut(&mut self) -> &mut W {
        &mut self.uart
    }
    /// Gives the UART back.
    pub fn release(self) -> W {
        self.uart
    }
}

impl<W: Write> Uplink for SerialUplink<W> {
    type Error = LinkError<W::Error>;

    fn send(&mut self, _seq: u64, payload: &[u8]) -> Result<(), Self::Error> {
        let len = u16::try_from(payload.len()).map_err(|_| LinkError::TooLong)?;
        let crc = link_crc(TYPE_PUBLISH, payload);
        self.uart
            .write_all(&header(TYPE_PUBLISH, len))
            .map_err(LinkError::Uart)?;
        self.uart.write_all(payload).map_err(LinkError::Uart)?;
        self.uart
            .write_all(&crc.to_le_bytes())
            .map_err(LinkError::Uart)?;
        self.uart.flush().map_err(LinkError::Uart)
    }
}

/// Bytes of a type-2 (ack) link frame.
pub const ACK_FRAME: usize = 4 + binary::ACK_LEN + 4;

/// What the link layer threw away, by reason (both directions keep these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Bytes outside any frame (line noise, a peer booting), skipped while
    /// hunting for the start byte.
    pub noise_bytes: u32,
    /// Frames with a start byte but a type this side does not accept.
    pub bad_type: u32,
    /// Frames whose length field is impossible for their type.
    pub bad_length: u32,
    /// Frames whose CRC did not match.
    pub bad_crc: u32,
    /// Frames cut off: the line went idle before they completed.
    pub truncated: u32,
    /// Frames with a good CRC whose payload did not decode.
    pub bad_payload: u32,
}

impl LinkCounters {
    /// Frames rejected for any reason (noise bytes not included).
    pub fn rejected_frames(&self) -> u32 {
        self.bad_type + self.bad_length + self.bad_crc + self.truncated + self.bad_payload
    }
}

/// Parses type-2 link frames (acks) from the modem, a byte at a time,
/// without allocating.
///
/// After a bad frame the parser does not drop what it buffered: it looks
/// for the next start byte inside it and resumes from there, so a frame cut
/// short by a following good frame costs only the cut frame. A frame cut
/// off at the end of a burst is dropped by [`AckParser::line_idle`].
#[derive(Debug, Clone)]
pub struct AckParser {
    buf: [u8; ACK_FRAME],
    at: usize,
    counters: LinkCounters,
}

impl Default for AckParser {
    fn default() -> Self {
        Self::new()
    }
}

/// One step of the ack parser over its buffer.
enum Step {
    More,
    Ack(Ack),
    Reject,
}

impl AckParser {
    /// A parser waiting for a start byte.
    pub const fn new() -> Self {
        Self {
            buf: [0; ACK_FRAME],
            at: 0,
            counters: LinkCounters {
                noise_bytes: 0,
                bad_type: 0,
                bad_length: 0,
                bad_crc: 0,
                truncated: 0,
                bad_payload: 0,
            },
        }
    }

    /// What was discarded so far.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// True while part of a frame is buffered.
    pub fn in_frame(&self) -> bool {
        self.at > 0
    }

    /// Feeds one byte; returns an ack when a valid frame completes.
    pub fn push(&mut self, b: u8) -> Option<Ack> {
        // Bytes still to parse: after a rejected frame, the bytes it had
        // buffered after its start byte, then the rest. Buffered plus
        // pending bytes never exceed one frame, so this fits.
        let mut pending = [0u8; ACK_FRAME];
        pending[0] = b;
        let (mut idx, mut len) = (0, 1);
        while idx < len {
            match self.step(pending[idx]) {
                Step::More => idx += 1,
                Step::Ack(a) => return Some(a),
                Step::Reject => {
                    let carried = self.at - 1;
                    let rest = len - idx - 1;
                    let mut next = [0u8; ACK_FRAME];
                    next[..carried].copy_from_slice(&self.buf[1..self.at]);
                    next[carried..carried + rest].copy_from_slice(&pending[idx + 1..len]);
                    pending = next;
                    len = carried + rest;
                    idx = 0;
                    self.at = 0;
                }
            }
        }
        None
    }

    /// The line has been idle for longer than a frame takes: a partial
    /// frame will never complete, so it is dropped and counted.
    pub fn line_idle(&mut self) {
        if self.at > 0 {
            self.counters.truncated += 1;
            self.at = 0;
        }
    }

    fn step(&mut self, b: u8) -> Step {
        if self.at == 0 {
            if b == START {
                self.buf[0] = b;
                self.at = 1;
            } else {
                self.counters.noise_bytes += 1;
            }
            return Step::More;
        }
        self.buf[self.at] = b;
        self.at += 1;
        if self.at == 2 && b != TYPE_ACK {
            self.counters.bad_type += 1;
            return Step::Reject;
        }
        if self.at == 4 && u16::from_le_bytes([self.buf[2], self.buf[3]]) != binary::ACK_LEN as u16
        {
            self.counters.bad_length += 1;
            return Step::Reject;
        }
        if self.at < ACK_FRAME {
            return Step::More;
        }
        let payload = &self.buf[4..4 + binary::ACK_LEN];
        let mut c = [0u8; 4];
        c.copy_from_slice(&self.buf[4 + binary::ACK_LEN..]);
        if u32::from_le_bytes(c) != link_crc(TYPE_ACK, payload) {
            self.counters.bad_crc += 1;
            return Step::Reject;
        }
        // A good CRC: this was a whole frame, whatever it holds.
        self.at = 0;
        match binary::decode_ack(payload) {
            Ok(a) => Step::Ack(a),
            Err(_) => {
                self.counters.bad_payload += 1;
                Step::More
            }
        }
    }
}

/// What [`decode_link_frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDecode<'a> {
    /// Not enough bytes yet for a whole frame; nothing is consumed.
    Incomplete,
    /// A whole, CRC-checked frame that took `used` bytes.
    Frame {
        /// Frame type ([`TYPE_PUBLISH`] or [`TYPE_ACK`]).
        kind: u8,
        /// The payload.
        payload: &'a [u8],
        /// Bytes the frame took (drop them).
        used: usize,
    },
    /// Bytes to drop, and why.
    Invalid {
        /// Bytes to drop before decoding again.
        skip: usize,
        /// Why.
        reason: LinkReject,
    },
}

/// Why bytes were dropped by [`decode_link_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkReject {
    /// Bytes before a start byte.
    Noise,
    /// A type other than the one expected.
    BadType(u8),
    /// A length above the limit (or wrong for an ack).
    BadLength(u16),
    /// The CRC did not match.
    BadCrc,
}

impl LinkCounters {
    /// Counts one rejection (`skip` bytes for noise).
    pub fn count(&mut self, reason: LinkReject, skip: usize) {
        match reason {
            LinkReject::Noise => {
                self.noise_bytes = self
                    .noise_bytes
                    .saturating_add(u32::try_from(skip).unwrap_or(u32::MAX))
            }
            LinkReject::BadType(_) => self.bad_type += 1,
            LinkReject::BadLength(_) => self.bad_length += 1,
            LinkReject::BadCrc => self.bad_crc += 1,
        }
    }
}

/// Decodes one link frame of type `kind` from the start of `buf` (the
/// modem's side: it receives type 1 frames of up to `max_payload` bytes).
///
/// After `Invalid` the caller drops `skip` bytes and decodes again; a bad
/// frame costs its start byte only, so a good frame that followed a cut one
/// is still found.
pub fn decode_link_frame(buf: &[u8], kind: u8, max_payload: usize) -> LinkDecode<'_> {
    let Some(&first) = buf.first() else {
        return LinkDecode::Incomplete;
    };
    if first != START {
        let skip = buf.iter().position(|b| *b == START).unwrap_or(buf.len());
        return LinkDecode::Invalid {
            skip,
            reason: LinkReject::Noise,
        };
    }
    if buf.len() < 2 {
        return LinkDecode::Incomplete;
    }
    if buf[1] != kind {
        return LinkDecode::Invalid {
            skip: 1,
            reason: LinkReject::BadType(buf[1]),
        };
    }
    if buf.len() < 4 {
        return LinkDecode::Incomplete;
    }
    let len = u16::from_le_bytes([buf[2], buf[3]]);
    let bad_len = if kind == TYPE_ACK {
        usize::from(len) != binary::ACK_LEN
    } else {
        len == 0 || usize::from(len) > max_payload
    };
    if bad_len {
        return LinkDecode::Invalid {
            skip: 1,
            reason: LinkReject::BadLength(len),
        };
    }
    let end = 4 + usize::from(len);
    if buf.len() < end + 4 {
        return LinkDecode::Incomplete;
    }
    let payload = &buf[4..end];
    let stored = u32::from_le_bytes([buf[end], buf[end + 1], buf[end + 2], buf[end + 3]]);
    if stored != link_crc(kind, payload) {
        return LinkDecode::Invalid {
            skip: 1,
            reason: LinkReject::BadCrc,
        };
    }
    LinkDecode::Frame {
        kind,
        payload,
        used: end + 4,
    }
}

/// Encodes `payload` as a link frame of type `kind` (what
/// [`SerialUplink`] writes for type 1).
#[cfg(feature = "std")]
pub fn encode_link_frame(kind: u8, payload: &[u8]) -> Result<std::vec::Vec<u8>, LinkError<()>> {
    let len = u16::try_from(payload.len()).map_err(|_| LinkError::TooLong)?;
    let mut out = std::vec::Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&header(kind, len));
    out.extend_from_slice(payload);
    out.extend_from_slice(&link_crc(kind, payload).to_le_bytes());
    Ok(out)
}

/// Encodes an ack as a type-2 link frame (what the modem sends).
pub fn encode_ack_frame(ack: &Ack) -> [u8; ACK_FRAME] {
    let mut out = [0u8; ACK_FRAME];
    let payload = binary::encode_ack(ack);
    out[..4].copy_from_slice(&header(TYPE_ACK, binary::ACK_LEN as u16));
    out[4..4 + binary::ACK_LEN].copy_from_slice(&payload);
    out[4 + binary::ACK_LEN..].copy_from_slice(&link_crc(TYPE_ACK, &payload).to_le_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mrv_shared::wire::AckStatus;

    struct Sink(std::vec::Vec<u8>);
    impl embedded_io::ErrorType for Sink {
        type Error = core::convert::Infallible;
    }
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn publish_frames_are_framed_with_a_crc() {
        let mut up = SerialUplink::new(Sink(std::vec::Vec::new()));
        up.send(1, b"MFxyz").unwrap();
        let out = up.release().0;
        assert_eq!(&out[..4], &[0xC0, 0x01, 5, 0]);
        assert_eq!(&out[4..9], b"MFxyz");
        assert_eq!(
            u32::from_le_bytes([out[9], out[10], out[11], out[12]]),
            link_crc(1, b"MFxyz")
        );
    }

    #[test]
    fn acks_parse_after_garbage_and_corrupt_frames_are_dropped() {
        let ack = Ack {
            acked_seq: 77,
            status: AckStatus::Ok,
        };
        let good = encode_ack_frame(&ack);
        let mut bad = good;
        bad[8] ^= 1;
        let mut p = AckParser::new();
        let mut got = std::vec::Vec::new();
        for b in [0x00, 0xC0, 0x05]
            .iter()
            .chain(bad.iter())
            .chain(good.iter())
        {
            if let Some(a) = p.push(*b) {
                got.push(a);
            }
        }
        assert_eq!(got, [ack]);
        assert_eq!(p.counters().bad_crc, 1);
        assert_eq!(p.counters().bad_type, 1);
        // 0x00; 0x05 after its false start; the corrupt frame's 19 bytes
        // after its start byte.
        assert_eq!(p.counters().noise_bytes, 21);
    }

    #[test]
    fn a_truncated_ack_costs_only_itself_and_an_idle_line_drops_a_partial_one() {
        let a1 = Ack {
            acked_seq: 5,
            status: AckStatus::Ok,
        };
        let a2 = Ack {
            acked_seq: 6,
            status: AckStatus::BufferFull,
        };
        let mut p = AckParser::new();
        let mut got = std::vec::Vec::new();
        let f1 = encode_ack_frame(&a1);
        let f2 = encode_ack_frame(&a2);
        for b in f1[..9].iter().chain(f2.iter()) {
            got.extend(p.push(*b));
        }
        assert_eq!(got, [a2]);
        assert_eq!(p.counters().bad_crc, 1);
        assert_eq!(p.counters().rejected_frames(), 1);
        for b in &f1[..9] {
            assert_eq!(p.push(*b), None);
        }
        assert!(p.in_frame());
        p.line_idle();
        assert!(!p.in_frame());
        assert_eq!(p.counters().truncated, 1);
        got.clear();
        for b in f1.iter() {
            got.extend(p.push(*b));
        }
        assert_eq!(got, [a1]);
    }

    #[test]
    #[cfg(feature = "std")]
    fn the_modem_side_decoder_says_incomplete_invalid_or_frame() {
        let f = encode_link_frame(TYPE_PUBLISH, b"MFabc").unwrap();
        for n in 0..f.len() {
            assert_eq!(
                decode_link_frame(&f[..n], TYPE_PUBLISH, 64),
                LinkDecode::Incomplete,
                "{n}"
            );
        }
        assert_eq!(
            decode_link_frame(&f, TYPE_PUBLISH, 64),
            LinkDecode::Frame {
                kind: TYPE_PUBLISH,
                payload: b"MFabc",
                used: f.len()
            }
        );
        let mut noisy = std::vec![1, 2, 3];
        noisy.extend_from_slice(&f);
        assert_eq!(
            decode_link_frame(&noisy, TYPE_PUBLISH, 64),
            LinkDecode::Invalid {
                skip: 3,
                reason: LinkReject::Noise
            }
        );
        let mut bad = f.clone();
        bad[5] ^= 1;
        assert_eq!(
            decode_link_frame(&bad, TYPE_PUBLISH, 64),
            LinkDecode::Invalid {
                skip: 1,
                reason: LinkReject::BadCrc
            }
        );
        assert_eq!(
            decode_link_frame(&f, TYPE_PUBLISH, 4),
            LinkDecode::Invalid {
                skip: 1,
                reason: LinkReject::BadLength(5)
            }
        );
        assert_eq!(
            decode_link_frame(&f, TYPE_ACK, 64),
            LinkDecode::Invalid {
                skip: 1,
                reason: LinkReject::BadType(TYPE_PUBLISH)
            }
        );
    }

    /// Drains `buf` through the modem-side decoder as the bridge does,
    /// the line going idle after the last byte: payloads found, counters.
    fn drain(mut buf: &[u8]) -> (std::vec::Vec<std::vec::Vec<u8>>, LinkCounters) {
        let mut out = std::vec::Vec::new();
        let mut c = LinkCounters::default();
        loop {
            match decode_link_frame(buf, TYPE_PUBLISH, 1024) {
                LinkDecode::Incomplete if buf.is_empty() => return (out, c),
                LinkDecode::Incomplete => {
                    // Idle line: the partial frame is cut; look again after
                    // its start byte.
                    c.truncated += 1;
                    buf = &buf[1..];
                }
                LinkDecode::Frame { payload, used, .. } => {
                    out.push(payload.to_vec());
                    buf = &buf[used..];
                }
                LinkDecode::Invalid { skip, reason } => {
                    c.count(reason, skip);
                    buf = &buf[skip..];
                }
            }
        }
    }

    proptest::proptest! {
        /// Whatever garbage surrounds them (false start bytes, cut frames,
        /// wrong CRCs), every whole ack frame on the line is found, in order.
        #[test]
        fn every_whole_ack_survives_any_garbage_around_it(
            chunks in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30), 0u64..1000, 0usize..20),
                1..20,
            ),
        ) {
            let mut p = AckParser::new();
            let mut sent = std::vec::Vec::new();
            let mut got = std::vec::Vec::new();
            for (junk, seq, cut) in chunks {
                // A cut copy of another ack, then junk, then a whole ack.
                let other = Ack { acked_seq: 1_000_000 + seq, status: AckStatus::Ok };
                let cut_frame = encode_ack_frame(&other);
                for b in cut_frame[..cut].iter().chain(junk.iter()) {
                    got.extend(p.push(*b));
                }
                let ack = Ack { acked_seq: seq, status: AckStatus::Ok };
                for b in encode_ack_frame(&ack) {
                    got.extend(p.push(b));
                }
                sent.push(ack);
            }
            // Junk may by chance hold a whole valid frame; only ours count.
            got.retain(|a| sent.contains(a));
            proptest::prop_assert_eq!(got, sent);
        }

        /// The modem side finds every whole publish frame among garbage.
        #[test]
        #[cfg(feature = "std")]
        fn every_whole_publish_frame_survives_any_garbage_around_it(
            chunks in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40),
                 0usize..12),
                1..12,
            ),
        ) {
            let mut line = std::vec::Vec::new();
            let mut sent = std::vec::Vec::new();
            for (junk, payload, cut) in chunks {
                let f = encode_link_frame(TYPE_PUBLISH, &payload).unwrap();
                line.extend_from_slice(&f[..cut.min(f.len() - 1)]);
                line.extend_from_slice(&junk);
                line.extend_from_slice(&f);
                sent.push(payload);
            }
            let (mut got, _) = drain(&line);
            got.retain(|p| sent.contains(p));
            // A cut copy followed by junk may complete with a good CRC
            // only by chance (2^-32); every whole frame is there in order.
            let mut it = got.iter();
            for s in &sent {
                proptest::prop_assert!(it.any(|g| g == s), "missing {:?}", s);
            }
        }
    }
}
