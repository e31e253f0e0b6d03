//! The crediting statement: the auditor's pack for one project (or site)
//! over whole days, built from the ledger ([`crate::ledger`]) and the
//! stored reports, signed by the backend's log key.
//!
//! ## Pack layout (`mrv-receiver statement ... --out DIR`)
//!
//! ```text
//! DIR/README.md                      what this is and how to verify it (commands)
//! DIR/statement.xlsx                 workbook shaped like a JCM Monitoring Report Sheet:
//!                                    Summary, Parameters, Calculation, Completeness, Gaps and events
//! DIR/csv/<sheet>.csv                the same tables, RFC 4180 CSV, UTF-8
//! DIR/totals.json                    the ledger totals (GET /v1/ledger/totals answers the same)
//! DIR/reports/<gateway>/<seq>.jws    every counted report, byte for byte as stored
//! DIR/receipts/<gateway>/<seq>.json  a log receipt for each (inclusion proof + checkpoint)
//! DIR/registry/devices.json          the command-line device registry (when given)
//! DIR/registry/gateway-keys/*.jwk    the command-line gateway keys (when given)
//! DIR/registry/registry.json         the backend's registry: enrolled gateways, their keys with
//!                                    validity and revocations, sites' device registries
//! DIR/registry/history.jsonl         the registry's whole audit trail (who, when, what)
//! DIR/registry/enrolled-keys/<kid>.jwk   the enrolled keys of the counted gateways
//! DIR/registry/sites/<site>/devices.json the device registry of each counted site
//! DIR/log/checkpoint.txt             the log's signed checkpoint the receipts verify against
//! DIR/log/verifier.txt               the log's note verifier key (compare out of band)
//! DIR/MANIFEST.sha256                `sha256sum` lines for every file above
//! DIR/STATEMENT.note                 C2SP signed note (log key) over the totals and the
//!                                    SHA-256 of MANIFEST.sha256
//! ```
//!
//! Invariants: the totals in every table, in `totals.json` and in the
//! signed note are one computation ([`crate::ledger::totals`]): the exact
//! sum of the counted reports' ER, rounded down once. Every file of the
//! pack is covered by the manifest, and the manifest by the signature
//! ([`verify_pack`] checks both, and that no file is unlisted).
//!
//! ## Memory
//!
//! A pack is written in one pass over the ledger, 1,000 entries
//! at a time ([`Archive::ledger_page`]): each counted report's JWS and
//! receipt are written as its entry comes, its Calculation rows go to the
//! workbook's constant-memory sheet and the CSV file, and
//! [`tables::TablesFold`] keeps the exact running sums and the per-site,
//! per-calculation, per-binding and per-gateway rows. What still grows
//! with the reports: the manifest's list (path and SHA-256 of each file)
//! and 16 bytes of period per report for the gaps table.

pub mod tables;
pub mod workbook;

use crate::archive::{AnyArchive, Archive, ArchiveError, LogIdentity};
use crate::ledger::{self, LedgerError, LedgerQuery, Totals};
use mrv_shared::tlog::note::NoteVerifier;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tables::{Cell, Table};

/// First line of a statement note.
pub const NOTE_TITLE: &str = "mrv-receiver crediting statement v1";

