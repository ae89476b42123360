//! Checkpoints know their rules: a checkpoint written before `--rules`
//! (read with ESCU's rule alone) goes on with the default rules from its
//! watermark, records them, and the run says once what was not read
//! before it; a run with other rules on a checkpoint that recorded its
//! own is refused (exit 2, nothing touched) as another `--stream-prefix`
//! is. For a local checkpoint file and for the S3 state, each written
//! here literally as the release before `--rules` wrote it. Every run is
//! the real binary against moto's server.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use kubeanon::state::WorkUnit;
use support::*;

const MIN: i64 = 60_000;
/// moto's account: the caller's, from STS.
const ACCOUNT: &str = "123456789012";
const NOTE: &str = "were read before --rules existed";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A log group with an audit stream and an anonymous event 5 minutes ago.
fn setup(name: &str, n: u64) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM, APISERVER_STREAM]);
    put(
        &group,
        AUDIT_STREAM,
        &[(now_ms() - 5 * MIN, audit_event(n, true))],
    );
    group
}

/// One checkpoint entry as the release before `--rules` wrote it
/// (`serde_json::to_string_pretty` of a version 3 state).
fn entry_v3(log_group: &str, watermark: i64) -> String {
    format!(
        r#"    {{
      "account": "{ACCOUNT}",
      "region": "us-east-1",
      "log_group": "{log_group}",
      "read": {{
        "stream_prefix": "kube-apiserver-audit-",
        "server_filter": true
      }},
      "watermark_ms": {watermark},
      "horizon_ms": {watermark},
      "seen": {{}}
    }}"#
    )
}

fn checkpoint_v3(entries: &[String]) -> String {
    format!(
        "{{\n  \"version\": 3,\n  \"groups\": [\n{}\n  ]\n}}",
        entries.join(",\n")
    )
}

fn state(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn scheduled(groups: &[&str], cp: &Path, out: &Path) -> Command {
    let mut cmd = poll(groups[0]);
    for g in &groups[1..] {
        cmd.args(["--log-group", g]);
    }
    cmd.arg("--checkpoint").arg(cp).arg("--append").arg(out);
    cmd
}

/// Asserts a refusal naming the rules recorded and asked for and what to
/// do, with the usage exit code (as another --stream-prefix is refused).
fn assert_refused(out: &Output, recorded: &str, asked: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        format!("--rules {recorded}"),
        format!("asks for --rules {asked}"),
        "Keep --rules".into(),
        "separate --checkpoint".into(),
        "--rebaseline".into(),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn a_checkpoint_from_before_rules_upgrades_in_place_and_says_so_once() {
    let (a, b) = (setup("rules-up-a", 4000), setup("rules-up-b", 4001));
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));
    let watermark = now_ms() - 20 * MIN;
    std::fs::write(
        &cp,
        checkpoint_v3(&[entry_v3(&a, watermark), entry_v3(&b, watermark)]),
    )
    .unwrap();

    // The schedule, unchanged, on the new release: it goes on.
    let first = run(&mut scheduled(&[&a, &b], &cp, &out));
    let err = stderr(&first);
    assert_eq!(err.matches(NOTE).count(), 1, "once per run: {err}");
    for needle in [
        "2 log group(s)",
        "--rules escu,unauthenticated,truncated",
        "401s with no user",
        "records CloudWatch cut",
        "--checkpoint other.json --since",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert_eq!(
        std::fs::read(&out).map(|b| rows(&b).len()).unwrap_or(0),
        2,
        "the anonymous events after the watermark are delivered"
    );
    let s = state(&cp);
    for g in s["groups"].as_array().unwrap() {
        assert_eq!(g["read"]["rules"], "escu,unauthenticated,truncated");
        assert!(g["watermark_ms"].as_i64().unwrap() > watermark, "{g}");
    }

    // Recorded: said once, not again.
    let second = run(&mut scheduled(&[&a, &b], &cp, &out));
    assert!(!stderr(&second).contains(NOTE), "{}", stderr(&second));

    // ESCU's alone on the upgraded checkpoint: refused, nothing touched.
    let before = std::fs::read(&cp).unwrap();
    let escu = scheduled(&[&a, &b], &cp, &out)
        .args(["--rules", "escu"])
        .output()
        .unwrap();
    assert_refused(&escu, "escu,unauthenticated,truncated", "escu");
    assert_eq!(std::fs::read(&cp).unwrap(), before, "nothing touched");
}

#[test]
fn escu_alone_on_a_checkpoint_from_before_rules_is_what_it_read() {
    let group = setup("rules-escu", 4010);
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));
    std::fs::write(&cp, checkpoint_v3(&[entry_v3(&group, now_ms() - 20 * MIN)])).unwrap();
    let escu = run(scheduled(&[&group], &cp, &out).args(["--rules", "escu"]));
    assert!(!stderr(&escu).contains(NOTE), "{}", stderr(&escu));
    assert_eq!(state(&cp)["groups"][0]["read"]["rules"], "escu");
    // Now the schedule is ESCU's, recorded: the default rules would move
    // its watermark past the 401s and cut records before it.
    let before = std::fs::read(&cp).unwrap();
    let all = scheduled(&[&group], &cp, &out).output().unwrap();
    assert_refused(&all, "escu", "escu,unauthenticated,truncated");
    assert_eq!(std::fs::read(&cp).unwrap(), before);
    // Without ESCU's rule, an entry from before --rules is refused too:
    // the run would skip what the schedule reads.
    std::fs::write(&cp, checkpoint_v3(&[entry_v3(&group, now_ms() - 20 * MIN)])).unwrap();
    let before = std::fs::read(&cp).unwrap();
    let other = scheduled(&[&group], &cp, &out)
        .args(["--rules", "unauthenticated"])
        .output()
        .unwrap();
    assert_refused(
        &other,
        "escu (recorded before --rules existed)",
        "unauthenticated",
    );
    assert_eq!(std::fs::read(&cp).unwrap(), before);
}

