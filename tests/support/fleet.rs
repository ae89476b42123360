//! The test fleet in moto's server: accounts reached through assumed roles
//! (moto puts what the assumed credentials create in the role's account),
//! EKS clusters with audit logging on or off, their log groups and events,
//! and the commands and comparisons the fleet tests share.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use aws_sdk_eks::types::{LogSetup, LogType, Logging, VpcConfigRequest};

use super::*;

pub fn role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/kubeanon-reader")
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Credentials of `account` in `region`, through STS AssumeRole on moto.
pub async fn config(account: &str, region: &str) -> aws_config::SdkConfig {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(&moto().endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(role(account))
        .session_name("fleet-test")
        .configure(&base)
        .build()
        .await;
    base.into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build()
}

/// One cluster of the test fleet.
#[derive(Clone)]
pub struct Cluster {
    pub name: String,
    pub audit: bool,
    /// (time, message) in its audit stream.
    pub events: Vec<(i64, String)>,
}

/// Creates `clusters` in (account, region): the EKS cluster with its
/// logging setting and, for audit logging on, the log group with the
/// events in an audit stream and anonymous-looking decoys in the API
/// server's own stream. `deleted` log groups get events but no cluster.
/// Clusters run moto's default Kubernetes version (see [`build_at`]).
pub fn build(account: &str, region: &str, clusters: &[Cluster], deleted: &[Cluster]) {
    build_at(account, region, clusters, deleted, |_| None)
}

/// [`build`], each cluster created at the Kubernetes version `version`
/// gives for its name (None: moto's default).
pub fn build_at(
    account: &str,
    region: &str,
    clusters: &[Cluster],
    deleted: &[Cluster],
    version: impl Fn(&str) -> Option<&'static str>,
) {
    rt().block_on(async {
        let conf = config(account, region).await;
        let eks = aws_sdk_eks::Client::new(&conf);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
        for c in clusters {
            eks.create_cluster()
                .name(&c.name)
                .role_arn(format!("arn:aws:iam::{account}:role/eks"))
                .resources_vpc_config(VpcConfigRequest::builder().build())
                .set_version(version(&c.name).map(String::from))
                .logging(
                    Logging::builder()
                        .cluster_logging(
                            LogSetup::builder()
                                .types(LogType::Audit)
                                .types(LogType::Api)
                                .enabled(c.audit)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .expect("create cluster");
        }
        for c in clusters.iter().filter(|c| c.audit).chain(deleted) {
            let group = format!("/aws/eks/{}/cluster", c.name);
            logs.create_log_group()
                .log_group_name(&group)
                .send()
                .await
                .expect("create log group");
            for stream in [AUDIT_STREAM, APISERVER_STREAM] {
                logs.create_log_stream()
                    .log_group_name(&group)
                    .log_stream_name(stream)
                    .send()
                    .await
                    .expect("create stream");
            }
            put_to(&logs, &group, AUDIT_STREAM, &c.events).await;
            // The API server's own log: anonymous-looking, never counted.
            let decoys = c
                .events
                .iter()
                .take(2)
                .map(|(t, _)| (*t, audit_event(999, true)))
                .collect::<Vec<_>>();
            put_to(&logs, &group, APISERVER_STREAM, &decoys).await;
        }
    })
}

/// Puts (time, message) events into a stream of a log group, in time
/// order (one call: at most 10,000 events).
async fn put_to(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    events: &[(i64, String)],
) {
    if events.is_empty() {
        return;
    }
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.0);
    let list = events
        .iter()
        .map(|(t, m)| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(*t)
                .message(m)
                .build()
                .unwrap()
        })
        .collect();
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(list))
        .send()
        .await
        .expect("put events");
}

/// Adds events to the audit stream of a cluster that [`build`] made.
pub fn add_events(account: &str, region: &str, cluster: &str, events: &[(i64, String)]) {
    rt().block_on(async {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config(account, region).await);
        put_to(
            &logs,
            &format!("/aws/eks/{cluster}/cluster"),
            AUDIT_STREAM,
            events,
        )
        .await;
    })
}

/// A cluster's events: `anon` anonymous and two normal ones, numbered from
/// `seed`, seconds apart from 8 minutes ago (inside a rerun's overlap).
pub fn cluster(name: &str, audit: bool, seed: u64, anon: u64) -> Cluster {
    let now = now_ms();
    let events = (0..anon + 2)
        .map(|i| {
            (
                now - 8 * 60_000 + i as i64 * 7_000,
                audit_event(seed + i, i < anon),
            )
        })
        .collect();
    Cluster {
        name: name.to_string(),
        audit,
        events,
    }
}

pub fn kubeanon(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    cmd.args(args).args(["--endpoint-url", endpoint]);
    cmd
}

/// `kubeanon scan` of these events: the rows the fleet run must give for
/// their cluster.
pub fn scan(events: &[(i64, String)]) -> BTreeMap<Vec<String>, u64> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let text: String = events.iter().map(|(_, m)| format!("{m}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = ok(Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "--format", "ndjson"])
        .arg(&file)
        .output()
        .unwrap());
    totals(&rows(&out.stdout))
}

/// Rows by (account, region, cluster).
pub fn by_unit(
    rows: &[serde_json::Value],
) -> BTreeMap<(String, String, String), Vec<serde_json::Value>> {
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for r in rows {
        let key = (
            r["account"].as_str().unwrap().to_string(),
            r["region"].as_str().unwrap().to_string(),
            r["cluster"].as_str().unwrap().to_string(),
        );
        out.entry(key).or_default().push(r.clone());
    }
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
