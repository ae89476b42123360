//! Each cluster's Kubernetes version, as EKS says (`DescribeCluster`'s
//! `cluster.version`, e.g. "1.33"), and what it means for anonymous
//! access: since 1.32 EKS lets anonymous reach only the health paths
//! (`/healthz`, `/livez`, `/readyz`; EKS user guide, "Anonymous
//! authentication changes", upstream KEP-4633) and refuses every other
//! unauthenticated request with a 401.
//!
//! The version is never needed to read a cluster: a lookup that fails (or
//! a log group EKS does not know) makes it [`KubernetesVersion::Unknown`]
//! with the reason, and the run goes on; [`unknown_note`] says so once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_eks::error::ProvideErrorMetadata;
use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
use futures_util::StreamExt;

use super::Scope;
use crate::output::neutralise_terminal;
use crate::source::advice;

/// The `kubernetes_version` value when the version is not known.
pub const UNKNOWN: &str = "unknown";

/// DescribeCluster calls in flight per scope (EKS's own quota).
pub(super) const DESCRIBE_CONCURRENCY: usize = 4;

/// Whether anonymous requests reach only the health paths on a cluster of
/// this Kubernetes version: `Some(true)` from 1.32 on, `Some(false)` before,
/// `None` when the version is unknown or not a version ("1.32", "1.32.0",
/// "v1.33" and "1.33-eks-..." are read; "unknown", "", "1" are not).
pub fn anonymous_health_only(version: &str) -> Option<bool> {
    let v = version.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let mut parts = v.splitn(3, '.');
    let major = parts.next()?;
    if !major.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let major = numbered(major)?;
    // The minor and patch may carry a suffix ("33+", "0-eks-1-32-1").
    let minor = numbered(parts.next()?)?;
    if let Some(patch) = parts.next() {
        numbered(patch)?;
    }
    Some((major, minor) >= (1, 32))
}

/// The number a version part starts with, when only `+` or `-` (a build
/// or vendor suffix) follows it.
fn numbered(part: &str) -> Option<u32> {
    let digits = part.bytes().take_while(u8::is_ascii_digit).count();
    match part.as_bytes().get(digits) {
        _ if digits == 0 => None,
        None | Some(b'+' | b'-') => part[..digits].parse().ok(),
        Some(_) => None,
    }
}

/// A cluster's Kubernetes version, or why it is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesVersion {
    /// As EKS says (not necessarily one [`anonymous_health_only`] reads).
    Known(String),
    Unknown(Unknown),
}

/// Why a version is not known.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unknown {
    /// The log group is not `/aws/eks/NAME/cluster`: no cluster to ask about.
    NotEks,
    /// EKS has no cluster of that name (deleted, or never an EKS one).
    NoCluster,
    /// eks:DescribeCluster was refused.
    Denied,
    /// eks:DescribeCluster was throttled, retries included.
    Throttled,
    /// EKS did not answer (network, DNS, timeout).
    Unreachable,
    /// Another error (its code, when AWS gave one), or an answer without a
    /// version.
    Failed(Option<String>),
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unknown::NotEks => write!(f, "not an EKS control-plane log group"),
            Unknown::NoCluster => write!(f, "EKS has no cluster of that name"),
            Unknown::Denied => write!(f, "eks:DescribeCluster was denied"),
            Unknown::Throttled => write!(f, "eks:DescribeCluster was throttled"),
            Unknown::Unreachable => write!(f, "EKS could not be reached"),
            Unknown::Failed(Some(code)) => {
                write!(
                    f,
                    "eks:DescribeCluster failed ({})",
                    neutralise_terminal(code)
                )
            }
            Unknown::Failed(None) => write!(f, "eks:DescribeCluster gave no version"),
        }
    }
}

impl KubernetesVersion {
    /// A DescribeCluster answer's `cluster.version`.
    pub fn from_answer(version: Option<&str>) -> KubernetesVersion {
        match version.filter(|v| !v.is_empty()) {
            Some(v) => KubernetesVersion::Known(v.to_string()),
            None => KubernetesVersion::Unknown(Unknown::Failed(None)),
        }
    }

    /// The `kubernetes_version` column: the version, or `unknown`.
    pub fn column(&self) -> &str {
        match self {
            KubernetesVersion::Known(v) => v,
            KubernetesVersion::Unknown(_) => UNKNOWN,
        }
    }

    /// [`anonymous_health_only`] of the version (None when unknown).
    pub fn health_only(&self) -> Option<bool> {
        match self {
            KubernetesVersion::Known(v) => anonymous_health_only(v),
            KubernetesVersion::Unknown(_) => None,
        }
    }

