//! Simulated hardware: the buses and pins the real drivers talk to.
//!
//! The simulator does not feed values into the application directly: it
//! drives these peripherals from the physical models, and the firmware's
//! own drivers ([`crate::drivers`]) read them, exactly as on a board.
//!
//! - [`SimPin`]: a digital input whose raw levels come from a queue (S0
//!   pulses with their width, contact levels, noise glitches).
//! - [`SimAds1115`]: register-level model of an ADS1115 on I2C measuring a
//!   4-20 mA loop through a shunt (shared with the QEMU image:
//!   [`crate::emulated_sensors::Ads1115Model`]).
//! - [`SimUart`]: a UART receive buffer the biogas analyser writes frames
//!   (and, with noise, garbage) into; an idle line reads `0x00`.

use alloc::collections::VecDeque;

/// A digital input fed by a queue of raw levels; when the queue is empty it
/// holds its idle level.
#[derive(Debug, Clone)]
pub struct SimPin {
    levels: VecDeque<bool>,
    idle: bool,
}

impl SimPin {
    /// A pin resting at `idle` (true = high).
    pub fn new(idle: bool) -> Self {
        Self {
            levels: VecDeque::new(),
            idle,
        }
    }

    /// Queues `n` pulses: `width` samples at `!idle`, then `width` at idle.
    pub fn queue_pulses(&mut self, n: u64, width: u8) {
        for _ in 0..n {
            for _ in 0..width {
                self.levels.push_back(!self.idle);
            }
            for _ in 0..width {
                self.levels.push_back(self.idle);
            }
        }
    }

    /// Queues a glitch: one sample at `!idle` (shorter than any debounce
    /// threshold above 1).
    pub fn queue_glitch(&mut self) {
        self.levels.push_back(!self.idle);
        self.levels.push_back(self.idle);
    }

    /// Sets the resting level (a contact opening or closing).
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }

    /// Raw samples still queued.
    pub fn queued(&self) -> usize {
        self.levels.len()
    }
}

impl embedded_hal::digital::ErrorType for SimPin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(self.levels.pop_front().unwrap_or(self.idle))
    }
    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.is_high().map(|h| !h)
    }
}

/// The ADS1115 model the QEMU image uses too.
pub use crate::emulated_sensors::Ads1115Model as SimAds1115;
/// A delay that returns at once: the modelled converter is instant.
pub use crate::emulated_sensors::NoDelay;

/// A UART receive buffer.
#[derive(Debug, Clone, Default)]
pub struct SimUart {
    rx: VecDeque<u8>,
}

impl SimUart {
    /// Appends bytes as if the peer sent them.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.rx.extend(bytes.iter().copied());
    }
    /// Drops anything not yet read.
    pub fn clear(&mut self) {
        self.rx.clear();
    }
}

impl embedded_io::ErrorType for SimUart {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for SimUart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n < buf.len() {
            match self.rx.pop_front() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        if n == 0 {
            // Idle line: a break character.
            buf[0] = 0;
            n = 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::drivers::ads1115::{Ads1115, DEFAULT_ADDRESS};
    use crate::drivers::ch4_uart::{BiogasReading, Ch4Analyser, Error, encode};
    use crate::drivers::pulse::PulseCounter;

    #[test]
    fn the_real_drivers_read_the_simulated_peripherals() {
        let mut pin = SimPin::new(true);
        pin.queue_pulses(3, 2);
        pin.queue_glitch();
        let mut pc = PulseCounter::new(pin, true, 2, 0);
        for _ in 0..20 {
            pc.poll().unwrap();
        }
        assert_eq!(pc.pulses(), 3);

        let mut adc = SimAds1115::new(DEFAULT_ADDRESS, 150_000);
        adc.loop_ua[2] = 12_000;
        let mut drv = Ads1115::new(adc, NoDelay, DEFAULT_ADDRESS);
        assert_eq!(drv.read_loop_microamps(2, 150_000).unwrap(), 12_000);
        assert_eq!(drv.read_loop_microamps(0, 150_000).unwrap(), 0);

        let mut uart = SimUart::default();
        let r = BiogasReading {
            ch4_centi_pct: 5_900,
            flow_ml_min: None,
        };
        let (b, n) = encode(&r);
        uart.feed(&[1, 2, 3]);
        uart.feed(&b[..n]);
        let mut a = Ch4Analyser::new(uart);
        assert_eq!(a.read_reading().unwrap(), r);
        assert_eq!(a.read_reading(), Err(Error::NoFrame));
    }
}
