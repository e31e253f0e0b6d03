//! Deterministic sensor signals for an image that runs with no sensors
//! attached (the QEMU image, `firmware/image-mps2`): what the node's pins,
//! its I2C converter and its analyser UART would see, as pure functions of
//! one shared millisecond clock ([`RigClock`]).
//!
//! The node's own drivers ([`crate::drivers`]) read these exactly as they
//! read a board's peripherals; nothing here allocates.
//!
//! - [`SquareWavePin`]: a digital input active for `active_ms` of every
//!   `period_ms` (S0 pulses, a pump's run contact);
//! - [`Ads1115Model`]: register-level model of an ADS1115 measuring 4-20 mA
//!   loops through a shunt (also used by the host simulator);
//! - [`AnalyserStream`]: a biogas analyser sending one CH4 frame every
//!   `period_ms`, a byte at a time.

use crate::drivers::ads1115::{REG_CONFIG, REG_CONVERSION, UV_PER_LSB};
use crate::drivers::ch4_uart::{self, BiogasReading, MAX_FRAME};
use core::cell::Cell;
use embedded_hal::i2c::{ErrorKind, I2c, Operation, SevenBitAddress};

/// The rig's notion of now, in ms since boot; the image's main loop sets
/// it, the signal sources read it.
#[derive(Debug, Default)]
pub struct RigClock(Cell<u64>);

impl RigClock {
    /// A clock at 0.
    pub const fn new() -> Self {
        Self(Cell::new(0))
    }
    /// Sets now.
    pub fn set(&self, ms: u64) {
        self.0.set(ms);
    }
    /// Now.
    pub fn now(&self) -> u64 {
        self.0.get()
    }
}

/// A digital input that is active for the first `active_ms` of every
/// `period_ms` (active = low when `active_low`, as an S0 output or a
/// contact to ground with a pull-up reads).
#[derive(Debug, Clone, Copy)]
pub struct SquareWavePin<'a> {
    clock: &'a RigClock,
    period_ms: u64,
    active_ms: u64,
    active_low: bool,
}

impl<'a> SquareWavePin<'a> {
    /// A pin on `clock`; `period_ms` must be above 0.
    pub fn new(clock: &'a RigClock, period_ms: u64, active_ms: u64, active_low: bool) -> Self {
        Self {
            clock,
            period_ms: period_ms.max(1),
            active_ms,
            active_low,
        }
    }

    /// Whole active phases that have started by `now_ms` (what a perfect
    /// pulse counter reads).
    pub fn pulses_started(&self, now_ms: u64) -> u64 {
        if self.active_ms == 0 {
            0
        } else {
            now_ms / self.period_ms + 1
        }
    }

    /// True while the signal is active.
    pub fn is_active(&self) -> bool {
        self.clock.now() % self.period_ms < self.active_ms
    }
}

impl embedded_hal::digital::ErrorType for SquareWavePin<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::InputPin for SquareWavePin<'_> {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(self.is_active() != self.active_low)
    }
    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.is_high().map(|h| !h)
    }
}

/// An ADS1115 at one address measuring loop currents (one per input).
#[derive(Debug, Clone)]
pub struct Ads1115Model {
    address: u8,
    shunt_milliohm: u32,
    /// Loop current per input, uA.
    pub loop_ua: [i32; 4],
    pointer: u8,
    config: u16,
    conversion: i16,
}

impl Ads1115Model {
    /// A converter at `address` with a shunt of `shunt_milliohm` on every input.
    pub fn new(address: u8, shunt_milliohm: u32) -> Self {
        Self {
            address,
            shunt_milliohm,
            loop_ua: [0; 4],
            pointer: 0,
            config: 0x8583,
            conversion: 0,
        }
    }

    fn convert(&mut self) {
        let mux = (self.config >> 12) & 0b111;
        let input = usize::from(mux & 0b11);
        let uv = i64::from(self.loop_ua[input]) * i64::from(self.shunt_milliohm) / 1000;
        let raw = (uv / i64::from(UV_PER_LSB)).clamp(i64::from(i16::MIN), i64::from(i16::MAX));
        self.conversion = raw as i16;
    }
}

