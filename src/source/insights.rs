//! CloudWatch Logs Insights as a server-side prefilter (`poll --engine insights`).
//!
//! FilterLogEvents reads a log group at a few requests per second per
//! account and region; Insights scans months of it in parallel on the
//! server and is priced per GB scanned. kubeanon uses Insights only to
//! narrow the events down: the query returns a superset of the anonymous
//! events, and every returned message goes through the same detector as a
//! FilterLogEvents read, with the stream and the window checked again here.
//! Findings are the same as a FilterLogEvents run's because of three rules:
//!
//! - **Windows.** Insights takes whole seconds and includes an event when
//!   `start * 1000 <= timestamp <= end * 1000` (the start second whole, only
//!   the first millisecond of the end second). A window `[s, e)` in ms is
//!   queried as `[floor(s / 1000), ceil(e / 1000)]`, split into ranges that
//!   meet at whole seconds, and each range keeps only the rows in its own
//!   `[a * 1000, b * 1000)` and in `[s, e)`: no gap, no overlap.
//! - **Never truncated.** A query that returns as many rows as its limit, or
//!   whose statistics matched more rows than it returned, was cut short: its
//!   range is split and queried again. A one-second range that is still cut
//!   is read with FilterLogEvents instead.
//! - **Whole messages.** A returned message that is not complete JSON (a
//!   server may shorten long field values; a prefix of a JSON object is
//!   never valid JSON itself, so a shortened message is always caught) is
//!   not judged from its row: its second is read again with
//!   FilterLogEvents, and the Insights rows of that second are not used.
//!
//! One query reads one log group, although StartQuery takes up to 50: a
//! poll's unit is one log group (its steps, rows and failures are its own),
//! a missing or denied log group then fails alone instead of failing a
//! shared query, the rows of a busy cluster do not split the ranges of a
//! quiet one, and the bytes scanned (the price) are the same either way.
//!
//! Every request goes through the run's pacer and retry policy
//! ([`send_paced`]); at most `--max-queries` queries run at once across the
//! run; StartQuery's `LimitExceededException` (the account's concurrent
//! queries are taken) is waited out; GetQueryResults is polled with
//! backoff; queries still running are stopped (StopQuery) when a read
//! fails, is interrupted (SIGINT, SIGTERM) or the scan budget is spent.
//!
//! StartQuery takes no client token, so an attempt whose answer is lost (a
//! timeout, a dropped connection, a 5xx, a run stopped while it was under
//! way) may have started a query that runs on, billed, for up to 60
//! minutes while the retry starts another. Each attempt's query string
//! therefore begins with a comment line naming the attempt
//! (`# kubeanon-RUN-N`), and the queries of lost answers are looked up by
//! it with DescribeQueries: found, they are stopped and their bytes
//! counted like any other query's; not found, the cost line says so.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use aws_sdk_cloudwatchlogs::error::SdkError;
use aws_sdk_cloudwatchlogs::operation::get_query_results::GetQueryResultsOutput;
use aws_sdk_cloudwatchlogs::types::{QueryStatus, ResultField};
use futures_util::stream::{FuturesUnordered, StreamExt};
use indicatif::ProgressBar;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::advice;
use super::cloudwatch::{self, Api, LogEvent, Query, Read, send_paced};

/// How long a StopQuery may take when a run is being stopped (and each
/// call that looks for, stops or meters a lost query).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// DescribeQueries pages read at most when looking for lost queries (1,000
/// queries a page; the account's recent queries, dashboards' included).
const DESCRIBE_PAGES: usize = 10;
use crate::detect::{Rule, Rules};

/// The published price of Logs Insights in us-east-1, USD per GB scanned
/// (<https://aws.amazon.com/cloudwatch/pricing/>, "Logs Insights queries").
pub const US_EAST_1_PRICE_PER_GB: f64 = 0.005;

/// A GB as the budget and the estimate count it (10^9 bytes).
pub const GB: f64 = 1e9;

/// How a run uses Insights.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rows one query may return (`--query-limit`); a query that returns
    /// this many is split.
    pub limit: u32,
    /// Queries running at once across the run (`--max-queries`).
    pub max_queries: usize,
    /// Stop the run once more than this many bytes were scanned
    /// (`--max-scan-gb`).
    pub max_scan_bytes: Option<f64>,
    pub polling: Polling,
    /// `--rules`: what the query selects (a superset; the core judges).
    pub rules: Rules,
}

/// Waits between the calls about one query.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    /// Before the first GetQueryResults of a query; doubled after each
    /// answer that it is still running, up to `cap`.
    pub first: Duration,
    pub cap: Duration,
    /// After a `LimitExceededException`, before StartQuery again; doubled
    /// up to `limit_wait_cap`, given up after `limit_wait_total`.
    pub limit_wait: Duration,
    pub limit_wait_cap: Duration,
    pub limit_wait_total: Duration,
    /// A query still running this long after it started is stopped and
    /// taken as timed out (AWS times queries out after 60 minutes).
    pub deadline: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            first: Duration::from_millis(250),
            cap: Duration::from_secs(5),
            limit_wait: Duration::from_secs(2),
            limit_wait_cap: Duration::from_secs(30),
            limit_wait_total: Duration::from_secs(30 * 60),
            deadline: Duration::from_secs(65 * 60),
        }
    }
}

/// Why the run's Insights reads stopped before their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C.
    Interrupted,
    /// More than `--max-scan-gb` was scanned.
    Budget,
}

/// A read that ended because the run was stopped.
#[derive(Debug)]
pub struct Stopped(pub String);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stopped {}

