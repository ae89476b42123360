//! Sinks: findings out as a table, ndjson, json or csv, to stdout, to a
//! file replaced atomically, or appended to a file.
//!
//! The formats know nothing of the rule: they get a header and rows of
//! text. Every value that came from an audit event is attacker-controlled:
//! the table shows the characters [`is_hidden`] names as visible escapes,
//! JSON writes them as `\uXXXX` escapes, and the CSV neutralises
//! spreadsheet formulas.

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

/// Whether `c` must never reach a terminal raw: C0 and C1 controls and DEL
/// (`Cc`), the line and paragraph separators U+2028/U+2029, and the
/// invisible format characters that reorder or hide text: U+061C, U+200B to
/// U+200F, U+202A to U+202E, U+2060 to U+2069, U+FEFF. The table shows them
/// as `\u{..}`, JSON as `\uXXXX`.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Where the rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Written to a temporary file beside it, synced, then renamed over it.
    Replace(PathBuf),
    /// Appended (and synced); CSV writes its header only into an empty file.
    /// A new file is created with mode 0600.
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
    let mut out = Out::open(target)?;
    let mut parts = Parts::new(format, out.has_header());
    out.write(|w| parts.write(rows, w).and_then(|()| parts.finish(rows, w)))?;
    out.finish()
}

/// The rows were not written because stdout was closed (`| head`): the one
/// broken pipe that is not a failure.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// An open output target, written in one or more parts and finished once.
pub enum Out {
    Stdout(io::BufWriter<io::Stdout>),
    /// `-o /dev/null`, a FIFO, `/dev/stdout`: written in place, since a
    /// rename would put a regular file in the device's place.
    Device(PathBuf, io::BufWriter<File>),
    /// A temporary file renamed over the target at the end.
    Replace(Replacement),
    /// Appended to, and fsynced after each part.
    Append(PathBuf, File),
}

impl Out {
    pub fn open(target: &Target) -> Result<Out> {
        Ok(match target {
            Target::Stdout => Out::Stdout(io::BufWriter::new(io::stdout())),
            Target::Replace(path) => match std::fs::metadata(path) {
                Ok(m) if !m.is_file() && !m.is_dir() => {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    Out::Device(path.clone(), io::BufWriter::new(f))
                }
                // Through a symlink, replace the file it points to.
                Ok(_) => Out::Replace(Replacement::begin(&std::fs::canonicalize(path)?)?),
                Err(_) => Out::Replace(Replacement::begin(path)?),
            },
            Target::Append(path) => {
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                // Created private, as `-o` files and the checkpoint are; an
                // existing file keeps its mode.
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let file = options
                    .open(path)
                    .with_context(|| format!("cannot open {} for appending", path.display()))?;
                Out::Append(path.clone(), file)
            }
        })
    }

    /// An append file that already has content (so CSV has its header).
    pub fn has_header(&self) -> bool {
        match self {
            Out::Append(_, f) => f.metadata().map(|m| m.len() > 0).unwrap_or(false),
            _ => false,
        }
    }

    /// Writes one part; appends are fsynced before it returns.
    pub fn write(&mut self, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
        match self {
            Out::Stdout(w) => fill(w).and_then(|()| w.flush()).map_err(stdout_error),
            Out::Device(path, w) => fill(w)
                .and_then(|()| w.flush())
                .with_context(|| format!("cannot write {}", path.display())),
            Out::Replace(r) => r.write(fill),
            Out::Append(path, file) => {
                let mut w = io::BufWriter::new(&mut *file);
                fill(&mut w)
                    .and_then(|()| w.flush())
                    .with_context(|| format!("cannot append to {}", path.display()))?;
                drop(w);
                file.sync_all()
                    .with_context(|| format!("cannot sync {}", path.display()))
            }
        }
    }

    /// Ends the output: a replaced file is renamed into place here.
    pub fn finish(self) -> Result<()> {
        match self {
            Out::Replace(r) => r.commit(),
            _ => Ok(()),
        }
    }
}

/// A broken pipe on stdout is [`StdoutClosed`]; anything else an error.
fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Rows written in parts (a run's steps) into one stream, so that the
/// stream is one document: a JSON array spans the parts, a CSV header comes
/// once, a table is printed per part that has rows (or once, empty).
#[derive(Debug, Clone)]
pub struct Parts {
    format: Format,
    /// A CSV header is (or is already) there.
    header_done: bool,
    /// Rows written so far.
    written: u64,
    begun: bool,
}

impl Parts {
    /// `header_done`: the stream already has a CSV header (an append file
    /// that is not empty).
    pub fn new(format: Format, header_done: bool) -> Self {
        Parts {
            format,
            header_done,
            written: 0,
            begun: false,
        }
    }

    pub fn write(&mut self, rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
        let n = rows.findings.len() as u64;
        match self.format {
            Format::Table if n > 0 => table::write(rows, out)?,
            Format::Table => {}
            Format::Ndjson => json::write_lines(rows, out)?,
            Format::Json => {
                if !self.begun {
                    out.write_all(b"[")?;
                }
                json::write_elements(rows, out, self.written > 0)?;
            }
            Format::Csv => {
                csv::write(rows, out, !self.header_done)?;
                self.header_done = true;
            }
        }
        self.begun = true;
        self.written += n;
        Ok(())
    }

    /// Ends the document: closes a JSON array; prints the empty table or
    /// array of a run without rows.
    pub fn finish(&mut self, rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
        match self.format {
            Format::Table if self.written == 0 => table::write(rows, out),
            Format::Json => {
                if !self.begun {
                    out.write_all(b"[")?;
                }
                self.begun = true;
                out.write_all(b"\n]\n")
            }
            Format::Csv if !self.header_done => {
                self.header_done = true;
                csv::write(rows, out, true)
            }
            _ => Ok(()),
        }
    }
}

/// Writes a whole file atomically: a temporary file in the same directory,
/// fsync, rename over `path`, fsync the directory. A reader sees the old
/// file or the new one, never half of one.
pub fn replace(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let mut r = Replacement::begin(path)?;
    r.write(fill)?;
    r.commit()
}

/// A file being replaced: written to a temporary file beside it, which
/// [`Replacement::commit`] syncs and renames over it. Dropped uncommitted,
/// the temporary file is removed and the old file stays.
pub struct Replacement {
    path: PathBuf,
    tmp: io::BufWriter<tempfile::NamedTempFile>,
}

impl Replacement {
    pub fn begin(path: &Path) -> Result<Self> {
        let dir = parent_dir(path);
        let tmp = tempfile::Builder::new()
            .prefix(".kubeanon-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(Replacement {
            path: path.to_path_buf(),
            tmp: io::BufWriter::new(tmp),
        })
    }

    pub fn write(&mut self, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
        fill(&mut self.tmp).with_context(|| format!("cannot write {}", self.path.display()))
    }

    pub fn commit(self) -> Result<()> {
        let path = self.path;
        let tmp = self
            .tmp
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", path.display()))?;
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename the temporary file over {}", path.display()))?;
        sync_dir(parent_dir(&path));
        Ok(())
    }
}

pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename durable. Best effort: not every filesystem allows it.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests;
