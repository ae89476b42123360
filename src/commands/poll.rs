//! `kubeanon poll`: CloudWatch Logs through the detector.

use anyhow::{Result, bail};

use crate::cli::PollArgs;
use crate::exit::Exit;

pub fn run(_args: PollArgs) -> Result<Exit> {
    bail!("poll is not implemented yet")
}
