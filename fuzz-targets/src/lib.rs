//! The bodies of the gateway's fuzz targets.
//!
//! Each function here takes arbitrary bytes, feeds them to one decoder or
//! parser that sees hostile input in the field, and asserts invariants that
//! must hold whatever the bytes are, not only "no panic":
//!
//! | target | code under test | invariants beyond "no panic, no hang" |
//! |---|---|---|
//! | [`wire::binary`] | `mrv_shared::wire::binary` frame and ack decoders | a decoded frame re-encodes to exactly its bytes (canonical form), every strict prefix is `Incomplete`, the JSON form carries the same readings |
//! | [`wire::json`] | `mrv_shared::wire::json` frame and ack decoders, `wire::topic` | `decode(encode(f)) == f`, JSON and binary agree, topics split back into what they were built from |
//! | [`report::verify`] | `mrv_shared::report::verify_report` (what the receiver runs on an upload) | a changed byte of a valid report is never accepted; an accepted report's payload is its canonical form |
//! | [`gateway_config::parse`] | `mrv_gateway::config::parse` (TOML to a validated config) | an error names a file and a problem |
//! | [`modbus::decode`] | `mrv_gateway::modbus::decode` (register words to base units) | integers decode to the value an independent encoder wrote, in every byte order; unit scale and no offset give the value exactly |
//! | [`diagnostics::query`] | the diagnostics API's query extraction (axum `Query`) and its parsers | a parsed range prints back to its code; a device id parses back to itself |
//! | [`mapping::payload`] | `mrv_gateway::mapping::MappingStage::handle` with the shipped example mappings | a frame it makes is valid and survives the binary wire form unchanged |
//!
//! The fuzz crate in `fuzz/` (cargo-fuzz, nightly, outside the workspace)
//! calls these functions from its `fuzz_target!`s; `tests/replay_corpus.rs`
//! runs every committed corpus file through them on stable, so CI replays
//! the corpus in seconds. A failed invariant panics (that is how libFuzzer
//! learns of it).

#![allow(clippy::unwrap_used)]

pub mod diagnostics;
pub mod gateway_config;
pub mod mapping;
pub mod modbus;
pub mod report;
pub mod wire;

/// A target body: bytes in, a panic when an invariant breaks.
pub type Body = fn(&[u8]);

/// Every target: its name (the directory of its corpus under
/// `fuzz/corpus/` and the name of its binary under `fuzz/fuzz_targets/`)
/// and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("wire_binary", wire::binary),
    ("wire_json", wire::json),
    ("report_verify", report::verify),
    ("gateway_config", gateway_config::parse),
    ("modbus_decode", modbus::decode),
    ("diagnostics_query", diagnostics::query),
    ("mapping_payload", mapping::payload),
];
