//! `kubeanon poll`: CloudWatch Logs through the detector, checkpointed.
//!
//! A run: take the checkpoint's lock and settle any journal an earlier run
//! left; check each log group's entry against this run (read settings,
//! clock); then read every log group concurrently (one request-rate budget
//! for the region), each in steps: read a bounded span of event time,
//! deliver its rows, commit its state, next. A log group that fails (or is
//! blind: no audit events at all) stops alone; the others go on.

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use super::describe;
use crate::checkpoint::{Checkpoint, Commit, GroupState, ReadSettings, seen_key};
use crate::cli::{OutputConfig, PollArgs, parse_duration};
use crate::deliver::{self, Delivery, Settled};
use crate::detect::{Detector, Fed, Findings, Origin, Stats};
use crate::exit::{Exit, UsageError};
use crate::output::Rows;
use crate::source::advice;
use crate::source::cloudwatch::{
    self, Api, ApiStats, ClientSettings, MissingLogGroup, Pacer, Query, RetryPolicy, ServerClock,
};
use crate::testhooks;

const DEFAULT_SINCE: Duration = Duration::from_secs(3600);
/// How far this machine's clock may run ahead of the server's before a
/// checkpointed run refuses to commit (the Date header has whole seconds,
/// and the answer took its time).
const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60_000;

/// The flags, checked.
struct Plan {
    log_groups: Vec<String>,
    read: ReadSettings,
    page_size: i32,
    /// Explicit start (ms): the first run's, or a rebaseline's.
    start_ms: Option<i64>,
    end_ms: i64,
    /// How the summary names the end: " (now - 2m lag)" unless --end.
    end_label: String,
    now_ms: i64,
    overlap_ms: i64,
    step_ms: i64,
    step_matches: u64,
    allow_idle: bool,
    rebaseline: bool,
    max_rps: f64,
    retry: RetryPolicy,
    client: ClientSettings,
    out: OutputConfig,
}

fn plan(args: &PollArgs, now_ms: i64) -> Result<Plan, UsageError> {
    let log_groups = args.aws.log_groups()?;
    if !(0.01..=1000.0).contains(&args.max_rps) {
        return Err(UsageError(format!(
            "--max-rps {} is out of range: 0.01 to 1000 requests per second (the account's FilterLogEvents quota is 5-25)",
            args.max_rps
        )));
    }
    let lag = ms(parse_duration("--lag", &args.lag)?);
    let overlap = ms(parse_duration("--overlap", &args.overlap)?);
    let step_ms = ms(parse_duration("--step-span", &args.step_span)?);
    if step_ms < 1000 {
        return Err(UsageError("--step-span must be at least 1s".into()));
    }
    let end_ms = match &args.end {
        Some(t) => parse_time("--end", t, now_ms)?,
        None => now_ms - lag,
    };
    // A checkpoint's watermark must never pass what can have been written:
    // a window ending in the future would skip everything up to there.
    if args.checkpoint.is_some() && end_ms > now_ms - lag {
        return Err(UsageError(format!(
            "--end {} is later than now minus --lag ({}): a checkpointed run may not read past it, \
             or its watermark would skip events not yet written; drop --end, or use no --checkpoint for this read",
            rfc3339(end_ms),
            rfc3339(now_ms - lag)
        )));
    }
    let start_ms = match (&args.start, &args.since) {
        (Some(t), _) => Some(parse_time("--start", t, now_ms)?),
        (None, Some(d)) => {
            let since = ms(parse_duration("--since", d)?);
            if since <= lag && args.end.is_none() {
                return Err(UsageError(format!(
                    "--since {d} is not longer than --lag {}: the last --lag is left out (its events are still arriving), \
                     so the window would be empty; ask for more (--since 1h), or pass --lag 0s to read up to now",
                    args.lag
                )));
            }
            Some(now_ms - since)
        }
        (None, None) => None,
    };
    if let Some(start) = start_ms
        && start >= end_ms
    {
        return Err(UsageError(format!(
            "the window is empty: start {} is not before end {}",
            rfc3339(start),
            rfc3339(end_ms)
        )));
    }
    Ok(Plan {
        end_label: match &args.end {
            Some(_) => String::new(),
            None => format!(" (now - {} lag)", args.lag),
        },
        log_groups,
        read: ReadSettings {
            stream_prefix: args.aws.stream_prefix.clone(),
            server_filter: !args.no_server_filter,
        },
        page_size: args.page_size,
        start_ms,
        end_ms,
        now_ms,
        overlap_ms: overlap,
        step_ms,
        step_matches: args.step_matches,
        allow_idle: args.allow_idle,
        rebaseline: args.rebaseline,
        max_rps: args.max_rps,
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        client: ClientSettings {
            region: args.aws.region.clone(),
            profile: args.aws.profile.clone(),
            endpoint_url: args.aws.endpoint_url.clone(),
            attempt_timeout: parse_duration("--attempt-timeout", &args.attempt_timeout)?,
        },
        out: args.output.resolve()?,
    })
}

