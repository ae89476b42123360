//! Insights sequences no emulator produces, through aws-smithy-mocks:
//! queries Scheduled and Running before they complete, Failed and Timeout,
//! `LimitExceededException`, statistics (the cost line, a cut result, the
//! scan budget and the StopQuery it sends), Ctrl-C, messages the server
//! shortened, StartQuery answers lost after the query started (found by
//! their marker with DescribeQueries, stopped and counted, or said to run
//! on). The reader under test is the one `poll --engine insights` uses;
//! AWS's `@timestamp` form (`YYYY-MM-DD HH:MM:SS.mmm`) throughout. Last,
//! SIGTERM end to end (the binary, moto's server behind the proxy), as
//! `tests/insights.rs` tests Ctrl-C.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_sdk_cloudwatchlogs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatchlogs::operation::describe_queries::DescribeQueriesOutput;
use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput;
use aws_sdk_cloudwatchlogs::operation::get_query_results::GetQueryResultsOutput;
use aws_sdk_cloudwatchlogs::operation::start_query::{StartQueryInput, StartQueryOutput};
use aws_sdk_cloudwatchlogs::operation::stop_query::StopQueryOutput;
use aws_sdk_cloudwatchlogs::types::{
    FilteredLogEvent, QueryInfo, QueryStatistics, QueryStatus, ResultField,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use kubeanon::source::cloudwatch::{Api, ApiStats, Pacer, Query, Read, RetryPolicy};
use kubeanon::source::insights::{Insights, Polling, Settings, Stop, Stopped, read_window};

const STREAM: &str = "kube-apiserver-audit-0123456789abcdef0123456789abcdef";
/// 2023-11-14 22:13:20 UTC.
const T: i64 = 1_700_000_000_000;

fn query(start_ms: i64, end_ms: i64) -> Query {
    Query {
        log_group: "/aws/eks/c/cluster".into(),
        stream_prefix: "kube-apiserver-audit-".into(),
        filter_pattern: None,
        page_size: 10_000,
        start_ms,
        end_ms,
    }
}

fn settings(limit: u32, max_queries: usize, max_scan_bytes: Option<f64>) -> Settings {
    Settings {
        limit,
        max_queries,
        max_scan_bytes,
        polling: Polling {
            first: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            limit_wait: Duration::from_millis(1),
            limit_wait_cap: Duration::from_millis(5),
            limit_wait_total: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        },
        rules: kubeanon::detect::Rules::ALL,
    }
}

/// `@timestamp` as AWS writes it, for ms since the epoch.
fn aws_time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

fn field(name: &str, value: &str) -> ResultField {
    ResultField::builder().field(name).value(value).build()
}

fn row(ms: i64, stream: &str, message: &str, ptr: &str) -> Vec<ResultField> {
    vec![
        field("@timestamp", &aws_time(ms)),
        field("@message", message),
        field("@logStream", stream),
        field("@ptr", ptr),
    ]
}

fn event(n: u64) -> String {
    format!(
        r#"{{"kind":"Event","auditID":"a-{n}","requestURI":"/version","verb":"get","user":{{"username":"system:anonymous","groups":["system:unauthenticated"]}},"sourceIPs":["203.0.113.{n}"],"userAgent":"curl/8","responseStatus":{{"code":403}},"requestReceivedTimestamp":"2023-11-14T22:13:20.{n:06}Z"}}"#
    )
}

fn answer(
    status: QueryStatus,
    rows: Vec<Vec<ResultField>>,
    matched_and_bytes: Option<(f64, f64)>,
) -> GetQueryResultsOutput {
    let stats = matched_and_bytes.map(|(matched, bytes)| {
        QueryStatistics::builder()
            .records_matched(matched)
            .records_scanned(matched * 10.0)
            .bytes_scanned(bytes)
            .build()
    });
    GetQueryResultsOutput::builder()
        .status(status)
        .set_results(Some(rows))
        .set_statistics(stats)
        .build()
}

fn started(id: &'static str) -> impl Fn() -> StartQueryOutput {
    move || StartQueryOutput::builder().query_id(id).build()
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, rules, |b| b
        .retry_config(
            aws_sdk_cloudwatchlogs::config::retry::RetryConfig::disabled()
        ))
}

