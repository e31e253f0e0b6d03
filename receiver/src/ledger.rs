//! The crediting ledger: what every accepted report's calculations claim,
//! indexed for totals, and the totals themselves.
//!
//! ## Entries
//!
//! A [`LedgerEntry`] is a pure function of an accepted report
//! ([`entry_of`]): its project, site, gateway, seq and period, the device
//! records (serial, class, calibration), and per calculation the
//! methodology, the bindings, the parameters, the inputs, the exact `re`,
//! `pe` and `er` (tCO2e, as the report states them: already recomputed and
//! checked by verification), the completeness per binding and the
//! exclusions; plus the report's events and the frames it gave up. The
//! archives write it in the same atomic step as the acceptance (PostgreSQL:
//! the same transaction; files: it is derived from the report file, which
//! is the atomic step, and rebuilt from the files at open), so the ledger
//! never holds a report the archive does not, nor misses one.
//!
//! ## Totals ([`totals`])
//!
//! Over a [`LedgerQuery`] (project, optional site, dates `from ..= to`):
//!
//! - a report **counts** when its whole period lies inside
//!   `[from 00:00Z, to + 1 day 00:00Z)`; a report overlapping a boundary
//!   counts in neither period and is listed in `straddling` (hourly reports
//!   never straddle a day);
//! - `re`, `pe`, `er` are summed **exactly** (rationals); the result is
//!   given exact, and rounded down (toward negative infinity) **once**, at
//!   the end: `decimal` to 6 decimals and `tonnes` to whole tonnes (the
//!   credit-issuable figure). No per-report or per-site rounding enters a
//!   total: the per-site and per-calculation subtotals are rounded from
//!   their own exact sums, and the total is *not* their sum of roundings;
//! - completeness over the period per (site, gateway, calculation,
//!   binding): samples expected / received / usable and gap time, summed
//!   over the counted reports; and per gateway the time of the period its
//!   counted reports cover (`covered_ms`) and do not (`uncovered_ms`:
//!   periods without an accepted report earn nothing);
//! - every exclusion and every given-up frame range of a counted report,
//!   and its events (all kinds) by report.
//!
//! [`totals`] over a slice and [`TotalsFold`] over a stream of entries (a
//! page at a time: [`crate::archive::Archive::ledger_page`]) are one
//! computation: the slice is sorted and folded.

use crate::archive::ArchiveError;
use mrv_shared::event::Event;
use mrv_shared::methodology::{MethodologyKind, Params, Ratio, RatioError};
use mrv_shared::report::VerifiedReport;
use mrv_shared::report::model::{Binding, Completeness, DeviceRecord, Exclusion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a ledger question cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A date that is not a real `YYYY-MM-DD` calendar date.
    #[error("{what}: {value:?} is not a YYYY-MM-DD date")]
    BadDate {
        /// Which argument.
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// `to` before `from`.
    #[error("period: to {to} is before from {from}")]
    EmptyPeriod {
        /// First day.
        from: String,
        /// Last day.
        to: String,
    },
    /// A stored amount that does not parse (the archive is damaged).
    #[error("report {report_id} calculation {calculation}: amount {value:?}: {why}")]
    BadAmount {
        /// Report.
        report_id: String,
        /// Calculation id.
        calculation: String,
        /// The text.
        value: String,
        /// Why.
        why: RatioError,
    },
    /// The exact sum does not fit 128-bit rationals.
    #[error("the exact total overflows 128-bit rationals ({0}); narrow the query")]
    Overflow(RatioError),
    /// The archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// A given-up frame range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenUp {
    /// Device.
    pub device: String,
    /// First seq given up.
    pub first: u64,
    /// Last seq given up.
    pub last: u64,
}

/// One calculation of an accepted report, as indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerCalculation {
    /// Calculation id on the site (`pv`).
    pub id: String,
    /// Methodology.
    pub methodology: MethodologyKind,
    /// Bindings (role, device, channel, quantity, group).
    pub bindings: Vec<Binding>,
    /// Parameters `{value, unit, source}`.
    pub parameters: Params,
    /// Inputs the calculator used (exact integers as text).
    pub inputs: BTreeMap<String, String>,
    /// Completeness per binding.
    pub completeness: Vec<Completeness>,
    /// Excluded devices and why.
    pub excluded: Vec<Exclusion>,
    /// Reference emissions, exact rational text, tCO2e.
    pub re: String,
    /// Project emissions, exact, tCO2e.
    pub pe: String,
    /// Emission reductions, exact, tCO2e.
    pub er: String,
}

