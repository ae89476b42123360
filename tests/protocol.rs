//! The one delivery protocol, end to end against moto, where operators
//! break it: a state object a run cannot open, a second copy of a shard
//! started while the first still reads, two schedules sharing one
//! `--append` file with one of them killed mid-append, and a dedup set
//! that hits its cap. (Its ordering rules are proved by the model test in
//! `src/state/memory.rs`; these check the backends and the wiring.)

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use kubeanon::state::WorkUnit;
use support::proxy::{Fault, Proxy};
use support::*;

const MIN: i64 = 60_000;
const ACCOUNT: &str = "123456789012";

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A log group with `n` anonymous events (distinct sources) in the last
/// 20 minutes.
fn group_with(name: &str, n: u64, seed: u64) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM]);
    let t = now_ms() - 20 * MIN;
    let events: Vec<(i64, String)> = (0..n)
        .map(|i| (t + i as i64 * 1000, audit_event(seed + i, true)))
        .collect();
    put(&group, AUDIT_STREAM, &events);
    group
}

/// The rows of every delivered object (claims hold none).
fn delivered_rows(bucket: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for k in keys(bucket, "findings/") {
        let body = s3(async |c| {
            let o = c.get_object().bucket(bucket).key(&k).send().await.unwrap();
            o.body.collect().await.unwrap().into_bytes().to_vec()
        });
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .unwrap();
        all.extend(rows(&raw));
    }
    all
}

fn s3_args(bucket: &str) -> [String; 4] {
    [
        "--checkpoint".into(),
        format!("s3://{bucket}/kubeanon/"),
        "--deliver".into(),
        format!("s3://{bucket}/findings/"),
    ]
}

