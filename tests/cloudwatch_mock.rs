//! Response sequences no server produces on demand, through aws-smithy-mocks:
//! empty pages that still carry a token, throttling, 5xx, a retry budget
//! running out. The reader under test is the one `kubeanon poll` uses.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput;
use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use kubeanon::source::cloudwatch::{Api, ApiStats, Pacer, Query, RetryPolicy, read_group};

const STREAM: &str = "kube-apiserver-audit-0123456789abcdef0123456789abcdef";

fn query() -> Query {
    Query {
        log_group: "/aws/eks/c/cluster".into(),
        stream_prefix: "kube-apiserver-audit-".into(),
        filter_pattern: None,
        page_size: 10_000,
        start_ms: 1_000,
        end_ms: 2_000,
    }
}

fn event(id: &str, ts: i64) -> FilteredLogEvent {
    FilteredLogEvent::builder()
        .log_stream_name(STREAM)
        .event_id(id)
        .timestamp(ts)
        .message("{}")
        .build()
}

fn page(events: Vec<FilteredLogEvent>, token: Option<&str>) -> FilterLogEventsOutput {
    FilterLogEventsOutput::builder()
        .set_events(Some(events))
        .set_next_token(token.map(String::from))
        .build()
}

/// A client answering from `rule`, with the SDK's own retries off as in
/// `kubeanon poll` (retries are kubeanon's, so they are paced and counted).
fn client(rule: &Rule) -> Client {
    mock_client!(aws_sdk_cloudwatchlogs, RuleMode::Sequential, [rule], |b| b
        .retry_config(
            aws_sdk_cloudwatchlogs::config::retry::RetryConfig::disabled()
        ))
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    }
}

/// Reads the query with `client`; returns the eventIds seen and the counters.
async fn read(client: &Client, retry: RetryPolicy) -> (anyhow::Result<()>, Vec<String>, ApiStats) {
    let pacer = Pacer::new(10_000.0);
    let stats = ApiStats::default();
    let api = Api {
        client,
        endpoint: "https://logs.us-east-1.amazonaws.com",
        region: "us-east-1",
        pacer: &pacer,
        retry,
        stats: &stats,
    };
    let mut ids = Vec::new();
    let result = read_group(
        &api,
        &query(),
        |ev| {
            ids.push(ev.event_id.unwrap().to_string());
            std::ops::ControlFlow::Continue(())
        },
        |_, _| {},
    )
    .await;
    (result.map(|_| ()), ids, stats)
}

#[tokio::test]
async fn empty_pages_with_tokens_are_followed_to_the_end() {
    let rule = mock!(Client::filter_log_events)
        .sequence()
        .output(|| page(vec![], Some("t1")))
        .output(|| page(vec![], Some("t2")))
        .output(|| page(vec![event("a", 1_500)], Some("t3")))
        .output(|| page(vec![], Some("t4")))
        .output(|| page(vec![event("b", 1_600)], None))
        .build();
    let client = client(&rule);
    let (result, ids, stats) = read(&client, fast_retries(3)).await;
    result.unwrap();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(rule.num_calls(), 5);
    assert_eq!(stats.pages.load(Ordering::Relaxed), 5);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let throttle = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let rule = mock!(Client::filter_log_events)
        .sequence()
        .http_status(400, Some(throttle.to_string()))
        .http_status(400, Some(throttle.to_string()))
        .output(|| page(vec![event("a", 1_500)], Some("t1")))
        .http_status(500, None)
        .http_status(
            503,
            Some(r#"{"__type":"ServiceUnavailableException"}"#.to_string()),
        )
        .output(|| page(vec![event("b", 1_600)], None))
        .build();
    let client = client(&rule);
    let (result, ids, stats) = read(&client, fast_retries(3)).await;
    result.unwrap();
    assert_eq!(ids, ["a", "b"], "nothing lost, nothing doubled");
    assert_eq!(rule.num_calls(), 6);
    assert_eq!(stats.attempts.load(Ordering::Relaxed), 6);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 4);
    assert_eq!(stats.throttled.load(Ordering::Relaxed), 2);
    assert_eq!(stats.pages.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_page_failing_past_the_budget_fails_the_read() {
    let rule = mock!(Client::filter_log_events)
        .sequence()
        .output(|| page(vec![event("a", 1_500)], Some("t1")))
        .http_status(500, None)
        .times(3)
        .build();
    let client = client(&rule);
    let (result, _, stats) = read(&client, fast_retries(3)).await;
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("failed after 3 attempt(s)"), "{err}");
    assert_eq!(rule.num_calls(), 4);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn access_denied_is_not_retried_and_points_at_the_policy() {
    let rule = mock!(Client::filter_log_events)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"AccessDeniedException","message":"no"}"#.to_string()),
        )
        .build();
    let client = client(&rule);
    let (result, _, _) = read(&client, fast_retries(5)).await;
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("iam-policy.json"), "{err}");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn events_outside_the_window_or_from_other_streams_are_not_fed() {
    let rule = mock!(Client::filter_log_events)
        .sequence()
        .output(|| {
            let other = FilteredLogEvent::builder()
                .log_stream_name("kube-apiserver-0123")
                .event_id("other")
                .timestamp(1_500)
                .message("{}")
                .build();
            page(
                vec![
                    event("early", 999),
                    event("in", 1_000),
                    event("end", 2_000),
                    other,
                ],
                None,
            )
        })
        .build();
    let client = client(&rule);
    let (result, ids, _) = read(&client, fast_retries(1)).await;
    result.unwrap();
    assert_eq!(
        ids,
        ["in"],
        "[start, end) and the stream prefix are enforced client-side"
    );
}
