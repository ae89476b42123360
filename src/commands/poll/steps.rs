//! One unit's steps: read a bounded span of event time, detect, deliver
//! through the protocol, commit, next.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::plan::{Plan, next_midnight, rfc3339};
use super::signals::Interrupted;
use super::tally::{Outcome, Total};
use super::units::{Unit, check_entry};
use crate::checkpoint::{Commit, GroupState, seen_key};
use crate::detect::{Detector, Fed, Findings, Origin};
use crate::exit::Exit;
use crate::fleet::version::anonymous_health_only;
use crate::fleet::{Scope, WorkUnit};
use crate::output::Rows;
use crate::source::advice::enable_audit;
use crate::source::cloudwatch::{self, Api, LogEvent, MissingLogGroup, Pacer, Query, ServerClock};
use crate::source::insights::{self, Insights};
use crate::state::protocol::{Found, Held, Locks, Protocol, Store, Target};

/// How far this machine's clock may run ahead of the server's before a
/// checkpointed run refuses to commit (the Date header has whole seconds,
/// and the answer took its time).
const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60_000;

/// What a scope's units read through: its client, pacer and clock.
pub(super) struct Reach {
    pub(super) scope: Scope,
    pub(super) client: aws_sdk_cloudwatchlogs::Client,
    pub(super) clock: ServerClock,
    pub(super) pacer: Pacer,
    pub(super) endpoint: String,
}

/// What a run shares with each unit's task.
pub(super) struct Ctx<'a, S, L, T> {
    /// The state store, its locks and the target.
    pub(super) proto: &'a Protocol<S, L, T>,
    pub(super) plan: &'a Plan,
    pub(super) checkpointed: bool,
    pub(super) bar: &'a ProgressBar,
    /// `--engine insights`: read steps through it.
    pub(super) insights: Option<&'a Insights>,
    /// Units whose entries were written before `--rules` and go on with
    /// more rules (see [`super::units::upgrade_note`]).
    pub(super) upgraded: &'a AtomicUsize,
    /// SIGINT or SIGTERM, once received: the exit it asks for.
    pub(super) signal: &'a watch::Sender<Option<Exit>>,
}

impl<S, L, T> Ctx<'_, S, L, T> {
    fn interrupted(&self) -> bool {
        self.signal.borrow().is_some()
    }

    /// Resolves once a signal stopped the run.
    pub(super) async fn until_interrupted(&self) {
        let mut rx = self.signal.subscribe();
        if rx.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// `f`, unless a signal stops the run first. Insights reads are let
    /// run: they see the signal and stop their queries before they end.
    async fn unless_interrupted<R>(
        &self,
        f: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        if self.insights.is_some() {
            let r = f.await;
            return match r {
                Err(_) if self.interrupted() => Err(Interrupted.into()),
                r => r,
            };
        }
        tokio::select! {
            r = f => r,
            () = self.until_interrupted() => Err(Interrupted.into()),
        }
    }

    /// A checkpointed step commits only while this machine's clock agrees
    /// with the server's: a clock far ahead would move the watermark past
    /// events not yet written.
    fn check_clock(&self, clock: &ServerClock) -> Result<()> {
        match clock.local_ahead_ms() {
            Some(ahead) if self.checkpointed && ahead > MAX_CLOCK_AHEAD_MS => Err(anyhow!(
                "this machine's clock is {} ahead of CloudWatch's (the Date header of its answers): \
                 a checkpoint moved by it would skip events not yet written. Nothing was delivered or advanced for this log group; \
                 fix the clock (NTP) and run again",
                humantime::format_duration(Duration::from_secs((ahead / 1000) as u64))
            )),
            _ => Ok(()),
        }
    }
}

