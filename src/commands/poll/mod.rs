//! `kubeanon poll`: CloudWatch Logs through the detector, checkpointed.
//!
//! A run: take the checkpoint's lock and settle any journal an earlier run
//! left; reach each (account, region) of the fleet and, with
//! `--all-clusters`, discover its clusters; check each work unit's entry
//! against this run (read settings, clock); then read every unit
//! concurrently (one request-rate budget per account and region), each in
//! steps: read a bounded span of event time, deliver its rows, commit its
//! state, next. A unit that fails (or is blind: audit logging off, no audit
//! events at all) stops alone; the others go on.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::{count, describe};
use crate::checkpoint::{Checkpoint, Commit, Fits, GroupState, seen_key};
use crate::cli::PollArgs;
use crate::deliver::{self, Delivery, Settled};
use crate::detect::{Detector, Fed, Findings, Origin, Rule, Stats};
use crate::exit::{Exit, UsageError};
use crate::fleet::discover::{self, Coverage};
use crate::fleet::version::{self, KubernetesVersion, anonymous_health_only};
use crate::fleet::{self, Scope, WorkUnit};
use crate::output::{Format, Parts, Rows, StdoutClosed, Style};
use crate::source::advice::{self, enable_audit};
use crate::source::cloudwatch::{
    self, Api, ApiStats, LogEvent, MissingLogGroup, Pacer, Query, ServerClock,
};
use crate::source::insights::{self, Insights};
use crate::state::protocol::{Held, S3Run, Stepped};
use crate::state::{Bucket, Deliveries, Leases, S3Url, States};
use crate::testhooks;

mod plan;

use plan::{Plan, ms, plan, rfc3339};

const DEFAULT_SINCE: Duration = Duration::from_secs(3600);
/// How far this machine's clock may run ahead of the server's before a
/// checkpointed run refuses to commit (the Date header has whole seconds,
/// and the answer took its time).
const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60_000;
/// (account, region) pairs discovered or read at once. Each has its own
/// pacer, so this bounds the run's total request rate to this many times
/// --max-rps, and its open connections.
const MAX_SCOPES_AT_ONCE: usize = 8;

/// What a scope's units read through: its client, pacer and clock.
struct Reach {
    scope: Scope,
    client: aws_sdk_cloudwatchlogs::Client,
    clock: ServerClock,
    pacer: Pacer,
    endpoint: String,
}

/// Something the run could not read, and whether it delivered anything
/// before it failed.
struct Failure {
    what: String,
    error: anyhow::Error,
    advanced: bool,
}

pub fn run(args: PollArgs) -> Result<Exit> {
    let checkpointed = args.checkpoint.is_some();
    run_checked(args).map_err(|e| {
        // A closed stdout (`| head`) ends a run without a checkpoint as it
        // ends scan: exit 0. With one, rows not written were not committed:
        // exit 1, and the next run reads them again.
        if checkpointed && closed_stdout(&e) {
            anyhow!(
                "stdout was closed before every row was written: what was not written was not committed, \
                 and the next run reads it again"
            )
        } else {
            e
        }
    })
}

/// Did `e` come of stdout's reader going away?
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

