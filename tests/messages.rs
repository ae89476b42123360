//! Issue 22: a flag given the wrong way says, in one line, what happened
//! and what to do, with a documented exit code. Each through the binary.

mod support;

use std::process::{Command, Output};

use support::*;

fn kubeanon(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    cmd.args(args);
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit `code`, and one line of stderr saying each of `needles`.
fn assert_one_line(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn a_level_after_fail_on_findings_without_equals_says_to_add_it() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    for level in ["high", "low", "critical", "info"] {
        let out = kubeanon(&["scan", "--fail-on-findings", level])
            .current_dir(cwd)
            .output()
            .unwrap();
        let hint =
            format!("--fail-on-findings takes its level after '=': --fail-on-findings={level}");
        assert_one_line(&out, 2, &[&hint]);
        assert!(!stderr(&out).contains("cannot read"), "{}", stderr(&out));
    }
    // poll takes no paths: clap's "unexpected argument" becomes the hint.
    let out = kubeanon(&["poll", "--cluster", "demo", "--fail-on-findings", "medium"])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert_one_line(&out, 2, &["--fail-on-findings=medium"]);
    // A file of that name is read: the flag never eats a real path.
    std::fs::write(cwd.join("high"), "").unwrap();
    let out = kubeanon(&["scan", "--fail-on-findings", "high"])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 events"), "{}", stderr(&out));
    // A missing file that is no level is still a missing file.
    let out = kubeanon(&["scan", "--fail-on-findings", "audit.log"])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert_one_line(&out, 1, &["cannot read audit.log"]);
}

#[test]
fn a_src_ip_block_that_does_not_parse_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    for (bad, why) in [
        ("10.0.0.0/33", "0 to 32, not '33'"),
        ("10.0.0/8", "'10.0.0' is not a whole"),
        ("fd00::/129", "0 to 128"),
        ("10.0.0.0/", "not ''"),
    ] {
        let spec = format!("src_ip={bad}");
        let out = kubeanon(&["scan", "--exclude", &spec, empty])
            .output()
            .unwrap();
        assert_one_line(&out, 2, &["--exclude", &spec, why, "10.0.0.0/8"]);
    }
    // With other conditions too, and in poll before any AWS call.
    let out = kubeanon(&[
        "poll",
        "--cluster",
        "demo",
        "--exclude",
        "verb=get,src_ip=10.0.0.0/33",
    ])
    .output()
    .unwrap();
    assert_one_line(&out, 2, &["src_ip=10.0.0.0/33"]);
    // Good blocks and globs still work.
    for good in ["src_ip=10.0.0.0/8", "src_ip=10.0.*", "requestURI=10.0.0/8"] {
        let out = kubeanon(&["scan", "--exclude", good, empty])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr(&out));
    }
}

#[test]
fn a_log_group_or_arn_given_to_cluster_points_to_the_right_flag() {
    for sub in ["poll", "doctor"] {
        let out = kubeanon(&[sub, "--cluster", "/aws/eks/demo/cluster"])
            .output()
            .unwrap();
        assert_one_line(
            &out,
            2,
            &["--log-group /aws/eks/demo/cluster", "--cluster demo"],
        );
        assert!(!stderr(&out).contains("/aws/eks//aws"), "{}", stderr(&out));
        // Any '/' is no cluster name; the group is passed on as it was.
        let out = kubeanon(&[sub, "--cluster", "demo", "--cluster", "/custom/audit"])
            .output()
            .unwrap();
        assert_one_line(&out, 2, &["--log-group /custom/audit"]);
        let out = kubeanon(&[
            sub,
            "--cluster",
            "arn:aws:eks:eu-west-1:111122223333:cluster/demo",
        ])
        .output()
        .unwrap();
        assert_one_line(
            &out,
            2,
            &["cluster ARN", "--cluster demo --region eu-west-1"],
        );
    }
}

