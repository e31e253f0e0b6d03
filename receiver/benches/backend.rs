//! Backend benchmark (issue 13): many gateways' hourly reports of 6,000
//! readings (10 meters x 600 samples, every frame device-signed) uploaded at
//! once ("time compressed": every gateway's hour arrives together) to one
//! and then two receivers over one PostgreSQL on this machine, each report
//! fully verified (JWS, every device signature, Merkle root, aggregates,
//! calculation), chained and logged in one transaction with the database's
//! real fsync (`Durability::Full`).
//!
//! Prints: reports/s accepted, p50/p99/max upload latency, database bytes
//! per report, time per report in verification and in the database
//! (decision + storage + log, summed over reports), CPU split, peak RSS.
//! The reports are built and signed before anything is timed and spooled
//! to a temporary file, so the bench's memory does not grow with
//! `GATEWAYS` (10,000 reports are 2.3 GB of JWS).
//!
//! Run: `cargo bench -p mrv-receiver --bench backend` (env `GATEWAYS`,
//! default 10000; `CONCURRENCY`, default 64 uploads in flight; `RECEIVERS`,
//! default `1,2`).

mod bench_support;

use bench_support::upload_support::{TestChain, init};
use bench_support::{env, load_average, runtime, start_pg_receiver};
use ed25519_dalek::SigningKey;
use mrv_receiver::archive::LogIdentity;
use mrv_receiver::archive::postgres::PgArchive;
use mrv_receiver::throwaway_postgres::{Durability, ThrowawayPostgres};
use mrv_shared::report::KeySet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn cpu_secs() -> f64 {
    // utime + stime of this process (the receivers, the load generator and
    // the PostgreSQL client side), in clock ticks of 100 Hz.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// Where one built report lies in the spool.
#[derive(Debug, Clone, Copy)]
struct Spooled {
    gateway: usize,
    spool: usize,
    offset: u64,
    len: usize,
}

/// Peak resident set of this process (VmHWM), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5), so each
/// run's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    init();
    println!("load average at start: {}", load_average());
    let gateways = env("GATEWAYS", 10_000);
    let concurrency = env("CONCURRENCY", 64);
    let runs: Vec<usize> = std::env::var("RECEIVERS")
        .unwrap_or_else(|_| String::from("1,2"))
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    // Build: one report per gateway, on both cores, before anything is
    // timed, spooled to a file (one per builder) as it is signed: the bench
    // holds an index, not 10,000 x 232 KiB of JWS; the uploaders read each
    // report back (page cache) just before sending it.
    let t0 = Instant::now();
    let key = SigningKey::from_bytes(&[42; 32]);
    let next = AtomicUsize::new(0);
    let spool_dir = tempfile::tempdir().expect("spool dir");
    let mut index: Vec<Spooled> = Vec::with_capacity(gateways);
    let mut spools: Vec<std::fs::File> = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (next, key, path) = (&next, &key, spool_dir.path().join(format!("spool-{w}")));
                s.spawn(move || {
                    let mut file = std::fs::File::options()
                        .create_new(true)
                        .read(true)
                        .write(true)
                        .open(&path)
                        .expect("spool file");
                    let (mut out, mut offset) = (Vec::new(), 0u64);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= gateways {
                            return (file, out);
                        }
                        let mut c = TestChain::new(10, 6_000, 3_600_000).unstored();
                        c.set_gateway(&format!("gw-{i:05}"));
                        c.set_signer(key.clone(), &format!("kid-{i:05}"));
                        c.extend(1);
                        let jws = c.reports.remove(0);
                        file.write_all(&jws).expect("spool write");
                        out.push(Spooled {
                            gateway: i,
                            spool: w,
                            offset,
                            len: jws.len(),
                        });
                        offset += jws.len() as u64;
                    }
                })
            })
            .collect();
        for w in workers {
            let (file, out) = w.join().expect("builder");
            spools.push(file);
            index.extend(out);
        }
    });
    index.sort_unstable_by_key(|r| r.gateway);
    let build = t0.elapsed();
    let bytes: usize = index.iter().map(|r| r.len).sum();
    let readings = 6_000u64;
    println!(
        "backend benchmark ({gateways} gateways, one hourly report each, {readings} readings per report)"
    );
    println!(
        "  build + sign + spool   {:.1} s on 2 threads ({:.1} ms/report, {} KiB/report, {:.0} MiB spooled), peak RSS {} MiB",
        build.as_secs_f64(),
        build.as_secs_f64() * 1000.0 / gateways as f64,
        bytes / gateways / 1024,
        bytes as f64 / 1048576.0,
        peak_rss_kib() / 1024
    );
    let mut keys = KeySet::new();
    for i in 0..gateways {
        keys.insert(&format!("kid-{i:05}"), key.verifying_key());
    }
    let pg = ThrowawayPostgres::start(Durability::Full).expect("PostgreSQL");
    let spools = Arc::new(spools);
    let index = Arc::new(index);
    let rt = runtime();
    let identity =
        LogIdentity::new("bench.mrv/log", SigningKey::from_bytes(&[7; 32])).expect("identity");
    for receivers in runs {
        rt.block_on(async {
            let url = pg
                .create_database(&format!("bench_{receivers}"))
                .await
                .expect("database");
            let db = PgArchive::connect(&url, 1, identity.clone())
                .await
                .expect("schema");
            let db_before = db.database_bytes().await.expect("size");
            let mut rxs = Vec::new();
            for _ in 0..receivers {
                rxs.push(start_pg_receiver(&url, keys.clone(), identity.clone()).await);
            }
            let bases: Arc<Vec<String>> =
                Arc::new(rxs.iter().map(|r| format!("http://{}", r.addr())).collect());
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency)
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client");
            let next = Arc::new(AtomicUsize::new(0));
            reset_peak_rss();
            let cpu0 = cpu_secs();
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (http, next, bases, spools, index) = (
                    http.clone(),
                    next.clone(),
                    bases.clone(),
                    spools.clone(),
                    index.clone(),
                );
                set.spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&r) = index.get(i) else {
                            return lat;
                        };
                        let spools = spools.clone();
                        let body = tokio::task::spawn_blocking(move || {
                            let mut b = vec![0u8; r.len];
                            spools[r.spool]
                                .read_exact_at(&mut b, r.offset)
                                .expect("spool read");
                            b
                        })
                        .await
                        .expect("spool reader");
                        let id = format!("gw-{:05}-000000000001", r.gateway);
                        let base = &bases[i % bases.len()];
                        let s = Instant::now();
                        let r = http
                            .put(format!("{base}/v1/reports/{id}"))
                            .body(body)
                            .send()
                            .await
                            .expect("answer");
                        let code = r.status().as_u16();
                        let _ = r.bytes().await;
                        assert_eq!(code, 201, "{id}");
                        lat.push(s.elapsed());
                    }
                });
            }
            let mut lat: Vec<Duration> = Vec::new();
            while let Some(l) = set.join_next().await {
                lat.extend(l.expect("uploader"));
            }
            let wall = t.elapsed();
            let cpu = cpu_secs() - cpu0;
            lat.sort_unstable();
            let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            let db_after = db.database_bytes().await.expect("size");
            let (mut verify_ns, mut commit_ns, mut accepted) = (0u64, 0u64, 0u64);
            for r in &rxs {
                let s = r.handle.stats();
                verify_ns += s.verify_ns.load(Ordering::Relaxed);
                commit_ns += s.commit_ns.load(Ordering::Relaxed);
                accepted += s.accepted.load(Ordering::Relaxed);
            }
            let n = accepted as f64;
            println!("{receivers} receiver(s), {concurrency} uploads in flight, one PostgreSQL:");
            println!(
                "  accepted               {accepted} in {:.1} s = {:.1} reports/s ({:.0} readings/s)",
                wall.as_secs_f64(),
                n / wall.as_secs_f64(),
                n * readings as f64 / wall.as_secs_f64()
            );
            println!(
                "  upload latency         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                q(0.5).as_secs_f64() * 1e3,
                q(0.99).as_secs_f64() * 1e3,
                lat[lat.len() - 1].as_secs_f64() * 1e3
            );
            println!(
                "  per report             verify {:.1} ms, database {:.1} ms (sums over reports / reports)",
                verify_ns as f64 / n / 1e6,
                commit_ns as f64 / n / 1e6
            );
            println!(
                "  database bytes         {:.0} KiB/report ({:.0} MiB for {accepted}; report itself {} KiB)",
                (db_after - db_before) as f64 / n / 1024.0,
                (db_after - db_before) as f64 / 1048576.0,
                bytes / gateways / 1024
            );
            println!(
                "  CPU of this process    {:.1} s ({:.2} cores; PostgreSQL's own CPU not included)",
                cpu,
                cpu / wall.as_secs_f64()
            );
            let (mut groups, mut grouped) = (0u64, 0u64);
            for r in &rxs {
                if let mrv_receiver::archive::AnyArchive::Postgres(a) = r.handle.archive() {
                    let (g, n) = a.group_stats();
                    groups += g;
                    grouped += n;
                }
            }
            println!(
                "  peak RSS of this process {} MiB (receivers, uploaders, PostgreSQL client side; the spool index, not the reports)",
                peak_rss_kib() / 1024
            );
            println!(
                "  group commit           {grouped} reports in {groups} commit transactions ({:.1} per transaction)",
                grouped as f64 / groups.max(1) as f64
            );
            for r in rxs {
                r.stop().await.expect("stops");
            }
            println!("  load average after     {}", load_average());
        });
    }
}