/// Polls one unit: opens it through the protocol (another run's lock:
/// the unit is left to it), checks its entry as the run's flags ask, then
/// its steps. Returns what it did (on failure, with the error), and the
/// held unit when the target's commits wait for the end of the run.
pub(super) async fn poll_unit<S: Store, L: Locks, T: Target>(
    ctx: &Ctx<'_, S, L, T>,
    api: &Api<'_>,
    reach: &Reach,
    mut unit: Unit,
) -> Polled<S, L> {
    let mut total = Total::default();
    let proto = ctx.proto;
    let mut held = match proto.open(&unit.work).await {
        Ok(Ok(held)) => held,
        Ok(Err(who)) => {
            total.leased_elsewhere += 1;
            eprintln!(
                "kubeanon poll: note: {}: {who}: skipped (that run reads it)",
                unit.work
            );
            return (unit.work, Ok(total), None);
        }
        Err(e) => return (unit.work, Err((total, e)), None),
    };
    if let Some((found, place)) = &held.settled
        && !ctx.plan.out.quiet
    {
        eprintln!(
            "kubeanon poll: the previous run's delivery of {} to {} {}",
            unit.work,
            crate::output::neutralise_terminal(place),
            match found {
                Found::Delivered => "was complete and is now committed",
                Found::Absent => "was not complete: its events are read again",
            }
        );
    }
    let result = async {
        let label = proto.store.describe(&unit.work);
        let (state, upgraded) = check_entry(ctx.plan, &unit.work, held.entry(), &label)?;
        // Counted once: an entry checked before the run began was counted
        // then.
        if upgraded && !unit.upgraded {
            ctx.upgraded.fetch_add(1, Ordering::Relaxed);
        }
        unit.had_entry = held.entry().is_some();
        proto.adopt(&mut held, state.clone());
        unit.state = state;
        poll_steps(ctx, api, reach, &mut unit, &mut total, &mut held).await
    }
    .await;
    if let Some(h) = held.capped {
        total.capped.push((unit.work.clone(), h));
    }
    // The lock goes back whatever happened (a crash leaves it to expire),
    // unless the target's commits wait for the end of the run.
    let (result, held) = if proto.target.defers_commits() {
        (result, Some(held))
    } else {
        (result.and(proto.close(held, true).await), None)
    };
    match result {
        Ok(()) => (unit.work, Ok(total), held),
        Err(e) => (unit.work, Err((total, e)), held),
    }
}