/// Why a statement could not be written or verified.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// The ledger question failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The workbook writer failed.
    #[error("statement.xlsx: {0}")]
    Workbook(String),
    /// The output directory exists and is not empty.
    #[error("{0}: exists and is not empty (a pack is written into a new directory)")]
    OutputNotEmpty(PathBuf),
    /// A text that cannot go into the signed note (control characters).
    #[error("{what} {value:?} cannot be written in the signed note")]
    Unsignable {
        /// Which field.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A ledger entry whose report is not in the archive.
    #[error("report {0} is in the ledger but not in the archive")]
    MissingReport(String),
    /// Verification of a pack failed.
    #[error("pack does not verify: {0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StatementError + '_ {
    move |source| StatementError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to put in a pack besides the archive's contents.
#[derive(Debug, Clone, Default)]
pub struct PackInputs {
    /// The device registry file (copied to `registry/devices.json`).
    pub registry: Option<PathBuf>,
    /// Gateway public JWK files (copied to `registry/gateway-keys/`).
    pub gateway_keys: Vec<PathBuf>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Pack {
    /// The totals.
    pub totals: Totals,
    /// Files written (relative paths, sorted), manifest and note excluded.
    pub files: Vec<String>,
    /// The signed note.
    pub note: String,
}

/// The pack's files as they are written, each with its SHA-256 (for the
/// manifest, without reading the files back).
#[derive(Debug)]
struct PackFiles {
    out: PathBuf,
    files: Vec<(String, [u8; 32])>,
    /// The directory made last (most writes go into the same one).
    last_dir: Option<PathBuf>,
}

impl PackFiles {
    fn new(out: &Path) -> PackFiles {
        PackFiles {
            out: out.to_path_buf(),
            files: Vec::new(),
            last_dir: None,
        }
    }

    /// `out/rel`, its directory made.
    fn path(&mut self, rel: &str) -> Result<PathBuf, StatementError> {
        let path = self.out.join(rel);
        if let Some(dir) = path.parent()
            && self.last_dir.as_deref() != Some(dir)
        {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            self.last_dir = Some(dir.to_path_buf());
        }
        Ok(path)
    }

    fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<(), StatementError> {
        let path = self.path(rel)?;
        std::fs::write(&path, bytes).map_err(io(&path))?;
        self.files
            .push((rel.to_string(), Sha256::digest(bytes).into()));
        Ok(())
    }

    /// Records `rel`, written by another writer, hashing it from disk.
    fn written(&mut self, rel: &str) -> Result<(), StatementError> {
        let path = self.out.join(rel);
        let mut f = std::fs::File::open(&path).map_err(io(&path))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(io(&path))?;
        self.files.push((rel.to_string(), h.finalize().into()));
        Ok(())
    }

    /// Writes `MANIFEST.sha256` (sorted `sha256sum` lines); returns the
    /// files, sorted, and the manifest's own SHA-256.
    fn manifest(mut self) -> Result<(Vec<String>, String), StatementError> {
        use std::io::Write;
        self.files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let path = self.out.join("MANIFEST.sha256");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io(&path))?);
        let mut h = Sha256::new();
        for (rel, hash) in &self.files {
            let line = format!("{}  {rel}\n", mrv_shared::report::hex(hash));
            h.update(line.as_bytes());
            w.write_all(line.as_bytes()).map_err(io(&path))?;
        }
        w.flush().map_err(io(&path))?;
        Ok((
            self.files.into_iter().map(|(rel, _)| rel).collect(),
            mrv_shared::report::hex(&h.finalize()),
        ))
    }
}

/// Ledger entries read per page while writing a pack.
const LEDGER_PAGE: usize = 1_000;

fn file_name(p: &Path) -> Result<String, StatementError> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .ok_or_else(|| StatementError::Invalid(format!("{}: not a file name", p.display())))
}

fn note_field(what: &'static str, value: &str) -> Result<String, StatementError> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(StatementError::Unsignable {
            what,
            value: value.to_string(),
        });
    }
    Ok(value.to_string())
}

/// The text the statement note signs.
pub fn note_text(t: &Totals, manifest_sha256: &str) -> Result<String, StatementError> {
    let q = &t.query;
    let a = &t.amounts;
    Ok(format!(
        "{NOTE_TITLE}\nproject {}\nsite {}\nfrom {}\nto {}\nreports {}\nre {}\npe {}\ner {}\ner-decimal {}\ner-tonnes {}\nmanifest-sha256 {manifest_sha256}\n",
        note_field("project", &q.project)?,
        match &q.site {
            Some(s) => note_field("site", s)?,
            None => String::from("*"),
        },
        q.from,
        q.to,
        t.reports,
        a.re.exact,
        a.pe.exact,
        a.er.exact,
        a.er.decimal,
        a.er.tonnes,
    ))
}

