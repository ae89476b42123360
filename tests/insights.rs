//! `kubeanon poll --engine insights` against moto's server, which runs
//! StartQuery/GetQueryResults over the events it holds: it honours `limit`
//! in the query string and the time range in seconds (`start*1000 <= ts <=
//! end*1000`, as AWS), but ignores `filter`, so every event of every
//! stream comes back and the core must narrow them down. Sequences moto
//! cannot produce (query states, statistics, LimitExceededException) are in
//! `tests/insights_mock.rs`; here the proxy answers the two it lacks
//! (a query that stays running, and StopQuery) to test Ctrl-C and the
//! scan budget end to end.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::proxy::Proxy;
use support::*;

/// A log group with an audit stream and the API server's own stream.
fn setup(name: &str) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM, APISERVER_STREAM]);
    group
}

/// Rows without their `id` (Insights rows hash `@ptr`, FilterLogEvents
/// rows the eventId), as sorted JSON text: the 13 columns, count, cluster,
/// log group and region.
fn rows_without_id(stdout: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = rows(stdout)
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("id");
            r.to_string()
        })
        .collect();
    out.sort();
    out
}

/// The number before `label` in the Insights cost line.
fn insights_number(stderr: &[u8], label: &str) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Insights:"))
        .unwrap_or_else(|| panic!("no Insights line: {text}"));
    summary_number(line.as_bytes(), label)
}

#[test]
fn many_splits_over_several_clusters_give_the_rows_of_filter_and_of_scan() {
    // Not on a second boundary, so that the window's first and last
    // seconds are partial.
    let base = (now_ms() - 40 * 60_000) / 1000 * 1000 + 137;
    let mut groups = Vec::new();
    let mut audit_lines = Vec::new();
    for c in 0..3u64 {
        let group = setup(&format!("insights-many-{c}"));
        let mut events: Vec<(i64, String)> = (0..90u64)
            .map(|i| {
                (
                    base + i as i64 * 2_000 + (i % 7) as i64,
                    audit_event(c * 1000 + i, i % 3 == 0),
                )
            })
            .collect();
        // A burst of 12 anonymous events in one second: more rows than
        // --query-limit 5 in a single second, read with FilterLogEvents.
        events.extend((0..12u64).map(|k| {
            (
                base + 100_000 + k as i64 * 50,
                audit_event(c * 1000 + 500 + k, true),
            )
        }));
        // An event CloudWatch cut at its size limit: a row of rule
        // truncated either way (its readable part shows the anonymous user).
        let cut = format!(
            "{}[Truncated...]",
            &audit_event(c * 1000 + 900, true)[..300]
        );
        events.push((base + 150_000 + 3, cut));
        put(&group, AUDIT_STREAM, &events);
        // Anonymous-looking lines of the API server's own stream, which
        // moto returns too: the stream prefix keeps them out.
        let noise: Vec<(i64, String)> = (0..10u64)
            .map(|i| {
                (
                    base + 5_000 + i as i64 * 3_001,
                    audit_event(c * 1000 + 700 + i, true),
                )
            })
            .collect();
        put(&group, APISERVER_STREAM, &noise);
        audit_lines.extend(events.into_iter().map(|e| e.1));
        groups.push(group);
    }
    let window = ["--start", &rfc(base - 5_000), "--end", &rfc(base + 200_000)].map(String::from);
    let poll_all = |engine: &[&str]| {
        let mut cmd = poll(&groups[0]);
        for g in &groups[1..] {
            cmd.args(["--log-group", g]);
        }
        cmd.args(&window).args(engine);
        run(&mut cmd)
    };
    let insights = poll_all(&[
        "--engine",
        "insights",
        "--query-limit",
        "5",
        "--max-queries",
        "3",
    ]);
    let filter = poll_all(&["--engine", "filter"]);

    let (got, want) = (
        rows_without_id(&insights.stdout),
        rows_without_id(&filter.stdout),
    );
    assert_eq!(
        got.len(),
        3 * (30 + 12 + 1),
        "a third of 90, the burst, and the cut record"
    );
    assert_eq!(got, want, "the same rows, 13 columns, count and cluster");
    for label in ["events", "malformed", "truncated", "matched", "findings"] {
        assert_eq!(
            summary_number(&insights.stderr, label),
            summary_number(&filter.stderr, label),
            "{label}"
        );
    }
    assert_eq!(summary_number(&insights.stderr, "truncated"), 3);
    assert_eq!(summary_number(&insights.stderr, "malformed"), 0);
    assert!(
        insights_number(&insights.stderr, "split") >= 10,
        "{}",
        String::from_utf8_lossy(&insights.stderr)
    );
    // The burst's second in each cluster stays over the limit, and each
    // truncated event's second is read whole: both with FilterLogEvents.
    assert!(insights_number(&insights.stderr, "second") >= 6);
    let ids: BTreeSet<String> = rows(&insights.stdout)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), got.len(), "each row its own id");

    // And `kubeanon scan` of the same audit events: ESCU's rows alike (a
    // cut record's time is CloudWatch's in poll; a file has none).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, audit_lines.join("\n")).unwrap();
    let scan = run(Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "--rules", "escu"])
        .arg(&file));
    let escu: Vec<serde_json::Value> = rows(&insights.stdout)
        .into_iter()
        .filter(|r| r["rule"] == "escu")
        .collect();
    assert_eq!(totals(&rows(&scan.stdout)), totals(&escu));
    assert_eq!(summary_number(&scan.stderr, "malformed"), 3);
}

