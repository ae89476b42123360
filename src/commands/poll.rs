//! `kubeanon poll`: CloudWatch Logs through the detector, checkpointed.
//!
//! A run: take the checkpoint's lock, finish any interrupted delivery,
//! read every log group's window concurrently (one request-rate budget for
//! the region), then write the findings and only after they are durable
//! advance the checkpoint. Any failure before that leaves the checkpoint
//! as it was, so the next run reads the same events again.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use super::describe;
use crate::checkpoint::{self, Checkpoint, GroupState, Pending, Recovery};
use crate::cli::{OutputConfig, PollArgs, parse_duration};
use crate::detect::{Aggregator, Detector, Fed, Finding, Findings, Origin, Stats};
use crate::exit::{Exit, UsageError};
use crate::output::{self, Rows, Target};
use crate::source::cloudwatch::{self, Api, ApiStats, ClientSettings, Pacer, Query, RetryPolicy};

/// Columns poll adds after the fixed 14.
const EXTRA: [&str; 4] = ["cluster", "log_group", "region", "id"];
const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

/// The flags, checked.
struct Plan {
    log_groups: Vec<String>,
    stream_prefix: String,
    filter_pattern: Option<String>,
    page_size: i32,
    /// Explicit first-run start (ms), or None for the default.
    start_ms: Option<i64>,
    end_ms: i64,
    overlap_ms: i64,
    max_rps: f64,
    retry: RetryPolicy,
    client: ClientSettings,
    out: OutputConfig,
}

