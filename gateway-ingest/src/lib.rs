//! # mrv-gateway-ingest: MQTT devices in, frames durably into the buffer
//!
//! The gateway's ingest stage, from a device's MQTT publish to the durable
//! PUBACK and the application ack (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! devices --MQTT--> endpoint (embedded, or an external broker via ingest::mqtt_task)
//!   --> ingest::intake (admit: topic, size, decode, registry, signature)
//!   --> ingest::writer (group commit into mrv-gateway-buffer, flushed)
//!   --> PUBACK + application ack to the device
//! third-party JSON / ChirpStack --> mapping (paths, units, dedup) --^
//! ```
//!
//! - [`endpoint`]: the embedded MQTT 3.1.1/5 endpoint (a PUBACK means "on disk");
//! - [`ingest`]: intake, admission, the durable writer, quarantine, counters;
//! - [`mapping`]: third-party payloads and ChirpStack v4 uplinks to frames;
//! - [`config`]: the `[[devices]]` and `[mqtt]` sections it is configured by
//!   (`[[mapping]]` is in [`mapping::config`]);
//! - [`topic_filter`]: MQTT topic filter matching.
//!
//! Invariant of the whole crate: no frame is acknowledged to a device as
//! stored (PUBACK or application ack) before its group commit returned from
//! fdatasync; bad input is counted, logged and, when refused before the
//! buffer, quarantined raw; never dropped silently (a frame the buffer
//! refuses as invalid is counted and recorded, its raw payload is not kept). The Modbus source (`mrv-gateway-modbus`) feeds the same writer;
//! the `mrv-gateway` crate wires it all into the running gateway.

pub mod config;
pub mod endpoint;
pub mod ingest;
pub mod mapping;
pub mod topic_filter;
