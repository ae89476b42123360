//! `--deliver securityhub`: ASFF findings imported into moto's Security
//! Hub, in each account of a fleet with that account's assumed role.
//! moto imports and updates by `Id`, but enforces neither the 100-finding
//! and 240 KB limits nor that a finding's `AwsAccountId` is the caller's:
//! these tests check those themselves (through a recording proxy, and by
//! reading each account's findings with its own credentials).

mod support;

use std::collections::BTreeMap;

use aws_sdk_securityhub::types::AwsSecurityFinding;
use serde_json::Value;
use support::fleet::*;
use support::proxy::Proxy;
use support::*;

const REGION: &str = "us-east-1";
const ESCU: &str = "042a3d32-8318-4763-9679-09db2644a8f2";

fn fleet_poll(endpoint: &str, accounts: &[&str], window: (i64, i64), extra: &[&str]) -> Output {
    let mut cmd = kubeanon(endpoint, &["poll", "--all-clusters"]);
    for a in accounts {
        cmd.args(["--role-arn", &role(a)]);
    }
    cmd.args([
        "--region",
        REGION,
        "--start",
        &rfc(window.0),
        "--end",
        &rfc(window.1),
        "--max-rps",
        "50",
    ])
    .args(extra)
    .output()
    .unwrap()
}

use std::process::Output;

/// Every finding in (account, region), read with the account's own
/// credentials.
fn findings(account: &str, region: &str) -> Vec<AwsSecurityFinding> {
    // The SDK's finding type is large (every resource type's details): a
    // debug build's frames overflow a test thread's 2 MiB.
    let (account, region) = (account.to_string(), region.to_string());
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || read_findings(&account, &region))
        .unwrap()
        .join()
        .unwrap()
}

fn read_findings(account: &str, region: &str) -> Vec<AwsSecurityFinding> {
    rt().block_on(async {
        let hub = aws_sdk_securityhub::Client::new(&config(account, region).await);
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let out = hub
                .get_findings()
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .expect("GetFindings");
            all.extend(out.findings().iter().cloned());
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return all;
            }
        }
    })
}

fn window() -> (i64, i64) {
    (now_ms() - 30 * 60_000, now_ms() - 60_000)
}