async fn poll_steps<S: Store, L: Locks, T: Target>(
    ctx: &Ctx<'_, S, L, T>,
    api: &Api<'_>,
    reach: &Reach,
    unit: &mut Unit,
    total: &mut Total,
    held: &mut Held<S, L::Guard>,
) -> Result<()> {
    let plan = ctx.plan;
    let (mut start, end) = (unit.start_ms(plan), plan.end_ms);
    if start >= end {
        return Ok(()); // nothing new since the last run
    }
    // The bar grows as units open: a unit's window is known once its
    // state is loaded.
    ctx.bar.inc_length((end - start) as u64);
    // What the log group can hold: nothing from before it existed (less
    // the 14 days CloudWatch takes events late) or past its retention.
    let info = match ctx
        .unless_interrupted(cloudwatch::group_info(
            &reach.client,
            &unit.work.log_group,
            &reach.scope.region,
            &reach.endpoint,
        ))
        .await
    {
        Err(e) if e.is::<Interrupted>() => return Err(e),
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(log_group = %unit.work.log_group, error = %e, "DescribeLogGroups");
            None
        }
    };
    if let Some((floor, why)) = info.and_then(|i| i.floor_ms(plan.now_ms))
        && start < floor
    {
        if end <= floor {
            return Err(anyhow!(
                "the window {}..{} {}: nothing in it can be read, and no findings for it does not mean none happened. \
                 Ask for a window the log group holds (from {} on)",
                rfc3339(start),
                rfc3339(end),
                outside(&unit.work.log_group, why),
                rfc3339(floor)
            ));
        }
        if !plan.out.quiet {
            eprintln!(
                "kubeanon poll: note: {}: {} {}: reading from {}",
                unit.work,
                window_start_label(plan, unit, start),
                reaches_before(&unit.work.log_group, why),
                rfc3339(floor)
            );
        }
        start = floor;
    }
    total.first_ms = Some(start);
    let query = |s: i64, e: i64| Query {
        log_group: unit.work.log_group.clone(),
        stream_prefix: plan.read.stream_prefix.clone(),
        filter_pattern: plan.read.filter_pattern(),
        page_size: plan.page_size,
        start_ms: s,
        end_ms: e,
    };
    // No audit events at all in the window: the cluster's audit logging is
    // off (or the prefix is wrong). Reporting "no findings" would be a lie.
    let has_audit_events = match ctx
        .unless_interrupted(cloudwatch::has_audit_events(api, &query(start, end)))
        .await
    {
        Err(e) if e.is::<MissingLogGroup>() => {
            return Err(anyhow!(
                cloudwatch::explain_missing(&reach.client, &unit.work.log_group, &unit.work.region)
                    .await
            ));
        }
        r => r?,
    };
    if !plan.allow_idle && !has_audit_events {
        return Err(anyhow!(empty_window(plan, unit, (start, end))));
    }
    let mut s = start;
    let mut span = plan.step_ms;
    while s < end {
        if ctx.interrupted() {
            return Err(Interrupted.into());
        }
        let mut e = s.saturating_add(span).min(end);
        if plan.day_steps {
            e = e.min(next_midnight(s));
        }
        // A step over the budget (matched events, or rows: an event makes
        // a row per address and group) is abandoned and halved: memory
        // stays bounded by the budget (a single millisecond is taken whole).
        let step = loop {
            let budget = (e - s > 1).then_some((plan.step_matches, plan.step_rows));
            match ctx
                .unless_interrupted(read_step(ctx, api, &unit.state, &query(s, e), budget))
                .await?
            {
                Some(step) => break step,
                None => e = s + (e - s) / 2,
            }
        };
        ctx.check_clock(&reach.clock)?;
        let commit = Commit {
            account: unit.work.account.clone(),
            region: unit.work.region.clone(),
            log_group: unit.work.log_group.clone(),
            read: plan.read.clone(),
            watermark_ms: e,
            horizon_ms: unit.state.horizon_ms.max(e - plan.overlap_ms),
            new_seen: step.new_seen,
        };
        let (agg, stats) = step.det.finish();
        let findings = agg.into_findings();
        let step_rows = findings.len() as u64;
        let (scope, version) = (unit.work.id_scope(), unit.version.column());
        let fixed = fixed_columns(&unit.work, version);
        let rows = rows_of(&findings, &fixed, &scope, version);
        let stepped = ctx.proto.step(held, (s, e), &rows, &commit).await?;
        total.rows += stepped.rows;
        total.worst = total.worst.max(stepped.worst);
        total.objects += u64::from(stepped.wrote && ctx.proto.target.objects_in().is_some());
        unit.state.apply(&commit);
        total.stats.merge(&stats);
        total.late += step.late;
        total.skipped += step.skipped;
        total.steps += 1;
        ctx.bar.inc((e - s) as u64);
        // Grow the span again once steps are well under the budget.
        span = if stats.matched * 4 < plan.step_matches && step_rows * 4 < plan.step_rows {
            (span.saturating_mul(2)).min(plan.step_ms)
        } else {
            e - s
        };
        s = e;
    }
    Ok(())
}

/// How a note names where the window started: the flag that asked for it,
/// or the checkpoint's watermark.
fn window_start_label(plan: &Plan, unit: &Unit, start: i64) -> String {
    match (&plan.start_label, unit.had_entry && !plan.rebaseline) {
        (Some(flag), false) => flag.clone(),
        _ => format!("the window's start {}", rfc3339(start)),
    }
}

/// "reaches before X existed (created T)" or "reaches past X's retention".
fn reaches_before(log_group: &str, why: cloudwatch::Floor) -> String {
    match why {
        cloudwatch::Floor::Created(c) => format!(
            "reaches before {log_group} existed (created {}; CloudWatch takes no event more than 14 days older)",
            rfc3339(c)
        ),
        cloudwatch::Floor::Retention(d) => {
            format!("reaches past the {d}-day retention of {log_group} (older events are deleted)")
        }
    }
}

