//! `--format ocsf` against the OCSF schema itself: every line is checked
//! by `tests/support/ocsf_validate.py`, which builds the JSON Schema of the
//! Detection Finding class from the schema the OCSF server exports (PyPI
//! `ocsf-json-schema`, installed by `tests/run`) and validates with
//! `jsonschema`. Not against a copy of kubeanon's own expectations.

mod support;
mod util;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use support::validate_ocsf as validate;
use util::kubeanon;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/eks-audit-sample.jsonl")
}

/// Writes `lines` to a file and validates it, asserting zero errors.
fn assert_valid(lines: &[u8], events: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("findings.ocsf.ndjson");
    std::fs::write(&file, lines).unwrap();
    let (ok, report) = validate(&file);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("validated {events} events, 0 errors")),
        "{report}"
    );
}

fn findings(stdout: &[u8]) -> Vec<Value> {
    support::rows(stdout)
}

fn ocsf_scan(args: &[&str], file: &Path) -> Vec<u8> {
    let out = kubeanon()
        .args(["scan", "-q", "--format", "ocsf"])
        .args(args)
        .arg(file)
        .assert()
        .success();
    out.get_output().stdout.clone()
}

#[test]
fn every_finding_of_the_bundled_sample_is_valid_ocsf() {
    let out = ocsf_scan(&[], &sample());
    // One finding per row: the sample's 28 of ESCU's rule, and its cut
    // anonymous record (rule truncated).
    let lines: Vec<Value> = findings(&out);
    assert_eq!(lines.len(), 29);
    assert_valid(&out, 29);
    let cut: Vec<&Value> = lines
        .iter()
        .filter(|f| f["unmapped"]["rule"] == "truncated")
        .collect();
    assert_eq!(cut.len(), 1);
    assert_eq!(
        cut[0]["finding_info"]["analytic"]["name"],
        "Cut audit record of an unauthenticated request"
    );
    assert_eq!(cut[0]["severity"], "High");
    let escu = ocsf_scan(&["--rules", "escu"], &sample());
    assert_valid(&escu, 28);
    let rolled = ocsf_scan(&["--rollup"], &sample());
    assert_valid(&rolled, 28);
    let rolled = ocsf_scan(&["--rollup", "--rules", "escu"], &sample());
    assert_valid(&rolled, 27);
}

#[test]
fn the_validator_rejects_what_breaks_the_schema() {
    // Without this, a validator that passes everything would pass above.
    let out = ocsf_scan(&[], &sample());
    let good: Value = serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let mut lines = Vec::new();
    type Breakage = (&'static str, fn(&mut Value));
    let breakages: [Breakage; 5] = [
        ("severity_id", |f| f["severity_id"] = json!(7)),
        ("'uid' is a required property", |f| {
            f["finding_info"].as_object_mut().unwrap().remove("uid");
        }),
        ("does not match", |f| {
            f["evidences"][0]["src_endpoint"] = json!({"ip": "not an address"})
        }),
        ("Additional properties", |f| {
            f["src_endpoint"] = json!({"ip": "10.0.0.1"})
        }),
        ("type_uid", |f| f["type_uid"] = json!(200499)),
    ];
    for (_, brk) in &breakages {
        let mut f = good.clone();
        brk(&mut f);
        lines.push(f.to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, report) = validate(&file);
    assert!(!ok, "{report}");
    for (n, (says, _)) in breakages.iter().enumerate() {
        let line = format!("line {}: ", n + 1);
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(&line) && l.contains(says)),
            "{line}{says} not in {report}"
        );
    }
}

