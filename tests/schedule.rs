//! Scheduled runs as operators break them: flags changed between runs, a
//! clock ahead, one log group of several missing or blind, a relative
//! append path recovered from another directory. Each test drives the real
//! binary against moto's server and fails without the code that keeps the
//! promise (see the README's Guarantees table).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

const MIN: i64 = 60_000;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A log group with an audit stream and the API server's own stream.
fn setup(name: &str) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM, APISERVER_STREAM]);
    group
}

/// `poll` on the schedule's checkpoint and append file.
fn scheduled(group: &str, cp: &Path, append: &Path) -> Command {
    let mut cmd = poll(group);
    cmd.arg("--checkpoint").arg(cp).arg("--append").arg(append);
    cmd
}

fn appended(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read(path).map(|b| rows(&b)).unwrap_or_default()
}

fn anonymous(group: &str, times: &[i64], first: u64) {
    let events: Vec<(i64, String)> = times
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, audit_event(first + i as u64, true)))
        .collect();
    put(group, AUDIT_STREAM, &events);
}

#[test]
fn a_clock_ahead_or_a_future_end_never_moves_the_watermark_past_now() {
    require_test_hooks();
    let group = setup("clock");
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));
    let t0 = now_ms();
    anonymous(&group, &[t0 - 20 * MIN, t0 - 15 * MIN], 3000);

    // `--end` in the future on the schedule's checkpoint: refused.
    let future = scheduled(&group, &cp, &out)
        .args(["--since", "30m", "--end", "2030-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert_eq!(future.status.code(), Some(2), "{}", stderr(&future));
    assert!(stderr(&future).contains("--end"), "{}", stderr(&future));
    assert!(!cp.exists() && !out.exists(), "nothing written");

    // A run on a host whose clock is a day ahead (booted before NTP):
    // CloudWatch's Date header disagrees, so nothing is committed.
    let day = 24 * 60 * MIN;
    let ahead = scheduled(&group, &cp, &out)
        .args(["--since", "25h"])
        .env("KUBEANON_TEST_NOW", rfc(t0 + day))
        .output()
        .unwrap();
    assert_fails_with(&ahead, &["ahead of CloudWatch's", "NTP"]);
    assert!(
        !cp.exists() && appended(&out).is_empty(),
        "nothing delivered or advanced"
    );

    // The schedule on a good clock; then the clock goes back a day.
    run(scheduled(&group, &cp, &out).args(["--since", "30m"]));
    assert_eq!(appended(&out).len(), 2);
    let before = std::fs::read(&cp).unwrap();
    let behind = scheduled(&group, &cp, &out)
        .env("KUBEANON_TEST_NOW", rfc(now_ms() - day))
        .output()
        .unwrap();
    let stalled = [
        "cp.json",
        "later than this machine's clock",
        "--rebaseline --start",
    ];
    assert_fails_with(&behind, &stalled);
    assert_eq!(
        std::fs::read(&cp).unwrap(),
        before,
        "checkpoint left as found"
    );

    // A watermark that ran ahead anyway (an older kubeanon, a server with
    // no Date header), seen on a right clock: loud, then recovered.
    let mut state: serde_json::Value = serde_json::from_slice(&before).unwrap();
    for key in ["watermark_ms", "horizon_ms"] {
        let v = state["groups"][0][key].as_i64().unwrap();
        state["groups"][0][key] = (v + day).into();
    }
    std::fs::write(&cp, serde_json::to_vec(&state).unwrap()).unwrap();
    anonymous(&group, &[now_ms() - 4 * MIN], 3010);
    let edited = std::fs::read(&cp).unwrap();
    assert_fails_with(&scheduled(&group, &cp, &out).output().unwrap(), &stalled);
    assert_eq!(std::fs::read(&cp).unwrap(), edited);
    assert_eq!(appended(&out).len(), 2, "nothing delivered");
    // The operator reads again from a time they trust: nothing is lost,
    // and the dedup set spares what it still holds.
    run(scheduled(&group, &cp, &out).args(["--rebaseline", "--since", "10m"]));
    let clean = run(poll(&group).args(["--since", "30m"]));
    assert_eq!(totals(&appended(&out)), totals(&rows(&clean.stdout)));
    // And the schedule runs on.
    run(&mut scheduled(&group, &cp, &out));
}

#[test]
fn raising_the_overlap_never_delivers_a_row_twice() {
    let group = setup("overlap");
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));
    let t0 = now_ms();
    anonymous(
        &group,
        &[t0 - 20 * MIN, t0 - 12 * MIN, t0 - 8 * MIN, t0 - 5 * MIN],
        3100,
    );
    run(scheduled(&group, &cp, &out).args(["--since", "30m", "--overlap", "1m"]));
    assert_eq!(appended(&out).len(), 4);
    // A late event inside the first run's overlap, then the operator
    // raises --overlap (as the README advises for late clusters).
    anonymous(&group, &[t0 - 2 * MIN - 30_000], 3110);
    let second = run(scheduled(&group, &cp, &out).args(["--overlap", "30m"]));
    assert_eq!(summary_number(&second.stderr, "late"), 1);
    let third = run(scheduled(&group, &cp, &out).args(["--overlap", "30m"]));
    assert_eq!(summary_number(&third.stderr, "matched"), 0);
    let clean = run(poll(&group).args(["--since", "30m"]));
    assert_eq!(
        totals(&appended(&out)),
        totals(&rows(&clean.stdout)),
        "every event exactly once"
    );
    assert_eq!(appended(&out).len(), 5);
}

