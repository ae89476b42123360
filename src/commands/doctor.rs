//! `kubeanon doctor`: can kubeanon read these clusters' audit logs? For
//! each (account, region) of the run: credentials (and the assumed role),
//! then one coverage line per cluster or log group: audit logging on or
//! off (with --all-clusters, as EKS says), log group present, the newest
//! audit event's age, logs:FilterLogEvents allowed, and the cluster's
//! Kubernetes version with what anonymous can reach there. A blind or
//! unreadable cluster fails the run (exit 1); the lines say what to do.

use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use serde::Serialize;

use crate::cli::{DoctorArgs, DoctorFormat, parse_duration};
use crate::detect::Rules;
use crate::exit::Exit;
use crate::fleet::discover::{self, Coverage};
use crate::fleet::version::{self, KubernetesVersion, Unknown};
use crate::fleet::{self, Scope};
use crate::output::neutralise_terminal;
use crate::source::advice::{self, enable_audit};
use crate::source::cloudwatch::{self, Api, ApiStats, Pacer, Query, RetryPolicy, checks};
use crate::testhooks;

/// Audit streams silent for longer than this get a warning.
const QUIET_AFTER: Duration = Duration::from_secs(3600);
/// Clusters checked at once per scope, and scopes at once.
const AT_ONCE: usize = 4;

/// One line of the coverage report: a cluster (or a named log group) of
/// one account and region, or the account or region itself when it could
/// not be reached.
#[derive(Debug, Default, Serialize)]
struct Line {
    account: Option<String>,
    region: Option<String>,
    cluster: Option<String>,
    log_group: Option<String>,
    /// "on" or "off" as EKS says (--all-clusters); null when not asked.
    audit_logging: Option<&'static str>,
    log_group_present: Option<bool>,
    /// Seconds since the newest audit event, as CloudWatch reports it.
    newest_audit_event_age_s: Option<i64>,
    filter_allowed: Option<bool>,
    /// EKS's `cluster.version`, or "unknown"; null for a line about an
    /// account or region.
    kubernetes_version: Option<String>,
    /// Whether anonymous reaches only the health paths there (1.32 on);
    /// null when the version is not known.
    anonymous_health_only: Option<bool>,
    /// What anonymous can reach there, or why that is not known.
    anonymous_reach: Option<String>,
    #[serde(skip)]
    version: Option<KubernetesVersion>,
    status: Status,
    /// What is wrong and what to do, when something is.
    problem: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    #[default]
    Ok,
    /// Readable, but no audit event lately (idle, or logging just off).
    Quiet,
    /// Nothing can be seen: audit logging off, no audit streams.
    Blind,
    /// Could not be read: no log group, access denied, an error.
    Unreadable,
    /// The cluster is gone; its log group remains.
    Deleted,
}

impl Line {
    fn set_version(&mut self, v: KubernetesVersion) {
        self.kubernetes_version = Some(v.column().to_string());
        self.anonymous_health_only = v.health_only();
        self.anonymous_reach = Some(v.anonymous_reach());
        self.version = Some(v);
    }
}

impl Status {
    fn fails(self) -> bool {
        matches!(self, Status::Blind | Status::Unreadable)
    }
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "ok    ",
            Status::Quiet => "warn  ",
            Status::Deleted => "note  ",
            Status::Blind | Status::Unreadable => "FAIL  ",
        }
    }
}

pub fn run(args: DoctorArgs) -> Result<Exit> {
    let named = args.aws.log_groups()?;
    let settings = args.aws.fleet(parse_duration("--attempt-timeout", "20s")?);
    let text = args.format == DoctorFormat::Text;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lines = runtime.block_on(async {
        let fleet = match fleet::scopes(&settings).await {
            Ok(f) => f,
            Err(e) => {
                return vec![Line {
                    status: Status::Unreadable,
                    problem: Some(format!("{e:#}")),
                    ..Line::default()
                }];
            }
        };
        if text {
            // Say where they came from, never what they are.
            println!("ok    credentials found in the standard chain");
        }
        let mut lines: Vec<Line> = fleet
            .unreachable
            .into_iter()
            .map(|u| Line {
                account: Some(u.account),
                status: Status::Unreadable,
                problem: Some(format!("{:#}", u.error)),
                ..Line::default()
            })
            .collect();
        let scoped: Vec<Vec<Line>> = futures_util::stream::iter(&fleet.scopes)
            .map(|scope| check_scope(scope, &named, args.aws.all_clusters, &args.aws))
            .buffered(AT_ONCE)
            .collect()
            .await;
        lines.extend(scoped.into_iter().flatten());
        lines
    });
    // One line for every version EKS would not say, not one per cluster.
    if let Some(note) = version::unknown_note(lines.iter().filter_map(|l| l.version.as_ref())) {
        eprintln!("kubeanon doctor: note: {note}");
    }
    let mut failed = false;
    for line in &lines {
        failed |= line.status.fails();
        if text {
            println!("{}", render(line));
        } else {
            println!(
                "{}",
                serde_json::to_string(line).expect("a coverage line serialises")
            );
        }
    }
    Ok(if failed { Exit::Error } else { Exit::Ok })
}

