//! Every flag, in one place. The clap structs are plain data; `resolve`
//! functions check them once and build what the commands run with.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::detect::{AddressCap, DEFAULT_MAX_ADDRESSES, Exclusion, Rules, Severity};
use crate::exit::UsageError;
use crate::output::{Format, Style, Target};
use crate::source::cloudwatch::cluster_log_group;

#[derive(Debug, Parser)]
#[command(
    name = "kubeanon",
    version,
    about = "Find anonymous requests to a Kubernetes API server in its audit log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log kubeanon's own debug events to stderr (scan: how long reading,
    /// sorting and writing took; poll: pages, retries, recoveries, AWS
    /// errors in full). Never credentials or event contents.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // A flag given twice takes the last value, so wrappers can append overrides.
    /// Scan audit log files (or stdin) for anonymous requests.
    #[command(args_override_self = true)]
    Scan(ScanArgs),
    /// Page through EKS audit logs in CloudWatch Logs and report anonymous requests.
    #[command(
        args_override_self = true,
        override_usage = "kubeanon poll (--all-clusters | --cluster NAME | --log-group NAME)... [OPTIONS]"
    )]
    Poll(Box<PollArgs>),
    /// Check that kubeanon can read clusters' audit logs (with
    /// --all-clusters: the fleet's coverage, one line per cluster).
    #[command(
        args_override_self = true,
        override_usage = "kubeanon doctor (--all-clusters | --cluster NAME | --log-group NAME)... [OPTIONS]"
    )]
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files to read; `-` or none reads stdin. Gzip is detected.
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output format [default: table when writing to a terminal, else ndjson].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to FILE (via a temporary file and a rename) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE", conflicts_with = "append")]
    pub output: Option<PathBuf>,
    /// Append rows to FILE (ndjson or csv; fsynced before the run ends).
    #[arg(long, value_name = "FILE")]
    pub append: Option<PathBuf>,
    /// Drop result rows whose COLUMN matches PATTERN (whole value, `*`
    /// wildcard, ASCII case-insensitive; CIDR for src_ip). Conditions joined
    /// by commas must all match: 'userAgent=kube-probe/*,src_ip=10.0.0.0/8'.
    /// In a pattern `\,` is a literal comma and `\\` a backslash.
    /// Repeatable: a row matching any --exclude is dropped.
    #[arg(long, value_name = "COLUMN=PATTERN[,...]")]
    pub exclude: Vec<String>,
    /// Leave out rows below LEVEL (informational, low, medium, high,
    /// critical; see README: Severity). Their events still count as read.
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub min_severity: Option<Severity>,
    /// The rules to apply, comma-separated: escu (anonymous requests, as
    /// Splunk ESCU), unauthenticated (401s with no user), truncated (cut
    /// records showing either), or all (see README: Rules).
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = parse_rules)]
    pub rules: Rules,
    /// Rows of at most N distinct source addresses per event: an event
    /// with more (X-Forwarded-For padding) keeps its first N-1 and its last,
    /// the connection's own, and says so in its note. 0 keeps every
    /// address, as ESCU does; memory is then bounded only by the input.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ADDRESSES)]
    pub max_addresses: usize,
    /// Group rows by source IP, user agent, verb, request URI and response
    /// code, with first and last seen and the count (poll: per step).
    #[arg(long)]
    pub rollup: bool,
    /// The table with every column (the machine formats' names, in their
    /// order) and no value shortened. Without it the table fits the
    /// terminal's width (its window size, else COLUMNS, else 120): severity,
    /// last seen, source, verb, path, code and count, then as the width
    /// allows user agent, cluster, rule and binding; long values cut with
    /// `…`.
    #[arg(long)]
    pub wide: bool,
    /// Exit 3 when there are findings; with =LEVEL, when a row written is
    /// at LEVEL or above.
    #[arg(
        long,
        value_name = "LEVEL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "informational",
        value_parser = parse_severity
    )]
    pub fail_on_findings: Option<Severity>,
    /// No summary line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Every EKS cluster of each account and region (eks:ListClusters,
    /// eks:DescribeCluster): reads those with audit logging on, fails
    /// those with it off.
    #[arg(help_heading = "Fleet", long)]
    pub all_clusters: bool,
    /// With --all-clusters, only clusters whose name matches GLOB (`*`
    /// wildcard, ASCII case-insensitive). Repeatable.
    #[arg(
        help_heading = "Fleet",
        long = "cluster-match",
        value_name = "GLOB",
        requires = "all_clusters"
    )]
    pub cluster_match: Vec<String>,
    /// EKS cluster name: reads log group /aws/eks/NAME/cluster in every
    /// account and region of the run. Repeatable.
    #[arg(help_heading = "Source", long = "cluster", value_name = "NAME")]
    pub clusters: Vec<String>,
    /// CloudWatch Logs log group to read, in every account and region of
    /// the run. Repeatable.
    #[arg(help_heading = "Source", long = "log-group", value_name = "NAME")]
    pub log_groups: Vec<String>,
    /// AWS region; repeatable or comma-separated (`us-east-1,eu-west-1`)
    /// [default: from the AWS config chain].
    #[arg(
        help_heading = "Fleet",
        long = "region",
        value_name = "REGION",
        value_delimiter = ','
    )]
    pub regions: Vec<String>,
    /// IAM role to assume (session name `kubeanon`), one account each;
    /// repeatable [default: the caller's own account].
    #[arg(help_heading = "Fleet", long = "role-arn", value_name = "ARN")]
    pub role_arns: Vec<String>,
    /// External id the roles' trust policies ask for.
    #[arg(
        help_heading = "Fleet",
        long,
        value_name = "ID",
        requires = "role_arns"
    )]
    pub external_id: Option<String>,
    /// Named profile from the AWS config files: the credentials a run
    /// starts from (and assumes roles with).
    #[arg(help_heading = "Source", long)]
    pub profile: Option<String>,
    /// Endpoint for every AWS service a run calls (CloudWatch Logs, STS,
    /// EKS, S3 path-style): emulators, VPC endpoints. AWS_ENDPOINT_URL also
    /// works.
    #[arg(help_heading = "Source", long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Only log streams whose name starts with this (`kube-apiserver-` would
    /// also take the API server's own logs).
    #[arg(
        help_heading = "Source",
        long,
        default_value = "kube-apiserver-audit-",
        value_name = "PREFIX"
    )]
    pub stream_prefix: String,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Start of the window: RFC 3339, or a duration before now (`2h`).
    #[arg(
        help_heading = "Window",
        long,
        value_name = "T",
        conflicts_with = "since"
    )]
    pub start: Option<String>,
    /// End of the window (exclusive): RFC 3339, or a duration before now [default: now - lag].
    #[arg(help_heading = "Window", long, value_name = "T")]
    pub end: Option<String>,
    /// Window start as a duration before now [default: 1h, when no checkpoint].
    #[arg(help_heading = "Window", long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Checkpoint file: resume where the last run ended, count each event
    /// once. `s3://BUCKET/PREFIX/` keeps one state object per work unit in
    /// S3 instead (with --deliver), for runs on many machines.
    #[arg(help_heading = "State", long, value_name = "FILE|s3://BUCKET/PREFIX/")]
    pub checkpoint: Option<PathBuf>,
    /// Where each step's rows go instead of stdout: `s3://BUCKET/PREFIX/`
    /// (one new gzip object per step, exactly once; needs an s3://
    /// --checkpoint), `securityhub` or `securityhub:REGION` (one ASFF
    /// finding per row, updated in place by its id, in the unit's account),
    /// or `hec+https://HOST[:PORT]` (Splunk's HTTP Event Collector, at
    /// least once).
    #[arg(
        help_heading = "Delivery",
        long,
        value_name = "s3://BUCKET/PREFIX/|securityhub[:REGION]|hec+https://HOST:PORT"
    )]
    pub deliver: Option<String>,
    /// HEC: a file whose first line is the token [default: the
    /// KUBEANON_HEC_TOKEN environment variable]. Never a flag value, which
    /// `ps` would show.
    #[arg(help_heading = "Delivery", long, value_name = "FILE")]
    pub hec_token_file: Option<PathBuf>,
    /// HEC: the index events go to [default: the token's default index].
    #[arg(help_heading = "Delivery", long, value_name = "INDEX")]
    pub hec_index: Option<String>,
    /// HEC: commit a step only once HEC reports every batch of it indexed
    /// (indexer acknowledgement, which the token must have on).
    #[arg(help_heading = "Delivery", long)]
    pub hec_ack: bool,
    /// HEC: how long a step waits for its acknowledgements before it fails
    /// (its rows are then sent again by the next run).
    #[arg(
        help_heading = "Delivery",
        long,
        default_value = "2m",
        value_name = "DURATION"
    )]
    pub hec_ack_timeout: String,
    /// HEC: PEM certificates to trust besides the system's (a private CA).
    /// Verification is never turned off.
    #[arg(help_heading = "Delivery", long, value_name = "FILE")]
    pub hec_ca: Option<PathBuf>,
    /// Only the work units in shard I of N (a stable hash of account,
    /// region and log group), e.g. `--shard $(JOB_COMPLETION_INDEX)/4`.
    #[arg(help_heading = "Fleet", long, value_name = "I/N")]
    pub shard: Option<String>,
    /// With an s3:// --checkpoint: how long a unit's lease lasts before
    /// another run may take the unit over (renewed while working).
    #[arg(
        help_heading = "Fleet",
        long,
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub lease: String,
    /// Leave out the most recent DURATION (events still arriving).
    #[arg(
        help_heading = "Window",
        long,
        default_value = "2m",
        value_name = "DURATION"
    )]
    pub lag: String,
    /// Rescan DURATION before the checkpoint to catch late events.
    #[arg(
        help_heading = "Window",
        long,
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub overlap: String,
    /// FilterLogEvents requests per second, shared by all log groups of a
    /// region (the account's quota is 5-25/s and shared with other tools).
    #[arg(help_heading = "Source", long, default_value_t = 4.0, value_name = "N")]
    pub max_rps: f64,
    /// Longest span of event time one step reads before delivering and
    /// committing it [default: 1h; 1d with --engine insights].
    #[arg(help_heading = "Window", long, value_name = "DURATION")]
    pub step_span: Option<String>,
    /// Most matched events one step holds before delivering: a step over
    /// it is read again in halves, so memory stays bounded in a flood.
    #[arg(help_heading = "Window", long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub step_matches: u64,
    /// Most rows one step holds before delivering (an event makes a row
    /// per source address and group): a step over it is read again in
    /// halves, so memory stays bounded whatever the events carry.
    #[arg(help_heading = "Window", long, default_value_t = 20_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub step_rows: u64,
    /// Accept a window with no audit events (a cluster known to be idle)
    /// instead of failing that log group as blind.
    #[arg(help_heading = "Window", long)]
    pub allow_idle: bool,
    /// Let this run change a checkpoint entry: adopt its read settings
    /// from the watermark on, and with --start/--since read again from there.
    #[arg(help_heading = "State", long, requires = "checkpoint")]
    pub rebaseline: bool,
    /// How to read CloudWatch Logs: `filter` (FilterLogEvents, paced; the
    /// only one with eventIds, so the only one with --checkpoint) or
    /// `insights` (Logs Insights as a server-side prefilter for ad-hoc
    /// windows over months; priced per GB scanned).
    #[arg(help_heading = "Engine", long, value_enum, default_value_t = Engine::Filter)]
    pub engine: Engine,
    /// Rows one Insights query may return; a query that returns this many
    /// is split into shorter time ranges [default: 10000; at most 100000].
    #[arg(help_heading = "Engine", long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub query_limit: Option<u32>,
    /// Insights queries running at once across the run (the account's 30
    /// are shared with dashboards and people) [default: 4].
    #[arg(help_heading = "Engine", long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=30))]
    pub max_queries: Option<u32>,
    /// Stop the run (exit 1) once Insights queries have scanned more than
    /// GB gigabytes (10^9 bytes), stopping the running queries.
    #[arg(help_heading = "Engine", long, value_name = "GB")]
    pub max_scan_gb: Option<f64>,
    /// Send no server-side filter pattern (see README: case and truncation).
    #[arg(help_heading = "Source", long)]
    pub no_server_filter: bool,
    /// Events per FilterLogEvents page (1-10000).
    #[arg(help_heading = "Source", long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub page_size: i32,
    /// Attempts per request, first try included, before the run fails.
    #[arg(help_heading = "Source", long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Timeout for one request attempt.
    #[arg(
        help_heading = "Source",
        long,
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub attempt_timeout: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How `poll` reads CloudWatch Logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// FilterLogEvents.
    Filter,
    /// Logs Insights, re-checked by the detector.
    Insights,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// `text` for a person, `ndjson` (one object per cluster) for tools.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DoctorFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DoctorFormat {
    Text,
    Ndjson,
}

