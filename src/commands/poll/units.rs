//! The run's work units: found in each scope, each checked against its
//! entry (read settings, clock) before it is read.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use futures_util::StreamExt;

use super::plan::{Plan, ms, rfc3339};
use super::steps::Reach;
use super::tally::Failure;
use super::{DEFAULT_SINCE, MAX_SCOPES_AT_ONCE};
use crate::checkpoint::{Fits, GroupState};
use crate::detect::Rule;
use crate::exit::UsageError;
use crate::fleet::WorkUnit;
use crate::fleet::discover::{self, Coverage};
use crate::fleet::version::{self, KubernetesVersion};
use crate::source::advice::enable_audit;
use crate::source::cloudwatch;

/// The work units of each reachable scope (named log groups, and with
/// --all-clusters the discovered ones), with the index of their scope and
/// their cluster's Kubernetes version. Blind clusters and scopes whose
/// discovery failed are added to `failed`; deleted clusters whose log
/// groups remain, and versions that could not be learnt, become notes.
pub(super) async fn work_units(
    plan: &Plan,
    reaches: &[Reach],
    failed: &mut Vec<Failure>,
) -> (Vec<(usize, WorkUnit, Described)>, Vec<String>) {
    let found: Vec<Option<Result<discover::Found>>> = futures_util::stream::iter(reaches)
        .map(|r| async move {
            plan.discover.as_ref()?;
            Some(discover::find(&r.scope, plan.fleet.client.attempt_timeout).await)
        })
        .buffered(MAX_SCOPES_AT_ONCE)
        .collect()
        .await;
    let mut units = Vec::new();
    let mut notes = Vec::new();
    // Per scope: the versions discovery learnt, and the units.
    let mut scoped: Vec<(BTreeMap<String, Described>, Vec<WorkUnit>)> = Vec::new();
    for (reach, found) in reaches.iter().zip(found) {
        let scope = &reach.scope;
        let mut groups = plan.named.clone();
        let mut known = BTreeMap::new();
        let patterns = plan.discover.as_deref().unwrap_or_default();
        match found.map(|f| f.map(|f| (discover::select(&f, patterns), f.versions()))) {
            None => {}
            Some(Err(error)) => failed.push(Failure {
                what: scope.to_string(),
                error,
                advanced: false,
            }),
            Some(Ok((coverage, versions))) => {
                // Discovery reads only the clusters with audit logging on.
                known = versions
                    .into_iter()
                    .map(|(g, v)| (g, (v, Some(true))))
                    .collect();
                if coverage.is_empty() {
                    notes.push(format!(
                        "no EKS cluster{} in {scope}",
                        match plan.discover.as_deref() {
                            Some([]) | None => String::new(),
                            Some(p) => format!(" matching {}", p.join(" or ")),
                        }
                    ));
                }
                for c in coverage {
                    match c {
                        Coverage::Readable { log_group, .. } => {
                            if !groups.contains(&log_group) {
                                groups.push(log_group);
                            }
                        }
                        // A cluster's failure or note belongs to the shard
                        // that would read it.
                        c if !plan.shard.contains(&WorkUnit {
                            account: scope.account.clone(),
                            region: scope.region.clone(),
                            log_group: cloudwatch::cluster_log_group(c.cluster()),
                        }) => {}
                        Coverage::AuditOff { cluster } => failed.push(Failure {
                            what: format!("cluster {cluster} ({scope})"),
                            error: anyhow!(
                                "audit logging is off: nothing it is asked can be seen. {}",
                                enable_audit(&cluster, &scope.region)
                            ),
                            advanced: false,
                        }),
                        Coverage::Deleted { cluster, log_group }
                            if !plan.named.contains(&log_group) =>
                        {
                            notes.push(format!(
                                "cluster {cluster} ({scope}) no longer exists; its log group {log_group} remains and is not read (--cluster {cluster} reads it)"
                            ));
                        }
                        Coverage::Deleted { .. } => {}
                    }
                }
            }
        }
        scoped.push((
            known,
            groups
                .into_iter()
                .map(|log_group| WorkUnit {
                    account: scope.account.clone(),
                    region: scope.region.clone(),
                    log_group,
                })
                .filter(|u| plan.shard.contains(u))
                .collect(),
        ));
    }
    // The versions discovery did not learn (--cluster, --log-group): one
    // DescribeCluster per cluster of this shard.
    let looked_up: Vec<BTreeMap<String, Described>> =
        futures_util::stream::iter(reaches.iter().zip(&scoped))
            .map(|(reach, (known, work))| {
                version::lookup_described(
                    &reach.scope,
                    work.iter()
                        .map(|u| u.log_group.as_str())
                        .filter(|g| !known.contains_key(*g)),
                    plan.fleet.client.attempt_timeout,
                )
            })
            .buffered(MAX_SCOPES_AT_ONCE)
            .collect()
            .await;
    for (i, ((mut known, work), looked_up)) in scoped.into_iter().zip(looked_up).enumerate() {
        known.extend(looked_up);
        for u in work {
            let v = known.get(&u.log_group).cloned().unwrap_or((
                KubernetesVersion::Unknown(version::Unknown::Failed(None)),
                None,
            ));
            units.push((i, u, v));
        }
    }
    notes.extend(version::unknown_note(units.iter().map(|(_, _, v)| &v.0)));
    (units, notes)
}