/// What a read fed the core: (timestamp, event id, message).
type Fed = Vec<(i64, Option<String>, String)>;

async fn read(client: &Client, ins: &Insights, q: &Query) -> (anyhow::Result<Read>, Fed, ApiStats) {
    let pacer = Pacer::new(10_000.0);
    let stats = ApiStats::default();
    let api = Api {
        client,
        endpoint: "https://logs.us-east-1.amazonaws.com",
        region: "us-east-1",
        pacer: &pacer,
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        },
        stats: &stats,
    };
    let mut fed = Vec::new();
    let result = read_window(&api, ins, q, |ev| {
        fed.push((
            ev.timestamp,
            ev.event_id.map(str::to_string),
            ev.message.to_string(),
        ));
        std::ops::ControlFlow::Continue(())
    })
    .await;
    (result, fed, stats)
}

#[tokio::test]
async fn scheduled_and_running_then_complete_feeds_the_rows_of_the_window() {
    let start = mock!(Client::start_query)
        .match_requests(|r| {
            // [T + 250, T + 2000) in whole seconds, the end's first ms included.
            r.start_time() == Some(T / 1000) && r.end_time() == Some(T / 1000 + 2)
        })
        .sequence()
        .output(started("q1"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| answer(QueryStatus::Scheduled, vec![], None))
        .output(|| answer(QueryStatus::Running, vec![], None))
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![
                    row(T + 249, STREAM, &event(0), "p0"), // before the window
                    row(T + 250, STREAM, &event(1), "p1"),
                    row(T + 1_999, STREAM, &event(2), "p2"),
                    row(T + 2_000, STREAM, &event(3), "p3"), // the end's first ms
                    row(T + 500, "kube-apiserver-0123", &event(4), "p4"),
                ],
                None,
            )
        })
        .build();
    let client = client(&[&start, &get]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, api) = read(&client, &ins, &query(T + 250, T + 2_000)).await;
    let read = result.unwrap();
    assert_eq!(
        fed,
        vec![
            (T + 250, Some("p1".into()), event(1)),
            (T + 1_999, Some("p2".into()), event(2)),
        ]
    );
    assert_eq!(read.other_streams, 1);
    assert_eq!(get.num_calls(), 3, "polled until complete");
    assert_eq!(ins.stats.queries.load(Ordering::Relaxed), 1);
    assert_eq!(
        api.attempts.load(Ordering::Relaxed),
        4,
        "each call paced and counted"
    );
}

#[tokio::test]
async fn limit_exceeded_is_waited_out() {
    let full = r#"{"__type":"LimitExceededException","message":"Account maximum query concurrency limit of [30] reached."}"#;
    let start = mock!(Client::start_query)
        .sequence()
        .http_status(400, Some(full.to_string()))
        .times(2)
        .output(started("q1"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 10, STREAM, &event(1), "p1")],
                None,
            )
        })
        .build();
    let client = client(&[&start, &get]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    result.unwrap();
    assert_eq!(fed.len(), 1);
    assert_eq!(start.num_calls(), 3);
    assert_eq!(ins.stats.limit_waits.load(Ordering::Relaxed), 2);
    assert_eq!(ins.stats.queries.load(Ordering::Relaxed), 1);
    // A refusal started nothing: no answer lost, nothing looked for.
    assert_eq!(ins.stats.lost.load(Ordering::Relaxed), 0);
    assert!(!ins.cost_line("us-east-1").contains("lost"));
}

