//! The statement's tables, one per sheet (and CSV file), built from the
//! totals and the counted ledger entries: pure, so the workbook and the CSV
//! files cannot disagree.
//!
//! Amounts are written as exact rational text (`n/d`, tCO2e); the period
//! total adds its two roundings (6 decimals, whole tonnes), each taken
//! once from the exact sum. Nothing per report is rounded into a total.

use crate::ledger::{LedgerEntry, Totals};
use std::collections::BTreeMap;

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

/// Every table of the statement.
pub fn tables(totals: &Totals, counted: &[&LedgerEntry]) -> Vec<Table> {
    vec![
        summary(totals, counted),
        parameters(counted),
        calculation(totals, counted),
        completeness(totals),
        gaps_and_events(totals, counted),
    ]
}

fn summary(tot: &Totals, counted: &[&LedgerEntry]) -> Table {
    let q = &tot.query;
    let mut refs: Vec<&str> = counted.iter().map(|e| e.methodology_ref.as_str()).collect();
    refs.sort_unstable();
    refs.dedup();
    let mut sites: Vec<&str> = counted.iter().map(|e| e.site.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    let a = &tot.amounts;
    let rows = vec![
        vec![t("Project"), t(&q.project)],
        vec![t("Site"), t(q.site.as_deref().unwrap_or("(every site)"))],
        vec![t("Sites counted"), t(sites.join(", "))],
        vec![t("Monitoring period from (UTC, inclusive)"), t(&q.from)],
        vec![t("Monitoring period to (UTC, inclusive)"), t(&q.to)],
        vec![t("Methodology"), t(refs.join("; "))],
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

fn equipment(counted: &[&LedgerEntry], site: &str, devices: &[String]) -> String {
    // Distinct device records over the period, per device.
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in counted.iter().filter(|e| e.site == site) {
        for d in e
            .devices
            .iter()
            .filter(|d| devices.iter().any(|x| x == d.id.as_str()))
        {
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
            let v = seen.entry(d.id.as_str()).or_default();
            if !v.contains(&text) {
                v.push(text);
            }
        }
    }
    seen.iter()
        .map(|(id, v)| format!("{id}: {}", v.join(" | ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn parameters(counted: &[&LedgerEntry]) -> Table {
    // Monitored (option C) inputs, then fixed parameters, per (site, calculation).
    struct Acc {
        methodology: String,
        reports: u64,
        inputs: BTreeMap<String, (i128, bool, String)>,
        params: BTreeMap<String, Vec<(String, String, String)>>,
        bindings: BTreeMap<String, Vec<String>>,
        devices: Vec<String>,
    }
    let mut by: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for e in counted {
        for c in &e.calculations {
            let a = by
                .entry((e.site.clone(), c.id.clone()))
                .or_insert_with(|| Acc {
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
    let mut rows = Vec::new();
    let mut no = 0u64;
    for ((site, calc), a) in &by {
        let bindings: Vec<String> = a.bindings.values().flatten().cloned().collect();
        let equipment = equipment(counted, site, &a.devices);
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

fn calculation(tot: &Totals, counted: &[&LedgerEntry]) -> Table {
    let mut rows = Vec::new();
    for e in counted {
        for c in &e.calculations {
            rows.push(vec![
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
            ]);
        }
    }
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
    rows.extend([exact, dec, ton]);
    Table {
        sheet: "Calculation",
        file: "calculation",
        headers: vec![
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
        ],
        rows,
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

fn gaps_and_events(tot: &Totals, counted: &[&LedgerEntry]) -> Table {
    let q = &tot.query;
    let mut rows = Vec::new();
    // Time of the period no counted report of a gateway covers.
    let mut by_gw: BTreeMap<(&str, &str), Vec<(u64, u64)>> = BTreeMap::new();
    for e in counted {
        by_gw
            .entry((e.site.as_str(), e.gateway.as_str()))
            .or_default()
            .push((e.period_start_ms, e.period_end_ms));
    }
    for ((site, gw), mut periods) in by_gw {
        periods.sort_unstable();
        let mut at = q.from_ms;
        for (s, e) in periods.into_iter().chain([(q.to_ms, q.to_ms)]) {
            if s > at {
                rows.push(vec![
                    t("no_report"),
                    t(site),
                    t(gw),
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
    let site_of: BTreeMap<&str, (&str, &str)> = counted
        .iter()
        .map(|e| (e.report_id.as_str(), (e.site.as_str(), e.gateway.as_str())))
        .collect();
    let where_ = |r: &str| site_of.get(r).copied().unwrap_or(("", ""));
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