#[test]
fn changed_read_settings_are_refused_until_rebaselined() {
    let group = setup("settings");
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));
    anonymous(&group, &[now_ms() - 10 * MIN], 3200);
    run(scheduled(&group, &cp, &out).args(["--since", "30m"]));
    let before = std::fs::read(&cp).unwrap();
    for change in [
        &["--stream-prefix", "kube-apiserver-audit-0"][..],
        &["--no-server-filter"][..],
    ] {
        let refused = scheduled(&group, &cp, &out).args(change).output().unwrap();
        assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
        for needle in ["cp.json", "another --checkpoint", "--rebaseline"] {
            assert!(stderr(&refused).contains(needle), "{}", stderr(&refused));
        }
        assert_eq!(std::fs::read(&cp).unwrap(), before, "{change:?}");
    }
    assert_eq!(appended(&out).len(), 1);
    // An ad-hoc read with a narrower prefix on its own checkpoint is fine.
    run(poll(&group)
        .args(["--stream-prefix", "kube-apiserver-audit-0"])
        .arg("--checkpoint")
        .arg(dir.path().join("adhoc.json")));
    // Changing the schedule's settings on purpose.
    run(scheduled(&group, &cp, &out).args(["--no-server-filter", "--rebaseline"]));
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(state["groups"][0]["read"]["server_filter"], false);
    run(scheduled(&group, &cp, &out).arg("--no-server-filter"));
    assert_eq!(appended(&out).len(), 1, "nothing delivered twice");
}

#[test]
fn one_missing_log_group_fails_alone_with_exit_4() {
    let good = setup("iso-good");
    anonymous(&good, &[now_ms() - 10 * MIN, now_ms() - 9 * MIN], 3300);
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));
    let both = || {
        let mut cmd = scheduled(&good, &cp, &out);
        cmd.args([
            "--cluster",
            "iso-gone",
            "--since",
            "30m",
            "--max-attempts",
            "2",
        ]);
        cmd
    };
    let first = both().output().unwrap();
    assert_eq!(first.status.code(), Some(4), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("/aws/eks/iso-gone/cluster")
            && stderr(&first).contains("does not exist"),
        "{}",
        stderr(&first)
    );
    assert_eq!(appended(&out).len(), 2, "the healthy group is delivered");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    let groups: Vec<&str> = state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["log_group"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        [good.as_str()],
        "and advanced; the missing one is not"
    );
    let again = both().output().unwrap();
    assert_eq!(again.status.code(), Some(4));
    assert_eq!(appended(&out).len(), 2, "nothing twice");
    // Every group failing: exit 1, nothing advanced.
    let before = std::fs::read(&cp).unwrap();
    let all = poll("/aws/eks/iso-gone/cluster")
        .args(["--max-attempts", "2"])
        .arg("--checkpoint")
        .arg(&cp)
        .output()
        .unwrap();
    assert_fails_with(&all, &["iso-gone", "does not exist"]);
    assert_eq!(std::fs::read(&cp).unwrap(), before);
    // ...and a previous --output file is left as it was.
    let report = dir.path().join("report.json");
    std::fs::write(&report, "yesterday's report\n").unwrap();
    let all = poll("/aws/eks/iso-gone/cluster")
        .args(["--max-attempts", "2", "--format", "json", "-o"])
        .arg(&report)
        .output()
        .unwrap();
    assert_fails_with(&all, &["iso-gone"]);
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "yesterday's report\n"
    );
}