#[test]
fn window_edges_are_exact_on_both_engines() {
    let second = (now_ms() - 20 * 60_000) / 1000 * 1000;
    // A window starting and ending inside a second, and one on whole
    // seconds (where Insights includes the end's first millisecond).
    for (name, start) in [
        ("insights-edges-ms", second + 500),
        ("insights-edges-s", second),
    ] {
        let group = setup(name);
        let end = start + 60_000;
        put(
            &group,
            AUDIT_STREAM,
            &[
                (start - 1, audit_event(1, true)),
                (start, audit_event(2, true)),
                (end - 1, audit_event(3, true)),
                (end, audit_event(4, true)),
            ],
        );
        let want: Vec<String> = [2, 3]
            .iter()
            .map(|n| {
                serde_json::from_str::<serde_json::Value>(&audit_event(*n, true)).unwrap()
                    ["requestReceivedTimestamp"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for engine in ["filter", "insights"] {
            let out = run(poll(&group).args([
                "--start",
                &rfc(start),
                "--end",
                &rfc(end),
                "--engine",
                engine,
            ]));
            let mut got: Vec<String> = rows(&out.stdout)
                .iter()
                .map(|r| r["requestReceivedTimestamp"].as_str().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got, want, "{name} {engine}: start inclusive, end exclusive");
        }
    }
}

#[test]
fn insights_flags_are_checked_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let poll = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
        aws_env(&mut cmd)
            .args([
                "poll",
                "--cluster",
                "x",
                "--endpoint-url",
                &closed_endpoint(),
            ])
            .args(args);
        cmd.output().unwrap()
    };
    let out = poll(&["--engine", "insights", "--checkpoint", cp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--checkpoint") && err.contains("eventIds"),
        "{err}"
    );
    assert!(!cp.exists(), "the checkpoint is not touched");
    for args in [
        &["--query-limit", "10"][..],
        &["--max-scan-gb", "1"],
        &["--engine", "insights", "--query-limit", "0"],
        &["--engine", "insights", "--query-limit", "100001"],
        &["--engine", "insights", "--max-queries", "0"],
        &["--engine", "insights", "--max-queries", "31"],
        &["--engine", "insights", "--max-scan-gb", "0"],
        &["--engine", "insights", "--max-scan-gb", "NaN"],
        &["--engine", "insights", "--max-scan-gb", "-1"],
        &["--engine", "grep"],
    ] {
        let out = poll(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The query ids named in the bodies of the requests for `operation`.
fn query_ids(proxy: &Proxy, operation: &str) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .filter(|r| r.target.ends_with(operation))
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["queryId"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A log group with anonymous events over the last half hour.
fn busy_group(name: &str) -> String {
    let group = setup(name);
    let base = now_ms() - 25 * 60_000;
    put(
        &group,
        AUDIT_STREAM,
        &(0..20u64)
            .map(|i| (base + i as i64 * 30_000, audit_event(i, true)))
            .collect::<Vec<_>>(),
    );
    group
}

#[test]
fn a_spent_scan_budget_stops_the_run_and_its_queries() {
    let group = busy_group("insights-budget");
    let proxy = Proxy::start(&moto().endpoint);
    // Each query says it has scanned 0.6 GB and is still running.
    proxy.answer(
        "GetQueryResults",
        r#"{"status":"Running","results":[],"statistics":{"recordsMatched":0.0,"recordsScanned":500000.0,"bytesScanned":600000000.0}}"#,
    );
    proxy.answer("StopQuery", r#"{"success":true}"#);
    let out = poll_at(&proxy.endpoint, &group)
        .args([
            "--since",
            "30m",
            "--engine",
            "insights",
            "--max-queries",
            "2",
            "--max-scan-gb",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--max-scan-gb 1"), "{err}");
    assert!(err.contains("1.20 GB scanned"), "{err}");
    assert!(out.stdout.is_empty(), "nothing delivered");
    let started: BTreeSet<String> = query_ids(&proxy, "GetQueryResults").into_iter().collect();
    let stopped: Vec<String> = query_ids(&proxy, "StopQuery");
    assert_eq!(started.len(), 2, "two queries ran");
    assert_eq!(
        stopped.iter().cloned().collect::<BTreeSet<_>>(),
        started,
        "each running query stopped"
    );
    assert_eq!(stopped.len(), 2, "once each");
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.target.ends_with("StartQuery"))
            .count(),
        2,
        "no query started once the budget was spent"
    );
}

/// Ctrl-C, and SIGTERM (Kubernetes, `timeout`) alike: the running queries
/// are stopped, the run exits 130 or 143 with its line.
#[test]
fn ctrl_c_and_sigterm_stop_the_running_queries() {
    for (signal, name, code) in [("-INT", "SIGINT", 130), ("-TERM", "SIGTERM", 143)] {
        stopped_by(signal, name, code);
    }
}

fn stopped_by(signal: &str, name: &str, code: i32) {
    let group = busy_group(&format!("insights-{}", name.to_lowercase()));
    let proxy = Proxy::start(&moto().endpoint);
    proxy.answer("GetQueryResults", r#"{"status":"Running","results":[]}"#);
    proxy.answer("StopQuery", r#"{"success":true}"#);
    let mut child = poll_at(&proxy.endpoint, &group)
        .args([
            "--since",
            "30m",
            "--engine",
            "insights",
            "--max-queries",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while query_ids(&proxy, "GetQueryResults")
        .into_iter()
        .collect::<BTreeSet<_>>()
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "the queries never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let sent = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "kubeanon did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Promptly: StopQuery once each, not waited out with retries.
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "kubeanon poll: interrupted ({name}): 0 of 1 log group(s) read to the end"
        )) && line.ends_with("; 3 running Insights queries stopped"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("interrupted")).count(),
        1,
        "{err}"
    );
    let started: BTreeSet<String> = query_ids(&proxy, "GetQueryResults").into_iter().collect();
    let stopped: BTreeSet<String> = query_ids(&proxy, "StopQuery").into_iter().collect();
    assert_eq!(stopped, started, "every running query stopped");
}
