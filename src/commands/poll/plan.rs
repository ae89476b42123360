//! `poll`'s flags, checked once into a [`Plan`]: the window, the fleet,
//! the read settings, the engine, where state and rows go.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::checkpoint::ReadSettings;
use crate::cli::{Engine, OutputConfig, PollArgs, parse_duration};
use crate::deliver::{Destination, hec};
use crate::exit::UsageError;
use crate::fleet;
use crate::output::Format;
use crate::source::cloudwatch::RetryPolicy;
use crate::source::insights;
use crate::state::{S3Url, Shard};

/// The flags, checked.
pub(super) struct Plan {
    /// `--cluster` and `--log-group`: read in every scope.
    pub(super) named: Vec<String>,
    /// `--all-clusters`, with its `--cluster-match` patterns.
    pub(super) discover: Option<Vec<String>>,
    pub(super) fleet: fleet::Settings,
    pub(super) read: ReadSettings,
    pub(super) page_size: i32,
    /// Explicit start (ms): the first run's, or a rebaseline's.
    pub(super) start_ms: Option<i64>,
    /// The flag that gave `start_ms`, for notes: "--since 5d".
    pub(super) start_label: Option<String>,
    pub(super) end_ms: i64,
    /// How the summary names the end: " (now - 2m lag)" unless --end.
    pub(super) end_label: String,
    pub(super) now_ms: i64,
    pub(super) overlap_ms: i64,
    pub(super) step_ms: i64,
    /// Steps end at UTC midnight (`--format parquet`: an object holds one
    /// `eventDay`).
    pub(super) day_steps: bool,
    pub(super) step_matches: u64,
    pub(super) step_rows: u64,
    pub(super) allow_idle: bool,
    pub(super) rebaseline: bool,
    pub(super) max_rps: f64,
    pub(super) retry: RetryPolicy,
    pub(super) out: OutputConfig,
    /// An s3:// `--checkpoint`: state and leases in S3.
    pub(super) s3_state: Option<S3Url>,
    /// `--deliver`: where rows go instead of stdout, -o or --append.
    pub(super) deliver: Option<Destination>,
    /// `--deliver hec+https://`: its token and settings.
    pub(super) hec: Option<hec::Settings>,
    pub(super) shard: Shard,
    pub(super) lease: Duration,
    /// `--engine insights`: how to use it.
    pub(super) insights: Option<insights::Settings>,
}

pub(super) fn plan(args: &PollArgs, now_ms: i64) -> Result<Plan, UsageError> {
    let named = args.aws.log_groups()?;
    if !(0.01..=1000.0).contains(&args.max_rps) {
        return Err(UsageError(format!(
            "--max-rps {} is out of range: 0.01 to 1000 requests per second (the account's FilterLogEvents quota is 5-25)",
            args.max_rps
        )));
    }
    let lag = ms(parse_duration("--lag", &args.lag)?);
    let overlap = ms(parse_duration("--overlap", &args.overlap)?);
    let insights = insights_settings(args)?;
    let (s3_state, deliver) = deliver_settings(args)?;
    let s3_state_given = s3_state.is_some();
    // Insights reads a step with several queries at once, each costing
    // seconds however short: longer steps, fewer of them.
    let step_span =
        (args.step_span.as_deref()).unwrap_or(if insights.is_some() { "1d" } else { "1h" });
    let step_ms = ms(parse_duration("--step-span", step_span)?);
    if step_ms < 1000 {
        return Err(UsageError("--step-span must be at least 1s".into()));
    }
    let end_ms = match &args.end {
        Some(t) => parse_time("--end", t, now_ms)?,
        None => now_ms - lag,
    };
    // A checkpoint's watermark must never pass what can have been written:
    // a window ending in the future would skip everything up to there.
    if args.checkpoint.is_some() && end_ms > now_ms - lag {
        return Err(UsageError(format!(
            "--end {} is later than now minus --lag ({}): a checkpointed run may not read past it, \
             or its watermark would skip events not yet written; drop --end, or use no --checkpoint for this read",
            rfc3339(end_ms),
            rfc3339(now_ms - lag)
        )));
    }
    let start_ms = match (&args.start, &args.since) {
        (Some(t), _) => Some(parse_time("--start", t, now_ms)?),
        (None, Some(d)) => {
            let since = ms(parse_duration("--since", d)?);
            if since <= lag && args.end.is_none() {
                return Err(UsageError(format!(
                    "--since {d} is not longer than --lag {}: the last --lag is left out (its events are still arriving), \
                     so the window would be empty; ask for more (--since 1h), or pass --lag 0s to read up to now",
                    args.lag
                )));
            }
            Some(now_ms - since)
        }
        (None, None) => None,
    };
    if let Some(start) = start_ms
        && start >= end_ms
    {
        return Err(UsageError(format!(
            "the window is empty: start {} is not before end {}",
            rfc3339(start),
            rfc3339(end_ms)
        )));
    }
    let start_label = match (&args.start, &args.since) {
        (Some(t), _) => Some(format!("--start {t}")),
        (None, Some(d)) => Some(format!("--since {d}")),
        (None, None) => None,
    };
    Ok(Plan {
        start_label,
        end_label: match &args.end {
            Some(_) => String::new(),
            None => format!(" (now - {} lag)", args.lag),
        },
        named,
        discover: args
            .aws
            .all_clusters
            .then(|| args.aws.cluster_match.clone()),
        fleet: args
            .aws
            .fleet(parse_duration("--attempt-timeout", &args.attempt_timeout)?),
        read: ReadSettings {
            stream_prefix: args.aws.stream_prefix.clone(),
            server_filter: !args.no_server_filter,
            rules: Some(args.output.rules),
        },
        page_size: args.page_size,
        start_ms,
        end_ms,
        now_ms,
        overlap_ms: overlap,
        step_ms,
        day_steps: args.output.format == Some(crate::output::Format::Parquet),
        step_matches: args.step_matches,
        step_rows: args.step_rows,
        allow_idle: args.allow_idle,
        rebaseline: args.rebaseline,
        max_rps: args.max_rps,
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        out: args
            .output
            .resolve_for(matches!(deliver, Some(Destination::Objects(_))))?,
        insights,
        s3_state,
        hec: match &deliver {
            Some(Destination::Hec(url)) => Some(hec::Settings::from_args(url, args)?),
            _ => None,
        },
        deliver,
        shard: match &args.shard {
            Some(t) => Shard::parse(t)?,
            None => Shard::ALL,
        },
        lease: lease(args, s3_state_given)?,
    })
}

