//! The statement's tables, one per sheet (and CSV file), built by one
//! fold over the ledger entries ([`TablesFold`]): pure, so the workbook and
//! the CSV files cannot disagree.
//!
//! Only the Calculation table grows with the reports (a row per report and
//! calculation): [`TablesFold::add`] returns an entry's rows for the writer
//! to stream out, and keeps nothing of them. The other tables are
//! aggregates (per site, calculation, binding, gateway) plus the listed
//! exclusions, given-up frames and events, built at [`TablesFold::finish`].
//!
//! Amounts are written as exact rational text (`n/d`, tCO2e); the period
//! total adds its two roundings (6 decimals, whole tonnes), each taken
//! once from the exact sum. Nothing per report is rounded into a total.

use crate::ledger::{Counted, LedgerEntry, LedgerError, LedgerQuery, Totals, TotalsFold};
use std::collections::{BTreeMap, BTreeSet};

/// A cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Text (exact amounts are text: no binary floating point).
    Text(String),
    /// An integer (counts, whole tonnes, samples).
    Int(i128),
}

fn t(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn n(v: impl Into<i128>) -> Cell {
    Cell::Int(v.into())
}

fn opt(v: Option<u64>) -> Cell {
    v.map_or_else(|| t("n/a"), n)
}

/// A table: a sheet of the workbook and a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Sheet name.
    pub sheet: &'static str,
    /// CSV file stem.
    pub file: &'static str,
    /// Column headers.
    pub headers: Vec<&'static str>,
    /// Rows.
    pub rows: Vec<Vec<Cell>>,
}

/// One RFC 4180 CSV field: quoted when it holds a comma, quote or line end.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A cell as a CSV field.
pub fn csv_cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) => csv_field(s),
        Cell::Int(n) => n.to_string(),
    }
}

/// One CSV line of `fields` (CRLF end).
pub fn csv_line(fields: impl Iterator<Item = String>) -> String {
    fields.collect::<Vec<_>>().join(",") + "\r\n"
}

/// Row labels of the period total in the Calculation table (column A).
pub const TOTAL_EXACT: &str = "Period total (exact sum)";
/// Label of the 6-decimal rounding of the total.
pub const TOTAL_DECIMAL: &str = "Period total, rounded down once (6 decimals)";
/// Label of the whole-tonne rounding of the total.
pub const TOTAL_TONNES: &str = "Period total, rounded down once (whole tonnes)";

/// RFC 3339 UTC text of Unix ms (`2026-01-01T00:00:00Z`; ms shown when not 0).
pub fn utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = ms % 1000;
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

fn unit_of_input(name: &str) -> &'static str {
    if name.ends_with("_wh") {
        "Wh"
    } else if name.ends_with("_ml") {
        "mL"
    } else if name.starts_with("observed_ms") {
        "ms"
    } else {
        "1"
    }
}

/// Inputs that add up over reports (energies, volumes, observed time);
/// the others (cumulative drainage events, tube counts) are stated as of
/// the last report.
fn additive(name: &str) -> bool {
    name.ends_with("_wh") || name.ends_with("_ml") || name.starts_with("observed_ms")
}

/// Sheet names, in workbook order (the Calculation sheet is streamed).
pub const SHEETS: [&str; 5] = [
    "Summary",
    "Parameters",
    CALCULATION_SHEET,
    "Completeness",
    "Gaps and events",
];

/// The sheet whose report rows are streamed ([`TablesFold::add`]).
pub const CALCULATION_SHEET: &str = "Calculation";

/// CSV file stem of the Calculation table.
pub const CALCULATION_FILE: &str = "calculation";

/// Columns of the Calculation table.
pub const CALCULATION_HEADERS: [&str; 11] = [
    "Site",
    "Gateway",
    "Seq",
    "Report",
    "Period start (UTC)",
    "Period end (UTC)",
    "Calculation",
    "Methodology",
    "RE (tCO2e, exact)",
    "PE (tCO2e, exact)",
    "ER (tCO2e, exact)",
];