/// A cluster's Kubernetes version and whether EKS says its audit logging
/// is on (None: not known), from one DescribeCluster answer.
pub(super) type Described = (KubernetesVersion, Option<bool>);

/// One work unit's share of the run: its state as the run starts (a new
/// unit's is an empty one at the start of its window), and its scope.
pub(super) struct Unit {
    pub(super) work: WorkUnit,
    pub(super) reach: usize,
    pub(super) state: GroupState,
    /// Its entry was written before `--rules` and goes on with more.
    pub(super) upgraded: bool,
    /// Its cluster's, for the rows' `kubernetes_version` (beside the work
    /// unit, not in it: a unit's identity, its checkpoint entry and its
    /// shard do not change when a cluster is upgraded).
    pub(super) version: KubernetesVersion,
    /// Whether EKS says its audit logging is on (None: not known).
    pub(super) audit_on: Option<bool>,
    /// It had a checkpoint entry before this run.
    pub(super) had_entry: bool,
}

impl Unit {
    /// Where this run reads from: the overlap before the watermark, but
    /// never before the horizon (what is before it cannot be deduplicated).
    pub(super) fn start_ms(&self, plan: &Plan) -> i64 {
        (self.state.watermark_ms - plan.overlap_ms).max(self.state.horizon_ms)
    }
}

/// Checks a unit's checkpoint entry against this run, and makes its unit.
/// `entry`: the unit's entry when the store holds every entry at hand
/// (a checkpoint file), checked before anything is read; None otherwise
/// (checked when the unit opens).
pub(super) fn unit(
    plan: &Plan,
    (reach, work, (version, audit_on)): (usize, WorkUnit, Described),
    entry: Option<Option<GroupState>>,
    checkpoint: &str,
) -> Result<Unit> {
    let old = entry.flatten();
    let (state, upgraded) = check_entry(plan, &work, old.as_ref(), checkpoint)?;
    Ok(Unit {
        work,
        reach,
        state,
        upgraded,
        version,
        audit_on,
        had_entry: old.is_some(),
    })
}

/// A unit's state for this run, from its checkpoint entry (`old`; none: a
/// first run) in `checkpoint` (a file or an s3:// URL, for messages):
/// refused when this run's read settings or clock would move it wrongly.
pub(super) fn check_entry(
    plan: &Plan,
    work: &WorkUnit,
    old: Option<&GroupState>,
    file: &str,
) -> Result<(GroupState, bool)> {
    let fresh = |start: i64| GroupState {
        account: work.account.clone(),
        region: work.region.clone(),
        log_group: work.log_group.clone(),
        read: plan.read.clone(),
        watermark_ms: start,
        horizon_ms: start,
        seen: Default::default(),
    };
    let default_start = plan.start_ms.unwrap_or(plan.end_ms - ms(DEFAULT_SINCE));
    let Some(old) = old else {
        return Ok((fresh(default_start), false));
    };
    if plan.rebaseline {
        let mut state = old.clone();
        state.read = plan.read.clone();
        if let Some(start) = plan.start_ms {
            // Read again from a time the operator trusts; the remembered
            // ids still spare events reported after it.
            state.watermark_ms = start;
            state.horizon_ms = start;
        } else if old.watermark_ms > plan.now_ms {
            return Err(UsageError(format!(
                "checkpoint {file}: {work}'s watermark {} is later than now; --rebaseline needs --start or --since to say where to read from",
                rfc3339(old.watermark_ms)
            ))
            .into());
        }
        return Ok((state, false));
    }
    let fits = old.read.fits(&plan.read);
    if fits == Fits::Differs {
        return Err(refusal(plan, work, old, file).into());
    }
    if old.watermark_ms > plan.now_ms {
        return Err(anyhow!(
            "checkpoint {file}: {work} was read up to {}, later than this machine's clock ({}): \
             the clock went back, or an earlier run's clock was ahead. Nothing was read. \
             If this clock is wrong, fix it (NTP) and run again; if it is right, read again from the last time you trust \
             with --rebaseline --start T (rows after T may be delivered again)",
            rfc3339(old.watermark_ms),
            rfc3339(plan.now_ms)
        ));
    }
    if fits == Fits::Upgrade {
        // Read before --rules, with ESCU's rule alone: the new rules from
        // the watermark on, recorded with the next commit (the run says
        // once what was not read before it: `upgrade_note`).
        let mut state = old.clone();
        state.read = plan.read.clone();
        return Ok((state, true));
    }
    Ok((old.clone(), false))
}