#[test]
fn each_row_is_one_finding_in_its_own_account_and_a_rerun_updates_them() {
    let accounts = ["300000000001", "300000000002"];
    for (i, a) in accounts.iter().enumerate() {
        build(
            a,
            REGION,
            &[
                cluster("hub-api", true, 5000 + i as u64 * 100, 3),
                cluster("hub-jobs", true, 5050 + i as u64 * 100, 2),
            ],
            &[],
        );
    }
    let w = window();
    // The rows an ndjson run over the window gives.
    let out = ok(fleet_poll(
        &moto().endpoint,
        &accounts,
        w,
        &["--format", "ndjson"],
    ));
    let want: BTreeMap<String, Value> = rows(&out.stdout)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(want.len(), 10);

    let out = ok(fleet_poll(
        &moto().endpoint,
        &accounts,
        w,
        &["--deliver", "securityhub"],
    ));
    assert!(
        stderr(&out).contains("delivered to Security Hub"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "rows go to Security Hub only");
    let mut seen = 0;
    for account in accounts {
        let got = findings(account, REGION);
        let mine: Vec<&Value> = want.values().filter(|r| r["account"] == account).collect();
        assert_eq!(got.len(), mine.len(), "account {account}");
        for f in &got {
            let row = &want[f.id().unwrap()];
            // Every field ASFF requires.
            assert_eq!(f.schema_version(), Some("2018-10-08"));
            assert_eq!(
                f.product_arn(),
                Some(
                    format!("arn:aws:securityhub:{REGION}:{account}:product/{account}/default")
                        .as_str()
                )
            );
            assert_eq!(
                f.aws_account_id(),
                Some(account),
                "imported by its own account"
            );
            assert_eq!(f.generator_id(), Some(ESCU));
            assert_eq!(f.types(), ["TTPs/Initial Access", "Unusual Behaviors/User"]);
            for t in [
                f.created_at(),
                f.updated_at(),
                f.first_observed_at(),
                f.last_observed_at(),
            ] {
                assert!(chrono::DateTime::parse_from_rfc3339(t.unwrap()).is_ok());
            }
            let severity = row["severity"].as_str().unwrap().to_ascii_uppercase();
            assert_eq!(f.severity().unwrap().label().unwrap().as_str(), severity);
            assert_eq!(
                f.finding_provider_fields()
                    .unwrap()
                    .severity()
                    .unwrap()
                    .label()
                    .unwrap()
                    .as_str(),
                severity
            );
            assert!(f.title().unwrap().contains("/version"), "{:?}", f.title());
            assert!(!f.description().unwrap().is_empty());
            let cluster = &f.resources()[0];
            assert_eq!(cluster.r#type(), Some("AwsEksCluster"));
            assert_eq!(
                cluster.id(),
                Some(
                    format!(
                        "arn:aws:eks:{REGION}:{account}:cluster/{}",
                        row["cluster"].as_str().unwrap()
                    )
                    .as_str()
                )
            );
            assert_eq!(f.region(), Some(REGION));
            assert_eq!(
                f.network().unwrap().source_ipv4(),
                row["src_ip"].as_str(),
                "the source address"
            );
            let fields = f.product_fields().unwrap();
            for column in [
                "src_ip",
                "userAgent",
                "requestURI",
                "rule",
                "count",
                "cluster",
            ] {
                let value = match &row[column] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                assert_eq!(fields.get(column), Some(&value), "{column}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, want.len());

    // The same window again: the same findings, updated, none added.
    ok(fleet_poll(
        &moto().endpoint,
        &accounts,
        w,
        &["--deliver", "securityhub"],
    ));
    for account in accounts {
        let mine = want.values().filter(|r| r["account"] == account).count();
        assert_eq!(findings(account, REGION).len(), mine);
    }
}

#[test]
fn batches_stay_within_the_limits_and_a_long_finding_is_shortened_not_dropped() {
    let account = "300000000003";
    // 249 anonymous requests, then one whose user agent is 200 KB.
    let mut c = cluster("hub-storm", true, 7000, 249);
    let now = now_ms();
    c.events = (0..249)
        .map(|i| {
            (
                now - 20 * 60_000 + i * 1000,
                audit_event(7000 + i as u64, true),
            )
        })
        .collect();
    let long_agent = "A".repeat(200_000);
    let long = audit_event(7500, true).replace("python-requests/2.31.0", &long_agent);
    c.events.push((now - 5 * 60_000, long));
    build(account, REGION, &[c], &[]);
    let proxy = Proxy::start(&moto().endpoint);
    // Imported into a central region: the product there, the cluster's
    // region in the finding.
    let out = ok(fleet_poll(
        &proxy.endpoint,
        &[account],
        window(),
        &["--deliver", "securityhub:eu-west-1", "--step-span", "1h"],
    ));
    let imports: Vec<Value> = proxy
        .requests()
        .iter()
        .filter(|r| r.rest && r.target.starts_with("POST /findings/import"))
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert!(
        imports.len() >= 3,
        "{} imports: {}",
        imports.len(),
        stderr(&out)
    );
    let mut total = 0;
    for body in &imports {
        let batch = body["Findings"].as_array().unwrap();
        assert!(batch.len() <= 100, "{} findings in one call", batch.len());
        for f in batch {
            let size = serde_json::to_vec(f).unwrap().len();
            assert!(size <= 240_000, "a finding of {size} bytes");
            assert_eq!(f["AwsAccountId"], account);
        }
        total += batch.len();
    }
    assert_eq!(total, 250);
    let got = findings(account, "eu-west-1");
    assert_eq!(got.len(), 250);
    assert!(findings(account, REGION).is_empty());
    for f in &got {
        assert_eq!(
            f.product_arn(),
            Some(
                format!("arn:aws:securityhub:eu-west-1:{account}:product/{account}/default")
                    .as_str()
            )
        );
        assert_eq!(f.region(), Some(REGION));
    }
    let long: Vec<&AwsSecurityFinding> = got
        .iter()
        .filter(|f| {
            f.product_fields()
                .unwrap()
                .contains_key("kubeanon/shortened")
        })
        .collect();
    assert_eq!(long.len(), 1, "the long finding is there, marked");
    let agent = &long[0].product_fields().unwrap()["userAgent"];
    assert!(agent.starts_with("AAAA") && agent.ends_with('…') && agent.chars().count() <= 2048);
}

#[test]
fn with_s3_state_a_committed_step_is_not_imported_again() {
    let account = "300000000004";
    build(account, REGION, &[cluster("hub-state", true, 8000, 3)], &[]);
    let bucket = "kubeanon-hub-state";
    make_bucket(bucket);
    let poll = || {
        let mut cmd = kubeanon(&moto().endpoint, &["poll", "--all-clusters"]);
        cmd.args([
            "--role-arn",
            &role(account),
            "--region",
            REGION,
            "--since",
            "30m",
        ])
        .args(["--checkpoint", &format!("s3://{bucket}/kubeanon/")])
        .args(["--deliver", "securityhub"]);
        ok(cmd.output().unwrap())
    };
    let first = poll();
    assert!(
        stderr(&first).contains("1 step delivered to Security Hub"),
        "{}",
        stderr(&first)
    );
    assert_eq!(findings(account, REGION).len(), 3);
    // The state moved past the step: nothing is imported again.
    let second = poll();
    assert!(
        stderr(&second).contains("0 steps delivered to Security Hub"),
        "{}",
        stderr(&second)
    );
    assert_eq!(findings(account, REGION).len(), 3);
    assert!(!keys(bucket, "kubeanon/state/").is_empty());
}

#[test]
fn findings_security_hub_fails_are_named_and_their_step_is_not_committed() {
    let account = "300000000005";
    build(
        account,
        REGION,
        &[cluster("hub-refused", true, 9000, 2)],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp.json");
    let poll = |endpoint: &str| {
        let mut cmd = kubeanon(endpoint, &["poll", "--all-clusters"]);
        cmd.args([
            "--role-arn",
            &role(account),
            "--region",
            REGION,
            "--since",
            "30m",
        ])
        .arg("--checkpoint")
        .arg(&checkpoint)
        .args(["--deliver", "securityhub"]);
        cmd.output().unwrap()
    };
    // Security Hub fails every finding, with a message carrying an escape.
    let proxy = Proxy::start(&moto().endpoint);
    proxy.answer(
        "POST /findings/import",
        r#"{"FailedCount":2,"SuccessCount":0,"FailedFindings":[{"Id":"kubeanon-row-1","ErrorCode":"InvalidInput","ErrorMessage":"bad \u001b[2J field"}]}"#,
    );
    let out = poll(&proxy.endpoint);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Security Hub refused"), "{err}");
    assert!(err.contains("kubeanon-row-1: InvalidInput bad"), "{err}");
    assert!(!err.contains('\u{1b}'), "the answer is neutralised: {err}");
    // Not transient: imported once, not retried.
    let imports = proxy
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("POST /findings/import"))
        .count();
    assert_eq!(imports, 1);
    assert!(findings(account, REGION).is_empty());
    // The step was not committed: the next run imports it.
    ok(poll(&moto().endpoint));
    assert_eq!(findings(account, REGION).len(), 2);
}
