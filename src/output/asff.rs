//! ASFF (AWS Security Finding Format, `SchemaVersion` 2018-10-08): one
//! finding per row, one per line, for Security Hub's `BatchImportFindings`
//! (`deliver::securityhub`). It is made from the row's OCSF finding
//! ([`super::ocsf`]), so the two formats say the same of a row:
//!
//! - `Id` the row's stable id (a window read again updates the finding
//!   instead of adding one); `GeneratorId` the rule (ESCU's analytic id,
//!   `kubeanon-unauthenticated`, `kubeanon-truncated`);
//! - `Types` in ASFF's namespaces, the same in `FindingProviderFields` with
//!   the severity, so that a re-import updates them;
//! - `Title`, `Description`, `Severity.Label`, the times: first and last
//!   seen as `FirstObservedAt`/`LastObservedAt` and `CreatedAt` (a re-read
//!   gives the same), the run's time as `UpdatedAt`;
//! - `Resources`: the cluster as `AwsEksCluster` by its ARN, then the
//!   Kubernetes object (`Other`); `Network` the source address;
//!   `Remediation` the binding and its `kubectl` command;
//! - `ProductFields`: the row's columns, so nothing is lost;
//! - `AwsAccountId`, `Region` from the row; `ProductArn` the account's
//!   default product in the region the findings are imported into.
//!
//! Values are attacker-controlled and ASFF bounds its fields (a `Title` of
//! 256 characters, a `Description` of 1,024, map values of 2,048): long
//! values are shortened (with `…`) to those bounds, never dropped, and a
//! finding still over [`MAX_FINDING`] bytes has its product fields cut
//! further. A shortened finding says so in `ProductFields`
//! (`kubeanon/shortened`). JSON escapes every character `is_hidden` names.

use std::io::{self, Write};
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::json::escape_hidden;
use super::ocsf::Ocsf;
use super::{Row, Sink};
use crate::detect::Rule;

pub const SCHEMA_VERSION: &str = "2018-10-08";
/// Security Hub refuses a finding over 240 KB.
pub const MAX_FINDING: usize = 240 * 1000;
/// ASFF's bounds on `Title`, `Description`, a remediation's text, a
/// resource id and a map's values (`ProductFields`, `Details.Other`).
const TITLE: usize = 256;
const DESCRIPTION: usize = 1024;
const REMEDIATION: usize = 512;
const RESOURCE_ID: usize = 512;
const MAP_VALUE: usize = 2048;
const OTHER_VALUE: usize = 1024;
/// `ProductFields` holds at most 50 pairs.
const MAP_PAIRS: usize = 50;

/// Where findings go: the account's default product in `import_region`.
#[derive(Debug, Clone)]
pub struct Context {
    pub partition: String,
    /// The region `BatchImportFindings` is called in (`securityhub:REGION`,
    /// else the unit's).
    pub import_region: String,
    pub account: String,
    /// The unit's region and EKS cluster name.
    pub region: String,
    pub cluster: String,
    /// The run's time: every finding's `UpdatedAt`.
    pub run_ms: i64,
}

impl Context {
    /// `arn:aws:securityhub:<region>:<account>:product/<account>/default`.
    pub fn product_arn(&self) -> String {
        format!(
            "arn:{}:securityhub:{}:{}:product/{}/default",
            self.partition, self.import_region, self.account, self.account
        )
    }

    fn cluster_arn(&self) -> String {
        format!(
            "arn:{}:eks:{}:{}:cluster/{}",
            self.partition, self.region, self.account, self.cluster
        )
    }
}

/// The partition of a region: `aws-cn` for `cn-*`, `aws-us-gov` for
/// `us-gov-*`, else `aws`.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[derive(Debug, Clone)]
pub struct Asff {
    ocsf: Ocsf,
    context: Context,
}

impl Asff {
    pub fn new(context: Context) -> Asff {
        Asff {
            ocsf: Ocsf::new(context.run_ms),
            context,
        }
    }

