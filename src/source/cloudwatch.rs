//! CloudWatch Logs: `FilterLogEvents` over a log group's audit streams.
//!
//! FilterLogEvents is the only read API that returns eventIds, which the
//! checkpoint needs. Its quota (5-25 requests/s per account and region) is
//! shared with every other tool in the account, so every attempt, retries
//! included, goes through one [`Pacer`] per region. Retries are done here
//! rather than by the SDK (whose retries are switched off) for that reason,
//! and so they can be counted.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_config::retry::ErrorKind;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::ProvideCredentials;
use aws_sdk_cloudwatchlogs::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_cloudwatchlogs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput;
use tokio::time::Instant;

use super::advice;
use crate::detect::{Rule, Rules};
use crate::testhooks;

/// ESCU's server-side filter, as every release before `--rules` sent it.
const ESCU_PATTERN: &str = r#"{ $.user.username = "system:anonymous" }"#;

/// The FilterLogEvents filter pattern for `rules`: it cuts transfer to the
/// events the rules can match (a superset, for the spellings the API
/// server writes), and the detector re-checks every returned event with
/// the full rules. It can only ever leave events out, never add rows.
///
/// CloudWatch filter patterns are case-sensitive, and a JSON pattern
/// (`{ $.x = ... }`) matches only a whole JSON event (never a record
/// CloudWatch cut at its size limit), while a text pattern matches terms
/// in the raw message; one pattern cannot mix the two. So:
///
/// - `escu` alone: today's JSON pattern, byte for byte (ESCU's rows and
///   requests are exactly those of the release before `--rules`). It
///   compares the parsed value, so an escaped spelling matches too; a
///   case-varied one (`System:Anonymous`, which the rule takes) does not.
/// - `unauthenticated` (without `truncated`): a JSON pattern that adds
///   every 401 (`$.responseStatus.code = 401`); which of them have no
///   user is the detector's to say.
/// - with `truncated`: a text pattern, `?"system:anonymous" ?"Authentication
///   failed" ?"Unauthorized"` (any term, anywhere in the message,
///   case-sensitive). The `truncated` rule judges only what a cut record's
///   prefix shows: a prefix that shows the anonymous user holds
///   `system:anonymous`, and a refused authentication carries, before its
///   `responseStatus.code`, either authn_audit.go's message
///   (`Authentication failed, ...`) or, where kube-apiserver logs the
///   Status it answered with (`"status":"Failure","message":"Unauthorized",
///   "reason":"Unauthorized","code":401`), `Unauthorized`. So a prefix that
///   shows the 401 shows one of the terms too (one cut before them shows no
///   code either, and no rule can take it). What this pattern misses that
///   the JSON ones catch: a whole 401 with no user whose status names
///   neither (no such writer in Kubernetes today), and an escaped
///   username.
///
/// `--no-server-filter` sends no pattern: every audit event is transferred
/// and judged, which is exact for every rule and every spelling.
pub fn server_pattern(rules: Rules) -> String {
    let anonymous = rules.contains(Rule::Escu);
    let refused = rules.contains(Rule::Unauthenticated);
    if rules.contains(Rule::Truncated) {
        return r#"?"system:anonymous" ?"Authentication failed" ?"Unauthorized""#.to_string();
    }
    match (anonymous, refused) {
        (true, true) => {
            r#"{ ($.user.username = "system:anonymous") || ($.responseStatus.code = 401) }"#
                .to_string()
        }
        (false, true) => "{ $.responseStatus.code = 401 }".to_string(),
        // ESCU alone (and an empty set, which `--rules` never gives).
        _ => ESCU_PATTERN.to_string(),
    }
}

/// `--cluster NAME` reads this log group.
pub fn cluster_log_group(cluster: &str) -> String {
    format!("/aws/eks/{cluster}/cluster")
}

/// The cluster name of an EKS log group, or the log group itself.
pub fn cluster_name(log_group: &str) -> &str {
    log_group
        .strip_prefix("/aws/eks/")
        .and_then(|rest| rest.strip_suffix("/cluster"))
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .unwrap_or(log_group)
}

/// How to reach CloudWatch Logs.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub attempt_timeout: Duration,
}

