//! Aligned columns for a terminal. Values are attacker-controlled, so every
//! control character, bidi override, invisible format character and line
//! separator ([`is_hidden`]) is shown as an escape instead of being sent to
//! the terminal, and long values are cut to keep rows
//! readable (use ndjson for the full text).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::{Rows, is_hidden};

const MAX_WIDTH: usize = 80;

pub fn write(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let header: Vec<String> = rows.header().iter().map(|h| h.to_string()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            rows.cells(&row)
                .map(|c| fit(&neutralise_terminal(&c)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for cells in &body {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    for cells in std::iter::once(&header).chain(&body) {
        let mut line = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c}{:pad$}  ", "", pad = w - c.chars().count());
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
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
