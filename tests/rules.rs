//! The rules beside ESCU's (issue 19): `unauthenticated` (a 401 with no
//! username, which is what every request without valid credentials
//! becomes on EKS 1.32 and later) and `truncated` (a record cut by
//! CloudWatch whose prefix shows an anonymous user, or a 401 with no user).
//!
//! Only the shipped binary is used (`kubeanon scan --format ndjson`). The
//! expected rows were written by hand from the rules' specification, not
//! from running any code:
//!
//! - `unauthenticated` matches every event with `responseStatus.code` 401
//!   and no username (`user` absent, `{}`, or `{"username":""}`), at any
//!   stage. Its rows have ESCU's 13 by-fields, `"0"`-filled and grouped
//!   like `stats count by` (one row per source IP); `credential` is `none`
//!   for "Authentication failed, no credentials provided" and the methods
//!   exactly as the message lists them for "Authentication failed,
//!   attempted: ..."; `severity` is `informational` without credentials,
//!   `low` with credentials presented and refused; `note` is `"0"`.
//! - `truncated`: a record that is not whole JSON but whose prefix shows an
//!   anonymous user, or a 401 with no user, becomes a row.
//!
//! The columns `rule`, `credential`, `note` come after the triage columns.

mod util;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};
use util::{COLUMNS, Summary, TRIAGE, fixture, kubeanon, summary};

/// The columns the rules add, in order, after the triage columns.
const RULE_COLUMNS: [&str; 3] = ["rule", "credential", "note"];

fn sample_133() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/eks-1.33-audit-sample.jsonl")
}

/// Runs `kubeanon scan --format ndjson EXTRA... PATH`, expecting success;
/// returns the rows (as JSON objects, keys in the order written) and the
/// summary line's counters.
fn scan(path: &PathBuf, extra: &[&str]) -> (Vec<Map<String, Value>>, Summary) {
    let out = kubeanon()
        .args(["scan", "--format", "ndjson"])
        .args(extra)
        .arg(path)
        .assert()
        .success();
    let out = out.get_output();
    let text = std::str::from_utf8(&out.stdout).expect("ndjson output is UTF-8");
    let rows = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad ndjson line {line:?}: {e}"));
            match v {
                Value::Object(m) => m,
                other => panic!("ndjson line is not an object: {other}"),
            }
        })
        .collect();
    (rows, summary(&out.stderr))
}

/// The keys of an ndjson line in the order written (serde_json's Map does
/// not keep it without its preserve_order feature, so read them again).
fn keys_in_order(line: &str) -> Vec<String> {
    let obj: util::Ordered = serde_json::from_str(line).expect("an ndjson object");
    obj.0.into_iter().map(|(k, _)| k).collect()
}

fn str_field<'a>(row: &'a Map<String, Value>, key: &str) -> &'a str {
    match row.get(key) {
        Some(Value::String(s)) => s,
        other => panic!("row's {key} is not a string: {other:?} in {row:?}"),
    }
}