/// One accepted report, as indexed (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// Project.
    pub project: String,
    /// Site.
    pub site: String,
    /// Gateway.
    pub gateway: String,
    /// Seq in the gateway's chain.
    pub seq: u64,
    /// Report id.
    pub report_id: String,
    /// Hex SHA-256 of the stored JWS.
    pub hash: String,
    /// Methodology reference text of the header (`TH_AM001 ver01.0`).
    pub methodology_ref: String,
    /// Period start (Unix ms).
    pub period_start_ms: u64,
    /// Period end (Unix ms, exclusive).
    pub period_end_ms: u64,
    /// Device records (serial, meter class, calibration).
    pub devices: Vec<DeviceRecord>,
    /// Calculations.
    pub calculations: Vec<LedgerCalculation>,
    /// Events of the report.
    pub events: Vec<Event>,
    /// Frames given up in this report.
    pub given_up: Vec<GivenUp>,
}

/// The ledger entry of an accepted report.
pub fn entry_of(v: &VerifiedReport) -> LedgerEntry {
    let r = &v.report;
    LedgerEntry {
        project: r.header.project.clone(),
        site: r.header.site.as_str().to_string(),
        gateway: r.header.gateway.clone(),
        seq: r.header.seq,
        report_id: r.header.report_id.clone(),
        hash: v.hash_hex(),
        methodology_ref: r.header.methodology.clone(),
        period_start_ms: r.header.period.start_ms,
        period_end_ms: r.header.period.end_ms,
        devices: r.devices.clone(),
        calculations: r
            .calculations
            .iter()
            .map(|c| LedgerCalculation {
                id: c.id.clone(),
                methodology: c.methodology,
                bindings: c.bindings.clone(),
                parameters: c.parameters.clone(),
                inputs: c.inputs.clone(),
                completeness: c.completeness.clone(),
                excluded: c.excluded.clone(),
                re: c.re.exact.clone(),
                pe: c.pe.exact.clone(),
                er: c.er.exact.clone(),
            })
            .collect(),
        events: r.events.clone(),
        given_up: r
            .continuity
            .iter()
            .flat_map(|c| {
                c.given_up.iter().map(|g| GivenUp {
                    device: c.device.as_str().to_string(),
                    first: g.first,
                    last: g.last,
                })
            })
            .collect(),
    }
}

/// Which reports a total covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerQuery {
    /// Project (`header.project`).
    pub project: String,
    /// Site, or every site of the project.
    pub site: Option<String>,
    /// First day, `YYYY-MM-DD` (inclusive).
    pub from: String,
    /// Last day, `YYYY-MM-DD` (inclusive).
    pub to: String,
    /// `from` 00:00 UTC, Unix ms.
    pub from_ms: u64,
    /// The day after `to`, 00:00 UTC, Unix ms (exclusive end).
    pub to_ms: u64,
}

const DAY_MS: u64 = 86_400_000;

