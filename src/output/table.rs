//! Aligned columns for a person at a terminal. Values are
//! attacker-controlled, so every control character, bidi override,
//! invisible format character and line separator ([`is_hidden`]) is shown
//! as an escape instead of being sent to the terminal.
//!
//! The table fits a width ([`terminal_width`]): severity, last seen,
//! source, verb, path, code and count, then as the width allows user agent,
//! cluster, rule and binding; long values are cut with `…` and no line is
//! wider than the width. Rows come worst first: by severity, then count,
//! then the latest time. `--wide` shows every column, named as the machine
//! formats name them and in their order, with nothing cut (use ndjson for
//! a tool).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::fmt::Write as _;
use std::io::{self, Write};

use chrono::{DateTime, Utc};

use super::{Row, Sink, is_hidden};
use crate::detect::rollup::parse_time;
use crate::detect::{FILL, Severity};

/// The width when neither the terminal nor `COLUMNS` gives one.
pub const DEFAULT_WIDTH: usize = 120;

/// Spaces between columns; one when two would not leave the core columns
/// their comfortable widths.
const GAP: usize = 2;

/// A cut column that may be cut further keeps this many characters before
/// the next optional column is left out for it.
const COMFORT: usize = 20;

/// The width a table fits: the terminal's (the window of stdout, or of
/// stderr when stdout is not a terminal), else `COLUMNS`, else
/// [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    width_from(window_columns(), std::env::var("COLUMNS").ok().as_deref())
}

/// The width from a window's columns and `COLUMNS`' text: the first that
/// is a number above 0.
fn width_from(window: Option<usize>, columns: Option<&str>) -> usize {
    window
        .filter(|&w| w > 0)
        .or_else(|| {
            columns
                .and_then(|c| c.trim().parse::<usize>().ok())
                .filter(|&w| w > 0)
        })
        .unwrap_or(DEFAULT_WIDTH)
}

/// The columns of the window stdout, or else stderr, is a terminal of.
#[cfg(target_os = "linux")]
fn window_columns() -> Option<usize> {
    let of = |size: rustix::io::Result<rustix::termios::Winsize>| {
        size.ok().map(|s| usize::from(s.ws_col)).filter(|&w| w > 0)
    };
    of(rustix::termios::tcgetwinsize(io::stdout()))
        .or_else(|| of(rustix::termios::tcgetwinsize(io::stderr())))
}

#[cfg(not(target_os = "linux"))]
fn window_columns() -> Option<usize> {
    None
}

/// A column of the table that fits a width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Show {
    Severity,
    Time,
    Source,
    Verb,
    Path,
    Code,
    Count,
    Agent,
    Cluster,
    Rule,
    Binding,
}

/// How a column gives way when the width is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Give {
    /// Never cut (severity, time, code, count): only a line too wide as a
    /// whole is cut, at its end.
    Never,
    /// Cut last (source, verb).
    Last,
    /// Cut first, widest first (path and the optional columns).
    First,
}

impl Show {
    /// In the order shown; the first 7 are always shown, the rest as the
    /// width allows, in this order.
    const ALL: [Show; 11] = [
        Show::Severity,
        Show::Time,
        Show::Source,
        Show::Verb,
        Show::Path,
        Show::Code,
        Show::Count,
        Show::Agent,
        Show::Cluster,
        Show::Rule,
        Show::Binding,
    ];

