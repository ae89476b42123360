//! `kubeanon scan`: files or stdin through the detector.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{count, describe, write_findings};
use crate::cli::ScanArgs;
use crate::detect::Detector;
use crate::exit::{Exit, UsageError};
use crate::source::file;

pub fn run(args: ScanArgs) -> Result<Exit> {
    let out = args.output.resolve()?;
    if out.fail_on_findings.is_some()
        && let Some(level) = args.paths.iter().find_map(|p| stray_level(p))
    {
        return Err(UsageError(crate::cli::fail_on_findings_hint(level)).into());
    }
    let started = Instant::now();
    let mut det = Detector::new(out.exclusions.clone())
        .at_least(out.min_severity)
        .with_rules(out.rules)
        .max_addresses(out.max_addresses);
    let mut bytes = 0;
    let stdin = [Path::new("-").to_path_buf()];
    let paths = if args.paths.is_empty() {
        &stdin[..]
    } else {
        &args.paths[..]
    };
    if args.paths.is_empty() && io::stdin().is_terminal() && !out.quiet {
        eprintln!(
            "kubeanon scan: reading audit events from stdin (pass files, or pipe them in; Ctrl-D ends)"
        );
    }
    for path in paths {
        bytes += read_path(path, &mut det)?;
    }
    let read = started.elapsed();
    let (agg, stats) = det.finish();
    let findings = agg.into_findings();
    let sorted = started.elapsed();
    let written = write_findings(&out, &findings)?;
    tracing::debug!(
        "read {:.3} s, sort {:.3} s, write {:.3} s",
        read.as_secs_f64(),
        (sorted - read).as_secs_f64(),
        (started.elapsed() - sorted).as_secs_f64()
    );
    if !out.quiet {
        let rolled = if out.rollup {
            format!(" rolled up into {}", count(written.rows as u64, "group"))
        } else {
            String::new()
        };
        eprintln!(
            "kubeanon scan: {}{rolled}; {:.1} MB in {:.2} s",
            describe(&stats, findings.len()),
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Exit::for_findings(written.worst, out.fail_on_findings))
}

/// A path that is a severity level's name with no file of that name:
/// `--fail-on-findings high`, whose `high` clap takes for a path (the flag
/// takes its level only after `=`, so that it never eats a real path).
fn stray_level(path: &Path) -> Option<&str> {
    let text = path.to_str()?;
    (text.parse::<crate::detect::Severity>().is_ok() && path.symlink_metadata().is_err())
        .then_some(text)
}

fn read_path(path: &Path, det: &mut Detector) -> Result<u64> {
    if path.as_os_str() == "-" {
        return file::read_input(io::stdin().lock(), det).context("cannot read stdin");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let split = file::read_file_parallel(path, threads, || det.fresh())
        .with_context(|| format!("cannot read {}", path.display()))?;
    if let Some((parts, bytes)) = split {
        let merging = Instant::now();
        for part in parts {
            det.absorb(part);
        }
        tracing::debug!(
            "{}: parts merged in {:.3} s",
            path.display(),
            merging.elapsed().as_secs_f64()
        );
        return Ok(bytes);
    }
    let f =
        file::open_sequential(path).with_context(|| format!("cannot open {}", path.display()))?;
    file::read_input(f, det).with_context(|| format!("cannot read {}", path.display()))
}