/// A CloudWatch Logs client for `config` (see [`sdk_config`]), and the
/// server's clock as its responses tell it.
pub fn logs_client(config: &aws_config::SdkConfig) -> (Client, ServerClock) {
    let clock = ServerClock::default();
    let conf = aws_sdk_cloudwatchlogs::config::Builder::from(config)
        .interceptor(clock.clone())
        .build();
    (Client::from_conf(conf), clock)
}

/// The server's clock, read off the `Date` header of each response: a
/// second opinion on this machine's, which may be far off (a VM booted
/// before NTP) and would move a checkpoint into the future.
#[derive(Debug, Default, Clone)]
pub struct ServerClock(Arc<Mutex<Option<i64>>>);

impl ServerClock {
    /// How far this machine's clock was ahead of the server's (ms; negative
    /// when behind) at the latest response, to the second.
    pub fn local_ahead_ms(&self) -> Option<i64> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Intercept for ServerClock {
    fn name(&self) -> &'static str {
        "ServerClock"
    }

    fn read_before_deserialization(
        &self,
        ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // `Date: Mon, 30 Nov 2026 11:10:37 GMT` (whole seconds).
        if let Some(date) = ctx.response().headers().get("date")
            && let Ok(server) = chrono::DateTime::parse_from_rfc2822(date)
        {
            let ahead = testhooks::now_ms() - server.timestamp_millis();
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(ahead);
        }
        Ok(())
    }
}

/// The SDK configuration every client of a run starts from (the standard
/// credential chain: env, profile/SSO, web identity, container/Pod
/// Identity, IMDS; no SDK retries: see the module doc), and its region.
pub async fn sdk_config(s: &ClientSettings) -> Result<(aws_config::SdkConfig, String)> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(s.attempt_timeout)
                .build(),
        );
    if let Some(region) = &s.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &s.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &s.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(missing) = advice::missing_profile(s.profile.as_deref()) {
        bail!(missing);
    }
    let config = loader.load().await;
    let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
        anyhow!("no AWS region: pass --region, or set AWS_REGION or a profile's region")
    })?;
    Ok((config, region))
}

/// Loads credentials once, before any request, so that a missing or
/// broken credential source is said plainly (never the credentials).
pub async fn check_credentials(config: &aws_config::SdkConfig, s: &ClientSettings) -> Result<()> {
    let Some(provider) = config.credentials_provider() else {
        bail!("no AWS credentials: no credential provider is configured");
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(e) => bail!(advice::credentials(&e, s.profile.as_deref())),
    }
}

/// A connection that takes longer than this will not come (AWS endpoints
/// answer in milliseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at a request that could not connect: a wrong endpoint or a
/// network that is down does not heal in seconds, so fail soon and say so.
const CONNECT_ATTEMPTS: u32 = 3;

/// Spaces request starts at least `1 / max_rps` apart, across every task
/// that shares it, so no window of time sees more than `max_rps` per second.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(max_rps: f64) -> Self {
        Pacer {
            // 5% spare: requests leave on time but can arrive bunched up
            // (a slow connection, then fast ones); the server counts arrivals.
            interval: Duration::from_secs_f64(1.05 / max_rps),
            next: Mutex::new(None),
        }
    }

    /// Waits for this caller's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Retry budget and backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a random delay up to base * 2^retry, capped.
    fn delay(&self, retry: u32, throttled: bool) -> Duration {
        let base = if throttled { self.base * 4 } else { self.base };
        let ceiling = base.saturating_mul(1 << retry.min(16)).min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Request counters, shared by the tasks of a run.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Pages received.
    pub pages: AtomicU64,
    /// HTTP attempts made (pages plus retries).
    pub attempts: AtomicU64,
    /// Attempts that were retried.
    pub retries: AtomicU64,
    /// Of those, how many were throttled.
    pub throttled: AtomicU64,
}

/// A FilterLogEvents caller: the client, the region's pacer, the policy.
pub struct Api<'a> {
    pub client: &'a Client,
    /// Where the client connects, and its region, for messages.
    pub endpoint: &'a str,
    pub region: &'a str,
    pub pacer: &'a Pacer,
    pub retry: RetryPolicy,
    pub stats: &'a ApiStats,
}