/// Why a window entirely before a log group's floor holds nothing.
fn outside(log_group: &str, why: cloudwatch::Floor) -> String {
    match why {
        cloudwatch::Floor::Created(c) => format!(
            "ends before log group {log_group} existed (created {}; CloudWatch takes no event more than 14 days older)",
            rfc3339(c)
        ),
        cloudwatch::Floor::Retention(d) => format!(
            "is past the {d}-day retention of log group {log_group}: its events were deleted"
        ),
    }
}

/// What to say of a window without a single audit event: never "not
/// being watched" when EKS says audit logging is on, or when an earlier run
/// read it.
fn empty_window(plan: &Plan, unit: &Unit, (start, end): (i64, i64)) -> String {
    let head = format!(
        "no audit events between {} and {} in streams starting with '{}'",
        rfc3339(start),
        rfc3339(end),
        plan.read.stream_prefix
    );
    let idle = "--allow-idle accepts an empty window for a cluster known to be idle";
    let recent = if end > plan.now_ms {
        format!(
            " (the window ends {} after now: events arrive up to minutes late)",
            humantime::format_duration(Duration::from_secs(((end - plan.now_ms) / 1000) as u64))
        )
    } else {
        String::new()
    };
    let cluster = unit.work.cluster();
    match unit.audit_on {
        Some(true) => format!(
            "{head}{recent}, yet EKS says cluster {cluster}'s audit logging is on, and a live cluster writes audit events every few seconds: \
             delivery to CloudWatch is late, --stream-prefix is wrong, or the cluster is idle. \
             Read a longer or later window, or check --stream-prefix against the log group's streams; {idle}"
        ),
        _ if unit.had_entry => format!(
            "{head}{recent}, though an earlier run read it: its audit logging may have been turned off since, \
             delivery is late, or the cluster is idle. Check its logging (aws eks describe-cluster --name {cluster} --region {} --query cluster.logging) \
             or --stream-prefix; {idle}",
            unit.work.region
        ),
        Some(false) => format!(
            "{head}{recent}: EKS says audit logging is off, so this cluster is not being watched. {}; {idle}",
            enable_audit(cluster, &unit.work.region)
        ),
        None => format!(
            "{head}{recent}: its audit logging is off, --stream-prefix is wrong, or the cluster is idle. \
             {}, or check --stream-prefix; {idle}",
            enable_audit(cluster, &unit.work.region)
        ),
    }
}

/// Calls `f` with the rows of one step of one unit, whose cluster runs
/// Kubernetes `version` (or `unknown`).
pub(super) fn with_rows<R>(
    findings: &Findings,
    unit: &WorkUnit,
    version: &str,
    f: impl FnOnce(&Rows<'_>) -> R,
) -> R {
    let scope = unit.id_scope();
    let fixed = fixed_columns(unit, version);
    f(&rows_of(findings, &fixed, &scope, version))
}

/// The columns every row of a unit carries.
fn fixed_columns<'a>(unit: &'a WorkUnit, version: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("cluster", unit.cluster()),
        ("log_group", unit.log_group.as_str()),
        ("region", unit.region.as_str()),
        ("account", unit.account.as_str()),
        ("kubernetes_version", version),
    ]
}

/// A unit's rows: its findings with its columns, ids scoped to it.
fn rows_of<'a>(
    findings: &'a Findings,
    fixed: &'a [(&'static str, &'a str)],
    scope: &'a str,
    version: &str,
) -> Rows<'a> {
    Rows {
        findings,
        fixed,
        id_label: Some(scope),
        anonymous_health_only: anonymous_health_only(version) == Some(true),
    }
}

/// One step's reading.
struct Step {
    det: Detector,
    new_seen: Vec<(String, i64)>,
    late: u64,
    skipped: u64,
}