/// Counters of a run's Insights use.
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries started (StartQuery answered with an id).
    pub queries: AtomicU64,
    /// Ranges split because their query was cut short or timed out.
    pub splits: AtomicU64,
    /// Queries started again after ending Failed, Cancelled or Unknown.
    pub reruns: AtomicU64,
    /// StartQuery calls that found the account's concurrent queries taken.
    pub limit_waits: AtomicU64,
    /// Seconds read with FilterLogEvents (a second still cut short, or
    /// holding a message that was not whole).
    pub reread_seconds: AtomicU64,
    /// Queries stopped with StopQuery.
    pub stopped: AtomicU64,
    /// Queries StopQuery failed for (they may have ended meanwhile).
    pub not_stopped: AtomicU64,
    /// StartQuery attempts whose answer was lost (timed out, connection
    /// dropped, 5xx, unreadable, or the run stopped while it was awaited):
    /// each may have started a query.
    pub lost: AtomicU64,
    /// Of those, queries found by their attempt's marker (DescribeQueries),
    /// then stopped and counted.
    pub lost_found: AtomicU64,
    /// Of the found ones, those whose statistics could not be read: their
    /// bytes are not counted.
    pub lost_unmetered: AtomicU64,
    /// Lost answers whose query was not found at the read's end: it never
    /// started, or runs on unseen.
    pub lost_not_found: AtomicU64,
    /// DescribeQueries calls that failed or timed out (a role without
    /// `logs:DescribeQueries`, say): what they sought was not found.
    pub describe_failed: AtomicU64,
}

/// A StartQuery attempt that has not yet said whether it started a query.
#[derive(Debug)]
struct Attempt {
    read: u64,
    /// Its answer was lost (else it is still awaited).
    lost: bool,
}

/// Bytes scanned: by queries that ended, and by each running one so far.
#[derive(Debug, Default)]
struct Scanned {
    ended: f64,
    /// Query id -> (the read it belongs to, bytes scanned so far).
    running: HashMap<String, (u64, f64)>,
}

impl Scanned {
    fn total(&self) -> f64 {
        self.ended + self.running.values().map(|r| r.1).sum::<f64>()
    }
}

/// A StartQuery attempt under way. Its answer settles it: a query id
/// (the query is registered as running) or a refusal that started nothing.
/// Dropped unsettled (the answer was lost, or the run stopped while it was
/// awaited), the attempt is lost: its query is looked for by its marker.
struct Pending<'i> {
    ins: &'i Insights,
    marker: String,
    settled: bool,
}

impl Pending<'_> {
    /// The query string this attempt sends: its marker as a comment line
    /// first (Logs Insights ignores `#` to the end of the line; a first
    /// line keeps emulators that parse the commands happy), then `query`.
    fn query(&self, query: &str) -> String {
        format!("# {}\n{query}", self.marker)
    }

    /// Answered with a query id: a running query of its read.
    fn started(mut self, id: &str) {
        self.settled = true;
        let read = lock(&self.ins.attempts)
            .remove(&self.marker)
            .map(|a| a.read);
        if let Some(read) = read {
            self.ins.stats.queries.fetch_add(1, Ordering::Relaxed);
            self.ins.register(id, read);
        }
    }

    /// Refused in a way that started nothing.
    fn refused(mut self) {
        self.settled = true;
        lock(&self.ins.attempts).remove(&self.marker);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(a) = lock(&self.ins.attempts).get_mut(&self.marker) {
            a.lost = true;
            self.ins.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Could this failed StartQuery attempt have started a query? Not when the
/// request never reached the server (no connection, no such host, not
/// built) or the server refused it (4xx: invalid, denied, throttled, the
/// account's queries taken); otherwise (a timeout, a dropped connection, a
/// 5xx, an answer that could not be read) it may have.
fn may_have_started<E: std::error::Error + 'static>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(_) => {
            !advice::is_connect_failure(err) && !advice::is_no_such_host(err)
        }
        SdkError::ServiceError(e) => e.raw().status().as_u16() >= 500,
        _ => true,
    }
}

/// The Insights engine of one run: settings, the query slots, the budget,
/// the counters and the stop signal, shared by every log group's reads.
pub struct Insights {
    settings: Settings,
    slots: Semaphore,
    scanned: Mutex<Scanned>,
    stop: Arc<watch::Sender<Option<Stop>>>,
    next_read: AtomicU64,
    /// This run's part of every attempt marker: random, so that another
    /// run's queries (DescribeQueries lists the account's) never match.
    run_tag: u64,
    next_attempt: AtomicU64,
    /// Marker -> StartQuery attempt not yet answered with a query id.
    attempts: Mutex<HashMap<String, Attempt>>,
    bar: Mutex<Option<ProgressBar>>,
    pub stats: Stats,
}

impl Insights {
    pub fn new(settings: Settings) -> Self {
        Insights {
            slots: Semaphore::new(settings.max_queries.max(1)),
            settings,
            scanned: Mutex::default(),
            stop: Arc::new(watch::Sender::new(None)),
            next_read: AtomicU64::new(0),
            run_tag: fastrand::u64(..),
            next_attempt: AtomicU64::new(0),
            attempts: Mutex::default(),
            bar: Mutex::new(None),
            stats: Stats::default(),
        }
    }

    /// Shows the queries' progress as the message of `bar`.
    pub fn show_on(&self, bar: &ProgressBar) {
        *lock(&self.bar) = Some(bar.clone());
    }

    /// Bytes scanned so far, running queries included.
    pub fn bytes_scanned(&self) -> f64 {
        lock(&self.scanned).total()
    }