pub fn run(args: PollArgs) -> Result<Exit> {
    let plan = plan(&args, testhooks::now_ms())?;
    // Lock before anything else: a second run must touch nothing.
    let mut checkpoint = args
        .checkpoint
        .as_deref()
        .map(Checkpoint::open)
        .transpose()?;
    if let Some(cp) = checkpoint.as_mut() {
        settle(cp, plan.out.quiet)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (client, region, server_clock) = runtime.block_on(cloudwatch::client(&plan.client))?;
    let units = plan
        .log_groups
        .iter()
        .map(|lg| unit(&plan, &region, lg, checkpoint.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    // A rebaseline replaces the entries it changed; they are saved with
    // the first step's commit (a run that fails before it changes nothing).
    if plan.rebaseline
        && let Some(cp) = checkpoint.as_mut()
    {
        for u in &units {
            cp.state.replace(u.state.clone());
        }
    }
    let checkpointed = checkpoint.is_some();
    let delivery = Mutex::new(Delivery::open(
        plan.out.style(plan.now_ms),
        &plan.out.target,
        checkpoint,
    )?);
    let pacer = Pacer::new(plan.max_rps);
    let api_stats = ApiStats::default();
    let endpoint = advice::endpoint(plan.client.endpoint_url.as_deref(), &region);
    let api = Api {
        client: &client,
        endpoint: &endpoint,
        pacer: &pacer,
        retry: plan.retry,
        stats: &api_stats,
    };
    let window = (
        units
            .iter()
            .map(|u| u.start_ms(&plan))
            .min()
            .unwrap_or(plan.end_ms),
        plan.end_ms,
    );
    let bar = progress_bar(&plan, &units);
    let ctx = Ctx {
        plan: &plan,
        api: &api,
        region: &region,
        delivery: &delivery,
        checkpointed,
        server_clock: &server_clock,
        bar: &bar,
    };
    // The log groups are read concurrently on this task; they share the
    // pacer, so concurrency never raises the request rate.
    let results = runtime.block_on(futures_util::future::join_all(
        units.into_iter().map(|u| poll_unit(&ctx, u)),
    ));
    bar.finish_and_clear();
    let delivery = delivery.into_inner().unwrap_or_else(|e| e.into_inner());
    let (delivered_rows, worst) = (delivery.rows, delivery.worst);
    let mut total = Total::default();
    let mut failed = Vec::new();
    for (log_group, result) in results {
        match result {
            Ok(t) => total.add(&t),
            Err((t, err)) => {
                total.add(&t);
                failed.push((log_group, err, t.steps > 0));
            }
        }
    }
    // Failures are never quiet: a blind or failing cluster must be seen.
    for (log_group, err, _) in &failed {
        eprintln!("kubeanon: error: log group {log_group}: {err:#}");
    }
    let advanced = failed.len() < plan.log_groups.len() || failed.iter().any(|f| f.2);
    if !advanced {
        // Nothing was read: leave a previous --output file as it was.
        return Ok(Exit::Error);
    }
    let empty = Findings::default();
    let capped = with_rows(&empty, &region, "", |rows| delivery.finish(rows))?;
    if !plan.out.quiet {
        eprintln!(
            "kubeanon poll: {}",
            total.summary(
                &region,
                plan.log_groups.len(),
                (window, &plan.end_label),
                &api_stats,
                delivered_rows
            )
        );
    }
    for (log_group, horizon) in &capped {
        eprintln!(
            "kubeanon poll: warning: {log_group}: more than {} matched events inside the overlap; \
             events before {} that arrive late can no longer be told from reported ones and will not be read again",
            crate::checkpoint::MAX_SEEN,
            rfc3339(*horizon)
        );
    }
    if failed.is_empty() {
        return Ok(Exit::for_findings(worst, plan.out.fail_on_findings));
    }
    eprintln!(
        "kubeanon poll: {} of {} log group(s) failed; the others were delivered{}",
        failed.len(),
        plan.log_groups.len(),
        if checkpointed { " and advanced" } else { "" }
    );
    Ok(Exit::Partial)
}

/// Settles a journal an earlier run left, and says what it found.
fn settle(cp: &mut Checkpoint, quiet: bool) -> Result<()> {
    let Some((found, file)) = deliver::settle(cp)? else {
        return Ok(());
    };
    let what = match found {
        Settled::Delivered => "was complete and is now committed",
        Settled::RolledBack => {
            "was cut short: it was cut back, and its events are read again by this run"
        }
        Settled::FileChanged => {
            "found the file changed (rotated or edited): its rows are appended again by this run and may appear twice"
        }
    };
    if !quiet || found == Settled::FileChanged {
        eprintln!(
            "kubeanon poll: the previous run's delivery to {} {what}",
            file.display()
        );
    }
    Ok(())
}

/// One log group's share of the run: its state as the run starts (a new
/// group's is an empty one at the start of its window).
struct Unit {
    log_group: String,
    state: GroupState,
}

impl Unit {
    /// Where this run reads from: the overlap before the watermark, but
    /// never before the horizon (what is before it cannot be deduplicated).
    fn start_ms(&self, plan: &Plan) -> i64 {
        (self.state.watermark_ms - plan.overlap_ms).max(self.state.horizon_ms)
    }
}

/// Checks a log group's checkpoint entry against this run, and makes its
/// unit.
fn unit(plan: &Plan, region: &str, log_group: &str, cp: Option<&Checkpoint>) -> Result<Unit> {
    let fresh = |start: i64| GroupState {
        region: region.to_string(),
        log_group: log_group.to_string(),
        read: plan.read.clone(),
        watermark_ms: start,
        horizon_ms: start,
        seen: Default::default(),
    };
    let default_start = plan.start_ms.unwrap_or(plan.end_ms - ms(DEFAULT_SINCE));
    let Some((cp, old)) = cp.and_then(|cp| Some((cp, cp.state.group(region, log_group)?))) else {
        return Ok(Unit {
            log_group: log_group.to_string(),
            state: fresh(default_start),
        });
    };
    let file = cp.path().display();
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
                "checkpoint {file}: log group {log_group}'s watermark {} is later than now; --rebaseline needs --start or --since to say where to read from",
                rfc3339(old.watermark_ms)
            ))
            .into());
        }
        return Ok(Unit {
            log_group: log_group.to_string(),
            state,
        });
    }
    if old.read != plan.read {
        return Err(UsageError(format!(
            "checkpoint {file} reads log group {log_group} with {}, this run asks for {}: \
             it would move the watermark past events it does not read (or deliver again what the schedule delivers). \
             For an ad-hoc read use another --checkpoint, or none; to change the schedule's settings from its watermark on, add --rebaseline",
            old.read, plan.read
        ))
        .into());
    }
    if old.watermark_ms > plan.now_ms {
        return Err(anyhow!(
            "checkpoint {file}: log group {log_group} was read up to {}, later than this machine's clock ({}): \
             the clock went back, or an earlier run's clock was ahead. Nothing was read. \
             If this clock is wrong, fix it (NTP) and run again; if it is right, read again from the last time you trust \
             with --rebaseline --start T (rows after T may be delivered again)",
            rfc3339(old.watermark_ms),
            rfc3339(plan.now_ms)
        ));
    }
    Ok(Unit {
        log_group: log_group.to_string(),
        state: old.clone(),
    })
}