/// Monitored inputs and fixed parameters of one (site, calculation).
#[derive(Debug)]
struct ParameterAcc {
    methodology: String,
    reports: u64,
    inputs: BTreeMap<String, (i128, bool, String)>,
    params: BTreeMap<String, Vec<(String, String, String)>>,
    bindings: BTreeMap<String, Vec<String>>,
    devices: Vec<String>,
}

/// The statement's tables as a fold over ledger entries in (site, gateway,
/// seq) order (see the module doc); the totals are [`TotalsFold`]'s.
#[derive(Debug)]
pub struct TablesFold {
    totals: TotalsFold,
    methodology_refs: BTreeSet<String>,
    sites: BTreeSet<String>,
    parameters: BTreeMap<(String, String), ParameterAcc>,
    /// Distinct device records (text) per site and device, first seen first.
    equipment: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Periods of the counted reports per (site, gateway): 16 bytes a report.
    periods: BTreeMap<(String, String), Vec<(u64, u64)>>,
    /// (site, gateway) of the counted reports that have listed rows
    /// (exclusions, given-up frames, events).
    site_of: BTreeMap<String, (String, String)>,
}

impl TablesFold {
    /// An empty fold for `q`.
    pub fn new(q: &LedgerQuery) -> TablesFold {
        TablesFold {
            totals: TotalsFold::new(q),
            methodology_refs: BTreeSet::new(),
            sites: BTreeSet::new(),
            parameters: BTreeMap::new(),
            equipment: BTreeMap::new(),
            periods: BTreeMap::new(),
            site_of: BTreeMap::new(),
        }
    }

    /// Adds `e`; when it is counted, its rows of the Calculation table
    /// (one per calculation), which the fold does not keep.
    pub fn add(&mut self, e: &LedgerEntry) -> Result<Option<Vec<Vec<Cell>>>, LedgerError> {
        if self.totals.add(e)? != Counted::Yes {
            return Ok(None);
        }
        self.methodology_refs.insert(e.methodology_ref.clone());
        self.sites.insert(e.site.clone());
        self.add_parameters(e);
        let site = self.equipment.entry(e.site.clone()).or_default();
        for d in &e.devices {
            let cal = d.calibration.as_ref().map_or_else(
                || String::from("no calibration record"),
                |c| {
                    format!(
                        "calibration {} on {}, due {}",
                        c.certificate, c.calibrated_on, c.due_on
                    )
                },
            );
            let text = format!("serial {}, class {}, {cal}", d.serial, d.meter_class);
            let v = site.entry(d.id.as_str().to_string()).or_default();
            if !v.contains(&text) {
                v.push(text);
            }
        }
        self.periods
            .entry((e.site.clone(), e.gateway.clone()))
            .or_default()
            .push((e.period_start_ms, e.period_end_ms));
        if !e.events.is_empty()
            || !e.given_up.is_empty()
            || e.calculations.iter().any(|c| !c.excluded.is_empty())
        {
            self.site_of
                .insert(e.report_id.clone(), (e.site.clone(), e.gateway.clone()));
        }
        Ok(Some(
            e.calculations
                .iter()
                .map(|c| {
                    vec![
                        t(&e.site),
                        t(&e.gateway),
                        n(e.seq),
                        t(&e.report_id),
                        t(utc(e.period_start_ms)),
                        t(utc(e.period_end_ms)),
                        t(&c.id),
                        t(c.methodology.name()),
                        t(&c.re),
                        t(&c.pe),
                        t(&c.er),
                    ]
                })
                .collect(),
        ))
    }