impl embedded_hal::i2c::ErrorType for Ads1115Model {
    type Error = ErrorKind;
}

impl I2c<SevenBitAddress> for Ads1115Model {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if address != self.address {
            return Err(ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            ));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    let Some((&p, rest)) = bytes.split_first() else {
                        continue;
                    };
                    self.pointer = p;
                    if p == REG_CONFIG && rest.len() == 2 {
                        self.config = u16::from_be_bytes([rest[0], rest[1]]);
                        if self.config & 0x8000 != 0 {
                            // Single shot: converts at once; OS reads 1 (idle).
                            self.convert();
                        }
                    }
                }
                Operation::Read(buf) => {
                    let word = match self.pointer {
                        REG_CONVERSION => self.conversion.to_be_bytes(),
                        REG_CONFIG => (self.config | 0x8000).to_be_bytes(),
                        _ => [0, 0],
                    };
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = word.get(i).copied().unwrap_or(0);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A delay that returns at once: the modelled converter is instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelay;

impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// A biogas analyser on a UART: one frame for `reading` every `period_ms`
/// (the first at `period_ms`), handed out a byte at a time.
#[derive(Debug, Clone)]
pub struct AnalyserStream<'a> {
    clock: &'a RigClock,
    period_ms: u64,
    reading: BiogasReading,
    next_ms: u64,
    frame: [u8; MAX_FRAME],
    len: usize,
    at: usize,
    frames: u64,
}

impl<'a> AnalyserStream<'a> {
    /// An analyser on `clock` reporting `reading`.
    pub fn new(clock: &'a RigClock, period_ms: u64, reading: BiogasReading) -> Self {
        let period_ms = period_ms.max(1);
        Self {
            clock,
            period_ms,
            reading,
            next_ms: period_ms,
            frame: [0; MAX_FRAME],
            len: 0,
            at: 0,
            frames: 0,
        }
    }

    /// The next byte on the line, if the analyser is sending.
    pub fn next_byte(&mut self) -> Option<u8> {
        if self.at == self.len && self.clock.now() >= self.next_ms {
            (self.frame, self.len) = ch4_uart::encode(&self.reading);
            self.at = 0;
            self.frames += 1;
            // Frames missed while nobody read are skipped, as on a UART.
            while self.next_ms <= self.clock.now() {
                self.next_ms += self.period_ms;
            }
        }
        if self.at < self.len {
            self.at += 1;
            Some(self.frame[self.at - 1])
        } else {
            None
        }
    }

    /// Frames started so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::drivers::ads1115::{Ads1115, DEFAULT_ADDRESS};
    use crate::drivers::ch4_uart::FrameParser;
    use crate::drivers::pulse::PulseCounter;

    #[test]
    fn the_real_drivers_read_the_rig_signals() {
        let clock = RigClock::new();
        let pin = SquareWavePin::new(&clock, 50, 10, true);
        let mut pc = PulseCounter::new(pin, true, 3, 0);
        for ms in 0..1000 {
            clock.set(ms);
            // Several polls per ms, as a busy main loop does.
            for _ in 0..4 {
                pc.poll().unwrap();
            }
        }
        assert_eq!(pc.pulses(), 20);
        assert_eq!(pin.pulses_started(999), 20);

        let mut adc = Ads1115Model::new(DEFAULT_ADDRESS, 150_000);
        adc.loop_ua[0] = 12_000;
        let mut drv = Ads1115::new(adc, NoDelay, DEFAULT_ADDRESS);
        assert_eq!(drv.read_loop_microamps(0, 150_000).unwrap(), 12_000);

        let r = BiogasReading {
            ch4_centi_pct: 5500,
            flow_ml_min: None,
        };
        let mut a = AnalyserStream::new(&clock, 500, r);
        let mut p = FrameParser::new();
        let mut got = 0;
        clock.set(0);
        for ms in 0..2100 {
            clock.set(ms);
            while let Some(b) = a.next_byte() {
                if let Some(Ok(x)) = p.push(b) {
                    assert_eq!(x, r);
                    got += 1;
                }
            }
        }
        assert_eq!(got, 4);
        assert_eq!(a.frames(), 4);
    }
}
