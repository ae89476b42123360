//! `--deliver securityhub` (or `securityhub:REGION`): one ASFF finding per
//! row ([`crate::output::asff`]) imported with `BatchImportFindings`.
//!
//! - Each unit's findings are imported with that unit's account's
//!   credentials (the fleet's assumed role) into the account's default
//!   product, in the unit's region or in REGION (a central aggregation
//!   region): Security Hub takes a finding only from the account in its
//!   `AwsAccountId`.
//! - Calls hold at most [`BATCH_FINDINGS`] findings and [`BATCH_BYTES`];
//!   a finding is at most 240 KB (longer values are shortened, never
//!   dropped).
//! - A finding Security Hub fails (`FailedFindings`) is imported again
//!   while its error is transient (throttling, internal errors), and
//!   otherwise reported by id with its code: the step is not committed.
//! - A finding's `Id` is the row's stable id, so a step imported again (a
//!   re-run of a window, or a step in flight at a crash) updates the same
//!   findings and never adds a second: exactly once in effect, with any
//!   state store or none.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use aws_sdk_securityhub::types::{
    AwsEksClusterDetails, AwsSecurityFinding, FindingProviderFields, FindingProviderSeverity,
    Network, NetworkDirection, Partition, Recommendation, RecordState, Remediation, Resource,
    ResourceDetails, Severity, SeverityLabel,
};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::fleet::WorkUnit;
use crate::output::asff::{self, Context as AsffContext};
use crate::output::{Parts, Rows, Style, neutralise_terminal};
use crate::state::protocol::{Found, Pending, Prepared, Target};

/// `BatchImportFindings` takes at most 100 findings a call.
pub const BATCH_FINDINGS: usize = 100;
/// Bytes of findings per call (Security Hub names no bound but the
/// finding's own; this keeps a call of long findings moderate).
pub const BATCH_BYTES: usize = 4 << 20;
/// Imports of a transiently failed finding before the step fails.
const ATTEMPTS: u32 = 5;

/// The Security Hub target.
pub struct SecurityHub {
    /// `securityhub:REGION`; None: each unit's region.
    region: Option<String>,
    /// Each account's configuration (credentials, endpoint), by account.
    configs: HashMap<String, SdkConfig>,
    clients: Mutex<HashMap<(String, String), aws_sdk_securityhub::Client>>,
    style: Style,
}

/// Where a step's findings are imported: the account, and the region.
pub struct Import {
    account: String,
    region: String,
}

impl SecurityHub {
    /// `scopes`: each (account, configuration) of the fleet.
    pub fn new<'a>(
        region: Option<String>,
        scopes: impl IntoIterator<Item = (&'a str, &'a SdkConfig)>,
        style: Style,
    ) -> SecurityHub {
        let mut configs = HashMap::new();
        for (account, config) in scopes {
            configs
                .entry(account.to_string())
                .or_insert_with(|| config.clone());
        }
        SecurityHub {
            region,
            configs,
            clients: Mutex::new(HashMap::new()),
            style,
        }
    }

    async fn client(&self, import: &Import) -> Result<aws_sdk_securityhub::Client> {
        let mut clients = self.clients.lock().await;
        let key = (import.account.clone(), import.region.clone());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let config = self
            .configs
            .get(&import.account)
            .with_context(|| format!("no credentials for account {}", import.account))?;
        let client = aws_sdk_securityhub::Client::from_conf(
            aws_sdk_securityhub::config::Builder::from(config)
                .region(aws_config::Region::new(import.region.clone()))
                .build(),
        );
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Imports `findings` (ASFF JSON) in one call, again for those failed
    /// transiently.
    async fn import(&self, import: &Import, findings: &[Value]) -> Result<()> {
        let client = self.client(import).await?;
        let mut todo: Vec<&Value> = findings.iter().collect();
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let out = client
                .batch_import_findings()
                .set_findings(Some(todo.iter().map(|f| to_sdk(f)).collect()))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "Security Hub BatchImportFindings in account {}, {}: {}",
                        import.account,
                        import.region,
                        neutralise_terminal(&crate::source::advice::short(&e))
                    )
                })?;
            let failed = out.failed_findings();
            if failed.is_empty() {
                return Ok(());
            }
            let transient = failed.iter().all(|f| is_transient(f.error_code()));
            if !transient || attempt == ATTEMPTS {
                let shown: Vec<String> = failed
                    .iter()
                    .take(5)
                    .map(|f| {
                        neutralise_terminal(&format!(
                            "{}: {} {}",
                            f.id().unwrap_or("?"),
                            f.error_code().unwrap_or("?"),
                            f.error_message().unwrap_or_default()
                        ))
                        .into_owned()
                    })
                    .collect();
                bail!(
                    "Security Hub refused {} of {} findings in account {}, {} (the step is not committed): {}{}",
                    failed.len(),
                    todo.len(),
                    import.account,
                    import.region,
                    shown.join("; "),
                    if failed.len() > 5 { "; …" } else { "" }
                );
            }
            let again: std::collections::HashSet<&str> =
                failed.iter().filter_map(|f| f.id()).collect();
            todo.retain(|f| f["Id"].as_str().is_some_and(|id| again.contains(id)));
            tracing::debug!(
                "Security Hub failed {} findings transiently, importing them again in {wait:?}",
                todo.len()
            );
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        Ok(())
    }
}

/// Error codes worth another import: throttling and Security Hub's own
/// failures.
fn is_transient(code: Option<&str>) -> bool {
    let code = code.unwrap_or_default().to_ascii_lowercase();
    [
        "throttl",
        "internal",
        "limitexceeded",
        "unavailable",
        "timeout",
    ]
    .iter()
    .any(|t| code.contains(t))
}

