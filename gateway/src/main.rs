//! `mrv-gateway` binary: parses the command line and hands over to
//! [`mrv_gateway::cli::main_with`] (logging, TLS provider, dispatch, one
//! plain error line and the exit status).
//!
//! Memory: on glibc the process uses one malloc arena (`M_ARENA_MAX` 1)
//! unless `MALLOC_ARENA_MAX` is set. glibc otherwise gives every thread that
//! allocates (tokio workers, blocking threads, sled's flusher) an arena of
//! its own, each keeping freed memory: 2.6 MB more anonymous RSS with 200
//! devices connected (issue 11's 16 MB target, docs/BENCHMARKS.md). On 2
//! cores one arena costs little contention; the data path is bound by
//! fdatasync, not malloc.

use clap::Parser;

fn main() -> std::process::ExitCode {
    one_malloc_arena();
    mrv_gateway::cli::main_with(mrv_gateway::cli::Cli::parse())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    // glibc's <malloc.h>: `#define M_ARENA_MAX -8`.
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc tunable; it is called before
        // any other thread exists, and a refusal (0) leaves the default.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