impl LedgerQuery {
    /// The query for `project` (and `site`) over the days `from ..= to`.
    pub fn new(
        project: &str,
        site: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<LedgerQuery, LedgerError> {
        let day = |what: &'static str, s: &str| {
            mrv_shared::report::calc::date_start_ms(s)
                .and_then(|ms| u64::try_from(ms).ok())
                .ok_or_else(|| LedgerError::BadDate {
                    what,
                    value: s.to_string(),
                })
        };
        let from_ms = day("from", from)?;
        let to_ms = day("to", to)? + DAY_MS;
        if to_ms <= from_ms {
            return Err(LedgerError::EmptyPeriod {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        Ok(LedgerQuery {
            project: project.to_string(),
            site: site.map(str::to_string),
            from: from.to_string(),
            to: to.to_string(),
            from_ms,
            to_ms,
        })
    }

    /// True when `e` is of the project (and site) and its period overlaps
    /// the query's: what an archive returns for it.
    pub fn overlaps(&self, e: &LedgerEntry) -> bool {
        e.project == self.project
            && self.site.as_deref().is_none_or(|s| s == e.site)
            && e.period_start_ms < self.to_ms
            && e.period_end_ms > self.from_ms
    }

    /// True when `e`'s whole period lies inside the query's.
    pub fn contains(&self, e: &LedgerEntry) -> bool {
        self.overlaps(e) && e.period_start_ms >= self.from_ms && e.period_end_ms <= self.to_ms
    }
}

/// An amount: exact, and rounded down once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    /// Exact rational text (`n` or `n/d`), tCO2e.
    pub exact: String,
    /// Rounded toward negative infinity to 6 decimals, tCO2e.
    pub decimal: String,
    /// Rounded toward negative infinity to whole tonnes, tCO2e.
    pub tonnes: i128,
}

impl Total {
    /// `r` exact and rounded down once.
    pub fn of(r: Ratio) -> Result<Total, LedgerError> {
        Ok(Total {
            exact: r.to_string(),
            decimal: r.to_decimal_floor(6).map_err(LedgerError::Overflow)?,
            tonnes: r.floor(),
        })
    }
}

/// RE, PE and ER of a set of calculations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    /// Reference emissions.
    pub re: Total,
    /// Project emissions.
    pub pe: Total,
    /// Emission reductions.
    pub er: Total,
}

#[derive(Debug, Clone, Copy)]
struct Sum {
    re: Ratio,
    pe: Ratio,
    er: Ratio,
}

impl Default for Sum {
    fn default() -> Sum {
        Sum {
            re: Ratio::ZERO,
            pe: Ratio::ZERO,
            er: Ratio::ZERO,
        }
    }
}

impl Sum {
    fn add(&mut self, o: &Sum) -> Result<(), LedgerError> {
        let add = |a: Ratio, b: Ratio| a.checked_add(b).map_err(LedgerError::Overflow);
        self.re = add(self.re, o.re)?;
        self.pe = add(self.pe, o.pe)?;
        self.er = add(self.er, o.er)?;
        Ok(())
    }
    fn amounts(&self) -> Result<Amounts, LedgerError> {
        Ok(Amounts {
            re: Total::of(self.re)?,
            pe: Total::of(self.pe)?,
            er: Total::of(self.er)?,
        })
    }
}

/// Completeness of one binding over the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingCompleteness {
    /// Site.
    pub site: String,
    /// Gateway.
    pub gateway: String,
    /// Calculation id.
    pub calculation: String,
    /// Role.
    pub role: String,
    /// Device.
    pub device: String,
    /// Channel.
    pub channel: String,
    /// Counted reports that had this binding.
    pub reports: u64,
    /// Samples expected (`None` when some report had no expectation).
    pub expected: Option<u64>,
    /// Samples received.
    pub received: u64,
    /// Usable samples.
    pub usable: u64,
    /// Gap time inside the reports (`None` when some report had none).
    pub gap_ms: Option<u64>,
}

/// Coverage of the period by one gateway's counted reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCoverage {
    /// Site.
    pub site: String,
    /// Gateway.
    pub gateway: String,
    /// Counted reports.
    pub reports: u64,
    /// First and last counted seq.
    pub seqs: (u64, u64),
    /// Time of the period the counted reports cover.
    pub covered_ms: u64,
    /// Time of the period no counted report covers (earns nothing).
    pub uncovered_ms: u64,
}

/// A subtotal (per site, per calculation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subtotal {
    /// Site.
    pub site: String,
    /// Calculation id (`None`: every calculation of the site).
    pub calculation: Option<String>,
    /// Methodology of the calculation.
    pub methodology: Option<MethodologyKind>,
    /// Counted reports.
    pub reports: u64,
    /// Amounts, each rounded once from its own exact sum.
    pub amounts: Amounts,
}

/// An exclusion in a counted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionRow {
    /// Report.
    pub report_id: String,
    /// Calculation.
    pub calculation: String,
    /// Device.
    pub device: String,
    /// Reason.
    pub reason: String,
}

/// Events of a counted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// Report.
    pub report_id: String,
    /// The event.
    pub event: Event,
}

/// Frames given up in a counted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenUpRow {
    /// Report.
    pub report_id: String,
    /// The range.
    pub range: GivenUp,
}