#[tokio::test]
async fn a_failed_query_runs_again_and_a_timed_out_one_is_split() {
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .output(started("q2"))
        .output(started("q3"))
        .output(started("q4"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| answer(QueryStatus::Failed, vec![], None))
        .output(|| answer(QueryStatus::Running, vec![], None))
        .output(|| answer(QueryStatus::Timeout, vec![], None))
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 10, STREAM, &event(1), "p1")],
                None,
            )
        })
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 1_010, STREAM, &event(2), "p2")],
                None,
            )
        })
        .build();
    let client = client(&[&start, &get]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 2_000)).await;
    result.unwrap();
    let ptrs: Vec<_> = fed.iter().map(|f| f.1.clone().unwrap()).collect();
    assert_eq!(ptrs, ["p1", "p2"], "each half once");
    assert_eq!(ins.stats.reruns.load(Ordering::Relaxed), 1);
    assert_eq!(ins.stats.splits.load(Ordering::Relaxed), 1);
    assert_eq!(start.num_calls(), 4);
}

#[tokio::test]
async fn a_query_that_keeps_failing_fails_the_read() {
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .repeatedly()
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| answer(QueryStatus::Failed, vec![], None))
        .repeatedly()
        .build();
    let client = client(&[&start, &get]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("ended Failed 3 time(s)"), "{err}");
    assert!(fed.is_empty());
}

#[tokio::test]
async fn a_one_second_range_still_cut_or_timed_out_is_read_with_filter_log_events() {
    for cut_by in ["limit", "timeout"] {
        let start = mock!(Client::start_query)
            .sequence()
            .output(started("q1"))
            .build();
        let get = mock!(Client::get_query_results)
            .sequence()
            .output(move || {
                if cut_by == "limit" {
                    // As many rows as the limit (2): cut short.
                    answer(
                        QueryStatus::Complete,
                        vec![
                            row(T + 100, STREAM, &event(1), "p1"),
                            row(T + 200, STREAM, &event(2), "p2"),
                        ],
                        None,
                    )
                } else {
                    answer(QueryStatus::Timeout, vec![], None)
                }
            })
            .build();
        let filter = mock!(Client::filter_log_events)
            .match_requests(|r| r.start_time() == Some(T + 100) && r.end_time() == Some(T + 899))
            .sequence()
            .output(|| {
                let events = (1..=3)
                    .map(|n| {
                        FilteredLogEvent::builder()
                            .log_stream_name(STREAM)
                            .event_id(format!("e{n}"))
                            .timestamp(T + 100 * n)
                            .message(event(n as u64))
                            .build()
                    })
                    .collect();
                FilterLogEventsOutput::builder()
                    .set_events(Some(events))
                    .build()
            })
            .build();
        let client = client(&[&start, &get, &filter]);
        let ins = Insights::new(settings(2, 4, None));
        let (result, fed, _) = read(&client, &ins, &query(T + 100, T + 900)).await;
        result.unwrap();
        let ids: Vec<_> = fed.iter().map(|f| f.1.clone().unwrap()).collect();
        assert_eq!(
            ids,
            ["e1", "e2", "e3"],
            "{cut_by}: the second's events, each once"
        );
        assert_eq!(ins.stats.reread_seconds.load(Ordering::Relaxed), 1);
        assert_eq!(filter.num_calls(), 1);
    }
}

#[tokio::test]
async fn more_matched_than_returned_is_a_cut_result() {
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .output(started("q2"))
        .output(started("q3"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        // One row of 25 matched: the server capped it below the limit.
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 10, STREAM, &event(1), "p1")],
                Some((25.0, 1e6)),
            )
        })
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 10, STREAM, &event(1), "p1")],
                Some((1.0, 5e5)),
            )
        })
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 1_010, STREAM, &event(2), "p2")],
                Some((1.0, 5e5)),
            )
        })
        .build();
    let client = client(&[&start, &get]);
    let ins = Insights::new(settings(10, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 2_000)).await;
    result.unwrap();
    assert_eq!(
        fed.len(),
        2,
        "p1 fed once, from the half, not from the cut result"
    );
    assert_eq!(ins.stats.splits.load(Ordering::Relaxed), 1);
    assert_eq!(
        ins.bytes_scanned(),
        2e6,
        "every query's bytes count, the cut one's too"
    );
}

