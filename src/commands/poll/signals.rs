//! SIGINT and SIGTERM: a run stopped between steps, said in one line.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::exit::Exit;
use crate::source::insights::Insights;

/// A read cut short by SIGINT or SIGTERM.
#[derive(Debug)]
pub(super) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Takes SIGINT and SIGTERM over for the run: the first one stops every
/// read (what was committed stays; the run then exits 130 or 143), a
/// second one quits at once with that code.
pub(super) async fn listen_for_signals(signal: Arc<watch::Sender<Option<Exit>>>) {
    use tokio::signal::unix::{SignalKind, signal as unix};
    let (Ok(mut int), Ok(mut term)) =
        (unix(SignalKind::interrupt()), unix(SignalKind::terminate()))
    else {
        return;
    };
    loop {
        let exit = tokio::select! {
            _ = int.recv() => Exit::Interrupted,
            _ = term.recv() => Exit::Terminated,
        };
        if signal.borrow().is_some() {
            std::process::exit(i32::from(exit.code()));
        }
        signal.send_replace(Some(exit));
    }
}

/// The one line of a run a signal stopped: what it committed (or wrote),
/// and what the next run does.
pub(super) fn interrupted_line(
    exit: Exit,
    (whole, part, units): (usize, usize, usize),
    checkpointed: bool,
    insights: Option<&Insights>,
) -> String {
    let name = match exit {
        Exit::Terminated => "SIGTERM",
        _ => "SIGINT",
    };
    let part = match part {
        0 => String::new(),
        n => format!(", {n} more part of it"),
    };
    let mut line = if checkpointed {
        format!(
            "interrupted ({name}): {whole} of {units} log group(s) committed to the end of the window{part}; \
             the next run goes on from their checkpoints"
        )
    } else {
        format!(
            "interrupted ({name}): {whole} of {units} log group(s) read to the end of the window and their rows written{part}; \
             nothing is recorded without --checkpoint: the next run reads its whole window again"
        )
    };
    if let Some(ins) = insights {
        let stopped = ins.stats.stopped.load(Ordering::Relaxed);
        let refused = ins.stats.not_stopped.load(Ordering::Relaxed);
        line.push_str(&format!("; {stopped} running Insights queries stopped"));
        if refused > 0 {
            line.push_str(&format!(
                ", {refused} not (StopQuery refused or unanswered: they run on to their timeout and are billed)"
            ));
        }
        if let Some(lost) = ins.lost_note() {
            line.push_str(&format!("; {lost}"));
        }
    }
    line
}