#[test]
fn a_finding_carries_what_a_responder_needs() {
    let out = ocsf_scan(&[], &sample());
    let all = findings(&out);
    let f = all
        .iter()
        .find(|f| f["severity_id"] == 5)
        .expect("the critical finding");
    assert_eq!(f["class_uid"], 2004);
    assert_eq!(f["severity"], "Critical");
    assert_eq!(f["count"], 1);
    // 2025-03-14T00:02:24.436059Z, the request's time, in ms.
    assert_eq!(f["time"], 1_741_910_544_436i64);
    assert_eq!(f["start_time"], f["end_time"]);
    let info = &f["finding_info"];
    assert_eq!(
        info["analytic"]["uid"],
        "042a3d32-8318-4763-9679-09db2644a8f2"
    );
    assert_eq!(
        info["analytic"]["name"],
        "Kubernetes AWS detect suspicious kubectl calls"
    );
    let uid = info["uid"].as_str().unwrap();
    assert!(uid.len() == 32 && uid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        info["title"]
            .as_str()
            .unwrap()
            .contains("list /api/v1/namespaces/kube-system/secrets"),
        "{info}"
    );
    let e = &f["evidences"][0];
    assert_eq!(e["src_endpoint"]["ip"], "185.220.101.34");
    assert_eq!(e["actor"]["user"]["name"], "system:anonymous");
    assert_eq!(
        e["http_request"]["user_agent"],
        "kubectl/v1.29.0 (linux/amd64) kubernetes/3f7a50f"
    );
    assert_eq!(
        e["http_request"]["url"]["path"],
        "/api/v1/namespaces/kube-system/secrets"
    );
    assert_eq!(e["http_request"]["url"]["query_string"], "limit=500");
    assert_eq!(e["api"]["operation"], "list");
    assert_eq!(e["api"]["response"]["code"], 200);
    assert_eq!(
        f["resources"][0],
        json!({"type": "secrets", "name": "secrets", "namespace": "kube-system"})
    );
    let fix = f["remediation"]["desc"].as_str().unwrap();
    assert!(
        fix.contains("`kubectl get clusterrolebinding debug-anonymous -o yaml`"),
        "{fix}"
    );
    assert_eq!(f["metadata"]["product"]["name"], "kubeanon");
    assert_eq!(f["metadata"]["version"], "1.5.0");
    // The row itself, nothing lost.
    assert_eq!(
        f["unmapped"]["binding"],
        "ClusterRoleBinding/debug-anonymous"
    );
    assert_eq!(f["unmapped"]["src_ip"], "185.220.101.34");
    // The uid is stable: the same input gives the same uids.
    let again = findings(&ocsf_scan(&[], &sample()));
    let uids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|f| f["finding_info"]["uid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(uids(&all), uids(&again));
    let mut distinct = uids(&all);
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), all.len(), "one uid per row");
}

/// The sentences of the README's "The fix, named" that call a binding a
/// default, with the backquoted names in each.
fn readme_defaults() -> Vec<(String, Vec<String>)> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = readme
        .split("\n### The fix, named\n")
        .nth(1)
        .expect("README: ### The fix, named")
        .split("\n#")
        .next()
        .unwrap();
    let prose = section.split_whitespace().collect::<Vec<_>>().join(" ");
    prose
        .split(". ")
        .filter(|s| s.contains("is a default") || s.contains("are defaults"))
        .map(|s| {
            let names = s.split('`').skip(1).step_by(2).map(String::from).collect();
            (s.to_string(), names)
        })
        .collect()
}

#[test]
fn the_remediation_leaves_the_default_bindings_as_the_readme_says() {
    // The README names the defaults to leave; the code's list is the same.
    let said = readme_defaults();
    assert!(!said.is_empty(), "the README names no default binding");
    let mut named: Vec<String> = Vec::new();
    for (sentence, names) in &said {
        assert!(
            sentence.contains("leave it") || sentence.contains("leave them"),
            "{sentence}"
        );
        named.extend(names.iter().cloned());
    }
    named.sort();
    let mut code: Vec<String> = kubeanon::detect::severity::DEFAULT_BINDINGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    code.sort();
    assert_eq!(named, code, "README's defaults against DEFAULT_BINDINGS");
    // And the findings follow it: no removal on the default's rows, removal
    // on the critical row's binding.
    let all = findings(&ocsf_scan(&[], &sample()));
    let mut defaults = 0;
    for f in &all {
        let binding = f["unmapped"]["binding"].as_str().unwrap();
        let fix = f["remediation"]["desc"].as_str().unwrap_or("");
        if binding == "ClusterRoleBinding/system:public-info-viewer" {
            defaults += 1;
            assert!(!fix.to_lowercase().contains("remove"), "{fix}");
            assert!(
                fix.contains("Kubernetes default") && fix.contains("leave it as is"),
                "{fix}"
            );
        } else if binding == "ClusterRoleBinding/debug-anonymous" {
            assert_eq!(f["severity"], "Critical");
            assert!(
                fix.contains(
                    "remove system:anonymous and system:unauthenticated from its subjects"
                ),
                "{fix}"
            );
        }
    }
    assert!(defaults > 0, "the sample has rows allowed by the default");
    assert_eq!(
        all.iter()
            .filter(|f| f["unmapped"]["binding"] == "ClusterRoleBinding/debug-anonymous")
            .count(),
        1
    );
}