#[tokio::test]
async fn statistics_make_the_cost_line() {
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| answer(QueryStatus::Running, vec![], Some((0.0, 1e9))))
        .output(|| {
            answer(
                QueryStatus::Complete,
                vec![row(T + 10, STREAM, &event(1), "p1")],
                Some((1.0, 3e9)),
            )
        })
        .build();
    let client = client(&[&start, &get]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, _, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    result.unwrap();
    assert_eq!(ins.bytes_scanned(), 3e9);
    let line = ins.cost_line("us-east-1");
    assert!(line.contains("Insights: 1 query ("), "{line}");
    assert!(line.contains("3.00 GB scanned"), "{line}");
    assert!(
        line.contains("estimated cost $0.0150 at $0.005/GB in us-east-1"),
        "{line}"
    );
    assert!(line.contains("an estimate"), "{line}");
    let elsewhere = ins.cost_line("eu-central-1");
    assert!(
        elsewhere.contains("eu-central-1's may differ"),
        "{elsewhere}"
    );
}

#[tokio::test]
async fn a_spent_budget_stops_the_queries_it_started() {
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .output(started("q2"))
        .output(started("q3"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| answer(QueryStatus::Running, vec![], Some((0.0, 6e8))))
        .repeatedly()
        .build();
    let stop1 = mock!(Client::stop_query)
        .match_requests(|r| r.query_id() == Some("q1"))
        .sequence()
        .output(|| StopQueryOutput::builder().success(true).build())
        .build();
    let stop2 = mock!(Client::stop_query)
        .match_requests(|r| r.query_id() == Some("q2"))
        .sequence()
        .output(|| StopQueryOutput::builder().success(true).build())
        .build();
    let client = client(&[&start, &get, &stop1, &stop2]);
    let ins = Insights::new(settings(100, 2, Some(1e9)));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 4_000)).await;
    let err = result.unwrap_err();
    assert!(err.is::<Stopped>(), "{err:#}");
    assert!(format!("{err:#}").contains("--max-scan-gb 1"), "{err:#}");
    assert_eq!(ins.stopped(), Some(Stop::Budget));
    assert_eq!(
        (stop1.num_calls(), stop2.num_calls()),
        (1, 1),
        "each running query stopped once"
    );
    assert_eq!(start.num_calls(), 2, "no query started past the budget");
    assert_eq!(ins.stats.stopped.load(Ordering::Relaxed), 2);
    assert!(fed.is_empty());
    // The run is stopped: a later read starts nothing.
    let (later, _, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    assert!(later.unwrap_err().is::<Stopped>());
    assert_eq!(start.num_calls(), 2);
}

#[tokio::test]
async fn an_interrupted_run_stops_its_running_queries() {
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(|| answer(QueryStatus::Running, vec![], None))
        .repeatedly()
        .build();
    let stop = mock!(Client::stop_query)
        .match_requests(|r| r.query_id() == Some("q1"))
        .sequence()
        .output(|| StopQueryOutput::builder().success(true).build())
        .build();
    let client = client(&[&start, &get, &stop]);
    let ins = Insights::new(settings(100, 1, None));
    let q = query(T, T + 1_000);
    let ((result, _, _), ()) = tokio::join!(read(&client, &ins, &q), async {
        while get.num_calls() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ins.interrupt();
    });
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(stop.num_calls(), 1);
}

