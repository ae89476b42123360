//! Discovery: a scope's EKS clusters (ListClusters, DescribeCluster) and
//! its EKS control-plane log groups (DescribeLogGroups), joined into what a
//! run reads and what it cannot see.
//!
//! A cluster whose audit logging is off is blind: nothing kubeanon (or
//! anyone) does can find anonymous access to it, so it is a failure of that
//! cluster, never a quiet skip. A log group whose cluster is gone is left
//! out (it would be blind on every run) but named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, anyhow};
use aws_config::retry::RetryConfig;
use futures_util::StreamExt;

use super::Scope;
use super::version::{DESCRIBE_CONCURRENCY, KubernetesVersion, eks_client};
use crate::source::advice;
use crate::source::cloudwatch::{cluster_log_group, cluster_name};

/// What a scope holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// EKS clusters (name order) and whether audit logging is on.
    pub clusters: Vec<Cluster>,
    /// EKS control-plane log groups present (`/aws/eks/NAME/cluster`).
    pub log_groups: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub audit_logging: bool,
    /// From the same DescribeCluster answer.
    pub version: KubernetesVersion,
}

impl Found {
    /// The version of each discovered cluster, by its log group's name.
    pub fn versions(&self) -> BTreeMap<String, KubernetesVersion> {
        self.clusters
            .iter()
            .map(|c| (cluster_log_group(&c.name), c.version.clone()))
            .collect()
    }
}

/// A cluster discovery selected, and what a run can do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Audit logging on: its log group is read.
    Readable { cluster: String, log_group: String },
    /// Audit logging off: blind.
    AuditOff { cluster: String },
    /// No such cluster, but its log group remains: not read.
    Deleted { cluster: String, log_group: String },
}

impl Coverage {
    pub fn cluster(&self) -> &str {
        match self {
            Coverage::Readable { cluster, .. }
            | Coverage::AuditOff { cluster }
            | Coverage::Deleted { cluster, .. } => cluster,
        }
    }
}

/// Lists the scope's clusters and EKS log groups.
pub async fn find(scope: &Scope, attempt_timeout: Duration) -> Result<Found> {
    // Discovery is a handful of calls outside FilterLogEvents' quota: the
    // SDK's standard retries (the run's own are for FilterLogEvents).
    let retry = RetryConfig::standard().with_max_attempts(5);
    let eks = eks_client(scope, attempt_timeout, 5);
    let logs = aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&scope.config)
            .retry_config(retry)
            .build(),
    );
    let names: Vec<String> = eks
        .list_clusters()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| {
            anyhow!(
                "cannot list EKS clusters (eks:ListClusters) in {scope}: {}",
                advice::short(&e)
            )
        })?;
    let clusters: Vec<Result<Cluster>> = futures_util::stream::iter(names)
        .map(|name| {
            let eks = &eks;
            async move {
                let out = eks
                    .describe_cluster()
                    .name(&name)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "cannot describe EKS cluster {name} (eks:DescribeCluster) in {scope}: {}",
                            advice::short(&e)
                        )
                    })?;
                let version =
                    KubernetesVersion::from_answer(out.cluster().and_then(|c| c.version()));
                let audit_logging = out
                    .cluster()
                    .and_then(|c| c.logging())
                    .map(|l| {
                        l.cluster_logging().iter().any(|s| {
                            s.enabled() == Some(true)
                                && s.types().contains(&aws_sdk_eks::types::LogType::Audit)
                        })
                    })
                    .unwrap_or(false);
                Ok(Cluster {
                    name,
                    audit_logging,
                    version,
                })
            }
        })
        .buffered(DESCRIBE_CONCURRENCY)
        .collect()
        .await;
    let mut clusters = clusters.into_iter().collect::<Result<Vec<_>>>()?;
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let groups: Vec<aws_sdk_cloudwatchlogs::types::LogGroup> = logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/eks/")
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| {
            anyhow!(
                "cannot list log groups (logs:DescribeLogGroups) in {scope}: {}",
                advice::short(&e)
            )
        })?;
    let groups = groups
        .into_iter()
        .filter_map(|g| g.log_group_name)
        .filter(|g| cluster_name(g) != g.as_str());
    Ok(Found {
        clusters,
        log_groups: groups.into_iter().collect(),
    })
}

/// The clusters `patterns` select (all when empty; a pattern is a glob
/// with `*`, ASCII case-insensitive), each with its coverage, in name
/// order.
pub fn select(found: &Found, patterns: &[String]) -> Vec<Coverage> {
    let wanted = |name: &str| {
        patterns.is_empty()
            || patterns
                .iter()
                .any(|p| crate::detect::glob_match(p.as_bytes(), name.as_bytes()))
    };
    let mut out: Vec<Coverage> = found
        .clusters
        .iter()
        .filter(|c| wanted(&c.name))
        .map(|c| match c.audit_logging {
            true => Coverage::Readable {
                cluster: c.name.clone(),
                log_group: cluster_log_group(&c.name),
            },
            false => Coverage::AuditOff {
                cluster: c.name.clone(),
            },
        })
        .collect();
    let live: BTreeSet<&str> = found.clusters.iter().map(|c| c.name.as_str()).collect();
    out.extend(
        found
            .log_groups
            .iter()
            .filter(|g| !live.contains(cluster_name(g)) && wanted(cluster_name(g)))
            .map(|g| Coverage::Deleted {
                cluster: cluster_name(g).to_string(),
                log_group: g.clone(),
            }),
    );
    out.sort_by(|a, b| a.cluster().cmp(b.cluster()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Found {
        Found {
            clusters: vec![
                Cluster {
                    name: "prod-a".into(),
                    audit_logging: true,
                    version: KubernetesVersion::Known("1.33".into()),
                },
                Cluster {
                    name: "prod-b".into(),
                    audit_logging: false,
                    version: KubernetesVersion::Known("1.31".into()),
                },
                Cluster {
                    name: "dev".into(),
                    audit_logging: true,
                    version: KubernetesVersion::Known("1.33".into()),
                },
            ],
            log_groups: [
                "/aws/eks/prod-a/cluster",
                "/aws/eks/prod-gone/cluster",
                "/aws/eks/dev/cluster",
            ]
            .map(String::from)
            .into(),
        }
    }

    #[test]
    fn every_cluster_is_readable_blind_or_deleted() {
        let all = select(&found(), &[]);
        assert_eq!(
            all,
            vec![
                Coverage::Readable {
                    cluster: "dev".into(),
                    log_group: "/aws/eks/dev/cluster".into()
                },
                Coverage::Readable {
                    cluster: "prod-a".into(),
                    log_group: "/aws/eks/prod-a/cluster".into()
                },
                Coverage::AuditOff {
                    cluster: "prod-b".into()
                },
                Coverage::Deleted {
                    cluster: "prod-gone".into(),
                    log_group: "/aws/eks/prod-gone/cluster".into()
                },
            ]
        );
    }

    #[test]
    fn patterns_select_part_of_the_fleet() {
        let names = |p: &[&str]| {
            select(
                &found(),
                &p.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .iter()
            .map(|c| c.cluster().to_string())
            .collect::<Vec<_>>()
        };
        assert_eq!(names(&["prod-*"]), ["prod-a", "prod-b", "prod-gone"]);
        assert_eq!(names(&["PROD-A", "dev"]), ["dev", "prod-a"]);
        assert!(names(&["staging-*"]).is_empty());
    }
}
