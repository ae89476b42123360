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

/// `1 finding`, `0 findings`, `2 findings`: a count and its noun, whose
/// plural adds `s` (`log group` -> `log groups`, `API call` -> `API calls`).
fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The counts every summary line starts with.
fn describe(stats: &Stats, findings: usize) -> String {
    let cut = if stats.truncated > 0 {
        format!(", {} truncated", stats.truncated)
    } else {
        String::new()
    };
    let mut s = format!(
        "{}, {} malformed{cut}, {} matched, {}",
        count(stats.events, "event"),
        stats.malformed,
        stats.matched,
        count(findings as u64, "finding")
    );
    if stats.excluded > 0 {
        s.push_str(&format!(" ({} excluded)", count(stats.excluded, "row")));
    }
    if stats.capped > 0 {
        s.push_str(&format!(
            " ({} with source addresses capped by --max-addresses)",
            count(stats.capped, "event")
        ));
    }
    if stats.below_min_severity > 0 {
        s.push_str(&format!(
            " ({} below --min-severity)",
            count(stats.below_min_severity, "row")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_events_are_named_only_when_there_are_some() {
        let mut stats = Stats {
            events: 3,
            matched: 2,
            ..Stats::default()
        };
        assert!(!describe(&stats, 2).contains("max-addresses"));
        stats.capped = 1;
        assert_eq!(
            describe(&stats, 66),
            "3 events, 0 malformed, 2 matched, 66 findings \
             (1 event with source addresses capped by --max-addresses)"
        );
    }

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1u64, "finding"), "1 finding");
        assert_eq!(count(0u64, "finding"), "0 findings");
        assert_eq!(count(2u64, "log group"), "2 log groups");
    }
}
