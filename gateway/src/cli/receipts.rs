//! `mrv-gateway receipts check|audit`: what the backend's receipts prove.
//!
//! - `check --data-dir D [--log-key K]` (offline): the kept checkpoints
//!   form a consistent chain (each with its proof from the one before), and
//!   every kept receipt checks out against its report (when the report is
//!   still on the gateway) and against the log key.
//! - `audit --data-dir D --url U [--log-key K] [--ca-file F]` (online, what
//!   an auditor holding receipts does): for every receipt, the backend's
//!   current checkpoint must extend the receipt's (a consistency proof from
//!   the backend, checked here), and the backend must still serve the
//!   report with exactly the receipt's hash. A backend that dropped or
//!   rewrote an accepted report fails one or the other.
//!
//! One line per receipt (`OK seq N` or `INVALID seq N <reason>: <detail>`);
//! exit status 0 all fine, 1 any problem.
//!
//! (Kept apart from `verify`, which checks reports; `verify` may call
//! [`check_offline`].)

use crate::upload::receipts::{ReceiptStore, open_checkpoint};
use clap::{Args, Subcommand};
use mrv_shared::tlog::note::NoteVerifier;
use mrv_shared::tlog::receipt::{ConsistencyProof, check_receipt, verify_consistency_between};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Arguments of `receipts`.
#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ReceiptsCommand,
}

/// `receipts` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Check kept receipts and checkpoints offline.
    Check(CheckArgs),
    /// Ask the backend whether it still holds what its receipts prove.
    Audit(AuditArgs),
}

/// Arguments of `receipts check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The gateway's data directory (receipts are in `reports/receipts/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The backend log's note verifier key; without it signatures are not
    /// checked (said in the output).
    #[arg(long)]
    pub log_key: Option<String>,
}

/// Arguments of `receipts audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The gateway's data directory (or a copy of its `reports/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The backend's base URL.
    #[arg(long)]
    pub url: String,
    /// The backend log's note verifier key.
    #[arg(long)]
    pub log_key: Option<String>,
    /// PEM CA bundle the backend's certificate must chain to.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// One receipt's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptVerdict {
    /// Report seq.
    pub seq: u64,
    /// `None`: fine; else (reason, detail).
    pub problem: Option<(String, String)>,
}

impl std::fmt::Display for ReceiptVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            None => write!(f, "OK seq {}", self.seq),
            Some((r, d)) => write!(f, "INVALID seq {} {r}: {d}", self.seq),
        }
    }
}

fn key_of(s: Option<&str>) -> anyhow::Result<Option<NoteVerifier>> {
    s.map(|k| NoteVerifier::parse(k.trim()).map_err(|e| anyhow::anyhow!("--log-key: {e}")))
        .transpose()
}

/// Offline checks (see the module doc); `Err` when the kept checkpoints
/// themselves do not form a consistent chain.
pub fn check_offline(
    data_dir: &Path,
    key: Option<&NoteVerifier>,
) -> anyhow::Result<Vec<ReceiptVerdict>> {
    let reports = data_dir.join("reports");
    let store = ReceiptStore::open(&reports, key.cloned())
        .map_err(|e| anyhow::anyhow!("kept checkpoints: {e}"))?;
    let mut out = Vec::new();
    for seq in store.seqs()? {
        let problem = match store.get(seq) {
            Ok(Some(r)) => {
                let path = reports.join(format!("{}.jws", crate::report::store::file_stem(seq)));
                let bytes = std::fs::read(&path).ok();
                check_receipt(&r, bytes.as_deref(), key)
                    .err()
                    .map(|e| (e.label().to_string(), e.to_string()))
            }
            Ok(None) => Some((String::from("missing"), String::from("no receipt file"))),
            Err(e) => Some((String::from("unreadable"), e.to_string())),
        };
        out.push(ReceiptVerdict { seq, problem });
    }
    Ok(out)
}