#[test]
fn a_cluster_with_audit_logging_off_is_a_failure_even_when_quiet() {
    let good = setup("blind-good");
    anonymous(&good, &[now_ms() - 10 * MIN], 3400);
    // Only the API server's own stream: audit logging was never enabled.
    let blind = "/aws/eks/blind-off/cluster";
    create(blind, &[APISERVER_STREAM]);
    put(
        blind,
        APISERVER_STREAM,
        &[(now_ms() - 10 * MIN, audit_event(3401, false))],
    );
    let out = poll(&good)
        .args(["--log-group", blind, "--since", "30m", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    for needle in [
        "blind-off",
        "no audit events",
        "update-cluster-config --name blind-off",
        "--stream-prefix",
    ] {
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
    assert_eq!(rows(&out.stdout).len(), 1, "the healthy cluster's finding");
    // A cluster known to be idle, said so explicitly.
    let idle =
        run(poll(&good).args(["--log-group", blind, "--since", "30m", "-q", "--allow-idle"]));
    assert_eq!(rows(&idle.stdout).len(), 1);
}

#[test]
fn a_relative_append_path_is_recovered_into_the_same_file() {
    require_test_hooks();
    let group = setup("relative");
    anonymous(&group, &[now_ms() - 10 * MIN, now_ms() - 9 * MIN], 3500);
    let state = tempfile::tempdir().unwrap();
    let cp = state.path().join("cp.json");
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Killed after appending, before committing, in one directory...
    let crashed = poll(&group)
        .args(["--since", "30m", "--append", "findings.ndjson"])
        .arg("--checkpoint")
        .arg(&cp)
        .current_dir(one.path())
        .env("KUBEANON_FAULT", "after-output")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    assert_eq!(appended(&one.path().join("findings.ndjson")).len(), 2);
    // ...and recovered from another.
    let next = run(poll(&group)
        .args(["--append", "findings.ndjson"])
        .arg("--checkpoint")
        .arg(&cp)
        .current_dir(two.path()));
    let text = stderr(&next);
    assert!(
        text.contains(&one.path().join("findings.ndjson").display().to_string())
            && text.contains("was complete"),
        "{text}"
    );
    let mut all = appended(&one.path().join("findings.ndjson"));
    all.extend(appended(&two.path().join("findings.ndjson")));
    let clean = run(poll(&group).args(["--since", "30m"]));
    assert_eq!(totals(&all), totals(&rows(&clean.stdout)), "exactly once");
}

#[test]
fn small_things_an_operator_does() {
    let group = setup("small");
    anonymous(&group, &[now_ms() - 10 * MIN], 3600);
    // A rate that would never send a request (or divide by zero).
    for rps in ["1e-30", "0", "5000", "NaN"] {
        let out = poll(&group).args(["--max-rps", rps]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{rps}: {}", stderr(&out));
        assert!(stderr(&out).contains("--max-rps"), "{}", stderr(&out));
    }
    // An empty checkpoint, as `touch` or an init container leaves it.
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("state/cp.json");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(&real, "").unwrap();
    // Reached through a symlink, as a mounted secret or config often is.
    let link = dir.path().join("cp.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let first = run(poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&link));
    assert_eq!(rows(&first.stdout).len(), 1);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link stays"
    );
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(state["groups"][0]["log_group"], group.as_str());
    assert!(
        dir.path().join("state/cp.json.lock").exists(),
        "locked at the target"
    );
    let again = run(poll(&group).arg("--checkpoint").arg(&link));
    assert_eq!(rows(&again.stdout).len(), 0);
}