    /// The row's finding.
    fn finding(&self, row: &Row<'_>) -> Value {
        let o = self.ocsf.finding(row);
        let c = &self.context;
        let severity = row.severity();
        let types = types(row.rule());
        let mut shortened = false;
        let mut cut = |text: &str, max: usize| {
            let (t, was) = shorten(text, max);
            shortened |= was;
            t
        };
        let title = cut(o["message"].as_str().unwrap_or("kubeanon finding"), TITLE);
        let info = &o["finding_info"];
        let mut description = o["message"].as_str().unwrap_or_default().to_string();
        if let Some(desc) = info["desc"].as_str() {
            description.push_str(". ");
            description.push_str(desc);
        }
        description.push_str(&format!(
            ". Seen {} time{} in the cluster's audit log (kubeanon rule {}).",
            row.count(),
            if row.count() == 1 { "" } else { "s" },
            row.rule().name()
        ));
        let description = cut(&description, DESCRIPTION);
        let first = time(o["start_time"].as_i64().unwrap_or(c.run_ms));
        let last = time(o["end_time"].as_i64().unwrap_or(c.run_ms));
        let label = severity.name().to_ascii_uppercase();

        let mut cluster = json!({
            "Type": "AwsEksCluster",
            "Id": c.cluster_arn(),
            "Partition": c.partition,
            "Region": c.region,
            "Details": { "AwsEksCluster": { "Name": c.cluster } },
        });
        if let Some(version) = o["unmapped"]["kubernetes_version"].as_str()
            && version != "unknown"
        {
            cluster["Details"]["AwsEksCluster"]["Version"] = version.into();
        }
        let mut resources = vec![cluster];
        // The Kubernetes object, or the path a non-resource request asked for.
        let object = o["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["type"] != "Kubernetes cluster"));
        let uri = o["unmapped"]["requestURI"].as_str().unwrap_or_default();
        let mut other = Map::new();
        let id = match object {
            Some(r) => {
                let ns = r["namespace"].as_str();
                for (k, v) in [
                    ("resource", r["type"].as_str()),
                    ("name", r["name"].as_str()),
                    ("namespace", ns),
                ] {
                    if let Some(v) = v {
                        other.insert(k.into(), cut(v, OTHER_VALUE).into());
                    }
                }
                match ns {
                    Some(ns) => format!(
                        "{}/{ns}/{}",
                        r["type"].as_str().unwrap_or_default(),
                        r["name"].as_str().unwrap_or_default()
                    ),
                    None => format!(
                        "{}/{}",
                        r["type"].as_str().unwrap_or_default(),
                        r["name"].as_str().unwrap_or_default()
                    ),
                }
            }
            None => uri.split_once('?').map_or(uri, |(p, _)| p).to_string(),
        };
        if !uri.is_empty() {
            other.insert("requestURI".into(), cut(uri, OTHER_VALUE).into());
        }
        if let Some(verb) = o["unmapped"]["verb"].as_str() {
            other.insert("verb".into(), cut(verb, OTHER_VALUE).into());
        }
        let id = if id.is_empty() { "/".to_string() } else { id };
        let mut object = json!({
            "Type": "Other",
            "Id": cut(&format!("kubernetes://{}/{}", c.cluster, id.trim_start_matches('/')), RESOURCE_ID),
            "Partition": c.partition,
            "Region": c.region,
        });
        if !other.is_empty() {
            object["Details"] = json!({ "Other": other });
        }
        resources.push(object);

        let mut f = json!({
            "SchemaVersion": SCHEMA_VERSION,
            "Id": info["uid"],
            "ProductArn": c.product_arn(),
            "ProductName": "kubeanon",
            "CompanyName": "kubeanon",
            "GeneratorId": info["analytic"]["uid"],
            "AwsAccountId": c.account,
            "Region": c.region,
            "Types": types,
            "FirstObservedAt": first,
            "LastObservedAt": last,
            "CreatedAt": first,
            "UpdatedAt": time(c.run_ms),
            "Severity": { "Label": label, "Original": severity.name() },
            "FindingProviderFields": {
                "Severity": { "Label": label, "Original": severity.name() },
                "Types": types,
            },
            "Title": title,
            "Description": description,
            "Resources": resources,
            "RecordState": "ACTIVE",
        });
        if let Some(ip) = o["evidences"][0]["src_endpoint"]["ip"]
            .as_str()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        {
            let key = if ip.is_ipv4() {
                "SourceIpV4"
            } else {
                "SourceIpV6"
            };
            f["Network"] = json!({ "Direction": "IN", key: ip.to_string() });
        }
        if let Some(desc) = o["remediation"]["desc"].as_str() {
            f["Remediation"] = json!({ "Recommendation": { "Text": cut(desc, REMEDIATION) } });
        }
        let columns = o["unmapped"].as_object().cloned().unwrap_or_default();
        let mut fields = product_fields(&columns, MAP_VALUE, &mut shortened);
        f["ProductFields"] = Value::Object(fields.clone());
        // Still too large (a row of many long values): the columns' values
        // are cut shorter until it fits.
        let mut max = MAP_VALUE;
        while json_len(&f) > MAX_FINDING && max > 16 {
            max /= 2;
            fields = product_fields(&columns, max, &mut shortened);
            f["ProductFields"] = Value::Object(fields.clone());
        }
        if shortened {
            fields.insert("kubeanon/shortened".into(), "true".into());
            f["ProductFields"] = Value::Object(fields);
        }
        f
    }
}

/// The row's columns as `ProductFields`: each value at most `max`
/// characters, the count as text, at most [`MAP_PAIRS`] - 1 pairs (one is
/// kept for the shortened mark).
fn product_fields(
    columns: &Map<String, Value>,
    max: usize,
    shortened: &mut bool,
) -> Map<String, Value> {
    let mut fields = Map::new();
    for (name, value) in columns.iter().take(MAP_PAIRS - 1) {
        let text = match value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let (text, was) = shorten(&text, max);
        *shortened |= was;
        fields.insert(name.clone(), text.into());
    }
    *shortened |= columns.len() > MAP_PAIRS - 1;
    fields
}

/// The rule's ASFF types (`namespace/category`).
fn types(rule: Rule) -> Value {
    match rule {
        // An anonymous request served: someone in without credentials.
        Rule::Escu => json!(["TTPs/Initial Access", "Unusual Behaviors/User"]),
        // A refused request with no or bad credentials: probing.
        Rule::Unauthenticated => json!(["TTPs/Discovery", "Unusual Behaviors/Application"]),
        // A record cut by its size: padding that hides what was asked.
        Rule::Truncated => json!(["TTPs/Defense Evasion", "Unusual Behaviors/Application"]),
    }
}

/// `text` cut to at most `max` characters (the last one `…`), and whether
/// it was.
fn shorten(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => (format!("{}…", &text[..cut]), true),
        _ => (text.to_string(), false),
    }
}

fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

impl Sink for Asff {
    fn begin(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        self.ocsf.begin(columns, out)
    }

    fn row(&mut self, row: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        let text = serde_json::to_string(&self.finding(row)).map_err(io::Error::other)?;
        let mut line = Vec::with_capacity(text.len() + 1);
        escape_hidden(&text, &mut line);
        line.push(b'\n');
        out.write_all(&line)
    }

    fn finish(&mut self, _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    fn close(&mut self, _columns: &[&str], _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_keeps_char_boundaries_and_says_so() {
        assert_eq!(shorten("abc", 3), ("abc".to_string(), false));
        let (t, was) = shorten("ééééé", 3);
        assert!(was);
        assert_eq!(t, "éé…");
        assert_eq!(t.chars().count(), 3);
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }
}
