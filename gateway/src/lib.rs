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
//! The ingest stage (MQTT endpoint, intake, writer, mapping), the durable
//! stage and the Modbus source are crates of their own
//! (`mrv-gateway-ingest`, `mrv-gateway-buffer`, `mrv-gateway-modbus`),
//! re-exported here as [`endpoint`], [`ingest`], [`mapping`],
//! [`topic_filter`], [`buffer`] and [`modbus`]; the clock and the located config error come
//! from `mrv-shared` ([`clock`], [`config::ConfigError`]).
//!
//! Modules are named for what they do; pure state machines
//! (`buffer::SeqState`, `modbus::planner`, `upload::machine`, ...) sit
//! beside the thin async tasks that drive them.

pub use mrv_gateway_buffer as buffer;
pub mod cli;
pub use mrv_shared::clock;
pub mod clock_watch;
pub mod config;
pub mod diagnostics;
pub use mrv_gateway_buffer::durable_dir;
pub use mrv_gateway_ingest::endpoint;
pub mod free_space;
pub use mrv_gateway_ingest::ingest;
pub mod keys;
pub use mrv_gateway_ingest::mapping;
pub use mrv_gateway_modbus as modbus;
pub mod report;
pub mod runtime;
pub mod time_sync;
pub use mrv_gateway_ingest::topic_filter;
pub mod upload;
