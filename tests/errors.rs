//! Errors a person can act on: each common failure says what went wrong
//! and what to do, with exit 1, and never dumps the SDK's error chain
//! (that is for `-v`). Against moto's server, a closed port and the fault
//! proxy.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::proxy::{Fault, Proxy};
use support::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that stdout or stderr says each of `needles`.
fn assert_says(out: &Output, needles: &[&str]) {
    let t = text(out);
    for needle in needles {
        assert!(t.contains(needle), "{needle:?} not in: {t}");
    }
}

/// No debug dump of the SDK's error types reaches a person without -v.
fn assert_no_dump(out: &Output) {
    let t = text(out);
    for dump in [
        "DispatchFailure(",
        "ServiceError {",
        "ConnectorError",
        "SdkBody",
    ] {
        assert!(!t.contains(dump), "{dump} in: {t}");
    }
}

fn kubeanon(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    cmd.args(args);
    cmd
}

#[test]
fn no_credentials_anywhere_says_so_and_where_it_looked() {
    for sub in ["poll", "doctor"] {
        let out = kubeanon(&[sub, "--cluster", "demo", "--endpoint-url", &moto().endpoint])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}: {}", text(&out));
        assert_says(
            &out,
            &[
                "no AWS credentials found",
                "environment",
                "IRSA",
                "Pod Identity",
                "IMDS",
                "aws configure",
            ],
        );
        assert!(
            !text(&out).contains("iam-policy.json"),
            "not a permissions problem: {}",
            text(&out)
        );
        assert_no_dump(&out);
    }
}

#[test]
fn a_profile_that_does_not_exist_is_named_with_the_files_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "[default]\nregion = us-east-1\n[profile staging]\n",
    )
    .unwrap();
    let out = kubeanon(&[
        "poll",
        "--cluster",
        "demo",
        "--profile",
        "prod",
        "--endpoint-url",
        &moto().endpoint,
    ])
    .env("AWS_CONFIG_FILE", &config)
    .output()
    .unwrap();
    assert_fails_with(
        &out,
        &[
            "profile 'prod' does not exist",
            &config.display().to_string(),
            "staging",
            "nonexistent/kubeanon-test (not found)",
        ],
    );
    assert_no_dump(&out);
}

#[test]
fn a_misspelt_cluster_gets_the_clusters_that_exist_and_the_closest() {
    create("/aws/eks/payments/cluster", &[AUDIT_STREAM]);
    create("/aws/eks/search/cluster", &[AUDIT_STREAM]);
    let out = kubeanon(&[
        "poll",
        "--cluster",
        "paymnets",
        "--endpoint-url",
        &moto().endpoint,
    ])
    .output()
    .unwrap();
    assert_fails_with(
        &out,
        &[
            "/aws/eks/paymnets/cluster does not exist in us-east-1",
            "did you mean --cluster payments",
            "search",
        ],
    );
    assert_no_dump(&out);
    let doctor = kubeanon(&[
        "doctor",
        "--cluster",
        "paymnets",
        "--endpoint-url",
        &moto().endpoint,
    ])
    .output()
    .unwrap();
    assert_eq!(doctor.status.code(), Some(1));
    assert_says(&doctor, &["did you mean --cluster payments"]);
}

#[test]
fn a_closed_port_fails_within_seconds_naming_the_endpoint() {
    let endpoint = closed_endpoint();
    // Nothing answers: the run's first call (STS, for the caller's
    // account) says so.
    let began = Instant::now();
    let out = kubeanon(&["poll", "--cluster", "demo", "--endpoint-url", &endpoint])
        .output()
        .unwrap();
    let took = began.elapsed();
    assert_fails_with(
        &out,
        &["cannot connect to AWS STS", &endpoint, "--endpoint-url"],
    );
    assert!(!text(&out).contains("iam-policy.json"), "{}", text(&out));
    assert_no_dump(&out);
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");

    // STS answers, CloudWatch Logs does not (its own endpoint variable).
    let began = Instant::now();
    let out = kubeanon(&["poll", "--cluster", "demo"])
        .env("AWS_ENDPOINT_URL", &moto().endpoint)
        .env("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", &endpoint)
        .output()
        .unwrap();
    let took = began.elapsed();
    assert_fails_with(&out, &["cannot connect to CloudWatch Logs", &endpoint]);
    assert_no_dump(&out);
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
}

