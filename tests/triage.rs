//! From rows to decisions: severity, decision, reason and binding on real
//! events (tests/fixtures, origins in tests/fixtures/SOURCES.md, and the
//! bundled sample), `--min-severity`, `--fail-on-findings=LEVEL`,
//! `--rollup` (scan, and poll per step against moto's server), the
//! table's colours on a terminal, and CSV appends under another header.
//!
//! Expected values are written by hand from the events and the README's
//! policy, never taken from kubeanon's output.

mod support;
mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use util::{COLUMNS, RULES, TRIAGE, fixture, fixture_lines, kubeanon};

const SAMPLE: &str = "examples/eks-audit-sample.jsonl";

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE)
}

/// `kubeanon scan ARGS` with `stdin`, expecting success: rows as JSON
/// objects (ndjson unless ARGS say otherwise) and stderr.
fn scan(args: &[&str], stdin: &str) -> (Vec<Value>, String) {
    let out = kubeanon()
        .arg("scan")
        .args(args)
        .write_stdin(stdin)
        .assert()
        .success();
    let out = out.get_output();
    (
        support::rows(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scan_files(args: &[&str], files: &[&Path]) -> (Vec<Value>, String) {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.extend(files.iter().map(|f| f.as_os_str()));
    let out = kubeanon().arg("scan").args(all).assert().success();
    let out = out.get_output();
    (
        support::rows(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn text<'v>(row: &'v Value, column: &str) -> &'v str {
    row[column]
        .as_str()
        .unwrap_or_else(|| panic!("{column} is not text in {row}"))
}

/// The panther fixture's allowed anonymous `GET /version` (a scanner on a
/// real EKS cluster; the public-info binding's reason as the API server
/// writes it).
fn allowed_version_probe() -> Value {
    let line = fixture_lines("panther_analysis_anonymous_rule_tests_events.jsonl")
        .into_iter()
        .find(|l| l.contains(r#""requestURI":"/version""#) && l.contains("system:unauthenticated"))
        .expect("the fixture's allowed /version probe");
    serde_json::from_str(&line).unwrap()
}

/// The bundled sample's allowed anonymous `list secrets`.
fn allowed_secrets_list() -> Value {
    let text = std::fs::read_to_string(sample()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("debug-anonymous") && l.contains("system:anonymous"))
        .expect("the sample's allowed secrets list");
    serde_json::from_str(line).unwrap()
}

/// Sets the member a JSON pointer names (`~1` is a `/` in a name),
/// making the objects on its way; `null` removes it.
fn set(event: &mut Value, pointer: &str, value: Value) {
    let names: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|n| n.replace("~1", "/"))
        .collect();
    let (last, path) = names.split_last().unwrap();
    let mut at = event;
    for name in path {
        at = at
            .as_object_mut()
            .unwrap()
            .entry(name.clone())
            .or_insert_with(|| json!({}));
    }
    let object = at.as_object_mut().unwrap();
    if value.is_null() {
        object.remove(last);
    } else {
        object.insert(last.clone(), value);
    }
}

/// The one row of one event.
fn row_of(event: &Value) -> Value {
    let (rows, _) = scan(&[], &format!("{event}\n"));
    assert_eq!(rows.len(), 1, "{event}");
    rows.into_iter().next().unwrap()
}

#[test]
fn each_branch_of_the_severity_policy_on_real_events() {
    let probe = allowed_version_probe();
    let secrets = allowed_secrets_list();
    type Change = Vec<(&'static str, Value)>;
    let resource = |r: &str, sub: Option<&str>, verb: &str| -> Change {
        vec![
            ("/objectRef/resource", json!(r)),
            (
                "/objectRef/subresource",
                sub.map_or(Value::Null, |s| json!(s)),
            ),
            ("/objectRef/namespace", json!("default")),
            ("/verb", json!(verb)),
            (
                "/requestURI",
                json!(format!("/api/v1/namespaces/default/{r}")),
            ),
        ]
    };
    let cases: Vec<(&str, &Value, Change, &str)> = vec![
        // Allowed, on the endpoints every cluster grants to anyone: low.
        ("public /version as captured", &probe, vec![], "low"),
        (
            "/version/",
            &probe,
            vec![("/requestURI", json!("/version/"))],
            "low",
        ),
        (
            "/healthz with a query",
            &probe,
            vec![("/requestURI", json!("/healthz?timeout=5s"))],
            "low",
        ),
        (
            "/livez",
            &probe,
            vec![("/requestURI", json!("/livez"))],
            "low",
        ),
        (
            "/readyz",
            &probe,
            vec![("/requestURI", json!("/readyz"))],
            "low",
        ),
        (
            "OIDC discovery",
            &probe,
            vec![("/requestURI", json!("/.well-known/openid-configuration"))],
            "low",
        ),
        (
            "OIDC keys",
            &probe,
            vec![("/requestURI", json!("/openid/v1/jwks"))],
            "low",
        ),
        (
            "a HEAD of /version",
            &probe,
            vec![("/verb", json!("head"))],
            "low",
        ),
        // Allowed, anything else: high.
        (
            "a health subpath no default role grants",
            &probe,
            vec![("/requestURI", json!("/healthz/etcd"))],
            "high",
        ),
        (
            "discovery /api",
            &probe,
            vec![("/requestURI", json!("/api"))],
            "high",
        ),
        (
            "/metrics",
            &probe,
            vec![("/requestURI", json!("/metrics"))],
            "high",
        ),
        ("get pods", &probe, resource("pods", None, "get"), "high"),
        (
            "pod logs",
            &probe,
            resource("pods", Some("log"), "get"),
            "high",
        ),
        (
            "a watch answered 101",
            &probe,
            [
                resource("configmaps", None, "watch"),
                vec![("/responseStatus/code", json!(101))],
            ]
            .concat(),
            "high",
        ),
        (
            "a get answered 404",
            &probe,
            [
                resource("pods", None, "get"),
                vec![("/responseStatus/code", json!(404))],
            ]
            .concat(),
            "high",
        ),
        (
            "no annotations at all: judged by the code",
            &probe,
            vec![
                ("/annotations", Value::Null),
                ("/requestURI", json!("/api")),
            ],
            "high",
        ),
        // Allowed: critical.
        ("list secrets as captured", &secrets, vec![], "critical"),
        (
            "get a secret",
            &probe,
            resource("secrets", None, "get"),
            "critical",
        ),
        (
            "exec",
            &probe,
            resource("pods", Some("exec"), "get"),
            "critical",
        ),
        (
            "attach",
            &probe,
            resource("pods", Some("attach"), "get"),
            "critical",
        ),
        (
            "port-forward",
            &probe,
            resource("pods", Some("portforward"), "get"),
            "critical",
        ),
        (
            "a token request",
            &probe,
            resource("serviceaccounts", Some("token"), "get"),
            "critical",
        ),
        ("roles", &probe, resource("roles", None, "list"), "critical"),
        (
            "rolebindings",
            &probe,
            resource("rolebindings", None, "get"),
            "critical",
        ),
        (
            "clusterroles",
            &probe,
            resource("clusterroles", None, "list"),
            "critical",
        ),
        (
            "clusterrolebindings",
            &probe,
            resource("clusterrolebindings", None, "watch"),
            "critical",
        ),
        (
            "create",
            &probe,
            [
                resource("configmaps", None, "create"),
                vec![("/responseStatus/code", json!(201))],
            ]
            .concat(),
            "critical",
        ),
        (
            "update",
            &probe,
            resource("configmaps", None, "update"),
            "critical",
        ),
        (
            "patch",
            &probe,
            resource("configmaps", None, "patch"),
            "critical",
        ),
        (
            "delete",
            &probe,
            resource("configmaps", None, "delete"),
            "critical",
        ),
        (
            "deletecollection",
            &probe,
            resource("configmaps", None, "deletecollection"),
            "critical",
        ),
        (
            "a POST to a public path",
            &probe,
            vec![("/verb", json!("post"))],
            "critical",
        ),
        (
            "a PUT",
            &probe,
            vec![("/verb", json!("put")), ("/requestURI", json!("/x"))],
            "critical",
        ),
        // Refused or no outcome: informational, whatever else.
        (
            "secrets answered 403 though allowed (admission)",
            &secrets,
            vec![("/responseStatus/code", json!(403))],
            "informational",
        ),
        (
            "secrets answered 401",
            &secrets,
            vec![
                ("/responseStatus/code", json!(401)),
                ("/annotations", Value::Null),
            ],
            "informational",
        ),
        (
            "a forbid decision",
            &secrets,
            vec![(
                "/annotations/authorization.k8s.io~1decision",
                json!("forbid"),
            )],
            "informational",
        ),
        (
            "RequestReceived",
            &secrets,
            vec![
                ("/stage", json!("RequestReceived")),
                ("/responseStatus", Value::Null),
                ("/annotations", Value::Null),
            ],
            "informational",
        ),
        (
            "a write refused",
            &probe,
            [
                resource("secrets", None, "create"),
                vec![("/responseStatus/code", json!(403))],
            ]
            .concat(),
            "informational",
        ),
    ];
    for (what, base, change, want) in cases {
        let mut event = base.clone();
        for (pointer, value) in change {
            set(&mut event, pointer, value);
        }
        let row = row_of(&event);
        assert_eq!(text(&row, "severity"), want, "{what}: {event}");
    }
}

#[test]
fn decision_reason_and_binding_of_real_events() {
    let paths: Vec<PathBuf> = util::FIXTURES.iter().map(|f| fixture(f)).collect();
    let mut files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let sample = sample();
    files.push(&sample);
    let (rows, _) = scan_files(&[], &files);
    let find = |uri: &str, stage: &str, code: &str| -> &Value {
        rows.iter()
            .find(|r| {
                text(r, "requestURI") == uri
                    && text(r, "stage") == stage
                    && text(r, "responseStatus.code") == code
            })
            .unwrap_or_else(|| panic!("no row {uri} {stage} {code}"))
    };
    let public = r#"RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole "system:public-info-viewer" to Group "system:unauthenticated""#;
    // Panther's allowed /version probe (real EKS wording).
    let r = find("/version", "ResponseComplete", "200");
    assert_eq!(
        [
            text(r, "severity"),
            text(r, "decision"),
            text(r, "reason"),
            text(r, "binding")
        ],
        [
            "low",
            "allow",
            public,
            "ClusterRoleBinding/system:public-info-viewer"
        ]
    );
    // 90DaysOfDevOps: HEAD / received (no annotations yet), then refused
    // with an empty reason.
    let r = find("/", "RequestReceived", "0");
    assert_eq!(TRIAGE.map(|c| text(r, c)), ["informational", "0", "0", "0"]);
    let r = rows
        .iter()
        .find(|r| text(r, "src_ip") == "10.131.0.2" && text(r, "responseStatus.code") == "403")
        .unwrap();
    assert_eq!(
        TRIAGE.map(|c| text(r, c)),
        ["informational", "forbid", "0", "0"]
    );
    // The sample's allowed secrets list names the binding to remove.
    let r = find(
        "/api/v1/namespaces/kube-system/secrets?limit=500",
        "ResponseComplete",
        "200",
    );
    assert_eq!(
        TRIAGE.map(|c| text(r, c)),
        [
            "critical",
            "allow",
            r#"RBAC: allowed by ClusterRoleBinding "debug-anonymous" of ClusterRole "secret-reader" to User "system:anonymous""#,
            "ClusterRoleBinding/debug-anonymous"
        ]
    );
    // Every row has the four columns right after the 14, in order.
    for r in &rows {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: Vec<&str> = COLUMNS
            .iter()
            .chain(&TRIAGE)
            .chain(&RULES)
            .copied()
            .collect();
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
    }

    // A RoleBinding's reason (the sample's wording for an authenticated
    // request) names namespace and name.
    let mut event = allowed_secrets_list();
    event["annotations"]["authorization.k8s.io/reason"] = json!(
        r#"RBAC: allowed by RoleBinding "leaky/kube-system" of Role "secret-reader" to Group "system:unauthenticated""#
    );
    assert_eq!(
        text(&row_of(&event), "binding"),
        "RoleBinding/kube-system/leaky"
    );
}

#[test]
fn a_row_whose_events_disagree_shows_each_value_once_sorted() {
    let allowed = allowed_secrets_list();
    let mut refused = allowed.clone();
    refused["annotations"] =
        json!({"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""});
    let mut bare = allowed.clone();
    bare.as_object_mut().unwrap().remove("annotations");
    let mut other = allowed.clone();
    other["annotations"]["authorization.k8s.io/reason"] = json!(
        r#"RBAC: allowed by ClusterRoleBinding "another" of ClusterRole "r" to Group "system:unauthenticated""#
    );
    let input = [&refused, &allowed, &bare, &allowed, &other]
        .iter()
        .map(|e| e.to_string() + "\n")
        .collect::<String>();
    let (rows, _) = scan(&[], &input);
    assert_eq!(rows.len(), 1, "one row: the 13 values are the same");
    let r = &rows[0];
    assert_eq!(r["count"], 5);
    assert_eq!(text(r, "severity"), "critical", "the highest of its events");
    assert_eq!(text(r, "decision"), "0 | allow | forbid");
    assert_eq!(
        text(r, "reason"),
        r#"0 | RBAC: allowed by ClusterRoleBinding "another" of ClusterRole "r" to Group "system:unauthenticated" | RBAC: allowed by ClusterRoleBinding "debug-anonymous" of ClusterRole "secret-reader" to User "system:anonymous""#
    );
    assert_eq!(
        text(r, "binding"),
        "ClusterRoleBinding/another | ClusterRoleBinding/debug-anonymous"
    );
}

/// The severities of the sample's rows under `--rules escu`, counted by
/// hand from its 27 anonymous events (README: Severity): the allowed secrets list is
/// critical; 14 allowed /livez, /readyz, /healthz and /version requests
/// are low; 10 refused requests (11 rows: one came with two source IPs)
/// and 2 RequestReceived lines are informational.
const SAMPLE_SEVERITIES: [(&str, usize); 3] = [("critical", 1), ("informational", 13), ("low", 14)];

#[test]
fn min_severity_keeps_rows_at_or_above_and_says_how_many_it_left_out() {
    let (all, _) = scan_files(&["--rules", "escu"], &[&sample()]);
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &all {
        *counted.entry(text(r, "severity")).or_default() += 1;
    }
    assert_eq!(counted, SAMPLE_SEVERITIES.into_iter().collect());
    for (level, kept) in [
        ("informational", 28),
        ("low", 15),
        ("medium", 1),
        ("high", 1),
        ("critical", 1),
    ] {
        let (rows, stderr) =
            scan_files(&["--rules", "escu", "--min-severity", level], &[&sample()]);
        assert_eq!(rows.len(), kept, "{level}");
        let want: Vec<&Value> = all
            .iter()
            .filter(|r| {
                let rank = |s: &str| {
                    ["informational", "low", "medium", "high", "critical"]
                        .iter()
                        .position(|l| *l == s)
                        .unwrap()
                };
                rank(text(r, "severity")) >= rank(level)
            })
            .collect();
        assert_eq!(rows.iter().collect::<Vec<_>>(), want, "{level}");
        let dropped = 28 - kept;
        if dropped > 0 {
            assert!(
                stderr.contains(&format!(
                    "({dropped} {} below --min-severity)",
                    if dropped == 1 { "row" } else { "rows" }
                )),
                "{stderr}"
            );
        } else {
            assert!(!stderr.contains("below --min-severity"), "{stderr}");
        }
        // The counts the rule made are the same either way.
        assert_eq!(support::summary_number(stderr.as_bytes(), "matched"), 27);
    }
    let out = kubeanon()
        .args(["scan", "--min-severity", "severe"])
        .arg(sample())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn fail_on_findings_takes_a_level() {
    let code = |args: &[&str], file: &Path| {
        kubeanon()
            .arg("scan")
            .args(args)
            .arg(file)
            .output()
            .unwrap()
            .status
            .code()
    };
    let sample = sample();
    // The sample's worst row is critical.
    assert_eq!(code(&["--fail-on-findings"], &sample), Some(3));
    assert_eq!(code(&["--fail-on-findings=critical"], &sample), Some(3));
    assert_eq!(code(&["--fail-on-findings=high"], &sample), Some(3));
    // The panther fixture's worst is a low /version probe.
    let panther = fixture("panther_analysis_anonymous_rule_tests_events.jsonl");
    assert_eq!(code(&["--fail-on-findings"], &panther), Some(3));
    assert_eq!(code(&["--fail-on-findings=low"], &panther), Some(3));
    assert_eq!(code(&["--fail-on-findings=high"], &panther), Some(0));
    assert_eq!(code(&[], &panther), Some(0));
    // Rows --min-severity left out are not written, so they fail nothing.
    assert_eq!(
        code(&["--min-severity", "high", "--fail-on-findings"], &panther),
        Some(0)
    );
    // A path right after the plain flag is a path, not a level.
    assert_eq!(
        kubeanon()
            .args(["scan", "--fail-on-findings"])
            .arg(&panther)
            .arg("--fail-on-findings=bogus")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

type Key = (String, String, String, String, String);

fn group_key(r: &Value) -> Key {
    (
        text(r, "src_ip").into(),
        text(r, "userAgent").into(),
        text(r, "verb").into(),
        text(r, "requestURI").into(),
        text(r, "responseStatus.code").into(),
    )
}

/// Checks a rollup against the rows it groups: one line per distinct
/// (source IP, user agent, verb, URI, code), counts adding up, each
/// line's first and last seen, severity the highest of its rows, lines
/// sorted by severity then count.
fn assert_rollup_of(rows: &[Value], rollup: &[Value]) {
    let rank = |s: &str| {
        ["informational", "low", "medium", "high", "critical"]
            .iter()
            .position(|l| *l == s)
            .unwrap()
    };
    let mut want: BTreeMap<Key, (u64, usize, BTreeSet<String>)> = BTreeMap::new();
    for r in rows {
        let g = want.entry(group_key(r)).or_default();
        g.0 += r["count"].as_u64().unwrap();
        g.1 = g.1.max(rank(text(r, "severity")));
        let at = text(r, "requestReceivedTimestamp");
        if at != "0" {
            g.2.insert(at.to_string());
        }
    }
    assert_eq!(rollup.len(), want.len());
    let total = |rows: &[Value]| {
        rows.iter()
            .map(|r| r["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(total(rollup), total(rows), "the counts add up");
    for line in rollup {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(!keys.contains(&"requestReceivedTimestamp"), "{line}");
        let (count, severity, seen) = &want[&group_key(line)];
        assert_eq!(line["count"].as_u64().unwrap(), *count, "{line}");
        assert_eq!(rank(text(line, "severity")), *severity, "{line}");
        // One timestamp format here: text order is time order.
        let first = seen.first().map_or("0", String::as_str);
        let last = seen.last().map_or("0", String::as_str);
        assert_eq!(
            (text(line, "first_seen"), text(line, "last_seen")),
            (first, last),
            "{line}"
        );
    }
    let order: Vec<(usize, u64)> = rollup
        .iter()
        .map(|l| (rank(text(l, "severity")), l["count"].as_u64().unwrap()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted, "by severity, then count");
}

#[test]
fn rollup_groups_the_sample_and_adds_up_to_its_rows() {
    // Every rule: the cut anonymous record is a group of its own.
    let (rows, _) = scan_files(&[], &[&sample()]);
    let (rollup, stderr) = scan_files(&["--rollup"], &[&sample()]);
    assert_rollup_of(&rows, &rollup);
    assert_eq!(rollup.len(), 28);
    assert!(
        stderr.contains("29 findings rolled up into 28 groups"),
        "{stderr}"
    );
    // ESCU's rule alone: its 28 rows into 27 groups, as before the rules.
    let (rows, _) = scan_files(&["--rules", "escu"], &[&sample()]);
    let (rollup, stderr) = scan_files(&["--rollup", "--rules", "escu"], &[&sample()]);
    assert_rollup_of(&rows, &rollup);
    assert_eq!(rollup.len(), 27);
    assert!(
        stderr.contains("28 findings rolled up into 27 groups"),
        "{stderr}"
    );
    // The critical line comes first, with its binding.
    assert_eq!(text(&rollup[0], "severity"), "critical");
    assert_eq!(
        text(&rollup[0], "binding"),
        "ClusterRoleBinding/debug-anonymous"
    );
    // Column names and order.
    let out = kubeanon()
        .args(["scan", "--rollup", "--format", "csv"])
        .arg(sample())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "src_ip,userAgent,verb,requestURI,responseStatus.code,first_seen,last_seen,count,severity,decision,reason,binding,rule,credential,note"
    );
    // With --min-severity, the rollup groups the rows that are left.
    let (rows, _) = scan_files(&["--min-severity", "low"], &[&sample()]);
    let (rollup, _) = scan_files(&["--min-severity", "low", "--rollup"], &[&sample()]);
    assert_rollup_of(&rows, &rollup);
}

/// A scanner storm: 3 scanners, each probing 2 paths 1,000 times (every
/// request its own row: the timestamps differ), plus the one allowed
/// secrets read.
#[test]
fn a_scanner_storm_rolls_up_to_a_line_per_scanner_and_probe() {
    let mut input = String::new();
    let mut n = 0;
    for ip in ["198.51.100.7", "203.0.113.9", "192.0.2.33"] {
        for uri in ["/version", "/.env"] {
            for _ in 0..1000 {
                n += 1;
                let (code, decision) = if uri == "/version" {
                    (200, "allow")
                } else {
                    (403, "forbid")
                };
                let event = json!({
                    "kind": "Event", "stage": "ResponseComplete", "verb": "get", "requestURI": uri,
                    "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
                    "sourceIPs": [ip], "userAgent": "zgrab/0.x", "responseStatus": {"code": code},
                    "requestReceivedTimestamp": format!("2026-11-29T01:{:02}:{:02}.{:06}Z", n / 3600 % 60, n / 60 % 60, n),
                    "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": ""},
                });
                input.push_str(&format!("{event}\n"));
            }
        }
    }
    input.push_str(&format!("{}\n", allowed_secrets_list()));
    let (rows, _) = scan(&[], &input);
    assert_eq!(rows.len(), 6001);
    let (rollup, _) = scan(&["--rollup"], &input);
    assert_eq!(rollup.len(), 7, "a line per scanner and path, and the read");
    assert_rollup_of(&rows, &rollup);
    assert_eq!(text(&rollup[0], "severity"), "critical");
    assert!(rollup[1..4].iter().all(|l| text(l, "severity") == "low"));
}

/// Runs `kubeanon ARGS` with its stdout on a pseudo-terminal (Python's pty
/// module), returning what the terminal got.
fn on_a_terminal(args: &[&str], envs: &[(&str, &str)]) -> String {
    let script = "import os, pty, sys\n\
                  status = pty.spawn(sys.argv[1:])\n\
                  sys.exit(os.waitstatus_to_exitcode(status))";
    let mut cmd = Command::new(support::python());
    cmd.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_kubeanon"))
        .args(args)
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_table_colours_severity_only_on_a_terminal_and_without_no_color() {
    let hostile = format!(
        "{}\n",
        json!({
            "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
            "sourceIPs": ["198.51.100.7"], "verb": "get", "requestURI": "/api",
            "userAgent": "evil\u{1b}[2J\u{1b}]0;t\u{7}\u{202e}\u{9b}31m", "responseStatus": {"code": 200},
        })
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    let sample_text = std::fs::read_to_string(sample()).unwrap();
    std::fs::write(&file, sample_text + &hostile).unwrap();
    let file = file.to_str().unwrap();

    // --wide: the user agent is shown whole.
    let shown = on_a_terminal(&["scan", "-q", "--wide", file], &[]);
    // The default format on a terminal is the table, coloured.
    assert!(shown.contains("\u{1b}[1;31mcritical\u{1b}[0m"), "{shown}");
    assert!(shown.contains("\u{1b}[31mhigh\u{1b}[0m"), "{shown}");
    assert!(shown.contains("\u{1b}[36mlow\u{1b}[0m"), "{shown}");
    assert!(shown.contains("\u{1b}[2minformational\u{1b}[0m"), "{shown}");
    // Every escape on the screen is one of those: the user agent's are
    // shown as text.
    let ours = ["[1;31m", "[31m", "[36m", "[2m", "[0m"];
    for (at, _) in shown.match_indices('\u{1b}') {
        assert!(
            ours.iter().any(|c| shown[at + 1..].starts_with(c)),
            "a raw escape at {at}: {:?}",
            &shown[at..(at + 12).min(shown.len())]
        );
    }
    assert!(
        shown.contains(r"evil\u{1b}[2J\u{1b}]0;t\u{7}\u{202e}\u{9b}31m"),
        "{shown}"
    );
    assert!(!shown.contains('\u{202e}') && !shown.contains('\u{9b}'));

    // NO_COLOR, set to anything: the same table, no colour.
    let plain = on_a_terminal(&["scan", "-q", "--wide", file], &[("NO_COLOR", "1")]);
    assert!(!plain.contains('\u{1b}'), "{plain}");
    assert_eq!(
        plain,
        shown
            .replace("\u{1b}[0m", "")
            .replace("\u{1b}[1;31m", "")
            .replace("\u{1b}[31m", "")
            .replace("\u{1b}[36m", "")
            .replace("\u{1b}[2m", "")
    );
    // Not a terminal: no colour either.
    let out = kubeanon()
        .args(["scan", "-q", "--format", "table", file])
        .output()
        .unwrap();
    let piped = String::from_utf8(out.stdout).unwrap();
    assert!(!piped.contains('\u{1b}'));
    assert!(piped.contains("critical") && piped.contains("informational"));
}

#[test]
fn a_csv_append_under_another_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("findings.csv");
    let append = |extra: &[&str]| {
        kubeanon()
            .args(["scan", "--format", "csv", "--append"])
            .arg(&file)
            .args(extra)
            .arg(sample())
            .output()
            .unwrap()
    };
    assert!(append(&[]).status.success());
    assert!(append(&[]).status.success());
    let before = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&before);
    assert_eq!(text.matches("objectRef.name,").count(), 1, "one header");
    // The sample's 29 rows (28 of ESCU's rule, 1 cut record) twice.
    assert_eq!(text.lines().count(), 1 + 2 * 29);
    // Rollup lines have other columns: refused, the file as it was.
    let out = append(&["--rollup"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("header names other columns"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // ocsf is a line format: --append takes it.
    let ocsf = dir.path().join("findings.ocsf.ndjson");
    kubeanon()
        .args(["scan", "-q", "--format", "ocsf", "--append"])
        .arg(&ocsf)
        .arg(sample())
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&ocsf).unwrap().lines().count(), 29);
}

// ---------------------------------------------------------------------------
// poll: a rollup per step

#[test]
fn poll_rolls_up_each_step_and_the_counts_add_up() {
    let group = "/aws/eks/triage-rollup/cluster";
    support::create(group, &[support::AUDIT_STREAM]);
    // Three hours of a scanner hitting /version every minute, refused;
    // steps are an hour, so each step has its own line.
    let end = support::now_ms() - 10 * 60_000;
    let start = end - 3 * 3_600_000;
    let events: Vec<(i64, String)> = (0..180)
        .map(|i| {
            (
                start + i * 60_000 + 1,
                support::audit_event(i as u64 * 250, true),
            )
        })
        .collect();
    support::put(group, support::AUDIT_STREAM, &events);
    let window = ["--start", &support::rfc(start), "--end", &support::rfc(end)];
    let rows = support::rows(&support::run(support::poll(group).args(window)).stdout);
    assert_eq!(rows.len(), 180);
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("rollup.ndjson"));
    let run = support::run(
        support::poll(group)
            .args(window)
            .args(["--rollup", "--step-span", "1h", "--checkpoint"])
            .arg(&cp)
            .arg("--append")
            .arg(&out),
    );
    let steps = support::summary_number(&run.stderr, "steps");
    assert_eq!(steps, 3);
    let lines = support::rows(&std::fs::read(&out).unwrap());
    assert_eq!(lines.len(), 3, "one line per step: {lines:?}");
    let total: u64 = lines.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 180, "the counts add up to the rows'");
    for l in &lines {
        assert_eq!(text(l, "severity"), "informational");
        assert_eq!(text(l, "cluster"), "triage-rollup");
        assert_eq!(text(l, "id").len(), 32);
    }
    // A step's line names its own first and last seen.
    let spans: BTreeSet<(&str, &str)> = lines
        .iter()
        .map(|l| (text(l, "first_seen"), text(l, "last_seen")))
        .collect();
    assert_eq!(spans.len(), 3);
}
