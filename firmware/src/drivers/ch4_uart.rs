//! Biogas analyser over a UART (embedded-io): CH4 fraction and, if the
//! analyser has one, the gas flow.
//!
//! ## Frame (analyser to node, sent about once a second)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | start byte `0x7E` |
//! | 1 | 1 | payload length `L`: 2 (CH4 only) or 6 (CH4 + flow) |
//! | 2 | 2 | CH4 fraction, u16 big-endian, 0.01 vol% (0-10000) |
//! | 4 | 4 | flow, u32 big-endian, mL/min (only when `L` = 6) |
//! | 2+L | 1 | CRC-8 (poly 0x07, init 0x00) over bytes `[1, 2+L)` |
//!
//! The parser ([`FrameParser`]) is a pure byte-at-a-time state machine: it
//! skips garbage until a start byte, rejects unknown lengths and bad
//! checksums (counting them) and resynchronises on the next start byte.
//! The driver ([`Ch4Analyser`]) only moves bytes from the UART into it.
//!
//! Invariant: a reading is returned only from a complete frame whose CRC
//! matches and whose CH4 value is within 0-100 vol%.

use embedded_io::Read;

/// Start-of-frame byte.
pub const START: u8 = 0x7E;
/// Longest frame: start, length, 6 payload bytes, CRC.
pub const MAX_FRAME: usize = 9;
/// Bytes the driver reads at most per [`Ch4Analyser::read_reading`] call
/// before giving up (a bit more than two frames).
pub const MAX_SCAN: usize = 2 * MAX_FRAME + 4;

/// One analyser reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiogasReading {
    /// CH4 fraction, 0.01 vol%.
    pub ch4_centi_pct: u16,
    /// Gas flow, mL/min, if the analyser measures it.
    pub flow_ml_min: Option<u32>,
}

/// Why bytes were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length byte other than 2 or 6.
    BadLength(u8),
    /// CRC mismatch.
    BadChecksum,
    /// CH4 above 100 vol%.
    Implausible(u16),
}

/// CRC-8, polynomial 0x07, initial value 0, no reflection.
pub fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Encodes a reading as an analyser frame (for simulators and tests);
/// returns the buffer and the number of bytes used.
pub fn encode(r: &BiogasReading) -> ([u8; MAX_FRAME], usize) {
    let mut out = [0u8; MAX_FRAME];
    out[0] = START;
    out[2..4].copy_from_slice(&r.ch4_centi_pct.to_be_bytes());
    let len = match r.flow_ml_min {
        Some(f) => {
            out[4..8].copy_from_slice(&f.to_be_bytes());
            6
        }
        None => 2,
    };
    out[1] = len as u8;
    out[2 + len] = crc8(&out[1..2 + len]);
    (out, 3 + len)
}

/// Byte-at-a-time frame parser.
#[derive(Debug, Clone)]
pub struct FrameParser {
    buf: [u8; MAX_FRAME],
    at: usize,
    /// Frames rejected since creation.
    pub rejected: u32,
}

impl Default for FrameParser {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameParser {
    /// An empty parser, waiting for a start byte.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            at: 0,
            rejected: 0,
        }
    }

    /// Feeds one byte; returns a reading or a rejection when a frame ends.
    pub fn push(&mut self, b: u8) -> Option<Result<BiogasReading, FrameError>> {
        if self.at == 0 {
            if b == START {
                self.buf[0] = b;
                self.at = 1;
            }
            return None;
        }
        if self.at == 1 && b != 2 && b != 6 {
            self.at = usize::from(b == START);
            self.rejected += 1;
            return Some(Err(FrameError::BadLength(b)));
        }
        self.buf[self.at] = b;
        self.at += 1;
        let len = usize::from(self.buf[1]);
        if self.at < 3 + len {
            return None;
        }
        self.at = 0;
        let result = if crc8(&self.buf[1..2 + len]) != self.buf[2 + len] {
            Err(FrameError::BadChecksum)
        } else {
            let ch4 = u16::from_be_bytes([self.buf[2], self.buf[3]]);
            if ch4 > 10_000 {
                Err(FrameError::Implausible(ch4))
            } else {
                Ok(BiogasReading {
                    ch4_centi_pct: ch4,
                    flow_ml_min: (len == 6).then(|| {
                        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
                    }),
                })
            }
        };
        if result.is_err() {
            self.rejected += 1;
        }
        Some(result)
    }
}

/// Driver errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The UART failed.
    Uart(E),
    /// The UART reached end of stream.
    Closed,
    /// [`MAX_SCAN`] bytes without a valid frame (garbage on the wire, or
    /// the analyser is silent/unplugged and the UART returns idle bytes).
    NoFrame,
}

