//! Errors a person can act on. The SDK's own error chains are long debug
//! dumps; they go to `-v` only, and the message says what went wrong in
//! words and what to do: no credentials (and where the chain looked), a
//! profile that does not exist, an endpoint that cannot be reached, a log
//! group that does not exist (and the EKS ones that do), access denied.

use std::path::PathBuf;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Where the standard credential chain looks, in its order.
pub const CHAIN: &str = "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), \
     the shared config and credentials files (a profile: static keys, SSO, credential_process, role), \
     web identity (AWS_WEB_IDENTITY_TOKEN_FILE: IRSA), container credentials (EKS Pod Identity, ECS) \
     and instance metadata (IMDS)";

/// Why credentials could not be loaded, in words.
pub fn credentials(err: &CredentialsError, profile: Option<&str>) -> String {
    tracing::debug!(error = %DisplayErrorContext(err), "loading credentials");
    let fixes = match profile {
        Some(p) => format!("run `aws sso login --profile {p}` if it is an SSO profile, or check its keys"),
        None => "run `aws configure` or `aws sso login`, pass --profile, or run where a role is attached (IRSA, Pod Identity, an instance profile)".to_string(),
    };
    match err {
        CredentialsError::CredentialsNotLoaded(_) => {
            format!("no AWS credentials found: kubeanon looked in {CHAIN}; {fixes}")
        }
        CredentialsError::ProviderTimedOut(_) => format!(
            "no AWS credentials: the credential provider timed out (instance metadata or the container endpoint did not answer); {fixes}"
        ),
        other => format!(
            "cannot load AWS credentials: {}; {fixes}",
            root_cause(other)
        ),
    }
}

/// The profile a run asks for (`--profile`, else `AWS_PROFILE`), when it is
/// in none of the files the SDK reads: the message says which were read.
pub fn missing_profile(profile: Option<&str>) -> Option<String> {
    let from_env = std::env::var("AWS_PROFILE").ok();
    let name = profile.or(from_env.as_deref())?;
    let files = profile_files();
    let mut read = Vec::new();
    for (path, credentials) in &files {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let names = sections(&text, *credentials);
                if names.iter().any(|n| n == name) {
                    return None;
                }
                read.push(format!(
                    "{} (profiles: {})",
                    path.display(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            }
            Err(_) => read.push(format!("{} (not found)", path.display())),
        }
    }
    Some(format!(
        "AWS profile '{name}' does not exist{}: kubeanon read {}",
        if profile.is_none() {
            " (from AWS_PROFILE)"
        } else {
            ""
        },
        read.join(" and ")
    ))
}

/// The config file and the credentials file, as the SDK finds them.
fn profile_files() -> Vec<(PathBuf, bool)> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let pick = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(default))
    };
    vec![
        (pick("AWS_CONFIG_FILE", "config"), false),
        (pick("AWS_SHARED_CREDENTIALS_FILE", "credentials"), true),
    ]
}

/// Profile names in a config (`[profile x]`, `[default]`) or credentials
/// (`[x]`) file.
fn sections(text: &str, credentials: bool) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.strip_suffix(']')?.trim();
            if credentials {
                return Some(inner.to_string());
            }
            match inner.strip_prefix("profile") {
                Some(rest) if rest.starts_with(char::is_whitespace) => {
                    Some(rest.trim().to_string())
                }
                _ if inner == "default" => Some(inner.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// The innermost message of an error chain: the part a person can read
/// ("Connection refused (os error 111)").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// Did the request fail before it reached the server (refused, no such
/// host, no route)?
pub fn is_connect_failure<E, R>(err: &SdkError<E, R>) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    connector_chain(err).any(|cur| {
        cur.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|h| h.is_connect())
            || cur.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                )
            })
    })
}

/// The connector error of a request that failed before it reached the
/// server, and its sources, outermost first; empty for any other error.
fn connector_chain<'e, E, R>(
    err: &'e SdkError<E, R>,
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let first = match err {
        SdkError::DispatchFailure(d) => d
            .as_connector_error()
            .map(|c| c as &(dyn std::error::Error + 'static)),
        _ => None,
    };
    std::iter::successors(first, |cur| cur.source())
}

/// Did the request fail because its endpoint's host name does not exist
/// (DNS said no such name: a region that does not exist, a mistyped
/// host)? Not a resolver that failed for now ("Temporary failure in name
/// resolution"): that is [`is_connect_failure`], retried.
pub fn is_no_such_host<E, R>(err: &SdkError<E, R>) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut dns = false;
    for cur in connector_chain(err) {
        let text = cur.to_string();
        // hyper-util's ConnectError for a failed lookup says just this.
        dns |= text == "dns error";
        if text.to_ascii_lowercase().contains("temporary") {
            return false;
        }
    }
    dns
}

