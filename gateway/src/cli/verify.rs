//! `mrv-gateway verify --keys <gateway jwk> --devices <registry.json>
//! <report files or dirs>`: the auditor's check of signed reports.
//!
//! For each report, everything in `docs/REPORT-FORMAT.md` §12: the JWS over
//! the stored bytes, the canonical payload, the devices against the device
//! registry (fails closed: a device missing from it, a key mismatch, a
//! signed device listed unsigned are rejected), the Merkle root, every
//! device signature, device frame continuity (an omitted frame is a hole),
//! every series aggregate, and every calculation recomputed from its
//! bindings; across reports (sorted by gateway and seq): gap-free seq,
//! `prev_hash`, contiguous periods, counter baselines, device seq
//! continuity and AWD states.
//!
//! Output on stdout: per report a verdict line (`OK` or `INVALID <reason>:
//! <detail>`) and, for a valid one, indented lines with each calculation's
//! exact ER with its inputs, completeness per bound series, exclusions and
//! frames given up; then per gateway and calculation the exact total and
//! the total rounded down once. With `--trust-report-keys` (no registry)
//! every verdict line says `UNTRUSTED-KEYS`. A progress bar goes to stderr
//! when it is a terminal.
//!
//! Directories are searched for `*.jws` (the gateway's `.meta.json` and
//! `delivered.json` sit beside them and are skipped); a file named on the
//! command line that is not a compact JWS is skipped with a note.
//!
//! Exit status: 0 all valid, 1 any invalid, 2 usage error (no keys, no
//! registry, no reports, unreadable path).

use crate::keys::load_public_keys;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mrv_shared::methodology::{MethodologyKind, Ratio};
use mrv_shared::report::model::{Calculation, Report};
use mrv_shared::report::verify::{Chain, VerifiedReport, verify_report};
use mrv_shared::report::{DeviceRegistry, DeviceTrust, KeySet};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The gateway's public JWK file, or a directory of `*.jwk` files;
    /// repeat `--keys` for more (one value each, so report paths may follow).
    #[arg(long, required = true, action = clap::ArgAction::Append)]
    pub keys: Vec<PathBuf>,
    /// The device registry to trust (JSON: `mrv-gateway registry export`
    /// writes one from a gateway config; an MRV backend keeps its own).
    #[arg(
        long,
        value_name = "REGISTRY.json",
        required_unless_present = "trust_report_keys"
    )]
    pub devices: Option<PathBuf>,
    /// Without a registry: take the device keys the reports list as they
    /// are. For exploring only: nothing then stops a gateway from relabelling
    /// or re-keying devices, and every verdict says UNTRUSTED-KEYS.
    #[arg(long, conflicts_with = "devices")]
    pub trust_report_keys: bool,
    /// Accept a chain that starts after seq 1 (an auditor given a slice);
    /// the first report's baselines and positions are then taken as stated.
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
    /// Lines describing a valid report.
    pub summary: Vec<String>,
}

/// What was found on the command line.
struct Inputs {
    reports: Vec<PathBuf>,
    skipped: Vec<(PathBuf, &'static str)>,
}

fn looks_like_jws(bytes: &[u8]) -> bool {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    text.iter().filter(|b| **b == b'.').count() == 2
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn collect_files(paths: &[PathBuf]) -> std::io::Result<Inputs> {
    let mut out = Inputs {
        reports: Vec::new(),
        skipped: Vec::new(),
    };
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jws"))
                .collect();
            v.sort();
            out.reports.extend(v);
        } else {
            let bytes = std::fs::read(p)?;
            if looks_like_jws(&bytes) {
                out.reports.push(p.clone());
            } else {
                out.skipped.push((p.clone(), "not a compact JWS report"));
            }
        }
    }
    Ok(out)
}

fn ratio(s: &str) -> Option<Ratio> {
    Ratio::parse_exact(s).ok()
}

/// `1234567` Wh as `1.234567 MWh` (exact, trailing zeros trimmed).
fn mwh(wh: &str) -> String {
    match wh.parse::<i128>() {
        Ok(v) => {
            let neg = v < 0;
            let a = v.unsigned_abs();
            let int = a / 1_000_000;
            let frac = a % 1_000_000;
            let mut f = format!("{frac:06}");
            while f.ends_with('0') {
                f.pop();
            }
            let sign = if neg { "-" } else { "" };
            if f.is_empty() {
                format!("{sign}{int} MWh")
            } else {
                format!("{sign}{int}.{f} MWh")
            }
        }
        Err(_) => format!("{wh} Wh"),
    }
}

fn param(c: &Calculation, name: &str) -> String {
    c.parameters
        .get(name)
        .map_or_else(|| String::from("?"), |p| format!("{} {}", p.value, p.unit))
}

