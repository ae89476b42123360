//! The fleet in one run, against moto's server: accounts reached through
//! assumed roles (moto puts what the assumed credentials create in the
//! role's account), two regions, EKS clusters with audit logging on and
//! off, a deleted cluster whose log group remains, decoy streams.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use support::fleet::*;
use support::proxy::Proxy;
use support::*;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn poll_fleet(endpoint: &str, accounts: &[&str], extra: &[&str]) -> Command {
    let mut cmd = kubeanon(endpoint, &["poll", "--all-clusters"]);
    for a in accounts {
        cmd.args(["--role-arn", &role(a)]);
    }
    cmd.args([
        "--region",
        &REGIONS.join(","),
        "--since",
        "30m",
        "--max-rps",
        "50",
    ])
    .args(extra);
    cmd
}

/// The standard fleet of a test: in each account and region two clusters
/// with audit logging on, one with it off, one deleted whose log group
/// remains. Returns the events of each readable cluster by unit.
fn standard_fleet(
    accounts: &[&str],
    seed: u64,
) -> BTreeMap<(String, String, String), Vec<(i64, String)>> {
    let mut expected = BTreeMap::new();
    for (a, account) in accounts.iter().enumerate() {
        for (r, region) in REGIONS.iter().enumerate() {
            let n = seed + (a * 100 + r * 50) as u64;
            let on = [
                cluster("prod-api", true, n, 3),
                cluster("dev-tools", true, n + 10, 1),
            ];
            let off = cluster("prod-legacy", false, n + 20, 2);
            let gone = cluster("old-batch", true, n + 30, 2);
            build(
                account,
                region,
                &[on[0].clone(), on[1].clone(), off],
                &[gone],
            );
            for c in on {
                expected.insert(
                    (account.to_string(), region.to_string(), c.name.clone()),
                    c.events,
                );
            }
        }
    }
    expected
}

#[test]
fn a_fleet_of_accounts_and_regions_is_read_in_one_run_and_its_blind_clusters_named() {
    let accounts = ["100000000001", "100000000002"];
    let expected = standard_fleet(&accounts, 1000);
    let out = poll_fleet(&moto().endpoint, &accounts, &["--format", "ndjson"])
        .output()
        .unwrap();
    let err = stderr(&out);
    // Every audit-off cluster is a failure of its own, named with the
    // command that fixes it: exit 4, the others delivered.
    assert_eq!(out.status.code(), Some(4), "{err}");
    for account in accounts {
        for region in REGIONS {
            assert!(
                err.contains(&format!(
                    "error: cluster prod-legacy (account {account}, {region}): audit logging is off"
                )),
                "{err}"
            );
            assert!(
                err.contains(&format!(
                    "cluster old-batch (account {account}, {region}) no longer exists; its log group /aws/eks/old-batch/cluster remains and is not read"
                )),
                "{err}"
            );
        }
    }
    assert!(
        err.contains("update-cluster-config --name prod-legacy --region eu-west-1"),
        "{err}"
    );
    assert!(
        err.contains("4 failed; 8 of 8 log groups were delivered"),
        "{err}"
    );
    // Each readable cluster's rows are exactly `kubeanon scan` of its
    // events: no decoys, nothing from the deleted cluster, nothing mixed
    // across accounts or regions.
    let got = by_unit(&rows(&out.stdout));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (unit, events) in &expected {
        assert_eq!(totals(&got[unit]), scan(events), "{unit:?}");
        for r in &got[unit] {
            assert_eq!(r["log_group"], format!("/aws/eks/{}/cluster", unit.2));
        }
    }
    // The same event in two accounts is two rows with two ids.
    let ids: std::collections::BTreeSet<&str> = got
        .values()
        .flatten()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), got.values().map(Vec::len).sum::<usize>());
    assert!(
        err.contains("2 account(s) x 2 region(s), 8 log group(s)"),
        "{err}"
    );

    // A deleted cluster's log group is still read when named.
    let named = ok(kubeanon(
        &moto().endpoint,
        &[
            "poll",
            "--cluster",
            "old-batch",
            "--role-arn",
            &role(accounts[0]),
            "--region",
            "eu-west-1",
            "--since",
            "30m",
            "--format",
            "ndjson",
        ],
    )
    .output()
    .unwrap());
    let rows = rows(&named.stdout);
    assert_eq!(totals(&rows).values().sum::<u64>(), 2, "{}", stderr(&named));
    assert!(rows.iter().all(|r| r["account"] == accounts[0]));
}

