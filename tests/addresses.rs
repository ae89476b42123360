//! The cap on source addresses per event (`--max-addresses`), end to end
//! through the shipped binary.
//!
//! The API server copies every valid address of a request's
//! `X-Forwarded-For` header into `sourceIPs` and appends the connection's
//! own peer last (kubernetes `utilnet.SourceIPs`), so one request under
//! CloudWatch's 256 KB limit carries about 16,000 addresses its sender
//! chose. The inputs are built here: 100 such `/version` requests (half
//! anonymous, half refused with a 401), ordinary anonymous and refused
//! requests (some with exactly 64 addresses), and enough other traffic to
//! take the file past the size at which `scan` splits it between threads.
//! The expected rows come from the events themselves, read with
//! serde_json by the oracle below, never from kubeanon's code.

mod util;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::Value;
use util::kubeanon;

/// CloudWatch Logs' historical event size limit.
const KB_256: usize = 262_144;
/// The default cap.
const CAP: usize = 64;
/// Addresses in a padded request: what fits under 256 KB.
const PADDED: usize = 16_000;

/// The `k`th address of 10.0.0.0/8 (private, as a proxy chain's are;
/// short, so that 16,000 fit under 256 KB).
fn address(k: usize) -> String {
    let k = k % (1 << 24);
    format!("10.{}.{}.{}", k >> 16, (k >> 8) & 255, k & 255)
}

/// One audit event as the API server writes it; `anonymous`: the
/// `system:anonymous` user (allowed, before 1.32) or none (a 401).
fn event(n: usize, anonymous: bool, uri: &str, ips: &[String]) -> String {
    let ts = format!(
        "2026-11-30T{:02}:{:02}:{:02}.{:06}Z",
        n / 3600 % 24,
        n / 60 % 60,
        n % 60,
        n
    );
    let ips = serde_json::to_string(ips).expect("strings");
    let (user, status) = if anonymous {
        (
            r#"{"username":"system:anonymous","groups":["system:unauthenticated"]}"#,
            r#"{"metadata":{},"code":200}"#,
        )
    } else {
        (
            "{}",
            r#"{"metadata":{},"message":"Authentication failed, no credentials provided","code":401}"#,
        )
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-{n}","stage":"ResponseComplete","requestURI":"{uri}","verb":"get","user":{user},"sourceIPs":{ips},"userAgent":"zgrab/0.x","responseStatus":{status},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}"}}"#
    )
}

/// A request padded through X-Forwarded-For: `PADDED` addresses, some
/// repeated, the last the connection's peer (for every tenth request
/// also its first address).
fn padded(i: usize) -> Vec<String> {
    let mut ips: Vec<String> = (0..PADDED - 1)
        .map(|j| {
            // Every 500th value repeats one from before.
            let j = if j % 500 == 499 { j / 7 } else { j };
            address(i * 1_009 + j)
        })
        .collect();
    let peer = if i.is_multiple_of(10) {
        ips[0].clone()
    } else {
        format!("203.0.113.{i}")
    };
    ips.push(peer);
    ips
}

/// The oracle's row key: rule, requestReceivedTimestamp, src_ip,
/// requestURI.
type RowKey = (String, String, String, String);

/// A row as the oracle expects it, or as kubeanon wrote it: count, note.
type RowValue = (u64, String);

/// What the oracle makes of one event: its rule (ESCU's user, else a 401
/// with no username), the distinct addresses of its `sourceIPs` in order
/// and how often each occurs. `None` when no rule takes it.
struct Judged {
    rule: &'static str,
    ts: String,
    uri: String,
    distinct: Vec<String>,
    counts: BTreeMap<String, u64>,
    last: String,
}

fn judge(line: &str) -> Option<Judged> {
    let v: Value = serde_json::from_str(line).expect("the test's own JSON");
    let username = v["user"]["username"].as_str();
    let rule = if username == Some("system:anonymous") {
        "escu"
    } else if username.is_none() && v["responseStatus"]["code"] == 401 {
        "unauthenticated"
    } else {
        return None;
    };
    let ips: Vec<String> = v["sourceIPs"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|ip| ip.as_str().expect("a string").to_string())
        .collect();
    let mut counts = BTreeMap::new();
    let mut distinct = Vec::new();
    for ip in &ips {
        let n = counts.entry(ip.clone()).or_insert(0);
        if *n == 0 {
            distinct.push(ip.clone());
        }
        *n += 1;
    }
    Some(Judged {
        rule,
        ts: v["requestReceivedTimestamp"]
            .as_str()
            .expect("a time")
            .into(),
        uri: v["requestURI"].as_str().expect("a URI").into(),
        distinct,
        counts,
        last: ips.last().expect("an address").clone(),
    })
}