/// The lines shown for one calculation.
fn calculation_lines(c: &Calculation) -> Vec<String> {
    let input = |k: &str| c.inputs.get(k).cloned().unwrap_or_default();
    let mut lines = vec![format!(
        "  {} ({}): ER {} tCO2e exactly ({} to 6 decimals) = RE {} - PE {}",
        c.id,
        c.methodology.name(),
        c.er.exact,
        c.er.decimal,
        c.re.decimal,
        c.pe.decimal
    )];
    let how = match c.methodology {
        MethodologyKind::SolarPv | MethodologyKind::SolarPump => {
            let ef = if c.methodology == MethodologyKind::SolarPv {
                "ef"
            } else {
                "ef_displaced"
            };
            let mut s = format!(
                "RE = {} x {}, PE = {} x {}",
                mwh(&input("re_energy_wh")),
                param(c, ef),
                mwh(&input("pe_energy_wh")),
                param(c, ef)
            );
            if let Some(w) = c.inputs.get("withheld_re_energy_wh") {
                s.push_str(&format!(
                    "; {} of reference energy WITHHELD (a subtracted input has no data)",
                    mwh(w)
                ));
            }
            s
        }
        MethodologyKind::BiogasDigester => format!(
            "CH4 {} normal mL of {} mL biogas ({} mL unpaired, {} mL without flame) x {} x DE {} x GWP {}",
            input("ch4_normal_ml"),
            input("gas_volume_ml"),
            input("unpaired_ml"),
            input("unflared_ml"),
            param(c, "rho_ch4"),
            param(c, "destruction_efficiency"),
            param(c, "gwp_ch4")
        ),
        MethodologyKind::RiceAwd => {
            let tubes: Vec<String> = c
                .inputs
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix("observed_ms:")?;
                    let h = v.parse::<u64>().ok()? as f64 / 3_600_000.0;
                    let ev = c
                        .inputs
                        .get(&format!("drainage_events:{key}"))
                        .cloned()
                        .unwrap_or_default();
                    Some(format!("{key} observed {h:.2} h, {ev} drainage events"))
                })
                .collect();
            format!(
                "{} tubes over {}: {}",
                input("tubes"),
                param(c, "area_ha"),
                tubes.join("; ")
            )
        }
    };
    lines.push(format!("      {how}"));
    for b in &c.completeness {
        let pct = match b.expected {
            Some(e) if e > 0 => format!(
                "{:.1} % ({}/{} usable)",
                b.usable as f64 * 100.0 / e as f64,
                b.usable,
                e
            ),
            _ => format!(
                "{} usable of {} (no nominal interval)",
                b.usable, b.received
            ),
        };
        let gap = b
            .gap_ms
            .filter(|g| *g > 0)
            .map(|g| format!(", gaps {:.1} min", g as f64 / 60_000.0))
            .unwrap_or_default();
        lines.push(format!(
            "      {} {}/{}: {pct}{gap}",
            b.role.name(),
            b.device,
            b.channel
        ));
    }
    if !c.excluded.is_empty() {
        let ex: Vec<String> = c
            .excluded
            .iter()
            .map(|e| format!("{} ({})", e.device, e.reason))
            .collect();
        lines.push(format!("      excluded: {}", ex.join(", ")));
    }
    lines
}

/// The lines shown for one valid report.
fn summary_lines(v: &VerifiedReport, untrusted: bool) -> Vec<String> {
    let r: &Report = &v.report;
    let mut lines = vec![format!(
        "{}{} seq {} period {} .. {}, {} readings in {} frames",
        if untrusted { "UNTRUSTED-KEYS " } else { "" },
        v.id(),
        v.seq(),
        crate::clock::utc_seconds(r.header.period.start_ms),
        crate::clock::utc_seconds(r.header.period.end_ms),
        r.readings.count,
        r.readings.frames.len()
    )];
    for c in &r.calculations {
        lines.extend(calculation_lines(c));
    }
    if r.calculations.is_empty() {
        lines.push(String::from("  no calculations"));
    }
    for c in &r.continuity {
        for g in &c.given_up {
            let why = r
                .events
                .iter()
                .find(|e| e.device.as_ref() == Some(&c.device) && e.seqs == Some(*g))
                .map(|e| e.detail.clone())
                .unwrap_or_default();
            lines.push(format!(
                "  frames given up: {} seqs {}..={}: {why}",
                c.device, g.first, g.last
            ));
        }
    }
    lines
}

