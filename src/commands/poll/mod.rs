//! `kubeanon poll`: CloudWatch Logs through the detector, checkpointed.
//!
//! This module is wiring: check the flags into a [`Plan`], build the
//! state store and its locks (a checkpoint file, or S3 state and leases)
//! and the run's one delivery target (`backends`: stdout, -o, --append,
//! S3 objects, Security Hub or HEC), then run every work unit
//! of the fleet through the one protocol (`crate::state::protocol`):
//! open (lock, load, settle), steps (read, detect, deliver, commit),
//! close. A unit that fails (or is blind: audit logging off, no audit
//! events at all) stops alone; the others go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::cli::PollArgs;
use crate::detect::Findings;
use crate::exit::Exit;
use crate::fleet;
use crate::fleet::version;
use crate::output::StdoutClosed;
use crate::source::advice;
use crate::source::cloudwatch::{self, Api, ApiStats, Pacer};
use crate::source::insights::Insights;
use crate::state::file::{FileStore, NoLocks};
use crate::state::protocol::{Locks, Protocol, Store, Target};
use crate::testhooks;

mod backends;
mod plan;
mod signals;
mod steps;
mod tally;
mod units;

use backends::{delivery, s3_state};
use plan::{Plan, plan};
use signals::{Interrupted, interrupted_line, listen_for_signals};
use steps::{Ctx, Reach, poll_unit, progress_bar};
use tally::{Failure, Total, price_region, scopes_label};
use units::{ignored_start_note, unit, work_units};

/// (account, region) pairs discovered or read at once. Each has its own
/// pacer, so this bounds the run's total request rate to this many times
/// --max-rps, and its open connections.
const MAX_SCOPES_AT_ONCE: usize = 8;
/// Units of one scope read at once. A unit's lock (an S3 lease) is taken
/// when it starts, so a unit waiting its turn holds nothing, and the
/// scope's pacer stays busy with this many.
const UNITS_AT_ONCE: usize = 8;

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
    let store = match (&plan.s3_state, args.checkpoint.as_deref()) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(FileStore::open(path)?),
        (None, None) => Some(FileStore::memory()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signal = Arc::new(watch::Sender::new(None));
    runtime.spawn(listen_for_signals(signal.clone()));
    let fleet = runtime.block_on(fleet::scopes(&plan.fleet))?;
    let target = runtime.block_on(delivery(&plan, &fleet))?;
    match (store, &plan.s3_state) {
        (Some(store), _) => {
            if store.needs_caller() {
                // Entries from before accounts were written with the
                // caller's credentials.
                let caller = match &fleet.caller {
                    Some(a) => a.clone(),
                    None => runtime.block_on(fleet::caller_account(&fleet.base))?,
                };
                store.adopt_caller(&caller);
            }
            let name = store.path().map(|p| p.display().to_string());
            let proto = Protocol {
                store,
                locks: NoLocks,
                target,
            };
            let exit = drive(&plan, &runtime, fleet, &proto, &signal, name);
            proto.store.finish()?;
            exit
        }
        (None, Some(state)) => {
            let (store, locks) = runtime.block_on(s3_state(&plan, &fleet.base, state))?;
            let proto = Protocol {
                store,
                locks,
                target,
            };
            drive(
                &plan,
                &runtime,
                fleet,
                &proto,
                &signal,
                Some(state.to_string()),
            )
        }
        (None, None) => unreachable!("a store is built for every run without S3 state"),
    }
}