    fn label(self) -> &'static str {
        match self {
            Show::Severity => "severity",
            Show::Time => "last seen",
            Show::Source => "source",
            Show::Verb => "verb",
            Show::Path => "path",
            Show::Code => "code",
            Show::Count => "count",
            Show::Agent => "user agent",
            Show::Cluster => "cluster",
            Show::Rule => "rule",
            Show::Binding => "binding",
        }
    }

    fn core(self) -> bool {
        !matches!(
            self,
            Show::Agent | Show::Cluster | Show::Rule | Show::Binding
        )
    }

    fn give(self) -> Give {
        match self {
            Show::Severity | Show::Time | Show::Code | Show::Count => Give::Never,
            Show::Source | Show::Verb => Give::Last,
            Show::Path | Show::Agent | Show::Cluster | Show::Rule | Show::Binding => Give::First,
        }
    }

    /// The header's columns it shows, the first the main one: a row's
    /// time is its `requestReceivedTimestamp` or a group's `last_seen`;
    /// the cluster adds the account and region when the rows have them.
    fn columns(self, at: impl Fn(&str) -> Option<usize>) -> Option<[Option<usize>; 3]> {
        let one = |name| at(name).map(|i| [Some(i), None, None]);
        match self {
            Show::Severity => one("severity"),
            Show::Time => one("requestReceivedTimestamp").or_else(|| one("last_seen")),
            Show::Source => one("src_ip"),
            Show::Verb => one("verb"),
            Show::Path => one("requestURI"),
            Show::Code => one("responseStatus.code"),
            Show::Count => one("count"),
            Show::Agent => one("userAgent"),
            Show::Cluster => at("cluster").map(|c| [Some(c), at("account"), at("region")]),
            Show::Rule => one("rule"),
            Show::Binding => one("binding"),
        }
    }

    /// Its text in a row whose cells (in header order) are `cells`,
    /// neutralised.
    fn text(self, from: &[Option<usize>; 3], cells: &[String]) -> String {
        let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).map(String::as_str);
        let main = cell(from[0]).unwrap_or_default();
        match self {
            // To the second, in UTC; a row without a time shows `-`.
            Show::Time if main == FILL => "-".to_string(),
            Show::Time => match parse_time(main) {
                Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
                None => neutralise_terminal(main).into_owned(),
            },
            Show::Cluster => {
                let name = neutralise_terminal(main);
                let place: Vec<Cow<'_, str>> = [cell(from[1]), cell(from[2])]
                    .into_iter()
                    .flatten()
                    .filter(|v| !v.is_empty() && *v != FILL)
                    .map(neutralise_terminal)
                    .collect();
                if place.is_empty() {
                    name.into_owned()
                } else {
                    format!("{name} ({})", place.join(" "))
                }
            }
            _ => neutralise_terminal(main).into_owned(),
        }
    }
}

/// One of a part's rows, held until the part ends: its cells as shown,
/// and what it is sorted by.
#[derive(Debug, Clone)]
struct Line {
    cells: Vec<String>,
    severity: Severity,
    count: u64,
    time: Option<DateTime<Utc>>,
}

/// A table per part that has rows (a table needs all of a part's rows to
/// size its columns and sort them), or one header for a stream without
/// any.
#[derive(Debug, Clone)]
pub struct Table {
    /// Colour the severity column (a terminal, `NO_COLOR` unset).
    colour: bool,
    /// The width to fit; `None`: `--wide`.
    width: Option<usize>,
    header: Vec<String>,
    /// Fitting a width: the columns that may be shown, in order, and the
    /// header's columns each shows.
    shows: Vec<(Show, [Option<usize>; 3])>,
    /// Where the time (a row's, or a group's last) is among the header's
    /// columns: the rows are sorted by it.
    time_column: Option<usize>,
    /// Where the severity is among the table's columns.
    severity_column: Option<usize>,
    body: Vec<Line>,
    printed: bool,
}

impl Table {
    pub fn new(colour: bool, width: Option<usize>) -> Table {
        Table {
            colour,
            width,
            header: Vec::new(),
            shows: Vec::new(),
            time_column: None,
            severity_column: None,
            body: Vec::new(),
            printed: false,
        }
    }

