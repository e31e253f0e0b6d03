//! The two mps2-an386 peripherals the image uses, at register level: the
//! Arm CMSDK APB UART and the CMSDK APB timer (the board has no HAL crate;
//! these are the whole board support).
//!
//! Register maps (Arm CMSDK technical reference, as QEMU models them in
//! `hw/char/cmsdk-apb-uart.c` and `hw/timer/cmsdk-apb-timer.c`):
//! - UART: DATA 0x00, STATE 0x04 (bit 0 TX full, bit 1 RX full), CTRL 0x08
//!   (bit 0 TX enable, bit 1 RX enable), BAUDDIV 0x10 (at least 16);
//! - timer: CTRL 0x00 (bit 0 enable), VALUE 0x04 (counts down at the
//!   25 MHz peripheral clock), RELOAD 0x08.
#![allow(unsafe_code)]

use core::ptr::{read_volatile, write_volatile};

/// Peripheral clock of the board (SYSCLK), Hz.
pub const PCLK_HZ: u32 = 25_000_000;
/// UART0: the network co-processor link.
pub const UART0: usize = 0x4000_4000;
/// UART1: the console (boot line, stats, measurements).
pub const UART1: usize = 0x4000_5000;
/// APB timer 0: the millisecond clock and the measurements.
pub const TIMER0: usize = 0x4000_0000;

fn reg(base: usize, off: usize) -> *mut u32 {
    (base + off) as *mut u32
}

/// A CMSDK APB UART.
pub struct Uart {
    base: usize,
}

impl Uart {
    /// Enables TX and RX of the UART at `base` at `baud`.
    pub fn new(base: usize, baud: u32) -> Self {
        // SAFETY: `base` is one of the board's UART blocks; the writes only
        // configure that block.
        unsafe {
            write_volatile(reg(base, 0x10), (PCLK_HZ / baud).max(16));
            write_volatile(reg(base, 0x08), 0b11);
        }
        Self { base }
    }

    /// Takes a received byte, if one is waiting.
    pub fn read_byte(&mut self) -> Option<u8> {
        // SAFETY: register reads of this UART block.
        unsafe {
            if read_volatile(reg(self.base, 0x04)) & 0b10 == 0 {
                return None;
            }
            Some(read_volatile(reg(self.base, 0x00)) as u8)
        }
    }

    /// Sends a byte, waiting while the transmitter is full.
    pub fn write_byte(&mut self, b: u8) {
        // SAFETY: register access of this UART block.
        unsafe {
            while read_volatile(reg(self.base, 0x04)) & 0b01 != 0 {}
            write_volatile(reg(self.base, 0x00), u32::from(b));
        }
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for b in buf {
            self.write_byte(*b);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            self.write_byte(b);
        }
        Ok(())
    }
}

/// A free-running tick counter on the CMSDK APB timer (25 MHz), extended
/// to 64 bits: call [`Ticks::now`] at least once per 171 s.
pub struct Ticks {
    last: u32,
    total: u64,
}

impl Ticks {
    /// Ticks per millisecond.
    pub const PER_MS: u64 = (PCLK_HZ / 1000) as u64;

    /// Starts timer 0 counting down from `u32::MAX`.
    pub fn start() -> Self {
        // SAFETY: configures timer 0 only.
        unsafe {
            write_volatile(reg(TIMER0, 0x00), 0);
            write_volatile(reg(TIMER0, 0x08), u32::MAX);
            write_volatile(reg(TIMER0, 0x04), u32::MAX);
            write_volatile(reg(TIMER0, 0x00), 1);
        }
        Self {
            last: u32::MAX,
            total: 0,
        }
    }

    /// Ticks since [`Ticks::start`].
    pub fn now(&mut self) -> u64 {
        // SAFETY: reads timer 0's counter.
        let v = unsafe { read_volatile(reg(TIMER0, 0x04)) };
        // It counts down.
        self.total += u64::from(self.last.wrapping_sub(v));
        self.last = v;
        self.total
    }
}
