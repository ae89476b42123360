//! Each cluster's Kubernetes version, against moto's server: EKS's
//! DescribeCluster says it (1.31 and 1.33 here), poll's rows carry it in
//! `kubernetes_version`, doctor says what anonymous can reach there; a log
//! group EKS does not know, and a DescribeCluster that fails, give
//! `unknown`, one note on stderr, and the run goes on.

mod support;

use std::process::{Command, Output};

use support::fleet::*;
use support::proxy::{Fault, Proxy};
use support::*;

const NEW_REACH: &str = "anonymous reaches only /healthz, /livez, /readyz; other unauthenticated requests are refused (401) and reported by the `unauthenticated` rule";
const OLD_REACH: &str = "anonymous reaches whatever RBAC grants system:anonymous / system:unauthenticated (ESCU's rule)";

/// In `account` (us-east-1): `old` at Kubernetes 1.31 and `new` at 1.33,
/// audit logging on, two anonymous events each.
fn two_versions(account: &str, old: &str, new: &str, seed: u64) {
    let (o, n) = (old.to_string(), new.to_string());
    build_at(
        account,
        REGION,
        &[
            cluster(old, true, seed, 2),
            cluster(new, true, seed + 10, 2),
        ],
        &[],
        move |name| {
            if name == o {
                Some("1.31")
            } else if name == n {
                Some("1.33")
            } else {
                None
            }
        },
    );
}

fn in_account(endpoint: &str, account: &str, args: &[&str]) -> Command {
    let mut cmd = kubeanon(endpoint, args);
    cmd.args(["--role-arn", &role(account), "--region", REGION]);
    cmd
}

fn poll_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["poll", "--since", "30m", "--max-rps", "50"];
    args.extend_from_slice(extra);
    args
}

