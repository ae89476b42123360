//! `kubeanon poll` against a real CloudWatch Logs API (moto's server):
//! paging, windows, lag, checkpoints, late events, crashes, the lock.
//! moto differs from AWS in ways that make it a harder test: it ignores
//! the stream prefix and filter patterns, and fills pages to `limit`.

mod support;

use std::process::{Command, Output};

use support::*;

/// A log group with both an audit stream and the API server's own stream.
fn setup(name: &str) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM, APISERVER_STREAM]);
    group
}

#[test]
fn paging_over_many_pages_equals_scan_of_the_same_events() {
    let group = setup("paging");
    let base = now_ms() - 30 * 60_000;
    let events: Vec<(i64, String)> = (0..120)
        .map(|i| (base + i as i64 * 1000, audit_event(i, i % 5 == 0)))
        .collect();
    put(&group, AUDIT_STREAM, &events);
    // The API server's own stream holds anonymous-looking lines too: the
    // prefix must keep them out even though moto ignores it.
    let noise: Vec<(i64, String)> = (500..510)
        .map(|i| (base + 5_000 + i as i64, audit_event(i, true)))
        .collect();
    put(&group, APISERVER_STREAM, &noise);
    let truncated = format!("{}[Truncated...]", &audit_event(999, true)[..300]);
    put(&group, AUDIT_STREAM, &[(base + 200_000, truncated.clone())]);

    let out = run(poll(&group).args([
        "--start",
        &rfc(base),
        "--end",
        &rfc(now_ms()),
        "--page-size",
        "7",
        "--no-server-filter",
        // ESCU's rows exactly; the cut record stays malformed (the
        // truncated rule's rows from poll: tests/deploy.rs, tests/truncated.rs).
        "--rules",
        "escu",
    ]));
    let polled = rows(&out.stdout);
    assert_eq!(polled.len(), 24, "every fifth of 120 events is anonymous");
    assert!(summary_number(&out.stderr, "pages") >= 121 / 7);
    assert_eq!(
        summary_number(&out.stderr, "malformed"),
        1,
        "the truncated event"
    );
    assert_eq!(
        summary_number(&out.stderr, "events"),
        120,
        "well-formed events, the malformed one apart"
    );
    for r in &polled {
        assert_eq!(r["cluster"], "paging");
        assert_eq!(r["log_group"], group.as_str());
        assert_eq!(r["region"], REGION);
        assert_eq!(r["id"].as_str().unwrap().len(), 32);
    }

    // The same events through `kubeanon scan` give the same findings.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut lines: Vec<String> = events.iter().map(|e| e.1.clone()).collect();
    lines.push(truncated);
    std::fs::write(&file, lines.join("\n")).unwrap();
    let scan = run(Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "--rules", "escu"])
        .arg(&file));
    assert_eq!(totals(&rows(&scan.stdout)), totals(&polled));
}