/// The rows the README promises under `cap` (`None`: no cap): an event
/// with at most `cap` distinct addresses gives ESCU's rows, one per
/// address, counted as often as it occurs; one with more keeps its last
/// address and its first distinct ones up to `cap` in all, each counted
/// the same way, with the note naming the cap (the note's text after the
/// numbers is left to the `capped_note` check). Returns the rows and the
/// number of capped events.
fn oracle(lines: &[String], cap: Option<usize>) -> (BTreeMap<RowKey, RowValue>, u64) {
    let mut rows = BTreeMap::new();
    let mut capped = 0;
    for line in lines {
        let Some(e) = judge(line) else { continue };
        let over = cap.filter(|&c| e.distinct.len() > c);
        let (kept, note): (Vec<&String>, String) = match over {
            None => (e.distinct.iter().collect(), "0".into()),
            Some(c) => {
                capped += 1;
                let mut kept = vec![&e.last];
                for ip in &e.distinct {
                    if kept.len() < c && !kept.contains(&ip) {
                        kept.push(ip);
                    }
                }
                let note = format!(
                    "sourceIPs capped: {} of {} distinct addresses kept",
                    kept.len(),
                    e.distinct.len()
                );
                (kept, note)
            }
        };
        for ip in kept {
            let key = (e.rule.to_string(), e.ts.clone(), ip.clone(), e.uri.clone());
            let prev = rows.insert(key, (e.counts[ip], note.clone()));
            assert!(prev.is_none(), "the test's events have distinct times");
        }
    }
    (rows, capped)
}

/// kubeanon's ndjson rows, keyed as the oracle's, with each capped note
/// cut back to the numbers the oracle writes (the rest is checked to say
/// how to keep them all).
fn read_rows(stdout: &[u8]) -> BTreeMap<RowKey, RowValue> {
    let text = std::str::from_utf8(stdout).expect("UTF-8 output");
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("ndjson");
        let s = |c: &str| {
            v[c].as_str()
                .unwrap_or_else(|| panic!("{c} in {line}"))
                .to_string()
        };
        let note = s("note");
        let note = match note.split_once(", the first ones") {
            Some((numbers, rest)) => {
                assert!(
                    rest.contains("--max-addresses 0 keeps all"),
                    "a capped row's note says how to lift the cap: {note}"
                );
                numbers.to_string()
            }
            None => note,
        };
        let key = (
            s("rule"),
            s("requestReceivedTimestamp"),
            s("src_ip"),
            s("requestURI"),
        );
        let count = v["count"].as_u64().expect("a count");
        assert!(
            rows.insert(key, (count, note)).is_none(),
            "one row per key: {line}"
        );
    }
    rows
}