impl AwsArgs {
    /// The log groups named on the command line: `--cluster` ones first,
    /// each once. Empty only with --all-clusters.
    pub fn log_groups(&self) -> Result<Vec<String>, UsageError> {
        if let Some(bad) = self.clusters.iter().find_map(|c| misplaced_cluster(c)) {
            return Err(UsageError(bad));
        }
        if let Some(url) = &self.endpoint_url {
            check_endpoint_url(url)?;
        }
        let mut groups: Vec<String> = self.clusters.iter().map(|c| cluster_log_group(c)).collect();
        groups.extend(self.log_groups.iter().cloned());
        // The same group named twice (as --cluster and --log-group) is read once.
        let mut named = std::collections::HashSet::new();
        groups.retain(|g| named.insert(g.clone()));
        if groups.is_empty() && !self.all_clusters {
            return Err(UsageError(
                "name at least one --cluster or --log-group, or pass --all-clusters".into(),
            ));
        }
        // One role per account: two would read the same log groups twice
        // and race for the same checkpoint entries.
        let mut accounts = std::collections::HashMap::new();
        for r in &self.role_arns {
            let account = crate::fleet::role_account(r)?;
            if let Some(other) = accounts.insert(account, r)
                && other != r
            {
                return Err(UsageError(format!(
                    "--role-arn {other} and {r} are both in account {account}: give one role per account"
                )));
            }
        }
        if let Some(bad) = self.regions.iter().find(|r| !is_region_name(r)) {
            return Err(UsageError(format!(
                "--region '{bad}' is not a region name (like us-east-1)"
            )));
        }
        Ok(groups)
    }

