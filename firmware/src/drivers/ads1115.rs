//! ADS1115-class I2C ADC reading 4-20 mA current loops through a shunt.
//!
//! Bus access lives in [`Ads1115::read_raw`] (one single-shot conversion:
//! write the config register, poll its OS bit, read the conversion
//! register). Everything else is pure: [`config_word`] builds the config
//! register, [`raw_to_microvolts`] and [`microvolts_to_microamps`] convert,
//! [`classify_loop`] applies NAMUR NE 43 limits and [`LoopScale`] maps the
//! current to the probe's engineering range (water level in mm, pressure in
//! Pa).
//!
//! Registers (TI SBAS444): pointer 0x00 conversion (i16, big-endian),
//! 0x01 config. Config used: OS=1 (start), MUX=1xx (AINx vs GND),
//! PGA=001 (+-4.096 V, 125 uV/LSB), MODE=1 (single shot), DR=100
//! (128 SPS), comparator disabled (COMP_QUE=11).
//!
//! Loop limits (NAMUR NE 43): below 3.6 mA the loop is open (probe
//! unplugged, wire cut); 3.6-3.8 mA and 20.5-21.0 mA are outside the
//! measuring range; above 21.0 mA the loop is shorted.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// Default 7-bit address (ADDR pin to GND).
pub const DEFAULT_ADDRESS: u8 = 0x48;
/// Conversion register pointer.
pub const REG_CONVERSION: u8 = 0x00;
/// Config register pointer.
pub const REG_CONFIG: u8 = 0x01;
/// Microvolts per LSB at PGA +-4.096 V.
pub const UV_PER_LSB: i32 = 125;
/// Conversion time at 128 SPS, with margin, in microseconds.
pub const CONVERSION_US: u32 = 8_000;
/// Config-register polls before giving up on a conversion.
pub const MAX_POLLS: u8 = 4;

/// Driver errors: the bus failed, or the converter never finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// I2C bus error.
    I2c(E),
    /// The conversion did not complete after [`MAX_POLLS`] polls.
    Timeout,
    /// Channel number above 3.
    BadChannel(u8),
}

/// The config register word for a single-shot conversion of `channel`
/// (0-3) against GND.
pub const fn config_word(channel: u8) -> u16 {
    0x8000 | (0b100 | (channel as u16 & 0b11)) << 12 | 0b001 << 9 | 1 << 8 | 0b100 << 5 | 0b11
}

/// Converter counts to microvolts at PGA +-4.096 V.
pub fn raw_to_microvolts(raw: i16) -> i32 {
    i32::from(raw) * UV_PER_LSB
}

/// Shunt voltage to loop current: `uA = uV * 1000 / shunt_milliohm`.
pub fn microvolts_to_microamps(uv: i32, shunt_milliohm: u32) -> i32 {
    let v = i64::from(uv) * 1000 / i64::from(shunt_milliohm.max(1));
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// State of a 4-20 mA loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopState {
    /// Below 3.6 mA: open loop (probe unplugged, wire cut, no supply).
    Open,
    /// 3.6 to 3.8 mA: under the measuring range.
    UnderRange,
    /// 3.8 to 20.5 mA: a valid measurement.
    Ok,
    /// 20.5 to 21 mA: over the measuring range.
    OverRange,
    /// Above 21 mA: short circuit or probe fault.
    Short,
}

/// Applies the NAMUR NE 43 limits to a loop current in uA.
pub fn classify_loop(ua: i32) -> LoopState {
    match ua {
        i32::MIN..3_600 => LoopState::Open,
        3_600..3_800 => LoopState::UnderRange,
        3_800..=20_500 => LoopState::Ok,
        20_501..=21_000 => LoopState::OverRange,
        _ => LoopState::Short,
    }
}

/// A probe's range: 4 mA reads `at_4ma`, 20 mA reads `at_20ma` (base units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopScale {
    /// Value at 4 mA.
    pub at_4ma: i64,
    /// Value at 20 mA.
    pub at_20ma: i64,
}

impl LoopScale {
    /// Linear map of a current (uA) to base units, rounded toward zero.
    /// Currents outside 4-20 mA extrapolate; callers clamp or flag.
    pub fn to_value(self, ua: i32) -> i64 {
        let span = self.at_20ma - self.at_4ma;
        self.at_4ma + (i64::from(ua) - 4_000) * span / 16_000
    }
}

/// An ADS1115 on an I2C bus.
#[derive(Debug)]
pub struct Ads1115<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
}

