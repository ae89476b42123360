//! One module per subcommand: each wires a source to the detector and the
//! detector's findings to a sink.

mod doctor;
mod poll;
mod scan;

use anyhow::Result;

use crate::cli::{Cli, Command, OutputConfig};
use crate::detect::{Finding, Findings, Stats};
use crate::exit::Exit;
use crate::output::{self, Rows};

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Poll(args) => poll::run(*args),
        Command::Doctor(args) => doctor::run(args),
    }
}

/// Writes the findings where the output flags say, with the command's
/// extra columns.
fn write_findings(
    out: &OutputConfig,
    extra_columns: &[&str],
    findings: &Findings,
    extra: &dyn Fn(&Finding<'_>) -> Vec<String>,
) -> Result<()> {
    let rows = Rows {
        extra_columns,
        findings,
        extra,
    };
    output::write(out.format, &out.target, &rows)
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