#[test]
fn an_endpoint_url_without_a_scheme_is_refused_up_front() {
    for sub in ["poll", "doctor"] {
        let out = kubeanon(&[sub, "--cluster", "demo", "--endpoint-url", "127.0.0.1:5000"])
            .output()
            .unwrap();
        assert_one_line(
            &out,
            2,
            &["--endpoint-url '127.0.0.1:5000' needs a scheme: http://127.0.0.1:5000"],
        );
        let out = kubeanon(&[sub, "--all-clusters", "--endpoint-url", "localhost:4566"])
            .output()
            .unwrap();
        assert_one_line(&out, 2, &["http://localhost:4566"]);
        let out = kubeanon(&[
            sub,
            "--cluster",
            "demo",
            "--endpoint-url",
            "ftp://127.0.0.1",
        ])
        .output()
        .unwrap();
        assert_one_line(&out, 2, &["--endpoint-url", "http or https"]);
        let out = kubeanon(&[sub, "--cluster", "demo", "--endpoint-url", "http://"])
            .output()
            .unwrap();
        assert_one_line(&out, 2, &["--endpoint-url", "no host"]);
    }
}

#[test]
fn a_binary_checkpoint_is_named_as_no_checkpoint_with_the_way_forward() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("cp.json");
    // A gzip's header: bytes that are no UTF-8.
    std::fs::write(&binary, [0x1f, 0x8b, 0x08, 0x00, 0x80, 0xff, 0xfe]).unwrap();
    let out = kubeanon(&["poll", "--cluster", "demo", "--checkpoint"])
        .arg(&binary)
        .output()
        .unwrap();
    assert_one_line(
        &out,
        1,
        &[
            &binary.display().to_string(),
            "is not a kubeanon checkpoint",
            "point it at a new path",
            "restore it from a backup",
            "move it aside",
        ],
    );
    assert!(!stderr(&out).contains("UTF-8"), "{}", stderr(&out));
    // The file is left as it was.
    assert_eq!(std::fs::read(&binary).unwrap()[..2], [0x1f, 0x8b]);
    // A directory: name a file.
    let out = kubeanon(&["poll", "--cluster", "demo", "--checkpoint"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_one_line(&out, 1, &["is a directory", "kubeanon-checkpoint.json"]);
}

/// Each doctor line names what it is about: the mark, then a subject.
fn assert_every_line_has_a_subject(stdout: &[u8]) {
    let text = String::from_utf8_lossy(stdout);
    assert!(!text.trim().is_empty(), "no lines");
    for line in text.lines() {
        let rest = line.get(6..).unwrap_or("");
        assert!(
            !rest.is_empty() && !rest.starts_with(':') && !rest.starts_with(' '),
            "no subject: {line:?}"
        );
    }
}

#[test]
fn every_doctor_line_has_a_subject() {
    // No credentials: reaching AWS fails before any account or region.
    let out = kubeanon(&[
        "doctor",
        "--cluster",
        "demo",
        "--endpoint-url",
        "http://127.0.0.1:9",
    ])
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("FAIL  AWS access: no AWS credentials found"),
        "{shown}"
    );
    assert_every_line_has_a_subject(&out.stdout);
    // A named profile that does not exist: the same subject.
    let out = kubeanon(&["doctor", "--all-clusters", "--profile", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_every_line_has_a_subject(&out.stdout);
    // Reached, with a log group that is not there: account, region, subject.
    let out = kubeanon(&[
        "doctor",
        "--cluster",
        "demo",
        "--endpoint-url",
        &moto().endpoint,
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_every_line_has_a_subject(&out.stdout);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("us-east-1 cluster demo"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn summaries_say_one_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.log");
    std::fs::write(&one, audit_event(1, true) + "\n").unwrap();
    let out = kubeanon(&["scan", "--rollup"]).arg(&one).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("1 event, 0 malformed, 1 matched, 1 finding rolled up into 1 group;"),
        "{err}"
    );
    let out = kubeanon(&["scan", "--exclude", "verb=get"])
        .arg(&one)
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("0 findings (1 row excluded)"),
        "{}",
        stderr(&out)
    );
    // Two stay plural.
    std::fs::write(
        &one,
        audit_event(1, true) + "\n" + &audit_event(2, true) + "\n",
    )
    .unwrap();
    let out = kubeanon(&["scan"]).arg(&one).output().unwrap();
    assert!(
        stderr(&out).contains("2 events, 0 malformed, 2 matched, 2 findings"),
        "{}",
        stderr(&out)
    );

    // poll: one log group, one event, one finding.
    let group = "/aws/eks/plurals/cluster";
    create(group, &[AUDIT_STREAM]);
    put(
        group,
        AUDIT_STREAM,
        &[(now_ms() - 10 * 60_000, audit_event(1, true))],
    );
    let out = run(poll(group).args(["--since", "30m", "--step-span", "1h"]));
    let all = stderr(&out);
    let err = all
        .lines()
        .find(|l| l.contains(" log group,"))
        .unwrap_or_else(|| panic!("no summary: {all}"));
    for said in [
        "1 log group,",
        "1 event, 0 malformed, 1 matched, 1 finding;",
    ] {
        assert!(err.contains(said), "{said:?} not in: {err}");
    }
    assert!(
        err.contains("1 step, ") && err.contains("0 events from other streams"),
        "{err}"
    );
    assert!(!err.contains("(s)"), "{err}");
    assert_eq!(summary_number(&out.stderr, "findings"), 1);
    assert_eq!(summary_number(&out.stderr, "events"), 1);
}

/// `cmd` with its stdout a pipe whose reader is gone (`| head` done).
fn with_closed_stdout(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_poll_as_it_ends_scan_unless_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.log");
    let events: Vec<String> = (0..50).map(|n| audit_event(n, true)).collect();
    std::fs::write(&file, events.join("\n") + "\n").unwrap();
    let scan = with_closed_stdout(kubeanon(&["scan"]).arg(&file));
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));

    let group = "/aws/eks/closed-stdout/cluster";
    create(group, &[AUDIT_STREAM]);
    let now = now_ms();
    let put_events: Vec<(i64, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (now - 20 * 60_000 + i as i64, e.clone()))
        .collect();
    put(group, AUDIT_STREAM, &put_events);
    for format in ["ndjson", "json", "table"] {
        let out = with_closed_stdout(poll(group).args(["--since", "30m", "--format", format]));
        assert_eq!(out.status.code(), Some(0), "{format}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("error"),
            "{format}: {}",
            stderr(&out)
        );
    }
    // With a checkpoint: nothing is committed for rows not written.
    let cp = dir.path().join("cp.json");
    let out = with_closed_stdout(
        poll(group)
            .args(["--since", "30m", "--checkpoint"])
            .arg(&cp),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stdout was closed"),
        "{}",
        stderr(&out)
    );
    let again = run(poll(group)
        .args(["--since", "30m", "--checkpoint"])
        .arg(&cp));
    assert_eq!(rows(&again.stdout).len(), 50, "{}", stderr(&again));
}

#[test]
fn poll_help_groups_its_flags_under_headings() {
    let out = kubeanon(&["poll", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // Each heading once, each with a flag of its own under it.
    let mut at = Vec::new();
    for (heading, flag) in [
        ("Source:", "--cluster <NAME>"),
        ("Fleet:", "--role-arn <ARN>"),
        ("Window:", "--since <DURATION>"),
        ("State:", "--checkpoint <"),
        ("Engine:", "--engine <"),
        ("Output:", "--rules <LIST>"),
    ] {
        assert_eq!(
            help.matches(&format!("\n{heading}\n")).count(),
            1,
            "{heading} in {help}"
        );
        let h = help.find(&format!("\n{heading}\n")).unwrap();
        let f = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in {help}"));
        at.push((h, f, heading));
    }
    // A flag sits under its own heading: after it, before the next one.
    let mut headings: Vec<usize> = at.iter().map(|a| a.0).collect();
    headings.sort_unstable();
    for (h, f, heading) in &at {
        let next = headings
            .iter()
            .find(|&&x| x > *h)
            .copied()
            .unwrap_or(usize::MAX);
        assert!(*h < *f && *f < next, "{heading}: its flag is elsewhere");
    }
}