// ---- the S3 state ----

fn state_key(log_group: &str) -> String {
    let unit = WorkUnit::new(ACCOUNT, REGION, log_group).unwrap();
    format!("kubeanon/state/{}.json", unit.path())
}

fn get_state(bucket: &str, log_group: &str) -> serde_json::Value {
    let key = state_key(log_group);
    s3(async |c| {
        let o = c
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let bytes = o.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&bytes).unwrap()
    })
}

fn on_s3(groups: &[&str], bucket: &str) -> Command {
    let mut cmd = poll(groups[0]);
    for g in &groups[1..] {
        cmd.args(["--log-group", g]);
    }
    cmd.args([
        "--checkpoint",
        &format!("s3://{bucket}/kubeanon/"),
        "--deliver",
        &format!("s3://{bucket}/findings/"),
    ]);
    cmd
}

#[test]
fn the_s3_state_from_before_rules_upgrades_and_then_refuses_other_rules() {
    let (a, b) = (setup("rules-s3-a", 4020), setup("rules-s3-b", 4021));
    let bucket = "kubeanon-rules-upgrade";
    let watermark = now_ms() - 20 * MIN;
    s3(async |c| {
        c.create_bucket().bucket(bucket).send().await.unwrap();
        for g in [&a, &b] {
            // A unit's state object as the release before --rules wrote it
            // (`serde_json::to_vec` of its UnitDoc).
            let doc = format!(
                r#"{{"version":1,"group":{{"account":"{ACCOUNT}","region":"us-east-1","log_group":"{g}","read":{{"stream_prefix":"kube-apiserver-audit-","server_filter":true}},"watermark_ms":{watermark},"horizon_ms":{watermark},"seen":{{}}}},"seq":0,"pending":null}}"#
            );
            c.put_object()
                .bucket(bucket)
                .key(state_key(g))
                .body(doc.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    });

    let first = run(&mut on_s3(&[&a, &b], bucket));
    let err = stderr(&first);
    assert_eq!(err.matches(NOTE).count(), 1, "once per run: {err}");
    assert!(err.contains("2 log group(s)"), "{err}");
    assert!(err.contains(&format!("s3://{bucket}/kubeanon/")), "{err}");
    for g in [&a, &b] {
        let s = get_state(bucket, g);
        assert_eq!(
            s["group"]["read"]["rules"],
            "escu,unauthenticated,truncated"
        );
        assert!(
            s["group"]["watermark_ms"].as_i64().unwrap() > watermark,
            "{s}"
        );
    }
    let second = run(&mut on_s3(&[&a, &b], bucket));
    assert!(!stderr(&second).contains(NOTE), "{}", stderr(&second));

    let before = get_state(bucket, &a);
    let escu = on_s3(&[&a], bucket)
        .args(["--rules", "escu"])
        .output()
        .unwrap();
    // In S3 a unit's state is read when its lease is taken, so a refusal
    // fails that unit alone (as another --stream-prefix does); it was the
    // only one: exit 1.
    let err = stderr(&escu);
    assert_eq!(escu.status.code(), Some(1), "{err}");
    for needle in [
        "--rules escu,unauthenticated,truncated",
        "asks for --rules escu",
        "separate --checkpoint",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert_eq!(get_state(bucket, &a), before, "nothing touched");
}