/// The answer of a totals query (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// The query.
    pub query: LedgerQuery,
    /// How amounts are rounded (a fixed sentence).
    pub rounding: String,
    /// Reports counted.
    pub reports: u64,
    /// The period total.
    pub amounts: Amounts,
    /// Per site, then per (site, calculation).
    pub subtotals: Vec<Subtotal>,
    /// Per gateway.
    pub coverage: Vec<GatewayCoverage>,
    /// Per binding.
    pub completeness: Vec<BindingCompleteness>,
    /// Exclusions in counted reports.
    pub excluded: Vec<ExclusionRow>,
    /// Frames given up in counted reports.
    pub given_up: Vec<GivenUpRow>,
    /// Events of counted reports.
    pub events: Vec<EventRow>,
    /// Reports overlapping a boundary of the period (counted in neither).
    pub straddling: Vec<String>,
}

/// The rounding rule, as stated in every answer.
pub const ROUNDING: &str = "amounts are summed exactly; exact is the sum, decimal and tonnes round it toward negative infinity once (6 decimals; whole tonnes)";

fn parse_amount(e: &LedgerEntry, c: &LedgerCalculation, s: &str) -> Result<Ratio, LedgerError> {
    Ratio::parse_exact(s).map_err(|why| LedgerError::BadAmount {
        report_id: e.report_id.clone(),
        calculation: c.id.clone(),
        value: s.to_string(),
        why,
    })
}

/// Totals of `entries` (any order; those outside the query are ignored)
/// for `q`: [`TotalsFold`] over them in (site, gateway, seq) order.
pub fn totals(q: &LedgerQuery, entries: &[LedgerEntry]) -> Result<Totals, LedgerError> {
    let mut sorted: Vec<&LedgerEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| (&a.site, &a.gateway, a.seq).cmp(&(&b.site, &b.gateway, b.seq)));
    let mut fold = TotalsFold::new(q);
    for e in sorted {
        fold.add(e)?;
    }
    fold.finish()
}

/// Where a page of the ledger ends: the (site, gateway, seq) of its last
/// entry ([`crate::archive::Archive::ledger_page`] continues after it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LedgerKey {
    /// Site.
    pub site: String,
    /// Gateway.
    pub gateway: String,
    /// Seq.
    pub seq: u64,
}

impl LedgerKey {
    /// The key of `e`.
    pub fn of(e: &LedgerEntry) -> LedgerKey {
        LedgerKey {
            site: e.site.clone(),
            gateway: e.gateway.clone(),
            seq: e.seq,
        }
    }
}

/// What [`TotalsFold::add`] made of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Its whole period lies in the query's: counted.
    Yes,
    /// It overlaps a boundary: counted nowhere, listed in `straddling`.
    Straddling,
    /// Not of the query (project, site or period): ignored.
    Outside,
}

type BindingKey = (String, String, String, String, String, String);

/// [`totals`] as a fold, so that a statement over a year of reports never
/// holds the year's ledger entries at once: [`TotalsFold::add`] each entry
/// in (site, gateway, seq) order (the order archives return them in; the
/// sums do not depend on it, the order of the listed exclusions, frames and
/// events does), then [`TotalsFold::finish`]. Memory: the running exact
/// sums and one row per site, calculation, gateway and binding, plus the
/// listed exclusions, given-up ranges, events and straddling reports; not
/// the entries.
#[derive(Debug)]
pub struct TotalsFold {
    q: LedgerQuery,
    reports: u64,
    straddling: Vec<String>,
    total: Sum,
    per_site: BTreeMap<String, (u64, Sum)>,
    per_calc: BTreeMap<(String, String), (MethodologyKind, u64, Sum)>,
    coverage: BTreeMap<(String, String), GatewayCoverage>,
    completeness: BTreeMap<BindingKey, BindingCompleteness>,
    excluded: Vec<ExclusionRow>,
    given_up: Vec<GivenUpRow>,
    events: Vec<EventRow>,
}

