//! Sinks: findings out as a table, ndjson, json, csv or OCSF findings, to
//! stdout, to a file replaced atomically, or appended to a file.
//!
//! Every format is a [`Sink`]: it takes a part of the stream (a run's rows,
//! or one poll step's) as `begin`, a `row` at a time, and `finish`, and the
//! stream's end as `close`, as ripgrep's printers take a search. The
//! formats know nothing of the rule: a [`Row`] hands them its cells in
//! header order (the detection's 14 columns, or a rollup's, then the
//! triage columns, then the command's). Every value that came from an
//! audit event is attacker-controlled: the table shows the characters
//! [`is_hidden`] names as visible escapes, JSON and OCSF write them as
//! `\uXXXX` escapes, and the CSV shows them as the table does and then
//! neutralises spreadsheet formulas.

pub mod asff;
mod csv;
pub mod hec;
mod json;
mod ocsf;
#[cfg(feature = "parquet")]
mod parquet;
mod table;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use std::borrow::Cow;

use crate::detect::{
    COLUMNS, FILL, Finding, Findings, Group, ROLLUP_COLUMNS, RULE_COLUMNS, Rollup, Rule, Severity,
    TRIAGE_COLUMNS, Triage,
};

pub use ocsf::{OCSF_VERSION, SECURITY_LAKE_OCSF_VERSION};
pub use table::{neutralise_terminal, terminal_width};

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
    /// One OCSF Detection Finding (class_uid 2004) per line.
    Ocsf,
    /// Apache Parquet objects of OCSF 1.1.0 Security Findings in Amazon
    /// Security Lake's layout (only with --deliver s3://).
    Parquet,
}

impl Format {
    /// Whether the format is one record per line, which `--append` takes.
    pub fn is_lines(self) -> bool {
        matches!(self, Format::Ndjson | Format::Csv | Format::Ocsf)
    }
}

/// How rows are written: the format and what the output flags add to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub format: Format,
    /// `--rollup`: groups instead of rows.
    pub rollup: bool,
    /// Colour the table's severity column (stdout is a terminal, and
    /// `NO_COLOR` is not set).
    pub colour: bool,
    /// The table's width in characters (see [`terminal_width`]); `None`:
    /// `--wide`, every column and nothing shortened.
    pub width: Option<usize>,
    /// The run's time, ms since the epoch: an OCSF finding's `time` when
    /// its row has no timestamp to give.
    pub run_ms: i64,
}

impl Style {
    pub fn plain(format: Format) -> Style {
        Style {
            format,
            rollup: false,
            colour: false,
            width: Some(table::DEFAULT_WIDTH),
            run_ms: 0,
        }
    }
}

/// Whether `c` must never reach a terminal raw: C0 and C1 controls and DEL
/// (`Cc`), the line and paragraph separators U+2028/U+2029, and the
/// invisible format characters that reorder or hide text: U+061C, U+200B to
/// U+200F, U+202A to U+202E, U+2060 to U+2069, U+FEFF. The table shows them
/// as `\u{..}` (and CSV cells the same), JSON as `\uXXXX`.
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

/// The rows of one run (or one poll step): its findings, and the columns
/// the command adds. Rows are made one at a time as they are written, so a
/// flood of findings is held once, not twice.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub findings: &'a Findings,
    /// Columns with one value for every row (poll: cluster, log_group,
    /// region), after the triage columns.
    pub fixed: &'a [(&'a str, &'a str)],
    /// `Some(label)`: a last column `id`, each row's stable id under this
    /// label ([`Finding::id`]).
    pub id_label: Option<&'a str>,
    /// The cluster lets anonymous reach only the health paths (EKS 1.32
    /// and later): an ESCU row for any other path gets a note saying it
    /// should not exist there. Known only to poll.
    pub anonymous_health_only: bool,
}