/// Writes the pack for `q` into `out` (a new or empty directory).
pub async fn write_pack(
    archive: &AnyArchive,
    identity: &LogIdentity,
    q: &LedgerQuery,
    inputs: &PackInputs,
    out: &Path,
) -> Result<Pack, StatementError> {
    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(StatementError::OutputNotEmpty(out.to_path_buf()));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut files = PackFiles::new(out);
    // One pass over the ledger, a page at a time: each counted report's
    // JWS and receipt are written and its Calculation rows streamed to the
    // workbook and the CSV file; the fold keeps the totals and the small
    // tables, not the entries.
    let mut fold = tables::TablesFold::new(q);
    let mut book = workbook::WorkbookWriter::new()?;
    let calc_rel = format!("csv/{}.csv", tables::CALCULATION_FILE);
    let calc_path = files.path(&calc_rel)?;
    let mut calc_csv = CsvWriter::create(&calc_path, &tables::CALCULATION_HEADERS)?;
    let mut gateways = std::collections::BTreeSet::new();
    let mut sites = std::collections::BTreeSet::new();
    let mut after = None;
    loop {
        let page = archive.ledger_page(q, after.as_ref(), LEDGER_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(ledger::LedgerKey::of(last));
        for e in &page {
            let Some(rows) = fold.add(e)? else { continue };
            for cells in &rows {
                book.calculation_row(cells)?;
                calc_csv.row(cells)?;
            }
            write_report(archive, e, &mut files).await?;
            if !gateways.contains(e.gateway.as_str()) {
                gateways.insert(e.gateway.clone());
            }
            if !sites.contains(e.site.as_str()) {
                sites.insert(e.site.clone());
            }
        }
    }
    let (totals, tables) = fold.finish()?;
    for t in &tables {
        if t.sheet == tables::CALCULATION_SHEET {
            for cells in &t.rows {
                calc_csv.row(cells)?;
            }
        } else {
            files.write(&format!("csv/{}.csv", t.file), t.csv().as_bytes())?;
        }
    }
    calc_csv.finish()?;
    files.written(&calc_rel)?;
    let xlsx = out.join("statement.xlsx");
    book.finish(&tables, &xlsx)?;
    files.written("statement.xlsx")?;
    let checkpoint = archive.checkpoint().await?;
    files.write("log/checkpoint.txt", checkpoint.as_bytes())?;
    files.write(
        "log/verifier.txt",
        format!("{}\n", identity.verifier()).as_bytes(),
    )?;
    if let Some(r) = &inputs.registry {
        let bytes = std::fs::read(r).map_err(io(r))?;
        files.write("registry/devices.json", &bytes)?;
    }
    for k in &inputs.gateway_keys {
        let bytes = std::fs::read(k).map_err(io(k))?;
        files.write(&format!("registry/gateway-keys/{}", file_name(k)?), &bytes)?;
    }
    // The backend's registry and its audit trail.
    let reg = archive.registry().await?;
    let history = archive.registry_history(0, usize::MAX).await?;
    let mut enrolled = RegistryFiles::default();
    if !reg.gateways.is_empty() || !reg.sites.is_empty() || !history.is_empty() {
        let json = serde_json::to_vec_pretty(&serde_json::json!({
            "gateways": reg.gateways.values().collect::<Vec<_>>(),
            "sites": reg.sites.values().collect::<Vec<_>>(),
        }))
        .expect("the registry serialises");
        files.write("registry/registry.json", &json)?;
        let mut lines = Vec::new();
        for r in &history {
            lines.extend(serde_json::to_vec(r).expect("an audit record serialises"));
            lines.push(b'\n');
        }
        files.write("registry/history.jsonl", &lines)?;
        for g in gateways.iter().filter_map(|g| reg.gateways.get(g)) {
            for k in &g.keys {
                let json = serde_json::to_vec_pretty(&k.jwk).expect("a JWK serialises");
                let name = format!("registry/enrolled-keys/{}.jwk", safe_name(k.kid()));
                files.write(&name, &json)?;
                enrolled.keys = true;
            }
        }
        for site in sites.iter().filter_map(|s| reg.sites.get(s)) {
            let json = serde_json::to_vec_pretty(&site.registry).expect("a registry serialises");
            let name = format!("registry/sites/{}/devices.json", safe_name(&site.site));
            files.write(&name, &json)?;
            enrolled.sites.insert(site.site.clone(), name);
        }
    }
    let json = serde_json::to_vec_pretty(&totals).expect("totals serialise");
    files.write("totals.json", &json)?;
    files.write(
        "README.md",
        readme(&totals, identity, inputs, &enrolled).as_bytes(),
    )?;
    // Manifest and signature.
    let (files, manifest_sha256) = files.manifest()?;
    let text = note_text(&totals, &manifest_sha256)?;
    let note = identity
        .sign_note(&text)
        .map_err(|e| StatementError::Invalid(e.to_string()))?;
    std::fs::write(out.join("STATEMENT.note"), &note).map_err(io(&out.join("STATEMENT.note")))?;
    Ok(Pack {
        totals,
        files,
        note,
    })
}

/// Writes counted entry `e`'s report (checked against the ledger's hash)
/// and its receipt.
async fn write_report(
    archive: &AnyArchive,
    e: &ledger::LedgerEntry,
    files: &mut PackFiles,
) -> Result<(), StatementError> {
    let bytes = archive
        .fetch(&e.report_id)
        .await?
        .ok_or_else(|| StatementError::MissingReport(e.report_id.clone()))?;
    let hash = mrv_shared::report::hex(&Sha256::digest(&bytes));
    if hash != e.hash {
        return Err(StatementError::Invalid(format!(
            "stored report {} hashes to {hash}, the ledger says {}",
            e.report_id, e.hash
        )));
    }
    let stem = format!("{}/{:012}", e.gateway, e.seq);
    files.write(&format!("reports/{stem}.jws"), &bytes)?;
    let receipt = archive
        .receipt(&e.report_id)
        .await?
        .ok_or_else(|| StatementError::MissingReport(e.report_id.clone()))?;
    let json = serde_json::to_vec_pretty(&receipt).expect("a receipt serialises");
    files.write(&format!("receipts/{stem}.json"), &json)
}

/// A CSV file written a row at a time ([`Table::csv`]'s format).
struct CsvWriter {
    path: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
}

impl CsvWriter {
    fn create(path: &Path, headers: &[&str]) -> Result<CsvWriter, StatementError> {
        let f = std::fs::File::create(path).map_err(io(path))?;
        let mut c = CsvWriter {
            path: path.to_path_buf(),
            w: std::io::BufWriter::new(f),
        };
        let line = tables::csv_line(headers.iter().map(|h| tables::csv_field(h)));
        c.put(&line)?;
        Ok(c)
    }

    fn put(&mut self, line: &str) -> Result<(), StatementError> {
        use std::io::Write;
        self.w.write_all(line.as_bytes()).map_err(io(&self.path))
    }

    fn row(&mut self, cells: &[Cell]) -> Result<(), StatementError> {
        let line = tables::csv_line(cells.iter().map(tables::csv_cell));
        self.put(&line)
    }

    fn finish(mut self) -> Result<(), StatementError> {
        use std::io::Write;
        self.w.flush().map_err(io(&self.path))
    }
}

/// What of the backend's registry went into the pack.
#[derive(Debug, Default)]
struct RegistryFiles {
    /// Enrolled keys were written to `registry/enrolled-keys/`.
    keys: bool,
    /// Device registry file by site.
    sites: BTreeMap<String, String>,
}

/// `s` as one path component: itself when it is made of `[A-Za-z0-9._-]`
/// and does not start with `.`, else `x-` and its hex.
fn safe_name(s: &str) -> String {
    if !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        s.to_string()
    } else {
        format!("x-{}", mrv_shared::report::hex(s.as_bytes()))
    }
}

