//! Ingest: frames in from devices, durably into the buffer, acks back out.
//!
//! ```text
//! MQTT publish (embedded endpoint, or external broker client)
//!   ──> intake::PublishHandler ──> admit (pure: topic, size, decode, registry, signature)
//!      │                 └─ rejected: counted by reason, raw payload quarantined, MQTT-acked
//!      └─> writer (group commit: many frames, one sled batch + flush)
//!               └─> outcome per frame ──> PUBACK of the publish (only now)
//!               └─> application ack per device (highest contiguous durable seq)
//! Modbus poller ──> writer (gateway-assigned seq)
//! ```
//!
//! Invariants:
//! - an application ack for `seq` is published only after every frame of that
//!   device up to `seq` is flushed to disk;
//! - a publish is PUBACKed only after its frame's write finished (stored,
//!   duplicate or rejected): by the embedded endpoint to the device itself,
//!   or with manual acks to an external broker, which keeps an un-handled
//!   message for redelivery;
//! - a bad payload never stops the loop: it is counted, quarantined and logged
//!   with device and reason, and other devices are unaffected.

pub mod admit;
pub mod intake;
pub mod mqtt_task;
pub mod quarantine;
pub mod reject_log;
pub mod stats;
pub mod writer;
