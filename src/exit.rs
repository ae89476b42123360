//! Exit codes, as documented in the README.

use std::process::ExitCode;

use crate::detect::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success (findings or not, unless `--fail-on-findings`).
    Ok,
    /// A run that could not complete: I/O, AWS, checkpoint trouble.
    Error,
    /// Bad flags or arguments.
    Usage,
    /// `--fail-on-findings` and there were findings.
    Findings,
    /// Some log groups failed (or were blind); the others were delivered
    /// and advanced.
    Partial,
    /// SIGINT (Ctrl-C): what was committed stays committed.
    Interrupted,
    /// SIGTERM: as SIGINT.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Findings => 3,
            Exit::Partial => 4,
            // 128 + the signal's number, as a shell reports a process the
            // signal ended.
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// The exit for a successful run whose rows' highest severity is
    /// `worst` (`None`: no rows), under `--fail-on-findings[=LEVEL]`.
    pub fn for_findings(worst: Option<Severity>, fail_on: Option<Severity>) -> Exit {
        match (worst, fail_on) {
            (Some(worst), Some(level)) if worst >= level => Exit::Findings,
            _ => Exit::Ok,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// An error in how the tool was invoked (exit 2), as opposed to one that
/// happened while running (exit 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented() {
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::Error,
            Exit::Usage,
            Exit::Findings,
            Exit::Partial,
            Exit::Interrupted,
            Exit::Terminated,
        ]
        .map(Exit::code)
        .to_vec();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 130, 143]);
        use Severity::*;
        let any = Some(Informational);
        assert_eq!(Exit::for_findings(Some(Low), any), Exit::Findings);
        assert_eq!(Exit::for_findings(Some(Low), None), Exit::Ok);
        assert_eq!(Exit::for_findings(None, any), Exit::Ok);
        assert_eq!(Exit::for_findings(Some(High), Some(High)), Exit::Findings);
        assert_eq!(
            Exit::for_findings(Some(Critical), Some(High)),
            Exit::Findings
        );
        assert_eq!(Exit::for_findings(Some(Low), Some(High)), Exit::Ok);
    }
}