fn readme(
    t: &Totals,
    identity: &LogIdentity,
    inputs: &PackInputs,
    enrolled: &RegistryFiles,
) -> String {
    let q = &t.query;
    let a = &t.amounts;
    let (keys, py_keys) = if enrolled.keys && inputs.gateway_keys.is_empty() {
        (
            String::from("registry/enrolled-keys"),
            String::from("$(printf -- '--keys %s ' registry/enrolled-keys/*)"),
        )
    } else if inputs.gateway_keys.is_empty() {
        (
            String::from("<gateway public JWK>"),
            String::from("--keys <gateway public JWK>"),
        )
    } else {
        (
            String::from("registry/gateway-keys"),
            String::from("$(printf -- '--keys %s ' registry/gateway-keys/*)"),
        )
    };
    let registry = if enrolled.sites.len() == 1 && inputs.registry.is_none() {
        format!(
            "--devices {}",
            enrolled.sites.values().next().expect("one site")
        )
    } else if inputs.registry.is_some() {
        String::from("--devices registry/devices.json")
    } else {
        String::from("--devices <the device registry you trust>")
    };
    let mut gateways: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &t.coverage {
        *gateways.entry(&c.gateway).or_default() += c.reports;
    }
    let verify: String = gateways
        .keys()
        .map(|g| {
            format!(
                "mrv-gateway verify --allow-mid-chain --keys {keys} {registry} reports/{g}\n\
                 python3 tests/python/verify_report.py --allow-mid-chain {py_keys} {registry} reports/{g}/*.jws\n"
            )
        })
        .collect();
    format!(
        "# Crediting statement: {project}{site}, {from} to {to}\n\n\
         Emission reductions of project `{project}` over the days {from} to {to} (UTC,\n\
         both inclusive), as accepted by the MRV backend whose log key is\n\n    {verifier}\n\n\
         | | exact (tCO2e) | rounded down, 6 decimals | rounded down, whole tonnes |\n\
         |---|---|---|---|\n\
         | RE | {re} | {red} | {ret} |\n| PE | {pe} | {ped} | {pet} |\n| **ER** | {er} | {erd} | **{ert}** |\n\n\
         {n} reports counted (a report counts when its whole period lies in the days given;\n\
         {s} overlapping a boundary were counted nowhere). {rounding}.\n\n\
         ## Contents\n\n\
         - `statement.xlsx`: Summary, Parameters (shaped like a JCM Monitoring Report Sheet: parameter,\n  \
           description, value, unit, monitoring option, source, measuring equipment), Calculation (RE, PE,\n  \
           ER per report and the period total), Completeness, Gaps and events; `csv/`: the same tables.\n\
         - `reports/<gateway>/<seq>.jws`: every counted report as the gateway signed it.\n\
         - `receipts/`: the backend's log receipt for each; `log/checkpoint.txt`, `log/verifier.txt`.\n\
         - `registry/`: the device registry and gateway keys the reports were verified against;\n  \
           `registry.json` the backend's registry (gateways with their keys' validity and revocations,\n  \
           sites' devices) and `history.jsonl` its audit trail: every change, who made it and when.\n\
         - `totals.json`: the totals as computed; `MANIFEST.sha256`: SHA-256 of every file;\n  \
           `STATEMENT.note`: a C2SP signed note, by the log key, over the totals and the manifest's SHA-256.\n\n\
         ## How to verify\n\n\
         1. Obtain the backend's log verifier key out of band and compare it with `log/verifier.txt`.\n\
         2. The signature and every file (`sha256sum -c` checks the files alone):\n\n\
         ```sh\n\
         mrv-receiver verify-statement . --log-verifier \"$(cat log/verifier.txt)\"\n\
         sha256sum -c MANIFEST.sha256\n\
         ```\n\n\
         3. Every report: signatures, device registry, Merkle roots, aggregates, the calculation\n   \
            recomputed, the chain (docs/REPORT-FORMAT.md; the Python verifier is independent of the Rust one;\n   \
            `--allow-mid-chain` because a period after the first starts mid-chain, from the stated baselines):\n\n\
         ```sh\n{verify}```\n\n\
         4. The total: the exact sum of the reports' `calculations[].er.exact`, rounded down once, equals\n   \
            the ER above (e.g. Python's `fractions.Fraction` over the JWS payloads).\n\
         5. Each receipt proves its report is in the backend's public log (docs/RECEIVER-API.md):\n   \
            `python3 tests/python/verify_receipt.py` or `mrv-gateway receipts check`.\n",
        project = q.project,
        site = q
            .site
            .as_deref()
            .map(|s| format!(" site `{s}`"))
            .unwrap_or_default(),
        from = q.from,
        to = q.to,
        verifier = identity.verifier(),
        re = a.re.exact,
        red = a.re.decimal,
        ret = a.re.tonnes,
        pe = a.pe.exact,
        ped = a.pe.decimal,
        pet = a.pe.tonnes,
        er = a.er.exact,
        erd = a.er.decimal,
        ert = a.er.tonnes,
        n = t.reports,
        s = t.straddling.len(),
        rounding = t.rounding,
    )
}