/// One line for a person: where, what, and what to do.
fn render(l: &Line) -> String {
    let mut where_ = Vec::new();
    if let Some(a) = &l.account {
        where_.push(format!("account {a}"));
    }
    if let Some(r) = &l.region {
        where_.push(r.clone());
    }
    // Names are the account's to choose, the version EKS's to say.
    let n = |s: &str| neutralise_terminal(s).into_owned();
    let subject = match (&l.cluster, &l.log_group) {
        (Some(c), _) => format!("cluster {}", n(c)),
        (None, Some(g)) => format!("log group {}", n(g)),
        // Before any account or region: reaching AWS at all failed
        // (credentials, profile, region, STS).
        (None, None) if where_.is_empty() => "AWS access".to_string(),
        (None, None) => String::new(),
    };
    let mut facts = Vec::new();
    if let Some(on) = l.audit_logging {
        facts.push(format!("audit logging {on}"));
    }
    match (l.log_group_present, &l.log_group) {
        (Some(true), Some(g)) => facts.push(format!("log group {} exists", n(g))),
        (Some(false), Some(g)) => facts.push(format!("no log group {}", n(g))),
        _ => {}
    }
    if let Some(age) = l.newest_audit_event_age_s {
        facts.push(format!("newest audit event {} min ago", age / 60));
    }
    if l.filter_allowed == Some(true) {
        facts.push("logs:FilterLogEvents is allowed".to_string());
    }
    let mut text = format!("{}{}", l.status.mark(), where_.join(", "));
    if !subject.is_empty() {
        if !where_.is_empty() {
            text.push(' ');
        }
        text.push_str(&subject);
    }
    if !facts.is_empty() {
        text.push_str(&format!(": {}", facts.join(", ")));
    }
    let mut said = !facts.is_empty();
    if let Some(p) = &l.problem {
        text.push_str(&format!("{}{p}", if said { "; " } else { ": " }));
        said = true;
    }
    if let Some(v) = &l.version {
        text.push_str(if said { "; " } else { ": " });
        text.push_str(&v.clause());
    }
    text
}

/// The lines of one scope: its discovered clusters and the named groups.
async fn check_scope(
    scope: &Scope,
    named: &[String],
    all_clusters: bool,
    aws: &crate::cli::AwsArgs,
) -> Vec<Line> {
    let base = Line {
        account: Some(scope.account.clone()),
        region: Some(scope.region.clone()),
        ..Line::default()
    };
    let mut targets: Vec<(Line, Option<String>)> = Vec::new();
    // Versions by log group: discovery's, then one DescribeCluster per
    // named cluster it did not describe.
    let mut versions = std::collections::BTreeMap::new();
    if all_clusters {
        match discover::find(scope, Duration::from_secs(20)).await {
            Err(e) => {
                return vec![Line {
                    status: Status::Unreadable,
                    problem: Some(format!("{e:#}")),
                    ..base
                }];
            }
            Ok(found) => {
                versions = found.versions();
                for c in discover::select(&found, &aws.cluster_match) {
                    let mut line = Line {
                        cluster: Some(c.cluster().to_string()),
                        ..clone_where(&base)
                    };
                    match c {
                        Coverage::Readable { log_group, .. } => {
                            line.audit_logging = Some("on");
                            // Discovery listed the log groups already.
                            line.log_group_present = Some(found.log_groups.contains(&log_group));
                            targets.push((line, Some(log_group)));
                        }
                        Coverage::AuditOff { cluster } => {
                            line.audit_logging = Some("off");
                            line.status = Status::Blind;
                            line.problem = Some(format!(
                                "nothing it is asked can be seen. {}",
                                enable_audit(&cluster, &scope.region)
                            ));
                            targets.push((line, None));
                        }
                        Coverage::Deleted { log_group, cluster } => {
                            line.log_group = Some(log_group);
                            line.log_group_present = Some(true);
                            line.status = Status::Deleted;
                            line.problem = Some(format!(
                                "cluster deleted, log group remains: --all-clusters does not read it (--cluster {cluster} does)"
                            ));
                            targets.push((line, None));
                        }
                    }
                }
            }
        }
    }
    for g in named {
        if targets.iter().any(|(_, t)| t.as_ref() == Some(g)) {
            continue;
        }
        let cluster = cloudwatch::cluster_name(g);
        let line = Line {
            cluster: (cluster != g).then(|| cluster.to_string()),
            ..clone_where(&base)
        };
        targets.push((line, Some(g.clone())));
    }
    let looked_up = version::lookup(
        scope,
        targets
            .iter()
            .filter_map(|(_, g)| g.as_deref())
            .filter(|g| !versions.contains_key(*g)),
        Duration::from_secs(20),
    )
    .await;
    versions.extend(looked_up);
    for (line, group) in &mut targets {
        let group = match (group.as_deref(), &line.cluster) {
            (Some(g), _) => g.to_string(),
            (None, Some(c)) => cloudwatch::cluster_log_group(c),
            (None, None) => continue,
        };
        line.set_version(match (line.status, versions.get(&group)) {
            (Status::Deleted, _) => KubernetesVersion::Unknown(Unknown::NoCluster),
            (_, Some(v)) => v.clone(),
            (_, None) => KubernetesVersion::Unknown(Unknown::Failed(None)),
        });
    }
    let (client, _) = cloudwatch::logs_client(&scope.config);
    let endpoint = advice::endpoint(aws.endpoint_url.as_deref(), &scope.region);
    let pacer = Pacer::new(4.0);
    let stats = ApiStats::default();
    let api = Api {
        client: &client,
        endpoint: &endpoint,
        region: &scope.region,
        pacer: &pacer,
        retry: RetryPolicy {
            max_attempts: 2,
            ..Default::default()
        },
        stats: &stats,
    };
    futures_util::stream::iter(targets)
        .map(|(line, group)| {
            let api = &api;
            async move {
                match group {
                    Some(g) => check_group(api, &scope.region, &g, &aws.stream_prefix, line).await,
                    None => line,
                }
            }
        })
        .buffered(AT_ONCE)
        .collect()
        .await
}