/// One log group over one window.
#[derive(Debug, Clone)]
pub struct Query {
    pub log_group: String,
    pub stream_prefix: String,
    pub filter_pattern: Option<String>,
    pub page_size: i32,
    /// Window [start_ms, end_ms), ms since the epoch.
    pub start_ms: i64,
    pub end_ms: i64,
}

/// One event as the detector's caller needs it.
pub struct LogEvent<'e> {
    pub timestamp: i64,
    pub event_id: Option<&'e str>,
    pub message: &'e str,
}

/// How a read ended. Events returned that the query did not ask for (an
/// emulator that ignores the prefix or window) are counted, never fed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub other_streams: u64,
    pub outside_window: u64,
    /// The caller stopped the read before its end.
    pub stopped: bool,
}

/// Reads every page of `q`, calling `each` for each event of an audit
/// stream inside the window, and `progress` with the latest event time and
/// the page's event count after each page. `each` may stop the read
/// ([`ControlFlow::Break`]); the result then says it was stopped. A page
/// that fails past the retry budget fails the read.
pub async fn read_group(
    api: &Api<'_>,
    q: &Query,
    mut each: impl FnMut(LogEvent<'_>) -> ControlFlow<()>,
    mut progress: impl FnMut(i64, usize),
) -> Result<Read> {
    let mut read = Read::default();
    let mut token: Option<String> = None;
    let mut latest = q.start_ms;
    loop {
        let page = fetch_page(api, q, token.take()).await?;
        api.stats.pages.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            log_group = %q.log_group,
            events = page.events().len(),
            more = page.next_token.is_some(),
            "FilterLogEvents page"
        );
        for ev in page.events() {
            let stream = ev.log_stream_name().unwrap_or_default();
            let ts = ev.timestamp().unwrap_or(i64::MIN);
            if !stream.starts_with(&q.stream_prefix) {
                read.other_streams += 1;
            } else if ts < q.start_ms || ts >= q.end_ms {
                read.outside_window += 1;
            } else {
                latest = latest.max(ts);
                let flow = each(LogEvent {
                    timestamp: ts,
                    event_id: ev.event_id(),
                    message: ev.message().unwrap_or_default(),
                });
                if flow.is_break() {
                    read.stopped = true;
                    return Ok(read);
                }
            }
        }
        progress(latest, page.events().len());
        // Pages may be empty and still carry a token: only its absence ends.
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(read),
        }
    }
}

/// Does the window of `q` hold any event of an audit stream? Asks without
/// a filter pattern, a few events a page, and stops at the first one: on
/// AWS one call for a cluster that logs; pages on for one whose audit
/// logging is off (or a server that ignores the stream prefix).
pub async fn has_audit_events(api: &Api<'_>, q: &Query) -> Result<bool> {
    let probe = Query {
        filter_pattern: None,
        page_size: 25,
        ..q.clone()
    };
    let read = read_group(api, &probe, |_| ControlFlow::Break(()), |_, _| {}).await?;
    Ok(read.stopped)
}

/// Fetches the first page of `q` and drops it: proves the call is allowed
/// (`kubeanon doctor`).
pub async fn read_page_once(api: &Api<'_>, q: &Query) -> Result<()> {
    fetch_page(api, q, None).await.map(|_| ())
}

/// One page, paced and retried.
async fn fetch_page(
    api: &Api<'_>,
    q: &Query,
    token: Option<String>,
) -> Result<FilterLogEventsOutput> {
    send_paced(api, "FilterLogEvents", &q.log_group, || {
        let mut req = api
            .client
            .filter_log_events()
            .log_group_name(&q.log_group)
            .log_stream_name_prefix(&q.stream_prefix)
            .start_time(q.start_ms)
            // Windows are half-open; endTime is inclusive on some servers.
            .end_time(q.end_ms - 1)
            .limit(q.page_size)
            .set_next_token(token.clone());
        if let Some(p) = &q.filter_pattern {
            req = req.filter_pattern(p);
        }
        req.send()
    })
    .await
    .map_err(|failed| failed.describe(api, "FilterLogEvents", &q.log_group))
}