    /// Why the run was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        *self.stop.borrow()
    }

    /// Stops every read of the run, as Ctrl-C does: running queries are
    /// stopped by the reads they belong to.
    pub fn interrupt(&self) {
        self.stop_with(Stop::Interrupted);
    }

    fn stop_with(&self, why: Stop) {
        self.stop.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(why);
            }
            first
        });
    }

    /// The error a read returns once the run is stopped.
    fn stop_error(&self, why: Stop) -> anyhow::Error {
        let text = match why {
            Stop::Interrupted => "interrupted: the window was not read to its end".to_string(),
            Stop::Budget => format!(
                "the Insights scan budget is spent: {} scanned, more than --max-scan-gb {}; the running queries were stopped \
                 and the window was not read to its end (raise --max-scan-gb, or narrow the window or the clusters)",
                human_bytes(self.bytes_scanned()),
                self.settings.max_scan_bytes.unwrap_or(0.0) / GB
            ),
        };
        anyhow::Error::new(Stopped(text))
    }

    /// Fails when the run is stopped.
    fn check(&self) -> Result<()> {
        match self.stopped() {
            Some(why) => Err(self.stop_error(why)),
            None => Ok(()),
        }
    }

    /// Resolves once the run is stopped, with the error to return.
    async fn until_stopped(&self) -> anyhow::Error {
        let mut rx = self.stop.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.unwrap_or(Stop::Interrupted),
            // The sender lives as long as self: never reached.
            Err(_) => std::future::pending().await,
        };
        self.stop_error(why)
    }

    /// Sleeps, unless the run is stopped first.
    async fn sleep(&self, d: Duration) -> Result<()> {
        tokio::select! {
            () = tokio::time::sleep(d) => self.check(),
            err = self.until_stopped() => Err(err),
        }
    }

    /// May another query start? Not once the budget is spent.
    fn may_start(&self) -> Result<()> {
        self.check()?;
        if let Some(budget) = self.settings.max_scan_bytes
            && self.bytes_scanned() >= budget
        {
            self.stop_with(Stop::Budget);
            return Err(self.stop_error(Stop::Budget));
        }
        Ok(())
    }

    fn register(&self, id: &str, read: u64) {
        lock(&self.scanned)
            .running
            .insert(id.to_string(), (read, 0.0));
        self.show();
    }

    /// Records a running query's bytes; fails (and stops the run) once the
    /// run scanned more than its budget.
    fn scanned_so_far(&self, id: &str, bytes: f64) -> Result<()> {
        let total = {
            let mut s = lock(&self.scanned);
            if let Some(r) = s.running.get_mut(id) {
                r.1 = r.1.max(bytes);
            }
            s.total()
        };
        self.show();
        self.within_budget(total)
    }

    /// Fails (and stops the run) once the run scanned more than its budget.
    fn within_budget(&self, total: f64) -> Result<()> {
        if let Some(budget) = self.settings.max_scan_bytes
            && total > budget
        {
            self.stop_with(Stop::Budget);
            return Err(self.stop_error(Stop::Budget));
        }
        Ok(())
    }

    /// A query that ended: its bytes move to the ended ones.
    fn ended(&self, id: &str, bytes: Option<f64>) {
        let mut s = lock(&self.scanned);
        if let Some((_, so_far)) = s.running.remove(id) {
            s.ended += bytes.unwrap_or(so_far).max(so_far);
        }
        drop(s);
        self.show();
    }

    /// Stops (StopQuery) every query of `read` still running: all at once,
    /// one attempt each within a few seconds (a run being stopped does not
    /// wait out retries), counted as stopped or not.
    async fn stop_queries(&self, api: &Api<'_>, read: u64, log_group: &str) {
        let ids: Vec<String> = lock(&self.scanned)
            .running
            .iter()
            .filter(|(_, r)| r.0 == read)
            .map(|(id, _)| id.clone())
            .collect();
        let stops = ids.iter().map(|id| async move {
            self.stop_one(api, id, log_group).await;
            self.ended(id, None);
        });
        futures_util::future::join_all(stops).await;
    }

    /// One StopQuery attempt within a few seconds, counted as stopped or
    /// not.
    async fn stop_one(&self, api: &Api<'_>, id: &str, log_group: &str) {
        let sent =
            tokio::time::timeout(STOP_TIMEOUT, api.client.stop_query().query_id(id).send()).await;
        match sent {
            Ok(Ok(_)) => {
                self.stats.stopped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%log_group, query = %id, "StopQuery");
            }
            // It may have ended meanwhile; nothing more can be done.
            Ok(Err(e)) => {
                self.stats.not_stopped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%log_group, query = %id, error = %advice::short(&e), "StopQuery failed");
            }
            Err(_) => {
                self.stats.not_stopped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%log_group, query = %id, "StopQuery timed out");
            }
        }
    }

    /// A new StartQuery attempt of `read`, awaited until its answer says
    /// what became of it.
    fn attempt(&self, read: u64) -> Pending<'_> {
        let n = self.next_attempt.fetch_add(1, Ordering::Relaxed);
        let marker = format!("kubeanon-{:016x}-{n}", self.run_tag);
        lock(&self.attempts).insert(marker.clone(), Attempt { read, lost: false });
        Pending {
            ins: self,
            marker,
            settled: false,
        }
    }

    /// Looks for the queries of `read`'s lost StartQuery answers by their
    /// markers (DescribeQueries on the read's log group); each one found
    /// is stopped if it still runs, and its bytes are counted against the
    /// budget (which fails the read, as any query's bytes do, once
    /// crossed). Those not found are looked for again later, and on the
    /// read's `last` look counted as not found.
    async fn find_lost(&self, api: &Api<'_>, read: u64, log_group: &str, last: bool) -> Result<()> {
        let sought: Vec<String> = {
            let mut attempts = lock(&self.attempts);
            let markers: Vec<String> = attempts
                .iter()
                .filter(|(_, a)| a.read == read && a.lost)
                .map(|(m, _)| m.clone())
                .collect();
            for m in &markers {
                attempts.remove(m);
            }
            markers
        };
        if sought.is_empty() {
            return Ok(());
        }
        let found = self.describe(api, log_group, &sought).await;
        for marker in sought {
            match found.get(&marker) {
                Some((id, status)) => {
                    self.stats.lost_found.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%log_group, query = %id, %marker, status = status.as_str(), "found the query of a lost StartQuery answer");
                    self.recover(api, read, log_group, id, status).await;
                }
                None if last => {
                    self.stats.lost_not_found.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%log_group, %marker, "the query of a lost StartQuery answer was not found");
                }
                None => {
                    lock(&self.attempts).insert(marker, Attempt { read, lost: true });
                }
            }
        }
        self.within_budget(self.bytes_scanned())
    }

    /// The queries of `log_group` whose first line is one of the markers'
    /// comment lines: marker -> (query id, status). A failed call ends the
    /// look with what it found (counted; the cost line says so).
    async fn describe(
        &self,
        api: &Api<'_>,
        log_group: &str,
        markers: &[String],
    ) -> HashMap<String, (String, QueryStatus)> {
        let mut found = HashMap::new();
        let mut token = None;
        for _ in 0..DESCRIBE_PAGES {
            api.pacer.wait().await;
            api.stats.attempts.fetch_add(1, Ordering::Relaxed);
            let page = tokio::time::timeout(
                STOP_TIMEOUT,
                api.client
                    .describe_queries()
                    .log_group_name(log_group)
                    .max_results(1000)
                    .set_next_token(token.take())
                    .send(),
            )
            .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    self.stats.describe_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%log_group, error = %advice::short(&e), "DescribeQueries failed");
                    break;
                }
                Err(_) => {
                    self.stats.describe_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%log_group, "DescribeQueries timed out");
                    break;
                }
            };
            for info in page.queries() {
                let (Some(id), Some(text)) = (info.query_id(), info.query_string()) else {
                    continue;
                };
                // The marker is the query's first line, whole.
                let first = text.lines().next().unwrap_or_default().trim();
                if let Some(marker) = first.strip_prefix("# ")
                    && markers.iter().any(|m| m == marker)
                {
                    let status = info.status().cloned().unwrap_or(QueryStatus::UnknownValue);
                    found.insert(marker.to_string(), (id.to_string(), status));
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() || found.len() == markers.len() {
                break;
            }
        }
        found
    }

    /// A lost answer's query, found: stopped if it may still run, then its
    /// bytes read from its statistics and counted.
    async fn recover(
        &self,
        api: &Api<'_>,
        read: u64,
        log_group: &str,
        id: &str,
        status: &QueryStatus,
    ) {
        self.register(id, read);
        if matches!(
            status,
            QueryStatus::Running | QueryStatus::Scheduled | QueryStatus::UnknownValue
        ) {
            self.stop_one(api, id, log_group).await;
        }
        api.pacer.wait().await;
        api.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            STOP_TIMEOUT,
            api.client.get_query_results().query_id(id).send(),
        )
        .await;
        let bytes = match answer {
            Ok(Ok(out)) => out.statistics().map(|s| s.bytes_scanned()),
            Ok(Err(e)) => {
                tracing::debug!(%log_group, query = %id, error = %advice::short(&e), "GetQueryResults of a found query failed");
                None
            }
            Err(_) => None,
        };
        if bytes.is_none() {
            self.stats.lost_unmetered.fetch_add(1, Ordering::Relaxed);
        }
        self.ended(id, bytes);
    }

    /// What the run's lost StartQuery answers came to, for the cost line
    /// (and the line of a run a signal stopped); `None` when none was lost.
    pub fn lost_note(&self) -> Option<String> {
        let s = &self.stats;
        let lost = s.lost.load(Ordering::Relaxed);
        if lost == 0 {
            return None;
        }
        let found = s.lost_found.load(Ordering::Relaxed);
        let unmetered = s.lost_unmetered.load(Ordering::Relaxed);
        let not_found = s.lost_not_found.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        if found > 0 {
            parts.push(format!(
                "{found} of their queries found by marker, stopped and counted"
            ));
        }
        if unmetered > 0 {
            parts.push(format!(
                "{unmetered} of those without statistics: their bytes are not counted"
            ));
        }
        if not_found > 0 {
            parts.push(format!(
                "{not_found} of their queries could not be found: they may run on and be billed"
            ));
        }
        let failed = s.describe_failed.load(Ordering::Relaxed);
        if failed > 0 {
            parts.push(format!(
                "DescribeQueries failed {failed} time(s) (-v shows why; the role needs logs:DescribeQueries)"
            ));
        }
        let answers = if lost == 1 { "answer" } else { "answers" };
        Some(if parts.is_empty() {
            format!("{lost} StartQuery {answers} lost")
        } else {
            format!("{lost} StartQuery {answers} lost; {}", parts.join("; "))
        })
    }

    fn show(&self) {
        if let Some(bar) = lock(&self.bar).as_ref() {
            let running = lock(&self.scanned).running.len();
            bar.set_message(format!(
                "; Insights: {} queries, {running} running, {} scanned",
                self.stats.queries.load(Ordering::Relaxed),
                human_bytes(self.bytes_scanned())
            ));
        }
    }

    /// The summary's cost line: queries, bytes scanned, and an estimate of
    /// the price (labelled as such).
    pub fn cost_line(&self, region: &str) -> String {
        let s = &self.stats;
        let bytes = self.bytes_scanned();
        let (price, note) = price_per_gb(region);
        let queries = s.queries.load(Ordering::Relaxed);
        let waits = s.limit_waits.load(Ordering::Relaxed);
        let seconds = s.reread_seconds.load(Ordering::Relaxed);
        let one = |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        format!(
            "Insights: {queries} {} ({} split, {} run again, {waits} {} for a free query slot, {} stopped{}{}), {} scanned, \
             estimated cost ${:.4} at ${price}/GB{note} (an estimate from the queries' statistics, not a bill); \
             {seconds} {} read with FilterLogEvents",
            one(queries, "query", "queries"),
            s.splits.load(Ordering::Relaxed),
            s.reruns.load(Ordering::Relaxed),
            one(waits, "wait", "waits"),
            s.stopped.load(Ordering::Relaxed),
            match s.not_stopped.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!(", {n} StopQuery refused or unanswered"),
            },
            self.lost_note()
                .map(|n| format!(", {n}"))
                .unwrap_or_default(),
            human_bytes(bytes),
            bytes / GB * price,
            one(seconds, "second", "seconds"),
        )
    }
}