    /// Which accounts and regions the run covers.
    pub fn fleet(&self, attempt_timeout: Duration) -> crate::fleet::Settings {
        let mut regions = Vec::new();
        for r in &self.regions {
            if !regions.contains(r) {
                regions.push(r.clone());
            }
        }
        let mut roles = Vec::new();
        for r in &self.role_arns {
            if !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        crate::fleet::Settings {
            client: crate::source::cloudwatch::ClientSettings {
                region: None,
                profile: self.profile.clone(),
                endpoint_url: self.endpoint_url.clone(),
                attempt_timeout,
            },
            regions,
            roles,
            external_id: self.external_id.clone(),
        }
    }
}

/// What to say for a `--cluster` value that is no cluster name: a log
/// group (`/aws/eks/demo/cluster` would become `/aws/eks//aws/eks/demo/cluster/cluster`)
/// or a cluster ARN. Cluster names have no `/`.
fn misplaced_cluster(value: &str) -> Option<String> {
    if let Some(rest) = value.strip_prefix("arn:")
        && let Some((_, name)) = rest.split_once(":cluster/")
        && !name.is_empty()
        && !name.contains('/')
    {
        let region = rest.split(':').nth(2).filter(|r| !r.is_empty());
        return Some(format!(
            "--cluster '{value}' is a cluster ARN: pass its name, --cluster {name}{}",
            region.map(|r| format!(" --region {r}")).unwrap_or_default()
        ));
    }
    if !value.contains('/') {
        return None;
    }
    let name = value
        .strip_prefix("/aws/eks/")
        .and_then(|r| r.strip_suffix("/cluster"))
        .filter(|n| !n.is_empty() && !n.contains('/'));
    Some(match name {
        Some(name) => format!(
            "--cluster takes a cluster name, and '{value}' is a log group: pass --log-group {value} (or --cluster {name})"
        ),
        None => format!(
            "--cluster takes a cluster name (no '/'), and '{value}' looks like a log group: pass --log-group {value}"
        ),
    })
}

/// `--endpoint-url`, checked before the SDK sees it (its own error names
/// no flag): an http:// or https:// URL with a host.
fn check_endpoint_url(url: &str) -> Result<(), UsageError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A host and port alone: an emulator's, most likely on http.
        let scheme = if url.contains("amazonaws.com") {
            "https"
        } else {
            "http"
        };
        return Err(UsageError(format!(
            "--endpoint-url '{url}' needs a scheme: {scheme}://{url}"
        )));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(UsageError(format!(
            "--endpoint-url '{url}': the scheme must be http or https, not '{scheme}' (like http://localhost:4566)"
        )));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || host.contains(char::is_whitespace) {
        return Err(UsageError(format!(
            "--endpoint-url '{url}' has no host: write it like {scheme}://localhost:4566"
        )));
    }
    Ok(())
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`: letters, digits and dashes,
/// never empty (a stray comma in `--region a,,b`).
fn is_region_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && r.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

/// What to say for `--fail-on-findings LEVEL`, written without the `=`.
pub fn fail_on_findings_hint(level: &str) -> String {
    format!("--fail-on-findings takes its level after '=': --fail-on-findings={level}")
}

/// `--fail-on-findings LEVEL` in `args` (the `=` left out), where clap
/// refused LEVEL as an unexpected argument (poll and doctor take no paths).
pub fn stray_fail_on_findings_level(args: &[std::ffi::OsString]) -> Option<String> {
    args.windows(2).find_map(|w| {
        let level = w[1].to_str()?;
        (w[0] == "--fail-on-findings" && level.parse::<Severity>().is_ok())
            .then(|| level.to_string())
    })
}

/// `--min-severity` and `--fail-on-findings`' LEVEL.
fn parse_severity(text: &str) -> Result<Severity, String> {
    text.parse()
}

fn parse_rules(text: &str) -> Result<Rules, String> {
    text.parse()
}

/// Output settings, checked.
#[derive(Debug)]
pub struct OutputConfig {
    pub format: Format,
    pub target: Target,
    pub exclusions: Vec<Exclusion>,
    pub min_severity: Option<Severity>,
    /// `--rules`.
    pub rules: Rules,
    /// `--max-addresses`.
    pub max_addresses: AddressCap,
    pub rollup: bool,
    /// Colour the table's severities (stdout is a terminal, `NO_COLOR` unset).
    pub colour: bool,
    /// The table's width; `None` with `--wide` (and for the other formats).
    pub width: Option<usize>,
    /// Exit 3 when a row written is at this level or above.
    pub fail_on_findings: Option<Severity>,
    pub quiet: bool,
}

impl OutputConfig {
    /// How rows are written, with the run's time (`run_ms`, for OCSF
    /// findings without a timestamp).
    pub fn style(&self, run_ms: i64) -> Style {
        Style {
            format: self.format,
            rollup: self.rollup,
            colour: self.colour,
            width: self.width,
            run_ms,
        }
    }
}

impl OutputArgs {
    /// The flags, checked, for a command that writes rows as a stream
    /// (`scan`, `poll` without `--deliver`).
    pub fn resolve(&self) -> Result<OutputConfig, UsageError> {
        self.resolve_for(false)
    }

    /// The flags, checked; `objects`: rows go to objects (`poll --deliver
    /// s3://`), the one place `--format parquet` is written.
    pub fn resolve_for(&self, objects: bool) -> Result<OutputConfig, UsageError> {
        if self.format == Some(Format::Parquet) {
            if !objects {
                return Err(UsageError(
                    "--format parquet writes one Parquet object per step: it needs poll with --deliver s3://BUCKET/PREFIX/ \
                     (and an s3:// --checkpoint), not stdout, -o or --append (for lines use --format ndjson or ocsf)"
                        .into(),
                ));
            }
            if !cfg!(feature = "parquet") {
                return Err(UsageError(crate::output::PARQUET_MISSING.into()));
            }
        }
        let target = match (&self.output, &self.append) {
            (Some(p), _) if p.as_os_str() == "-" => Target::Stdout,
            (Some(p), _) => Target::Replace(p.clone()),
            (None, Some(p)) => Target::Append(p.clone()),
            (None, None) => Target::Stdout,
        };
        let format = self.format.unwrap_or(
            if target == Target::Stdout && std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Ndjson
            },
        );
        if matches!(target, Target::Append(_)) && !format.is_lines() {
            return Err(UsageError(
                "--append takes --format ndjson, csv or ocsf".into(),
            ));
        }
        let exclusions = self
            .exclude
            .iter()
            .map(|spec| Exclusion::parse(spec).map_err(UsageError))
            .collect::<Result<_, _>>()?;
        // Colour only for a person: a terminal, and no NO_COLOR (any
        // non-empty value, as no-color.org has it).
        let colour = format == Format::Table
            && target == Target::Stdout
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        // The terminal is asked only for a table that fits one.
        let width = (format == Format::Table && !self.wide).then(crate::output::terminal_width);
        Ok(OutputConfig {
            format,
            target,
            exclusions,
            min_severity: self.min_severity,
            rules: self.rules,
            max_addresses: AddressCap::new(self.max_addresses),
            rollup: self.rollup,
            colour,
            width,
            fail_on_findings: self.fail_on_findings,
            quiet: self.quiet,
        })
    }
}

