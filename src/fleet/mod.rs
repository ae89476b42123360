//! The fleet: which (account, region) pairs a run covers, and the work
//! units in them.
//!
//! An account is the caller's own (no `--role-arn`), or one per assumed
//! role. A [`Scope`] is one (account, region) pair with its credentials:
//! the unit of the FilterLogEvents quota, so each gets its own pacer. A
//! [`WorkUnit`] is one log group of one scope, the thing a checkpoint entry,
//! a row's `id` and a failure are about. [`discover`] lists a scope's EKS
//! clusters and says which can be read and which are blind; [`version`]
//! learns each cluster's Kubernetes version (what anonymous can reach).

pub mod discover;
pub mod version;

use anyhow::{Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use crate::exit::UsageError;
use crate::source::advice;
use crate::source::cloudwatch::{self, ClientSettings};

/// The session name of every assumed role: what an account's CloudTrail
/// shows for kubeanon's calls.
pub const SESSION_NAME: &str = "kubeanon";

/// One log group of one (account, region): what a run reads, a checkpoint
/// entry keeps, a failure names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkUnit {
    pub account: String,
    pub region: String,
    pub log_group: String,
}

impl WorkUnit {
    /// The EKS cluster the log group belongs to (or the log group itself).
    pub fn cluster(&self) -> &str {
        cloudwatch::cluster_name(&self.log_group)
    }

    /// What a row's `id` is scoped by: the same event seen through two
    /// units is two rows.
    pub fn id_scope(&self) -> String {
        format!("{}\n{}\n{}", self.account, self.region, self.log_group)
    }
}

impl std::fmt::Display for WorkUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Log group names are the account's users' to choose: escaped.
        use crate::output::neutralise_terminal;
        write!(
            f,
            "log group {} (account {}, {})",
            neutralise_terminal(&self.log_group),
            neutralise_terminal(&self.account),
            neutralise_terminal(&self.region)
        )
    }
}

/// Which accounts and regions a run covers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client: ClientSettings,
    /// Empty: the config chain's region.
    pub regions: Vec<String>,
    /// Empty: the caller's own account.
    pub roles: Vec<String>,
    pub external_id: Option<String>,
}

/// One (account, region) pair with the credentials that reach it.
#[derive(Debug, Clone)]
pub struct Scope {
    pub account: String,
    pub region: String,
    /// Every client of this scope is built from this: region, credentials
    /// (an assumed role's are refreshed by the SDK when they expire), the
    /// endpoint override.
    pub config: SdkConfig,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "account {}, {}", self.account, self.region)
    }
}

/// An account (or role) that could not be reached: its regions are failed,
/// the others go on.
#[derive(Debug)]
pub struct Unreachable {
    pub account: String,
    pub error: anyhow::Error,
}

/// A run's reach: its scopes, the accounts it could not reach, and what
/// they were reached from.
pub struct Fleet {
    pub scopes: Vec<Scope>,
    pub unreachable: Vec<Unreachable>,
    /// The run's own credentials and first region.
    pub base: SdkConfig,
    /// The caller's account, when the run learned it (no `--role-arn`).
    pub caller: Option<String>,
}

