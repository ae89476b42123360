//! `kubeanon doctor`: can kubeanon read this cluster's audit logs?

use anyhow::{Result, bail};

use crate::cli::DoctorArgs;
use crate::exit::Exit;

pub fn run(_args: DoctorArgs) -> Result<Exit> {
    bail!("doctor is not implemented yet")
}
