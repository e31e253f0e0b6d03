//! # mrv-gateway: the site gateway
//!
//! Data path (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! devices --MQTT--> endpoint --> ingest (decode, verify, dedup) --> buffer (sled, flushed) --> PUBACK + ack to device
//! meters <--Modbus-- modbus poller ------------------^
//! third-party JSON --MQTT--> mapping (paths, units, dedup) --^
//! buffer --> report (period close, Merkle root, calc, JWS) --> upload (HTTPS) --> MRV backend
//! diagnostics reads state; it never writes the data path
//! ```
//!
//! Each stage of the data path is a crate of its own, re-exported here:
//! ingest (`mrv-gateway-ingest`: [`endpoint`], [`ingest`], [`mapping`],
//! [`topic_filter`]), the durable stage (`mrv-gateway-buffer`: [`buffer`]),
//! the Modbus source (`mrv-gateway-modbus`: [`modbus`]), reports
//! (`mrv-gateway-report`: [`report`], with [`clock_watch`], [`time_sync`],
//! [`keys`]) and upload (`mrv-gateway-upload`: [`upload`]). This crate ties
//! them together: the config file, the runtime, the free-space watch,
//! diagnostics and the CLI; the clock and the located config error come
//! from `mrv-shared` ([`clock`], [`config::ConfigError`]).
//!
//! Modules are named for what they do; pure state machines
//! (`buffer::SeqState`, `modbus::planner`, `upload::machine`, ...) sit
//! beside the thin async tasks that drive them.

pub use mrv_gateway_buffer as buffer;
pub mod cli;
pub use mrv_gateway_report::clock_watch;
pub use mrv_shared::clock;
pub mod config;
pub mod diagnostics;
pub use mrv_gateway_buffer::durable_dir;
pub use mrv_gateway_ingest::endpoint;
pub mod free_space;
pub use mrv_gateway_ingest::ingest;
pub use mrv_gateway_ingest::mapping;
pub use mrv_gateway_modbus as modbus;
pub use mrv_gateway_report as report;
pub use mrv_gateway_report::keys;
pub mod runtime;
pub use mrv_gateway_ingest::topic_filter;
pub use mrv_gateway_report::time_sync;
pub use mrv_gateway_upload as upload;
