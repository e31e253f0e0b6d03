//! Fuzz target `wire_binary`: the body is `mrv_fuzz_targets::wire::binary` (shared with
//! the stable corpus-replay test, `fuzz-targets/tests/replay_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mrv_fuzz_targets::wire::binary(data));
