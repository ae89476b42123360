//! Messages about windows and signals (issue 22), through the binary
//! against moto: an empty window is not called unwatched when EKS says
//! audit logging is on; a window before the log group existed or past its
//! retention says so and is clipped; `--since` beside a checkpoint says it
//! is not used; SIGINT and SIGTERM exit 130 and 143 with one line.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::fleet::{build, cluster, kubeanon, role};
use support::*;

fn group_with_events(name: &str) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM]);
    let now = now_ms();
    let events: Vec<(i64, String)> = (0..4)
        .map(|i| (now - 20 * 60_000 + i * 1000, audit_event(i as u64, i == 0)))
        .collect();
    put(&group, AUDIT_STREAM, &events);
    group
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_empty_window_of_a_cluster_whose_audit_logging_is_on_is_not_called_unwatched() {
    let account = "222200002222";
    // Its events are 8 minutes old: the window 30m..20m ago holds none.
    build(account, REGION, &[cluster("window-on", true, 1, 1)], &[]);
    let out = kubeanon(
        &moto().endpoint,
        &[
            "poll",
            "--cluster",
            "window-on",
            "--since",
            "30m",
            "--end",
            "20m",
            "--role-arn",
            &role(account),
            "--region",
            REGION,
        ],
    )
    .output()
    .unwrap();
    let err = text(&out);
    // A blind spot's exit, as before: its only log group failed (1).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("EKS says cluster window-on's audit logging is on")
            && err.contains(
                "delivery to CloudWatch is late, --stream-prefix is wrong, or the cluster is idle"
            ),
        "{err}"
    );
    assert!(!err.contains("not being watched"), "{err}");
    assert!(!err.contains("Enable its audit logs"), "{err}");
}

#[test]
fn an_empty_window_after_an_earlier_run_is_not_called_unwatched() {
    let group = group_with_events("window-again");
    let cp = tempfile::tempdir().unwrap();
    let cp = cp.path().join("cp.json");
    let cp = cp.to_str().unwrap();
    ok(run(poll(&group).args([
        "--checkpoint",
        cp,
        "--since",
        "30m",
    ])));
    // Its events are 20 minutes old: the next run's window (the 10 minute
    // overlap up to now) holds none.
    let out = poll(&group).args(["--checkpoint", cp]).output().unwrap();
    let err = text(&out);
    // A blind spot's exit, as before: its only log group failed (1).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("though an earlier run read it"), "{err}");
    assert!(!err.contains("not being watched"), "{err}");
}

#[test]
fn a_window_before_the_log_group_existed_says_so() {
    let group = group_with_events("window-before");
    let out = poll(&group)
        .args(["--start", "60d", "--end", "40d"])
        .output()
        .unwrap();
    let err = text(&out);
    // A blind spot's exit, as before: its only log group failed (1).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("ends before log group {group} existed (created ")),
        "{err}"
    );
    assert!(!err.contains("not being watched"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error:")).count(),
        1,
        "{err}"
    );
}

#[test]
fn since_100y_is_clipped_to_the_log_groups_creation_with_a_note() {
    let group = group_with_events("window-100y");
    let started = Instant::now();
    let out = ok(run(poll(&group).args(["--since", "100y"])));
    let err = text(&out);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&format!("note: {REGION}")) || l.contains("reaches before"))
        .collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].contains(&format!(
            "--since 100y reaches before {group} existed (created "
        )) && notes[0].contains(": reading from "),
        "{err}"
    );
    // 15 days of one-hour steps, not 876,000.
    assert!(summary_number(&out.stderr, "pages") < 1000, "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(rows(&out.stdout).len(), 1);
}

#[test]
fn a_window_past_the_retention_is_clipped_with_a_note() {
    let group = group_with_events("window-retention");
    set_retention(&group, 1);
    let out = ok(run(poll(&group).args(["--since", "5d"])));
    let err = text(&out);
    assert!(
        err.contains(&format!(
            "--since 5d reaches past the 1-day retention of {group}"
        )),
        "{err}"
    );
    // One day of one-hour steps.
    assert!(summary_number(&out.stderr, "steps") <= 25, "{err}");
}

#[test]
fn since_with_a_checkpoint_says_the_watermark_decides() {
    let group = group_with_events("window-since-cp");
    let cp = tempfile::tempdir().unwrap();
    let cp = cp.path().join("cp.json");
    let cp = cp.to_str().unwrap();
    let first = ok(run(poll(&group).args([
        "--checkpoint",
        cp,
        "--since",
        "30m",
    ])));
    assert!(!text(&first).contains("is not used"), "{}", text(&first));
    let again = run(poll(&group).args(["--checkpoint", cp, "--since", "5d", "--allow-idle", "-q"]));
    let err = text(&again);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("--since 5d is not used").count(), 1, "{err}");
    assert!(
        err.contains("--checkpoint other.json --since 5d") && err.contains("--rebaseline"),
        "{err}"
    );
    let rebaselined = ok(run(poll(&group).args([
        "--checkpoint",
        cp,
        "--since",
        "30m",
        "--rebaseline",
        "--allow-idle",
    ])));
    assert!(!text(&rebaselined).contains("is not used"));
}

/// Starts a slow checkpointed (or not) poll, sends `signal` once it is
/// reading, and returns its output and how long it took to exit.
fn signalled(group: &str, signal: &str, extra: &[&str]) -> (Output, Duration) {
    let mut child = poll(group)
        .args(["--since", "10h", "--step-span", "1h", "--max-rps", "0.5"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while child.try_wait().unwrap().is_none() {
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "kubeanon did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = sent.elapsed();
    (child.wait_with_output().unwrap(), took)
}

#[test]
fn sigint_exits_130_saying_what_was_committed() {
    let group = group_with_events("window-sigint");
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let (out, took) = signalled(&group, "-INT", &["--checkpoint", cp.to_str().unwrap()]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(3), "{took:?}: {err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("kubeanon poll: interrupted (SIGINT): 0 of 1 log group(s) committed to the end of the window")
            && line.ends_with("the next run goes on from their checkpoints"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("interrupted")).count(),
        1,
        "{err}"
    );
}

#[test]
fn sigterm_exits_143_saying_nothing_is_recorded_without_a_checkpoint() {
    let group = group_with_events("window-sigterm");
    let (out, took) = signalled(&group, "-TERM", &[]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(took < Duration::from_secs(3), "{took:?}: {err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(
            "kubeanon poll: interrupted (SIGTERM): 0 of 1 log group(s) read to the end"
        ) && line.ends_with(
            "nothing is recorded without --checkpoint: the next run reads its whole window again"
        ),
        "{err}"
    );
}