/// The published per-GB price of Logs Insights for `region`, and what to
/// say about it. Only us-east-1's is built in; elsewhere the estimate uses
/// it and says so.
pub fn price_per_gb(region: &str) -> (f64, String) {
    if region == "us-east-1" {
        (US_EAST_1_PRICE_PER_GB, " in us-east-1".to_string())
    } else {
        (
            US_EAST_1_PRICE_PER_GB,
            format!(
                " (the us-east-1 list price; {region}'s may differ, see aws.amazon.com/cloudwatch/pricing)"
            ),
        )
    }
}

/// The query: a superset of what `rules` can match in the audit streams,
/// with the fields the core needs. Its terms match the raw message, so
/// they find cut records as well as whole ones:
///
/// - `escu` (and `truncated`, whose prefix may show an anonymous user):
///   `user.username` must unescape to `system:anonymous` ignoring ASCII
///   case, so the message holds `anonymous` in some case, or a `\u`
///   escape of one of its letters (or of a backslash): `\u004x`-`\u007x`.
/// - `unauthenticated` (and `truncated`, whose prefix may show a 401 with
///   no user): `responseStatus.code` must show as `401`, a number (which
///   cannot be escaped) or a string, so the message holds `401` after a
///   `:` or a `"` and blanks, or a `\u` escape of one of its digits
///   (`\u0030`, `\u0031`, `\u0034`). Which of them have no user is the
///   core's to say.
/// - `truncated`: also `Authentication failed` (what authn_audit.go writes
///   as `responseStatus.message` of every refused authentication), as the
///   FilterLogEvents pattern has it.
///
/// The stream prefix is kept up to its first character that is not a
/// letter, digit, `-` or `_` (it goes into a regular expression); the full
/// prefix is checked here.
pub fn query_string(stream_prefix: &str, limit: u32, rules: Rules) -> String {
    let safe: String = stream_prefix
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let stream = if safe.is_empty() {
        String::new()
    } else {
        format!("@logStream like /^{safe}/ and ")
    };
    let cut = rules.contains(Rule::Truncated);
    let mut terms = Vec::new();
    if cut || rules.contains(Rule::Escu) {
        terms.push(r"@message like /(?i)anonymous/");
        terms.push(r"@message like /\\u00[4-7]/");
    }
    if cut || rules.contains(Rule::Unauthenticated) {
        terms.push(r#"@message like /[:"]\s*401/"#);
        terms.push(r"@message like /\\u003[014]/");
    }
    if cut {
        terms.push("@message like /Authentication failed/");
    }
    format!(
        "fields @timestamp, @message, @logStream, @ptr \
         | filter {stream}({}) \
         | limit {limit}",
        terms.join(" or ")
    )
}

/// Whole seconds `[a, b]` as StartQuery takes them: events with
/// `a * 1000 <= timestamp <= b * 1000`. The range answers for
/// `[a * 1000, b * 1000)`; the millisecond `b * 1000` is its neighbour's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub a: i64,
    pub b: i64,
}

