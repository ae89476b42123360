//! Sinks: findings out as a table, ndjson, json or csv, to stdout, to a
//! file replaced atomically, or appended to a file.
//!
//! The formats know nothing of the rule: they get a header and rows of
//! text. Every value that came from an audit event is attacker-controlled:
//! the table neutralises terminal controls and bidi overrides, the CSV
//! neutralises spreadsheet formulas, and JSON escaping does the rest.

mod csv;
mod json;
mod table;

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::detect::{COLUMNS, Finding, Findings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a person at a terminal.
    Table,
    /// One JSON object per line.
    Ndjson,
    /// One JSON array.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Where the rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Written to a temporary file beside it, synced, then renamed over it.
    Replace(PathBuf),
    /// Appended (and synced); CSV writes its header only into an empty file.
    Append(PathBuf),
}

/// One result row: the 13 by-field values, the count, and any extra
/// columns the command adds (poll: cluster, region, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub cols: [Cow<'a, str>; 13],
    pub count: u64,
    pub extra: Vec<String>,
}

/// The rows of one run with their column names: the findings, and the
/// values of the command's extra columns for each. Rows are made one at a
/// time as they are written, so a flood of findings is held once, not twice.
pub struct Rows<'a> {
    pub extra_columns: &'a [&'a str],
    pub findings: &'a Findings,
    pub extra: &'a dyn Fn(&Finding<'_>) -> Vec<String>,
}

impl<'a> Rows<'a> {
    /// All column names, the fixed 14 first.
    pub fn header(&self) -> Vec<&str> {
        COLUMNS.iter().chain(self.extra_columns).copied().collect()
    }

    /// The rows, in order.
    fn iter(&self) -> impl Iterator<Item = Row<'a>> + '_ {
        self.findings.iter().map(|f| Row {
            cols: f.cols(),
            count: f.count,
            extra: (self.extra)(&f),
        })
    }

    /// A row's cells as text, in header order.
    fn cells<'r>(&self, row: &'r Row) -> impl Iterator<Item = std::borrow::Cow<'r, str>> {
        let count = std::iter::once(std::borrow::Cow::Owned(row.count.to_string()));
        row.cols
            .iter()
            .map(|c| std::borrow::Cow::Borrowed(&**c))
            .chain(count)
            .chain(
                row.extra
                    .iter()
                    .map(|e| std::borrow::Cow::Borrowed(e.as_str())),
            )
    }
}

/// Writes `rows` in `format` to `target`. Returns once the bytes are on
/// disk (files are fsynced), so a caller may advance its checkpoint.
pub fn write(format: Format, target: &Target, rows: &Rows<'_>) -> Result<()> {
    match target {
        Target::Stdout => {
            let mut out = io::BufWriter::new(io::stdout().lock());
            render(format, rows, &mut out, true)?;
            out.flush()?;
            Ok(())
        }
        Target::Replace(path) => match std::fs::metadata(path) {
            // `-o /dev/null`, a FIFO, `/dev/stdout`: write into it. A rename
            // would put a regular file in the device's place.
            Ok(m) if !m.is_file() && !m.is_dir() => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let mut w = io::BufWriter::new(f);
                render(format, rows, &mut w, true)
                    .and_then(|()| w.flush())
                    .with_context(|| format!("cannot write {}", path.display()))
            }
            // Through a symlink, replace the file it points to.
            Ok(_) => replace(&std::fs::canonicalize(path)?, |f| {
                render(format, rows, f, true)
            }),
            Err(_) => replace(path, |f| render(format, rows, f, true)),
        },
        Target::Append(path) => append(path, |f, empty| render(format, rows, f, empty)),
    }
}

/// Renders `rows` into `out`; `header` says whether CSV gets its header.
pub fn render(
    format: Format,
    rows: &Rows<'_>,
    out: &mut dyn Write,
    header: bool,
) -> io::Result<()> {
    match format {
        Format::Table => table::write(rows, out),
        Format::Ndjson => json::write_lines(rows, out),
        Format::Json => json::write_array(rows, out),
        Format::Csv => csv::write(rows, out, header),
    }
}

/// Writes a whole file atomically: a temporary file in the same directory,
/// fsync, rename over `path`, fsync the directory. A reader sees the old
/// file or the new one, never half of one.
pub fn replace(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".kubeanon-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut w = io::BufWriter::new(tmp.as_file_mut());
        fill(&mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the temporary file over {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Appends to `path` (created if missing) and fsyncs. `fill` is told
/// whether the file was empty, so a CSV header is written once.
fn append(path: &Path, fill: impl FnOnce(&mut dyn Write, bool) -> io::Result<()>) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))?;
    let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(false);
    {
        let mut w = io::BufWriter::new(&mut file);
        fill(&mut w, empty)
            .and_then(|()| w.flush())
            .with_context(|| format!("cannot append to {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename durable. Best effort: not every filesystem allows it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
