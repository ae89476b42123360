//! RFC 4180 CSV (CRLF, quoting as needed) that a spreadsheet opens safely.

use std::borrow::Cow;
use std::io::{self, Write};

use super::Rows;

pub fn write(rows: &Rows<'_>, out: &mut dyn Write, header: bool) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    if header {
        w.write_record(rows.header())?;
    }
    for row in rows.iter() {
        w.write_record(rows.cells(&row).map(|c| neutralise_formula(c).into_owned()))?;
    }
    w.flush()
}

/// A cell that a spreadsheet would evaluate as a formula (`=`, `+`, `-`,
/// `@`, or a leading tab or carriage return, per OWASP's CSV injection
/// advice) gets a leading `'`, which spreadsheets show as text.
pub fn neutralise_formula(cell: Cow<'_, str>) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{cell}")),
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        for (cell, want) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("curl/8", "curl/8"),
            ("0", "0"),
        ] {
            assert_eq!(neutralise_formula(Cow::Borrowed(cell)), want);
        }
    }
}