/// Why a unit's entry, read with other settings, may not be moved by this
/// run, and what to do instead.
fn refusal(plan: &Plan, work: &WorkUnit, old: &GroupState, file: &str) -> UsageError {
    let (was, asked) = (old.read.rules_read(), plan.read.rules_read());
    let same_source = old.read.stream_prefix == plan.read.stream_prefix
        && old.read.server_filter == plan.read.server_filter;
    if same_source {
        return UsageError(format!(
            "checkpoint {file} reads {work} with --rules {was}{}, this run asks for --rules {asked}: \
             it would move the watermark past events the schedule's rules match and this run never fetches, \
             or past what the new rules match before it. Keep --rules {was} with this checkpoint; \
             for an ad-hoc backfill with other rules use a separate --checkpoint (or none) with --since or --start; \
             to change the schedule's rules from its watermark on, add --rebaseline",
            if old.read.rules.is_none() {
                " (recorded before --rules existed)"
            } else {
                ""
            }
        ));
    }
    UsageError(format!(
        "checkpoint {file} reads {work} with {}, this run asks for {}: \
         it would move the watermark past events it does not read (or deliver again what the schedule delivers). \
         For an ad-hoc read use another --checkpoint, or none; to change the schedule's settings from its watermark on, add --rebaseline",
        old.read, plan.read
    ))
}

/// Said once per run when entries written before `--rules` (read with
/// ESCU's rule alone) go on with more rules: what the new rules match
/// before their watermarks was never read, and how to read it.
pub(super) fn upgrade_note(plan: &Plan, units: usize, checkpoint: &str) -> String {
    let rules = plan.read.rules_read();
    let mut missed = Vec::new();
    if rules.contains(Rule::Unauthenticated) {
        missed.push("401s with no user (unauthenticated)");
    }
    if rules.contains(Rule::Truncated) {
        missed.push("records CloudWatch cut at its size limit (truncated)");
    }
    format!(
        "checkpoint {checkpoint}: {units} log group(s) were read before --rules existed, with ESCU's rule alone; \
         this run goes on from their watermarks with --rules {rules} and records them. \
         {} from before those watermarks were not read: to backfill them, run once on a separate checkpoint \
         (--checkpoint other.json --since 30d, or --start T; without --checkpoint nothing is recorded)",
        missed.join(" and ")
    )
}

/// Said once when --since or --start is given with a checkpoint whose
/// entries decide where the run starts (without --rebaseline): which
/// window was not read, and how to read it.
pub(super) fn ignored_start_note(plan: &Plan, units: &[Unit], checkpoint: &str) -> Option<String> {
    let flag = plan.start_label.as_ref()?;
    let resumed = units.iter().filter(|u| u.had_entry).count();
    if plan.rebaseline || resumed == 0 {
        return None;
    }
    Some(format!(
        "{flag} is not used for the {resumed} log group(s) with an entry in checkpoint {checkpoint}: \
         their watermarks decide where this run reads from; to read that window, use a separate checkpoint \
         (--checkpoint other.json {flag}, or no --checkpoint), or add --rebaseline to read again from there \
         (rows it delivered before may be delivered again)"
    ))
}