/// What a run shares with each log group's task.
struct Ctx<'a> {
    plan: &'a Plan,
    api: &'a Api<'a>,
    region: &'a str,
    delivery: &'a Mutex<Delivery>,
    checkpointed: bool,
    server_clock: &'a ServerClock,
    bar: &'a ProgressBar,
}

impl Ctx<'_> {
    /// A checkpointed step commits only while this machine's clock agrees
    /// with the server's: a clock far ahead would move the watermark past
    /// events not yet written.
    fn check_clock(&self) -> Result<()> {
        match self.server_clock.local_ahead_ms() {
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

/// Counts of one log group's reads, or of the run.
#[derive(Default)]
struct Total {
    stats: Stats,
    late: u64,
    skipped: u64,
    steps: u64,
}

impl Total {
    fn add(&mut self, o: &Total) {
        self.stats.merge(&o.stats);
        self.late += o.late;
        self.skipped += o.skipped;
        self.steps += o.steps;
    }

    fn summary(
        &self,
        region: &str,
        groups: usize,
        ((start, end), end_label): ((i64, i64), &str),
        api: &ApiStats,
        findings: u64,
    ) -> String {
        format!(
            "{region}, {groups} log group(s), window {}..{}{end_label}; {} steps, {} pages, {} API calls ({} retried, {} throttled); {}; {} late, {} already reported, {} events from other streams ignored",
            rfc3339(start),
            rfc3339(end),
            self.steps,
            api.pages.load(Ordering::Relaxed),
            api.attempts.load(Ordering::Relaxed),
            api.retries.load(Ordering::Relaxed),
            api.throttled.load(Ordering::Relaxed),
            describe(&self.stats, findings as usize),
            self.late,
            self.stats.duplicates,
            self.skipped,
        )
    }
}

/// Polls one log group over its window, step by step. On failure, returns
/// what it did before failing with the error.
async fn poll_unit(
    ctx: &Ctx<'_>,
    mut unit: Unit,
) -> (String, Result<Total, (Total, anyhow::Error)>) {
    let mut total = Total::default();
    let result = poll_steps(ctx, &mut unit, &mut total).await;
    let log_group = unit.log_group;
    match result {
        Ok(()) => (log_group, Ok(total)),
        Err(e) => (log_group, Err((total, e))),
    }
}

async fn poll_steps(ctx: &Ctx<'_>, unit: &mut Unit, total: &mut Total) -> Result<()> {
    let plan = ctx.plan;
    let (start, end) = (unit.start_ms(plan), plan.end_ms);
    if start >= end {
        return Ok(()); // nothing new since the last run
    }
    let query = |s: i64, e: i64| Query {
        log_group: unit.log_group.clone(),
        stream_prefix: plan.read.stream_prefix.clone(),
        filter_pattern: plan
            .read
            .server_filter
            .then(|| cloudwatch::SERVER_FILTER.to_string()),
        page_size: plan.page_size,
        start_ms: s,
        end_ms: e,
    };
    // No audit events at all in the window: the cluster's audit logging is
    // off (or the prefix is wrong). Reporting "no findings" would be a lie.
    let has_audit_events = match cloudwatch::has_audit_events(ctx.api, &query(start, end)).await {
        Err(e) if e.is::<MissingLogGroup>() => {
            return Err(anyhow!(
                cloudwatch::explain_missing(ctx.api.client, &unit.log_group, ctx.region).await
            ));
        }
        r => r?,
    };
    if !plan.allow_idle && !has_audit_events {
        let cluster = cloudwatch::cluster_name(&unit.log_group);
        return Err(anyhow!(
            "no audit events between {} and {} in streams starting with '{}': this cluster is not being watched. \
             Enable its audit logs (aws eks update-cluster-config --name {cluster} --logging \
             '{{\"clusterLogging\":[{{\"types\":[\"audit\"],\"enabled\":true}}]}}'), or check --stream-prefix; \
             --allow-idle accepts an empty window for a cluster known to be idle",
            rfc3339(start),
            rfc3339(end),
            plan.read.stream_prefix
        ));
    }
    let mut s = start;
    let mut span = plan.step_ms;
    while s < end {
        let mut e = s.saturating_add(span).min(end);
        // A step over the budget is abandoned and halved: memory stays
        // bounded by the budget (a single millisecond is taken whole).
        let step = loop {
            let budget = (e - s > 1).then_some(plan.step_matches);
            match read_step(ctx, &unit.state, &query(s, e), budget).await? {
                Some(step) => break step,
                None => e = s + (e - s) / 2,
            }
        };
        ctx.check_clock()?;
        let commit = Commit {
            region: ctx.region.to_string(),
            log_group: unit.log_group.clone(),
            read: plan.read.clone(),
            watermark_ms: e,
            horizon_ms: unit.state.horizon_ms.max(e - plan.overlap_ms),
            new_seen: step.new_seen,
        };
        let (agg, stats) = step.det.finish();
        let findings = agg.into_findings();
        with_rows(&findings, ctx.region, &unit.log_group, |rows| {
            let mut delivery = ctx.delivery.lock().unwrap_or_else(|e| e.into_inner());
            delivery.step(rows, ctx.checkpointed.then(|| commit.clone()))
        })?;
        unit.state.apply(&commit);
        total.stats.merge(&stats);
        total.late += step.late;
        total.skipped += step.skipped;
        total.steps += 1;
        ctx.bar.inc((e - s) as u64);
        // Grow the span again once steps are well under the budget.
        span = if stats.matched * 4 < plan.step_matches {
            (span.saturating_mul(2)).min(plan.step_ms)
        } else {
            e - s
        };
        s = e;
    }
    Ok(())
}

/// Calls `f` with the rows of one step of one log group.
fn with_rows<R>(
    findings: &Findings,
    region: &str,
    log_group: &str,
    f: impl FnOnce(&Rows<'_>) -> R,
) -> R {
    let label = format!("{region}\n{log_group}");
    let fixed = [
        ("cluster", cloudwatch::cluster_name(log_group)),
        ("log_group", log_group),
        ("region", region),
    ];
    f(&Rows {
        findings,
        fixed: &fixed,
        id_label: Some(&label),
    })
}

/// One step's reading.
struct Step {
    det: Detector,
    new_seen: Vec<(String, i64)>,
    late: u64,
    skipped: u64,
}

/// Reads one step's window. None when more than `budget` events matched.
async fn read_step(
    ctx: &Ctx<'_>,
    state: &GroupState,
    q: &Query,
    budget: Option<u64>,
) -> Result<Option<Step>> {
    let mut det =
        Detector::new(ctx.plan.out.exclusions.clone()).at_least(ctx.plan.out.min_severity);
    let mut new_seen = Vec::new();
    let mut late = 0;
    let read = cloudwatch::read_group(
        ctx.api,
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
            };
            if det.feed(ev.message.as_bytes(), origin) == Fed::Matched {
                if let Some(id) = ev.event_id {
                    new_seen.push((seen_key(id), ev.timestamp));
                }
                if ev.timestamp < state.watermark_ms {
                    late += 1;
                }
                if budget.is_some_and(|b| det.stats.matched > b) {
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

fn progress_bar(plan: &Plan, units: &[Unit]) -> ProgressBar {
    if plan.out.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let total: i64 = units
        .iter()
        .map(|u| (plan.end_ms - u.start_ms(plan)).max(0))
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reading CloudWatch Logs [{bar:30}] {percent}% of the window, {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `--start`/`--end`: RFC 3339, or a duration before now.
fn parse_time(flag: &str, text: &str, now_ms: i64) -> Result<i64, UsageError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    match humantime::parse_duration(text) {
        Ok(d) => Ok(now_ms - ms(d)),
        Err(_) => Err(UsageError(format!(
            "{flag} '{text}': expected an RFC 3339 time (2026-01-31T12:00:00Z) or a duration before now (2h)"
        ))),
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("--start", "2h", now).unwrap(), now - 7_200_000);
        assert_eq!(
            parse_time("--start", "2023-11-14T22:13:20Z", now).unwrap(),
            now
        );
        assert!(
            parse_time("--start", "yesterday", now)
                .unwrap_err()
                .0
                .contains("--start")
        );
        assert_eq!(rfc3339(now), "2023-11-14T22:13:20.000Z");
    }
}