#[test]
fn cluster_match_and_the_checkpoint_keep_each_account_apart() {
    let accounts = ["100000000011", "100000000012"];
    let expected = standard_fleet(&accounts, 3000);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let cp = cp.to_str().unwrap();
    let first = poll_fleet(
        &moto().endpoint,
        &accounts,
        &["--cluster-match", "prod-a*", "--checkpoint", cp],
    )
    .output()
    .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let got = by_unit(&rows(&first.stdout));
    assert_eq!(got.len(), 4, "prod-api in 2 accounts x 2 regions");
    for (unit, r) in &got {
        assert_eq!(unit.2, "prod-api");
        assert_eq!(totals(r), scan(&expected[unit]));
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cp).unwrap()).unwrap();
    let mut keys: Vec<(String, String)> = state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["account"].as_str().unwrap().to_string(),
                g["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 4);
    keys.dedup();
    assert_eq!(keys.len(), 4, "one entry per account and region");

    // The next run: nothing new anywhere.
    let second = poll_fleet(
        &moto().endpoint,
        &accounts,
        &["--cluster-match", "prod-a*", "--checkpoint", cp],
    )
    .output()
    .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(rows(&second.stdout).is_empty(), "{}", stderr(&second));
    assert_eq!(summary_number(&second.stderr, "already"), 12);

    // A pattern that selects nothing is said, never a quiet success.
    let none = poll_fleet(
        &moto().endpoint,
        &accounts,
        &["--cluster-match", "staging-*"],
    )
    .output()
    .unwrap();
    assert_eq!(none.status.code(), Some(0), "{}", stderr(&none));
    assert!(
        stderr(&none).contains(&format!(
            "note: no EKS cluster matching staging-* in account {}, eu-west-1",
            accounts[1]
        )),
        "{}",
        stderr(&none)
    );
}

#[test]
fn an_account_whose_role_cannot_be_assumed_fails_alone() {
    let accounts = ["100000000021", "100000000022"];
    let expected = standard_fleet(&accounts, 5000);
    let proxy = Proxy::start(&moto().endpoint);
    proxy.deny_assume_role(accounts[1]);
    let out = poll_fleet(
        &proxy.endpoint,
        &accounts,
        &["--cluster-match", "prod-api", "--format", "ndjson"],
    )
    .output()
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!(
            "error: account {}: cannot assume role {}",
            accounts[1],
            role(accounts[1])
        )),
        "{err}"
    );
    assert!(err.contains("examples/iam/"), "{err}");
    let got = by_unit(&rows(&out.stdout));
    assert_eq!(got.len(), 2, "{err}");
    for (unit, r) in &got {
        assert_eq!(unit.0, accounts[0]);
        assert_eq!(totals(r), scan(&expected[unit]));
    }
}