/// A request that failed for good: its last error, after how many attempts.
pub struct Failed<E> {
    pub err: SdkError<E>,
    pub attempts: u32,
    unreachable: bool,
    no_such_host: bool,
}

impl<E: ProvideErrorMetadata + std::error::Error + 'static> Failed<E> {
    /// The service's error code, if the service answered.
    pub fn code(&self) -> Option<&str> {
        self.err.code()
    }

    /// What to tell the operator: the endpoint that cannot be reached, a
    /// missing log group ([`MissingLogGroup`]), access denied for `action`,
    /// or the error after its attempts. The SDK's whole error goes to `-v`.
    pub fn describe(&self, api: &Api<'_>, action: &str, log_group: &str) -> anyhow::Error {
        if self.no_such_host {
            return anyhow!(advice::no_such_host(
                "CloudWatch Logs",
                api.region,
                api.endpoint
            ));
        }
        if self.unreachable {
            return anyhow!(
                "cannot connect to CloudWatch Logs at {} ({}, {} attempts): check --endpoint-url or AWS_ENDPOINT_URL, the network, DNS and any proxy",
                api.endpoint,
                advice::short(&self.err),
                self.attempts
            );
        }
        describe(&self.err, action, log_group, self.attempts)
    }
}

/// Sends one request as every CloudWatch Logs request of a run is sent:
/// each attempt waits for the region's pacer and is counted; throttling,
/// 5xx, timeouts and dropped connections are retried with backoff up to
/// the policy's attempts; an endpoint that cannot be reached fails after
/// a few quick attempts; anything else fails at once. `send` builds and
/// sends the request afresh for each attempt; `action` and `log_group`
/// only label the debug log.
pub async fn send_paced<T, E, Fut>(
    api: &Api<'_>,
    action: &str,
    log_group: &str,
    mut send: impl FnMut() -> Fut,
) -> std::result::Result<T, Failed<E>>
where
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut attempt = 1;
    loop {
        api.pacer.wait().await;
        api.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let err = match send().await {
            Ok(out) => return Ok(out),
            Err(err) => err,
        };
        let class = classify(&err);
        // A host that does not exist will not exist in a second either.
        if class == Class::NoSuchHost {
            return Err(Failed {
                err,
                attempts: attempt,
                unreachable: true,
                no_such_host: true,
            });
        }
        if class == Class::Unreachable && attempt >= CONNECT_ATTEMPTS.min(api.retry.max_attempts) {
            return Err(Failed {
                err,
                attempts: attempt,
                unreachable: true,
                no_such_host: false,
            });
        }
        if class == Class::Fatal || attempt >= api.retry.max_attempts {
            return Err(Failed {
                err,
                attempts: attempt,
                unreachable: false,
                no_such_host: false,
            });
        }
        api.stats.retries.fetch_add(1, Ordering::Relaxed);
        if class == Class::Throttled {
            api.stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let delay = if class == Class::Unreachable {
            Duration::from_millis(500)
        } else {
            api.retry.delay(attempt - 1, class == Class::Throttled)
        };
        tracing::debug!(%log_group, attempt, ?delay, kind = ?class, "retrying {action}");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Throttled,
    Transient,
    /// Never reached the server: retried a few times, quickly.
    Unreachable,
    /// The endpoint's host name does not exist: not retried.
    NoSuchHost,
    Fatal,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &SdkError<E>) -> Class {
    if advice::is_no_such_host(err) {
        return Class::NoSuchHost;
    }
    if advice::is_connect_failure(err) {
        return Class::Unreachable;
    }
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Class::Transient,
        // As the SDK's own TransientErrorClassifier judges: I/O, timeouts,
        // and failures the HTTP client marked with a kind (a pooled
        // connection closed before the response: IncompleteMessage).
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Class::Transient,
        SdkError::DispatchFailure(d) => match d.as_other() {
            Some(ErrorKind::ThrottlingError) => Class::Throttled,
            Some(_) => Class::Transient,
            None => Class::Fatal,
        },
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or_default();
            let status = e.raw().status().as_u16();
            if matches!(
                code,
                "ThrottlingException"
                    | "Throttling"
                    | "TooManyRequestsException"
                    | "RequestLimitExceeded"
            ) || status == 429
            {
                Class::Throttled
            } else if status >= 500 || code == "ServiceUnavailableException" {
                Class::Transient
            } else {
                Class::Fatal
            }
        }
        _ => Class::Fatal,
    }
}