/// `findings` (one per line) in calls of at most [`BATCH_FINDINGS`] and
/// about [`BATCH_BYTES`].
fn batches(lines: &[u8]) -> Result<Vec<Vec<Value>>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut bytes = 0;
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).context("a rendered finding is not JSON")?;
        match out.last_mut() {
            Some(b) if b.len() < BATCH_FINDINGS && bytes + line.len() <= BATCH_BYTES => {
                bytes += line.len();
                b.push(v);
            }
            _ => {
                bytes = line.len();
                out.push(vec![v]);
            }
        }
    }
    Ok(out)
}

/// The SDK's finding of an ASFF JSON finding (as `output::asff` makes them).
fn to_sdk(f: &Value) -> AwsSecurityFinding {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default()
    };
    let map = |v: &Value| -> Option<HashMap<String, String>> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
    };
    let label = SeverityLabel::from(f["Severity"]["Label"].as_str().unwrap_or("INFORMATIONAL"));
    let resources = f["Resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let mut details = ResourceDetails::builder();
                    let eks = &r["Details"]["AwsEksCluster"];
                    if eks.is_object() {
                        details = details.aws_eks_cluster(
                            AwsEksClusterDetails::builder()
                                .name(s(&eks["Name"]))
                                .set_version(eks["Version"].as_str().map(str::to_string))
                                .build(),
                        );
                    }
                    let details = details.set_other(map(&r["Details"]["Other"])).build();
                    Resource::builder()
                        .r#type(s(&r["Type"]))
                        .id(s(&r["Id"]))
                        .partition(Partition::from(r["Partition"].as_str().unwrap_or("aws")))
                        .region(s(&r["Region"]))
                        .details(details)
                        .build()
                })
                .collect()
        })
        .unwrap_or_default();
    let network = f["Network"].is_object().then(|| {
        Network::builder()
            .direction(NetworkDirection::In)
            .set_source_ipv4(f["Network"]["SourceIpV4"].as_str().map(str::to_string))
            .set_source_ipv6(f["Network"]["SourceIpV6"].as_str().map(str::to_string))
            .build()
    });
    let remediation = f["Remediation"]["Recommendation"]["Text"]
        .as_str()
        .map(|t| {
            Remediation::builder()
                .recommendation(Recommendation::builder().text(t).build())
                .build()
        });
    AwsSecurityFinding::builder()
        .schema_version(s(&f["SchemaVersion"]))
        .id(s(&f["Id"]))
        .product_arn(s(&f["ProductArn"]))
        .product_name(s(&f["ProductName"]))
        .company_name(s(&f["CompanyName"]))
        .generator_id(s(&f["GeneratorId"]))
        .aws_account_id(s(&f["AwsAccountId"]))
        .region(s(&f["Region"]))
        .set_types(Some(strings(&f["Types"])))
        .first_observed_at(s(&f["FirstObservedAt"]))
        .last_observed_at(s(&f["LastObservedAt"]))
        .created_at(s(&f["CreatedAt"]))
        .updated_at(s(&f["UpdatedAt"]))
        .severity(
            Severity::builder()
                .label(label.clone())
                .original(s(&f["Severity"]["Original"]))
                .build(),
        )
        .finding_provider_fields(
            FindingProviderFields::builder()
                .severity(
                    FindingProviderSeverity::builder()
                        .label(label)
                        .original(s(&f["Severity"]["Original"]))
                        .build(),
                )
                .set_types(Some(strings(&f["FindingProviderFields"]["Types"])))
                .build(),
        )
        .title(s(&f["Title"]))
        .description(s(&f["Description"]))
        .set_resources(Some(resources))
        .set_network(network)
        .set_remediation(remediation)
        .set_product_fields(map(&f["ProductFields"]))
        .record_state(RecordState::Active)
        .build()
}

impl Target for SecurityHub {
    type Hold = Import;

    async fn prepare(
        &self,
        unit: &WorkUnit,
        _: (i64, i64),
        _: u64,
        rows: &Rows<'_>,
    ) -> Result<Option<Prepared<Import>>> {
        if rows.findings.is_empty() {
            return Ok(None);
        }
        let import_region = self.region.clone().unwrap_or_else(|| unit.region.clone());
        let context = AsffContext {
            partition: asff::partition(&import_region).to_string(),
            import_region: import_region.clone(),
            account: unit.account.clone(),
            region: unit.region.clone(),
            cluster: unit.cluster().to_string(),
            run_ms: self.style.run_ms,
        };
        // An import is an upsert by id: nothing to record before it.
        let hold = Import {
            account: unit.account.clone(),
            region: import_region,
        };
        super::unplaced(
            Parts::asff(self.style, context),
            rows,
            hold,
            "ASFF findings",
        )
    }

    async fn write(&self, p: Prepared<Import>) -> Result<bool> {
        for batch in batches(&p.bytes)? {
            self.import(&p.hold, &batch).await?;
        }
        Ok(true)
    }

    async fn claim_or_find(&self, pending: &Pending) -> Result<Found> {
        Err(super::pending_elsewhere(pending, "to Security Hub"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_100_findings() {
        let mut lines = Vec::new();
        for i in 0..250 {
            lines.extend_from_slice(format!("{{\"Id\":\"{i}\"}}\n").as_bytes());
        }
        let b = batches(&lines).unwrap();
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(b[2][49]["Id"], "249");
    }

    #[test]
    fn throttling_and_internal_errors_are_transient() {
        assert!(is_transient(Some("ThrottlingException")));
        assert!(is_transient(Some("InternalException")));
        assert!(!is_transient(Some("InvalidInput")));
        assert!(!is_transient(None));
    }
}