/// Runs every unit of the fleet through `proto`, then says what happened.
/// `checkpoint`: where state is kept (None: nowhere, an ad-hoc read).
fn drive<S: Store, L: Locks, T: Target>(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    fleet: fleet::Fleet,
    proto: &Protocol<S, L, T>,
    signal: &watch::Sender<Option<Exit>>,
    checkpoint: Option<String>,
) -> Result<Exit> {
    let checkpointed = checkpoint.is_some();
    let checkpoint_name = checkpoint.unwrap_or_default();
    let mut failed: Vec<Failure> = fleet
        .unreachable
        .into_iter()
        .map(|u| Failure {
            what: format!("account {}", u.account),
            error: u.error,
            advanced: false,
        })
        .collect();
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
    let (work, notes) = runtime.block_on(work_units(plan, &reaches, &mut failed));
    // Every entry the store holds here is checked before anything is
    // read: a run with the wrong flags touches nothing.
    let units = work
        .into_iter()
        .map(|u| {
            let entry = proto.store.local_entry(&u.1);
            unit(plan, u, entry, &checkpoint_name)
        })
        .collect::<Result<Vec<_>>>()?;
    // Once, even with -q: a window asked for and not read is a surprise.
    if let Some(note) = ignored_start_note(plan, &units, &checkpoint_name) {
        eprintln!("kubeanon poll: note: {note}");
    }
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
    let bar = progress_bar(plan);
    let insights = plan.insights.clone().map(Insights::new);
    if let Some(ins) = &insights {
        ins.show_on(&bar);
    }
    let ctx = Ctx {
        proto,
        insights: insights.as_ref(),
        plan,
        checkpointed,
        bar: &bar,
        upgraded: &AtomicUsize::new(units.iter().filter(|u| u.upgraded).count()),
        signal,
    };
    let unit_count = units.len();
    let mut by_scope: Vec<Vec<units::Unit>> = (0..reaches.len()).map(|_| Vec::new()).collect();
    for u in units {
        by_scope[u.reach].push(u);
    }
    let results = runtime.block_on(async {
        let reads = futures_util::stream::iter(by_scope.into_iter().enumerate())
            .map(|(i, units)| {
                let (api, reach, ctx) = (&apis[i], &reaches[i], &ctx);
                futures_util::stream::iter(units)
                    .map(move |u| poll_unit(ctx, api, reach, u))
                    .buffer_unordered(UNITS_AT_ONCE)
                    .collect::<Vec<_>>()
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
    let advanced = results
        .iter()
        .any(|(_, o, _)| o.as_ref().map_or_else(|(t, _)| t.steps > 0, |_| true))
        || (results.is_empty() && failed.is_empty());
    // The output ends as a whole run's does, even when a signal cut it
    // short: what was written stays. A run that read nothing leaves a
    // previous --output file as it was. Commits that waited for the end
    // (a replaced file) are written only once it ended.
    let finished = if signal.is_some() || advanced {
        let empty = Findings::default();
        steps::with_rows(&empty, &steps::nowhere(), version::UNKNOWN, |rows| {
            proto.target.finish(rows)
        })
    } else {
        Err(anyhow!("nothing was read"))
    };
    let results = runtime.block_on(steps::close_held(proto, results, finished.is_ok()));
    let mut total = Total::default();
    let (mut succeeded, mut cut_short) = (0, 0);
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
        finished?;
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
    let advanced = succeeded > 0 || failed.is_empty() || failed.iter().any(|f| f.advanced);
    if !advanced {
        // Nothing was read: a previous --output file stays as it was.
        return Ok(Exit::Error);
    }
    finished?;
    if !plan.out.quiet {
        for note in &notes {
            eprintln!("kubeanon poll: note: {note}");
        }
        eprintln!(
            "kubeanon poll: {}",
            total.summary(
                &scopes_label(&reaches),
                unit_count,
                (total.window(plan), &plan.end_label),
                &api_stats,
                proto.target.objects_in()
            )
        );
        if let Some(ins) = &insights {
            eprintln!("kubeanon poll: {}", ins.cost_line(price_region(&reaches)));
        }
    }
    tally::warnings(
        plan,
        ctx.upgraded.load(Ordering::Relaxed),
        &checkpoint_name,
        &total.capped,
    );
    if failed.is_empty() {
        return Ok(Exit::for_findings(total.worst, plan.out.fail_on_findings));
    }
    eprintln!(
        "kubeanon poll: {} failed; {} of {} {} delivered{}",
        failed.len(),
        succeeded,
        super::count(unit_count as u64, "log group"),
        if succeeded == 1 { "was" } else { "were" },
        if checkpointed { " and advanced" } else { "" }
    );
    Ok(Exit::Partial)
}

/// How long a default first run reads back.
const DEFAULT_SINCE: Duration = Duration::from_secs(3600);