fn clone_where(l: &Line) -> Line {
    Line {
        account: l.account.clone(),
        region: l.region.clone(),
        ..Line::default()
    }
}

/// The checks of one log group: present (unless discovery said so
/// already), audit streams written lately, FilterLogEvents allowed.
async fn check_group(
    api: &Api<'_>,
    region: &str,
    group: &str,
    prefix: &str,
    mut line: Line,
) -> Line {
    line.log_group = Some(group.to_string());
    let cluster = cloudwatch::cluster_name(group);
    let enable = enable_audit(cluster, region);
    let client = api.client;
    let present = match line.log_group_present {
        Some(known) => Ok(known),
        None => checks::log_group_exists(api, group).await,
    };
    match present {
        Ok(true) => line.log_group_present = Some(true),
        Ok(false) => {
            line.log_group_present = Some(false);
            line.status = if line.audit_logging == Some("on") {
                Status::Unreadable
            } else {
                Status::Blind
            };
            line.problem = Some(cloudwatch::explain_missing(client, group, region).await);
            return line;
        }
        Err(e) => {
            line.status = Status::Unreadable;
            line.problem = Some(format!("cannot list log groups: {e:#}"));
            return line;
        }
    }
    match checks::latest_stream(client, group, prefix).await {
        Ok(Some(stream)) => {
            let last = stream
                .last_event_timestamp()
                .or(stream.last_ingestion_time());
            let age = last.map(|t| (testhooks::now_ms() - t).max(0));
            line.newest_audit_event_age_s = age.map(|a| a / 1000);
            if age.is_none_or(|a| a > QUIET_AFTER.as_millis() as i64) {
                line.status = Status::Quiet;
                line.problem = Some(format!(
                    "no audit event in the last {} min: is the cluster idle, or was audit logging turned off? {enable}",
                    QUIET_AFTER.as_secs() / 60
                ));
            }
        }
        Ok(None) => {
            line.status = Status::Blind;
            line.problem = Some(format!(
                "no log stream starting with {prefix}: audit logging is off. {enable}"
            ));
            return line;
        }
        Err(e) => {
            line.status = Status::Unreadable;
            line.problem = Some(format!("cannot list log streams: {e:#}"));
            return line;
        }
    }
    // One small FilterLogEvents call proves the permission poll needs.
    let now = testhooks::now_ms();
    let query = Query {
        log_group: group.to_string(),
        stream_prefix: prefix.to_string(),
        // The pattern a default poll sends: a pattern the server rejects
        // would show here.
        filter_pattern: Some(cloudwatch::server_pattern(Rules::default())),
        page_size: 1,
        start_ms: now - 60_000,
        end_ms: now,
    };
    match cloudwatch::read_page_once(api, &query).await {
        Ok(()) => line.filter_allowed = Some(true),
        Err(e) => {
            line.filter_allowed = Some(false);
            line.status = Status::Unreadable;
            line.problem = Some(format!("{e:#}"));
        }
    }
    line
}
