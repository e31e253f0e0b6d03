//! # mrv-shared: what firmware, gateway and MRV backends agree on
//!
//! This crate is `no_std` + `alloc` (the firmware links it); the `std` feature
//! (on by default) adds `std::error::Error` impls and the JSON helpers that
//! need `std`.
//!
//! Layout:
//! - [`display`]: how a person reads a base-unit value (`5843` -> `58.43 %`).
//! - [`event`]: events a report carries besides readings.
//! - [`ids`]: validated identifiers for sites, devices and channels.
//! - [`methodology`]: pure emission-reduction calculators (PV, pump,
//!   digester, rice AWD) over exact rationals, with their parameters.
//! - [`provisioning`]: the record that gives a node its identity and
//!   signing key (written once per device into its own flash area).
//! - [`report`]: the signed monitoring report: model, RFC 8785 canonical
//!   JSON, RFC 6962 Merkle tree, JWS (Ed25519) and verification.
//! - [`tlog`]: the backend's public log of accepted reports (RFC 6962
//!   tree, C2SP signed-note checkpoints, receipts and their checks).
//! - [`quantity`]: the physical quantities we measure and their integer base
//!   units (Wh, mW, mL, mm, Pa, 0.01 degC, 0.01 vol%), and the units a
//!   config or payload may state. No floats cross a wire.
//! - [`conversion`]: exact conversion of a stated value into base units,
//!   with the one rounding rule (half away from zero, flagged).
//! - [`reading`]: one sample ([`reading::Sample`]) inside a frame, the
//!   flattened [`reading::Reading`] a gateway stores, and [`reading::Quality`].
//! - [`wire`]: the [`wire::Frame`] (one device's batch), the [`wire::Ack`], the
//!   MQTT topic scheme, and the two encodings: compact binary
//!   ([`wire::binary`]) for our firmware and JSON ([`wire::json`]) for
//!   third-party devices. Decoders tell "incomplete" from "invalid (why)".
//!
//! Invariants every consumer may rely on:
//! - a decoded [`wire::Frame`] has valid identifiers, at least one sample, and
//!   every sample's channel index points into its channel table;
//! - binary encoding is canonical: one frame has exactly one byte form, so a
//!   device signature over those bytes can be checked by re-encoding.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod clock;
#[cfg(feature = "std")]
pub mod config_error;
pub mod conversion;
pub mod display;
#[cfg(feature = "std")]
pub mod durable_dir;
pub mod event;
pub mod ids;
pub mod methodology;
pub mod provisioning;
pub mod quantity;
pub mod reading;
pub mod report;
pub mod tlog;
pub mod wire;