/// `--lease`, checked against the longest an S3 request can take before
/// anything is reached (see `state::lease` for why it must cover twice
/// that and the clock's error).
fn lease(args: &PollArgs, s3_state: bool) -> Result<Duration, UsageError> {
    let lease = parse_duration("--lease", &args.lease)?;
    let attempt = parse_duration("--attempt-timeout", &args.attempt_timeout)?;
    let min = crate::state::lease::shortest_for(crate::state::s3::longest_request(attempt));
    if s3_state && lease < min {
        return Err(UsageError(format!(
            "--lease {}: too short for S3 requests of up to {} (3 attempts of --attempt-timeout); \
             a holder writes only with half its lease left: use at least {}",
            args.lease,
            humantime::format_duration(crate::state::s3::longest_request(attempt)),
            humantime::format_duration(Duration::from_secs(min.as_secs_f64().ceil() as u64))
        )));
    }
    Ok(lease)
}

/// The HEC flags without `--deliver hec+https://`.
const HEC_FLAGS_ALONE: &str =
    "--hec-token-file, --hec-index, --hec-ack and --hec-ca go with --deliver hec+https://HOST:PORT";

/// `--checkpoint` and `--deliver`, checked: where state is kept (an
/// s3:// checkpoint's bucket; else a file, or nothing) and where rows go
/// (None: stdout, -o or --append). S3 objects need S3 state (each unit's
/// state records an object's key before it is written); Security Hub and
/// HEC take any state or none.
fn deliver_settings(args: &PollArgs) -> Result<(Option<S3Url>, Option<Destination>), UsageError> {
    let state = args
        .checkpoint
        .as_deref()
        .and_then(|p| p.to_str())
        .filter(|p| p.starts_with("s3://"))
        .map(|p| S3Url::parse("--checkpoint", p))
        .transpose()?;
    let hec_flags = args.hec_token_file.is_some()
        || args.hec_index.is_some()
        || args.hec_ack
        || args.hec_ca.is_some();
    let Some(deliver) = &args.deliver else {
        if state.is_some() {
            return Err(UsageError(
                "an s3:// --checkpoint needs a --deliver: s3://BUCKET/PREFIX/ (each unit's state records the key of \
                 each delivery before writing it, which is what makes deliveries exactly once), securityhub or \
                 hec+https://HOST:PORT"
                    .into(),
            ));
        }
        if hec_flags {
            return Err(UsageError(HEC_FLAGS_ALONE.into()));
        }
        return Ok((None, None));
    };
    if args.output.output.is_some() || args.output.append.is_some() {
        return Err(UsageError(format!(
            "with --deliver, rows go to {} only: drop -o/--append",
            crate::output::neutralise_terminal(deliver)
        )));
    }
    let destination = Destination::parse(deliver)?;
    // Each target takes its own formats; any other is a surprise, never a
    // silent substitute.
    let takes: &[Format] = match &destination {
        Destination::Objects(_) => &[Format::Ndjson, Format::Ocsf, Format::Parquet],
        Destination::Hec(_) => &[Format::Ndjson, Format::Ocsf],
        Destination::SecurityHub { .. } => &[],
    };
    if let Some(format) = args.output.format
        && !takes.contains(&format)
    {
        let name = |f: &Format| {
            clap::ValueEnum::to_possible_value(f)
                .map_or_else(String::new, |v| v.get_name().to_string())
        };
        return Err(UsageError(match takes {
            [] => "--deliver securityhub imports ASFF findings, whatever the format: drop --format"
                .to_string(),
            _ => format!(
                "--deliver {} takes --format {}, not {}",
                crate::output::neutralise_terminal(deliver),
                takes.iter().map(name).collect::<Vec<_>>().join(" or "),
                name(&format)
            ),
        }));
    }
    match &destination {
        Destination::Objects(_) if state.is_none() => {
            return Err(UsageError(
                "--deliver s3:// needs an s3:// --checkpoint: the state records each delivery's key before the \
                 object is written, which is what makes it exactly once"
                    .into(),
            ));
        }
        Destination::Hec(_) => {}
        _ if hec_flags => {
            return Err(UsageError(HEC_FLAGS_ALONE.into()));
        }
        _ => {}
    }
    Ok((state, Some(destination)))
}

