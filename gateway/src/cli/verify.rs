//! `mrv-gateway verify --keys <jwk files or dirs> <report files or dirs>`:
//! the auditor's check of signed reports.
//!
//! For each report: the JWS (algorithm, known `kid`, signature over the
//! stored bytes), the device keys it lists against any device JWK given
//! under `--keys` (`kid` = device id), the Merkle root and count of its
//! readings, every device signature, every aggregate and the calculation
//! recomputed; across
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
use mrv_shared::report::verify::{Chain, VerifiedReport, verify_report};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A public JWK file, or a directory of `*.jwk` files; repeat `--keys`
    /// for more (one value each, so report paths may follow).
    #[arg(long, required = true, action = clap::ArgAction::Append)]
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
                let label =
                    |e: mrv_shared::report::ReportError| (e.label().to_string(), e.to_string());
                let v = verify_report(&bytes, keys).map_err(label)?;
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
                    "{} seq {} period {} .. {} readings {} ER {} tCO2e (exact {})",
                    v.id(),
                    v.seq(),
                    crate::clock::utc_seconds(r.header.period.start_ms),
                    crate::clock::utc_seconds(r.header.period.end_ms),
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

/// Runs `verify` writing verdicts to `out`; returns the exit status
/// (0 all valid, 1 any invalid, 2 usage error).
pub fn execute(args: &VerifyArgs, out: &mut dyn Write) -> i32 {
    let keys = match load_public_keys(&args.keys) {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => return usage("no public keys found"),
        Err(e) => return usage(e),
    };
    let files = match collect_files(&args.reports) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return usage("no report files found"),
        Err(e) => return usage(e),
    };
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
        let line = match &v.problem {
            None => format!("OK      {}  {}", show(&v.path), v.summary),
            Some((label, detail)) => {
                invalid += 1;
                format!("INVALID {}  {label}: {detail}", show(&v.path))
            }
        };
        if writeln!(out, "{line}").is_err() {
            return 2;
        }
    }
    let _ = writeln!(
        out,
        "{} reports, {} valid, {invalid} invalid",
        verdicts.len(),
        verdicts.len() - invalid
    );
    if invalid > 0 { 1 } else { 0 }
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("verify: {msg}");
    2
}

/// Runs `verify` on stdout and exits with its status when not 0.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let code = execute(&args, &mut std::io::stdout().lock());
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate;
    use crate::report::builder::{BuildInput, Identity, build};
    use crate::report::signer::sign;
    use mrv_shared::methodology::{MethodologyKind, Param, Params};
    use mrv_shared::report::model::{ClockState, GENESIS_PREV_HASH, Period};

    fn args(keys: Vec<PathBuf>, reports: Vec<PathBuf>) -> VerifyArgs {
        VerifyArgs {
            keys,
            allow_mid_chain: false,
            reports,
        }
    }

    #[test]
    fn exit_status_is_0_for_valid_1_for_invalid_2_for_usage_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(&dir.path().join("keys"), "gw").expect("keygen");
        let (kid, key) = crate::keys::load_signing_key(&files.private).expect("key");
        let identity = Identity {
            site: mrv_shared::ids::SiteId::new("s").expect("valid"),
            project: String::from("p"),
            methodology_ref: String::from("m"),
            gateway: String::from("gw"),
            kid: kid.clone(),
        };
        let mut params = Params::new();
        params.insert(
            String::from("ef"),
            Param {
                value: String::from("0.5"),
                unit: String::from("tCO2/MWh"),
                source: String::from("t"),
            },
        );
        let report = build(BuildInput {
            identity: &identity,
            period: Period {
                start_ms: 0,
                end_ms: 3_600_000,
            },
            seq: 1,
            prev_hash: String::from(GENESIS_PREV_HASH),
            clock: ClockState {
                source: String::from("ntp"),
                last_sync_ms: None,
                max_skew_ms: 0,
            },
            devices: &[],
            frames: vec![],
            events: vec![],
            methodology: MethodologyKind::SolarPv,
            params: &params,
            baselines: Default::default(),
            awd_start: None,
            silent_before: Default::default(),
        })
        .expect("builds");
        let signed = sign(&report, &kid, &key).expect("signs");
        let reports = dir.path().join("reports");
        std::fs::create_dir_all(&reports).expect("mkdir");
        std::fs::write(reports.join("000000000001.jws"), &signed.bytes).expect("write");
        let keys = vec![dir.path().join("keys")];
        let mut out = Vec::new();
        assert_eq!(
            execute(&args(keys.clone(), vec![reports.clone()]), &mut out),
            0
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("OK "), "{text}");
        let mut bad = signed.bytes.clone();
        let n = bad.len();
        bad[n - 2] = if bad[n - 2] == b'A' { b'B' } else { b'A' };
        std::fs::write(reports.join("000000000002.jws"), &bad).expect("write");
        let mut out = Vec::new();
        assert_eq!(
            execute(&args(keys.clone(), vec![reports.clone()]), &mut out),
            1
        );
        assert!(String::from_utf8(out).expect("utf8").contains("INVALID"));
        let mut out = Vec::new();
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).expect("mkdir");
        assert_eq!(
            execute(&args(vec![empty.clone()], vec![reports]), &mut out),
            2
        );
        assert_eq!(execute(&args(keys, vec![empty]), &mut out), 2);
    }
}