/// The scopes of a run, and the accounts that could not be reached. Fails
/// as a whole only when the base credentials or the region are missing
/// (nothing could be read at all).
pub async fn scopes(s: &Settings) -> Result<Fleet> {
    let mut client = s.client.clone();
    client.region = s.regions.first().cloned().or(client.region);
    let (base, default_region) = cloudwatch::sdk_config(&client).await?;
    cloudwatch::check_credentials(&base, &client).await?;
    let regions = if s.regions.is_empty() {
        vec![default_region]
    } else {
        s.regions.clone()
    };
    let mut accounts: Vec<(String, Option<SharedCredentialsProvider>)> = Vec::new();
    let mut unreachable = Vec::new();
    let mut caller = None;
    if s.roles.is_empty() {
        let account = caller_account(&base).await?;
        caller = Some(account.clone());
        accounts.push((account, None));
    }
    for role in &s.roles {
        let account = role_account(role)?.to_string();
        let mut builder = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name(SESSION_NAME)
            .configure(&base);
        if let Some(id) = &s.external_id {
            builder = builder.external_id(id);
        }
        if let Some(length) = crate::testhooks::role_session() {
            builder = builder.session_length(length);
        }
        let provider = builder.build().await;
        // Assume it once now: a role that cannot be assumed fails its
        // account here, once, instead of every request of every cluster.
        match provider.provide_credentials().await {
            Ok(_) => accounts.push((account, Some(SharedCredentialsProvider::new(provider)))),
            Err(e) => unreachable.push(Unreachable {
                account,
                error: anyhow!(
                    "cannot assume role {role}: {}; the role's trust policy must allow these credentials \
                     (and --external-id, when it asks for one): see examples/iam/",
                    advice::root_cause(&e)
                ),
            }),
        }
    }
    let mut scopes = Vec::new();
    for (account, provider) in &accounts {
        for region in &regions {
            let mut b = base
                .to_builder()
                .region(aws_config::Region::new(region.clone()));
            if let Some(p) = provider {
                b = b.credentials_provider(p.clone());
            }
            scopes.push(Scope {
                account: account.clone(),
                region: region.clone(),
                config: b.build(),
            });
        }
    }
    Ok(Fleet {
        scopes,
        unreachable,
        base,
        caller,
    })
}

/// The account an IAM role ARN belongs to: `arn:PARTITION:iam::ACCOUNT:role/NAME`.
pub fn role_account(arn: &str) -> Result<&str, UsageError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", "", account, resource]
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.starts_with("role/")
                && resource.len() > 5 =>
        {
            Ok(account)
        }
        _ => Err(UsageError(format!(
            "--role-arn '{arn}' is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
        ))),
    }
}

/// The caller's own account (STS GetCallerIdentity: needs no permission).
pub async fn caller_account(config: &SdkConfig) -> Result<String> {
    // The run's own retries are for FilterLogEvents: the SDK's for this.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
            .build(),
    );
    match sts.get_caller_identity().send().await {
        Ok(out) => match out.account() {
            Some(a) if !a.is_empty() => Ok(a.to_string()),
            _ => bail!("STS GetCallerIdentity named no account"),
        },
        Err(e) if advice::is_no_such_host(&e) => bail!(
            "{}",
            advice::no_such_host(
                "AWS STS",
                config.region().map(|r| r.as_ref()).unwrap_or("us-east-1"),
                &advice::service_endpoint(
                    config.endpoint_url(),
                    "STS",
                    "sts",
                    config.region().map(|r| r.as_ref()).unwrap_or("us-east-1")
                )
            )
        ),
        Err(e) if advice::is_connect_failure(&e) => bail!(
            "cannot connect to AWS STS at {} ({}): check --endpoint-url or AWS_ENDPOINT_URL, the network, DNS and any proxy",
            advice::service_endpoint(
                config.endpoint_url(),
                "STS",
                "sts",
                config.region().map(|r| r.as_ref()).unwrap_or("us-east-1")
            ),
            advice::short(&e)
        ),
        Err(e) => bail!(
            "cannot learn the caller's account (STS GetCallerIdentity): {}",
            advice::short(&e)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_accounts() {
        assert_eq!(
            role_account("arn:aws:iam::111122223333:role/kubeanon-reader").unwrap(),
            "111122223333"
        );
        assert_eq!(
            role_account("arn:aws-cn:iam::111122223333:role/path/reader").unwrap(),
            "111122223333"
        );
        for bad in [
            "111122223333",
            "arn:aws:iam::1111:role/x",
            "arn:aws:iam::111122223333:user/x",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:sts::111122223333:role/x",
        ] {
            assert!(
                role_account(bad).unwrap_err().0.contains("--role-arn"),
                "{bad}"
            );
        }
    }

    #[test]
    fn unit_names_its_account_and_region() {
        let u = WorkUnit {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            log_group: "/aws/eks/prod/cluster".into(),
        };
        assert_eq!(u.cluster(), "prod");
        assert_eq!(
            u.to_string(),
            "log group /aws/eks/prod/cluster (account 111122223333, eu-west-1)"
        );
        assert_eq!(
            u.id_scope(),
            "111122223333\neu-west-1\n/aws/eks/prod/cluster"
        );
    }
}