/// The test's input: 100 padded `/version` requests among ordinary ones,
/// and other traffic; written to `path`, returned as lines.
fn input(path: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for i in 0..100 {
        // Ordinary requests around each padded one: one to three
        // addresses, some repeated, anonymous and refused.
        let few: Vec<String> = (0..1 + i % 3)
            .map(|j| address(200_000 + i * 3 + j))
            .collect();
        lines.push(event(next(), i % 2 == 0, "/api", &few));
        let mut twice = few.clone();
        twice.extend(few);
        lines.push(event(next(), i % 2 == 1, "/apis", &twice));
        lines.push(event(next(), i % 2 == 0, "/version", &padded(i)));
        // Now and then, exactly the cap: 64 distinct, as values or among
        // 128 (not capped).
        if i % 10 == 3 {
            let at_cap: Vec<String> = (0..CAP).map(|j| address(300_000 + i * CAP + j)).collect();
            lines.push(event(next(), true, "/healthz", &at_cap));
            let doubled: Vec<String> = at_cap.iter().chain(&at_cap).cloned().collect();
            lines.push(event(next(), false, "/metrics", &doubled));
        }
    }
    // Other traffic (no rule takes it), past the 32 MiB at which `scan`
    // splits a file between threads: each part needs the cap too.
    let other = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{"username":"system:serviceaccount:kube-system:replicaset-controller","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["10.0.1.5"],"userAgent":"kube-controller-manager/v1.33.1","responseStatus":{"metadata":{},"code":200}}"#;
    let size: usize = lines.iter().map(|l| l.len() + 1).sum();
    let filler = (40usize << 20).saturating_sub(size) / (other.len() + 1) + 1;
    let mut text = String::new();
    for (k, line) in lines.iter().enumerate() {
        assert!(line.len() < KB_256, "every event fits CloudWatch's limit");
        text.push_str(line);
        text.push('\n');
        // The filler spread among the events, so each thread's part has
        // padded requests.
        for _ in 0..filler / lines.len() {
            text.push_str(other);
            text.push('\n');
        }
        if k == 0 {
            assert!(filler / lines.len() > 0);
        }
    }
    assert!(text.len() > 32 << 20, "large enough to be split");
    std::fs::write(path, text).expect("write the input");
    lines
}

fn scan(args: &[&str]) -> std::process::Output {
    kubeanon()
        .args(["scan", "--format", "ndjson"])
        .args(args)
        .output()
        .expect("kubeanon runs")
}

#[test]
fn padded_requests_keep_their_first_and_last_addresses_and_the_rest_are_escu_s_rows() {
    let dir = tempfile_dir("padded");
    let path = dir.join("audit.jsonl");
    let lines = input(&path);
    let (want, capped) = oracle(&lines, Some(CAP));
    assert_eq!(capped, 100, "the input has its 100 padded requests");

    let out = scan(&[path.to_str().expect("UTF-8 path")]);
    assert!(out.status.success(), "{out:?}");
    let got = read_rows(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(100 events with source addresses capped by --max-addresses)"),
        "the summary counts the capped events: {stderr}"
    );
    let matched = lines.iter().filter(|l| judge(l).is_some()).count();
    assert_eq!(matched, 3 * 100 + 2 * 10);
    assert!(stderr.contains(&format!("{matched} matched")), "{stderr}");

    // Every row the oracle expects, and no other; under-cap events' rows
    // are ESCU's (note "0"), capped ones' the first distinct and the last.
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(got, want);

    // Said directly: every padded request's connection peer is a row, and
    // every row of a padded request is marked.
    let padded_times: HashSet<String> = lines
        .iter()
        .filter_map(|l| judge(l).filter(|e| e.distinct.len() > CAP))
        .map(|e| {
            let peer = (
                e.rule.to_string(),
                e.ts.clone(),
                e.last.clone(),
                e.uri.clone(),
            );
            assert!(
                got.contains_key(&peer),
                "the peer {} of {} is a row",
                e.last,
                e.ts
            );
            e.ts
        })
        .collect();
    assert_eq!(padded_times.len(), 100);
    for ((_, ts, _, _), (_, note)) in &got {
        assert_eq!(
            padded_times.contains(ts),
            note.starts_with("sourceIPs capped: 64 of "),
            "{ts}: {note}"
        );
    }

    // Read in one piece (stdin), the same bytes as split between threads.
    let whole = kubeanon()
        .args(["scan", "--format", "ndjson", "-"])
        .pipe_stdin(&path)
        .expect("the input")
        .output()
        .expect("kubeanon runs");
    assert!(whole.status.success());
    assert_eq!(whole.stdout, out.stdout, "split and whole reads agree");

    // Another cap reaches every thread's part too (a part that fell back
    // to the default would keep 64).
    let out = scan(&["--max-addresses", "8", path.to_str().expect("UTF-8 path")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read_rows(&out.stdout), oracle(&lines, Some(8)).0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn max_addresses_lifts_or_moves_the_cap() {
    let dir = tempfile_dir("lifted");
    let path = dir.join("audit.jsonl");
    // Three requests of 200 distinct addresses (one repeated), one of 3.
    let lines: Vec<String> = (0..3)
        .map(|i| {
            let mut ips: Vec<String> = (0..200).map(|j| address(i * 1_000 + j)).collect();
            ips.push(ips[17].clone());
            event(i + 1, i != 1, "/version", &ips)
        })
        .chain([event(9, true, "/", &[address(5), address(6), address(5)])])
        .collect();
    std::fs::write(&path, lines.join("\n")).expect("write");
    let file = path.to_str().expect("UTF-8 path");

    for (flag, cap, rows, capped) in [
        ("0", None, 3 * 200 + 2, 0),
        ("200", Some(200), 3 * 200 + 2, 0),
        ("199", Some(199), 3 * 199 + 2, 3),
        ("64", Some(64), 3 * 64 + 2, 3),
        ("1", Some(1), 3 + 1, 4),
    ] {
        let out = scan(&["--max-addresses", flag, file]);
        assert!(out.status.success(), "{flag}: {out:?}");
        let got = read_rows(&out.stdout);
        let (want, n) = oracle(&lines, cap);
        assert_eq!((got.len(), n), (rows, capped), "--max-addresses {flag}");
        assert_eq!(got, want, "--max-addresses {flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("capped by --max-addresses"),
            capped > 0,
            "--max-addresses {flag}: {stderr}"
        );
    }
    // The default is 64.
    let out = scan(&[file]);
    assert_eq!(read_rows(&out.stdout), oracle(&lines, Some(64)).0);
    // Not a number of addresses: a usage error.
    let out = scan(&["--max-addresses", "-3", file]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory for one test's files.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kubeanon-addresses-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