/// A row reduced to the given fields, for comparing as multisets.
fn project(row: &Map<String, Value>, fields: &[String]) -> Vec<(String, Value)> {
    fields
        .iter()
        .map(|f| {
            let v = row
                .get(f)
                .unwrap_or_else(|| panic!("row has no {f}: {row:?}"))
                .clone();
            (f.clone(), v)
        })
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn value_key(v: &[(String, Value)]) -> String {
    serde_json::to_string(&v.iter().map(|(k, v)| (k, v)).collect::<Vec<_>>()).unwrap()
}

#[test]
fn rows_have_the_rule_columns_after_the_triage_columns() {
    let out = kubeanon()
        .args(["scan", "--format", "ndjson"])
        .arg(fixture("authn_audit_cases.jsonl"))
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(!text.is_empty(), "no rows");
    let want: Vec<String> = COLUMNS
        .iter()
        .chain(TRIAGE.iter())
        .chain(RULE_COLUMNS.iter())
        .map(|s| s.to_string())
        .collect();
    for line in text.lines() {
        assert_eq!(keys_in_order(line), want, "{line}");
    }
}

/// tests/fixtures/authn_audit_cases.jsonl against the rows written by hand
/// in authn_audit_cases.expected.ndjson, field by field (only the fields
/// each expected row names), as multisets of rows. Of its 14 events:
/// 1-5 one row each (no credentials x2, bearer, "basic, bearer", x509);
/// 6 and 7 copies of 1 at ResponseComplete and RequestReceived (a row each:
/// stage is a by-field); 8 no `user` at all, 9 `{"username":""}` (bearer);
/// 10 two sourceIPs (two rows); 11 and 12 equal in the 13 by-fields (one
/// row, count 2); 13 and 14 are 401s with a username: no row.
#[test]
fn unauthenticated_rows_of_the_authn_audit_cases() {
    let expected: Vec<Map<String, Value>> =
        std::fs::read_to_string(fixture("authn_audit_cases.expected.ndjson"))
            .expect("read the expected rows")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(
                |l| match serde_json::from_str::<Value>(l).expect("expected row") {
                    Value::Object(m) => m,
                    other => panic!("expected row is not an object: {other}"),
                },
            )
            .collect();
    assert_eq!(expected.len(), 12);
    let fields: Vec<String> = expected[0].keys().cloned().collect();
    for e in &expected {
        let mut k: Vec<&String> = e.keys().collect();
        k.sort();
        let mut f: Vec<&String> = fields.iter().collect();
        f.sort();
        assert_eq!(k, f, "every expected row names the same fields");
    }

    let (rows, s) = scan(&fixture("authn_audit_cases.jsonl"), &[]);
    let got = sorted(
        rows.iter()
            .map(|r| value_key(&project(r, &fields)))
            .collect(),
    );
    let want = sorted(
        expected
            .iter()
            .map(|r| value_key(&project(r, &fields)))
            .collect(),
    );
    assert_eq!(got, want);
    assert_eq!(s.findings, 12, "{s:?}");
    assert_eq!(s.malformed, 0, "{s:?}");
}

/// What kube-apiserver itself logs for a refused authentication (its
/// Unauthorized handler's Status copied over authn_audit.go's message; see
/// tests/fixtures/SOURCES.md). The rule matches it (401, no username); the
/// specification does not say what `credential` and `severity` are when
/// the message names neither "no credentials provided" nor "attempted",
/// so only the by-fields, the rule and the count are checked.
#[test]
fn kube_apiserver_refusals_are_unauthenticated_rows() {
    let (rows, s) = scan(&fixture("authn_audit_apiserver_status.jsonl"), &[]);
    let fields: Vec<String> = [
        "rule",
        "requestURI",
        "src_ip",
        "stage",
        "user",
        "user.groups{}",
        "objectRef.resource",
        "responseStatus.code",
        "count",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let row = |uri: &str, ip: &str, resource: &str| -> String {
        value_key(&project(
            &serde_json::json!({
                "rule": "unauthenticated", "requestURI": uri, "src_ip": ip,
                "stage": "ResponseStarted", "user": "0", "user.groups{}": "0",
                "objectRef.resource": resource, "responseStatus.code": "401", "count": 1,
            })
            .as_object()
            .unwrap()
            .clone(),
            &fields,
        ))
    };
    let want = sorted(vec![
        row(
            "/api/v1/namespaces/kube-system/secrets",
            "203.0.113.77",
            "secrets",
        ),
        row("/version", "198.51.100.23", "0"),
    ]);
    let got = sorted(
        rows.iter()
            .map(|r| value_key(&project(r, &fields)))
            .collect(),
    );
    assert_eq!(got, want);
    assert_eq!(s.malformed, 0, "{s:?}");
}

/// Rows of examples/eks-1.33-audit-sample.jsonl by rule and severity, as
/// examples/gen_eks_133_sample.py builds it. Every request there has one
/// source IP and its own requestReceivedTimestamp, so each matching event
/// is one row with count 1.
///
/// unauthenticated, informational (no credentials provided): 73
///   scanner 198.51.100.23: 10 rounds x /version, /api, /apis, /.env = 40
///   scanner 203.0.113.77:  6 rounds x /version, list kube-system secrets,
///                          /metrics = 18
///   scanner 192.0.2.140:   3 rounds x /api, /apis, /.env, /metrics,
///                          /version = 15
/// unauthenticated, low (credentials presented and refused): 11
///   198.18.0.45 forged bearer: 4 rounds x 2 paths = 8
///   100.64.7.9 expired kubectl bearer: 2
///   198.18.5.200 x509: 1
/// escu, informational: 6 (2 monitors x /healthz, /livez, /readyz at
///   RequestReceived: no outcome yet)
/// escu, low: 6 (the same at ResponseComplete, 200, allowed by
///   system:public-info-viewer: a path every cluster grants)
/// truncated, high: 1 (the cut anonymous `get /healthz`: its prefix shows
///   system:anonymous, is cut in sourceIPs, no 401 or 403 readable)
/// No row: 30 authenticated requests, the 401 of
///   system:serviceaccount:default:ci (it has a username), and the cut
///   refused authentication (its prefix shows `"user":{}` but is cut in
///   sourceIPs, before responseStatus: no 401 readable, so it is neither
///   rule's; it stays malformed: the one malformed record).
/// Total 73 + 11 + 6 + 6 + 1 = 97 rows.
#[test]
fn sample_133_rows_by_rule_and_severity() {
    let (rows, s) = scan(&sample_133(), &[]);
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &rows {
        *by.entry((str_field(r, "rule").into(), str_field(r, "severity").into()))
            .or_default() += 1;
        assert_eq!(r.get("count"), Some(&Value::from(1)), "{r:?}");
    }
    let want: BTreeMap<(String, String), u64> = [
        (("escu", "informational"), 6),
        (("escu", "low"), 6),
        (("truncated", "high"), 1),
        (("unauthenticated", "informational"), 73),
        (("unauthenticated", "low"), 11),
    ]
    .into_iter()
    .map(|((a, b), n)| ((a.to_string(), b.to_string()), n))
    .collect();
    assert_eq!(by, want);
    assert_eq!(s.findings, 97, "{s:?}");
    assert_eq!(s.malformed, 1, "{s:?}");

    // The refusals' credential column, by hand as above.
    let mut creds: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| str_field(r, "rule") == "unauthenticated")
    {
        *creds.entry(str_field(r, "credential").into()).or_default() += 1;
        assert_eq!(str_field(r, "user"), "0");
        assert_eq!(str_field(r, "responseStatus.code"), "401");
        assert_eq!(str_field(r, "stage"), "ResponseStarted");
    }
    let want_creds: BTreeMap<String, u64> = [
        ("bearer".to_string(), 10),
        ("none".to_string(), 73),
        ("x509".to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(creds, want_creds);
}

/// `--rules escu`: ESCU's rows alone, the 12 allowed anonymous health
/// checks (2 monitors x 3 paths x 2 stages). The truncated rule is off, so
/// both cut records are lines that are not a JSON object: 2 malformed.
#[test]
fn sample_133_escu_rule_alone_reports_the_health_checks() {
    let (rows, s) = scan(&sample_133(), &["--rules", "escu"]);
    assert_eq!(rows.len(), 12, "{rows:?}");
    let mut by_stage: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &rows {
        assert_eq!(str_field(r, "rule"), "escu", "{r:?}");
        assert_eq!(str_field(r, "user"), "system:anonymous", "{r:?}");
        assert_eq!(
            str_field(r, "user.groups{}"),
            "system:unauthenticated",
            "{r:?}"
        );
        assert!(
            ["/healthz", "/livez", "/readyz"].contains(&str_field(r, "requestURI")),
            "{r:?}"
        );
        *by_stage
            .entry((
                str_field(r, "stage").into(),
                str_field(r, "severity").into(),
            ))
            .or_default() += 1;
    }
    let want: BTreeMap<(String, String), u64> = [
        (("RequestReceived", "informational"), 6),
        (("ResponseComplete", "low"), 6),
    ]
    .into_iter()
    .map(|((a, b), n)| ((a.to_string(), b.to_string()), n))
    .collect();
    assert_eq!(by_stage, want);
    assert_eq!(s.findings, 12, "{s:?}");
    assert_eq!(s.malformed, 2, "{s:?}");
}