#[tokio::test]
async fn messages_the_server_shortened_are_read_whole_with_filter_log_events() {
    let whole = event(1);
    let shortened = whole[..60].to_string();
    let start = mock!(Client::start_query)
        .sequence()
        .output(started("q1"))
        .build();
    let get = mock!(Client::get_query_results)
        .sequence()
        .output(move || {
            answer(
                QueryStatus::Complete,
                vec![
                    // Second T: one message shortened, one whole.
                    row(T + 100, STREAM, &shortened, "p1"),
                    row(T + 200, STREAM, &event(2), "p2"),
                    // Second T + 1: whole.
                    row(T + 1_300, STREAM, &event(3), "p3"),
                ],
                None,
            )
        })
        .build();
    let filter = mock!(Client::filter_log_events)
        .match_requests(|r| r.start_time() == Some(T) && r.end_time() == Some(T + 999))
        .sequence()
        .output(|| {
            let events = (1..=2)
                .map(|n| {
                    FilteredLogEvent::builder()
                        .log_stream_name(STREAM)
                        .event_id(format!("e{n}"))
                        .timestamp(T + 100 * n)
                        .message(event(n as u64))
                        .build()
                })
                .collect();
            FilterLogEventsOutput::builder()
                .set_events(Some(events))
                .build()
        })
        .build();
    let client = client(&[&start, &get, &filter]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 2_000)).await;
    result.unwrap();
    assert_eq!(
        fed,
        vec![
            (T + 1_300, Some("p3".into()), event(3)),
            (T + 100, Some("e1".into()), whole),
            (T + 200, Some("e2".into()), event(2)),
        ],
        "the shortened second read whole, each event once"
    );
    assert_eq!(ins.stats.reread_seconds.load(Ordering::Relaxed), 1);
}

/// The queries a mocked StartQuery started, in order: (query id, query
/// string), as DescribeQueries would list them.
type Started = Arc<Mutex<Vec<(String, String)>>>;

/// StartQuery that starts `q1`, `q2`, ... and remembers each query string.
fn starting(started: &Started) -> Rule {
    let started = started.clone();
    mock!(Client::start_query).then_compute_output(move |r| {
        let mut s = started.lock().unwrap();
        let id = format!("q{}", s.len() + 1);
        s.push((id.clone(), r.query_string().unwrap_or_default().to_string()));
        StartQueryOutput::builder().query_id(id).build()
    })
}

/// DescribeQueries of the log group: every query started, still running,
/// and one of someone else's; `hide` leaves out the queries of the lost
/// answers (the first `hide` started).
fn describing(started: &Started, hide: usize) -> Rule {
    let started = started.clone();
    mock!(Client::describe_queries)
        .match_requests(|r| r.log_group_name() == Some("/aws/eks/c/cluster"))
        .then_compute_output(move |_| {
            let mut queries: Vec<QueryInfo> = started
                .lock()
                .unwrap()
                .iter()
                .skip(hide)
                .map(|(id, text)| {
                    QueryInfo::builder()
                        .query_id(id)
                        .query_string(text)
                        .status(QueryStatus::Running)
                        .log_group_name("/aws/eks/c/cluster")
                        .build()
                })
                .collect();
            queries.push(
                QueryInfo::builder()
                    .query_id("dashboard")
                    .query_string("fields @message | limit 20")
                    .status(QueryStatus::Running)
                    .build(),
            );
            DescribeQueriesOutput::builder()
                .set_queries(Some(queries))
                .build()
        })
}

/// Loses the answers of the StartQuery calls numbered in `lose` (from 1):
/// the server started the query (the mock answered), and the client sees
/// an error instead, as after a connection reset while the answer was read.
#[derive(Debug)]
struct LoseAnswers {
    lose: Vec<usize>,
    starts: AtomicUsize,
    losing: AtomicBool,
}

