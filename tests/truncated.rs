//! The `truncated` rule end to end, on records shaped as an attacker makes
//! them: CloudWatch Logs cuts an event over its size limit (256 KB for
//! most of its history, 1 MB today) and ends it with `[Truncated...]`, and
//! the sender decides where the cut falls by padding what the API server
//! copies from the request: `X-Forwarded-For` (into `sourceIPs`) or
//! `User-Agent` (into `userAgent`).
//!
//! Only the shipped binary reads the records (`kubeanon scan` on files,
//! `kubeanon poll` against moto's server); the expectations come from the
//! rule's specification and from where each test put its cut, not from
//! kubeanon's code. The records are built here (each is 256 KB or 1 MB:
//! too big for tests/fixtures), in the API server's field order: kind,
//! apiVersion, level, auditID, stage, requestURI, verb, user, sourceIPs,
//! userAgent, objectRef, responseStatus, requestReceivedTimestamp,
//! stageTimestamp, annotations.

mod support;
mod util;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::proxy::Proxy;
use support::{AUDIT_STREAM, aws_env, create, moto, now_ms, put, rfc, rows, run};
use util::kubeanon;

/// What CloudWatch Logs writes after a cut event.
const MARK: &str = "[Truncated...]";
const KB_256: usize = 262_144;
const MB_1: usize = 1_048_576;

/// The request's real peer: the API server appends it after the
/// addresses the sender wrote into X-Forwarded-For.
const PEER: &str = "203.0.113.7";
/// 2026-11-30T01:02:03.123Z: 2025-11-30T01:02:03.123Z (1_764_464_523_123
/// ms) plus 365 days (no 29 February between them).
const WRAPPER_MS: i64 = 1_764_464_523_123 + 365 * 86_400_000;
const WRAPPER_TIME: &str = "2026-11-30T01:02:03.123000Z";
/// The record's own time (cut away when the cut falls before it).
const RECORD_TIME: &str = "2026-11-30T01:02:03.101234Z";

/// Who asked: the `user` object, and the RBAC reason it was allowed for.
type Who = (&'static str, &'static str);
const ANONYMOUS: Who = (
    r#"{"username":"system:anonymous","groups":["system:unauthenticated"]}"#,
    r#"RBAC: allowed by ClusterRoleBinding \"anonymous-view\" of ClusterRole \"view\" to User \"system:anonymous\""#,
);
const ADMIN: Who = (
    r#"{"username":"kubernetes-admin","uid":"aws-iam-authenticator:111122223333:AIDAEXAMPLE","groups":["system:masters","system:authenticated"]}"#,
    r#"RBAC: allowed by ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\" to Group \"system:masters\""#,
);

/// An admin's list of the secrets of an anonymous-facing proxy: a URI
/// holding the word `anonymous`.
const ADMIN_ANONYMOUS_URI: &str =
    "/api/v1/namespaces/kube-system/secrets?labelSelector=app%3Danonymous-proxy";

/// The `n`th padding address: 198.18.0.0/15 (set aside for benchmarks),
/// from 198.18.0.1 on, every one a valid IPv4 address and none repeated.
fn padding_ip(n: usize) -> String {
    let n = n + 1;
    format!(
        "198.{}.{}.{}",
        18 + ((n >> 16) & 1),
        (n >> 8) & 255,
        n & 255
    )
}

/// A record padded through X-Forwarded-For, and where each address in
/// its `sourceIPs` ends (the byte after its closing quote).
struct Padded {
    text: String,
    ip_ends: Vec<usize>,
    /// Where `sourceIPs`' array opens and closes.
    ips_span: (usize, usize),
}

/// A `list secrets` in kube-system by `who`, answered 200 and allowed,
/// whose `sourceIPs` holds enough padding addresses
/// (then [`PEER`]) for a cut at `limit` bytes to fall inside them.
fn padded_list_secrets(who: Who, limit: usize) -> Padded {
    padded_list(who, "/api/v1/namespaces/kube-system/secrets", limit)
}

