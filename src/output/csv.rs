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

/// A cell that a spreadsheet would evaluate as a formula gets a leading
/// `'`, which spreadsheets show as text (OWASP's CSV injection advice,
/// ASVS 5.0 1.2.10): one that starts with `=`, `+`, `-`, `@`, tab, carriage
/// return or NUL, and one where blanks (space, tab, CR, LF) come before
/// `=`, `+`, `-` or `@`, which some spreadsheets skip.
pub fn neutralise_formula(cell: Cow<'_, str>) -> Cow<'_, str> {
    let bytes = cell.as_bytes();
    let first_not_blank = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    let risky = matches!(bytes.first(), Some(b'\t' | b'\r' | b'\0'))
        || matches!(first_not_blank, Some(b'=' | b'+' | b'-' | b'@'));
    if risky {
        Cow::Owned(format!("'{cell}"))
    } else {
        cell
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
            ("\rx", "'\rx"),
            ("\0x", "'\0x"),
            ("\0", "'\0"),
            // Blanks before a formula character.
            (" =1+1", "' =1+1"),
            ("  +1", "'  +1"),
            ("\n-1", "'\n-1"),
            ("\r\n@SUM(A1)", "'\r\n@SUM(A1)"),
            (" \t\r\n=x", "' \t\r\n=x"),
            // Not formulas: text first, or blanks alone, or other blanks.
            ("curl/8", "curl/8"),
            ("0", "0"),
            ("", ""),
            (" ", " "),
            ("\n", "\n"),
            ("a=1", "a=1"),
            (" a-1", " a-1"),
            ("x\0", "x\0"),
            ("\u{b}=1", "\u{b}=1"),
        ] {
            assert_eq!(neutralise_formula(Cow::Borrowed(cell)), want);
        }
    }
}
