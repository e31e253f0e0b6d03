//! The statement's XLSX workbook (`rust_xlsxwriter`): one sheet per
//! [`Table`], header row bold and frozen. Exact amounts are text cells
//! (binary floating point would change them); counts and whole tonnes are
//! number cells (exact below 2^53; larger integers are written as text).

use super::StatementError;
use super::tables::{Cell, Table};
use rust_xlsxwriter::{Format, Workbook};

/// Largest integer an XLSX number cell (an IEEE double) holds exactly.
const EXACT_IN_F64: i128 = 1 << 53;

/// The workbook of `tables`, as bytes.
pub fn workbook(tables: &[Table]) -> Result<Vec<u8>, StatementError> {
    let err = |e: rust_xlsxwriter::XlsxError| StatementError::Workbook(e.to_string());
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    for table in tables {
        let ws = wb.add_worksheet();
        ws.set_name(table.sheet).map_err(err)?;
        for (c, h) in table.headers.iter().enumerate() {
            let c = u16::try_from(c)
                .map_err(|_| StatementError::Workbook(String::from("too many columns")))?;
            ws.write_string_with_format(0, c, *h, &bold).map_err(err)?;
            ws.set_column_width(c, (h.len().clamp(10, 40)) as f64)
                .map_err(err)?;
        }
        ws.set_freeze_panes(1, 0).map_err(err)?;
        for (r, row) in table.rows.iter().enumerate() {
            let r = u32::try_from(r + 1)
                .map_err(|_| StatementError::Workbook(String::from("too many rows")))?;
            for (c, cell) in row.iter().enumerate() {
                let c = u16::try_from(c)
                    .map_err(|_| StatementError::Workbook(String::from("too many columns")))?;
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
        }
    }
    wb.save_to_buffer().map_err(err)
}