/// [`padded_list_secrets`] at another URI (the same list, with a query).
fn padded_list((user, reason): Who, uri: &str, limit: usize) -> Padded {
    let mut text = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"4f3c9a52-8d1e-4b7a-9c0f-2e6d5b8a1c37","stage":"ResponseComplete","requestURI":"{uri}","verb":"list","user":{user},"sourceIPs":["#
    );
    let open = text.len() - 1;
    let mut ip_ends = Vec::new();
    let mut n = 0;
    while text.len() < limit + 1_000 {
        text.push('"');
        text.push_str(&padding_ip(n));
        text.push_str("\",");
        ip_ends.push(text.len() - 1);
        n += 1;
    }
    text.push_str(&format!("\"{PEER}\"]"));
    ip_ends.push(text.len() - 1);
    let close = text.len() - 1;
    text.push_str(&format!(
        r#","userAgent":"kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46","objectRef":{{"resource":"secrets","namespace":"kube-system","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{RECORD_TIME}","stageTimestamp":"2026-11-30T01:02:03.140000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"{reason}"}}}}"#
    ));
    serde_json::from_str::<Value>(&text).expect("the whole record is JSON");
    Padded {
        text,
        ip_ends,
        ips_span: (open, close),
    }
}

/// What CloudWatch keeps of `text` at a size limit: exactly `limit` bytes,
/// the last of them [`MARK`].
fn cut(text: &str, limit: usize) -> String {
    let keep = limit - MARK.len();
    assert!(text.len() > limit, "nothing to cut: {} bytes", text.len());
    let out = format!("{}{MARK}", &text[..keep]);
    assert_eq!(out.len(), limit);
    out
}

/// A CloudWatch Logs event as `aws logs filter-log-events` writes it (one
/// document per line): the cut text is its message.
fn wrapper(message: &str, timestamp_ms: i64) -> String {
    format!(
        r#"{{"timestamp":{timestamp_ms},"message":{},"eventId":"38111750617326081738205830542917201649305712874638450688","logStreamName":"{AUDIT_STREAM}"}}"#,
        serde_json::to_string(message).unwrap()
    )
}

/// The readable addresses of a record cut at `limit`: those whose closing
/// quote is before the cut.
fn readable_ips(padded: &Padded, limit: usize) -> usize {
    let keep = limit - MARK.len();
    let (open, close) = padded.ips_span;
    assert!(
        open < keep && keep < close,
        "the cut falls inside sourceIPs"
    );
    padded.ip_ends.iter().filter(|&&end| end <= keep).count()
}

