//! `mrv-gateway verify --keys <jwk files or dirs> <report files or dirs>`:
//! the auditor's check of signed reports.
//!
//! For each report: the JWS (algorithm, known `kid`, signature over the
//! stored bytes), the Merkle root and count of its readings, every device
//! signature, every aggregate and the calculation recomputed; across
//! reports (sorted by gateway and seq): gap-free seq, `prev_hash` chain,
//! no replay, contiguous periods, counter baselines. One verdict line per
//! report on stdout (`OK` or `INVALID <reason>: <detail>`), a progress bar
//! on stderr when it is a terminal.
//!
//! Exit status: 0 all valid, 1 any invalid, 2 usage error (no keys, no
//! reports, unreadable path).

use crate::keys::load_public_keys;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mrv_shared::report::verify::{Chain, VerifiedReport, check_contents, verify_jws};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Public JWK files, or directories of `*.jwk` files (repeatable).
    #[arg(long, required = true, num_args = 1..)]
    pub keys: Vec<PathBuf>,
    /// Accept a chain that starts after seq 1 (an auditor given a slice).
    #[arg(long)]
    pub allow_mid_chain: bool,
    /// Report files (`*.jws`) or directories of them.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// One report's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// File.
    pub path: PathBuf,
    /// `None` = valid; else (reason label, detail).
    pub problem: Option<(String, String)>,
    /// Summary of a valid report.
    pub summary: String,
}

fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jws"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            std::fs::metadata(p)?;
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Verifies `files` with `keys`; verdicts in input order.
pub fn verify_files(
    files: &[PathBuf],
    keys: &mrv_shared::report::KeySet,
    allow_mid_chain: bool,
    progress: Option<&ProgressBar>,
) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = files
        .iter()
        .map(|p| Verdict {
            path: p.clone(),
            problem: None,
            summary: String::new(),
        })
        .collect();
    let mut valid: Vec<(usize, VerifiedReport)> = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let result = std::fs::read(p)
            .map_err(|e| (String::from("unreadable"), e.to_string()))
            .and_then(|bytes| {
                let v =
                    verify_jws(&bytes, keys).map_err(|e| (e.label().to_string(), e.to_string()))?;
                check_contents(&v.report).map_err(|e| (e.label().to_string(), e.to_string()))?;
                Ok(v)
            });
        match result {
            Ok(v) => valid.push((i, v)),
            Err(problem) => verdicts[i].problem = Some(problem),
        }
        if let Some(pb) = progress {
            pb.inc(1);
        }
    }
    valid.sort_by(|a, b| (a.1.gateway(), a.1.seq(), a.0).cmp(&(b.1.gateway(), b.1.seq(), b.0)));
    let mut chain = Chain::new(allow_mid_chain);
    for (i, v) in valid {
        match chain.push(&v) {
            Ok(()) => {
                let r = &v.report;
                verdicts[i].summary = format!(
                    "{} seq {} period {}..{} readings {} ER {} tCO2e (exact {})",
                    v.id(),
                    v.seq(),
                    r.header.period.start_ms,
                    r.header.period.end_ms,
                    r.readings.count,
                    r.calculation.er_rounded_down,
                    r.calculation.er.exact
                );
            }
            Err(e) => verdicts[i].problem = Some((e.label().to_string(), e.to_string())),
        }
    }
    verdicts
}

fn usage(msg: impl std::fmt::Display) -> ! {
    eprintln!("verify: {msg}");
    std::process::exit(2);
}

/// Runs `verify`; exits with 1 when any report is invalid, 2 on usage errors.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let keys = load_public_keys(&args.keys).unwrap_or_else(|e| usage(e));
    if keys.is_empty() {
        usage("no public keys found");
    }
    let files = collect_files(&args.reports).unwrap_or_else(|e| usage(e));
    if files.is_empty() {
        usage("no report files found");
    }
    let progress = std::io::stderr().is_terminal().then(|| {
        let pb = ProgressBar::new(files.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} reports {elapsed}")
                .expect("the template is valid"),
        );
        pb
    });
    let verdicts = verify_files(&files, &keys, args.allow_mid_chain, progress.as_ref());
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut invalid = 0;
    for v in &verdicts {
        match &v.problem {
            None => println!("OK      {}  {}", show(&v.path), v.summary),
            Some((label, detail)) => {
                invalid += 1;
                println!("INVALID {}  {label}: {detail}", show(&v.path));
            }
        }
    }
    println!(
        "{} reports, {} valid, {invalid} invalid",
        verdicts.len(),
        verdicts.len() - invalid
    );
    if invalid > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn show(p: &Path) -> String {
    p.display().to_string()
}