    /// What anonymous can reach on the cluster, for a person.
    pub fn anonymous_reach(&self) -> String {
        match (self.health_only(), self) {
            (Some(true), _) => {
                "anonymous reaches only /healthz, /livez, /readyz; other unauthenticated \
                 requests are refused (401) and reported by the `unauthenticated` rule"
                    .to_string()
            }
            (Some(false), _) => "anonymous reaches whatever RBAC grants system:anonymous / \
                 system:unauthenticated (ESCU's rule)"
                .to_string(),
            (None, KubernetesVersion::Unknown(why)) => format!(
                "what anonymous can reach is not known: the Kubernetes version is unknown ({why})"
            ),
            (None, KubernetesVersion::Known(v)) => format!(
                "what anonymous can reach is not known: Kubernetes version '{}' is not major.minor",
                neutralise_terminal(v)
            ),
        }
    }

    /// doctor's clause: the version, then what anonymous can reach.
    pub fn clause(&self) -> String {
        match self {
            KubernetesVersion::Known(v) if self.health_only().is_some() => {
                format!(
                    "Kubernetes {}: {}",
                    neutralise_terminal(v),
                    self.anonymous_reach()
                )
            }
            _ => self.anonymous_reach(),
        }
    }

    fn from_error(e: &aws_sdk_eks::error::SdkError<DescribeClusterError>) -> KubernetesVersion {
        // The whole chain only with -v, as everywhere.
        tracing::debug!(error = %advice::short(e), "eks:DescribeCluster");
        let why = match e {
            aws_sdk_eks::error::SdkError::ServiceError(s) => {
                let err = s.err();
                let status = s.raw().status().as_u16();
                match err.code() {
                    _ if err.is_resource_not_found_exception() => Unknown::NoCluster,
                    Some(c) if c.contains("AccessDenied") || c == "UnauthorizedOperation" => {
                        Unknown::Denied
                    }
                    _ if status == 403 => Unknown::Denied,
                    Some(c) if c.contains("Throttl") || c == "TooManyRequestsException" => {
                        Unknown::Throttled
                    }
                    _ if status == 429 => Unknown::Throttled,
                    code => Unknown::Failed(code.map(str::to_string)),
                }
            }
            e if advice::is_connect_failure(e) => Unknown::Unreachable,
            aws_sdk_eks::error::SdkError::TimeoutError(_)
            | aws_sdk_eks::error::SdkError::DispatchFailure(_) => Unknown::Unreachable,
            _ => Unknown::Failed(None),
        };
        KubernetesVersion::Unknown(why)
    }
}

impl std::fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.column())
    }
}

/// An EKS client for a scope's discovery and lookups: the SDK's standard
/// retries (the run's own are for FilterLogEvents), `max_attempts` of them.
pub(super) fn eks_client(
    scope: &Scope,
    attempt_timeout: Duration,
    max_attempts: u32,
) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::from_conf(
        aws_sdk_eks::config::Builder::from(&scope.config)
            .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build(),
    )
}

/// The version of the cluster of each of `log_groups` in `scope`: one
/// DescribeCluster per EKS cluster name (4 at a time), none for a log group
/// that is not `/aws/eks/NAME/cluster`. Never fails: a failed lookup is an
/// [`Unknown`] version.
pub async fn lookup<'a>(
    scope: &Scope,
    log_groups: impl IntoIterator<Item = &'a str>,
    attempt_timeout: Duration,
) -> BTreeMap<String, KubernetesVersion> {
    lookup_described(scope, log_groups, attempt_timeout)
        .await
        .into_iter()
        .map(|(g, (v, _))| (g, v))
        .collect()
}

/// Whether a DescribeCluster answer says audit logging is on (None: it
/// says nothing of logging).
pub fn audit_logging(cluster: Option<&aws_sdk_eks::types::Cluster>) -> Option<bool> {
    cluster.and_then(|c| c.logging()).map(|l| {
        l.cluster_logging().iter().any(|s| {
            s.enabled() == Some(true) && s.types().contains(&aws_sdk_eks::types::LogType::Audit)
        })
    })
}

/// [`lookup`], with whether the same answer says audit logging is on
/// (None: not known).
pub async fn lookup_described<'a>(
    scope: &Scope,
    log_groups: impl IntoIterator<Item = &'a str>,
    attempt_timeout: Duration,
) -> BTreeMap<String, (KubernetesVersion, Option<bool>)> {
    let mut out = BTreeMap::new();
    let mut names = BTreeSet::new();
    for g in log_groups {
        match crate::source::cloudwatch::cluster_name(g) {
            name if name == g => {
                out.insert(
                    g.to_string(),
                    (KubernetesVersion::Unknown(Unknown::NotEks), None),
                );
            }
            name => {
                names.insert((name.to_string(), g.to_string()));
            }
        }
    }
    if names.is_empty() {
        return out;
    }
    // A version is worth little retrying: a few attempts, then unknown.
    let eks = eks_client(scope, attempt_timeout, 3);
    let found: Vec<(String, (KubernetesVersion, Option<bool>))> = futures_util::stream::iter(names)
        .map(|(name, group)| {
            let eks = &eks;
            async move {
                let v = match eks.describe_cluster().name(&name).send().await {
                    Ok(out) => (
                        KubernetesVersion::from_answer(out.cluster().and_then(|c| c.version())),
                        audit_logging(out.cluster()),
                    ),
                    Err(e) => (KubernetesVersion::from_error(&e), None),
                };
                (group, v)
            }
        })
        .buffered(DESCRIBE_CONCURRENCY)
        .collect()
        .await;
    out.extend(found);
    out
}

