//! `kubeanon doctor`: can kubeanon read this cluster's audit logs? Checks,
//! in order, what usually goes wrong: no credentials, no log group, audit
//! logging off (no audit streams, or none written lately), and IAM.

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;

use crate::cli::{DoctorArgs, parse_duration};
use crate::exit::Exit;
use crate::source::advice;
use crate::source::cloudwatch::{
    self, Api, ApiStats, ClientSettings, Pacer, Query, RetryPolicy, checks,
};

/// Audit streams silent for longer than this get a warning.
const QUIET_AFTER: Duration = Duration::from_secs(3600);

pub fn run(args: DoctorArgs) -> Result<Exit> {
    let groups = args.aws.log_groups()?;
    let settings = ClientSettings {
        region: args.aws.region.clone(),
        profile: args.aws.profile.clone(),
        endpoint_url: args.aws.endpoint_url.clone(),
        attempt_timeout: parse_duration("--attempt-timeout", "20s")?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ok = runtime.block_on(async {
        let mut report = Report::default();
        let (config, region) = match cloudwatch::sdk_config(&settings).await {
            Ok(c) => c,
            Err(e) => {
                report.fail(format!("{e:#}"));
                return !report.failed;
            }
        };
        report.pass(format!("region {region}"));
        // Say where they came from, never what they are; without them,
        // nothing below could say anything true.
        if let Err(e) = cloudwatch::check_credentials(&config, &settings).await {
            report.fail(format!("{e:#}"));
            return false;
        }
        report.pass("credentials found in the standard chain".to_string());
        let client = aws_sdk_cloudwatchlogs::Client::new(&config);
        let endpoint = advice::endpoint(settings.endpoint_url.as_deref(), &region);
        for group in &groups {
            check_group(
                &client,
                &endpoint,
                &region,
                group,
                &args.aws.stream_prefix,
                &mut report,
            )
            .await;
        }
        !report.failed
    });
    Ok(if ok { Exit::Ok } else { Exit::Error })
}

/// Prints each check's result; any failure makes the run fail.
#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn pass(&mut self, what: String) {
        println!("ok    {what}");
    }
    fn warn(&mut self, what: String) {
        println!("warn  {what}");
    }
    fn fail(&mut self, what: String) {
        self.failed = true;
        println!("FAIL  {what}");
    }
}

async fn check_group(
    client: &aws_sdk_cloudwatchlogs::Client,
    endpoint: &str,
    region: &str,
    group: &str,
    prefix: &str,
    report: &mut Report,
) {
    let cluster = cloudwatch::cluster_name(group);
    let enable = format!(
        "enable audit logs with: aws eks update-cluster-config --name {cluster} --logging '{{\"clusterLogging\":[{{\"types\":[\"audit\"],\"enabled\":true}}]}}'"
    );
    match checks::log_group_exists(client, group).await {
        Ok(true) => report.pass(format!("log group {group} exists")),
        Ok(false) => {
            return report.fail(cloudwatch::explain_missing(client, group, region).await);
        }
        Err(e) => return report.fail(format!("cannot list log groups: {e:#}")),
    }
    match checks::latest_stream(client, group, prefix).await {
        Ok(Some(stream)) => {
            let name = stream.log_stream_name().unwrap_or_default();
            let last = stream
                .last_event_timestamp()
                .or(stream.last_ingestion_time());
            let age = last.map(|t| Utc::now().timestamp_millis() - t);
            match age {
                Some(age) if age <= QUIET_AFTER.as_millis() as i64 => {
                    report.pass(format!("audit stream {name} has events from the last {} min", age / 60_000 + 1))
                }
                Some(age) => report.warn(format!(
                    "audit stream {name} has no events in the last {} min: was audit logging turned off? {enable}",
                    age / 60_000
                )),
                None => report.warn(format!("audit stream {name} reports no event time")),
            }
        }
        Ok(None) => report.fail(format!(
            "no log stream starting with {prefix} in {group}: audit logging is off; {enable}"
        )),
        Err(e) => report.fail(format!("cannot list log streams: {e:#}")),
    }
    // One small FilterLogEvents call proves the permission poll needs.
    let pacer = Pacer::new(4.0);
    let stats = ApiStats::default();
    let api = Api {
        client,
        endpoint,
        pacer: &pacer,
        retry: RetryPolicy {
            max_attempts: 2,
            ..Default::default()
        },
        stats: &stats,
    };
    let now = Utc::now().timestamp_millis();
    let query = Query {
        log_group: group.to_string(),
        stream_prefix: prefix.to_string(),
        filter_pattern: Some(cloudwatch::SERVER_FILTER.to_string()),
        page_size: 1,
        start_ms: now - 60_000,
        end_ms: now,
    };
    match cloudwatch::read_page_once(&api, &query).await {
        Ok(()) => report.pass(format!("logs:FilterLogEvents is allowed on {group}")),
        Err(e) => report.fail(format!("{e:#}")),
    }
}