fn run_checked(args: PollArgs) -> Result<Exit> {
    let plan = plan(&args, testhooks::now_ms())?;
    // Lock before anything else: a second run must touch nothing.
    let mut checkpoint = match plan.s3 {
        Some(_) => None,
        None => args
            .checkpoint
            .as_deref()
            .map(Checkpoint::open)
            .transpose()?,
    };
    if let Some(cp) = checkpoint.as_mut() {
        settle(cp, plan.out.quiet)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signal = Arc::new(watch::Sender::new(None));
    runtime.spawn(listen_for_signals(signal.clone()));
    let fleet = runtime.block_on(fleet::scopes(&plan.fleet))?;
    let s3 = match &plan.s3 {
        Some((state, deliver)) => {
            Some(runtime.block_on(s3_run(&plan, &fleet.base, state, deliver))?)
        }
        None => None,
    };
    let mut failed: Vec<Failure> = fleet
        .unreachable
        .into_iter()
        .map(|u| Failure {
            what: format!("account {}", u.account),
            error: u.error,
            advanced: false,
        })
        .collect();
    if let Some(cp) = checkpoint.as_mut()
        && cp.state.has_entries_without_account()
    {
        // Entries from before accounts were written with the caller's
        // credentials.
        let caller = match &fleet.caller {
            Some(a) => a.clone(),
            None => runtime.block_on(fleet::caller_account(&fleet.base))?,
        };
        cp.state.adopt(&caller);
    }
    let reaches: Vec<Reach> = fleet
        .scopes
        .into_iter()
        .map(|scope| {
            let (client, clock) = cloudwatch::logs_client(&scope.config);
            Reach {
                endpoint: advice::endpoint(
                    plan.fleet.client.endpoint_url.as_deref(),
                    &scope.region,
                ),
                client,
                clock,
                pacer: Pacer::new(plan.max_rps),
                scope,
            }
        })
        .collect();
    let (work, notes) = runtime.block_on(work_units(&plan, &reaches, &mut failed));
    let units = work
        .into_iter()
        .map(|u| unit(&plan, u, checkpoint.as_ref()))
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
    let checkpointed = checkpoint.is_some() || s3.is_some();
    let checkpoint_name = match (&checkpoint, &plan.s3) {
        (Some(cp), _) => cp.path().display().to_string(),
        (None, Some((state, _))) => state.to_string(),
        (None, None) => String::new(),
    };
    // Once, even with -q: a window asked for and not read is a surprise.
    if let Some(note) = ignored_start_note(&plan, &units, &checkpoint_name) {
        eprintln!("kubeanon poll: note: {note}");
    }
    let delivery = Mutex::new(Delivery::open(
        plan.out.style(plan.now_ms),
        &plan.out.target,
        checkpoint,
    )?);
    let api_stats = ApiStats::default();
    let apis: Vec<Api> = reaches
        .iter()
        .map(|r| Api {
            client: &r.client,
            endpoint: &r.endpoint,
            region: &r.scope.region,
            pacer: &r.pacer,
            retry: plan.retry,
            stats: &api_stats,
        })
        .collect();
    let window = (
        units
            .iter()
            .map(|u| u.start_ms(&plan))
            .min()
            .unwrap_or(plan.end_ms),
        plan.end_ms,
    );
    let bar = progress_bar(&plan, &units);
    let insights = plan.insights.clone().map(Insights::new);
    if let Some(ins) = &insights {
        ins.show_on(&bar);
    }
    let upgraded = AtomicUsize::new(units.iter().filter(|u| u.upgraded).count());
    let ctx = Ctx {
        s3: s3.as_ref(),
        insights: insights.as_ref(),
        plan: &plan,
        delivery: &delivery,
        checkpointed,
        bar: &bar,
        upgraded: &upgraded,
        signal: &signal,
    };
    let unit_count = units.len();
    // Each scope's units are read concurrently on its pacer, so
    // concurrency never raises a scope's request rate; scopes run a
    // bounded number at a time.
    let mut by_scope: Vec<Vec<Unit>> = (0..reaches.len()).map(|_| Vec::new()).collect();
    for u in units {
        by_scope[u.reach].push(u);
    }
    let results: Vec<(WorkUnit, Outcome)> = runtime.block_on(async {
        let reads = futures_util::stream::iter(by_scope.into_iter().enumerate())
            .map(|(i, units)| {
                let (api, reach) = (&apis[i], &reaches[i]);
                let ctx = &ctx;
                futures_util::future::join_all(
                    units
                        .into_iter()
                        .map(move |u| poll_unit(ctx, api, reach, u)),
                )
            })
            .buffer_unordered(MAX_SCOPES_AT_ONCE)
            .flat_map(futures_util::stream::iter)
            .collect::<Vec<_>>();
        tokio::pin!(reads);
        let mut told = false;
        loop {
            tokio::select! {
                results = &mut reads => break results,
                // Insights reads stop their running queries themselves.
                () = ctx.until_interrupted(), if !told => {
                    told = true;
                    if let Some(ins) = &insights {
                        ins.interrupt();
                    }
                }
            }
        }
    });
    let signal = *signal.borrow();
    bar.finish_and_clear();
    let delivery = delivery.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut total = Total::default();
    let mut succeeded = 0;
    let mut cut_short = 0;
    for (unit, result) in results {
        match result {
            Ok(t) => {
                total.add(&t);
                succeeded += 1;
            }
            Err((t, error)) if signal.is_some() && error.is::<Interrupted>() => {
                total.add(&t);
                cut_short += usize::from(t.steps > 0);
            }
            Err((t, error)) => {
                total.add(&t);
                failed.push(Failure {
                    what: unit.to_string(),
                    error,
                    advanced: t.steps > 0,
                });
            }
        }
    }
    // A unit that stopped because stdout was closed failed nothing the
    // reader wanted (with a checkpoint: see `run`).
    if !checkpointed && failed.iter().any(|f| closed_stdout(&f.error)) {
        failed.retain(|f| !closed_stdout(&f.error));
        if failed.is_empty() {
            return Err(anyhow::Error::new(StdoutClosed));
        }
    }
    // Failures are never quiet: a blind or failing cluster must be seen.
    failed.sort_by(|a, b| a.what.cmp(&b.what));
    for f in &failed {
        eprintln!("kubeanon: error: {}: {:#}", f.what, f.error);
    }
    if let Some(exit) = signal {
        if s3.is_none() {
            // Close the output as a whole run does: what was written stays.
            with_rows(&Findings::default(), &nowhere(), version::UNKNOWN, |rows| {
                delivery.finish(rows)
            })?;
        }
        eprintln!(
            "kubeanon poll: {}",
            interrupted_line(
                exit,
                (succeeded, cut_short, unit_count),
                checkpointed,
                insights.as_ref()
            )
        );
        return Ok(exit);
    }
    // A spent scan budget that cut reads short fails the whole run: exit 1
    // (one that came after every read ended changed nothing).
    if let Some(ins) = &insights
        && ins.stopped().is_some()
        && !failed.is_empty()
    {
        if !plan.out.quiet {
            eprintln!("kubeanon poll: {}", ins.cost_line(price_region(&reaches)));
        }
        return Ok(Exit::Error);
    }
    let (delivered_rows, worst) = match s3 {
        Some(_) => (total.s3_rows, total.worst),
        None => (delivery.rows, delivery.worst),
    };
    let advanced = succeeded > 0 || failed.is_empty() || failed.iter().any(|f| f.advanced);
    if !advanced {
        // Nothing was read: leave a previous --output file as it was.
        return Ok(Exit::Error);
    }
    let empty = Findings::default();
    // With S3 deliveries stdout gets no rows, not even an empty document.
    let capped = match s3 {
        Some(_) => Vec::new(),
        None => with_rows(&empty, &nowhere(), version::UNKNOWN, |rows| {
            delivery.finish(rows)
        })?,
    };
    if !plan.out.quiet {
        for note in &notes {
            eprintln!("kubeanon poll: note: {note}");
        }
        eprintln!(
            "kubeanon poll: {}",
            total.summary(
                &scopes_label(&reaches),
                unit_count,
                (
                    (total.first_ms.unwrap_or(window.0), window.1),
                    &plan.end_label
                ),
                &api_stats,
                delivered_rows,
                s3.is_some()
            )
        );
        if let Some(ins) = &insights {
            eprintln!("kubeanon poll: {}", ins.cost_line(price_region(&reaches)));
        }
    }
    // Once per run, even with -q: a blind spot in the past, said once.
    let upgraded = upgraded.into_inner();
    if upgraded > 0 {
        eprintln!(
            "kubeanon poll: note: {}",
            upgrade_note(&plan, upgraded, &checkpoint_name)
        );
    }
    for (unit, horizon) in &capped {
        eprintln!(
            "kubeanon poll: warning: {unit}: more than {} matched events inside the overlap; \
             events before {} that arrive late can no longer be told from reported ones and will not be read again",
            crate::checkpoint::MAX_SEEN,
            rfc3339(*horizon)
        );
    }
    if failed.is_empty() {
        return Ok(Exit::for_findings(worst, plan.out.fail_on_findings));
    }
    eprintln!(
        "kubeanon poll: {} failed; {} of {} {} delivered{}",
        failed.len(),
        succeeded,
        count(unit_count as u64, "log group"),
        if succeeded == 1 { "was" } else { "were" },
        if checkpointed { " and advanced" } else { "" }
    );
    Ok(Exit::Partial)
}

/// The work unit of rows that belong to none (the output's end).
fn nowhere() -> WorkUnit {
    WorkUnit {
        account: String::new(),
        region: String::new(),
        log_group: String::new(),
    }
}

/// A read cut short by SIGINT or SIGTERM.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Takes SIGINT and SIGTERM over for the run: the first one stops every
/// read (what was committed stays; the run then exits 130 or 143), a
/// second one quits at once with that code.
async fn listen_for_signals(signal: Arc<watch::Sender<Option<Exit>>>) {
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
fn interrupted_line(
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
    }
    line
}

/// The S3 side of a run: the state bucket (states and leases), the
/// deliveries bucket, and this run's leases.
async fn s3_run(
    plan: &Plan,
    config: &aws_config::SdkConfig,
    state: &S3Url,
    deliver: &S3Url,
) -> Result<S3Run> {
    let timeout = plan.fleet.client.attempt_timeout;
    let states = Bucket::with_config(config, timeout, state.clone()).await?;
    let deliveries = Bucket::with_config(config, timeout, deliver.clone()).await?;
    let leases = Leases::new(states.clone(), plan.lease, crate::state::lease::holder_id())
        .map_err(|e| {
            UsageError(format!(
                "--lease {}: {e:#}",
                humantime::format_duration(plan.lease)
            ))
        })?;
    Ok(S3Run {
        states: States::new(states),
        leases,
        deliveries: Deliveries::new(deliveries),
    })
}

/// The region whose Insights price the cost line uses: one whose price
/// may differ from the built-in us-east-1 one, so the line says so.
fn price_region(reaches: &[Reach]) -> &str {
    reaches
        .iter()
        .map(|r| r.scope.region.as_str())
        .find(|r| *r != "us-east-1")
        .unwrap_or("us-east-1")
}

/// How the summary names where the run read: the region alone for one
/// account and region.
fn scopes_label(reaches: &[Reach]) -> String {
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

/// The work units of each reachable scope (named log groups, and with
/// --all-clusters the discovered ones), with the index of their scope and
/// their cluster's Kubernetes version. Blind clusters and scopes whose
/// discovery failed are added to `failed`; deleted clusters whose log
/// groups remain, and versions that could not be learnt, become notes.
async fn work_units(
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
type Described = (KubernetesVersion, Option<bool>);

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

/// One work unit's share of the run: its state as the run starts (a new
/// unit's is an empty one at the start of its window), and its scope.
struct Unit {
    work: WorkUnit,
    reach: usize,
    state: GroupState,
    /// Its entry was written before `--rules` and goes on with more.
    upgraded: bool,
    /// Its cluster's, for the rows' `kubernetes_version` (beside the work
    /// unit, not in it: a unit's identity, its checkpoint entry and its
    /// shard do not change when a cluster is upgraded).
    version: KubernetesVersion,
    /// Whether EKS says its audit logging is on (None: not known).
    audit_on: Option<bool>,
    /// It had a checkpoint entry before this run.
    had_entry: bool,
}

impl Unit {
    /// Where this run reads from: the overlap before the watermark, but
    /// never before the horizon (what is before it cannot be deduplicated).
    fn start_ms(&self, plan: &Plan) -> i64 {
        (self.state.watermark_ms - plan.overlap_ms).max(self.state.horizon_ms)
    }
}

/// Checks a unit's checkpoint entry against this run, and makes its unit.
fn unit(
    plan: &Plan,
    (reach, work, (version, audit_on)): (usize, WorkUnit, Described),
    cp: Option<&Checkpoint>,
) -> Result<Unit> {
    let file = cp.map(|cp| cp.path().display().to_string());
    let old = cp.and_then(|cp| cp.state.group(&work));
    let (state, upgraded) = check_entry(plan, &work, old, file.as_deref().unwrap_or_default())?;
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
fn check_entry(
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
fn upgrade_note(plan: &Plan, units: usize, checkpoint: &str) -> String {
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
fn ignored_start_note(plan: &Plan, units: &[Unit], checkpoint: &str) -> Option<String> {
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

/// What a run shares with each unit's task.
struct Ctx<'a> {
    /// State and deliveries in S3, instead of `delivery`'s checkpoint.
    s3: Option<&'a S3Run>,
    plan: &'a Plan,
    delivery: &'a Mutex<Delivery>,
    checkpointed: bool,
    bar: &'a ProgressBar,
    /// `--engine insights`: read steps through it.
    insights: Option<&'a Insights>,
    /// Units whose entries were written before `--rules` and go on with
    /// more rules (see [`upgrade_note`]).
    upgraded: &'a AtomicUsize,
    /// SIGINT or SIGTERM, once received: the exit it asks for.
    signal: &'a watch::Sender<Option<Exit>>,
}

impl Ctx<'_> {
    fn interrupted(&self) -> bool {
        self.signal.borrow().is_some()
    }

    /// Resolves once a signal stopped the run.
    async fn until_interrupted(&self) {
        let mut rx = self.signal.subscribe();
        if rx.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// `f`, unless a signal stops the run first. Insights reads are let
    /// run: they see the signal and stop their queries before they end.
    async fn unless_interrupted<T>(
        &self,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
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

/// Counts of one log group's reads, or of the run.
#[derive(Default)]
struct Total {
    stats: Stats,
    late: u64,
    skipped: u64,
    steps: u64,
    /// Where the earliest read began (S3 state is read per unit, so the
    /// run's window is known only as units start).
    first_ms: Option<i64>,
    /// S3: rows and objects delivered, the worst severity among them,
    /// units another run held.
    s3_rows: u64,
    worst: Option<crate::detect::Severity>,
    objects: u64,
    leased_elsewhere: u64,
}

impl Total {
    fn add(&mut self, o: &Total) {
        self.stats.merge(&o.stats);
        self.late += o.late;
        self.skipped += o.skipped;
        self.steps += o.steps;
        self.s3_rows += o.s3_rows;
        self.worst = self.worst.max(o.worst);
        self.first_ms = match (self.first_ms, o.first_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.objects += o.objects;
        self.leased_elsewhere += o.leased_elsewhere;
    }

    fn summary(
        &self,
        scopes: &str,
        groups: usize,
        ((start, end), end_label): ((i64, i64), &str),
        api: &ApiStats,
        findings: u64,
        s3: bool,
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
            describe(&self.stats, findings as usize),
            self.late,
            self.stats.duplicates,
            count(self.skipped, "event"),
        ) + &if s3 {
            format!(
                "; {} delivered to S3, {} left to other runs (leased)",
                count(self.objects, "object"),
                count(self.leased_elsewhere, "unit")
            )
        } else {
            String::new()
        }
    }
}

/// What one unit's reading did, and on failure, its error.
type Outcome = Result<Total, (Total, anyhow::Error)>;

/// Polls one unit over its window, step by step. On failure, returns what
/// it did before failing with the error.
async fn poll_unit(
    ctx: &Ctx<'_>,
    api: &Api<'_>,
    reach: &Reach,
    mut unit: Unit,
) -> (WorkUnit, Outcome) {
    let mut total = Total::default();
    let result = match ctx.s3 {
        None => poll_steps(ctx, api, reach, &mut unit, &mut total, None).await,
        Some(s3) => poll_s3(ctx, api, reach, s3, &mut unit, &mut total).await,
    };
    match result {
        Ok(()) => (unit.work, Ok(total)),
        Err(e) => (unit.work, Err((total, e))),
    }
}

/// A unit with its state in S3: its lease held for the unit's reading
/// (another run's lease: the unit is left to it), its state read and
/// checked as a local checkpoint entry is, then its steps.
async fn poll_s3(
    ctx: &Ctx<'_>,
    api: &Api<'_>,
    reach: &Reach,
    s3: &S3Run,
    unit: &mut Unit,
    total: &mut Total,
) -> Result<()> {
    let mut held = match s3.open(&unit.work).await? {
        Ok(held) => held,
        Err(info) => {
            total.leased_elsewhere += 1;
            eprintln!(
                "kubeanon poll: note: {}: {info}: skipped (that run reads it)",
                unit.work
            );
            return Ok(());
        }
    };
    if let Some(found) = held.settled
        && !ctx.plan.out.quiet
    {
        eprintln!(
            "kubeanon poll: the previous run's delivery of {} {}",
            unit.work,
            if found {
                "was written and is now committed"
            } else {
                "was not written: its events are read again"
            }
        );
    }
    let label = format!("the S3 state of {}", unit.work);
    let result = async {
        let (state, upgraded) = check_entry(
            ctx.plan,
            &unit.work,
            held.doc.as_ref().map(|d| &d.group),
            &label,
        )?;
        if upgraded {
            ctx.upgraded.fetch_add(1, Ordering::Relaxed);
        }
        s3.adopt(&mut held, state.clone());
        unit.state = state;
        unit.had_entry = held.doc.is_some();
        poll_steps(ctx, api, reach, unit, total, Some((s3, &mut held))).await
    }
    .await;
    // The lease goes back whatever happened (a crash leaves it to expire).
    let released = s3.close(held).await;
    result.and(released)
}

async fn poll_steps(
    ctx: &Ctx<'_>,
    api: &Api<'_>,
    reach: &Reach,
    unit: &mut Unit,
    total: &mut Total,
    mut s3: Option<(&S3Run, &mut Held)>,
) -> Result<()> {
    let plan = ctx.plan;
    let (mut start, end) = (unit.start_ms(plan), plan.end_ms);
    if start >= end {
        return Ok(()); // nothing new since the last run
    }
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
        // A step over the budget is abandoned and halved: memory stays
        // bounded by the budget (a single millisecond is taken whole).
        let step = loop {
            let budget = (e - s > 1).then_some(plan.step_matches);
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
        match s3.as_mut() {
            None => with_rows(&findings, &unit.work, unit.version.column(), |rows| {
                let mut delivery = ctx.delivery.lock().unwrap_or_else(|e| e.into_inner());
                delivery.step(rows, ctx.checkpointed.then(|| commit.clone()))
            })?,
            Some((s3, held)) => {
                // Each object is a whole document: ndjson (OCSF findings
                // with --format ocsf), rolled up with --rollup.
                let style = Style {
                    format: match plan.out.format {
                        Format::Ocsf => Format::Ocsf,
                        _ => Format::Ndjson,
                    },
                    colour: false,
                    ..plan.out.style(plan.now_ms)
                };
                let mut parts = Parts::new(style, None);
                let ndjson = with_rows(&findings, &unit.work, unit.version.column(), |rows| {
                    let mut buf = Vec::new();
                    parts
                        .write(rows, &mut buf)
                        .and_then(|()| parts.finish(rows, &mut buf))
                        .map(|()| buf)
                })
                .context("cannot render a delivery")?;
                match s3.step(held, (s, e), &ndjson, &commit).await? {
                    Stepped::Committed => {}
                    Stepped::Delivered | Stepped::AlreadyThere => {
                        total.objects += 1;
                        total.s3_rows += parts.written.rows;
                        total.worst = total.worst.max(parts.written.worst);
                    }
                }
            }
        }
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
fn with_rows<R>(
    findings: &Findings,
    unit: &WorkUnit,
    version: &str,
    f: impl FnOnce(&Rows<'_>) -> R,
) -> R {
    let scope = unit.id_scope();
    let fixed = [
        ("cluster", unit.cluster()),
        ("log_group", unit.log_group.as_str()),
        ("region", unit.region.as_str()),
        ("account", unit.account.as_str()),
        ("kubernetes_version", version),
    ];
    f(&Rows {
        findings,
        fixed: &fixed,
        id_label: Some(&scope),
        anonymous_health_only: anonymous_health_only(version) == Some(true),
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
    api: &Api<'_>,
    state: &GroupState,
    q: &Query,
    budget: Option<u64>,
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
                if budget.is_some_and(|b| det.stats.matched + det.stats.truncated > b) {
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
async fn read_events(
    ctx: &Ctx<'_>,
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
            "{spinner} reading CloudWatch Logs [{bar:30}] {percent}% of the window, {elapsed}{msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