impl LoseAnswers {
    fn of(lose: &[usize]) -> LoseAnswers {
        LoseAnswers {
            lose: lose.to_vec(),
            starts: AtomicUsize::new(0),
            losing: AtomicBool::new(false),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Intercept for LoseAnswers {
    fn name(&self) -> &'static str {
        "LoseAnswers"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The tests run one request at a time (one query slot).
        if context.input().downcast_ref::<StartQueryInput>().is_some() {
            let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
            self.losing.store(self.lose.contains(&n), Ordering::SeqCst);
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        _context: &mut FinalizerInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.losing.swap(false, Ordering::SeqCst) {
            return Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )));
        }
        Ok(())
    }
}

fn losing_client(rules: &[&Rule], lose: &'static [usize]) -> Client {
    mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, rules, |b| b
        .retry_config(aws_sdk_cloudwatchlogs::config::retry::RetryConfig::disabled())
        .interceptor(LoseAnswers::of(lose)))
}

fn stopping(id: &'static str) -> Rule {
    mock!(Client::stop_query)
        .match_requests(move |r| r.query_id() == Some(id))
        .sequence()
        .output(|| StopQueryOutput::builder().success(true).build())
        .build()
}

fn results_of(
    id: &'static str,
    answer: impl Fn() -> GetQueryResultsOutput + Send + Sync + 'static,
) -> Rule {
    mock!(Client::get_query_results)
        .match_requests(move |r| r.query_id() == Some(id))
        .then_output(answer)
}

/// The first StartQuery's answer lost after it started q1 (which DescribeQueries
/// lists); the retry starts q2, which completes with one row. q1 scanned
/// `lost_bytes`, q2 `bytes`; each may be stopped.
struct LostFirst {
    started: Started,
    start: Rule,
    describe: Rule,
    stop1: Rule,
    stop2: Rule,
    get1: Rule,
    get2: Rule,
}

impl LostFirst {
    fn new(lost_bytes: f64, bytes: f64) -> LostFirst {
        let started = Started::default();
        LostFirst {
            start: starting(&started),
            describe: describing(&started, 0),
            stop1: stopping("q1"),
            stop2: stopping("q2"),
            get1: results_of("q1", move || {
                answer(QueryStatus::Cancelled, vec![], Some((0.0, lost_bytes)))
            }),
            get2: completes("q2", bytes),
            started,
        }
    }

    fn client(&self) -> Client {
        let rules = [
            &self.start,
            &self.describe,
            &self.stop1,
            &self.stop2,
            &self.get1,
            &self.get2,
        ];
        losing_client(&rules, &[1])
    }
}

/// GetQueryResults of `id`: complete, one row, `bytes` scanned.
fn completes(id: &'static str, bytes: f64) -> Rule {
    results_of(id, move || {
        answer(
            QueryStatus::Complete,
            vec![row(T + 10, STREAM, &event(1), "p1")],
            Some((1.0, bytes)),
        )
    })
}

#[tokio::test]
async fn a_lost_start_query_answer_is_found_by_its_marker_stopped_and_counted() {
    let lost = LostFirst::new(9e8, 2e8);
    let (started, client) = (&lost.started, lost.client());
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    result.unwrap();
    assert_eq!(fed.len(), 1);
    // Each attempt sent its own marker first, then the same query.
    let sent = started.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let (first, rest): (Vec<&str>, Vec<&str>) = sent
        .iter()
        .map(|(_, text)| text.split_once('\n').unwrap())
        .unzip();
    assert!(
        first.iter().all(|l| l.starts_with("# kubeanon-")),
        "{first:?}"
    );
    assert_ne!(first[0], first[1]);
    assert_eq!(rest[0], rest[1]);
    assert!(rest[0].starts_with("fields @timestamp"), "{}", rest[0]);
    // Found (one DescribeQueries), stopped, and its bytes counted; the
    // query whose answer came is not stopped.
    assert_eq!(lost.describe.num_calls(), 1);
    assert_eq!((lost.stop1.num_calls(), lost.stop2.num_calls()), (1, 0));
    assert_eq!(lost.get1.num_calls(), 1);
    assert_eq!(ins.bytes_scanned(), 9e8 + 2e8);
    assert_eq!(ins.stats.lost.load(Ordering::Relaxed), 1);
    assert_eq!(ins.stats.lost_found.load(Ordering::Relaxed), 1);
    assert_eq!(ins.stats.stopped.load(Ordering::Relaxed), 1);
    let line = ins.cost_line("us-east-1");
    assert!(
        line.contains("1 stopped, 1 StartQuery answer lost; 1 of their queries found by marker, stopped and counted)"),
        "{line}"
    );
    assert!(line.contains("1.10 GB scanned"), "{line}");
}