#[test]
fn the_window_is_half_open_and_lag_leaves_out_recent_events() {
    let group = setup("window");
    let start = now_ms() - 20 * 60_000;
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
    let out = run(poll(&group).args(["--start", &rfc(start), "--end", &rfc(end)]));
    let got: Vec<String> = rows(&out.stdout)
        .iter()
        .map(|r| r["requestReceivedTimestamp"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = [2, 3]
        .iter()
        .map(|n| serde_json::from_str::<serde_json::Value>(&audit_event(*n, true)).unwrap()["requestReceivedTimestamp"]
            .as_str()
            .unwrap()
            .to_string())
        .collect();
    assert_eq!(got, want, "start is inclusive, end exclusive");

    // Lag: an event 30 s old is left out by the default 2m lag.
    let recent = setup("lag");
    put(
        &recent,
        AUDIT_STREAM,
        &[(now_ms() - 30_000, audit_event(5, true))],
    );
    assert_eq!(
        rows(&run(poll(&recent).args(["--since", "10m", "--allow-idle"])).stdout).len(),
        0
    );
    assert_eq!(
        rows(&run(poll(&recent).args(["--since", "10m", "--lag", "0s"])).stdout).len(),
        1
    );
}

#[test]
fn checkpoint_resumes_and_late_events_are_counted_exactly_once() {
    let group = setup("resume");
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let t0 = now_ms();
    // Three anonymous events 8 minutes ago: inside the next run's overlap.
    put(
        &group,
        AUDIT_STREAM,
        &(0..3)
            .map(|i| (t0 - 8 * 60_000 + i, audit_event(10 + i as u64, true)))
            .collect::<Vec<_>>(),
    );
    put(
        &group,
        AUDIT_STREAM,
        &[(t0 - 9 * 60_000, audit_event(50, false))],
    );
    let first = run(poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp));
    assert_eq!(rows(&first.stdout).len(), 3);

    // A late event: its time is before the watermark, it arrives now.
    put(
        &group,
        AUDIT_STREAM,
        &[(t0 - 4 * 60_000, audit_event(20, true))],
    );
    let second = run(poll(&group).arg("--checkpoint").arg(&cp));
    let second_rows = rows(&second.stdout);
    assert_eq!(second_rows.len(), 1, "only the late event");
    assert_eq!(summary_number(&second.stderr, "late"), 1);
    assert_eq!(
        summary_number(&second.stderr, "already"),
        3,
        "the first run's events, rescanned"
    );

    let third = run(poll(&group).arg("--checkpoint").arg(&cp));
    assert_eq!(rows(&third.stdout).len(), 0);

    // All runs together equal one run over the whole period.
    let whole = run(poll(&group).args(["--since", "30m"]));
    let mut all = rows(&first.stdout);
    all.extend(second_rows);
    assert_eq!(totals(&all), totals(&rows(&whole.stdout)));

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    assert_eq!(state["version"], 3);
    assert_eq!(state["groups"][0]["log_group"], group.as_str());
    // moto's default account: the caller's, from STS.
    assert_eq!(state["groups"][0]["account"], "123456789012");
    assert_eq!(state["groups"][0]["seen"].as_object().unwrap().len(), 4);
}

#[test]
fn a_crash_after_stdout_repeats_rows_with_the_same_ids() {
    require_test_hooks();
    let group = setup("crash-stdout");
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    put(
        &group,
        AUDIT_STREAM,
        &(0..4)
            .map(|i| (now_ms() - 5 * 60_000 + i, audit_event(30 + i as u64, true)))
            .collect::<Vec<_>>(),
    );
    let crashed = poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .env("KUBEANON_FAULT", "after-output")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let before = rows(&crashed.stdout);
    assert_eq!(before.len(), 4, "rows were written before the crash");
    let again = run(poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp));
    let ids = |rs: &[serde_json::Value]| {
        rs.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&rows(&again.stdout)),
        ids(&before),
        "at least once, and a repeat carries the same id"
    );
    assert_eq!(
        rows(&run(poll(&group).arg("--checkpoint").arg(&cp)).stdout).len(),
        0
    );
}

#[test]
fn append_delivery_is_exactly_once_whatever_the_crash_point() {
    require_test_hooks();
    for point in ["after-pending", "mid-append", "after-output"] {
        let group = setup(&format!("crash-{point}"));
        let dir = tempfile::tempdir().unwrap();
        let cp = dir.path().join("cp.json");
        let out = dir.path().join("findings.ndjson");
        let t0 = now_ms();
        put(
            &group,
            AUDIT_STREAM,
            &(0..5)
                .map(|i| (t0 - 6 * 60_000 + i, audit_event(40 + i as u64, true)))
                .collect::<Vec<_>>(),
        );
        let crashed = poll(&group)
            .args(["--since", "30m", "-q"])
            .arg("--checkpoint")
            .arg(&cp)
            .arg("--append")
            .arg(&out)
            .env("KUBEANON_FAULT", point)
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "{point}: the fault hook aborts");
        // More events arrive, then the next scheduled run.
        put(
            &group,
            AUDIT_STREAM,
            &[(now_ms() - 3 * 60_000, audit_event(60, true))],
        );
        run(poll(&group)
            .arg("--checkpoint")
            .arg(&cp)
            .arg("--append")
            .arg(&out));
        run(poll(&group)
            .arg("--checkpoint")
            .arg(&cp)
            .arg("--append")
            .arg(&out));
        let delivered = rows(&std::fs::read(&out).unwrap());
        let whole = run(poll(&group).args(["--since", "30m"]));
        assert_eq!(
            totals(&delivered),
            totals(&rows(&whole.stdout)),
            "{point}: nothing lost, nothing doubled"
        );
        assert_eq!(delivered.len(), 6, "{point}");
    }
}