impl<I2C: I2c, D: DelayNs> Ads1115<I2C, D> {
    /// A driver for the converter at `address` (see [`DEFAULT_ADDRESS`]).
    pub fn new(i2c: I2C, delay: D, address: u8) -> Self {
        Self {
            i2c,
            delay,
            address,
        }
    }

    /// One single-shot conversion of `channel` (0-3); raw counts.
    pub fn read_raw(&mut self, channel: u8) -> Result<i16, Error<I2C::Error>> {
        if channel > 3 {
            return Err(Error::BadChannel(channel));
        }
        let [hi, lo] = config_word(channel).to_be_bytes();
        self.i2c
            .write(self.address, &[REG_CONFIG, hi, lo])
            .map_err(Error::I2c)?;
        let mut ready = false;
        for _ in 0..MAX_POLLS {
            self.delay.delay_us(CONVERSION_US / 2);
            let mut buf = [0u8; 2];
            self.i2c
                .write_read(self.address, &[REG_CONFIG], &mut buf)
                .map_err(Error::I2c)?;
            if buf[0] & 0x80 != 0 {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err(Error::Timeout);
        }
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[REG_CONVERSION], &mut buf)
            .map_err(Error::I2c)?;
        Ok(i16::from_be_bytes(buf))
    }

    /// Reads `channel` as a loop current in uA through a shunt of
    /// `shunt_milliohm`.
    pub fn read_loop_microamps(
        &mut self,
        channel: u8,
        shunt_milliohm: u32,
    ) -> Result<i32, Error<I2C::Error>> {
        let raw = self.read_raw(channel)?;
        Ok(microvolts_to_microamps(
            raw_to_microvolts(raw),
            shunt_milliohm,
        ))
    }

    /// The bus (e.g. for a simulator to drive it).
    pub fn bus_mut(&mut self) -> &mut I2C {
        &mut self.i2c
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    const A: u8 = DEFAULT_ADDRESS;

    #[test]
    fn config_word_matches_the_datasheet_bits() {
        assert_eq!(config_word(0), 0xC383);
        assert_eq!(config_word(3), 0xF383);
    }

    #[test]
    fn converts_counts_to_current_and_level() {
        // 12 mA over 150 ohm = 1.8 V = 14400 counts.
        let ua = microvolts_to_microamps(raw_to_microvolts(14_400), 150_000);
        assert_eq!(ua, 12_000);
        assert_eq!(classify_loop(ua), LoopState::Ok);
        let tube = LoopScale {
            at_4ma: -300,
            at_20ma: 200,
        };
        assert_eq!(tube.to_value(4_000), -300);
        assert_eq!(tube.to_value(20_000), 200);
        assert_eq!(tube.to_value(12_000), -50);
    }

    #[test]
    fn namur_limits_detect_open_and_shorted_loops() {
        assert_eq!(classify_loop(0), LoopState::Open);
        assert_eq!(classify_loop(3_599), LoopState::Open);
        assert_eq!(classify_loop(3_700), LoopState::UnderRange);
        assert_eq!(classify_loop(3_800), LoopState::Ok);
        assert_eq!(classify_loop(20_500), LoopState::Ok);
        assert_eq!(classify_loop(20_800), LoopState::OverRange);
        assert_eq!(classify_loop(22_000), LoopState::Short);
    }

    #[test]
    fn single_shot_conversion_polls_until_ready() {
        let tx = [
            Transaction::write(A, vec![REG_CONFIG, 0xD3, 0x83]),
            Transaction::write_read(A, vec![REG_CONFIG], vec![0x53, 0x83]),
            Transaction::write_read(A, vec![REG_CONFIG], vec![0xD3, 0x83]),
            Transaction::write_read(A, vec![REG_CONVERSION], vec![0x38, 0x40]),
        ];
        let mut i2c = Mock::new(&tx);
        let mut adc = Ads1115::new(i2c.clone(), NoopDelay::new(), A);
        assert_eq!(adc.read_loop_microamps(1, 150_000).unwrap(), 12_000);
        adc.release();
        i2c.done();
    }

    #[test]
    fn a_converter_that_never_finishes_times_out() {
        let mut tx = vec![Transaction::write(A, vec![REG_CONFIG, 0xC3, 0x83])];
        for _ in 0..MAX_POLLS {
            tx.push(Transaction::write_read(
                A,
                vec![REG_CONFIG],
                vec![0x43, 0x83],
            ));
        }
        let mut i2c = Mock::new(&tx);
        let mut adc = Ads1115::new(i2c.clone(), NoopDelay::new(), A);
        assert_eq!(adc.read_raw(0), Err(Error::Timeout));
        assert!(matches!(adc.read_raw(4), Err(Error::BadChannel(4))));
        adc.release();
        i2c.done();
    }
}