/// Parses `2m`, `1h30m`, `90s` and the like.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, UsageError> {
    humantime::parse_duration(text).map_err(|e| {
        // A bare number has no unit: suggest seconds and minutes, never
        // humantime's own example of milliseconds.
        let hint = match text.trim().parse::<u64>() {
            Ok(n) if n % 60 == 0 && n > 0 => {
                format!("a duration needs a unit: {n}s or {}m?", n / 60)
            }
            Ok(n) => format!("a duration needs a unit: {n}s or {n}m?"),
            Err(_) => e.to_string(),
        };
        UsageError(format!(
            "{flag} '{text}': {hint} (examples: 90s, 10m, 2h, 1d)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_args(extra: &[&str]) -> OutputArgs {
        let mut argv = vec!["kubeanon", "scan"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Scan(s) => s.output,
            _ => unreachable!(),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn max_addresses_is_64_unless_given_and_0_lifts_it() {
        let cap = |extra: &[&str]| output_args(extra).resolve().unwrap().max_addresses;
        assert_eq!(cap(&[]), AddressCap::new(64));
        assert_eq!(cap(&["--max-addresses", "8"]), AddressCap::new(8));
        assert_eq!(cap(&["--max-addresses", "0"]), AddressCap::none());
        let mut argv = vec!["kubeanon", "scan", "--max-addresses", "-1"];
        assert!(Cli::try_parse_from(&argv).is_err());
        argv[3] = "many";
        assert!(Cli::try_parse_from(&argv).is_err());
    }

    #[test]
    fn parquet_is_only_for_objects() {
        let args = output_args(&["--format", "parquet"]);
        let err = args.resolve().unwrap_err().0;
        assert!(err.contains("needs poll with --deliver s3://"), "{err}");
        assert_eq!(args.resolve_for(true).unwrap().format, Format::Parquet);
        for extra in [&["-o", "x"][..], &["--append", "x"]] {
            let args = output_args(&[&["--format", "parquet"][..], extra].concat());
            assert!(args.resolve().is_err());
        }
    }

    #[test]
    fn append_needs_a_line_format() {
        let err = output_args(&["--append", "x", "--format", "json"])
            .resolve()
            .unwrap_err();
        assert!(err.0.contains("--append"));
        let ok = output_args(&["--append", "x"]).resolve().unwrap();
        assert_eq!(ok.format, Format::Ndjson);
    }

    #[test]
    fn severity_flags_take_levels() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["kubeanon", "scan"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| match c.command {
                Command::Scan(s) => s,
                _ => unreachable!(),
            })
        };
        // Plain --fail-on-findings is any finding, and never eats a path.
        let s = parse(&["--fail-on-findings", "audit.log"]).unwrap();
        assert_eq!(s.output.fail_on_findings, Some(Severity::Informational));
        assert_eq!(s.paths, [std::path::PathBuf::from("audit.log")]);
        let s = parse(&["--fail-on-findings=high"]).unwrap();
        assert_eq!(s.output.fail_on_findings, Some(Severity::High));
        assert_eq!(parse(&[]).unwrap().output.fail_on_findings, None);
        let s = parse(&["--min-severity", "critical", "--rollup"]).unwrap();
        assert_eq!(s.output.min_severity, Some(Severity::Critical));
        assert!(s.output.rollup);
        for bad in [
            &["--min-severity", "severe"][..],
            &["--fail-on-findings=5"],
            &["--min-severity"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["--min-severity", "severe"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("informational, low, medium, high or critical"),
            "{err}"
        );
    }

    #[test]
    fn output_and_append_conflict() {
        assert!(
            Cli::try_parse_from(["kubeanon", "scan", "--output", "a", "--append", "b"]).is_err()
        );
    }

    #[test]
    fn bad_exclusion_is_a_usage_error() {
        assert!(output_args(&["--exclude", "nope=1"]).resolve().is_err());
        assert!(
            output_args(&["--exclude", "userAgent=a,b"])
                .resolve()
                .is_err()
        );
        assert!(
            output_args(&["--exclude", r"userAgent=a\,b,verb=get"])
                .resolve()
                .is_ok()
        );
    }

    #[test]
    fn log_groups_come_once_clusters_first() {
        let parse = |argv: &[&str]| match Cli::try_parse_from(argv).expect("parses").command {
            Command::Doctor(d) => d.aws.log_groups(),
            _ => unreachable!(),
        };
        let groups = parse(&[
            "kubeanon",
            "doctor",
            "--log-group",
            "/x",
            "--cluster",
            "a",
            "--log-group",
            "/aws/eks/a/cluster",
        ]);
        assert_eq!(groups.unwrap(), ["/aws/eks/a/cluster", "/x"]);
        assert!(
            parse(&["kubeanon", "doctor"])
                .unwrap_err()
                .0
                .contains("--all-clusters")
        );
        assert!(
            parse(&["kubeanon", "doctor", "--all-clusters"])
                .unwrap()
                .is_empty()
        );
        assert!(
            parse(&[
                "kubeanon",
                "doctor",
                "--all-clusters",
                "--region",
                "us-east-1,,eu-west-1"
            ])
            .unwrap_err()
            .0
            .contains("--region")
        );
        let two = parse(&[
            "kubeanon",
            "doctor",
            "--all-clusters",
            "--role-arn",
            "arn:aws:iam::111122223333:role/a",
            "--role-arn",
            "arn:aws:iam::111122223333:role/b",
        ]);
        assert!(two.unwrap_err().0.contains("one role per account"));
        assert!(
            parse(&["kubeanon", "doctor", "--all-clusters", "--role-arn", "nope"])
                .unwrap_err()
                .0
                .contains("--role-arn")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("--lag", "2m").unwrap(),
            Duration::from_secs(120)
        );
        assert!(
            parse_duration("--lag", "soon")
                .unwrap_err()
                .0
                .contains("--lag")
        );
        let bare = parse_duration("--since", "60").unwrap_err().0;
        assert!(bare.contains("60s or 1m?"), "{bare}");
        assert!(!bare.contains("ms"), "{bare}");
    }
}