#[test]
fn each_account_and_region_has_its_own_request_pace() {
    let accounts = ["100000000031", "100000000032"];
    for account in accounts {
        for region in REGIONS {
            let clusters: Vec<Cluster> = (0..4)
                .map(|i| cluster(&format!("c{i}"), true, 7000 + i, 1))
                .collect();
            build(account, region, &clusters, &[]);
        }
    }
    let proxy = Proxy::start(&moto().endpoint);
    // 4 clusters a scope, at least 2 calls each, at 4 requests/s a scope.
    let began = Instant::now();
    let out = poll_fleet(
        &proxy.endpoint,
        &accounts,
        &["--max-rps", "4", "--page-size", "1"],
    )
    .output()
    .unwrap();
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let filter: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.target.ends_with("FilterLogEvents"))
        .collect();
    let mut by_scope: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for r in &filter {
        by_scope.entry(r.scope.clone()).or_default().push(r.at);
    }
    assert_eq!(
        by_scope.len(),
        4,
        "one reader per account and region: {:?}",
        by_scope.keys()
    );
    let per_second = |times: &[Instant]| {
        times
            .iter()
            .map(|t| {
                times
                    .iter()
                    .filter(|u| **u >= *t && u.duration_since(*t).as_millis() < 1000)
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    // Requests leave on their slots but arrive as the machine lets them:
    // one that arrives late shares a second with the next four (the
    // throttling test in tests/faults.rs allows the same one).
    for (scope, times) in &by_scope {
        assert!(per_second(times) <= 5, "{scope}: {}", per_second(times));
    }
    // The scopes' budgets are their own: together they went at least
    // twice as fast as one scope may.
    let all: Vec<Instant> = filter.iter().map(|r| r.at).collect();
    assert!(per_second(&all) >= 10, "{}", per_second(&all));
    eprintln!(
        "{} FilterLogEvents calls over 4 scopes in {took:?}",
        filter.len()
    );
}

/// Assumed credentials that expire during a run are renewed (the SDK's
/// identity cache asks STS again before they lapse), and the run goes on.
/// Sessions of 12 s (`KUBEANON_TEST_ROLE_SECONDS`; AWS's minimum is 900)
/// over a run paced to last about 20 s.
#[test]
fn assumed_credentials_are_renewed_when_they_expire_mid_run() {
    require_test_hooks();
    let account = "100000000061";
    let clusters: Vec<Cluster> = (0..4)
        .map(|i| cluster(&format!("slow-{i}"), true, 11_000 + i * 10, 2))
        .collect();
    build(account, "us-east-1", &clusters, &[]);
    // The same run with sessions of 12 s and of an hour: AssumeRole calls.
    let run = |seconds: &str| {
        let proxy = Proxy::start(&moto().endpoint);
        let began = Instant::now();
        let out = kubeanon(
            &proxy.endpoint,
            &[
                "poll",
                "--all-clusters",
                "--role-arn",
                &role(account),
                "--region",
                "us-east-1",
                "--since",
                "30m",
                "--max-rps",
                "0.5",
                "--format",
                "ndjson",
            ],
        )
        .env("KUBEANON_TEST_ROLE_SECONDS", seconds)
        .output()
        .unwrap();
        let took = began.elapsed();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(took.as_secs() >= 14, "the run outlived a session: {took:?}");
        let got = by_unit(&rows(&out.stdout));
        assert_eq!(got.len(), 4);
        for c in &clusters {
            let unit = (account.to_string(), "us-east-1".to_string(), c.name.clone());
            assert_eq!(totals(&got[&unit]), scan(&c.events), "{unit:?}");
        }
        let assumed = proxy
            .requests()
            .iter()
            .filter(|r| r.body.contains("Action=AssumeRole") && r.body.contains(account))
            .count();
        (assumed, took)
    };
    let (short, took) = run("12");
    let (long, _) = run("3600");
    assert!(
        short > long,
        "12 s sessions over {took:?}: {short} AssumeRole calls; hour-long ones: {long}"
    );
    eprintln!(
        "AssumeRole calls over {took:?}: {short} with 12 s sessions, {long} with hour-long ones"
    );
}

#[test]
fn doctor_reports_the_fleets_coverage_and_fails_on_blind_clusters() {
    let accounts = ["100000000041"];
    standard_fleet(&accounts, 9000);
    let args = [
        "doctor",
        "--all-clusters",
        "--role-arn",
        &role(accounts[0]),
        "--region",
        "us-east-1,eu-west-1",
    ];
    let text = kubeanon(&moto().endpoint, &args).output().unwrap();
    let out = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(1), "{out}");
    for region in REGIONS {
        let at = format!("account {}, {region}", accounts[0]);
        for (mark, rest) in [
            (
                "ok    ",
                "cluster dev-tools: audit logging on, log group /aws/eks/dev-tools/cluster exists, newest audit event",
            ),
            ("ok    ", "cluster prod-api: audit logging on"),
            (
                "FAIL  ",
                "cluster prod-legacy: audit logging off; nothing it is asked can be seen",
            ),
            (
                "note  ",
                "cluster old-batch: log group /aws/eks/old-batch/cluster exists; cluster deleted, log group remains",
            ),
        ] {
            let line = format!("{mark}{at} {rest}");
            assert!(out.contains(&line), "{line:?} not in:\n{out}");
        }
    }
    assert!(out.contains("logs:FilterLogEvents is allowed"), "{out}");

    let json = kubeanon(&moto().endpoint, &args)
        .args(["--format", "ndjson"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let lines = rows(&json.stdout);
    assert_eq!(lines.len(), 8, "4 clusters x 2 regions");
    let status = |cluster: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["cluster"] == cluster)
            .map(|l| l["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status("prod-api"), ["ok", "ok"]);
    assert_eq!(status("prod-legacy"), ["blind", "blind"]);
    assert_eq!(status("old-batch"), ["deleted", "deleted"]);
    for l in lines.iter().filter(|l| l["cluster"] == "prod-api") {
        assert_eq!(l["audit_logging"], "on");
        assert_eq!(l["log_group_present"], true);
        assert_eq!(l["filter_allowed"], true);
        assert!(l["newest_audit_event_age_s"].as_i64().unwrap() < 30 * 60);
        assert_eq!(l["account"], accounts[0]);
    }

    // Only the healthy part of the fleet: exit 0.
    let healthy = kubeanon(&moto().endpoint, &args)
        .args(["--cluster-match", "prod-api", "--cluster-match", "dev-*"])
        .output()
        .unwrap();
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stdout)
    );
}

/// The benchmark fleet (`benches/fleet.sh` prints its numbers): 2 accounts
/// x 2 regions x 50 clusters, one anonymous and two normal events each, at
/// the default pace. Every cluster read, each exactly, in one run; in
/// steady state at most two FilterLogEvents calls per cluster.
#[test]
fn a_fleet_of_200_clusters_is_read_in_one_run() {
    let accounts = ["100000000051", "100000000052"];
    let mut expected = BTreeMap::new();
    for account in accounts {
        for region in REGIONS {
            let clusters: Vec<Cluster> = (0..50)
                .map(|i| cluster(&format!("team-{i:02}"), true, 20_000 + i, 1))
                .collect();
            build(account, region, &clusters, &[]);
            for c in clusters {
                expected.insert(
                    (account.to_string(), region.to_string(), c.name.clone()),
                    c.events,
                );
            }
        }
    }
    let proxy = Proxy::start(&moto().endpoint);
    let mut cmd = kubeanon(&proxy.endpoint, &["poll", "--all-clusters"]);
    for a in accounts {
        cmd.args(["--role-arn", &role(a)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    cmd.args([
        "--region",
        &REGIONS.join(","),
        "--since",
        "30m",
        "--format",
        "ndjson",
    ])
    .arg("--checkpoint")
    .arg(&cp);
    let began = Instant::now();
    let out = cmd.output().unwrap();
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = by_unit(&rows(&out.stdout));
    assert_eq!(got.len(), 200);
    for (unit, events) in &expected {
        assert_eq!(totals(&got[unit]), scan(events), "{unit:?}");
    }
    let count = |reqs: &[support::proxy::Request], what: &str| {
        reqs.iter().filter(|r| r.target.ends_with(what)).count()
    };
    let first = proxy.requests();
    let filter_calls = count(&first, "FilterLogEvents");
    let other = first.len() - filter_calls;
    // The steady state: a second run with nothing new.
    proxy.clear();
    let began = Instant::now();
    let again = cmd.output().unwrap();
    let took_again = began.elapsed();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(rows(&again.stdout).is_empty());
    let second = proxy.requests();
    let steady = count(&second, "FilterLogEvents");
    assert!(
        steady <= 2 * 200,
        "{steady} FilterLogEvents calls for 200 clusters"
    );
    // Calls other than FilterLogEvents, by service (the SigV4 scope's).
    let others = |reqs: &[support::proxy::Request]| {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for r in reqs
            .iter()
            .filter(|r| !r.target.ends_with("FilterLogEvents"))
        {
            let service = r.scope.rsplit('/').next().unwrap_or("?").to_string();
            *by.entry(service).or_default() += 1;
        }
        by
    };
    eprintln!(
        "fleet of 200 clusters (2 accounts x 2 regions x 50), --max-rps 4: \
         first run {:.1} s, {filter_calls} FilterLogEvents + {other} other calls {:?}; \
         second run {:.1} s, {steady} FilterLogEvents + {} other calls {:?}",
        took.as_secs_f64(),
        others(&first),
        took_again.as_secs_f64(),
        second.len() - steady,
        others(&second)
    );
}