impl TotalsFold {
    /// An empty fold for `q`.
    pub fn new(q: &LedgerQuery) -> TotalsFold {
        TotalsFold {
            q: q.clone(),
            reports: 0,
            straddling: Vec::new(),
            total: Sum::default(),
            per_site: BTreeMap::new(),
            per_calc: BTreeMap::new(),
            coverage: BTreeMap::new(),
            completeness: BTreeMap::new(),
            excluded: Vec::new(),
            given_up: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds `e`: counted when its whole period lies in the query's. Exact
    /// sums: nothing is rounded here.
    pub fn add(&mut self, e: &LedgerEntry) -> Result<Counted, LedgerError> {
        if !self.q.overlaps(e) {
            return Ok(Counted::Outside);
        }
        if !self.q.contains(e) {
            self.straddling.push(e.report_id.clone());
            return Ok(Counted::Straddling);
        }
        let mut report = Sum::default();
        for c in &e.calculations {
            let s = Sum {
                re: parse_amount(e, c, &c.re)?,
                pe: parse_amount(e, c, &c.pe)?,
                er: parse_amount(e, c, &c.er)?,
            };
            report.add(&s)?;
            let pc = self
                .per_calc
                .entry((e.site.clone(), c.id.clone()))
                .or_insert((c.methodology, 0, Sum::default()));
            pc.1 += 1;
            pc.2.add(&s)?;
            for b in &c.completeness {
                let k = (
                    e.site.clone(),
                    e.gateway.clone(),
                    c.id.clone(),
                    b.role.name().to_string(),
                    b.device.as_str().to_string(),
                    b.channel.as_str().to_string(),
                );
                let row = self
                    .completeness
                    .entry(k)
                    .or_insert_with(|| BindingCompleteness {
                        site: e.site.clone(),
                        gateway: e.gateway.clone(),
                        calculation: c.id.clone(),
                        role: b.role.name().to_string(),
                        device: b.device.as_str().to_string(),
                        channel: b.channel.as_str().to_string(),
                        reports: 0,
                        expected: Some(0),
                        received: 0,
                        usable: 0,
                        gap_ms: Some(0),
                    });
                row.reports += 1;
                row.expected = row.expected.zip(b.expected).map(|(a, b)| a + b);
                row.received += b.received;
                row.usable += b.usable;
                row.gap_ms = row.gap_ms.zip(b.gap_ms).map(|(a, b)| a + b);
            }
            for x in &c.excluded {
                self.excluded.push(ExclusionRow {
                    report_id: e.report_id.clone(),
                    calculation: c.id.clone(),
                    device: x.device.as_str().to_string(),
                    reason: x.reason.clone(),
                });
            }
        }
        self.total.add(&report)?;
        self.reports += 1;
        let ps = self.per_site.entry(e.site.clone()).or_default();
        ps.0 += 1;
        ps.1.add(&report)?;
        let cov = self
            .coverage
            .entry((e.site.clone(), e.gateway.clone()))
            .or_insert_with(|| GatewayCoverage {
                site: e.site.clone(),
                gateway: e.gateway.clone(),
                reports: 0,
                seqs: (e.seq, e.seq),
                covered_ms: 0,
                uncovered_ms: 0,
            });
        cov.reports += 1;
        cov.seqs = (cov.seqs.0.min(e.seq), cov.seqs.1.max(e.seq));
        cov.covered_ms += e.period_end_ms - e.period_start_ms;
        self.given_up.extend(e.given_up.iter().map(|g| GivenUpRow {
            report_id: e.report_id.clone(),
            range: g.clone(),
        }));
        self.events.extend(e.events.iter().map(|ev| EventRow {
            report_id: e.report_id.clone(),
            event: ev.clone(),
        }));
        Ok(Counted::Yes)
    }

    /// The totals: every exact sum rounded down once, here.
    pub fn finish(mut self) -> Result<Totals, LedgerError> {
        let span = self.q.to_ms - self.q.from_ms;
        let mut subtotals = Vec::new();
        for (site, (n, s)) in &self.per_site {
            subtotals.push(Subtotal {
                site: site.clone(),
                calculation: None,
                methodology: None,
                reports: *n,
                amounts: s.amounts()?,
            });
            for ((_, id), (m, n, s)) in self
                .per_calc
                .range((site.clone(), String::new())..)
                .take_while(|(k, _)| &k.0 == site)
            {
                subtotals.push(Subtotal {
                    site: site.clone(),
                    calculation: Some(id.clone()),
                    methodology: Some(*m),
                    reports: *n,
                    amounts: s.amounts()?,
                });
            }
        }
        self.straddling.sort();
        Ok(Totals {
            query: self.q,
            rounding: ROUNDING.to_string(),
            reports: self.reports,
            amounts: self.total.amounts()?,
            subtotals,
            coverage: self
                .coverage
                .into_values()
                .map(|mut c| {
                    c.uncovered_ms = span.saturating_sub(c.covered_ms);
                    c
                })
                .collect(),
            completeness: self.completeness.into_values().collect(),
            excluded: self.excluded,
            given_up: self.given_up,
            events: self.events,
            straddling: self.straddling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(site: &str, seq: u64, start: u64, end: u64, er: &str) -> LedgerEntry {
        LedgerEntry {
            project: String::from("P"),
            site: site.to_string(),
            gateway: format!("gw-{site}"),
            seq,
            report_id: format!("gw-{site}-{seq:012}"),
            hash: String::new(),
            methodology_ref: String::new(),
            period_start_ms: start,
            period_end_ms: end,
            devices: vec![],
            calculations: vec![LedgerCalculation {
                id: String::from("pv"),
                methodology: MethodologyKind::SolarPv,
                bindings: vec![],
                parameters: Params::new(),
                inputs: BTreeMap::new(),
                completeness: vec![],
                excluded: vec![],
                re: er.to_string(),
                pe: String::from("0"),
                er: er.to_string(),
            }],
            events: vec![],
            given_up: vec![],
        }
    }

    #[test]
    fn a_total_is_the_exact_sum_rounded_down_once_not_a_sum_of_roundings() {
        let q = LedgerQuery::new("P", None, "1970-01-01", "1970-01-01").expect("query");
        // Three reports of 2/3 t each: 2 t exactly. Rounding each first
        // would give 0.666666 x 3 = 1.999998 and 0 whole tonnes.
        let e: Vec<_> = (1..=3)
            .map(|i| entry("a", i, (i - 1) * 3_600_000, i * 3_600_000, "2/3"))
            .collect();
        let t = totals(&q, &e).expect("totals");
        assert_eq!(t.amounts.er.exact, "2");
        assert_eq!(t.amounts.er.decimal, "2.000000");
        assert_eq!(t.amounts.er.tonnes, 2);
        assert_eq!(t.coverage[0].covered_ms, 3 * 3_600_000);
        assert_eq!(t.coverage[0].uncovered_ms, 21 * 3_600_000);
    }

    #[test]
    fn negative_totals_round_toward_negative_infinity() {
        let q = LedgerQuery::new("P", None, "1970-01-01", "1970-01-01").expect("query");
        let t = totals(&q, &[entry("a", 1, 0, 1000, "-1/3")]).expect("totals");
        assert_eq!(t.amounts.er.decimal, "-0.333334");
        assert_eq!(t.amounts.er.tonnes, -1);
    }

    #[test]
    fn reports_over_a_boundary_count_nowhere_and_are_listed() {
        let q = LedgerQuery::new("P", Some("a"), "1970-01-02", "1970-01-02").expect("query");
        let e = vec![
            entry("a", 1, DAY_MS - 1000, DAY_MS + 1000, "5"),
            entry("a", 2, DAY_MS + 1000, DAY_MS + 2000, "1/7"),
            entry("b", 1, DAY_MS + 1000, DAY_MS + 2000, "9"),
            entry("a", 3, 2 * DAY_MS, 2 * DAY_MS + 5, "9"),
        ];
        let t = totals(&q, &e).expect("totals");
        assert_eq!(t.reports, 1);
        assert_eq!(t.amounts.er.exact, "1/7");
        assert_eq!(t.straddling, vec![String::from("gw-a-000000000001")]);
    }

    #[test]
    fn dates_must_be_real_and_ordered() {
        assert!(matches!(
            LedgerQuery::new("P", None, "2026-02-30", "2026-03-01"),
            Err(LedgerError::BadDate { what: "from", .. })
        ));
        assert!(matches!(
            LedgerQuery::new("P", None, "2026-03-02", "2026-03-01"),
            Err(LedgerError::EmptyPeriod { .. })
        ));
        let q = LedgerQuery::new("P", None, "2026-03-01", "2026-03-01").expect("one day");
        assert_eq!(q.to_ms - q.from_ms, DAY_MS);
    }
}
