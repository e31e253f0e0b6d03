//! Crediting statement benchmark (issue 13): one project, one year of
//! hourly reports from 10 gateways (87,600 reports) accepted into
//! PostgreSQL (the store for scale), then `mrv-receiver statement` over the
//! whole year, run as the real binary under GNU time: wall time and peak
//! RSS of the statement process.
//!
//! The reports are small (one PV meter, 60 device-signed readings each: one
//! frame an hour): what the statement's cost grows with is the number of
//! ledger entries, report files and receipts, not the readings in each.
//! The archive is filled over HTTP through one receiver (full
//! verification, chain, log, ledger, group commit, PostgreSQL with its real
//! fsync), 10 gateways at once, each uploading its chain in batches of 200:
//! the fill's rate and database bytes are printed too, as a measure of
//! small reports (the size of a per-minute report) through one receiver.
//! With `CHECK=1` the pack is then checked with openpyxl and Python
//! fractions (`tests/python/check_statement.py`), also timed.
//!
//! Run: `cargo bench -p mrv-receiver --bench statement` (env `GATEWAYS`,
//! default 10; `HOURS`, default 8760; `CHECK`). Needs Debian's
//! `postgresql` binaries and GNU time (`/usr/bin/time`).

mod bench_support;

use bench_support::upload_support::{self, TestChain, init};
use bench_support::{env, load_average, runtime, start_pg_receiver};
use ed25519_dalek::SigningKey;
use mrv_receiver::archive::postgres::PgArchive;
use mrv_receiver::throwaway_postgres::{Durability, ThrowawayPostgres};
use mrv_shared::report::KeySet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Total size of the files under `dir`, and their count.
fn tree_size(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read pack dir") {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

fn main() {
    init();
    let gateways = env("GATEWAYS", 10);
    let hours = env("HOURS", 8760);
    let total = gateways * hours;
    println!("  load at start          {}", load_average());
    // One chain per gateway, built on both cores.
    let t0 = Instant::now();
    let key = SigningKey::from_bytes(&[42; 32]);
    let mut chains: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let key = &key;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for g in (w..gateways).step_by(2) {
                        let gw = format!("gw-{g:02}");
                        let mut c = TestChain::new(1, 60_000, 3_600_000).unstored();
                        c.set_gateway(&gw);
                        c.set_signer(key.clone(), &format!("kid-{g:02}"));
                        c.extend(hours);
                        out.push((gw, std::mem::take(&mut c.reports)));
                    }
                    out
                })
            })
            .collect();
        for w in workers {
            chains.extend(w.join().expect("builder"));
        }
    });
    let bytes: usize = chains
        .iter()
        .flat_map(|(_, r)| r.iter().map(Vec::len))
        .sum();
    println!(
        "statement benchmark: {gateways} gateways x {hours} hourly reports = {total} reports (1 meter, 60 readings each)"
    );
    println!(
        "  build + sign           {:.1} s ({} bytes/report)",
        t0.elapsed().as_secs_f64(),
        bytes / total
    );
    let mut keys = KeySet::new();
    for g in 0..gateways {
        keys.insert(&format!("kid-{g:02}"), key.verifying_key());
    }
    let work = tempfile::tempdir().expect("work dir");
    let key_file = work.path().join("log-key.jwk");
    let identity = mrv_receiver::log_key::load_or_create(&key_file, None).expect("log key");
    let pg = ThrowawayPostgres::start(Durability::Full).expect("PostgreSQL");
    let rt = runtime();
    let url = rt.block_on(async {
        let url = pg.create_database("statement").await.expect("database");
        let rx = start_pg_receiver(&url, keys, identity.clone()).await;
        let base = format!("http://{}", rx.addr());
        let http = reqwest::Client::new();
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (gw, reports) in chains.drain(..) {
            let (http, base) = (http.clone(), base.clone());
            set.spawn(async move {
                for (i, batch) in reports.chunks(200).enumerate() {
                    let mut body = Vec::new();
                    for r in batch {
                        body.extend_from_slice(r);
                        body.push(b'\n');
                    }
                    let answer: serde_json::Value = http
                        .post(format!("{base}/v1/reports"))
                        .body(body)
                        .send()
                        .await
                        .expect("answer")
                        .json()
                        .await
                        .expect("results");
                    let results = answer["results"].as_array().expect("results");
                    assert_eq!(results.len(), batch.len(), "{gw} batch {i}: {answer}");
                    assert!(
                        results.iter().all(|r| r["status"] == "accepted"),
                        "{gw} batch {i}: {answer}"
                    );
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("uploader");
        }
        let fill = t.elapsed();
        let (mut groups, mut grouped) = (0, 0);
        if let mrv_receiver::archive::AnyArchive::Postgres(a) = rx.handle.archive() {
            (groups, grouped) = a.group_stats();
        }
        let accepted = rx.handle.stats().accepted.load(Ordering::Relaxed);
        let s = rx.handle.stats();
        println!(
            "  fill (HTTP, verified)  {accepted} accepted in {:.1} s = {:.0} reports/s; per report verify {:.2} ms, database {:.2} ms; {:.1} reports per commit",
            fill.as_secs_f64(),
            accepted as f64 / fill.as_secs_f64(),
            s.verify_ns.load(Ordering::Relaxed) as f64 / accepted as f64 / 1e6,
            s.commit_ns.load(Ordering::Relaxed) as f64 / accepted as f64 / 1e6,
            grouped as f64 / groups.max(1) as f64
        );
        assert_eq!(accepted as usize, total, "every report accepted");
        rx.stop().await.expect("stops");
        let db = PgArchive::connect(&url, 1, identity.clone())
            .await
            .expect("connect");
        let db_bytes = db.database_bytes().await.expect("size");
        println!(
            "  database               {:.0} MiB ({:.1} KiB/report, fresh database included)",
            db_bytes as f64 / 1048576.0,
            db_bytes as f64 / total as f64 / 1024.0
        );
        url
    });
    // The statement: the real binary, under GNU time.
    let registry = work.path().join("registry.json");
    std::fs::write(
        &registry,
        serde_json::to_vec(&upload_support::synthetic_registry()).expect("JSON"),
    )
    .expect("write registry");
    let last_day = {
        let end_ms = upload_support::T0 + hours as u64 * 3_600_000 - 1;
        mrv_receiver::statement::tables::utc(end_ms)[..10].to_string()
    };
    let pack = work.path().join("pack");
    println!("  load before statement  {}", load_average());
    let out = Command::new("/usr/bin/time")
        .args([
            "-f",
            "time: %e s wall, %U s user, %S s system, %M KiB peak RSS",
        ])
        .arg(env!("CARGO_BIN_EXE_mrv-receiver"))
        .arg("statement")
        .args(["--project", "JCM-TH-0042", "--from", "2025-11-26", "--to"])
        .arg(&last_day)
        .arg("--database-url")
        .arg(&url)
        .arg("--log-key")
        .arg(&key_file)
        .arg("--device-registry")
        .arg(&registry)
        .arg("--out")
        .arg(&pack)
        .output()
        .expect("run mrv-receiver statement under /usr/bin/time");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "statement failed: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!(" {total} reports")),
        "all reports counted: {stdout}"
    );
    let (pack_bytes, pack_files) = tree_size(&pack);
    println!("  statement              {}", stdout.trim());
    println!(
        "  statement cost         {}",
        stderr
            .lines()
            .rfind(|l| l.starts_with("time: "))
            .unwrap_or("(no GNU time line)")
            .trim_start_matches("time: ")
    );
    println!(
        "  pack                   {pack_files} files, {:.0} MiB",
        pack_bytes as f64 / 1048576.0
    );
    if std::env::var_os("CHECK").is_some() {
        let t = Instant::now();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let out = Command::new("python3")
            .arg(format!("{root}/tests/python/check_statement.py"))
            .arg(&pack)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "check_statement.py: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "  openpyxl + fractions   {} ({:.1} s)",
            String::from_utf8_lossy(&out.stdout).trim(),
            t.elapsed().as_secs_f64()
        );
    }
    println!("  load after             {}", load_average());
}
