//! Aligned columns for a terminal. Values are attacker-controlled, so every
//! control character, bidi override, invisible format character and line
//! separator ([`is_hidden`]) is shown as an escape instead of being sent to
//! the terminal, and long values are cut to keep rows
//! readable (use ndjson for the full text).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::{Row, Sink, is_hidden};
use crate::detect::Severity;

const MAX_WIDTH: usize = 80;

/// A table per part that has rows (a table needs all of a part's rows to
/// size its columns), or one header for a stream without any.
#[derive(Debug, Clone)]
pub struct Table {
    /// Colour the severity column (a terminal, `NO_COLOR` unset).
    colour: bool,
    header: Vec<String>,
    severity_column: Option<usize>,
    body: Vec<(Vec<String>, Severity)>,
    printed: bool,
}

impl Table {
    pub fn new(colour: bool) -> Table {
        Table {
            colour,
            header: Vec::new(),
            severity_column: None,
            body: Vec::new(),
            printed: false,
        }
    }

    fn print(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.printed = true;
        let body = std::mem::take(&mut self.body);
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for (cells, _) in &body {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let header = (self.header.clone(), None);
        let rows = body.into_iter().map(|(cells, s)| (cells, Some(s)));
        for (cells, severity) in std::iter::once(header).chain(rows) {
            let mut line = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = w - c.chars().count();
                // The text is the cell's, whatever the colour: widths and
                // cuts are the same with and without it.
                match severity.filter(|_| self.colour && Some(i) == self.severity_column) {
                    Some(s) => {
                        let _ = write!(line, "{}{c}\u{1b}[0m", colour(s));
                    }
                    None => line.push_str(c),
                }
                if i + 1 < cells.len() {
                    let _ = write!(line, "{:pad$}  ", "");
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The SGR sequence a severity is shown in: critical bold red, high red,
/// medium yellow, low cyan, informational dim.
fn colour(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "\u{1b}[1;31m",
        Severity::High => "\u{1b}[31m",
        Severity::Medium => "\u{1b}[33m",
        Severity::Low => "\u{1b}[36m",
        Severity::Informational => "\u{1b}[2m",
    }
}

impl Sink for Table {
    fn begin(&mut self, columns: &[&str], _out: &mut dyn Write) -> io::Result<()> {
        self.header = columns.iter().map(|h| h.to_string()).collect();
        self.severity_column = columns.iter().position(|&c| c == "severity");
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>, _out: &mut dyn Write) -> io::Result<()> {
        let mut cells = Vec::new();
        row.each_cell(|c| cells.push(fit(&neutralise_terminal(c.text))));
        self.body.push((cells, row.severity()));
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.body.is_empty() {
            return Ok(());
        }
        self.print(out)
    }

    fn close(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        if self.printed {
            return Ok(());
        }
        self.begin(columns, out)?;
        self.print(out)
    }
}

/// Replaces C0 and C1 controls, DEL, bidi controls, invisible format
/// characters and the line separators U+2028/U+2029 ([`is_hidden`]) with a
/// visible `\u{..}` escape. A backslash is doubled so the escape cannot be
/// forged by the input.
pub fn neutralise_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| is_hidden(c) || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_hidden(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Cuts a cell to [`MAX_WIDTH`] characters, marking the cut.
fn fit(s: &str) -> String {
    if s.chars().count() <= MAX_WIDTH {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(MAX_WIDTH - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(neutralise_terminal("curl/8"), "curl/8");
        assert_eq!(neutralise_terminal("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(
            neutralise_terminal("x\u{202e}y\u{2066}"),
            "x\\u{202e}y\\u{2066}"
        );
        assert_eq!(neutralise_terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(neutralise_terminal("\r\n\x7f"), "\\u{d}\\u{a}\\u{7f}");
        // Invisible format characters and line separators too.
        assert_eq!(
            neutralise_terminal("a\u{200b}b\u{200d}\u{2060}\u{2064}\u{feff}\u{61c}"),
            "a\\u{200b}b\\u{200d}\\u{2060}\\u{2064}\\u{feff}\\u{61c}"
        );
        assert_eq!(
            neutralise_terminal("line\u{2028}para\u{2029}"),
            "line\\u{2028}para\\u{2029}"
        );
        // Their neighbours are text.
        assert_eq!(
            neutralise_terminal("\u{200a}\u{2010}\u{2027}\u{202f}\u{206a}\u{fefe}é"),
            "\u{200a}\u{2010}\u{2027}\u{202f}\u{206a}\u{fefe}é"
        );
        // A literal backslash-u in the input stays distinguishable.
        assert_eq!(neutralise_terminal("\\u{1b}"), "\\\\u{1b}");
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "a".repeat(200);
        let cut = fit(&long);
        assert_eq!(cut.chars().count(), MAX_WIDTH);
        assert!(cut.ends_with('…'));
    }
}
