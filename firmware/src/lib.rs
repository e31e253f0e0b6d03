//! # mrv-firmware: sensor node firmware and its host simulator
//!
//! The core of this crate is `#![no_std]` and builds for microcontrollers.
//! With the `sim` feature (which implies `std`) it also provides [`sim`], a
//! host simulator that runs devices over simulated hardware and publishes
//! their frames to an MQTT broker.
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
pub mod drivers;
#[cfg(feature = "sim")]
pub mod meters;
pub mod sampling;
pub mod serial_link;
#[cfg(feature = "sim")]
pub mod sim;
pub mod storage;
