//! One module per subcommand: each wires a source to the detector and the
//! detector's findings to a sink.

mod doctor;
mod poll;
mod scan;

use anyhow::Result;

use crate::cli::{Cli, Command, OutputConfig};
use crate::detect::{Findings, Stats};
use crate::exit::Exit;
use crate::output::{self, Rows, Written};

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Poll(args) => poll::run(*args),
        Command::Doctor(args) => doctor::run(args),
    }
}

/// Writes the findings where the output flags say.
fn write_findings(out: &OutputConfig, findings: &Findings) -> Result<Written> {
    let style = out.style(crate::testhooks::now_ms());
    output::write(style, &out.target, &Rows::of(findings))
}

/// The counts every summary line starts with.
fn describe(stats: &Stats, findings: usize) -> String {
    let cut = if stats.truncated > 0 {
        format!(", {} truncated", stats.truncated)
    } else {
        String::new()
    };
    let mut s = format!(
        "{} events, {} malformed{cut}, {} matched, {} findings",
        stats.events, stats.malformed, stats.matched, findings
    );
    if stats.excluded > 0 {
        s.push_str(&format!(" ({} rows excluded)", stats.excluded));
    }
    if stats.below_min_severity > 0 {
        s.push_str(&format!(
            " ({} rows below --min-severity)",
            stats.below_min_severity
        ));
    }
    s
}