/// `kubeanon scan --format ndjson EXTRA... FILE` on `lines`: the rows and
/// the summary line.
fn scan(dir: &Path, lines: &[String], extra: &[&str]) -> (Vec<Value>, String) {
    let file = dir.join("cut.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = kubeanon()
        .args(["scan", "--format", "ndjson"])
        .args(extra)
        .arg(&file)
        .assert()
        .success();
    let out = out.get_output();
    (
        rows(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary line's counters as written: `N events, N malformed[, N
/// truncated], N matched, N findings`.
fn counts(stderr: &str) -> (u64, u64, u64, u64) {
    let number = |label| support::summary_number(stderr.as_bytes(), label);
    let truncated = if stderr.contains(" truncated,") {
        number("truncated")
    } else {
        0
    };
    (
        number("events"),
        number("malformed"),
        truncated,
        number("findings"),
    )
}

/// A cut record no rule reports: no row, counted once. Bare, or as a
/// CloudWatch message (poll), it is malformed. In a wrapper document
/// (scan) that holds none of the words any rule needs, the cheap path
/// judges the wrapper's framing alone, which is whole JSON: it is counted
/// among the events there, as before the `truncated` rule.
fn assert_not_reported(found: &[Value], stderr: &str, wrapped: bool) {
    assert!(found.is_empty(), "{found:?}");
    let (events, malformed, truncated, findings) = counts(stderr);
    assert_eq!((truncated, findings), (0, 0), "{stderr}");
    if wrapped {
        assert_eq!(events + malformed, 1, "{stderr}");
    } else {
        assert_eq!((events, malformed), (0, 1), "{stderr}");
    }
}

fn field<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {row}"))
}

/// The row of an anonymous `list secrets` cut inside `sourceIPs`: its
/// time (from CloudWatch's wrapper, or "0" when there is none) and how
/// many addresses were readable.
fn assert_cut_list_secrets_row(row: &Value, time: &str, readable: usize) {
    assert_eq!(field(row, "rule"), "truncated", "{row}");
    assert_eq!(field(row, "severity"), "high", "{row}");
    assert_eq!(field(row, "user"), "system:anonymous");
    assert_eq!(field(row, "user.groups{}"), "system:unauthenticated");
    assert_eq!(field(row, "verb"), "list");
    assert_eq!(
        field(row, "requestURI"),
        "/api/v1/namespaces/kube-system/secrets"
    );
    assert_eq!(field(row, "stage"), "ResponseComplete");
    // objectRef, responseStatus, the record's own time and its annotations
    // come after sourceIPs: cut away, so filled. The URI above still says
    // what was asked for.
    assert_eq!(field(row, "objectRef.resource"), "0");
    assert_eq!(field(row, "objectRef.namespace"), "0");
    assert_eq!(field(row, "responseStatus.code"), "0");
    assert_eq!(field(row, "userAgent"), "0");
    assert_eq!(field(row, "decision"), "0");
    assert_eq!(field(row, "requestReceivedTimestamp"), time);
    // The first address the sender wrote, not the peer (cut away).
    assert_eq!(field(row, "src_ip"), "198.18.0.1");
    assert_eq!(row["count"], 1);
    let note = field(row, "note");
    assert!(note.contains("system:anonymous"), "{note}");
    assert!(
        note.contains(&format!("; {readable} source addresses could be read")),
        "{readable} readable addresses: {note}"
    );
}

#[test]
fn anonymous_list_secrets_padded_through_x_forwarded_for_is_one_high_row() {
    let dir = tempfile::tempdir().unwrap();
    for limit in [KB_256, MB_1] {
        let padded = padded_list_secrets(ANONYMOUS, limit);
        let message = cut(&padded.text, limit);
        let readable = readable_ips(&padded, limit);
        // Roughly 16,000 addresses fit in 256 KB, 65,000 in 1 MB.
        assert!(readable > limit / 17, "{readable} addresses in {limit}");
        assert!(!message.contains(PEER));

        // (a) One row for one cut record, however many addresses it holds;
        // its time is the wrapper's (the record's own was cut away).
        let (found, stderr) = scan(dir.path(), &[wrapper(&message, WRAPPER_MS)], &[]);
        assert_eq!(found.len(), 1, "{limit}: {stderr}");
        assert_cut_list_secrets_row(&found[0], WRAPPER_TIME, readable);
        assert_eq!(counts(&stderr), (0, 0, 1, 1), "{limit}: {stderr}");
        assert!(
            stderr.contains(" 0 malformed, 1 truncated, "),
            "{limit}: {stderr}"
        );

        // The bare cut line (no CloudWatch wrapper): no time to be had.
        let (found, stderr) = scan(dir.path(), std::slice::from_ref(&message), &[]);
        assert_eq!(found.len(), 1, "{limit}: {stderr}");
        assert_cut_list_secrets_row(&found[0], "0", readable);

        // (b) ESCU's rule alone reads JSON only: one malformed record.
        let (found, stderr) = scan(
            dir.path(),
            &[wrapper(&message, WRAPPER_MS)],
            &["--rules", "escu"],
        );
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(counts(&stderr), (0, 1, 0, 0), "{limit}: {stderr}");
        assert!(!stderr.contains("truncated"), "{stderr}");

        // The whole record, for contrast: ESCU's row, at the real peer.
        let (found, _) = scan(dir.path(), &[wrapper(&padded.text, WRAPPER_MS)], &[]);
        assert!(found.iter().all(|r| r["rule"] == "escu"), "{found:?}");
        assert!(found.iter().any(|r| r["src_ip"] == PEER));
    }
}

#[test]
fn authenticated_request_padded_the_same_way_stays_malformed() {
    let dir = tempfile::tempdir().unwrap();
    for limit in [KB_256, MB_1] {
        let padded = padded_list_secrets(ADMIN, limit);
        readable_ips(&padded, limit);
        let message = cut(&padded.text, limit);
        for (line, wrapped) in [(wrapper(&message, WRAPPER_MS), true), (message, false)] {
            let (found, stderr) = scan(dir.path(), &[line], &[]);
            assert_not_reported(&found, &stderr, wrapped);
        }
        // The word the prefilter looks for, readable in the prefix (the
        // URI), so that the prefix itself is read: its user decides.
        let padded = padded_list(ADMIN, ADMIN_ANONYMOUS_URI, limit);
        readable_ips(&padded, limit);
        let message = cut(&padded.text, limit);
        for line in [wrapper(&message, WRAPPER_MS), message] {
            let (found, stderr) = scan(dir.path(), &[line], &[]);
            assert!(found.is_empty(), "{limit}: {found:?}");
            assert_eq!(counts(&stderr), (0, 1, 0, 0), "{limit}: {stderr}");
        }
    }
}

/// A refused authentication as kube-apiserver audits it (no credentials:
/// `"user":{}`, stage ResponseStarted, code 401), with a `userAgent` of
/// `agent_len` bytes and an annotation value of `note_len` bytes; no
/// objectRef (authentication failed before the request was resolved).
fn refused_authentication(agent_len: usize, note_len: usize) -> String {
    let agent = format!("Mozilla/5.0 {}", "A".repeat(agent_len.saturating_sub(12)));
    let text = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"9b2e7d41-3c6a-4f8e-b1d5-7a0c9e4f2b68","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/kube-system/secrets","verb":"list","user":{{}},"sourceIPs":["{PEER}"],"userAgent":"{agent}","responseStatus":{{"metadata":{{}},"message":"Authentication failed, no credentials provided","code":401}},"requestReceivedTimestamp":"{RECORD_TIME}","stageTimestamp":"2026-11-30T01:02:03.101900Z","annotations":{{"kubeanon.test/padding":"{}"}}}}"#,
        "p".repeat(note_len)
    );
    serde_json::from_str::<Value>(&text).expect("the whole record is JSON");
    text
}