    fn add_parameters(&mut self, e: &LedgerEntry) {
        for c in &e.calculations {
            let a = self
                .parameters
                .entry((e.site.clone(), c.id.clone()))
                .or_insert_with(|| ParameterAcc {
                    methodology: c.methodology.name().to_string(),
                    reports: 0,
                    inputs: BTreeMap::new(),
                    params: BTreeMap::new(),
                    bindings: BTreeMap::new(),
                    devices: Vec::new(),
                });
            a.reports += 1;
            for (k, v) in &c.inputs {
                let val: Option<i128> = v.parse().ok();
                let slot = a
                    .inputs
                    .entry(k.clone())
                    .or_insert((0, true, String::new()));
                match val {
                    Some(x) if additive(k) => slot.0 += x,
                    Some(x) => slot.0 = x,
                    None => slot.1 = false,
                }
                slot.2 = v.clone();
            }
            for (k, p) in &c.parameters {
                let v = a.params.entry(k.clone()).or_default();
                let rec = (p.value.clone(), p.unit.clone(), p.source.clone());
                if !v.contains(&rec) {
                    v.push(rec);
                }
            }
            for b in &c.bindings {
                let text = format!(
                    "{} {}/{} ({})",
                    b.role.name(),
                    b.device.as_str(),
                    b.channel.as_str(),
                    b.quantity.name()
                );
                let v = a.bindings.entry(b.role.name().to_string()).or_default();
                if !v.contains(&text) {
                    v.push(text);
                }
                if !a.devices.iter().any(|d| d == b.device.as_str()) {
                    a.devices.push(b.device.as_str().to_string());
                }
            }
        }
    }

    /// The totals and every table, in [`SHEETS`] order. The Calculation
    /// table holds only its period-total rows here: its report rows were
    /// returned by [`TablesFold::add`] and go before them.
    pub fn finish(self) -> Result<(Totals, Vec<Table>), LedgerError> {
        let totals = self.totals.finish()?;
        let tables = vec![
            summary(&totals, &self.methodology_refs, &self.sites),
            parameters(&self.parameters, &self.equipment),
            calculation_totals(&totals),
            completeness(&totals),
            gaps_and_events(&totals, self.periods, &self.site_of),
        ];
        Ok((totals, tables))
    }
}

/// Every table of the statement over `entries` (any order), the
/// Calculation table whole: [`TablesFold`] in memory (for small periods and
/// tests; the pack streams).
pub fn tables(
    q: &LedgerQuery,
    entries: &[LedgerEntry],
) -> Result<(Totals, Vec<Table>), LedgerError> {
    let mut sorted: Vec<&LedgerEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| (&a.site, &a.gateway, a.seq).cmp(&(&b.site, &b.gateway, b.seq)));
    let mut fold = TablesFold::new(q);
    let mut rows = Vec::new();
    for e in sorted {
        rows.extend(fold.add(e)?.unwrap_or_default());
    }
    let (totals, mut tables) = fold.finish()?;
    for table in tables.iter_mut().filter(|t| t.sheet == CALCULATION_SHEET) {
        rows.append(&mut table.rows);
        table.rows = std::mem::take(&mut rows);
    }
    Ok((totals, tables))
}

fn summary(tot: &Totals, refs: &BTreeSet<String>, sites: &BTreeSet<String>) -> Table {
    let q = &tot.query;
    let join = |s: &BTreeSet<String>, sep: &str| s.iter().cloned().collect::<Vec<_>>().join(sep);
    let a = &tot.amounts;
    let rows = vec![
        vec![t("Project"), t(&q.project)],
        vec![t("Site"), t(q.site.as_deref().unwrap_or("(every site)"))],
        vec![t("Sites counted"), t(join(sites, ", "))],
        vec![t("Monitoring period from (UTC, inclusive)"), t(&q.from)],
        vec![t("Monitoring period to (UTC, inclusive)"), t(&q.to)],
        vec![t("Methodology"), t(join(refs, "; "))],
        vec![t("Reports counted"), n(tot.reports)],
        vec![
            t("Reports over a period boundary (not counted)"),
            n(tot.straddling.len() as u64),
        ],
        vec![t("RE exact (tCO2e)"), t(&a.re.exact)],
        vec![t("PE exact (tCO2e)"), t(&a.pe.exact)],
        vec![t("ER exact (tCO2e)"), t(&a.er.exact)],
        vec![
            t("ER rounded down once, 6 decimals (tCO2e)"),
            t(&a.er.decimal),
        ],
        vec![
            t("ER rounded down once, whole tonnes (tCO2e)"),
            n(a.er.tonnes),
        ],
        vec![t("Rounding"), t(&tot.rounding)],
    ];
    Table {
        sheet: "Summary",
        file: "summary",
        headers: vec!["Item", "Value"],
        rows,
    }
}