#[tokio::test]
async fn a_lost_answers_query_counts_against_the_budget() {
    // The lost query scanned 1.5 GB of a 1 GB budget; q2 would scan little.
    let lost = LostFirst::new(1.5e9, 1e6);
    let (started, client) = (&lost.started, lost.client());
    let ins = Insights::new(settings(100, 1, Some(1e9)));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 2_000)).await;
    let err = result.unwrap_err();
    assert!(err.is::<Stopped>(), "{err:#}");
    assert!(format!("{err:#}").contains("1.50 GB scanned"), "{err:#}");
    assert_eq!(ins.stopped(), Some(Stop::Budget));
    assert!(fed.is_empty());
    // Both stopped: the lost one when found, q2 with the read.
    assert_eq!((lost.stop1.num_calls(), lost.stop2.num_calls()), (1, 1));
    assert_eq!(lost.get2.num_calls(), 0, "q2 was never polled");
    let (later, _, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    assert!(later.unwrap_err().is::<Stopped>());
    assert_eq!(
        started.lock().unwrap().len(),
        2,
        "no query started past the budget"
    );
}

#[tokio::test]
async fn a_lost_answer_whose_query_is_not_found_is_said_to_run_on() {
    let started = Started::default();
    let start = starting(&started);
    // DescribeQueries does not list q1 (not started after all, or not
    // listed yet): looked for after the call and at the read's end.
    let describe = describing(&started, 1);
    let get2 = completes("q2", 2e8);
    let client = losing_client(&[&start, &describe, &get2], &[1]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, fed, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    result.unwrap();
    assert_eq!(fed.len(), 1);
    assert_eq!(describe.num_calls(), 2);
    assert_eq!(ins.stats.lost.load(Ordering::Relaxed), 1);
    assert_eq!(ins.stats.lost_found.load(Ordering::Relaxed), 0);
    assert_eq!(ins.stats.lost_not_found.load(Ordering::Relaxed), 1);
    assert_eq!(ins.bytes_scanned(), 2e8);
    let line = ins.cost_line("us-east-1");
    assert!(
        line.contains(
            "1 StartQuery answer lost; 1 of their queries could not be found: they may run on and be billed)"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn a_failed_look_for_a_lost_answer_is_said_with_its_likely_cause() {
    let started = Started::default();
    let start = starting(&started);
    // A role without logs:DescribeQueries.
    let denied = r#"{"__type":"AccessDeniedException","message":"not authorized to perform: logs:DescribeQueries"}"#;
    let describe = mock!(Client::describe_queries)
        .sequence()
        .http_status(400, Some(denied.to_string()))
        .repeatedly()
        .build();
    let get2 = completes("q2", 2e8);
    let client = losing_client(&[&start, &describe, &get2], &[1]);
    let ins = Insights::new(settings(100, 1, None));
    let (result, _, _) = read(&client, &ins, &query(T, T + 1_000)).await;
    result.unwrap();
    assert_eq!(ins.stats.lost_not_found.load(Ordering::Relaxed), 1);
    let line = ins.cost_line("us-east-1");
    assert!(
        line.contains("could not be found: they may run on and be billed; DescribeQueries failed 2 time(s) (-v shows why; the role needs logs:DescribeQueries)"),
        "{line}"
    );
}
