//! Third-party MQTT payloads to readings: devices that publish their own
//! JSON on their own topics (Shelly, Tasmota, data loggers) become
//! gateway-sequenced, unsigned frames with their provenance, or are
//! quarantined with a reason.
//!
//! - [`config`]: the `[[mapping]]` config section (topic filter, device id
//!   source, per-field RFC 9535 JSON path, quantity, payload unit and exact
//!   conversion, value kind, range; timestamp path and explicit format with
//!   a maximum skew; dedup rule and window), validated and compiled at load;
//! - [`chirpstack`]: `format = "chirpstack_v4"` mappings (LoRaWAN through
//!   ChirpStack v4's MQTT integration): the event envelope and the pure
//!   per-device frame-counter tracker (epochs, lost uplinks);
//! - [`stage`]: the pure mapping stage ([`stage::MappingStage`]): a message
//!   (topic, payload, "retained replay", receipt time) in, one
//!   [`stage::Outcome`] out; dedup keys settle after the store answered;
//! - [`dedup_memory`]: the pure dedup memory behind the stage: message
//!   identities within their window, in a byte budget (per-device growing
//!   values delta-encoded), pending keys never dropped, drops counted.
//!
//! The stage has no I/O. The publish-handling entry point
//! (`ingest::intake::FrameIntake`) calls it for every publish outside the
//! `mrv/` tree that a mapping's filter matches, on both paths (the embedded
//! endpoint and the external-broker client), writes the frame and resolves
//! the publish (its PUBACK) only after the frame is durable.
//!
//! Normative description: `docs/MAPPING.md`, and `docs/LORAWAN.md` for
//! ChirpStack. Examples with documented
//! payload shapes: `config/mappings/`.

pub mod chirpstack;
pub mod config;
pub mod dedup_memory;
pub mod stage;

pub use config::{MappingSection, ValidMapping, parse_mappings, validate_mappings};
pub use stage::{MappingStage, Message, Notice, Outcome};