    fn print(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.printed = true;
        let mut body = std::mem::take(&mut self.body);
        // Worst first: severity, then count, then the latest time (rows
        // without one last); otherwise as they came.
        body.sort_by_key(|l| (Reverse(l.severity), Reverse(l.count), Reverse(l.time)));
        let count = |c: &str| c.chars().count();
        let mut natural: Vec<usize> = self.header.iter().map(|h| count(h)).collect();
        for line in &body {
            for (w, c) in natural.iter_mut().zip(&line.cells) {
                *w = (*w).max(count(c));
            }
        }
        let shown: Vec<Show> = self.shows.iter().map(|(s, _)| *s).collect();
        let plan = match self.width {
            None => Plan {
                columns: natural.iter().copied().enumerate().collect(),
                gap: GAP,
            },
            Some(width) => plan(&shown, &self.header, &natural, width),
        };
        let right = |i: usize| shown.get(i) == Some(&Show::Count);
        let header = (&self.header, None);
        let rows = body.iter().map(|l| (&l.cells, Some(l.severity)));
        for (cells, severity) in std::iter::once(header).chain(rows) {
            let mut line = String::new();
            let mut coloured = None;
            for (k, &(i, w)) in plan.columns.iter().enumerate() {
                if k > 0 {
                    line.extend(std::iter::repeat_n(' ', plan.gap));
                }
                let text = shorten(&cells[i], w);
                let pad = w.saturating_sub(count(&text));
                if right(i) {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                if let Some(s) = severity.filter(|_| self.colour && Some(i) == self.severity_column)
                {
                    let at = count(&line);
                    coloured = Some((s, at, at + count(&text)));
                }
                line.push_str(&text);
                if !right(i) {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let mut line = line.trim_end().to_string();
            if let Some(width) = self.width {
                line = shorten(&line, width).into_owned();
            }
            // The text is the cell's, whatever the colour: widths and
            // cuts are the same with and without it. A severity the cut
            // reached is not coloured.
            if let Some((s, from, to)) = coloured.filter(|&(_, _, to)| to <= count(&line)) {
                let byte = |at: usize| line.char_indices().nth(at).map_or(line.len(), |(b, _)| b);
                let (from, to) = (byte(from), byte(to));
                line = format!(
                    "{}{}{}\u{1b}[0m{}",
                    &line[..from],
                    colour(s),
                    &line[from..to],
                    &line[to..]
                );
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// The columns shown (each one's place among the table's columns, and its
/// width) and the spaces between them.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    columns: Vec<(usize, usize)>,
    gap: usize,
}

/// Fits the columns `shows` (with their `header` labels and `natural`
/// widths: the widest of label and cells) into `width`. The core columns
/// are always shown; the others are added in order while every column
/// that gives way first can keep [`COMFORT`] characters (or all of its
/// own, if fewer), and stop at the first that cannot. Then the widest
/// column that gives way first is cut, a character at a time, until the
/// line fits, down to its label's width (at least 4); then source and
/// verb the same way. Severity, time, code and count are never cut: a
/// line still too wide is cut at its end when it is printed.
fn plan(shows: &[Show], header: &[String], natural: &[usize], width: usize) -> Plan {
    let comfort = |i: usize| match shows[i].give() {
        Give::First => natural[i].min(COMFORT),
        _ => natural[i],
    };
    let total = |cols: &[usize], gap: usize, w: &dyn Fn(usize) -> usize| {
        cols.iter().map(|&i| w(i)).sum::<usize>() + gap * cols.len().saturating_sub(1)
    };
    let mut cols: Vec<usize> = (0..shows.len()).filter(|&i| shows[i].core()).collect();
    let gap = if total(&cols, GAP, &comfort) <= width {
        GAP
    } else {
        1
    };
    for i in (0..shows.len()).filter(|&i| !shows[i].core()) {
        cols.push(i);
        if total(&cols, gap, &comfort) > width {
            cols.pop();
            break;
        }
    }
    let mut widths: Vec<usize> = cols.iter().map(|&i| natural[i]).collect();
    let floor = |i: usize| natural[i].min(header[i].chars().count().max(4));
    let mut over =
        (widths.iter().sum::<usize>() + gap * cols.len().saturating_sub(1)).saturating_sub(width);
    for give in [Give::First, Give::Last] {
        while over > 0 {
            let can = |k: &usize| shows[cols[*k]].give() == give && widths[*k] > floor(cols[*k]);
            let Some(k) = (0..cols.len())
                .filter(can)
                .max_by_key(|&k| (widths[k], Reverse(k)))
            else {
                break;
            };
            let next = (0..cols.len())
                .filter(|j| *j != k && can(j))
                .map(|j| widths[j])
                .max()
                .unwrap_or(0)
                .max(floor(cols[k]));
            let step = (widths[k] - next).clamp(1, over);
            widths[k] -= step;
            over -= step;
        }
    }
    Plan {
        columns: cols.into_iter().zip(widths).collect(),
        gap,
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
        let at = |name: &str| columns.iter().position(|&c| c == name);
        self.time_column = at("requestReceivedTimestamp").or_else(|| at("last_seen"));
        match self.width {
            None => {
                self.shows.clear();
                self.header = columns.iter().map(|h| h.to_string()).collect();
                self.severity_column = at("severity");
            }
            Some(_) => {
                self.shows = Show::ALL
                    .iter()
                    .filter_map(|&s| s.columns(at).map(|from| (s, from)))
                    .collect();
                self.header = self
                    .shows
                    .iter()
                    .map(|(s, _)| s.label().to_string())
                    .collect();
                self.severity_column = self.shows.iter().position(|(s, _)| *s == Show::Severity);
            }
        }
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>, _out: &mut dyn Write) -> io::Result<()> {
        let mut cells = Vec::new();
        row.each_cell(|c| cells.push(c.text.to_string()));
        let time = self
            .time_column
            .and_then(|i| cells.get(i))
            .and_then(|t| parse_time(t));
        let cells = match self.width {
            None => cells
                .iter()
                .map(|c| neutralise_terminal(c).into_owned())
                .collect(),
            Some(_) => self
                .shows
                .iter()
                .map(|(s, from)| s.text(from, &cells))
                .collect(),
        };
        self.body.push(Line {
            cells,
            severity: row.severity(),
            count: row.count(),
            time,
        });
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

/// `s` in at most `width` characters: cut, with `…` as its last, when
/// it has more.
fn shorten(s: &str, width: usize) -> Cow<'_, str> {
    if s.chars().count() <= width {
        return Cow::Borrowed(s);
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        cut.push('…');
    }
    Cow::Owned(cut)
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
    fn long_values_are_cut_with_an_ellipsis_to_the_width() {
        assert_eq!(shorten("abcd", 4), "abcd");
        assert_eq!(shorten("abcde", 4), "abc…");
        // Characters, not bytes.
        assert_eq!(shorten("日本語ab", 3), "日本…");
        assert_eq!(shorten("ab", 1), "…");
        assert_eq!(shorten("ab", 0), "");
        let long = "a".repeat(200);
        assert_eq!(shorten(&long, 80).chars().count(), 80);
    }

    #[test]
    fn the_width_is_the_window_then_columns_then_120() {
        assert_eq!(width_from(Some(100), Some("80")), 100);
        assert_eq!(width_from(Some(0), Some("80")), 80);
        assert_eq!(width_from(None, Some(" 90 ")), 90);
        for columns in ["0", "", "wide", "-1"] {
            assert_eq!(width_from(None, Some(columns)), 120, "{columns:?}");
        }
        assert_eq!(width_from(None, None), 120);
    }

    #[test]
    fn times_to_the_second_in_utc_and_clusters_with_account_and_region() {
        let time = |t: &str| Show::Time.text(&[Some(0), None, None], &[t.to_string()]);
        assert_eq!(time("2025-03-14T00:02:24.436059Z"), "2025-03-14 00:02:24");
        assert_eq!(time("2025-03-14T01:02:24.9+01:00"), "2025-03-14 00:02:24");
        assert_eq!(time(FILL), "-");
        assert_eq!(time("soon\u{1b}[2J"), "soon\\u{1b}[2J");
        assert_eq!(time("soon\u{1b}"), "soon\\u{1b}");
        let cells = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = [Some(0), Some(1), Some(2)];
        assert_eq!(
            Show::Cluster.text(&all, &cells(&["prod", "123456789012", "eu-west-1"])),
            "prod (123456789012 eu-west-1)"
        );
        assert_eq!(
            Show::Cluster.text(&all, &cells(&["prod", "", "eu-west-1"])),
            "prod (eu-west-1)"
        );
        assert_eq!(
            Show::Cluster.text(&[Some(0), None, None], &cells(&["prod"])),
            "prod"
        );
        assert_eq!(
            Show::Cluster.text(&all, &cells(&["p\u{202e}", "1", "r\u{7}"])),
            "p\\u{202e} (1 r\\u{7})"
        );
    }

    /// `plan` over the 11 columns with these natural widths (labels as
    /// the table's).
    fn plan_of(natural: [usize; 11], width: usize) -> Plan {
        let header: Vec<String> = Show::ALL.iter().map(|s| s.label().to_string()).collect();
        plan(&Show::ALL, &header, &natural, width)
    }

    #[test]
    fn the_core_columns_always_then_the_others_in_order_as_the_width_allows() {
        // severity, time, source, verb, path, code, count, agent,
        // cluster, rule, binding.
        let natural = [13, 19, 15, 4, 50, 4, 5, 60, 30, 15, 34];
        // Core at their comfortable widths: 13+19+15+4+20+4+5 = 80, and
        // 6 gaps of two.
        let at = |width| plan_of(natural, width);
        let shown = |p: &Plan| p.columns.iter().map(|c| c.0).collect::<Vec<_>>();
        let total =
            |p: &Plan| p.columns.iter().map(|c| c.1).sum::<usize>() + p.gap * (p.columns.len() - 1);
        // 80: one space between columns, the path gives way.
        let p = at(80);
        assert_eq!((shown(&p), p.gap), ((0..7).collect(), 1));
        assert_eq!(p.columns[4], (4, 80 - 60 - 6));
        // 92: two spaces; 113: the agent does not fit at 20; 114 it does.
        assert_eq!((shown(&at(92)), at(92).gap), ((0..7).collect(), 2));
        assert_eq!(shown(&at(113)), (0..7).collect::<Vec<_>>());
        assert_eq!(shown(&at(114)), (0..8).collect::<Vec<_>>());
        // The cluster (20), then rule (15), then binding (20).
        assert_eq!(shown(&at(135)), (0..8).collect::<Vec<_>>());
        assert_eq!(shown(&at(136)), (0..9).collect::<Vec<_>>());
        assert_eq!(shown(&at(153)), (0..10).collect::<Vec<_>>());
        assert_eq!(shown(&at(175)), (0..11).collect::<Vec<_>>());
        for width in [80, 92, 114, 136, 153, 175, 200] {
            assert_eq!(total(&at(width)), width, "{width}");
        }
        // Room for all: natural widths.
        let p = at(500);
        assert_eq!(p.columns.iter().map(|c| c.1).collect::<Vec<_>>(), natural);
        // The widest gives way first: at 175, path, agent, cluster and
        // binding share what is left evenly (within one).
        let p = at(175);
        let cut: Vec<usize> = [4, 7, 8, 10].iter().map(|&k| p.columns[k].1).collect();
        assert!(
            cut.iter().max().unwrap() - cut.iter().min().unwrap() <= 1,
            "{cut:?}"
        );
        // Source and verb give way only when the others are at their
        // floor; severity, time, code and count never.
        let p = at(60);
        assert_eq!(p.columns[4].1, 4);
        assert!(p.columns[2].1 < 15);
        for k in [0, 1, 5, 6] {
            assert_eq!(p.columns[k].1, natural[k]);
        }
        // An optional column that does not fit stops the ones after it.
        let natural = [13, 19, 15, 4, 20, 4, 5, 20, 60, 4, 10];
        assert_eq!(shown(&plan_of(natural, 135)), (0..8).collect::<Vec<_>>());
    }
}