/// Row ids and how often each was delivered.
fn id_counts(rows: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for r in rows {
        *ids.entry(r["id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    ids
}

#[test]
fn a_unit_that_cannot_be_opened_gives_its_lease_back() {
    let group = group_with("failed-open", 2, 100);
    let bucket = "kubeanon-failed-open";
    make_bucket(bucket);
    // A state object of another version of kubeanon.
    let unit = WorkUnit::new(ACCOUNT, REGION, &group).unwrap();
    let doc = format!(
        r#"{{"version":2,"group":{{"account":"{ACCOUNT}","region":"{REGION}","log_group":"{group}","read":{{"stream_prefix":"kube-apiserver-audit-","server_filter":true}},"watermark_ms":1,"horizon_ms":1,"seen":{{}}}},"seq":0,"pending":null}}"#
    );
    s3(async |c| {
        c.put_object()
            .bucket(bucket)
            .key(format!("kubeanon/state/{}.json", unit.path()))
            .body(doc.into_bytes().into())
            .send()
            .await
            .unwrap()
    });
    // Every run fails on it alike, loudly: never "held by" the run before.
    for run in 0..2 {
        let out = poll(&group)
            .args(["--since", "30m"])
            .args(s3_args(bucket))
            .output()
            .unwrap();
        let err = text(&out);
        // Nothing was read: exit 1.
        assert_eq!(out.status.code(), Some(1), "run {run}: {err}");
        assert!(err.contains("has version 2"), "run {run}: {err}");
        assert!(
            !err.contains("held by") && !err.contains("skipped"),
            "run {run}: {err}"
        );
        assert!(
            keys(bucket, "kubeanon/lease/").is_empty(),
            "run {run} left its lease"
        );
    }
}

#[test]
fn a_second_copy_skips_a_unit_the_first_still_reads_past_its_lease_length() {
    require_test_hooks();
    // 40 pages at 2 requests a second: about 20 s of reading, one step,
    // under a lease of 12 s (the shortest for 1 s attempts).
    let group = group_with("renewed", 40, 300);
    let bucket = "kubeanon-renewed";
    make_bucket(bucket);
    let copy = || {
        let mut cmd = poll(&group);
        cmd.args([
            "--since",
            "30m",
            "--page-size",
            "1",
            "--max-rps",
            "2",
            "--attempt-timeout",
            "1s",
            "--lease",
            "12s",
            "--format",
            "ndjson",
        ])
        .args(s3_args(bucket));
        cmd
    };
    let began = Instant::now();
    let first = copy()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past the first copy's lease length, while it still reads.
    std::thread::sleep(Duration::from_secs(15));
    let second = copy().output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(
        began.elapsed() > Duration::from_secs(16),
        "the first copy was not still reading when the second started"
    );
    let (a, b) = (text(&first), text(&second));
    assert!(first.status.success(), "{a}");
    assert!(second.status.success(), "{b}");
    assert!(b.contains("skipped (that run reads it)"), "{b}");
    assert!(!a.contains("lost the lease"), "{a}");
    let got = delivered_rows(bucket);
    let ids = id_counts(&got);
    assert_eq!(got.len(), 40, "each event's row once: {ids:?}");
    assert!(ids.values().all(|&n| n == 1), "{ids:?}");
}

#[test]
fn a_delivery_that_lands_late_is_not_delivered_twice() {
    let group = group_with("late-put", 3, 400);
    let bucket = "kubeanon-late-put";
    make_bucket(bucket);
    // Run A's deliveries are held by the network past every attempt's
    // timeout; they reach S3 seconds after A gave up.
    let proxy = Proxy::start(&moto().endpoint);
    proxy.set_rest_plan(|_, target| {
        if target.starts_with("PUT ") && target.contains("/findings/") {
            Fault::Delay(Duration::from_secs(6))
        } else {
            Fault::Forward
        }
    });
    let args = |cmd: &mut std::process::Command| {
        cmd.args([
            "--since",
            "30m",
            "--attempt-timeout",
            "1s",
            "--lease",
            "12s",
        ])
        .args(s3_args(bucket));
    };
    let mut a = poll_at(&proxy.endpoint, &group);
    args(&mut a);
    let failed = a.output().unwrap();
    assert!(!failed.status.success(), "{}", text(&failed));
    // Run B takes the unit at once: its window ends later, so its object
    // has another key than A's.
    let mut b = poll(&group);
    args(&mut b);
    let settled = run(&mut b);
    assert!(
        text(&settled).contains("was not complete: its events are read again"),
        "{}",
        text(&settled)
    );
    // A's PUTs land now, and are refused: its key was claimed.
    std::thread::sleep(Duration::from_secs(8));
    let got = delivered_rows(bucket);
    let ids = id_counts(&got);
    assert_eq!(got.len(), 3, "each row once: {ids:?}");
    assert!(ids.values().all(|&n| n == 1), "{ids:?}");
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.ends_with(b"\n"), "the file ends in a cut line");
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "a line that is not whole ({e}): {}",
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect()
}

#[test]
fn two_schedules_share_an_append_file_and_a_cut_append_loses_nobodys_rows() {
    require_test_hooks();
    let (a, b) = (
        group_with("shared-append-a", 3, 500),
        group_with("shared-append-b", 3, 600),
    );
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("findings.ndjson");
    let schedule = |group: &str, cp: &str| {
        let mut cmd = poll(group);
        cmd.args([
            "--since",
            "30m",
            "--allow-idle",
            "--format",
            "ndjson",
            "--append",
        ])
        .arg(&shared)
        .arg("--checkpoint")
        .arg(dir.path().join(cp));
        cmd
    };
    // Schedule A is killed halfway through its append.
    let killed = schedule(&a, "a.json")
        .env("KUBEANON_FAULT", "mid-append")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert!(
        !std::fs::read(&shared).unwrap().ends_with(b"\n"),
        "the kill cut a line"
    );
    // Schedule B, its own checkpoint, appends next: the cut append is
    // completed first (its bytes were kept with the file), then B's rows.
    let second = run(&mut schedule(&b, "b.json"));
    assert!(
        text(&second).contains("completed an append"),
        "{}",
        text(&second)
    );
    // A's next run finds its rows at their offset and commits them.
    let again = run(&mut schedule(&a, "a.json"));
    assert!(
        text(&again).contains("was complete and is now committed"),
        "{}",
        text(&again)
    );
    // And a run after that delivers nothing twice.
    run(&mut schedule(&a, "a.json"));
    run(&mut schedule(&b, "b.json"));
    let all = lines(&shared);
    let ids = id_counts(&all);
    for group in [&a, &b] {
        let mine = all
            .iter()
            .filter(|r| r["log_group"] == group.as_str())
            .count();
        assert_eq!(mine, 3, "{group}'s rows, once each: {ids:?}");
    }
    assert!(ids.values().all(|&n| n == 1), "{ids:?}");
}

#[test]
fn the_dedup_cap_warning_is_said_with_file_and_s3_state() {
    require_test_hooks();
    let group = group_with("dedup-cap", 5, 700);
    let bucket = "kubeanon-dedup-cap";
    make_bucket(bucket);
    let dir = tempfile::tempdir().unwrap();
    let warning = "more than 3 matched events inside the overlap";
    let file = run(poll(&group)
        .args(["--since", "30m", "--checkpoint"])
        .arg(dir.path().join("cp.json"))
        .env("KUBEANON_TEST_MAX_SEEN", "3"));
    assert!(text(&file).contains(warning), "{}", text(&file));
    let on_s3 = run(poll(&group)
        .args(["--since", "30m"])
        .args(s3_args(bucket))
        .env("KUBEANON_TEST_MAX_SEEN", "3"));
    assert!(text(&on_s3).contains(warning), "{}", text(&on_s3));
    // Under the cap, nothing is said.
    let quiet = run(poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(dir.path().join("other.json")));
    assert!(
        !text(&quiet).contains("inside the overlap"),
        "{}",
        text(&quiet)
    );
}

#[test]
fn the_step_budget_counts_rows_not_only_events() {
    // 4 events of 50 addresses each: 200 rows from 4 matched events.
    let group = "/aws/eks/step-rows/cluster";
    create(group, &[AUDIT_STREAM]);
    let t = now_ms() - 20 * MIN;
    let events: Vec<(i64, String)> = (0..4u64)
        .map(|i| {
            let ips: Vec<String> = (0..50).map(|j| format!("\"198.51.{i}.{j}\"")).collect();
            let e = audit_event(800 + i, true);
            let one = format!("\"sourceIPs\":[\"203.0.113.{}\"]", (800 + i) % 250);
            assert!(e.contains(&one));
            (
                t + i as i64 * 60_000,
                e.replace(&one, &format!("\"sourceIPs\":[{}]", ips.join(","))),
            )
        })
        .collect();
    put(group, AUDIT_STREAM, &events);
    let read = |budget: &str| {
        run(poll(group).args([
            "--since",
            "30m",
            "--format",
            "ndjson",
            "--step-rows",
            budget,
        ]))
    };
    let (whole, halved) = (read("1000"), read("60"));
    assert_eq!(summary_number(&whole.stderr, "step"), 1, "{}", text(&whole));
    // 60 rows a step: one event (50 rows) at a time.
    assert!(
        summary_number(&halved.stderr, "step") >= 4,
        "{}",
        text(&halved)
    );
    let (a, b) = (rows(&whole.stdout), rows(&halved.stdout));
    assert_eq!(a.len(), 200);
    assert_eq!(id_counts(&a), id_counts(&b), "the same rows, in more steps");
}

/// Peak RSS, from `with_peak_rss`'s line.
fn peak_mb(out: &Output) -> f64 {
    let kb: f64 = text(out)
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb "))
        .and_then(|v| v.trim().parse().ok())
        .expect("peak_rss_kb on stderr");
    kb * 1024.0 / 1e6
}

#[test]
fn a_hundred_requests_of_16000_addresses_are_polled_committed_and_capped() {
    // Each /version request carries 15,999 forged X-Forwarded-For
    // addresses and its real peer last, about 230 KB: under CloudWatch's
    // 256 KB limit. 100 of them, 23 MB in CloudWatch.
    let group = "/aws/eks/padded/cluster";
    create(group, &[AUDIT_STREAM]);
    let t = now_ms() - 20 * MIN;
    let peer = |i: u64| format!("203.0.113.{}", i % 250);
    let events: Vec<(i64, String)> = (0..100u64)
        .map(|i| {
            let mut ips: Vec<String> = (0..15_999u32)
                .map(|j| format!("\"10.{}.{}.{}\"", i, j >> 8, j & 255))
                .collect();
            ips.push(format!("\"{}\"", peer(900 + i)));
            let e = audit_event(900 + i, true);
            let one = format!("\"sourceIPs\":[\"{}\"]", peer(900 + i));
            assert!(e.contains(&one));
            (
                t + i as i64 * 1000,
                e.replace(&one, &format!("\"sourceIPs\":[{}]", ips.join(","))),
            )
        })
        .collect();
    assert!(events.iter().all(|(_, e)| e.len() < 256 * 1024));
    for chunk in events.chunks(4) {
        put(group, AUDIT_STREAM, chunk);
    }
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("findings.ndjson");
    let bucket = "kubeanon-padded";
    make_bucket(bucket);
    let mut file = poll(group);
    file.args([
        "--since",
        "30m",
        "--allow-idle",
        "--format",
        "ndjson",
        "--checkpoint",
    ])
    .arg(dir.path().join("cp.json"))
    .arg("--append")
    .arg(&out_file);
    let mut on_s3 = poll(group);
    on_s3
        .args(["--since", "30m", "--allow-idle"])
        .args(s3_args(bucket));
    for (name, cmd) in [("file", &mut file), ("s3", &mut on_s3)] {
        let first = with_peak_rss(&*cmd).output().unwrap();
        assert!(first.status.success(), "{name}: {}", text(&first));
        assert!(
            text(&first).contains("(100 events with source addresses capped by --max-addresses)"),
            "{name}: {}",
            text(&first)
        );
        let got = match name {
            "file" => lines(&out_file),
            _ => delivered_rows(bucket),
        };
        // 64 rows an event: its first 63 addresses and its peer.
        assert_eq!(got.len(), 100 * 64, "{name}");
        for i in 0..100u64 {
            assert!(
                got.iter().any(|r| r["src_ip"] == peer(900 + i).as_str()
                    && r["note"].as_str().unwrap_or_default().contains("capped")),
                "{name}: event {i}'s peer is not a row marked capped"
            );
        }
        // Committed: the next run delivers nothing again.
        let again = cmd.output().unwrap();
        assert!(again.status.success(), "{name}: {}", text(&again));
        assert_eq!(
            summary_number(&again.stderr, "finding"),
            0,
            "{name}: {}",
            text(&again)
        );
        eprintln!(
            "{name}: 100 requests x 16,000 addresses: {} rows, peak RSS {:.1} MB (debug build)",
            got.len(),
            peak_mb(&first)
        );
    }
}

/// A checkpoint and journal as the release before the one protocol left
/// them when killed mid-append: `append` is what reached the file.
fn legacy_crash(
    group: &str,
    dir: &std::path::Path,
    append: &dyn Fn(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, std::path::PathBuf) {
    use sha2::Digest as _;
    let rows_bytes = run(poll(group).args(["--since", "30m", "--format", "ndjson"])).stdout;
    assert_eq!(rows(&rows_bytes).len(), 3);
    let file = dir.join("findings.ndjson");
    std::fs::write(&file, append(&rows_bytes)).unwrap();
    let hex: String = sha2::Sha256::digest(&rows_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let journal = serde_json::json!({
        "version": 1, "file": file, "offset": 0, "len": rows_bytes.len(), "sha256": hex,
        "commit": {
            "account": ACCOUNT, "region": REGION, "log_group": group,
            "read": {"stream_prefix": "kube-apiserver-audit-", "server_filter": true,
                     "rules": "escu,unauthenticated,truncated"},
            "watermark_ms": now_ms() - 3 * MIN, "horizon_ms": now_ms() - 13 * MIN, "new_seen": []
        }
    });
    std::fs::write(dir.join("cp.json"), r#"{"version":3,"groups":[]}"#).unwrap();
    std::fs::write(dir.join("cp.json.journal"), journal.to_string()).unwrap();
    (rows_bytes, file)
}

#[test]
fn a_journal_of_the_release_before_is_settled_in_place() {
    let group = group_with("legacy-journal", 3, 1000);
    let resume = |dir: &std::path::Path, file: &std::path::Path| {
        run(poll(&group)
            .args([
                "--since",
                "30m",
                "--allow-idle",
                "--format",
                "ndjson",
                "--checkpoint",
            ])
            .arg(dir.join("cp.json"))
            .arg("--append")
            .arg(file))
    };
    // Complete: committed, nothing appended again.
    let dir = tempfile::tempdir().unwrap();
    let (bytes, file) = legacy_crash(&group, dir.path(), &|r| r.to_vec());
    let out = resume(dir.path(), &file);
    assert!(
        text(&out).contains("was complete and is now committed"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("cp.json.journal").exists());
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "no row twice");
    // Cut short: cut back (its short tail could only be its own), read
    // again: every row once, every line whole.
    let dir = tempfile::tempdir().unwrap();
    let (bytes, file) = legacy_crash(&group, dir.path(), &|r| r[..r.len() / 2].to_vec());
    let out = resume(dir.path(), &file);
    assert!(
        text(&out).contains("was not complete: its events are read again"),
        "{}",
        text(&out)
    );
    assert_eq!(id_counts(&lines(&file)), id_counts(&rows(&bytes)));
}