/// Each row's (cluster, kubernetes_version), deduplicated.
fn versions(out: &Output) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rows(&out.stdout)
        .iter()
        .map(|r| {
            (
                r["cluster"].as_str().unwrap().to_string(),
                r["kubernetes_version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn describe_calls(proxy: &Proxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.rest && r.target.starts_with("GET /clusters/"))
        .map(|r| r.target)
        .collect()
}

fn version_notes(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("Kubernetes version unknown"))
        .map(String::from)
        .collect()
}

#[test]
fn poll_rows_and_doctor_lines_name_each_clusters_version_and_what_anonymous_reaches() {
    let account = "100000000071";
    two_versions(account, "v-old", "v-new", 71_000);
    let proxy = Proxy::start(&moto().endpoint);
    // ndjson rows of both clusters, each with its version.
    let poll_both = |proxy: &Proxy, which: &[&str]| {
        let mut args = poll_args(which);
        args.extend(["--format", "ndjson"]);
        let out = ok(in_account(&proxy.endpoint, account, &args)
            .output()
            .unwrap());
        assert_eq!(
            versions(&out),
            [
                ("v-new".into(), "1.33".into()),
                ("v-old".into(), "1.31".into())
            ]
        );
        out
    };

    // --cluster: one DescribeCluster per cluster per run, the version on
    // every row.
    let named = ["--cluster", "v-old", "--cluster", "v-new"];
    let out = poll_both(&proxy, &named);
    // Anonymous `/version` requests: on 1.33 an ESCU row for a path that
    // is not a health path is noted as one EKS should have refused; on
    // 1.31 RBAC decides, and nothing is noted.
    for r in rows(&out.stdout) {
        assert_eq!(r["rule"], "escu");
        let note = r["note"].as_str().unwrap();
        if r["cluster"] == "v-new" {
            assert!(
                note.starts_with("EKS 1.32 and later let anonymous reach only /healthz, /livez and /readyz: this request should have been refused"),
                "{note}"
            );
        } else {
            assert_eq!(note, "0");
        }
    }
    assert_eq!(rows(&out.stdout).len(), 4, "{}", stderr(&out));
    assert!(version_notes(&out).is_empty(), "{}", stderr(&out));
    let mut calls = describe_calls(&proxy);
    calls.sort();
    assert_eq!(calls, ["GET /clusters/v-new", "GET /clusters/v-old"]);

    // --all-clusters: discovery's DescribeCluster says it; no second call.
    proxy.clear();
    poll_both(&proxy, &["--all-clusters", "--cluster-match", "v-*"]);
    assert_eq!(
        describe_calls(&proxy).len(),
        2,
        "{:?}",
        describe_calls(&proxy)
    );

    // csv: the new column after the others, before the id.
    let mut args = poll_args(&named);
    args.extend(["--format", "csv"]);
    let out = ok(in_account(&moto().endpoint, account, &args)
        .output()
        .unwrap());
    let csv = String::from_utf8(out.stdout).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with(",cluster,log_group,region,account,kubernetes_version,id"),
        "{header}"
    );

    // doctor, one cluster at a time and the fleet, text and ndjson.
    for discovery in [
        &named[..],
        &["--all-clusters", "--cluster-match", "v-*"][..],
    ] {
        let mut args = vec!["doctor"];
        args.extend_from_slice(discovery);
        let text = in_account(&moto().endpoint, account, &args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&text.stdout);
        assert_eq!(text.status.code(), Some(0), "{out}");
        for (cluster, clause) in [
            ("v-old", format!("Kubernetes 1.31: {OLD_REACH}")),
            ("v-new", format!("Kubernetes 1.33: {NEW_REACH}")),
        ] {
            let line = out
                .lines()
                .find(|l| l.contains(&format!("cluster {cluster}:")))
                .unwrap_or_else(|| panic!("no line for {cluster}:\n{out}"));
            assert!(line.starts_with("ok    "), "{line}");
            assert!(
                line.ends_with(&format!("logs:FilterLogEvents is allowed; {clause}")),
                "{line}"
            );
        }
        assert!(version_notes(&text).is_empty(), "{}", stderr(&text));

        args.extend(["--format", "ndjson"]);
        let json = in_account(&moto().endpoint, account, &args)
            .output()
            .unwrap();
        assert_eq!(json.status.code(), Some(0));
        let lines = rows(&json.stdout);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for l in &lines {
            let (version, health_only, reach) = match l["cluster"].as_str().unwrap() {
                "v-old" => ("1.31", false, OLD_REACH),
                "v-new" => ("1.33", true, NEW_REACH),
                other => panic!("{other}"),
            };
            assert_eq!(l["kubernetes_version"], version);
            assert_eq!(l["anonymous_health_only"], health_only);
            assert_eq!(l["anonymous_reach"], reach);
            assert_eq!(l["status"], "ok");
        }
    }
}

#[test]
fn a_log_group_eks_does_not_know_is_version_unknown_with_one_note() {
    // The caller's own account: two EKS-named log groups with no cluster
    // (moto's demo is one) and a log group that is not an EKS one.
    let groups = [
        "/aws/eks/ghost-a/cluster",
        "/aws/eks/ghost-b/cluster",
        "/custom/bare-audit",
    ];
    for (i, g) in groups.iter().enumerate() {
        create(g, &[AUDIT_STREAM]);
        let at = now_ms() - 5 * 60_000;
        put(
            g,
            AUDIT_STREAM,
            &[
                (at, audit_event(72_000 + i as u64 * 10, true)),
                (at + 1000, audit_event(72_001 + i as u64 * 10, true)),
            ],
        );
    }
    let proxy = Proxy::start(&moto().endpoint);
    let mut args = poll_args(&["--format", "ndjson"]);
    for g in groups {
        args.extend(["--log-group", g]);
    }
    let out = kubeanon(&proxy.endpoint, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        versions(&out),
        [
            ("/custom/bare-audit".into(), "unknown".into()),
            ("ghost-a".into(), "unknown".into()),
            ("ghost-b".into(), "unknown".into())
        ]
    );
    assert_eq!(rows(&out.stdout).len(), 6);
    let notes = version_notes(&out);
    assert_eq!(notes.len(), 1, "one line for the run: {}", stderr(&out));
    assert!(
        notes[0].starts_with(
            "kubeanon poll: note: Kubernetes version unknown for 3 cluster(s) \
             (1: not an EKS control-plane log group; 2: EKS has no cluster of that name)"
        ),
        "{}",
        notes[0]
    );
    // EKS is not asked about a log group that is not an EKS one.
    let mut calls = describe_calls(&proxy);
    calls.sort();
    assert_eq!(calls, ["GET /clusters/ghost-a", "GET /clusters/ghost-b"]);

    let mut args = vec!["doctor"];
    for g in groups {
        args.extend(["--log-group", g]);
    }
    let doctor = kubeanon(&moto().endpoint, &args).output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(0), "{text}");
    for (subject, why) in [
        ("cluster ghost-a:", "EKS has no cluster of that name"),
        (
            "log group /custom/bare-audit:",
            "not an EKS control-plane log group",
        ),
    ] {
        let line = text.lines().find(|l| l.contains(subject)).unwrap();
        assert!(
            line.ends_with(&format!(
                "; what anonymous can reach is not known: the Kubernetes version is unknown ({why})"
            )),
            "{line}"
        );
    }
    assert_eq!(version_notes(&doctor).len(), 1, "{}", stderr(&doctor));
}