impl Range {
    /// The seconds that cover the window `[start_ms, end_ms)`.
    pub fn covering(start_ms: i64, end_ms: i64) -> Range {
        let a = start_ms.div_euclid(1000);
        let b = end_ms.div_euclid(1000) + i64::from(end_ms.rem_euclid(1000) != 0);
        Range { a, b: b.max(a + 1) }
    }

    pub fn seconds(self) -> i64 {
        self.b - self.a
    }

    /// `n` ranges (at most one per second) that meet at whole seconds.
    pub fn split(self, n: i64) -> Vec<Range> {
        let len = self.seconds();
        let n = n.clamp(1, len.max(1));
        (0..n)
            .map(|i| Range {
                a: self.a + len * i / n,
                b: self.a + len * (i + 1) / n,
            })
            .collect()
    }
}

/// How many pieces a cut range is split into: enough that each is expected
/// to hold half a limit of rows when the statistics say how many matched,
/// else two.
fn pieces(matched: Option<f64>, limit: u32) -> i64 {
    match matched {
        Some(m) if m > f64::from(limit) => {
            ((2.0 * m / f64::from(limit)).ceil() as i64).clamp(2, 64)
        }
        _ => 2,
    }
}

/// `@timestamp` as servers return it: `YYYY-MM-DD HH:MM:SS.mmm` in UTC
/// (AWS) or epoch milliseconds (some emulators).
pub fn parse_timestamp(value: &str) -> Option<i64> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok();
    }
    chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// One result row, as the core needs it.
struct Row<'r> {
    timestamp: i64,
    stream: &'r str,
    message: &'r str,
    ptr: Option<&'r str>,
}

fn row<'r>(fields: &'r [ResultField], log_group: &str) -> Result<Row<'r>> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.field() == Some(name))
            .and_then(|f| f.value())
    };
    let missing = |name: &str| {
        anyhow!(
            "Insights returned a row of {log_group} without {name}: the answer cannot be checked"
        )
    };
    let ts = get("@timestamp").ok_or_else(|| missing("@timestamp"))?;
    let timestamp = parse_timestamp(ts).ok_or_else(|| {
        anyhow!(
            "Insights returned a row of {log_group} whose @timestamp {:?} is neither 'YYYY-MM-DD HH:MM:SS.mmm' nor epoch milliseconds",
            ts.chars().take(40).collect::<String>()
        )
    })?;
    Ok(Row {
        timestamp,
        stream: get("@logStream").ok_or_else(|| missing("@logStream"))?,
        message: get("@message").ok_or_else(|| missing("@message"))?,
        ptr: get("@ptr"),
    })
}

/// Is `message` one whole JSON value? A message cut short is not.
fn is_whole(message: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(message).is_ok()
}

/// What became of one range's query.
enum Done {
    /// Complete, not cut short: its rows.
    Rows(Range, GetQueryResultsOutput),
    /// Cut short or timed out: query these instead.
    Split(Vec<Range>),
    /// A one-second range cut short or timed out: read it with
    /// FilterLogEvents.
    Reread(Range),
}

