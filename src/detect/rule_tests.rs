//! Unit tests for the rules beside ESCU's: `unauthenticated` and
//! `truncated`, and how `--rules` chooses among them.
//!
//! Expectations are written by hand from the rules' text (issue 19), or,
//! for cut records, from where the cut falls in a record written out here
//! (the positions of the values a prefix must hold whole): never from the
//! code under test.

use proptest::prelude::*;

use super::*;

/// Runs `records` through a detector applying `rules`.
fn run(rules: Rules, records: &[&str]) -> (Findings, Stats) {
    let mut det = Detector::new(Vec::new()).with_rules(rules);
    for r in records {
        det.feed(r.as_bytes(), Origin::default());
    }
    let (agg, stats) = det.finish();
    (agg.into_findings(), stats)
}

/// A row as (rule, credential, severity, user, src_ip, count).
fn summary(f: &Finding<'_>) -> (String, String, Severity, String, String, u64) {
    let [rule, credential, _] = f.extras();
    let cols = f.cols();
    (
        rule.into_owned(),
        credential.into_owned(),
        f.severity,
        cols[10].to_string(),
        cols[6].to_string(),
        f.count,
    )
}

/// A refused authentication as authn_audit.go writes it: stage
/// ResponseStarted, `"user":{}`, the message, code 401.
fn refused(message: &str, extra: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{{}},"sourceIPs":["198.51.100.7"],"userAgent":"curl/8.5.0","objectRef":{{"resource":"pods","namespace":"default","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"message":"{message}","code":401}},"requestReceivedTimestamp":"2026-11-30T01:02:03.000001Z","stageTimestamp":"2026-11-30T01:02:03.000101Z"{extra}}}"#
    )
}

const NONE: &str = "Authentication failed, no credentials provided";

#[test]
fn refused_authentications_are_rows_with_their_credential_and_severity() {
    let cases = [
        (refused(NONE, ""), "none", Severity::Informational),
        (
            refused("Authentication failed, attempted: bearer", ""),
            "bearer",
            Severity::Low,
        ),
        (
            refused("Authentication failed, attempted: basic, bearer", ""),
            "basic, bearer",
            Severity::Low,
        ),
        (
            refused("Authentication failed, attempted: x509", ""),
            "x509",
            Severity::Low,
        ),
        // kube-apiserver's own Status over the message: the credential is
        // not known.
        (refused("Unauthorized", ""), "0", Severity::Informational),
    ];
    for (record, credential, severity) in cases {
        let (findings, stats) = run(Rules::ALL, &[&record]);
        assert_eq!(stats.matched, 1, "{record}");
        let rows: Vec<_> = findings.iter().map(|f| summary(&f)).collect();
        assert_eq!(
            rows,
            [(
                "unauthenticated".into(),
                credential.into(),
                severity,
                "0".into(),
                "198.51.100.7".into(),
                1
            )],
            "{record}"
        );
        // ESCU alone never sees them.
        assert!(run(Rules::ESCU, &[&record]).0.is_empty());
    }
}

#[test]
fn no_username_means_absent_empty_or_null_and_any_stage() {
    let base = refused(NONE, "");
    let variants = [
        base.replace(r#""user":{},"#, ""),
        base.replace(r#""user":{}"#, r#""user":{"username":""}"#),
        base.replace(r#""user":{}"#, r#""user":{"username":null,"groups":[]}"#),
        base.replace("ResponseStarted", "ResponseComplete"),
        base.replace("ResponseStarted", "RequestReceived"),
    ];
    for v in &variants {
        let (findings, _) = run(Rules::ALL, &[v]);
        assert_eq!(findings.len(), 1, "{v}");
        assert_eq!(findings.get(0).unwrap().rule(), Rule::Unauthenticated);
    }
    // A 401 with a username is not this rule's, nor is a 403 without one.
    let named = base.replace(
        r#""user":{}"#,
        r#""user":{"username":"system:serviceaccount:default:ci"}"#,
    );
    let forbidden = base.replace(r#""code":401"#, r#""code":403"#);
    assert!(run(Rules::ALL, &[&named, &forbidden]).0.is_empty());
}

#[test]
fn rules_choose_what_is_reported_and_rows_of_each_are_kept_apart() {
    let anonymous = r#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["198.51.100.7"],"requestURI":"/api/v1/namespaces/default/pods","responseStatus":{"code":401}}"#;
    let refusal = refused(NONE, "");
    let only = |rules: &str| {
        let (f, _) = run(rules.parse().unwrap(), &[anonymous, &refusal]);
        f.iter().map(|f| f.rule().name()).collect::<Vec<_>>()
    };
    assert_eq!(only("escu"), ["escu"]);
    assert_eq!(only("unauthenticated"), ["unauthenticated"]);
    assert_eq!(only("all").len(), 2);
    // Two events with the same 13 values but other credentials: two rows.
    let bearer = refused("Authentication failed, attempted: bearer", "");
    let (f, _) = run(Rules::ALL, &[&refusal, &bearer, &refusal]);
    let counts: Vec<(String, u64)> = f
        .iter()
        .map(|f| (f.extras()[1].to_string(), f.count))
        .collect();
    assert_eq!(counts, [("bearer".into(), 1), ("none".into(), 2)]);
}

#[test]
fn escu_row_ids_do_not_change_with_the_rules() {
    let record = r#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"requestURI":"/version"}"#;
    let id = |rules: Rules| run(rules, &[record]).0.get(0).unwrap().id("label");
    assert_eq!(id(Rules::ALL), id(Rules::ESCU));
}

/// Where each value a decision needs ends in a record, found by hand
/// from the text: the cut must fall at or past these for the value to be
/// read whole (a number needs the byte after it: until then it may go on).
struct Landmarks {
    /// After the closing quote of the username `system:anonymous`.
    username: Option<usize>,
    /// After the code's last digit (one more byte is needed).
    code: Option<(usize, &'static str)>,
}

fn landmarks(record: &str) -> Landmarks {
    let username = record
        .find(r#""username":"system:anonymous""#)
        .map(|at| at + r#""username":"system:anonymous""#.len());
    let code = ["200", "401", "403"].into_iter().find_map(|c| {
        let needle = format!(r#""code":{c}"#);
        record.find(&needle).map(|at| (at + needle.len(), c))
    });
    Landmarks { username, code }
}

/// What the rules must make of `record` cut after `k` bytes.
fn expected(record: &str, k: usize) -> Option<(Rule, Severity)> {
    let l = landmarks(record);
    if k >= record.len() {
        return None; // not cut: judged whole elsewhere
    }
    let code = l.code.filter(|(end, _)| k > *end).map(|(_, c)| c);
    let refused = matches!(code, Some("401" | "403"));
    if l.username.is_some_and(|end| k >= end) {
        let severity = if refused {
            Severity::Informational
        } else {
            Severity::High
        };
        return Some((Rule::Truncated, severity));
    }
    // No username in the record at all, and a 401 read: refused.
    if l.username.is_none() && !record.contains(r#""username""#) && code == Some("401") {
        return Some((Rule::Truncated, Severity::Informational));
    }
    None
}

/// Records an attacker can push past the size limit, as the API server
/// writes them.
fn cut_corpus() -> Vec<String> {
    let anonymous = |code: u16, uri: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b2","stage":"ResponseComplete","requestURI":"{uri}","verb":"list","user":{{"username":"system:anonymous","groups":["system:unauthenticated"]}},"sourceIPs":["203.0.113.9","198.51.100.7"],"userAgent":"kubectl/v1.29.0","objectRef":{{"resource":"secrets","namespace":"kube-system","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"2026-11-30T01:02:03.000001Z","stageTimestamp":"2026-11-30T01:02:03.000101Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed"}}}}"#
        )
    };
    vec![
        anonymous(
            200,
            "/api/v1/namespaces/kube-system/secrets?limit=500\\u0026x=1",
        ),
        anonymous(403, "/api/v1/namespaces/kube-system/secrets"),
        refused(NONE, r#","annotations":{"note":"padding"}"#),
        // Anyone else stays malformed wherever the cut falls.
        anonymous(200, "/api").replace("system:anonymous", "kubernetes-admin"),
    ]
}

/// Judges `bytes` with every rule: the rule and severity of its one row,
/// or `None` when it made no row (and was counted malformed).
fn judged(bytes: &[u8]) -> Option<(Rule, Severity)> {
    let mut det = Detector::new(Vec::new());
    det.feed(bytes, Origin::default());
    let (agg, stats) = det.finish();
    let findings = agg.into_findings();
    match findings.len() {
        0 => {
            // Malformed, or (a prefix that happens to end in `}`, which
            // the framing check of a record no rule can take reads as an
            // event) an event: never a cut record reported.
            assert_eq!((stats.malformed + stats.events, stats.truncated), (1, 0));
            None
        }
        1 => {
            assert_eq!((stats.malformed, stats.truncated), (0, 1));
            let f = findings.get(0).unwrap();
            Some((f.rule(), f.severity))
        }
        n => panic!("{n} rows for one cut record"),
    }
}

#[test]
fn a_cut_record_is_judged_by_what_was_read_at_every_cut() {
    for record in cut_corpus() {
        for k in 0..record.len() {
            let want = expected(&record, k);
            let cut = &record.as_bytes()[..k];
            assert_eq!(judged(cut), want, "cut at {k}: {}", &record[..k]);
            let marked = [cut, crate::audit::prefix::CUT_MARK.as_bytes()].concat();
            assert_eq!(judged(&marked), want, "cut at {k} with the mark");
        }
    }
}

#[test]
fn a_cut_record_s_row_holds_what_was_read_and_cloudwatch_s_time() {
    let record = &cut_corpus()[0];
    let cut = &record[..record.find(r#""userAgent""#).unwrap() + 14];
    let wrapper = serde_json::json!({
        "timestamp": 1_764_464_523_123_i64,
        "message": format!("{cut}[Truncated...]"),
        "eventId": "e1",
    })
    .to_string();
    let (findings, stats) = run(Rules::ALL, &[&wrapper]);
    assert_eq!(stats.truncated, 1);
    let f = findings.get(0).unwrap();
    let cols = f.cols();
    assert_eq!(cols[3], "2025-11-30T01:02:03.123000Z", "CloudWatch's time");
    assert_eq!(
        cols[4],
        "/api/v1/namespaces/kube-system/secrets?limit=500&x=1"
    );
    assert_eq!(cols[6], "203.0.113.9", "the first address read");
    assert_eq!((&*cols[10], &*cols[12]), ("system:anonymous", "list"));
    assert_eq!(cols[11], "0", "the agent was cut");
    let [rule, credential, note] = f.extras();
    assert_eq!((&*rule, &*credential), ("truncated", "0"));
    assert!(note.contains("anonymous request"), "{note}");
    assert!(note.contains("2 source addresses could be read"), "{note}");
    assert_ne!(f.ids, 0, "the eventId counts for the checkpoint");
    // ESCU alone: malformed, as before the rule.
    let (findings, stats) = run(Rules::ESCU, &[&wrapper]);
    assert!(findings.is_empty());
    assert_eq!((stats.malformed, stats.truncated), (1, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any cut of a record padded with many addresses, and any bytes after
    /// it: never a panic, never more than one row, and the decision is the
    /// one the landmarks give.
    #[test]
    fn cuts_of_padded_records_never_panic_and_decide_by_what_was_read(
        pick in 0usize..4,
        pad in 0usize..400,
        at in any::<prop::sample::Index>(),
        junk in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let addresses: Vec<String> = (0..pad).map(|i| format!("\"10.{}.{}.1\"", i / 250, i % 250)).collect();
        let padded = cut_corpus()[pick].replacen(
            r#""sourceIPs":["#,
            &format!(r#""sourceIPs":[{}{}"#, addresses.join(","), if pad > 0 { "," } else { "" }),
            1,
        );
        let k = at.index(padded.len());
        prop_assert_eq!(judged(&padded.as_bytes()[..k]), expected(&padded, k));
        // Bytes after the cut that no CloudWatch writes: no panic.
        let mut odd = padded.as_bytes()[..k].to_vec();
        odd.extend_from_slice(&junk);
        let mut det = Detector::new(Vec::new());
        det.feed(&odd, Origin::default());
        prop_assert!(det.finish().0.len() <= 1);
    }
}
