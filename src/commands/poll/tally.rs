//! What a run counts and says at its end.

use std::sync::atomic::Ordering;

use super::plan::{Plan, rfc3339};
use super::steps::Reach;
use crate::commands::{count, describe};
use crate::detect::{Severity, Stats};
use crate::fleet::WorkUnit;
use crate::source::cloudwatch::ApiStats;

/// Something the run could not read, and whether it delivered anything
/// before it failed.
pub(super) struct Failure {
    pub(super) what: String,
    pub(super) error: anyhow::Error,
    pub(super) advanced: bool,
}

/// Counts of one log group's reads, or of the run.
#[derive(Default)]
pub(super) struct Total {
    pub(super) stats: Stats,
    pub(super) late: u64,
    pub(super) skipped: u64,
    pub(super) steps: u64,
    /// Where the earliest read began (S3 state is read per unit, so the
    /// run's window is known only as units start).
    pub(super) first_ms: Option<i64>,
    /// Rows delivered and the worst severity among them; objects written
    /// (S3), units another run held.
    pub(super) rows: u64,
    pub(super) worst: Option<Severity>,
    pub(super) objects: u64,
    pub(super) leased_elsewhere: u64,
    /// Units whose dedup set hit its cap, with the horizon it moved to.
    pub(super) capped: Vec<(WorkUnit, i64)>,
}

impl Total {
    pub(super) fn add(&mut self, o: &Total) {
        self.stats.merge(&o.stats);
        self.late += o.late;
        self.skipped += o.skipped;
        self.steps += o.steps;
        self.rows += o.rows;
        self.worst = self.worst.max(o.worst);
        self.first_ms = match (self.first_ms, o.first_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.objects += o.objects;
        self.leased_elsewhere += o.leased_elsewhere;
        self.capped.extend(o.capped.iter().cloned());
    }

    /// The window the run read: from the earliest unit's start (known as
    /// units open) to the end.
    pub(super) fn window(&self, plan: &Plan) -> (i64, i64) {
        (self.first_ms.unwrap_or(plan.end_ms), plan.end_ms)
    }

    pub(super) fn summary(
        &self,
        scopes: &str,
        groups: usize,
        ((start, end), end_label): ((i64, i64), &str),
        api: &ApiStats,
        objects_in: Option<(&str, &str)>,
    ) -> String {
        format!(
            "{scopes}, {}, window {}..{}{end_label}; {}, {}, {} ({} retried, {} throttled); {}; {} late, {} already reported, {} from other streams ignored",
            count(groups as u64, "log group"),
            rfc3339(start),
            rfc3339(end),
            count(self.steps, "step"),
            count(api.pages.load(Ordering::Relaxed), "page"),
            count(api.attempts.load(Ordering::Relaxed), "API call"),
            api.retries.load(Ordering::Relaxed),
            api.throttled.load(Ordering::Relaxed),
            describe(&self.stats, self.rows as usize),
            self.late,
            self.stats.duplicates,
            count(self.skipped, "event"),
        ) + &match objects_in {
            Some((place, what)) => format!(
                "; {} delivered to {place}{}",
                count(self.objects, what),
                if self.leased_elsewhere > 0 || place == "S3" {
                    format!(
                        ", {} left to other runs (leased)",
                        count(self.leased_elsewhere, "unit")
                    )
                } else {
                    String::new()
                }
            ),
            None => String::new(),
        }
    }
}

/// What one unit's reading did, and on failure, its error.
pub(super) type Outcome = Result<Total, (Total, anyhow::Error)>;

/// The region whose Insights price the cost line uses: one whose price
/// may differ from the built-in us-east-1 one, so the line says so.
pub(super) fn price_region(reaches: &[Reach]) -> &str {
    reaches
        .iter()
        .map(|r| r.scope.region.as_str())
        .find(|r| *r != "us-east-1")
        .unwrap_or("us-east-1")
}

/// How the summary names where the run read: the region alone for one
/// account and region.
pub(super) fn scopes_label(reaches: &[Reach]) -> String {
    let mut accounts: Vec<&str> = reaches.iter().map(|r| r.scope.account.as_str()).collect();
    let mut regions: Vec<&str> = reaches.iter().map(|r| r.scope.region.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    regions.sort_unstable();
    regions.dedup();
    match (accounts.len(), regions.as_slice()) {
        (1, [region]) => region.to_string(),
        (a, r) => format!("{a} account(s) x {} region(s)", r.len()),
    }
}

/// What a run says even with `-q`, once: entries that went on with more
/// rules than they were read with (a blind spot in the past), and units
/// whose dedup set hit its cap.
pub(super) fn warnings(plan: &Plan, upgraded: usize, checkpoint: &str, capped: &[(WorkUnit, i64)]) {
    if upgraded > 0 {
        eprintln!(
            "kubeanon poll: note: {}",
            super::units::upgrade_note(plan, upgraded, checkpoint)
        );
    }
    for (unit, horizon) in capped {
        eprintln!(
            "kubeanon poll: warning: {unit}: more than {} matched events inside the overlap; \
             events before {} that arrive late can no longer be told from reported ones and will not be read again",
            crate::testhooks::max_seen().unwrap_or(crate::checkpoint::MAX_SEEN),
            rfc3339(*horizon)
        );
    }
}