impl<'a> Rows<'a> {
    /// Rows with no columns of the command's own (scan).
    pub fn of(findings: &'a Findings) -> Rows<'a> {
        Rows {
            findings,
            fixed: &[],
            id_label: None,
            anonymous_health_only: false,
        }
    }

    /// All column names: the detection's 14 (or a rollup's 8), the triage
    /// columns, the rule columns, then the command's.
    pub fn columns(&self, rollup: bool) -> Vec<&'a str> {
        let first: &[&'a str] = if rollup { &ROLLUP_COLUMNS } else { &COLUMNS };
        first
            .iter()
            .chain(&TRIAGE_COLUMNS)
            .chain(&RULE_COLUMNS)
            .copied()
            .chain(self.fixed.iter().map(|(name, _)| *name))
            .chain(self.id_label.map(|_| "id"))
            .collect()
    }
}

/// One cell of a row.
#[derive(Debug, Clone, Copy)]
pub struct Cell<'c> {
    pub text: &'c str,
    /// Known to hold nothing JSON escapes (ASCII without controls, DEL,
    /// quotes or backslashes); `false` means "look".
    pub plain: bool,
    /// A number (`count`), not text.
    pub number: bool,
    /// The same text (at the same address) for many rows of a part: a
    /// triage value. A sink may keep what it made of it until the part
    /// ends.
    pub shared: bool,
}

/// One row as a sink sees it: a finding or a rollup group, with the
/// command's columns.
pub struct Row<'r> {
    body: Body<'r>,
    fixed: &'r [(&'r str, &'r str)],
    id: Option<String>,
    /// See [`Rows::anonymous_health_only`].
    health_only: bool,
}

/// The note of an ESCU row on a cluster where anonymous reaches only the
/// health paths, for any other path.
pub const HEALTH_ONLY_NOTE: &str = "EKS 1.32 and later let anonymous reach only /healthz, /livez and /readyz: this request should have been refused (check the cluster's version and its API server flags)";

/// Where `requestURI` is among the 13 by-fields.
const URI: usize = 4;

/// The paths anonymous still reaches on EKS 1.32 and later.
const HEALTH_PATHS: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// Whether `uri` (a `requestURI`, with or without a query) is one of
/// [`HEALTH_PATHS`]: the anonymous authenticator's conditions compare the
/// path whole (`/readyz/ping` is not among them).
fn is_health_path(uri: &str) -> bool {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    HEALTH_PATHS.contains(&path)
}

enum Body<'r> {
    Finding(Finding<'r>),
    Group(&'r Group<'r>),
}