/// Reads the window of `q` through Insights, calling `each` for every
/// event of an audit stream inside the window that the query returned (a
/// superset of the anonymous ones), as [`cloudwatch::read_group`] does for
/// FilterLogEvents. An event's `event_id` is its `@ptr` (Insights has no
/// eventIds), or its eventId when its second was read with FilterLogEvents.
/// `each` may stop the read; queries still running are then stopped, as
/// they are when the read fails or the run is stopped.
pub async fn read_window(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    mut each: impl FnMut(LogEvent<'_>) -> ControlFlow<()>,
) -> Result<Read> {
    ins.check()?;
    let read_id = ins.next_read.fetch_add(1, Ordering::Relaxed);
    let mut read = Read::default();
    let result = drive(api, ins, q, read_id, &mut each, &mut read).await;
    // Every attempt of the read is settled or lost now (one under way when
    // the read stopped was dropped): the last look for the lost ones.
    let found = ins.find_lost(api, read_id, &q.log_group, true).await;
    let result = result.and(found);
    if result.is_err() || read.stopped {
        ins.stop_queries(api, read_id, &q.log_group).await;
    }
    result.map(|()| read)
}

async fn drive(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    read_id: u64,
    each: &mut impl FnMut(LogEvent<'_>) -> ControlFlow<()>,
    read: &mut Read,
) -> Result<()> {
    let window = Range::covering(q.start_ms, q.end_ms);
    // The window's first queries use the run's query slots at once.
    let mut todo: VecDeque<Range> = window.split(ins.settings.max_queries as i64).into();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < ins.settings.max_queries
            && let Some(range) = todo.pop_front()
        {
            running.push(run_query(api, ins, q, range, read_id));
        }
        let done = tokio::select! {
            done = running.next() => done,
            err = ins.until_stopped() => return Err(err),
        };
        let Some(done) = done else {
            return Ok(());
        };
        match done? {
            Done::Split(pieces) => todo.extend(pieces),
            Done::Reread(range) => {
                if reread(api, ins, q, range.a, range.b, each, read).await? {
                    return Ok(());
                }
            }
            Done::Rows(range, out) => {
                if feed(api, ins, q, range, &out, each, read).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Feeds one complete query's rows; seconds holding a message that is not
/// whole are read with FilterLogEvents instead. True when `each` stopped.
async fn feed(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    range: Range,
    out: &GetQueryResultsOutput,
    each: &mut impl FnMut(LogEvent<'_>) -> ControlFlow<()>,
    read: &mut Read,
) -> Result<bool> {
    let rows = out
        .results()
        .iter()
        .map(|fields| row(fields, &q.log_group))
        .collect::<Result<Vec<_>>>()?;
    // This range answers for [a, b) seconds of the window [start, end).
    let lo = q.start_ms.max(range.a * 1000);
    let hi = q.end_ms.min(range.b * 1000);
    let ours = |r: &Row<'_>| r.timestamp >= lo && r.timestamp < hi;
    let audit = |r: &Row<'_>| r.stream.starts_with(&q.stream_prefix);
    let cut: BTreeSet<i64> = rows
        .iter()
        .filter(|r| ours(r) && audit(r) && !is_whole(r.message))
        .map(|r| r.timestamp.div_euclid(1000))
        .collect();
    for r in &rows {
        if r.timestamp < range.a * 1000 || r.timestamp > range.b * 1000 {
            // Not asked for: the server ignored the range.
            read.outside_window += 1;
        } else if !ours(r) || cut.contains(&r.timestamp.div_euclid(1000)) {
            // A neighbour's, outside the window by the second rounding,
            // or read again whole below.
        } else if !audit(r) {
            read.other_streams += 1;
        } else {
            let flow = each(LogEvent {
                timestamp: r.timestamp,
                event_id: r.ptr,
                message: r.message,
            });
            if flow.is_break() {
                read.stopped = true;
                return Ok(true);
            }
        }
    }
    if !cut.is_empty() {
        tracing::debug!(log_group = %q.log_group, seconds = cut.len(), "messages not whole: reading their seconds with FilterLogEvents");
    }
    // Runs of consecutive seconds, one FilterLogEvents read each.
    let mut seconds = cut.into_iter().peekable();
    while let Some(first) = seconds.next() {
        let mut last = first;
        while seconds.peek() == Some(&(last + 1)) {
            last += 1;
            seconds.next();
        }
        if reread(api, ins, q, first, last + 1, each, read).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads seconds `[a, b)` of the window with FilterLogEvents (the run's
/// read settings). True when `each` stopped.
async fn reread(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    a: i64,
    b: i64,
    each: &mut impl FnMut(LogEvent<'_>) -> ControlFlow<()>,
    read: &mut Read,
) -> Result<bool> {
    let sub = Query {
        start_ms: q.start_ms.max(a * 1000),
        end_ms: q.end_ms.min(b * 1000),
        ..q.clone()
    };
    if sub.start_ms >= sub.end_ms {
        return Ok(false);
    }
    ins.stats
        .reread_seconds
        .fetch_add((b - a) as u64, Ordering::Relaxed);
    let r = tokio::select! {
        r = cloudwatch::read_group(api, &sub, &mut *each, |_, _| {}) => r?,
        err = ins.until_stopped() => return Err(err),
    };
    read.other_streams += r.other_streams;
    read.outside_window += r.outside_window;
    read.stopped |= r.stopped;
    Ok(r.stopped)
}

/// Runs one range's query to its end (in one of the run's query slots).
async fn run_query(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    range: Range,
    read_id: u64,
) -> Result<Done> {
    let _slot = ins.slots.acquire().await?;
    let mut attempt = 1;
    loop {
        ins.may_start()?;
        // Registered as running by the attempt that started it.
        let id = start(api, ins, q, range, read_id).await?;
        let (status, out) = match results(api, ins, q, &id).await {
            Ok(r) => r,
            // The read stops this query with the others of the read.
            Err(e) => return Err(e),
        };
        ins.ended(&id, out.statistics().map(|s| s.bytes_scanned()));
        match status {
            QueryStatus::Complete => {
                let rows = out.results().len();
                let matched = out.statistics().map(|s| s.records_matched());
                let cut =
                    rows >= ins.settings.limit as usize || matched.is_some_and(|m| m > rows as f64);
                if !cut {
                    return Ok(Done::Rows(range, out));
                }
                tracing::debug!(log_group = %q.log_group, a = range.a, b = range.b, rows, ?matched, "query cut short at its limit");
                return Ok(split(ins, range, pieces(matched, ins.settings.limit)));
            }
            QueryStatus::Timeout => {
                tracing::debug!(log_group = %q.log_group, a = range.a, b = range.b, "query timed out");
                return Ok(split(ins, range, 2));
            }
            other => {
                if attempt >= api.retry.max_attempts {
                    bail!(
                        "Insights query on {} for {}..{} ended {} {attempt} time(s) (-v shows each)",
                        q.log_group,
                        seconds_rfc3339(range.a),
                        seconds_rfc3339(range.b),
                        other.as_str()
                    );
                }
                tracing::debug!(log_group = %q.log_group, query = %id, status = other.as_str(), attempt, "query ended without results: running it again");
                ins.stats.reruns.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
            }
        }
    }
}

fn split(ins: &Insights, range: Range, n: i64) -> Done {
    if range.seconds() <= 1 {
        return Done::Reread(range);
    }
    ins.stats.splits.fetch_add(1, Ordering::Relaxed);
    Done::Split(range.split(n.max(2)))
}

/// StartQuery for one range of `read`; a full account
/// (`LimitExceededException`) is waited out. Each attempt carries its own
/// marker; the queries of attempts whose answer was lost are looked for
/// (and stopped and counted) as soon as the call ends.
async fn start(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    range: Range,
    read: u64,
) -> Result<String> {
    let query = query_string(&q.stream_prefix, ins.settings.limit, ins.settings.rules);
    let polling = ins.settings.polling;
    let mut delay = polling.limit_wait;
    let mut waited = Duration::ZERO;
    loop {
        let sent = send_paced(api, "StartQuery", &q.log_group, || {
            let attempt = ins.attempt(read);
            let request = api
                .client
                .start_query()
                .log_group_name(&q.log_group)
                .start_time(range.a)
                .end_time(range.b)
                .query_string(attempt.query(&query))
                .limit(ins.settings.limit as i32)
                .send();
            async move {
                let answer = request.await;
                match &answer {
                    Ok(out) => {
                        if let Some(id) = out.query_id() {
                            attempt.started(id);
                        }
                    }
                    Err(e) if !may_have_started(e) => attempt.refused(),
                    // Lost: `attempt` is dropped unsettled.
                    Err(_) => {}
                }
                answer
            }
        })
        .await;
        ins.find_lost(api, read, &q.log_group, false).await?;
        match sent {
            Ok(out) => {
                return out.query_id().map(str::to_string).ok_or_else(|| {
                    anyhow!("StartQuery on {} answered without a query id", q.log_group)
                });
            }
            Err(f) if f.code() == Some("LimitExceededException") => {
                if waited >= polling.limit_wait_total {
                    bail!(
                        "StartQuery on {}: the account's concurrent Insights queries stayed taken for {} \
                         (dashboards, other people); try again later, or lower --max-queries",
                        q.log_group,
                        humantime::format_duration(waited)
                    );
                }
                ins.stats.limit_waits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(log_group = %q.log_group, ?delay, "LimitExceededException: waiting for a free query slot");
                ins.sleep(delay).await?;
                waited += delay;
                delay = (delay * 2).min(polling.limit_wait_cap);
            }
            Err(f) => return Err(f.describe(api, "StartQuery", &q.log_group)),
        }
    }
}

/// Polls GetQueryResults with backoff until the query ends; its status and
/// last answer. A query past the deadline is taken as timed out.
async fn results(
    api: &Api<'_>,
    ins: &Insights,
    q: &Query,
    id: &str,
) -> Result<(QueryStatus, GetQueryResultsOutput)> {
    let polling = ins.settings.polling;
    let started = Instant::now();
    let mut delay = polling.first;
    loop {
        ins.sleep(delay).await?;
        let out = send_paced(api, "GetQueryResults", &q.log_group, || {
            api.client.get_query_results().query_id(id).send()
        })
        .await
        .map_err(|f| match f.code() {
            Some("ResourceNotFoundException") => anyhow!(
                "GetQueryResults on {}: query {id} no longer exists",
                q.log_group
            ),
            _ => f.describe(api, "GetQueryResults", &q.log_group),
        })?;
        let bytes = out.statistics().map_or(0.0, |s| s.bytes_scanned());
        ins.scanned_so_far(id, bytes)?;
        match out.status() {
            Some(QueryStatus::Running | QueryStatus::Scheduled) => {
                if started.elapsed() >= polling.deadline {
                    // Still running past AWS's own timeout: stop it
                    // (the read does, with its other queries, if this
                    // fails) and split its range.
                    let _ = send_paced(api, "StopQuery", &q.log_group, || {
                        api.client.stop_query().query_id(id).send()
                    })
                    .await;
                    ins.stats.stopped.fetch_add(1, Ordering::Relaxed);
                    return Ok((QueryStatus::Timeout, out));
                }
                delay = (delay * 2).min(polling.cap);
            }
            Some(status) => return Ok((status.clone(), out)),
            None => return Ok((QueryStatus::UnknownValue, out)),
        }
    }
}

fn seconds_rfc3339(s: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| s.to_string())
}

/// `1.23 GB`, `456 MB`, `12.0 kB`, `0 B` (powers of 1000, as AWS bills).
pub fn human_bytes(bytes: f64) -> String {
    match bytes {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_covered_by_the_seconds_insights_takes() {
        // [1500, 2700) ms: seconds 1 through 3 (3000 ms is only its first ms).
        assert_eq!(Range::covering(1_500, 2_700), Range { a: 1, b: 3 });
        // Whole seconds stay whole: [1000, 3000) is [1, 3].
        assert_eq!(Range::covering(1_000, 3_000), Range { a: 1, b: 3 });
        // Inside one second.
        assert_eq!(Range::covering(1_200, 1_300), Range { a: 1, b: 2 });
        // Before the epoch, floor and ceil still hold.
        assert_eq!(Range::covering(-1_500, -200), Range { a: -2, b: 0 });
    }

    #[test]
    fn split_ranges_meet_at_whole_seconds_without_gap_or_overlap() {
        for (a, b, n) in [
            (0, 10, 3),
            (5, 6, 4),
            (100, 200, 64),
            (7, 9, 2),
            (-30, 31, 7),
        ] {
            let parts = Range { a, b }.split(n);
            assert!(parts.len() as i64 <= n.min(b - a));
            assert_eq!(parts.first().unwrap().a, a);
            assert_eq!(parts.last().unwrap().b, b);
            for w in parts.windows(2) {
                assert_eq!(w[0].b, w[1].a, "{parts:?}");
            }
            assert!(parts.iter().all(|p| p.b > p.a), "{parts:?}");
        }
    }

    #[test]
    fn a_cut_range_is_split_by_how_much_matched() {
        assert_eq!(pieces(None, 100), 2);
        assert_eq!(pieces(Some(100.0), 100), 2);
        assert_eq!(pieces(Some(1_000.0), 100), 20);
        assert_eq!(pieces(Some(1e9), 100), 64);
    }

    #[test]
    fn timestamps_in_both_forms() {
        assert_eq!(
            parse_timestamp("2023-11-14 22:13:20.123"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_timestamp("2023-11-14 22:13:20"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_timestamp("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(parse_timestamp(""), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z"), None);
    }

    #[test]
    fn the_query_keeps_a_safe_prefix_and_the_limit() {
        let q = query_string("kube-apiserver-audit-", 500, Rules::ESCU);
        assert!(
            q.contains("@logStream like /^kube-apiserver-audit-/ and "),
            "{q}"
        );
        assert!(q.contains("@message like /(?i)anonymous/"), "{q}");
        assert!(q.contains(r"@message like /\\u00[4-7]/"), "{q}");
        assert!(q.ends_with("| limit 500"), "{q}");
        for field in ["@timestamp", "@message", "@logStream", "@ptr"] {
            assert!(q.contains(field), "{q}");
        }
        // Characters that mean something in a regular expression or the
        // query language end the prefix the server sees.
        let q = query_string("audit/|x", 10, Rules::ESCU);
        assert!(q.contains("/^audit/ and"), "{q}");
        assert!(!q.contains("|x"), "{q}");
        let q = query_string(".*", 10, Rules::ESCU);
        assert!(!q.contains("@logStream like"), "{q}");
    }

    #[test]
    fn the_query_selects_what_the_rules_can_match() {
        let filter = |rules: &str| {
            let q = query_string("kube-apiserver-audit-", 500, rules.parse().unwrap());
            let start = "| filter @logStream like /^kube-apiserver-audit-/ and (";
            let at = q.find(start).expect("the filter") + start.len();
            let end = q.rfind(") | limit 500").expect("the limit");
            q[at..end].to_string()
        };
        let anonymous = r"@message like /(?i)anonymous/ or @message like /\\u00[4-7]/";
        let refused = r#"@message like /[:"]\s*401/ or @message like /\\u003[014]/"#;
        let failed = "@message like /Authentication failed/";
        // ESCU alone: the query of the release before --rules, byte for byte.
        assert_eq!(
            query_string("kube-apiserver-audit-", 500, Rules::ESCU),
            "fields @timestamp, @message, @logStream, @ptr \
             | filter @logStream like /^kube-apiserver-audit-/ and \
             (@message like /(?i)anonymous/ or @message like /\\\\u00[4-7]/) | limit 500"
        );
        assert_eq!(filter("unauthenticated"), refused);
        assert_eq!(
            filter("escu,unauthenticated"),
            format!("{anonymous} or {refused}")
        );
        // A cut record's prefix may show either, and Authentication failed.
        for rules in [
            "truncated",
            "all",
            "escu,truncated",
            "unauthenticated,truncated",
        ] {
            assert_eq!(
                filter(rules),
                format!("{anonymous} or {refused} or {failed}"),
                "{rules}"
            );
        }
    }

    /// The regular expressions of the query, tried with the `regex` crate
    /// (what they use, classes, `\s` and `(?i)`, means the same in every
    /// common engine): each event a rule takes is selected, whole or cut,
    /// and the commonest events are not.
    #[test]
    fn the_query_terms_find_what_the_rules_take() {
        let terms = [
            r"(?i)anonymous",
            r"\\u00[4-7]",
            r#"[:"]\s*401"#,
            r"\\u003[014]",
            "Authentication failed",
        ]
        .map(|t| regex::Regex::new(t).unwrap());
        let selected = |m: &str| terms.iter().any(|t| t.is_match(m));
        for m in [
            r#"{"user":{"username":"System:Anonymous"}}"#,
            r#"{"user":{"username":"system:\u0061nonymous"}}"#,
            r#"{"user":{},"responseStatus":{"message":"x","code":401}}"#,
            r#"{"responseStatus":{"code": 401}}"#,
            r#"{"responseStatus":{"code":"401"}}"#,
            r#"{"responseStatus":{"code":"\u0034\u00301"}}"#,
            r#"{"user":{},"responseStatus":{"metadata":{},"status":"Failure","message":"Authentication failed, attempted: bear[Truncated...]"#,
        ] {
            assert!(selected(m), "{m}");
        }
        for m in [
            r#"{"user":{"username":"alice"},"responseStatus":{"code":200}}"#,
            r#"{"requestReceivedTimestamp":"2026-01-01T00:00:00.401000Z","requestURI":"/a?b=1\u0026c=2"}"#,
        ] {
            assert!(!selected(m), "{m}");
        }
    }

    #[test]
    fn a_message_cut_short_is_never_whole() {
        let msg = r#"{"kind":"Event","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"requestURI":"/version"}"#;
        assert!(is_whole(msg));
        for cut in 0..msg.len() {
            assert!(!is_whole(&msg[..cut]), "{}", &msg[..cut]);
        }
        assert!(!is_whole(&format!("{}[Truncated...]", &msg[..40])));
    }

    #[test]
    fn a_start_query_may_have_started_unless_it_never_left_or_was_refused() {
        use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
        use aws_sdk_cloudwatchlogs::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_cloudwatchlogs::operation::start_query::StartQueryError;
        let io = |kind| Box::new(std::io::Error::new(kind, "x"));
        let answered = |status: u16, code: &str| -> SdkError<StartQueryError> {
            SdkError::service_error(
                StartQueryError::generic(ErrorMetadata::builder().code(code).build()),
                HttpResponse::new(status.try_into().unwrap(), "{}".into()),
            )
        };
        let dispatch = |e| SdkError::<StartQueryError>::dispatch_failure(e);
        // The answer was lost: the query may run.
        for err in [
            SdkError::<StartQueryError>::timeout_error(io(std::io::ErrorKind::TimedOut)),
            dispatch(ConnectorError::io(io(std::io::ErrorKind::ConnectionReset))),
            dispatch(ConnectorError::timeout(io(std::io::ErrorKind::TimedOut))),
            answered(500, "InternalFailure"),
            answered(503, "ServiceUnavailableException"),
        ] {
            assert!(may_have_started(&err), "{err:?}");
        }
        // Never sent, or refused: nothing started.
        for err in [
            SdkError::<StartQueryError>::construction_failure(io(std::io::ErrorKind::Other)),
            dispatch(ConnectorError::io(io(
                std::io::ErrorKind::ConnectionRefused,
            ))),
            answered(400, "LimitExceededException"),
            answered(400, "ThrottlingException"),
            answered(400, "MalformedQueryException"),
            answered(403, "AccessDeniedException"),
        ] {
            assert!(!may_have_started(&err), "{err:?}");
        }
    }

    #[test]
    fn bytes_read_as_a_person_would() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(12_345.0), "12.3 kB");
        assert_eq!(human_bytes(2_500_000_000.0), "2.50 GB");
    }
}
