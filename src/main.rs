//! The `kubeanon` binary: parse flags, run, map the result to an exit code.
//! All error printing happens here.

use std::process::ExitCode;

use clap::Parser;
use kubeanon::cli::Cli;
use kubeanon::exit::{Exit, UsageError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match kubeanon::commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            // A reader that went away (`| head`) is not a failure.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
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
