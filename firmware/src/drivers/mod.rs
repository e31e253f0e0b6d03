//! Sensor drivers, generic over embedded-hal 1.0 / embedded-io traits.
//!
//! Each driver keeps its bus access in one place (a few methods on the
//! driver struct) and its arithmetic in pure functions that tests call
//! directly. No driver allocates. Every driver gives its bus or pin back
//! with `release()`.
//!
//! - [`debounce`]: a pure debouncer shared by the digital inputs.
//! - [`pulse`]: S0 pulse counter for energy and water meters.
//! - [`ads1115`]: ADS1115-class I2C ADC reading 4-20 mA loops.
//! - [`ch4_uart`]: biogas analyser frames over a UART.
//! - [`contact`]: run-status and flame-detection contacts.

pub mod ads1115;
pub mod ch4_uart;
pub mod contact;
pub mod debounce;
pub mod pulse;