/// `--engine` and the flags that go with it, checked.
fn insights_settings(args: &PollArgs) -> Result<Option<insights::Settings>, UsageError> {
    if args.engine == Engine::Filter {
        if args.query_limit.is_some() || args.max_queries.is_some() || args.max_scan_gb.is_some() {
            return Err(UsageError(
                "--query-limit, --max-queries and --max-scan-gb go with --engine insights".into(),
            ));
        }
        return Ok(None);
    }
    if args.checkpoint.is_some() {
        return Err(UsageError(
            "--engine insights reads ad-hoc windows only: Insights returns no eventIds, which --checkpoint needs \
             to report each event once across runs; drop --checkpoint for this read, or use --engine filter"
                .into(),
        ));
    }
    let max_scan_bytes = match args.max_scan_gb {
        Some(gb) if gb.is_finite() && gb > 0.0 => Some(gb * insights::GB),
        Some(gb) => {
            return Err(UsageError(format!(
                "--max-scan-gb {gb}: a number of gigabytes above 0 (0.5, 20)"
            )));
        }
        None => None,
    };
    Ok(Some(insights::Settings {
        limit: args.query_limit.unwrap_or(10_000),
        max_queries: args.max_queries.unwrap_or(4) as usize,
        max_scan_bytes,
        polling: insights::Polling::default(),
        rules: args.output.rules,
    }))
}

/// The end of a step that starts at `s`, for a plan whose steps end at UTC
/// midnight: the next midnight after `s`.
pub(super) fn next_midnight(s: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    s.div_euclid(DAY).saturating_add(1).saturating_mul(DAY)
}

pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `--start`/`--end`: RFC 3339, or a duration before now.
fn parse_time(flag: &str, text: &str, now_ms: i64) -> Result<i64, UsageError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    match humantime::parse_duration(text) {
        Ok(d) => Ok(now_ms - ms(d)),
        Err(_) => Err(UsageError(format!(
            "{flag} '{text}': expected an RFC 3339 time (2026-01-31T12:00:00Z) or a duration before now (2h)"
        ))),
    }
}

pub(super) fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_steps_end_at_the_next_utc_midnight() {
        let midnight = 1_795_996_800_000; // 2026-12-01T00:00:00Z
        assert_eq!(next_midnight(midnight - 1), midnight);
        assert_eq!(next_midnight(midnight - 86_399_999), midnight);
        // A step starting at midnight runs to the next one, never ends at once.
        assert_eq!(next_midnight(midnight), midnight + 86_400_000);
    }

    #[test]
    fn times() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("--start", "2h", now).unwrap(), now - 7_200_000);
        assert_eq!(
            parse_time("--start", "2023-11-14T22:13:20Z", now).unwrap(),
            now
        );
        assert!(
            parse_time("--start", "yesterday", now)
                .unwrap_err()
                .0
                .contains("--start")
        );
        assert_eq!(rfc3339(now), "2023-11-14T22:13:20.000Z");
    }
}
