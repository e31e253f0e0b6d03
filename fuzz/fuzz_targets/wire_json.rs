//! Fuzz target `wire_json`: the body is `mrv_fuzz_targets::wire::json` (shared with
//! the stable corpus-replay test, `fuzz-targets/tests/replay_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mrv_fuzz_targets::wire::json(data));