#[test]
fn a_second_run_on_a_locked_checkpoint_touches_nothing() {
    let group = setup("locked");
    put(
        &group,
        AUDIT_STREAM,
        &[(now_ms() - 5 * 60_000, audit_event(70, true))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let lock = std::fs::File::create(dir.path().join("cp.json.lock")).unwrap();
    lock.try_lock().unwrap();
    let out = poll(&group).arg("--checkpoint").arg(&cp).output().unwrap();
    assert_fails_with(&out, &["another kubeanon run", "cp.json"]);
    assert!(out.stdout.is_empty());
    assert!(!cp.exists(), "no checkpoint written");
    drop(lock);
    assert_eq!(
        rows(&run(poll(&group).arg("--checkpoint").arg(&cp)).stdout).len(),
        1
    );
}

#[test]
fn several_clusters_in_one_run() {
    let a = setup("multi-a");
    let b = setup("multi-b");
    put(
        &a,
        AUDIT_STREAM,
        &[(now_ms() - 5 * 60_000, audit_event(80, true))],
    );
    put(
        &b,
        AUDIT_STREAM,
        &[
            (now_ms() - 5 * 60_000, audit_event(81, true)),
            (now_ms() - 5 * 60_000, audit_event(82, true)),
        ],
    );
    let out = run(poll(&a).args(["--cluster", "multi-b", "--since", "30m"]));
    let mut clusters: Vec<String> = rows(&out.stdout)
        .iter()
        .map(|r| r["cluster"].as_str().unwrap().to_string())
        .collect();
    clusters.sort();
    assert_eq!(clusters, ["multi-a", "multi-b", "multi-b"]);
}

#[test]
fn a_missing_log_group_fails_with_the_command_that_enables_audit_logs() {
    let out = poll("/aws/eks/nosuch/cluster")
        .args(["--since", "10m", "--max-attempts", "2"])
        .output()
        .unwrap();
    assert_fails_with(
        &out,
        &["does not exist", "update-cluster-config --name nosuch"],
    );
}

fn doctor(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    cmd.args(["doctor", "--endpoint-url", &moto().endpoint])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn doctor_passes_a_good_cluster_and_explains_audit_logging_off() {
    let good = setup("doctor-good");
    put(
        &good,
        AUDIT_STREAM,
        &[(now_ms() - 60_000, audit_event(90, false))],
    );
    let out = doctor(&["--cluster", "doctor-good"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("logs:FilterLogEvents is allowed"), "{text}");
    assert!(
        !text.contains("testing"),
        "credentials are never printed: {text}"
    );

    // Only the API server's own stream: audit logging is off.
    create("/aws/eks/doctor-off/cluster", &[APISERVER_STREAM]);
    let out = doctor(&["--cluster", "doctor-off"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("audit logging is off")
            && text.contains("update-cluster-config --name doctor-off"),
        "{text}"
    );
}

#[test]
fn steps_make_one_document_in_every_format() {
    let group = setup("steps-formats");
    put(
        &group,
        AUDIT_STREAM,
        &(0..7)
            .map(|i| {
                (
                    now_ms() - 20 * 60_000 + i * 60_000,
                    audit_event(700 + i as u64, true),
                )
            })
            .collect::<Vec<_>>(),
    );
    // Two matched events a step at most: several steps.
    let stepped = |format: &str| {
        let out =
            run(poll(&group).args(["--since", "30m", "--step-matches", "2", "--format", format]));
        assert!(
            summary_number(&out.stderr, "steps") >= 4,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&stepped("json")).expect("one JSON array");
    assert_eq!(json.len(), 7);
    let csv = stepped("csv");
    assert_eq!(
        csv.matches("objectRef.name,").count(),
        1,
        "one header: {csv}"
    );
    assert_eq!(csv.lines().count(), 8);
    assert_eq!(rows(stepped("ndjson").as_bytes()).len(), 7);
    assert_eq!(totals(&json), totals(&rows(stepped("ndjson").as_bytes())));
}
