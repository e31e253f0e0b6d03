//! Upload benchmark: a backlog of ~1M readings, end to end. Builds and
//! signs the reports (synthetic PV site, device-signed frames) into a real
//! report store, then uploads them over TLS with the gateway's uploader to
//! an in-process receiver that verifies each one fully (JWS, device
//! signatures, Merkle root, aggregates, calculation), checks the chain and
//! stores it with fsync. Prints phase times and bytes on the wire per
//! reading.
//!
//! Run: `cargo bench -p mrv-receiver --bench upload` (env `READINGS` to
//! change the size, default 1_000_000).

#[path = "../../tests/tests/upload_support/mod.rs"]
mod upload_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use upload_support::{Pki, TestChain, Uploader, init, start_receiver};

fn main() {
    init();
    let target: u64 = std::env::var("READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // 10 meters at 1 Hz, 10-minute reports: 6000 readings per report.
    let mut chain = TestChain::new(10, 1000, 600_000);
    let per = chain.readings_per_report();
    let reports = target.div_ceil(per) as usize;
    let t0 = Instant::now();
    chain.extend(reports);
    let build = t0.elapsed();
    let readings = per * reports as u64;
    let raw: u64 = chain.reports.iter().map(|r| r.len() as u64).sum();

    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (upload, status, accepted) = rt.block_on(async {
        let rx = start_receiver(
            dir.path(),
            chain.keys(),
            Some("bench"),
            Some(pki.server_tls(false)),
            None,
        )
        .await;
        let mut cfg = pki.upload_config(
            &format!("https://localhost:{}/", rx.addr().port()),
            Some("bench"),
            false,
        );
        cfg.batch_size = 50;
        cfg.timeout = Duration::from_secs(120);
        cfg.keep_delivered = Duration::from_secs(10 * 365 * 86_400);
        let t1 = Instant::now();
        let mut up = Uploader::start(chain.store.clone(), cfg);
        let s = up.wait(600, |s| s.delivered_upto == reports as u64).await;
        let upload = t1.elapsed();
        up.stop().await;
        let accepted = rx.handle.stats().accepted.load(Ordering::SeqCst);
        rx.stop().await.expect("stops");
        (upload, s, accepted)
    });
    assert_eq!(accepted, reports as u64);
    let total = build + upload;
    println!("upload benchmark (2 tokio workers)");
    println!("  readings               {readings}");
    println!("  reports                {reports} ({per} readings each)");
    println!("  build + sign + store   {:.2} s", build.as_secs_f64());
    println!(
        "  upload + verify + store {:.2} s ({} requests)",
        upload.as_secs_f64(),
        status.requests
    );
    println!(
        "  end to end             {:.2} s (target <= 30 s: {})",
        total.as_secs_f64(),
        if total.as_secs_f64() <= 30.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  report bytes           {raw} ({:.1} B/reading)",
        raw as f64 / readings as f64
    );
    println!(
        "  on the wire (gzip)     {} ({:.2} B/reading, ratio {:.2})",
        status.bytes_sent,
        status.bytes_sent as f64 / readings as f64,
        status.bytes_sent as f64 / status.raw_bytes.max(1) as f64
    );
}