/// Verifies `files`; verdicts in input order.
pub fn verify_files(
    files: &[PathBuf],
    keys: &KeySet,
    devices: &DeviceTrust,
    allow_mid_chain: bool,
    progress: Option<&ProgressBar>,
) -> (Vec<Verdict>, Vec<VerifiedReport>) {
    let untrusted = matches!(devices, DeviceTrust::ReportListed);
    let mut verdicts: Vec<Verdict> = files
        .iter()
        .map(|p| Verdict {
            path: p.clone(),
            problem: None,
            summary: Vec::new(),
        })
        .collect();
    let mut valid: Vec<(usize, VerifiedReport)> = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let result = std::fs::read(p)
            .map_err(|e| (String::from("unreadable"), e.to_string()))
            .and_then(|bytes| {
                verify_report(&bytes, keys, devices)
                    .map_err(|e| (e.label().to_string(), e.to_string()))
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
    let mut accepted = Vec::new();
    for (i, v) in valid {
        match chain.push(&v) {
            Ok(()) => {
                verdicts[i].summary = summary_lines(&v, untrusted);
                accepted.push(v);
            }
            Err(e) => verdicts[i].problem = Some((e.label().to_string(), e.to_string())),
        }
    }
    (verdicts, accepted)
}

/// Loads the registry named by `--devices`, or the explicit relaxation.
fn device_trust(args: &VerifyArgs) -> Result<DeviceTrust, String> {
    match (&args.devices, args.trust_report_keys) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let reg = DeviceRegistry::from_json(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let trusted = reg
                .trusted()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(DeviceTrust::Registry(trusted))
        }
        (None, true) => Ok(DeviceTrust::ReportListed),
        (None, false) => Err(String::from(
            "no device registry: give --devices REGISTRY.json (or --trust-report-keys to explore without one)",
        )),
    }
}

/// Runs `verify` writing verdicts to `out`; returns the exit status
/// (0 all valid, 1 any invalid, 2 usage error).
pub fn execute(args: &VerifyArgs, out: &mut dyn Write) -> i32 {
    let keys = match load_public_keys(&args.keys) {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => return usage("no public keys found under --keys"),
        Err(e) => return usage(e),
    };
    let devices = match device_trust(args) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let inputs = match collect_files(&args.reports) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    for (p, why) in &inputs.skipped {
        let _ = writeln!(out, "SKIPPED {}  {why}", show(p));
    }
    if inputs.reports.is_empty() {
        return usage("no report files found (directories are searched for *.jws)");
    }
    let files = inputs.reports;
    let progress = std::io::stderr().is_terminal().then(|| {
        let pb = ProgressBar::new(files.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} reports {elapsed}")
                .expect("the template is valid"),
        );
        pb
    });
    let (verdicts, accepted) = verify_files(
        &files,
        &keys,
        &devices,
        args.allow_mid_chain,
        progress.as_ref(),
    );
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut invalid = 0;
    let mut hint_mid_chain = false;
    let mut hint_key = false;
    for v in &verdicts {
        let mut text = match &v.problem {
            None => {
                let mut lines = v.summary.iter();
                let first = lines.next().cloned().unwrap_or_default();
                let mut t = format!("OK      {}  {first}", show(&v.path));
                for l in lines {
                    t.push('\n');
                    t.push_str(l);
                }
                t
            }
            Some((label, detail)) => {
                invalid += 1;
                hint_mid_chain |= label == "seq_gap" && !args.allow_mid_chain;
                hint_key |= label == "bad_signature" || label == "unknown_kid";
                format!("INVALID {}  {label}: {detail}", show(&v.path))
            }
        };
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return 2;
        }
    }
    // Totals per gateway and calculation: exact, then rounded down once.
    let mut totals: BTreeMap<(String, String), Ratio> = BTreeMap::new();
    for v in &accepted {
        for c in &v.report.calculations {
            let e = totals
                .entry((v.gateway().to_string(), c.id.clone()))
                .or_insert(Ratio::ZERO);
            if let Some(er) = ratio(&c.er.exact) {
                *e = e.checked_add(er).unwrap_or(*e);
            }
        }
    }
    for ((gw, id), t) in &totals {
        let _ = writeln!(
            out,
            "TOTAL   {gw} {id}: ER {t} tCO2e exactly, {} tCO2e rounded down once",
            t.floor()
        );
    }
    let _ = writeln!(
        out,
        "{} reports, {} valid, {invalid} invalid{}",
        verdicts.len(),
        verdicts.len() - invalid,
        if matches!(devices, DeviceTrust::ReportListed) {
            " (UNTRUSTED-KEYS: device keys were taken from the reports, not from a registry)"
        } else {
            ""
        }
    );
    if hint_mid_chain {
        let _ = writeln!(
            out,
            "hint: a chain must start at seq 1; to check a slice, add --allow-mid-chain"
        );
    }
    if hint_key {
        let _ = writeln!(
            out,
            "hint: the gateway keys given: {}",
            keys.describe().join(", ")
        );
    }
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

    #[test]
    fn watt_hours_read_as_exact_megawatt_hours() {
        assert_eq!(mwh("911000"), "0.911 MWh");
        assert_eq!(mwh("1234567"), "1.234567 MWh");
        assert_eq!(mwh("2000000"), "2 MWh");
        assert_eq!(mwh("-5"), "-0.000005 MWh");
    }

    #[test]
    fn only_compact_jws_text_is_taken_for_a_report() {
        assert!(looks_like_jws(b"eyJh.eyJi.c2ln"));
        assert!(looks_like_jws(b"eyJh.eyJi.c2ln\n"));
        assert!(!looks_like_jws(br#"{"delivered_upto": 3}"#));
        assert!(!looks_like_jws(b"a.b"));
    }
}