/// A biogas analyser on a UART.
#[derive(Debug)]
pub struct Ch4Analyser<U> {
    uart: U,
    parser: FrameParser,
}

impl<U: Read> Ch4Analyser<U> {
    /// A driver reading from `uart`.
    pub fn new(uart: U) -> Self {
        Self {
            uart,
            parser: FrameParser::new(),
        }
    }

    /// Reads bytes until a valid frame arrives; gives up after
    /// [`MAX_SCAN`] bytes. Bad frames on the way are skipped (and counted
    /// in [`Ch4Analyser::rejected`]).
    pub fn read_reading(&mut self) -> Result<BiogasReading, Error<U::Error>> {
        for _ in 0..MAX_SCAN {
            let mut b = [0u8; 1];
            let n = self.uart.read(&mut b).map_err(Error::Uart)?;
            if n == 0 {
                return Err(Error::Closed);
            }
            if let Some(Ok(r)) = self.parser.push(b[0]) {
                return Ok(r);
            }
        }
        Err(Error::NoFrame)
    }

    /// Frames rejected so far.
    pub fn rejected(&self) -> u32 {
        self.parser.rejected
    }

    /// The UART (e.g. for a simulator to feed it).
    pub fn uart_mut(&mut self) -> &mut U {
        &mut self.uart
    }

    /// Gives the UART back.
    pub fn release(self) -> U {
        self.uart
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::serial::{Mock, Transaction};
    use proptest::prelude::*;

    /// Adapts the embedded-hal-nb serial mock to embedded-io `Read`.
    struct IoMock(Mock<u8>);
    impl embedded_io::ErrorType for IoMock {
        type Error = core::convert::Infallible;
    }
    impl Read for IoMock {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            buf[0] = nb_block(&mut self.0);
            Ok(1)
        }
    }
    fn nb_block(m: &mut Mock<u8>) -> u8 {
        use embedded_hal_nb::serial::Read as _;
        loop {
            match m.read() {
                Ok(b) => return b,
                Err(nb::Error::WouldBlock) => continue,
                Err(nb::Error::Other(e)) => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn known_frame_bytes() {
        let (b, n) = encode(&BiogasReading {
            ch4_centi_pct: 5_850,
            flow_ml_min: None,
        });
        assert_eq!(
            &b[..n],
            &[0x7E, 0x02, 0x16, 0xDA, crc8(&[0x02, 0x16, 0xDA])]
        );
        assert_eq!(crc8(b"123456789"), 0xF4);
    }

    #[test]
    fn reads_a_frame_after_garbage_and_a_corrupt_frame() {
        let good = BiogasReading {
            ch4_centi_pct: 6_012,
            flow_ml_min: Some(20_833),
        };
        let (g, gn) = encode(&good);
        let mut bad = g;
        bad[3] ^= 0x01;
        let mut bytes = std::vec![0x00, 0xFF, 0x13];
        bytes.extend_from_slice(&bad[..gn]);
        bytes.extend_from_slice(&g[..gn]);
        let mut mock = Mock::new(&[Transaction::read_many(bytes.clone())]);
        let mut a = Ch4Analyser::new(IoMock(mock.clone()));
        assert_eq!(a.read_reading().unwrap(), good);
        assert_eq!(a.rejected(), 1);
        a.release();
        mock.done();
    }

    #[test]
    fn a_silent_analyser_gives_no_frame() {
        let mut mock = Mock::new(&[Transaction::read_many(std::vec![0u8; MAX_SCAN])]);
        let mut a = Ch4Analyser::new(IoMock(mock.clone()));
        assert_eq!(a.read_reading(), Err(Error::NoFrame));
        a.release();
        mock.done();
    }

    proptest! {
        #[test]
        fn any_reading_round_trips_through_noise(
            ch4 in 0u16..=10_000,
            flow in proptest::option::of(any::<u32>()),
            noise in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let r = BiogasReading { ch4_centi_pct: ch4, flow_ml_min: flow };
            let (b, n) = encode(&r);
            let mut p = FrameParser::new();
            for x in noise { p.push(x); }
            // An idle line (zeros) for one frame time ends any partial frame.
            for _ in 0..MAX_FRAME { p.push(0); }
            let mut got = std::vec::Vec::new();
            for x in &b[..n] {
                if let Some(v) = p.push(*x) { got.push(v); }
            }
            prop_assert_eq!(got, std::vec![Ok(r)]);
        }
    }
}