/// The run's one line about versions it could not learn, naming how many
/// clusters (of `versions`) and why; None when every version is known.
pub fn unknown_note<'a>(
    versions: impl IntoIterator<Item = &'a KubernetesVersion>,
) -> Option<String> {
    let mut why: BTreeMap<&Unknown, usize> = BTreeMap::new();
    for v in versions {
        if let KubernetesVersion::Unknown(u) = v {
            *why.entry(u).or_default() += 1;
        }
    }
    let total: usize = why.values().sum();
    if total == 0 {
        return None;
    }
    let reasons: Vec<String> = why.iter().map(|(u, n)| format!("{n}: {u}")).collect();
    Some(format!(
        "Kubernetes version unknown for {total} cluster(s) ({}); their kubernetes_version is {UNKNOWN}, \
         and what anonymous can reach there is not known (from 1.32, EKS lets it reach only /healthz, /livez, /readyz)",
        reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_1_32_on_let_anonymous_reach_only_health_paths() {
        for v in [
            "1.32",
            "1.33",
            "1.32.0",
            "v1.33",
            "V1.40",
            "1.32.5-eks-1-32-3",
            "1.33+",
            " 1.34 ",
            "2.0",
            "1.100",
        ] {
            assert_eq!(anonymous_health_only(v), Some(true), "{v}");
        }
        for v in [
            "1.31",
            "1.29",
            "v1.31.2",
            "1.9",
            "1.31-eks-abc",
            "0.99",
            "1.0",
        ] {
            assert_eq!(anonymous_health_only(v), Some(false), "{v}");
        }
        for v in [
            "unknown",
            "",
            "1",
            "v",
            "1.",
            ".32",
            "1.x",
            "one.32",
            "1.32a",
            "1.32.x",
            "-1.32",
            "1..32",
            "1.3 2",
            "v 1.33",
            "99999999999.1",
        ] {
            assert_eq!(anonymous_health_only(v), None, "{v:?}");
        }
    }

    #[test]
    fn what_anonymous_can_reach_follows_the_version() {
        let new = KubernetesVersion::Known("1.33".into());
        assert_eq!(new.column(), "1.33");
        assert!(
            new.clause()
                .starts_with("Kubernetes 1.33: anonymous reaches only /healthz, /livez, /readyz; ")
        );
        assert!(new.clause().contains("`unauthenticated` rule"));
        let old = KubernetesVersion::Known("1.31".into());
        assert_eq!(
            old.clause(),
            "Kubernetes 1.31: anonymous reaches whatever RBAC grants system:anonymous / system:unauthenticated (ESCU's rule)"
        );
        let unknown = KubernetesVersion::Unknown(Unknown::Denied);
        assert_eq!(unknown.column(), UNKNOWN);
        assert_eq!(unknown.health_only(), None);
        assert_eq!(
            unknown.clause(),
            "what anonymous can reach is not known: the Kubernetes version is unknown (eks:DescribeCluster was denied)"
        );
        // What EKS says reaches the terminal escaped.
        let odd = KubernetesVersion::Known("1.x\u{1b}[31m".into());
        assert!(
            odd.clause().contains("'1.x\\u{1b}[31m'"),
            "{}",
            odd.clause()
        );
        let code = Unknown::Failed(Some("Bad\u{202e}".into())).to_string();
        assert!(code.contains("Bad\\u{202e}"), "{code}");
        assert_eq!(
            KubernetesVersion::from_answer(Some("")),
            KubernetesVersion::Unknown(Unknown::Failed(None))
        );
    }

    #[test]
    fn unknown_versions_are_one_line_with_counts_and_reasons() {
        let v = |u| KubernetesVersion::Unknown(u);
        assert_eq!(
            unknown_note(&[KubernetesVersion::Known("1.33".into())]),
            None
        );
        let list = [
            v(Unknown::NoCluster),
            KubernetesVersion::Known("1.31".into()),
            v(Unknown::Denied),
            v(Unknown::NoCluster),
            v(Unknown::NotEks),
        ];
        let note = unknown_note(&list).unwrap();
        assert!(!note.contains('\n'));
        assert!(
            note.starts_with(
                "Kubernetes version unknown for 4 cluster(s) (1: not an EKS control-plane log group; \
                 2: EKS has no cluster of that name; 1: eks:DescribeCluster was denied); "
            ),
            "{note}"
        );
    }
}
