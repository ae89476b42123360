//! RFC 4180 CSV (CRLF, quoting as needed) that a spreadsheet opens safely
//! and a terminal shows safely (`cat findings.csv`, `tail -F`).

use std::borrow::Cow;
use std::io::{self, Write};

use super::{Row, Sink, neutralise_terminal};

/// Rendered into a buffer of about this size, then written whole.
const CHUNK: usize = 256 * 1024;

/// RFC 4180 rows, the header once per stream.
#[derive(Debug)]
pub struct Csv {
    /// The first line of the append file this stream continues (its
    /// header; "" if it could not be read); `None` for a new stream.
    existing: Option<String>,
    header_done: bool,
    w: csv::Writer<Vec<u8>>,
}

/// RFC 4180: CRLF line ends, fields quoted as needed.
fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

impl Clone for Csv {
    fn clone(&self) -> Csv {
        let mut copy = Csv::new(self.existing.clone());
        copy.header_done = self.header_done;
        copy
    }
}

impl Csv {
    pub fn new(existing: Option<String>) -> Csv {
        Csv {
            header_done: existing.is_some(),
            existing,
            w: writer(),
        }
    }

    fn flush(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let bytes = std::mem::replace(&mut self.w, writer())
            .into_inner()
            .map_err(|e| e.into_error())?;
        out.write_all(&bytes)
    }

    fn header(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        if let Some(existing) = self.existing.take().filter(|e| !e.is_empty()) {
            // Rows under another header would be read as the wrong columns.
            let mut ours = csv::WriterBuilder::new().from_writer(Vec::new());
            ours.write_record(columns)?;
            let ours = String::from_utf8_lossy(&ours.into_inner().map_err(|e| e.into_error())?)
                .trim_end()
                .to_string();
            if existing != ours {
                // The file's first line is anyone's bytes: shown as the
                // table shows a value, never raw on the terminal.
                let shown = if existing.len() > 200 {
                    "a long header".into()
                } else {
                    super::neutralise_terminal(&existing)
                };
                return Err(io::Error::other(format!(
                    "its CSV header names other columns than this run writes ({shown}); append to a new file"
                )));
            }
        }
        if !self.header_done {
            self.header_done = true;
            self.w.write_record(columns)?;
            self.flush(out)?;
        }
        Ok(())
    }
}

impl Sink for Csv {
    fn begin(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        self.header(columns, out)
    }

    fn row(&mut self, row: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        let mut cells = Vec::new();
        row.each_cell(|c| cells.push(cell(c.text).into_owned()));
        self.w.write_record(&cells)?;
        if self.w.get_ref().len() >= CHUNK {
            self.flush(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.flush(out)
    }

    fn close(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        self.header(columns, out)
    }
}

/// A value as a CSV cell: the characters that must not reach a terminal
/// raw ([`super::is_hidden`]), and a backslash, in the visible form the
/// table shows (`\u{1b}`, `\\`), so that a crafted value cannot retitle or
/// clear the terminal of whoever reads the file with `cat`; then a formula
/// made text. Escaping comes first, so a leading tab, CR or NUL is already
/// visible text when the formula rule looks at the cell.
fn cell(value: &str) -> Cow<'_, str> {
    neutralise_formula(neutralise_terminal(value))
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
    fn another_files_header_is_never_echoed_raw() {
        let mut csv = Csv::new(Some("a,\u{1b}]0;pwned\u{7}\u{1b}[2J".into()));
        let err = csv
            .header(&["a", "b"], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("header names other columns"), "{err}");
        assert!(!err.contains(['\u{1b}', '\u{7}']), "{err:?}");
        assert!(err.contains("\\u{1b}]0;pwned\\u{7}"), "{err}");
    }

    #[test]
    fn controls_bidi_and_backslashes_are_shown_as_the_table_shows_them() {
        for (value, want) in [
            // ESC: a CSI that clears the screen.
            ("a\x1b[2Jb", "a\\u{1b}[2Jb"),
            // OSC 0 (set the window title), ended by BEL.
            ("\x1b]0;pwned\x07", "\\u{1b}]0;pwned\\u{7}"),
            ("\x07", "\\u{7}"),
            ("x\x7f", "x\\u{7f}"),
            // C1: NEL, and the one-byte CSI.
            ("a\u{85}b", "a\\u{85}b"),
            ("\u{9b}31m", "\\u{9b}31m"),
            // Bidi: right-to-left override, left-to-right isolate.
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("\u{2066}x", "\\u{2066}x"),
            // Line breaks inside a value, which would also split the row
            // for a line-based reader.
            ("a\r\nb", "a\\u{d}\\u{a}b"),
            // A backslash is doubled, so an escape cannot be forged.
            ("\\u{1b}", "\\\\u{1b}"),
            ("curl/8", "curl/8"),
        ] {
            assert_eq!(cell(value), want, "{value:?}");
            assert_eq!(
                cell(value),
                neutralise_terminal(value),
                "as the table shows it"
            );
        }
    }

    #[test]
    fn a_formula_is_still_made_text_after_escaping() {
        for (value, want) in [
            ("=HYPERLINK(\"x\")\x1b", "'=HYPERLINK(\"x\")\\u{1b}"),
            (" @SUM(A1)", "' @SUM(A1)"),
            ("-\u{202e}1", "'-\\u{202e}1"),
            // A tab, CR or NUL first is visible text once escaped.
            ("\t=1", "\\u{9}=1"),
            ("\r-1", "\\u{d}-1"),
            ("\0", "\\u{0}"),
            ("\n@x", "\\u{a}@x"),
        ] {
            assert_eq!(cell(value), want, "{value:?}");
        }
    }

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