/// A log group that does not exist: the caller can say which do.
#[derive(Debug)]
pub struct MissingLogGroup(pub String);

impl std::fmt::Display for MissingLogGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "log group {} does not exist", self.0)
    }
}

impl std::error::Error for MissingLogGroup {}

/// An error message that says what to do about the common cases; the SDK's
/// whole error goes to `-v`.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E>,
    action: &str,
    log_group: &str,
    attempts: u32,
) -> anyhow::Error {
    match err.code() {
        Some("ResourceNotFoundException") => {
            tracing::debug!(error = %DisplayErrorContext(err), "{action}");
            anyhow::Error::new(MissingLogGroup(log_group.to_string()))
        }
        Some("AccessDeniedException") => anyhow!(
            "access denied: these credentials may not call logs:{action} on log group {log_group} \
             (AWS said: {}); grant it as iam-policy.json does",
            advice::short(err)
        ),
        _ => anyhow!(
            "{action} on {log_group} failed after {attempts} attempt(s): {} (-v shows the whole error)",
            advice::short(err)
        ),
    }
}

/// What to say about a missing log group: the EKS log groups the region
/// does have, and the closest name.
pub async fn explain_missing(client: &Client, log_group: &str, region: &str) -> String {
    let mut groups = Vec::new();
    let mut pages = client
        .describe_log_groups()
        .log_group_name_prefix("/aws/eks/")
        .into_paginator()
        .items()
        .send();
    while groups.len() < 1000 {
        match pages.next().await {
            Some(Ok(g)) => groups.extend(g.log_group_name().map(str::to_string)),
            Some(Err(e)) => {
                tracing::debug!(error = %DisplayErrorContext(&e), "DescribeLogGroups");
                break;
            }
            None => break,
        }
    }
    let clusters: Vec<String> = groups
        .iter()
        .map(|g| cluster_name(g))
        .filter(|c| !c.starts_with('/'))
        .map(str::to_string)
        .collect();
    let wanted = cluster_name(log_group);
    let mut text = format!("log group {log_group} does not exist in {region}");
    if let Some(near) = advice::closest(wanted, &clusters) {
        text.push_str(&format!("; did you mean --cluster {near}?"));
    }
    if clusters.is_empty() {
        text.push_str(&format!(
            "; {region} has no EKS control-plane log groups at all: is --region right?"
        ));
    } else {
        let mut shown: Vec<&str> = clusters.iter().map(String::as_str).take(10).collect();
        shown.sort_unstable();
        text.push_str(&format!(
            " (EKS clusters with control-plane logs there: {}{})",
            shown.join(", "),
            if clusters.len() > 10 { ", ..." } else { "" }
        ));
    }
    if !wanted.starts_with('/') {
        text.push_str(&format!(
            ". If cluster {wanted} exists in {region}, its control-plane logging was never turned on: {}",
            advice::enable_audit_command(wanted, region)
        ));
    }
    text
}

/// What DescribeLogGroups says of a log group: when it was created and
/// how long it keeps events (None: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupInfo {
    pub creation_ms: Option<i64>,
    pub retention_days: Option<i32>,
}

/// How far before its arrival CloudWatch takes an event (PutLogEvents
/// refuses events more than 14 days old): no event of a log group is older
/// than its creation minus this.
pub const MAX_EVENT_AGE_MS: i64 = 14 * 86_400_000;

impl GroupInfo {
    /// The earliest event time the log group can hold at `now_ms`, and why:
    /// its creation (less [`MAX_EVENT_AGE_MS`]) or its retention.
    pub fn floor_ms(&self, now_ms: i64) -> Option<(i64, Floor)> {
        let created = self
            .creation_ms
            .map(|c| (c - MAX_EVENT_AGE_MS, Floor::Created(c)));
        let kept = self
            .retention_days
            .filter(|d| *d > 0)
            .map(|d| (now_ms - i64::from(d) * 86_400_000, Floor::Retention(d)));
        match (created, kept) {
            (Some(c), Some(k)) => Some(if k.0 > c.0 { k } else { c }),
            (c, k) => c.or(k),
        }
    }
}

