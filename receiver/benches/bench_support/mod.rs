//! Shared by the PostgreSQL benches (`backend.rs`, `statement.rs`), each of
//! which includes it with `mod bench_support;`: the test support they build
//! reports with (`tests/tests/upload_support/mod.rs`), settings from the
//! environment, the load average, a two-worker runtime and an in-process
//! receiver on a PostgreSQL store.

#[path = "../../../tests/tests/upload_support/mod.rs"]
pub mod upload_support;

use mrv_receiver::archive::LogIdentity;
use mrv_receiver::{ReceiverConfig, RunningReceiver, Store};
use mrv_shared::report::KeySet;

/// The environment variable `name` as a number, else `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This machine's `/proc/loadavg`, trimmed (empty where unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A multi-thread runtime with two workers (the machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A receiver on 127.0.0.1:0 over the PostgreSQL database at `url` (pool
/// of 16), verifying with `keys` and the synthetic devices' trust, logging
/// with `identity`.
pub async fn start_pg_receiver(url: &str, keys: KeySet, identity: LogIdentity) -> RunningReceiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut cfg = ReceiverConfig::files("/nonexistent", keys, upload_support::synthetic_trust());
    cfg.store = Store::Postgres {
        url: url.to_string(),
        pool: 16,
    };
    cfg.log = Some(identity);
    mrv_receiver::start(listener, cfg).await.expect("receiver")
}