impl<'r> Row<'r> {
    fn finding(f: Finding<'r>, rows: &Rows<'r>) -> Row<'r> {
        Row {
            id: rows.id_label.map(|l| f.id(l)),
            body: Body::Finding(f),
            fixed: rows.fixed,
            health_only: rows.anonymous_health_only,
        }
    }

    fn group(g: &'r Group<'r>, rows: &Rows<'r>) -> Row<'r> {
        Row {
            id: rows.id_label.map(|l| g.id(l)),
            body: Body::Group(g),
            fixed: rows.fixed,
            health_only: rows.anonymous_health_only,
        }
    }

    /// Its rule.
    pub fn rule(&self) -> Rule {
        match &self.body {
            Body::Finding(f) => f.rule(),
            Body::Group(g) => g.rule(),
        }
    }

    /// Its rule, credential and note, the note with what the command adds
    /// (a version restriction).
    fn extras(&self, cols: [Cow<'r, str>; 3], uri: &str) -> [Cow<'r, str>; 3] {
        let [rule, credential, note] = cols;
        let restricted = self.health_only && rule == Rule::Escu.name() && !is_health_path(uri);
        let note = match (restricted, note) {
            (false, note) => note,
            (true, note) if note == FILL => Cow::Borrowed(HEALTH_ONLY_NOTE),
            (true, note) => Cow::Owned(format!("{note}; {HEALTH_ONLY_NOTE}")),
        };
        [rule, credential, note]
    }

    /// Its rule, credential and note, as the columns show them.
    pub fn rule_cells(&self) -> [Cow<'r, str>; 3] {
        match &self.body {
            Body::Finding(f) => self.extras(f.extras(), &f.cols()[4]),
            Body::Group(g) => self.extras(g.extras.clone(), &g.values[3]),
        }
    }

    pub fn severity(&self) -> Severity {
        match &self.body {
            Body::Finding(f) => f.severity,
            Body::Group(g) => g.severity,
        }
    }

    pub fn count(&self) -> u64 {
        match &self.body {
            Body::Finding(f) => f.count,
            Body::Group(g) => g.count,
        }
    }

    pub fn triage(&self) -> &Triage {
        match &self.body {
            Body::Finding(f) => f.triage,
            Body::Group(g) => &g.triage,
        }
    }

    /// The row's `id` column, or (when the command has none) its stable id
    /// under an empty label: an OCSF finding's `uid`.
    pub fn uid(&self) -> String {
        match (&self.id, &self.body) {
            (Some(id), _) => id.clone(),
            (None, Body::Finding(f)) => f.id(""),
            (None, Body::Group(g)) => g.id(""),
        }
    }

    /// Every cell, in header order.
    pub fn each_cell(&self, mut each: impl FnMut(Cell<'_>)) {
        fn text(text: &str) -> Cell<'_> {
            Cell {
                text,
                plain: false,
                number: false,
                shared: false,
            }
        }
        let mut count = itoa::Buffer::new();
        let count = Cell {
            text: count.format(self.count()),
            plain: true,
            number: true,
            shared: false,
        };
        let extras = match &self.body {
            Body::Finding(f) => {
                let mut extras: [Cow<'_, str>; 3] = Default::default();
                let mut uri = Cow::Borrowed("");
                f.each_value_and_extra(|i, value, plain| {
                    if i >= COLUMNS.len() - 1 {
                        extras[i + 1 - COLUMNS.len()] = value;
                        return;
                    }
                    each(Cell {
                        text: &value,
                        plain,
                        number: false,
                        shared: false,
                    });
                    if i == URI {
                        uri = value;
                    }
                });
                each(count);
                self.extras(extras, &uri)
            }
            Body::Group(g) => {
                for v in g.values.iter().chain([&g.first_seen, &g.last_seen]) {
                    each(text(v));
                }
                each(count);
                self.extras(g.extras.clone(), &g.values[3])
            }
        };
        let triage = self.triage();
        each(Cell {
            text: self.severity().name(),
            plain: true,
            number: false,
            shared: false,
        });
        for v in [&triage.decision, &triage.reason, &triage.binding] {
            each(Cell {
                shared: true,
                ..text(v)
            });
        }
        for v in &extras {
            each(text(v));
        }
        for (_, v) in self.fixed {
            each(text(v));
        }
        if let Some(id) = &self.id {
            each(Cell {
                text: id,
                plain: true,
                number: false,
                shared: false,
            });
        }
    }

    /// The cells as text, in header order.
    pub fn cells(&self) -> Vec<String> {
        let mut cells = Vec::new();
        self.each_cell(|c| cells.push(c.text.to_string()));
        cells
    }
}

/// A format. A stream is parts (a run's rows, or a poll step's), each
/// `begin`, `row`s, `finish`; then `close`, once.
pub trait Sink {
    /// A part begins; `columns` names each row's cells.
    fn begin(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()>;
    fn row(&mut self, row: &Row<'_>, out: &mut dyn Write) -> io::Result<()>;
    /// The part ends: what it holds back is written.
    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()>;
    /// The stream ends (after every part, or none): a JSON array is
    /// closed; an empty table or CSV still shows its header.
    fn close(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()>;
    /// Whether a row's bytes are its own alone, whatever rows came before
    /// it in the part, and `finish` only writes out what the rows made
    /// (ndjson): its rows may then be rendered by several clones of a
    /// begun sink at once and their bytes joined in order.
    fn rows_stand_alone(&self) -> bool {
        false
    }

    /// [`Sink::finish`] into a buffer: a sink may hand over what it holds
    /// instead of copying it.
    fn finish_into(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.finish(out)
    }
}

/// The format's sink, in its state (cloned to measure a part before it is
/// written, see `deliver.rs`).
#[derive(Debug, Clone)]
enum Formatter {
    Table(table::Table),
    Json(json::Json),
    Csv(Box<csv::Csv>),
    Ocsf(ocsf::Ocsf),
    Asff(Box<asff::Asff>),
    Hec(hec::Hec),
    #[cfg(feature = "parquet")]
    Parquet(Box<parquet::Parquet>),
    #[cfg(not(feature = "parquet"))]
    Parquet(NoParquet),
}

impl Formatter {
    fn sink(&mut self) -> &mut dyn Sink {
        match self {
            Formatter::Table(s) => s,
            Formatter::Json(s) => s,
            Formatter::Csv(s) => &mut **s,
            Formatter::Ocsf(s) => s,
            Formatter::Asff(s) => &mut **s,
            Formatter::Hec(s) => s,
            #[cfg(feature = "parquet")]
            Formatter::Parquet(s) => &mut **s,
            #[cfg(not(feature = "parquet"))]
            Formatter::Parquet(s) => s,
        }
    }
}

/// Parquet in a build without the `parquet` feature: every write fails
/// (the flags refuse `--format parquet` there before anything is read).
#[cfg(not(feature = "parquet"))]
#[derive(Debug, Clone)]
pub struct NoParquet;

#[cfg(not(feature = "parquet"))]
impl Sink for NoParquet {
    fn begin(&mut self, _: &[&str], _: &mut dyn Write) -> io::Result<()> {
        Err(io::Error::other(PARQUET_MISSING))
    }
    fn row(&mut self, _: &Row<'_>, _: &mut dyn Write) -> io::Result<()> {
        Err(io::Error::other(PARQUET_MISSING))
    }
    fn finish(&mut self, _: &mut dyn Write) -> io::Result<()> {
        Err(io::Error::other(PARQUET_MISSING))
    }
    fn close(&mut self, _: &[&str], _: &mut dyn Write) -> io::Result<()> {
        Err(io::Error::other(PARQUET_MISSING))
    }
}

/// What a build without the `parquet` feature says of `--format parquet`.
pub const PARQUET_MISSING: &str = "this kubeanon was built without Parquet (the cargo feature `parquet`, on by default): \
     build it with default features, or deliver --format ndjson or ocsf";

/// A Parquet file of no records: a claim's body (see `deliver::s3`).
#[cfg(feature = "parquet")]
pub fn empty_parquet() -> io::Result<Vec<u8>> {
    parquet::file(&[]).map_err(io::Error::other)
}

#[cfg(not(feature = "parquet"))]
pub fn empty_parquet() -> io::Result<Vec<u8>> {
    Err(io::Error::other(PARQUET_MISSING))
}

/// What a stream has written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    /// The highest severity among them.
    pub worst: Option<Severity>,
}

impl Written {
    /// Writes one more row through `sink`.
    fn add(&mut self, row: Row<'_>, sink: &mut dyn Sink, out: &mut dyn Write) -> io::Result<()> {
        self.rows += 1;
        self.worst = self.worst.max(Some(row.severity()));
        sink.row(&row, out)
    }
}

/// Rows a rendering thread renders at a time: the bytes of a batch
/// (about 1 KB a row) stay within the core's cache until they are written.
const BATCH: usize = 256;

/// Writes the findings of `rows` through clones of `sink` (one whose rows
/// stand alone, begun), rendered by `threads` threads, each taking every
/// `threads`th batch of `batch` rows, and written here in order: the same
/// bytes as one thread's. An all-anonymous flood has a row per event, and
/// one thread rendering them was most of the time after the readers
/// (which read on every core). Each thread's buffers come back to it to be
/// used again, and at most two of its batches wait for the writer.
fn render_parallel(
    sink: &Formatter,
    rows: &Rows<'_>,
    out: &mut dyn Write,
    threads: usize,
    batch: usize,
    written: &mut Written,
) -> io::Result<()> {
    let findings = rows.findings;
    let batches = findings.len().div_ceil(batch);
    std::thread::scope(|scope| {
        let mut lanes = Vec::with_capacity(threads);
        for t in 0..threads {
            let (done, rendered) = std::sync::mpsc::sync_channel::<(Vec<u8>, Written)>(2);
            let (free, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
            let mut sink = sink.clone();
            scope.spawn(move || -> io::Result<()> {
                for k in (t..batches).step_by(threads) {
                    let mut bytes = reuse.try_recv().unwrap_or_default();
                    let mut these = Written::default();
                    for f in findings.iter().skip(k * batch).take(batch) {
                        these.add(Row::finding(f, rows), sink.sink(), &mut bytes)?;
                    }
                    sink.sink().finish_into(&mut bytes)?;
                    if done.send((bytes, these)).is_err() {
                        // The writer stopped (a write failed).
                        break;
                    }
                }
                Ok(())
            });
            lanes.push((rendered, free));
        }
        for k in 0..batches {
            let (rendered, free) = &lanes[k % threads];
            let (mut bytes, these) = rendered
                .recv()
                .map_err(|_| io::Error::other("a rendering thread stopped"))?;
            out.write_all(&bytes)?;
            written.rows += these.rows;
            written.worst = written.worst.max(these.worst);
            bytes.clear();
            // The thread may have rendered its last batch already.
            let _ = free.send(bytes);
        }
        Ok(())
    })
}

/// Writes `rows` in `style` to `target`. Returns once the bytes are on
/// disk (files are fsynced), so a caller may advance its checkpoint.
pub fn write(style: Style, target: &Target, rows: &Rows<'_>) -> Result<Written> {
    let mut out = Out::open(target)?;
    let mut parts = Parts::new(style, out.existing_header());
    out.write(|w| parts.write(rows, w).and_then(|()| parts.finish(rows, w)))?;
    out.finish()?;
    Ok(parts.written)
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

    /// The first line of an append file that already has content (a CSV
    /// file's header), `Some("")` if it cannot be read; `None` when there
    /// is nothing before what this run writes.
    pub fn existing_header(&self) -> Option<String> {
        let Out::Append(path, f) = self else {
            return None;
        };
        if f.metadata().map(|m| m.len() == 0).unwrap_or(true) {
            return None;
        }
        let mut head = Vec::new();
        let read = File::open(path).and_then(|f| f.take(64 << 10).read_to_end(&mut head));
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        Some(match read {
            Ok(_) => String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned(),
            Err(_) => String::new(),
        })
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

/// Rows written in parts (a run's steps) into one stream through the
/// format's [`Sink`], so that the stream is one document: a JSON array
/// spans the parts, a CSV header comes once, a table is printed per part
/// that has rows (or once, empty).
#[derive(Debug, Clone)]
pub struct Parts {
    style: Style,
    sink: Formatter,
    /// Rows written so far, and the worst of them.
    pub written: Written,
}

impl Parts {
    /// `existing`: the first line of an append file that is not empty
    /// (its CSV header), `Some("")` if it cannot be read; `None` for a new
    /// stream.
    pub fn new(style: Style, existing: Option<String>) -> Self {
        let sink = match style.format {
            Format::Table => Formatter::Table(table::Table::new(style.colour, style.width)),
            Format::Ndjson => Formatter::Json(json::Json::new(true)),
            Format::Json => Formatter::Json(json::Json::new(false)),
            Format::Csv => Formatter::Csv(Box::new(csv::Csv::new(existing))),
            Format::Ocsf => Formatter::Ocsf(ocsf::Ocsf::new(style.run_ms)),
            #[cfg(feature = "parquet")]
            Format::Parquet => Formatter::Parquet(Box::new(parquet::Parquet::new(style.run_ms))),
            #[cfg(not(feature = "parquet"))]
            Format::Parquet => Formatter::Parquet(NoParquet),
        };
        Parts {
            style,
            sink,
            written: Written::default(),
        }
    }

    /// ASFF findings, one per line (Security Hub's deliveries).
    pub fn asff(style: Style, context: asff::Context) -> Self {
        Parts {
            style,
            sink: Formatter::Asff(Box::new(asff::Asff::new(context))),
            written: Written::default(),
        }
    }

    /// HEC events, one per line, each the row in `style`'s format (ndjson
    /// or OCSF) in HEC's envelope.
    pub fn hec(style: Style, envelope: hec::Envelope) -> Self {
        let inner = Parts::new(style, None).sink;
        Parts {
            style,
            sink: Formatter::Hec(hec::Hec::new(inner, envelope)),
            written: Written::default(),
        }
    }

    /// Writes one part: the rows, or their rollup.
    pub fn write(&mut self, rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.write_with(rows, out, threads, BATCH)
    }

    /// [`Parts::write`], rows that stand alone rendered by up to `threads`
    /// threads, `batch` rows at a time (see [`render_parallel`]).
    fn write_with(
        &mut self,
        rows: &Rows<'_>,
        out: &mut dyn Write,
        threads: usize,
        batch: usize,
    ) -> io::Result<()> {
        let columns = rows.columns(self.style.rollup);
        self.sink.sink().begin(&columns, out)?;
        let mut written = self.written;
        let parallel =
            threads > 1 && rows.findings.len() > 2 * batch && self.sink.sink().rows_stand_alone();
        if self.style.rollup {
            let rollup = Rollup::of(rows.findings);
            for g in &rollup.groups {
                written.add(Row::group(g, rows), self.sink.sink(), out)?;
            }
        } else if parallel {
            render_parallel(&self.sink, rows, out, threads, batch, &mut written)?;
        } else {
            for f in rows.findings.iter() {
                written.add(Row::finding(f, rows), self.sink.sink(), out)?;
            }
        }
        self.sink.sink().finish(out)?;
        self.written = written;
        Ok(())
    }

    /// Ends the document: closes a JSON array; prints the empty table or
    /// CSV header of a run without rows.
    pub fn finish(&mut self, rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
        let columns = rows.columns(self.style.rollup);
        self.sink.sink().close(&columns, out)
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

/// Removes a file durably (its directory synced); one already gone is
/// fine (a run settling what a crash left may find it removed).
pub fn remove_synced(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_dir(path));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests;