fn plan(args: PollArgs, now_ms: i64) -> Result<Plan, UsageError> {
    let log_groups = args.aws.log_groups()?;
    if !(args.max_rps > 0.0 && args.max_rps.is_finite()) {
        return Err(UsageError("--max-rps must be a positive number".into()));
    }
    let lag = ms(parse_duration("--lag", &args.lag)?);
    let overlap = ms(parse_duration("--overlap", &args.overlap)?);
    let end_ms = match &args.end {
        Some(t) => parse_time("--end", t, now_ms)?,
        None => now_ms - lag,
    };
    let start_ms = match (&args.start, &args.since) {
        (Some(t), _) => Some(parse_time("--start", t, now_ms)?),
        (None, Some(d)) => Some(now_ms - ms(parse_duration("--since", d)?)),
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
        log_groups,
        stream_prefix: args.aws.stream_prefix.clone(),
        filter_pattern: (!args.no_server_filter).then(|| cloudwatch::SERVER_FILTER.to_string()),
        page_size: args.page_size,
        start_ms,
        end_ms,
        overlap_ms: overlap,
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
    let now_ms = Utc::now().timestamp_millis();
    let checkpoint_path = args.checkpoint.clone();
    let plan = plan(args, now_ms)?;
    // Lock before anything else: a second run must touch nothing.
    let mut checkpoint = checkpoint_path
        .as_deref()
        .map(Checkpoint::open)
        .transpose()?;
    if let Some(cp) = checkpoint.as_mut() {
        recover(cp, plan.out.quiet)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let state = checkpoint
        .as_ref()
        .map(|c| c.state.clone())
        .unwrap_or_else(checkpoint::State::new);
    let outcome = runtime.block_on(read_all(&plan, &state))?;
    deliver(&plan, checkpoint.as_mut(), &outcome)?;
    if !plan.out.quiet {
        eprintln!("kubeanon poll: {}", outcome.summary());
    }
    Ok(Exit::for_findings(
        outcome.findings.len(),
        plan.out.fail_on_findings,
    ))
}

/// Finishes a delivery that an earlier run recorded but may not have made.
fn recover(cp: &mut Checkpoint, quiet: bool) -> Result<()> {
    let Some(pending) = cp.state.pending.take() else {
        return Ok(());
    };
    let outcome = checkpoint::complete_delivery(&pending)?;
    if !quiet || outcome == Recovery::AppendedAfterChange {
        let what = match outcome {
            Recovery::AlreadyDelivered => "was complete",
            Recovery::Completed => "was cut short and has been completed",
            Recovery::Delivered => "had not started and has been made",
            Recovery::AppendedAfterChange => {
                "found the file changed (rotated or edited) and appended its rows at the end; they may appear twice"
            }
        };
        eprintln!(
            "kubeanon poll: the previous run's delivery to {} {what}",
            pending.file.display()
        );
    }
    cp.state.update(pending.groups);
    cp.save()
}

/// What reading all log groups produced.
struct Outcome {
    region: String,
    groups: Vec<GroupState>,
    findings: Findings,
    /// Log group of each scope, and the label its row ids hash.
    names: Vec<String>,
    labels: Vec<String>,
    stats: Stats,
    late: u64,
    api: ApiStats,
    skipped_streams: u64,
    window: (i64, i64),
    group_count: usize,
}

impl Outcome {
    /// The values of poll's extra columns for a finding.
    fn extra(&self, f: &Finding<'_>) -> Vec<String> {
        let lg = &self.names[f.scope as usize];
        vec![
            cloudwatch::cluster_name(lg).to_string(),
            lg.clone(),
            self.region.clone(),
            f.id(&self.labels[f.scope as usize]),
        ]
    }

    fn summary(&self) -> String {
        let api_calls = self.api.attempts.load(Ordering::Relaxed);
        format!(
            "{}, {} log group(s), window {}..{}; {} pages, {} API calls ({} retried, {} throttled); {}; {} late, {} already reported, {} events from other streams ignored",
            self.region,
            self.group_count,
            rfc3339(self.window.0),
            rfc3339(self.window.1),
            self.api.pages.load(Ordering::Relaxed),
            api_calls,
            self.api.retries.load(Ordering::Relaxed),
            self.api.throttled.load(Ordering::Relaxed),
            describe(&self.stats, self.findings.len()),
            self.late,
            self.stats.duplicates,
            self.skipped_streams,
        )
    }
}

/// One log group's share of the run.
struct GroupRun {
    query: Query,
    old: Option<GroupState>,
    det: Detector,
    new_seen: Vec<(String, i64)>,
    late: u64,
    skipped: u64,
}

async fn read_all(plan: &Plan, state: &checkpoint::State) -> Result<Outcome> {
    let (client, region) = cloudwatch::client(&plan.client).await?;
    let pacer = Pacer::new(plan.max_rps);
    let api_stats = ApiStats::default();
    let api = Api {
        client: &client,
        pacer: &pacer,
        retry: plan.retry,
        stats: &api_stats,
    };
    let default_start = plan.start_ms.unwrap_or(plan.end_ms - ms(DEFAULT_SINCE));
    let runs: Vec<GroupRun> = plan
        .log_groups
        .iter()
        .map(|lg| {
            let old = state.group(&region, lg).cloned();
            let start_ms = old
                .as_ref()
                .map_or(default_start, |o| o.watermark_ms - plan.overlap_ms);
            GroupRun {
                query: Query {
                    log_group: lg.clone(),
                    stream_prefix: plan.stream_prefix.clone(),
                    filter_pattern: plan.filter_pattern.clone(),
                    page_size: plan.page_size,
                    start_ms,
                    end_ms: plan.end_ms,
                },
                old,
                det: Detector::new(plan.out.exclusions.clone()),
                new_seen: Vec::new(),
                late: 0,
                skipped: 0,
            }
        })
        .collect();
    let window = (
        runs.iter()
            .map(|r| r.query.start_ms)
            .min()
            .unwrap_or(plan.end_ms),
        plan.end_ms,
    );
    let bar = progress_bar(&runs, plan.out.quiet);
    let bar_events = AtomicU64::new(0);
    // The log groups are read concurrently on this task; they share the
    // pacer, so concurrency never raises the request rate.
    let reads = runs.into_iter().enumerate().map(|(scope, mut run)| {
        let api = &api;
        let bar = (&bar, &bar_events);
        async move {
            read_one(api, &mut run, scope as u32, bar).await?;
            Ok::<_, anyhow::Error>(run)
        }
    });
    // try_join_all: the first failed log group fails the run.
    let runs = futures_util::future::try_join_all(reads).await?;
    bar.finish_and_clear();
    Ok(assemble(plan, region, runs, api_stats, window))
}

async fn read_one(
    api: &Api<'_>,
    run: &mut GroupRun,
    scope: u32,
    (bar, bar_events): (&ProgressBar, &AtomicU64),
) -> Result<()> {
    if run.query.start_ms >= run.query.end_ms {
        return Ok(()); // nothing new since the last run
    }
    let seen = run.old.as_ref().map(|o| &o.seen);
    let old_watermark = run.old.as_ref().map_or(i64::MIN, |o| o.watermark_ms);
    let det = &mut run.det;
    let new_seen = &mut run.new_seen;
    let late = &mut run.late;
    let mut shown = run.query.start_ms;
    let skipped = cloudwatch::read_group(
        api,
        &run.query,
        |ev| {
            if let (Some(id), Some(seen)) = (ev.event_id, seen)
                && seen.contains_key(id)
            {
                // Reported by an earlier run: rescanned in the overlap.
                det.stats.events += 1;
                det.stats.duplicates += 1;
                return;
            }
            let origin = Origin {
                scope,
                event_id: ev.event_id,
            };
            if det.feed(ev.message.as_bytes(), origin) == Fed::Matched {
                if let Some(id) = ev.event_id {
                    new_seen.push((id.to_string(), ev.timestamp));
                }
                if ev.timestamp < old_watermark {
                    *late += 1;
                }
            }
        },
        |latest, page_events| {
            if latest > shown {
                bar.inc((latest - shown) as u64);
                shown = latest;
            }
            let events =
                bar_events.fetch_add(page_events as u64, Ordering::Relaxed) + page_events as u64;
            let pages = api.stats.pages.load(Ordering::Relaxed);
            bar.set_message(format!("{events} events, {pages} pages"));
        },
    )
    .await?;
    run.skipped = skipped.other_streams + skipped.outside_window;
    Ok(())
}

fn progress_bar(runs: &[GroupRun], quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total: i64 = runs
        .iter()
        .map(|r| (r.query.end_ms - r.query.start_ms).max(0))
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reading CloudWatch Logs [{bar:30}] {percent}% of the window, {msg}, {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn assemble(
    plan: &Plan,
    region: String,
    runs: Vec<GroupRun>,
    api: ApiStats,
    window: (i64, i64),
) -> Outcome {
    let mut agg = Aggregator::default();
    let mut stats = Stats::default();
    let mut late = 0;
    let mut skipped_streams = 0;
    let mut groups = Vec::new();
    let labels: Vec<String> = runs
        .iter()
        .map(|r| format!("{region}\n{}", r.query.log_group))
        .collect();
    let names: Vec<String> = runs.iter().map(|r| r.query.log_group.clone()).collect();
    for run in runs {
        groups.push(next_state(&region, &run, plan));
        late += run.late;
        skipped_streams += run.skipped;
        let (a, s) = run.det.finish();
        agg.merge(a);
        stats.merge(&s);
    }
    let findings = agg.into_findings();
    let group_count = names.len();
    Outcome {
        region,
        groups,
        findings,
        names,
        labels,
        stats,
        late,
        api,
        skipped_streams,
        window,
        group_count,
    }
}

/// The group's checkpoint entry after this run: the watermark moves to the
/// window's end, and the remembered eventIds are those still inside the
/// next run's overlap.
fn next_state(region: &str, run: &GroupRun, plan: &Plan) -> GroupState {
    let watermark_ms = run
        .old
        .as_ref()
        .map_or(run.query.end_ms, |o| o.watermark_ms.max(run.query.end_ms));
    let keep_from = watermark_ms - plan.overlap_ms;
    let mut seen: BTreeMap<String, i64> =
        run.old.as_ref().map(|o| o.seen.clone()).unwrap_or_default();
    seen.extend(run.new_seen.iter().cloned());
    seen.retain(|_, ts| *ts >= keep_from);
    GroupState {
        region: region.to_string(),
        log_group: run.query.log_group.clone(),
        watermark_ms,
        seen,
    }
}

/// Writes the findings, then (only then) advances the checkpoint. To an
/// append file with a checkpoint, the delivery is recorded first so that a
/// crash at any point is completed by the next run: exactly once.
fn deliver(plan: &Plan, checkpoint: Option<&mut Checkpoint>, outcome: &Outcome) -> Result<()> {
    let extra = |f: &Finding<'_>| outcome.extra(f);
    let rows = Rows {
        extra_columns: &EXTRA,
        findings: &outcome.findings,
        extra: &extra,
    };
    let Some(cp) = checkpoint else {
        return output::write(plan.out.format, &plan.out.target, &rows);
    };
    if let Target::Append(path) = &plan.out.target {
        let offset = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut data = Vec::new();
        output::render(plan.out.format, &rows, &mut data, offset == 0)?;
        let data = String::from_utf8(data).context("output is not UTF-8")?;
        if !data.is_empty() {
            cp.state.pending = Some(Pending {
                file: path.clone(),
                offset,
                data,
                groups: outcome.groups.clone(),
            });
            cp.save()?;
            if checkpoint::fault_point("after-pending") {
                std::process::abort();
            }
            checkpoint::fault_pause();
            let pending = cp.state.pending.take().expect("just set");
            if let Err(err) = checkpoint::complete_delivery(&pending) {
                roll_back(cp, &pending);
                return Err(err);
            }
        }
    } else {
        output::write(plan.out.format, &plan.out.target, &rows)?;
    }
    if checkpoint::fault_point("after-output") {
        std::process::abort();
    }
    checkpoint::fault_pause();
    cp.state.update(outcome.groups.clone());
    cp.save()
}

/// A failed append (disk full, say) that did not crash: cut the file back
/// to where it was and forget the pending delivery, so both are as before
/// the run. If that fails too, the recorded delivery stays and the next
/// run completes it.
fn roll_back(cp: &Checkpoint, pending: &Pending) {
    let truncated = std::fs::OpenOptions::new()
        .write(true)
        .open(&pending.file)
        .and_then(|f| f.set_len(pending.offset).and_then(|()| f.sync_all()));
    if truncated.is_ok() && cp.save().is_ok() {
        return;
    }
    eprintln!(
        "kubeanon poll: could not roll back the failed delivery to {}; the next run will complete it",
        pending.file.display()
    );
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