/// The measuring equipment of `devices` at a site: their distinct records.
fn equipment(site: Option<&BTreeMap<String, Vec<String>>>, devices: &[String]) -> String {
    site.into_iter()
        .flatten()
        .filter(|(id, _)| devices.iter().any(|d| d == *id))
        .map(|(id, v)| format!("{id}: {}", v.join(" | ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn parameters(
    by: &BTreeMap<(String, String), ParameterAcc>,
    equipment_by_site: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
) -> Table {
    // Monitored (option C) inputs, then fixed parameters, per (site, calculation).
    let mut rows = Vec::new();
    let mut no = 0u64;
    for ((site, calc), a) in by {
        let bindings: Vec<String> = a.bindings.values().flatten().cloned().collect();
        let equipment = equipment(equipment_by_site.get(site), &a.devices);
        for (k, (sum, ok, last)) in &a.inputs {
            no += 1;
            let (value, how) = if !ok {
                (t(last), "as of the last report (not an integer)")
            } else if additive(k) {
                (n(*sum), "sum over the counted reports")
            } else {
                (n(*sum), "as of the last counted report")
            };
            rows.push(vec![
                n(no),
                t(site),
                t(calc),
                t(&a.methodology),
                t(k),
                t(format!(
                    "Monitored input of {calc} ({}), {how}, {} reports",
                    a.methodology, a.reports
                )),
                value,
                t(unit_of_input(k)),
                t("Option C (project participants' own metering, device-signed)"),
                t(format!(
                    "Signed monitoring reports; bindings: {}",
                    bindings.join("; ")
                )),
                t(&equipment),
            ]);
        }
        for (k, vals) in &a.params {
            no += 1;
            let changed = vals.len() > 1;
            rows.push(vec![
                n(no),
                t(site),
                t(calc),
                t(&a.methodology),
                t(k),
                t(if changed {
                    "Fixed ex ante parameter (CHANGED within the period: every value listed)"
                } else {
                    "Fixed ex ante parameter"
                }),
                t(vals
                    .iter()
                    .map(|v| v.0.clone())
                    .collect::<Vec<_>>()
                    .join(" | ")),
                t(vals
                    .iter()
                    .map(|v| v.1.clone())
                    .collect::<Vec<_>>()
                    .join(" | ")),
                t("Fixed ex ante (default value)"),
                t(vals
                    .iter()
                    .map(|v| v.2.clone())
                    .collect::<Vec<_>>()
                    .join(" | ")),
                t("n/a"),
            ]);
        }
    }
    Table {
        sheet: "Parameters",
        file: "parameters",
        headers: vec![
            "No.",
            "Site",
            "Calculation",
            "Methodology",
            "Parameter",
            "Description of data",
            "Value",
            "Unit",
            "Monitoring option",
            "Source of data",
            "Measuring equipment (serial, class, calibration)",
        ],
        rows,
    }
}

/// The Calculation table's period-total rows (its report rows are streamed).
fn calculation_totals(tot: &Totals) -> Table {
    let a = &tot.amounts;
    let label = |s: &str| {
        let mut r = vec![t(s)];
        r.extend((0..7).map(|_| t("")));
        r
    };
    let mut exact = label(TOTAL_EXACT);
    exact.extend([t(&a.re.exact), t(&a.pe.exact), t(&a.er.exact)]);
    let mut dec = label(TOTAL_DECIMAL);
    dec.extend([t(&a.re.decimal), t(&a.pe.decimal), t(&a.er.decimal)]);
    let mut ton = label(TOTAL_TONNES);
    ton.extend([n(a.re.tonnes), n(a.pe.tonnes), n(a.er.tonnes)]);
    Table {
        sheet: CALCULATION_SHEET,
        file: CALCULATION_FILE,
        headers: CALCULATION_HEADERS.to_vec(),
        rows: vec![exact, dec, ton],
    }
}

fn completeness(tot: &Totals) -> Table {
    let rows = tot
        .completeness
        .iter()
        .map(|c| {
            vec![
                t(&c.site),
                t(&c.gateway),
                t(&c.calculation),
                t(&c.role),
                t(&c.device),
                t(&c.channel),
                n(c.reports),
                opt(c.expected),
                n(c.received),
                n(c.usable),
                opt(c.gap_ms),
            ]
        })
        .collect();
    Table {
        sheet: "Completeness",
        file: "completeness",
        headers: vec![
            "Site",
            "Gateway",
            "Calculation",
            "Role",
            "Device",
            "Channel",
            "Reports",
            "Samples expected",
            "Samples received",
            "Samples usable",
            "Gap time in reports (ms)",
        ],
        rows,
    }
}

fn gaps_and_events(
    tot: &Totals,
    periods: BTreeMap<(String, String), Vec<(u64, u64)>>,
    site_of: &BTreeMap<String, (String, String)>,
) -> Table {
    let q = &tot.query;
    let mut rows = Vec::new();
    // Time of the period no counted report of a gateway covers.
    for ((site, gw), mut periods) in periods {
        periods.sort_unstable();
        let mut at = q.from_ms;
        for (s, e) in periods.into_iter().chain([(q.to_ms, q.to_ms)]) {
            if s > at {
                rows.push(vec![
                    t("no_report"),
                    t(&site),
                    t(&gw),
                    t(""),
                    t(""),
                    t(utc(at)),
                    t(utc(s)),
                    t(format!(
                        "{} ms without an accepted report: earns nothing",
                        s - at
                    )),
                ]);
            }
            at = at.max(e);
        }
    }
    let where_ = |r: &str| {
        site_of
            .get(r)
            .map_or(("", ""), |(s, g)| (s.as_str(), g.as_str()))
    };
    for g in &tot.given_up {
        let (s, gw) = where_(&g.report_id);
        rows.push(vec![
            t("frames_given_up"),
            t(s),
            t(gw),
            t(&g.report_id),
            t(&g.range.device),
            t(g.range.first.to_string()),
            t(g.range.last.to_string()),
            t("frame seqs given up (earn nothing)"),
        ]);
    }
    for x in &tot.excluded {
        let (s, gw) = where_(&x.report_id);
        rows.push(vec![
            t("excluded"),
            t(s),
            t(gw),
            t(&x.report_id),
            t(&x.device),
            t(""),
            t(""),
            t(format!("{}: {}", x.calculation, x.reason)),
        ]);
    }
    for ev in &tot.events {
        let (s, gw) = where_(&ev.report_id);
        rows.push(vec![
            t(ev.event.kind.name()),
            t(s),
            t(gw),
            t(&ev.report_id),
            t(ev.event.device.as_ref().map(|d| d.as_str()).unwrap_or("")),
            t(utc(ev.event.time_ms)),
            t(""),
            t(&ev.event.detail),
        ]);
    }
    for r in &tot.straddling {
        rows.push(vec![
            t("over_period_boundary"),
            t(""),
            t(""),
            t(r),
            t(""),
            t(""),
            t(""),
            t("report overlaps the period's start or end: counted in neither period"),
        ]);
    }
    Table {
        sheet: "Gaps and events",
        file: "gaps_and_events",
        headers: vec![
            "Kind", "Site", "Gateway", "Report", "Device", "From", "To", "Detail",
        ],
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_is_rfc3339() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_764_115_200_000), "2025-11-26T00:00:00Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