#[test]
fn a_describe_cluster_that_fails_is_version_unknown_and_the_run_goes_on() {
    let account = "100000000073";
    two_versions(account, "f-denied", "f-throttled", 73_000);
    build_at(
        account,
        REGION,
        &[cluster("f-fine", true, 73_100, 2)],
        &[],
        |_| Some("1.32"),
    );
    let proxy = Proxy::start(&moto().endpoint);
    proxy.set_rest_plan(|_, target| match target {
        "GET /clusters/f-denied" => Fault::Reject(
            403,
            "AccessDeniedException",
            "User: arn:aws:sts::100000000073:assumed-role/kubeanon-reader/kubeanon is not authorized to perform: eks:DescribeCluster",
        ),
        "GET /clusters/f-throttled" => Fault::Throttle,
        _ => Fault::Forward,
    });
    let named = [
        "--cluster",
        "f-denied",
        "--cluster",
        "f-throttled",
        "--cluster",
        "f-fine",
    ];
    let mut args = poll_args(&named);
    args.extend(["--format", "ndjson"]);
    let out = in_account(&proxy.endpoint, account, &args)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        versions(&out),
        [
            ("f-denied".into(), "unknown".into()),
            ("f-fine".into(), "1.32".into()),
            ("f-throttled".into(), "unknown".into())
        ]
    );
    assert_eq!(rows(&out.stdout).len(), 6, "every cluster is read: {err}");
    let notes = version_notes(&out);
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].contains(
            "for 2 cluster(s) (1: eks:DescribeCluster was denied; 1: eks:DescribeCluster was throttled)"
        ),
        "{}",
        notes[0]
    );
    // Named, not dumped: AWS's message (with the role's ARN) stays out.
    assert!(!err.contains("not authorized"), "{err}");
    assert!(!err.contains("assumed-role"), "{err}");

    let mut args = vec!["doctor"];
    args.extend_from_slice(&named);
    let doctor = in_account(&proxy.endpoint, account, &args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(0), "{text}");
    let line = |c: &str| {
        text.lines()
            .find(|l| l.contains(&format!("cluster {c}:")))
            .unwrap()
            .to_string()
    };
    assert!(
        line("f-denied")
            .ends_with("the Kubernetes version is unknown (eks:DescribeCluster was denied)"),
        "{text}"
    );
    assert!(
        line("f-fine").ends_with(&format!("Kubernetes 1.32: {NEW_REACH}")),
        "{text}"
    );
    let notes = version_notes(&doctor);
    assert_eq!(notes.len(), 1, "{}", stderr(&doctor));
    assert!(
        notes[0].starts_with("kubeanon doctor: note: "),
        "{}",
        notes[0]
    );
}