/// Why a log group holds no event before some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Created then (ms).
    Created(i64),
    /// Keeps events this many days.
    Retention(i32),
}

/// The log group's creation time and retention (DescribeLogGroups); None
/// when it does not exist.
pub async fn group_info(
    client: &Client,
    log_group: &str,
    region: &str,
    endpoint: &str,
) -> Result<Option<GroupInfo>> {
    let out = client
        .describe_log_groups()
        .log_group_name_prefix(log_group)
        .send()
        .await
        .map_err(|e| {
            if advice::is_no_such_host(&e) {
                anyhow!(advice::no_such_host("CloudWatch Logs", region, endpoint))
            } else {
                anyhow!("DescribeLogGroups failed: {}", advice::short(&e))
            }
        })?;
    Ok(out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(log_group))
        .map(|g| GroupInfo {
            creation_ms: g.creation_time(),
            retention_days: g.retention_in_days(),
        }))
}

/// Checks used by `kubeanon doctor`.
pub mod checks {
    use super::*;
    use aws_sdk_cloudwatchlogs::types::LogStream;

    /// Does the log group exist?
    pub async fn log_group_exists(api: &Api<'_>, log_group: &str) -> Result<bool> {
        Ok(group_info(api.client, log_group, api.region, api.endpoint)
            .await?
            .is_some())
    }

    /// The most recently written audit stream, if any.
    pub async fn latest_stream(
        client: &Client,
        log_group: &str,
        prefix: &str,
    ) -> Result<Option<LogStream>> {
        // Ordering by time and filtering by prefix cannot be combined:
        // list by prefix and pick the latest.
        let out = client
            .describe_log_streams()
            .log_group_name(log_group)
            .log_stream_name_prefix(prefix)
            .send()
            .await
            .map_err(|e| anyhow!("DescribeLogStreams failed: {}", advice::short(&e)))?;
        Ok(out
            .log_streams()
            .iter()
            .filter(|s| s.log_stream_name().is_some_and(|n| n.starts_with(prefix)))
            .max_by_key(|s| s.last_event_timestamp().unwrap_or(0))
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_pattern_follows_the_rules() {
        let of = |rules: &str| server_pattern(rules.parse().unwrap());
        // ESCU alone: the release before --rules sent exactly this.
        assert_eq!(of("escu"), r#"{ $.user.username = "system:anonymous" }"#);
        assert_eq!(server_pattern(Rules::ESCU), of("escu"));
        assert_eq!(
            of("escu,unauthenticated"),
            r#"{ ($.user.username = "system:anonymous") || ($.responseStatus.code = 401) }"#
        );
        assert_eq!(of("unauthenticated"), "{ $.responseStatus.code = 401 }");
        // A JSON pattern never matches a cut record: with `truncated`, terms.
        let text = r#"?"system:anonymous" ?"Authentication failed" ?"Unauthorized""#;
        for rules in [
            "all",
            "truncated",
            "escu,truncated",
            "unauthenticated,truncated",
        ] {
            assert_eq!(of(rules), text, "{rules}");
        }
        assert_eq!(server_pattern(Rules::default()), text);
    }

    #[test]
    fn cluster_names() {
        assert_eq!(cluster_log_group("prod"), "/aws/eks/prod/cluster");
        assert_eq!(cluster_name("/aws/eks/prod/cluster"), "prod");
        assert_eq!(cluster_name("/custom/group"), "/custom/group");
        assert_eq!(cluster_name("/aws/eks//cluster"), "/aws/eks//cluster");
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            let d = p.delay(retry, true);
            assert!(d <= p.cap, "{d:?}");
        }
        assert!(p.delay(0, false) <= p.base);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        for _ in 0..9 {
            pacer.wait().await;
        }
        // 9 starts at 4/s (with 5% spare): the last 2.1 s after the first.
        assert_eq!(start.elapsed(), Duration::from_millis(2100));
    }
}
