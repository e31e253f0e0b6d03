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

const ACK_FRAME: usize = 4 + binary::ACK_LEN + 4;

/// Parses type-2 link frames (acks) from the modem, a byte at a time.
#[derive(Debug, Clone)]
pub struct AckParser {
    buf: [u8; ACK_FRAME],
    at: usize,
    /// Frames dropped (bad type, length, CRC or ack).
    pub rejected: u32,
}

impl Default for AckParser {
    fn default() -> Self {
        Self::new()
    }
}

impl AckParser {
    /// A parser waiting for a start byte.
    pub const fn new() -> Self {
        Self {
            buf: [0; ACK_FRAME],
            at: 0,
            rejected: 0,
        }
    }

    /// Feeds one byte; returns an ack when a valid frame completes.
    pub fn push(&mut self, b: u8) -> Option<Ack> {
        if self.at == 0 {
            if b == START {
                self.buf[0] = b;
                self.at = 1;
            }
            return None;
        }
        self.buf[self.at] = b;
        self.at += 1;
        let header_bad = (self.at == 2 && b != TYPE_ACK)
            || (self.at == 4
                && u16::from_le_bytes([self.buf[2], self.buf[3]]) != binary::ACK_LEN as u16);
        if header_bad {
            self.rejected += 1;
            self.at = usize::from(b == START);
            return None;
        }
        if self.at < ACK_FRAME {
            return None;
        }
        self.at = 0;
        let payload = &self.buf[4..4 + binary::ACK_LEN];
        let mut c = [0u8; 4];
        c.copy_from_slice(&self.buf[4 + binary::ACK_LEN..]);
        if u32::from_le_bytes(c) != link_crc(TYPE_ACK, payload) {
            self.rejected += 1;
            return None;
        }
        match binary::decode_ack(payload) {
            Ok(a) => Some(a),
            Err(_) => {
                self.rejected += 1;
                None
            }
        }
    }
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
        assert!(p.rejected >= 2);
    }
}
