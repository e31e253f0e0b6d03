//! # mrv-firmware: sensor node firmware and its host simulator
//!
//! The core of this crate is `#![no_std]` (with `alloc`) and builds for
//! microcontrollers (`thumbv7em-none-eabihf`; the example image for an
//! STM32F411 board is `firmware/image`, built by
//! `scripts/build-firmware-image.sh`). Layout:
//!
//! - [`drivers`]: S0 pulse counter, ADS1115 4-20 mA loops, biogas analyser
//!   UART frames, contacts; generic over embedded-hal 1.0 / embedded-io,
//!   pure conversions, no allocation;
//! - [`sampling`]: sampling schedule and per-channel aggregation;
//! - [`storage`]: the flash journal (boot counter, sequence numbers, pulse
//!   totals, outbox) on `NorFlash`, and a RAM flash with power-loss
//!   injection;
//! - [`app`]: the device application (frames, signing, outbox, acks) and
//!   the [`app::Uplink`] trait;
//! - [`serial_link`]: an uplink over a UART to a network co-processor;
//! - [`node_loop`]: the node's main loop over generic drivers, which every
//!   board image runs;
//! - [`emulated_sensors`]: deterministic pulses, a 4-20 mA loop and
//!   analyser frames for an image without sensors (the QEMU image).
//!
//! With the `bridge` feature it provides [`bridge`] (and the
//! `mrv-uart-bridge` binary): a node's network co-processor on the host,
//! relaying its serial link (a QEMU UART) to MQTT and acks back, over the
//! same MQTT client code as the simulator ([`mqtt_link`]).
//!
//! With the `sim` feature (which implies `std`) it also provides `sim`, a
//! host simulator that runs this application on simulated hardware and
//! publishes to an MQTT broker (and `meters`, simulated Modbus meters).
//!
//! Invariants the whole crate keeps:
//! - every frame a device produces has a sequence number one above the
//!   previous one (gap-free, starting at 1, kept across reboots);
//! - a frame leaves the device's outbox only when an ack with
//!   `acked_seq >= seq` arrived from the gateway.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod app;
#[cfg(feature = "bridge")]
pub mod bridge;
pub mod drivers;
pub mod emulated_sensors;
#[cfg(feature = "sim")]
pub mod meters;
#[cfg(feature = "mqtt")]
pub mod mqtt_link;
pub mod node_loop;
pub mod sampling;
pub mod serial_link;
#[cfg(feature = "sim")]
pub mod sim;
pub mod storage;