/// Online audit (see the module doc).
pub async fn audit_online(
    data_dir: &Path,
    http: &reqwest::Client,
    base: &str,
    key: Option<&NoteVerifier>,
) -> anyhow::Result<Vec<ReceiptVerdict>> {
    let base = if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    };
    let store = ReceiptStore::open(&data_dir.join("reports"), key.cloned())
        .map_err(|e| anyhow::anyhow!("kept checkpoints: {e}"))?;
    let note = http
        .get(format!("{base}v1/log/checkpoint"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let current = open_checkpoint(&note, key)
        .map_err(|e| anyhow::anyhow!("the backend's checkpoint: {e}"))?;
    let mut out = Vec::new();
    for seq in store.seqs()? {
        let problem = async {
            let r = store
                .get(seq)
                .map_err(unreadable)?
                .ok_or_else(|| ("missing".to_string(), "no receipt file".to_string()))?;
            let cp =
                check_receipt(&r, None, key).map_err(|e| (e.label().to_string(), e.to_string()))?;
            let proof: ConsistencyProof = http
                .get(format!(
                    "{base}v1/log/consistency?old={}&new={}",
                    cp.size.min(current.size),
                    current.size
                ))
                .send()
                .await
                .map_err(|e| ("unreachable".to_string(), e.to_string()))?
                .json()
                .await
                .map_err(|e| ("no_proof".to_string(), e.to_string()))?;
            verify_consistency_between(&cp, &current, &proof).map_err(|e| {
                (
                    e.label().to_string(),
                    format!("the backend's log no longer extends the receipt's checkpoint: {e}"),
                )
            })?;
            let id = format!(
                "{}-{}",
                report_gateway(data_dir, seq).unwrap_or_default(),
                crate::report::store::file_stem(seq)
            );
            let resp = http
                .get(format!("{base}v1/reports/{id}"))
                .send()
                .await
                .map_err(|e| ("unreachable".to_string(), e.to_string()))?;
            if !resp.status().is_success() {
                return Err((
                    String::from("report_missing"),
                    format!(
                        "the backend answers {} for {id}, which its receipt says it accepted",
                        resp.status()
                    ),
                ));
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ("unreachable".to_string(), e.to_string()))?;
            if mrv_shared::report::hex(&Sha256::digest(&bytes)) != r.report_hash {
                return Err((
                    String::from("report_changed"),
                    format!("the backend serves other bytes for {id} than it gave a receipt for"),
                ));
            }
            Ok::<(), (String, String)>(())
        }
        .await
        .err();
        out.push(ReceiptVerdict { seq, problem });
    }
    Ok(out)
}

/// The gateway id of kept report `seq` (from its meta file), for the
/// report id.
fn report_gateway(data_dir: &Path, seq: u64) -> Option<String> {
    let meta = std::fs::read(data_dir.join("reports").join(format!(
        "{}.meta.json",
        crate::report::store::file_stem(seq)
    )))
    .ok()?;
    let m: crate::report::store::ReportMeta = serde_json::from_slice(&meta).ok()?;
    m.report_id
        .strip_suffix(&format!("-{}", crate::report::store::file_stem(seq)))
        .map(str::to_string)
}

/// A kept receipt that cannot be read, as a verdict's problem.
fn unreadable(e: crate::upload::receipts::ReceiptError) -> (String, String) {
    (String::from("unreadable"), e.to_string())
}

/// Runs `receipts`.
pub fn run(args: ReceiptsArgs) -> anyhow::Result<()> {
    let (verdicts, unsigned) = match args.command {
        ReceiptsCommand::Check(a) => {
            let key = key_of(a.log_key.as_deref())?;
            (check_offline(&a.data_dir, key.as_ref())?, key.is_none())
        }
        ReceiptsCommand::Audit(a) => {
            let key = key_of(a.log_key.as_deref())?;
            let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
            if let Some(ca) = &a.ca_file {
                let pem = std::fs::read(ca)?;
                b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
            }
            let http = b.build()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let v = rt.block_on(audit_online(&a.data_dir, &http, &a.url, key.as_ref()))?;
            (v, key.is_none())
        }
    };
    if unsigned {
        println!("WARNING: no --log-key: checkpoint signatures were NOT checked");
    }
    let mut bad = 0;
    for v in &verdicts {
        println!("{v}");
        bad += usize::from(v.problem.is_some());
    }
    println!("{} receipts, {bad} invalid", verdicts.len());
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}