/// What a verified pack states.
#[derive(Debug, Clone)]
pub struct VerifiedPack {
    /// The signed note's text.
    pub text: String,
    /// Files checked.
    pub files: usize,
}

/// Checks the pack in `dir`: the note's signature by `verifier`, the
/// manifest's hash in it, every listed file's hash, and that every file of
/// the pack is listed.
pub fn verify_pack(dir: &Path, verifier: &NoteVerifier) -> Result<VerifiedPack, StatementError> {
    let bad = StatementError::Invalid;
    let note_path = dir.join("STATEMENT.note");
    let note = std::fs::read_to_string(&note_path).map_err(io(&note_path))?;
    let text = mrv_shared::tlog::note::open(&note, verifier)
        .map_err(|e| bad(format!("STATEMENT.note: {e}")))?;
    if text.lines().next() != Some(NOTE_TITLE) {
        return Err(bad(String::from(
            "STATEMENT.note is not a crediting statement",
        )));
    }
    let want = text
        .lines()
        .find_map(|l| l.strip_prefix("manifest-sha256 "))
        .ok_or_else(|| bad(String::from("STATEMENT.note names no manifest")))?;
    let manifest_path = dir.join("MANIFEST.sha256");
    let manifest = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
    if mrv_shared::report::hex(&Sha256::digest(&manifest)) != want {
        return Err(bad(String::from("MANIFEST.sha256 is not the one signed")));
    }
    let manifest =
        String::from_utf8(manifest).map_err(|_| bad(String::from("manifest: not UTF-8")))?;
    let mut listed = std::collections::BTreeSet::new();
    for line in manifest.lines() {
        let (hash, rel) = line
            .split_once("  ")
            .ok_or_else(|| bad(format!("manifest line {line:?}")))?;
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad(format!("manifest path {rel:?}")));
        }
        let p = dir.join(rel);
        let bytes = std::fs::read(&p).map_err(|e| bad(format!("{rel}: {e}")))?;
        if mrv_shared::report::hex(&Sha256::digest(&bytes)) != hash {
            return Err(bad(format!("{rel}: SHA-256 differs from the manifest")));
        }
        listed.insert(rel.to_string());
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let d = dir.join(&rel);
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let r = rel.join(e.file_name());
            let name = r.to_string_lossy().into_owned();
            if e.file_type().map_err(io(&d))?.is_dir() {
                stack.push(r);
            } else if name != "MANIFEST.sha256"
                && name != "STATEMENT.note"
                && !listed.contains(&name)
            {
                return Err(bad(format!("{name}: in the pack but not in the manifest")));
            }
        }
    }
    Ok(VerifiedPack {
        text: text.to_string(),
        files: listed.len(),
    })
}

impl Table {
    /// The table as RFC 4180 CSV (header line first, CRLF line ends).
    pub fn csv(&self) -> String {
        let mut out = tables::csv_line(self.headers.iter().map(|h| tables::csv_field(h)));
        for r in &self.rows {
            out.push_str(&tables::csv_line(r.iter().map(tables::csv_cell)));
        }
        out
    }
}