#[test]
fn access_denied_names_the_action_and_the_resource() {
    let group = "/aws/eks/denied/cluster";
    create(group, &[AUDIT_STREAM]);
    let proxy = Proxy::start(&moto().endpoint);
    proxy.set_plan(|_, _| {
        Fault::Reject(
            400,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/kubeanon/job is not authorized to perform: logs:FilterLogEvents on resource: arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/denied/cluster:log-stream:",
        )
    });
    let out = poll_at(&proxy.endpoint, group).output().unwrap();
    assert_fails_with(
        &out,
        &[
            "access denied",
            "logs:FilterLogEvents",
            group,
            "iam-policy.json",
        ],
    );
    assert_no_dump(&out);
    // The whole error is there for -v.
    let verbose = poll_at(&proxy.endpoint, group).arg("-v").output().unwrap();
    assert_says(&verbose, &["ServiceError"]);
}

#[test]
fn the_window_a_user_sees_is_labelled_and_an_empty_one_refused() {
    let group = "/aws/eks/window-ux/cluster";
    create(group, &[AUDIT_STREAM]);
    put(
        group,
        AUDIT_STREAM,
        &[(now_ms() - 10 * 60_000, audit_event(1, false))],
    );
    // --since inside the lag: the window would be empty.
    let out = poll(group).args(["--since", "1m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_says(&out, &["--lag 2m"]);
    // A bare number: seconds or minutes, not milliseconds.
    let out = poll(group).args(["--since", "60"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_says(&out, &["60s or 1m?"]);
    // The summary says the end is now minus the lag; -v writes no colour
    // codes into a file or pipe.
    let out = run(poll(group).args(["--since", "30m", "-v"]));
    assert_says(&out, &["(now - 2m lag)", "DEBUG"]);
    assert!(!text(&out).contains('\u{1b}'), "{}", text(&out));
}

#[test]
fn usage_says_poll_needs_a_cluster_or_log_group() {
    for sub in ["poll", "doctor"] {
        let out = kubeanon(&[sub, "--help"]).output().unwrap();
        let usage = format!(
            "Usage: kubeanon {sub} (--all-clusters | --cluster NAME | --log-group NAME)..."
        );
        assert_says(&out, &[&usage]);
    }
    // -v's help says what it logs for each command.
    let scan = kubeanon(&["scan", "--help"]).output().unwrap();
    assert_says(&scan, &["scan: how long reading"]);
}

#[test]
fn scan_on_a_terminal_says_it_reads_stdin() {
    // A pseudo-terminal for stdin and stderr; Ctrl-D ends the input.
    let script = r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "scan", "--format", "ndjson"])
out = b""
deadline = time.time() + 20
sent = False
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if b"stdin" in out and not sent:
        os.write(fd, b"\x04")
        sent = True
if time.time() >= deadline:
    os.kill(pid, 9)
    out += b"\n(killed: still waiting for input after one Ctrl-D)"
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
"#;
    let out = Command::new(python())
        .args(["-c", script, env!("CARGO_BIN_EXE_kubeanon")])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("reading audit events from stdin") && shown.contains("0 events"),
        "{shown}"
    );
}

#[test]
fn a_host_that_does_not_exist_fails_at_once_naming_the_region_and_host() {
    // STS answers (moto); CloudWatch Logs' host has no DNS name (as
    // logs.us-east-9.amazonaws.com has none).
    for sub in ["poll", "doctor"] {
        let began = Instant::now();
        let out = kubeanon(&[sub, "--cluster", "demo", "--region", "us-east-9", "-v"])
            .env("AWS_ENDPOINT_URL", &moto().endpoint)
            .env(
                "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
                "http://nonexistent.invalid:5000",
            )
            .output()
            .unwrap();
        let took = began.elapsed();
        assert_eq!(out.status.code(), Some(1), "{sub}: {}", text(&out));
        assert_says(
            &out,
            &["cannot reach CloudWatch Logs in us-east-9 (nonexistent.invalid:5000): no such host"],
        );
        // Not retried: a name that does not exist will not exist in a second.
        assert!(!text(&out).contains("retrying"), "{sub}: {}", text(&out));
        assert!(
            took < Duration::from_secs(30),
            "{sub}: gave up after {took:?}"
        );
    }
    // Nothing answers at that name: the first call (STS) says so.
    let out = kubeanon(&[
        "poll",
        "--cluster",
        "demo",
        "--region",
        "us-east-9",
        "--endpoint-url",
        "http://nonexistent.invalid:5000",
    ])
    .output()
    .unwrap();
    assert_fails_with(
        &out,
        &[
            "cannot reach AWS STS in us-east-9 (nonexistent.invalid:5000): no such host",
            "--endpoint-url",
        ],
    );
    assert_no_dump(&out);
}