/// What to say when `service`'s host in `region` does not exist: the host,
/// and whether to doubt the region (AWS's own endpoint) or the override.
pub fn no_such_host(service: &str, region: &str, endpoint: &str) -> String {
    let host = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or(endpoint);
    let own = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
    let check = if own && host.contains(region) {
        "is the region right?"
    } else {
        "is the host in --endpoint-url (or AWS_ENDPOINT_URL) right?"
    };
    format!("cannot reach {service} in {region} ({host}): no such host; {check}")
}

/// A short description of an SDK error: the service's code and message,
/// or the innermost cause. The whole chain goes to `-v`.
pub fn short<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    tracing::debug!(error = %DisplayErrorContext(err), "AWS error");
    match err {
        SdkError::ServiceError(e) => {
            let e = e.err();
            match (e.code(), e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => e.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "the request timed out".to_string(),
        SdkError::DispatchFailure(d) => match d.as_connector_error() {
            Some(c) => root_cause(c),
            None => "the request could not be sent".to_string(),
        },
        SdkError::ResponseError(_) => "the response could not be read".to_string(),
        other => other.to_string(),
    }
}

/// The endpoint a client talks to, for messages.
pub fn endpoint(endpoint_url: Option<&str>, region: &str) -> String {
    service_endpoint(endpoint_url, "CLOUDWATCH_LOGS", "logs", region)
}

/// Where a service's client connects, for messages: the override, the
/// service's own variable (`AWS_ENDPOINT_URL_<SERVICE>`), the general one,
/// or AWS's regional endpoint.
pub fn service_endpoint(
    endpoint_url: Option<&str>,
    env_service: &str,
    host: &str,
    region: &str,
) -> String {
    endpoint_url
        .map(str::to_string)
        .or_else(|| std::env::var(format!("AWS_ENDPOINT_URL_{env_service}")).ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| format!("https://{host}.{region}.amazonaws.com"))
}

/// The command that turns a cluster's audit logging on.
pub fn enable_audit_command(cluster: &str, region: &str) -> String {
    format!(
        "aws eks update-cluster-config --name {cluster} --region {region} --logging \
         '{{\"clusterLogging\":[{{\"types\":[\"audit\"],\"enabled\":true}}]}}'"
    )
}

/// "Enable its audit logs: " and [`enable_audit_command`].
pub fn enable_audit(cluster: &str, region: &str) -> String {
    format!(
        "Enable its audit logs: {}",
        enable_audit_command(cluster, region)
    )
}

/// The closest of `names` to `wanted` (edit distance at most a third of
/// its length, at least 2), for "did you mean".
pub fn closest<'a>(wanted: &str, names: &'a [String]) -> Option<&'a str> {
    let limit = (wanted.chars().count() / 3).max(2);
    names
        .iter()
        .map(|n| (distance(wanted, n), n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

/// Levenshtein distance with transpositions counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_such_host_doubts_the_region_only_on_aws_own_endpoint() {
        assert_eq!(
            no_such_host(
                "CloudWatch Logs",
                "us-east-9",
                "https://logs.us-east-9.amazonaws.com"
            ),
            "cannot reach CloudWatch Logs in us-east-9 (logs.us-east-9.amazonaws.com): no such host; is the region right?"
        );
        let other = no_such_host(
            "CloudWatch Logs",
            "us-east-1",
            "http://emulator.invalid:4566/x",
        );
        assert!(other.contains("(emulator.invalid:4566)"), "{other}");
        assert!(other.contains("--endpoint-url"), "{other}");
    }

    #[test]
    fn closest_names() {
        let names: Vec<String> = ["demo", "prod-eu", "staging"].map(String::from).to_vec();
        assert_eq!(closest("dmeo", &names), Some("demo"));
        assert_eq!(closest("prod-us", &names), Some("prod-eu"));
        assert_eq!(closest("analytics", &names), None);
    }

    #[test]
    fn profile_sections() {
        let config = "[default]\nregion=x\n[profile prod]\n[profilex]\n[sso-session s]\n";
        assert_eq!(sections(config, false), ["default", "prod"]);
        assert_eq!(sections("[a]\n[ b ]\n", true), ["a", "b"]);
    }
}
