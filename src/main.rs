//! The `kubeanon` binary: parse flags, run, map the result to an exit code.
//! All error printing happens here.

// Untrusted input everywhere: no `unsafe` here; SIMD comes from crates
// that wrap it (safe_arch, simdutf8, memchr).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kubeanon::cli::Cli;
use kubeanon::exit::{Exit, UsageError};
use kubeanon::output::StdoutClosed;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // `poll --fail-on-findings high`: clap says only that `high`
            // was unexpected; say what was meant.
            if e.kind() == clap::error::ErrorKind::UnknownArgument
                && let Some(level) = kubeanon::cli::stray_fail_on_findings_level(&args)
            {
                eprintln!(
                    "kubeanon: error: {}",
                    kubeanon::cli::fail_on_findings_hint(&level)
                );
                return Exit::Usage.into();
            }
            e.exit()
        }
    };
    if cli.verbose {
        // Only kubeanon's own events: the SDK's debug logs carry request
        // details that have no place in a scheduled job's log.
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("kubeanon", tracing::Level::DEBUG);
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours for a person; plain text for a log file.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .with(filter)
            .init();
    }
    match kubeanon::commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            // A reader of stdout that went away (`| head`) is not a
            // failure; any other broken pipe (a FIFO given to -o) is.
            if err.chain().any(|c| c.is::<StdoutClosed>()) {
                return Exit::Ok.into();
            }
            eprintln!("kubeanon: error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                Exit::Usage.into()
            } else {
                Exit::Error.into()
            }
        }
    }
}
