//! Persistent storage on NOR flash (`embedded_storage::nor_flash::NorFlash`).
//!
//! - [`journal`]: the append-only log that holds the device state (boot
//!   counter, next sequence number, acked sequence number, pulse totals)
//!   and the outbox of unacked frames; consistent across power loss.
//! - [`ram_flash`]: NOR flash simulated in RAM with power-loss injection,
//!   for tests and the host simulator;
//! - [`slice_flash`]: NOR flash semantics over a memory the board hands
//!   over (the QEMU image's persistent PSRAM).

pub mod journal;
#[cfg(any(test, feature = "std"))]
pub mod ram_flash;
pub mod slice_flash;