/// A refused authentication whose User-Agent the sender sized so that
/// CloudWatch's cut at `limit` falls right after `after` (its first
/// occurrence past the user agent): exactly `limit` bytes.
fn refusal_cut_after(limit: usize, after: &str) -> String {
    let end_of = |record: &str| {
        let agent = record.find(r#""userAgent":"#).unwrap();
        agent + record[agent..].find(after).expect("the cut point") + after.len()
    };
    let first = refused_authentication(limit / 2, 0);
    let agent_len = limit / 2 + (limit - MARK.len()) - end_of(&first);
    let record = refused_authentication(agent_len, 0);
    assert_eq!(end_of(&record), limit - MARK.len());
    cut(&record, limit)
}

#[test]
fn refused_authentication_cut_before_its_code_stays_malformed() {
    let dir = tempfile::tempdir().unwrap();
    // Padded through User-Agent, which comes before responseStatus: the cut
    // falls inside it and the 401 is cut away.
    let record = refused_authentication(KB_256, 0);
    let message = cut(&record, KB_256);
    assert!(!message.contains("\"code\""));
    // The padding sized so the cut falls inside the code, or right after
    // its digits (which may have been the first of more): no 401 is read.
    let mid_code = refusal_cut_after(KB_256, r#""code":40"#);
    let end_digits = refusal_cut_after(KB_256, r#""code":401"#);
    for text in [message, mid_code, end_digits] {
        let (found, stderr) = scan(dir.path(), &[wrapper(&text, WRAPPER_MS)], &[]);
        assert_not_reported(&found, &stderr, true);
        let (found, stderr) = scan(dir.path(), &[text], &[]);
        assert_not_reported(&found, &stderr, false);
    }
}

#[test]
fn refused_authentication_cut_past_its_code_is_one_informational_row() {
    let dir = tempfile::tempdir().unwrap();
    // A long trailing annotation value, cut inside it: the prefix reads the
    // 401 and the record's own time.
    let record = refused_authentication(64, KB_256);
    let whole = cut(&record, KB_256);
    // The padding sized so the cut falls just after the closing brace of
    // responseStatus: the 401 is complete.
    let just_past = refusal_cut_after(KB_256, r#""code":401}"#);
    for text in [whole, just_past] {
        let (found, stderr) = scan(dir.path(), &[wrapper(&text, WRAPPER_MS)], &[]);
        assert_eq!(found.len(), 1, "{stderr}");
        let row = &found[0];
        assert_eq!(field(row, "rule"), "truncated", "{row}");
        assert_eq!(field(row, "severity"), "informational", "{row}");
        assert_eq!(field(row, "responseStatus.code"), "401");
        assert_eq!(field(row, "user"), "0");
        assert_eq!(field(row, "stage"), "ResponseStarted");
        assert_eq!(field(row, "src_ip"), PEER);
        let note = field(row, "note");
        assert!(note.contains("refused authentication"), "{note}");
        assert!(!note.contains("source addresses"), "one address: {note}");
        assert_eq!(counts(&stderr), (0, 0, 1, 1), "{stderr}");
    }
    // The record's own time when the prefix holds it, not the wrapper's.
    let (found, _) = scan(
        dir.path(),
        &[wrapper(&cut(&record, KB_256), WRAPPER_MS)],
        &[],
    );
    assert_eq!(field(&found[0], "requestReceivedTimestamp"), RECORD_TIME);
}

#[test]
fn anonymous_request_refused_with_403_cut_after_its_code_is_informational() {
    let dir = tempfile::tempdir().unwrap();
    // Anonymous, refused by authorization (403), with a long annotation
    // value cut: the prefix shows the refusal.
    let record = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"c1d2e3f4-0a1b-4c2d-8e3f-4a5b6c7d8e9f","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/secrets","verb":"list","user":{},"sourceIPs":["{PEER}"],"userAgent":"curl/8.5.0","objectRef":{{"resource":"secrets","namespace":"kube-system","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"status":"Failure","reason":"Forbidden","code":403}},"requestReceivedTimestamp":"{RECORD_TIME}","stageTimestamp":"2026-11-30T01:02:03.102000Z","annotations":{{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":"{}"}}}}"#,
        ANONYMOUS.0,
        "r".repeat(KB_256)
    );
    let (found, stderr) = scan(
        dir.path(),
        &[wrapper(&cut(&record, KB_256), WRAPPER_MS)],
        &[],
    );
    assert_eq!(found.len(), 1, "{stderr}");
    let row = &found[0];
    assert_eq!(field(row, "rule"), "truncated", "{row}");
    assert_eq!(field(row, "severity"), "informational", "{row}");
    assert_eq!(field(row, "responseStatus.code"), "403");
    assert_eq!(field(row, "objectRef.resource"), "secrets");
    assert_eq!(field(row, "decision"), "forbid");
    assert_eq!(field(row, "requestReceivedTimestamp"), RECORD_TIME);
}

/// `kubeanon poll --cluster NAME` over `endpoint`, the window around
/// `at`.
fn poll_cluster(endpoint: &str, cluster: &str, at: i64) -> (Vec<Value>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd).args([
        "poll",
        "--cluster",
        cluster,
        "--endpoint-url",
        endpoint,
        "--format",
        "ndjson",
        "--max-rps",
        "200",
        "--start",
        &rfc(at - 60_000),
        "--end",
        &rfc(at + 60_000),
    ]);
    let out = run(&mut cmd);
    (
        rows(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The time CloudWatch gives an event, in the API server's form, written
/// by chrono rather than by kubeanon.
fn cloudwatch_time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

// moto (5.2.5, the version tests/run installs) accepts and returns
// messages of 256 KB and of 1 MB whole (it enforces no event size limit
// and cuts nothing: the messages below are cut as CloudWatch would cut
// them). It also ignores filter patterns, so these test the client-side
// rule on what a page brings; the pattern kubeanon sends is checked as
// sent, through the proxy.
#[test]
fn poll_reports_a_cut_anonymous_record_from_cloudwatch() {
    let proxy = Proxy::start(&moto().endpoint);
    for (cluster, limit) in [("cut-256k", KB_256), ("cut-1m", MB_1)] {
        let group = format!("/aws/eks/{cluster}/cluster");
        create(&group, &[AUDIT_STREAM]);
        let padded = padded_list_secrets(ANONYMOUS, limit);
        let readable = readable_ips(&padded, limit);
        let at = now_ms() - 10 * 60_000;
        put(&group, AUDIT_STREAM, &[(at, cut(&padded.text, limit))]);

        proxy.clear();
        let (found, stderr) = poll_cluster(&proxy.endpoint, cluster, at);
        assert_eq!(found.len(), 1, "{cluster}: {stderr}");
        assert_cut_list_secrets_row(&found[0], &cloudwatch_time(at), readable);
        assert_eq!(found[0]["cluster"], cluster);
        assert_eq!(counts(&stderr), (0, 0, 1, 1), "{cluster}: {stderr}");

        // What it asked CloudWatch for: a text pattern (a JSON pattern
        // never matches a record that is not JSON) naming the user. (Its
        // probe of whether audit logging is on asks with none.)
        let patterns: Vec<String> = proxy
            .requests()
            .iter()
            .filter(|r| r.target.ends_with("FilterLogEvents"))
            .filter_map(|r| {
                let body: Value = serde_json::from_str(&r.body).unwrap();
                body["filterPattern"].as_str().map(str::to_string)
            })
            .collect();
        assert!(!patterns.is_empty(), "{:?}", proxy.requests());
        for p in &patterns {
            assert!(!p.trim_start().starts_with('{'), "a JSON pattern: {p}");
            assert!(p.contains(r#""system:anonymous""#), "{p}");
            assert_eq!(
                p,
                &kubeanon::source::cloudwatch::server_pattern(Default::default())
            );
        }
    }
}

#[test]
fn poll_leaves_a_cut_authenticated_record_malformed() {
    let cluster = "cut-admin";
    let group = format!("/aws/eks/{cluster}/cluster");
    create(&group, &[AUDIT_STREAM]);
    let at = now_ms() - 10 * 60_000;
    let mut events = Vec::new();
    for limit in [KB_256, MB_1] {
        for uri in [
            "/api/v1/namespaces/kube-system/secrets",
            ADMIN_ANONYMOUS_URI,
        ] {
            let text = padded_list(ADMIN, uri, limit).text;
            events.push((at + events.len() as i64, cut(&text, limit)));
        }
    }
    put(&group, AUDIT_STREAM, &events);
    let (found, stderr) = poll_cluster(&moto().endpoint, cluster, at);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(counts(&stderr), (0, 4, 0, 0), "{stderr}");
}