/// Reads one step's window. None when more than `budget`'s events matched
/// or its rows were made.
async fn read_step<S, L, T>(
    ctx: &Ctx<'_, S, L, T>,
    api: &Api<'_>,
    state: &GroupState,
    q: &Query,
    budget: Option<(u64, u64)>,
) -> Result<Option<Step>> {
    let mut det = Detector::new(ctx.plan.out.exclusions.clone())
        .at_least(ctx.plan.out.min_severity)
        .with_rules(ctx.plan.out.rules)
        .max_addresses(ctx.plan.out.max_addresses);
    let mut new_seen = Vec::new();
    let mut late = 0;
    let read = read_events(
        ctx,
        api,
        q,
        |ev| {
            // Only events before the watermark can have been reported, and
            // the set is complete from the horizon on.
            if ev.timestamp < state.watermark_ms
                && let Some(id) = ev.event_id
                && state.seen.contains_key(&seen_key(id))
            {
                det.stats.events += 1;
                det.stats.duplicates += 1;
                return ControlFlow::Continue(());
            }
            let origin = Origin {
                scope: 0,
                event_id: ev.event_id,
                timestamp_ms: Some(ev.timestamp),
            };
            if det.feed(ev.message.as_bytes(), origin) == Fed::Matched {
                if let Some(id) = ev.event_id {
                    new_seen.push((seen_key(id), ev.timestamp));
                }
                if ev.timestamp < state.watermark_ms {
                    late += 1;
                }
                if budget.is_some_and(|(events, rows)| {
                    det.stats.matched + det.stats.truncated > events || det.rows() > rows
                }) {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
        |_, _| {},
    )
    .await?;
    if read.stopped {
        tracing::debug!(log_group = %q.log_group, "step over its budget: halving");
        return Ok(None);
    }
    Ok(Some(Step {
        det,
        new_seen,
        late,
        skipped: read.other_streams + read.outside_window,
    }))
}

/// Reads one step's window with the run's engine, calling `each` for each
/// event (an Insights row's `event_id` is its `@ptr`) and, for
/// FilterLogEvents, `progress` after each page.
async fn read_events<S, L, T>(
    ctx: &Ctx<'_, S, L, T>,
    api: &Api<'_>,
    q: &Query,
    each: impl FnMut(LogEvent<'_>) -> ControlFlow<()>,
    progress: impl FnMut(i64, usize),
) -> Result<cloudwatch::Read> {
    match ctx.insights {
        Some(ins) => insights::read_window(api, ins, q, each).await,
        None => cloudwatch::read_group(api, q, each, progress).await,
    }
}

/// The run's bar: its length is the windows of the units opened so far (each adds its own when its state is
/// loaded), its position what was read of them.
pub(super) fn progress_bar(plan: &Plan) -> ProgressBar {
    if plan.out.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reading CloudWatch Logs [{bar:30}] {percent}% of the window, {elapsed}{msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The work unit of rows that belong to none (the output's end).
pub(super) fn nowhere() -> WorkUnit {
    WorkUnit {
        account: String::new(),
        region: String::new(),
        log_group: String::new(),
    }
}

/// Closes the units whose commits waited for the end of the run (a
/// deferring target): written when the output ended (`flush`), and their
/// locks given back either way.
pub(super) async fn close_held<S: Store, L: Locks, T: Target>(
    proto: &Protocol<S, L, T>,
    results: Vec<Polled<S, L>>,
    flush: bool,
) -> Vec<(WorkUnit, Outcome)> {
    let mut closed = Vec::new();
    for (unit, outcome, held) in results {
        let outcome = match (held, outcome) {
            (Some(h), Ok(t)) => match proto.close(h, flush).await {
                Err(e) if flush => Err((t, e)),
                _ => Ok(t),
            },
            (Some(h), Err(failed)) => {
                let _ = proto.close(h, flush).await;
                Err(failed)
            }
            (None, outcome) => outcome,
        };
        closed.push((unit, outcome));
    }
    closed
}

/// A unit as [`poll_unit`] leaves it: what it did, and the unit still
/// held when the target's commits wait for the end of the run.
pub(super) type Polled<S, L> = (WorkUnit, Outcome, Option<Held<S, <L as Locks>::Guard>>);
