//! The statement's XLSX workbook (`rust_xlsxwriter`): one sheet per
//! [`Table`] in [`SHEETS`] order, header row bold and frozen. Exact amounts
//! are text cells (binary floating point would change them); counts and
//! whole tonnes are number cells (exact below 2^53; larger integers are
//! written as text).
//!
//! The Calculation sheet (a row per report and calculation) is written in
//! the writer's constant-memory mode: each row goes to a temporary file as
//! the next one starts, so a year of reports is never held as cells (its
//! strings are stored inline in the cells rather than in the shared string
//! table; readers such as openpyxl read both). The other sheets are small
//! and are written at the end ([`WorkbookWriter::finish`]).

use super::StatementError;
use super::tables::{CALCULATION_HEADERS, CALCULATION_SHEET, Cell, SHEETS, Table};
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use std::path::Path;

/// Largest integer an XLSX number cell (an IEEE double) holds exactly.
const EXACT_IN_F64: i128 = 1 << 53;

fn err(e: XlsxError) -> StatementError {
    StatementError::Workbook(e.to_string())
}

fn column(c: usize) -> Result<u16, StatementError> {
    u16::try_from(c).map_err(|_| StatementError::Workbook(String::from("too many columns")))
}

fn headers(ws: &mut Worksheet, headers: &[&str], bold: &Format) -> Result<(), StatementError> {
    for (c, h) in headers.iter().enumerate() {
        let c = column(c)?;
        ws.write_string_with_format(0, c, *h, bold).map_err(err)?;
        ws.set_column_width(c, (h.len().clamp(10, 40)) as f64)
            .map_err(err)?;
    }
    ws.set_freeze_panes(1, 0).map_err(err)?;
    Ok(())
}

fn row(ws: &mut Worksheet, r: u32, cells: &[Cell]) -> Result<(), StatementError> {
    for (c, cell) in cells.iter().enumerate() {
        let c = column(c)?;
        match cell {
            Cell::Text(s) => {
                ws.write_string(r, c, s).map_err(err)?;
            }
            Cell::Int(n) if n.abs() < EXACT_IN_F64 => {
                ws.write_number(r, c, *n as f64).map_err(err)?;
            }
            Cell::Int(n) => {
                ws.write_string(r, c, n.to_string()).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// The workbook being written: every sheet exists from the start, the
/// Calculation sheet takes its report rows one at a time.
pub struct WorkbookWriter {
    wb: Workbook,
    /// Index of the Calculation sheet.
    calculation: usize,
    /// Next row of the Calculation sheet.
    next_row: u32,
    bold: Format,
}

impl std::fmt::Debug for WorkbookWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkbookWriter")
            .field("next_row", &self.next_row)
            .finish_non_exhaustive()
    }
}

impl WorkbookWriter {
    /// A workbook with the sheets of [`SHEETS`], the Calculation sheet's
    /// headers written.
    pub fn new() -> Result<WorkbookWriter, StatementError> {
        let mut wb = Workbook::new();
        let bold = Format::new().set_bold();
        let mut calculation = None;
        for (i, name) in SHEETS.iter().enumerate() {
            let ws = if *name == CALCULATION_SHEET {
                calculation = Some(i);
                let ws = wb.add_worksheet_with_constant_memory().map_err(err)?;
                headers(ws, &CALCULATION_HEADERS, &bold)?;
                ws
            } else {
                wb.add_worksheet()
            };
            ws.set_name(*name).map_err(err)?;
        }
        Ok(WorkbookWriter {
            wb,
            calculation: calculation.expect("SHEETS names the Calculation sheet"),
            next_row: 1,
            bold,
        })
    }

    /// Appends a report row to the Calculation sheet.
    pub fn calculation_row(&mut self, cells: &[Cell]) -> Result<(), StatementError> {
        let r = self.next_row;
        let ws = self
            .wb
            .worksheet_from_index(self.calculation)
            .map_err(err)?;
        row(ws, r, cells)?;
        self.next_row = r
            .checked_add(1)
            .ok_or_else(|| StatementError::Workbook(String::from("too many rows")))?;
        Ok(())
    }

    /// Writes `tables` (in [`SHEETS`] order; the Calculation table's rows
    /// go after the streamed ones) and saves the workbook to `path`.
    pub fn finish(mut self, tables: &[Table], path: &Path) -> Result<(), StatementError> {
        for (i, table) in tables.iter().enumerate() {
            if SHEETS.get(i) != Some(&table.sheet) {
                return Err(StatementError::Workbook(format!(
                    "table {} is not sheet {i} of {SHEETS:?}",
                    table.sheet
                )));
            }
            if i == self.calculation {
                for cells in &table.rows {
                    self.calculation_row(cells)?;
                }
                continue;
            }
            let ws = self.wb.worksheet_from_index(i).map_err(err)?;
            headers(ws, &table.headers, &self.bold)?;
            for (r, cells) in table.rows.iter().enumerate() {
                let r = u32::try_from(r + 1)
                    .map_err(|_| StatementError::Workbook(String::from("too many rows")))?;
                row(ws, r, cells)?;
            }
        }
        self.wb.save(path).map_err(err)
    }
}
