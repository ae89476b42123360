//! One module per subcommand: each wires a source to the detector and the
//! detector's findings to a sink.

mod doctor;
mod poll;
mod scan;

use anyhow::Result;

use crate::cli::{Cli, Command, OutputConfig};
use crate::detect::{Finding, Stats};
use crate::exit::Exit;
use crate::output::{self, Row, Rows};

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Poll(args) => poll::run(*args),
        Command::Doctor(args) => doctor::run(args),
    }
}

/// Findings as output rows, with the command's extra columns.
fn to_rows(findings: &[Finding], extra: impl Fn(&Finding) -> Vec<String>) -> Vec<Row<'_>> {
    findings
        .iter()
        .map(|f| Row {
            cols: f.cols(),
            count: f.count,
            extra: extra(f),
        })
        .collect()
}

/// Writes the rows where the output flags say.
fn write_rows(out: &OutputConfig, extra_columns: &[&str], rows: &[Row]) -> Result<()> {
    output::write(
        out.format,
        &out.target,
        &Rows {
            extra_columns,
            rows,
        },
    )
}

/// The counts every summary line starts with.
fn describe(stats: &Stats, findings: usize) -> String {
    let mut s = format!(
        "{} events, {} malformed, {} matched, {} findings",
        stats.events, stats.malformed, stats.matched, findings
    );
    if stats.excluded > 0 {
        s.push_str(&format!(" ({} rows excluded)", stats.excluded));
    }
    s
}