/// Attacker-chosen values everywhere a request can put them: still valid,
/// and nothing that could reorder or hide text reaches the line raw.
#[test]
fn hostile_values_stay_valid_and_hidden_characters_are_escaped() {
    let agents = [
        "evil\u{1b}[2J\u{1b}]0;title\u{7}\u{202e}txt.exe\u{9b}31m",
        "in\u{200b}vis\u{2028}ible\u{feff}\u{7f}\u{2066}",
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "",
    ];
    let mut input = String::new();
    for (n, agent) in agents.iter().enumerate() {
        let verb = ["get", "create", "\u{1b}", "patch"][n];
        let code = ["200", "x", "403", "201"][n];
        let at = [
            "tomorrow",
            "2026-11-29 01:02:03.5",
            "",
            "2026-11-29T01:02:03.000004Z",
        ][n];
        let event = json!({
            "user": {"username": "system:anonymous", "groups": ["system:unauthenticated", "\u{202e}x"], "uid": "\u{85}"},
            // X-Forwarded-For can put anything here: not an address.
            "sourceIPs": ["198.51.100.7", "not\u{2028}an ip", "::ffff:10.0.0.1"],
            "userAgent": agent, "verb": verb,
            "requestURI": format!("/api?q=\u{1b}[31m\u{2066}{n}&x=\u{0}"),
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": at,
            "objectRef": {"resource": "secr\u{202e}ets", "namespace": "\u{2028}", "name": "x\"y"},
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"a\u{1b}b/n s\" of Role \"r\" to Group \"g\""},
        });
        input.push_str(&format!("{event}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.jsonl");
    std::fs::write(&file, &input).unwrap();
    let out = ocsf_scan(&[], &file);
    let text = String::from_utf8(out.clone()).unwrap();
    let rows = text.lines().count();
    assert_eq!(rows, 4 * 3 * 2, "4 events, 3 addresses, 2 groups");
    assert_valid(&out, rows);
    for c in [
        '\u{1b}', '\u{7}', '\u{7f}', '\u{85}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200b}',
        '\u{2028}', '\u{feff}', '\0',
    ] {
        assert!(!text.contains(c), "{c:?} written raw");
    }
    let all = findings(&out);
    // Only addresses become src_endpoint.ip; the rest stays in unmapped.
    let ips: Vec<&Value> = all
        .iter()
        .filter_map(|f| f["evidences"][0].get("src_endpoint"))
        .map(|e| &e["ip"])
        .collect();
    assert_eq!(ips.len(), 16);
    assert!(
        all.iter()
            .any(|f| f["unmapped"]["src_ip"] == "not\u{2028}an ip")
    );
    // The binding's kubectl command quotes what a shell would misread.
    assert!(
        all.iter().all(|f| f["remediation"]["desc"]
            .as_str()
            .unwrap()
            .contains("kubectl -n 'n s' get rolebinding 'a\u{1b}b' -o yaml")),
        "{}",
        all[0]["remediation"]
    );
    // A row without a usable time is stamped with the run's time.
    let tomorrow = all
        .iter()
        .find(|f| f["unmapped"]["requestReceivedTimestamp"] == "tomorrow")
        .unwrap();
    assert!(tomorrow.get("start_time").is_none());
    assert!(tomorrow["time"].as_i64().unwrap() > 1_700_000_000_000);
    let spaced = all
        .iter()
        .find(|f| f["unmapped"]["requestReceivedTimestamp"] == "2026-11-29 01:02:03.5")
        .unwrap();
    assert_eq!(spaced["time"], 1_795_914_123_500i64);
}

#[test]
fn poll_findings_name_the_cloud_and_the_cluster_and_validate() {
    let group = "/aws/eks/ocsf-poll/cluster";
    support::create(group, &[support::AUDIT_STREAM]);
    let start = support::now_ms() - 30 * 60_000;
    let mut events: Vec<(i64, String)> = (0..20)
        .map(|i| (start + i * 1000, support::audit_event(i as u64, i % 2 == 0)))
        .collect();
    let allowed = std::fs::read_to_string(sample())
        .unwrap()
        .lines()
        .find(|l| l.contains("debug-anonymous") && l.contains("system:anonymous"))
        .unwrap()
        .to_string();
    events.push((start + 60_000, allowed));
    support::put(group, support::AUDIT_STREAM, &events);
    let window = [
        "--start",
        &support::rfc(start),
        "--end",
        &support::rfc(support::now_ms()),
    ];
    let rows = support::rows(&support::run(support::poll(group).args(window)).stdout);
    assert_eq!(rows.len(), 11);
    let out = support::run(support::poll(group).args(window).args(["--format", "ocsf"]));
    assert_valid(&out.stdout, 11);
    let all = findings(&out.stdout);
    for f in &all {
        assert_eq!(f["cloud"]["provider"], "AWS");
        assert_eq!(f["cloud"]["region"], support::REGION);
        assert_eq!(f["metadata"]["profiles"], json!(["cloud"]));
        assert_eq!(f["metadata"]["log_name"], group);
        let cluster = f["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Kubernetes cluster")
            .expect("the cluster");
        assert_eq!(cluster["name"], "ocsf-poll");
    }
    // The finding's uid is the row's id.
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut uids: Vec<&str> = all
        .iter()
        .map(|f| f["finding_info"]["uid"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    uids.sort_unstable();
    assert_eq!(ids, uids);
    // poll names the account (the caller's: moto's default).
    assert!(
        all.iter()
            .all(|f| f["cloud"]["account"]["uid"] == "123456789012")
    );
}

/// Columns are found by name: a command that adds an `account` column, in
/// any place among its own, gets `cloud.account.uid`.
#[test]
fn an_account_column_becomes_the_cloud_account() {
    use kubeanon::detect::{Detector, Origin, Rules};
    use kubeanon::output::{Format, Parts, Rows, Style};
    let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
    for line in std::fs::read_to_string(sample()).unwrap().lines() {
        det.feed(line.as_bytes(), Origin::default());
    }
    let findings = det.finish().0.into_findings();
    let rows = Rows {
        findings: &findings,
        fixed: &[
            ("account", "123456789012"),
            ("cluster", "prod"),
            ("log_group", "/aws/eks/prod/cluster"),
            ("region", "eu-west-1"),
        ],
        id_label: Some("eu-west-1\n/aws/eks/prod/cluster"),
        anonymous_health_only: false,
    };
    let mut out = Vec::new();
    let mut parts = Parts::new(Style::plain(Format::Ocsf), None);
    parts.write(&rows, &mut out).unwrap();
    parts.finish(&rows, &mut out).unwrap();
    assert_valid(&out, 28);
    for f in findings_of(&out) {
        assert_eq!(
            f["cloud"],
            json!({"provider": "AWS", "region": "eu-west-1", "account": {"uid": "123456789012"}})
        );
    }
}

fn findings_of(out: &[u8]) -> Vec<Value> {
    findings(out)
}

#[test]
fn each_rule_is_named_for_what_it_is_and_a_refusal_has_no_user() {
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/eks-1.33-audit-sample.jsonl");
    let out = ocsf_scan(&[], &sample);
    let all = findings(&out);
    // The 1.33 sample's 97 rows (README: The two commands).
    assert_valid(&out, 97);
    let of_rule = |rule: &str| -> Vec<&Value> {
        all.iter()
            .filter(|f| f["unmapped"]["rule"] == rule)
            .collect()
    };
    let refused = of_rule("unauthenticated");
    assert_eq!(refused.len(), 84);
    for f in &refused {
        let info = &f["finding_info"];
        assert_eq!(info["analytic"]["name"], "Unauthenticated request refused");
        assert_eq!(info["types"], json!(["Unauthenticated request refused"]));
        let title = info["title"].as_str().unwrap();
        assert!(title.starts_with("Unauthenticated "), "{title}");
        assert!(!title.contains("Anonymous"), "{title}");
        assert!(f["evidences"][0].get("actor").is_none(), "no user: {f}");
    }
    let bearer = refused
        .iter()
        .find(|f| f["unmapped"]["credential"] == "bearer")
        .expect("a refused bearer token");
    assert!(
        bearer["finding_info"]["title"]
            .as_str()
            .unwrap()
            .ends_with("credentials refused: bearer")
    );
    for f in of_rule("escu") {
        assert_eq!(
            f["finding_info"]["analytic"]["name"],
            "Kubernetes AWS detect suspicious kubectl calls"
        );
        assert_eq!(
            f["evidences"][0]["actor"]["user"]["name"],
            "system:anonymous"
        );
    }
    let cut = of_rule("truncated");
    assert_eq!(cut.len(), 1);
    assert_eq!(
        cut[0]["finding_info"]["analytic"]["uid"],
        "kubeanon-truncated"
    );
}
