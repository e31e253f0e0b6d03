//! Ingest: frames in from devices, durably into the buffer, acks back out.
//!
//! ```text
//! MQTT publish ──> admit (pure: topic, size, decode, registry, signature)
//!      │                 └─ rejected: counted by reason, raw payload quarantined, MQTT-acked
//!      └─> writer (group commit: many frames, one sled batch + flush)
//!               └─> outcome per frame ──> MQTT PUBACK of the publish (manual ack)
//!               └─> application ack per device (highest contiguous durable seq)
//! Modbus poller ──> writer (gateway-assigned seq)
//! ```
//!
//! Invariants:
//! - an application ack for `seq` is published only after every frame of that
//!   device up to `seq` is flushed to disk;
//! - the gateway's own MQTT subscription uses manual acks, and a publish is
//!   acked only after its frame's write finished (stored, duplicate or
//!   rejected), so the broker keeps an un-handled message for redelivery;
//! - a bad payload never stops the loop: it is counted, quarantined and logged
//!   with device and reason, and other devices are unaffected.

pub mod admit;
pub mod mqtt_task;
pub mod quarantine;
pub mod reject_log;
pub mod stats;
pub mod writer;
