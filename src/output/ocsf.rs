//! `--format ocsf`: one OCSF Detection Finding (`class_uid` 2004, OCSF
//! 1.5.0) per row, one per line: what most SIEMs take in. Amazon
//! Security Lake takes OCSF 1.3 or earlier, and not this class, from a
//! custom source: [`security_finding`] maps the same finding to OCSF
//! 1.1.0's Security Finding for `--format parquet`.
//!
//! The mapping (the README's "OCSF" section):
//! - `finding_info`: `uid` the row's id, `title` what happened, `analytic`
//!   and `types` the row's rule (ESCU's detection and its id; kubeanon's
//!   `unauthenticated` or `truncated`), first and last seen;
//! - `severity_id` the row's severity; `time` its latest request (a rollup
//!   group's last seen; the run's time when it has no timestamp),
//!   `start_time`/`end_time` first and last seen, `count`;
//! - `evidences`: the anonymous `actor.user` (none for a refused
//!   authentication: it has no user), `src_endpoint.ip` (when the
//!   source is an IP address), `http_request` (user agent, URL path and
//!   query, method), `api` (the Kubernetes verb and the response code);
//! - `resources`: the Kubernetes object (`objectRef`), and the cluster
//!   when the row names one, with its `kubernetes_version` (poll);
//! - `cloud` (profile `cloud`) from the row's `region` and `account`
//!   columns, when it has them (poll);
//! - `remediation`: the binding that allowed the request and what to do
//!   (`Binding::remediation`: a Kubernetes default is left as it is; any
//!   other is reviewed with the `kubectl` command that shows it);
//! - `unmapped`: the row itself, column by column, so nothing is lost.
//!
//! Columns are found by name, so a command may add its own in any order.
//! Values are attacker-controlled: the JSON is serde_json's, with every
//! character `is_hidden` names written as a `\uXXXX` escape, as ndjson.

use std::io::{self, Write};
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::json::escape_hidden;
use super::{Row, Sink};
use crate::detect::rollup::parse_time;
use crate::detect::{FILL, Rule, Severity};

/// The OCSF version of the findings.
pub const OCSF_VERSION: &str = "1.5.0";
/// Splunk ESCU's detection, which the `escu` rule's rows are.
const ANALYTIC_UID: &str = "042a3d32-8318-4763-9679-09db2644a8f2";
const ANALYTIC_NAME: &str = "Kubernetes AWS detect suspicious kubectl calls";

/// A rule's `finding_info.analytic` and `types`.
fn analytic(rule: Rule) -> (Value, &'static str) {
    match rule {
        Rule::Escu => (
            json!({
                "uid": ANALYTIC_UID,
                "name": ANALYTIC_NAME,
                "type_id": 1,
                "type": "Rule",
                "category": "Splunk ESCU",
                "version": "4",
            }),
            "Anonymous Kubernetes API request",
        ),
        Rule::Unauthenticated => (
            json!({
                "uid": "kubeanon-unauthenticated",
                "name": "Unauthenticated request refused",
                "type_id": 1,
                "type": "Rule",
                "category": "kubeanon",
                "version": "1",
            }),
            "Unauthenticated request refused",
        ),
        Rule::Truncated => (
            json!({
                "uid": "kubeanon-truncated",
                "name": "Cut audit record of an unauthenticated request",
                "type_id": 1,
                "type": "Rule",
                "category": "kubeanon",
                "version": "1",
            }),
            "Cut audit record of an unauthenticated request",
        ),
    }
}
/// Findings are buffered to about this size, then written whole.
const CHUNK: usize = 256 * 1024;
/// Longest request path in a title (the whole one is in `http_request`).
const TITLE_PATH: usize = 200;

#[derive(Debug, Clone)]
pub struct Ocsf {
    run_ms: i64,
    columns: Vec<String>,
    chunk: Vec<u8>,
}

impl Ocsf {
    pub fn new(run_ms: i64) -> Ocsf {
        Ocsf {
            run_ms,
            columns: Vec::new(),
            chunk: Vec::new(),
        }
    }

    /// The row's OCSF 1.5.0 Detection Finding.
    pub(super) fn finding(&self, row: &Row<'_>) -> Value {
        let cells = row.cells();
        let cell = |name: &str| -> Option<&str> {
            let i = self.columns.iter().position(|c| c == name)?;
            Some(cells[i].as_str()).filter(|v| *v != FILL)
        };
        let severity = row.severity();
        let triage = row.triage();
        let verb = cell("verb");
        let uri = cell("requestURI");
        let code = cell("responseStatus.code");
        let (first, last) = match cell("first_seen") {
            Some(first) => (Some(first), cell("last_seen")),
            None => {
                let at = cell("requestReceivedTimestamp");
                (at, at)
            }
        };
        let ms = |t: Option<&str>| t.and_then(parse_time).map(|t| t.timestamp_millis());
        let (start, end) = (ms(first), ms(last));
        let rule = row.rule();
        let request = Request {
            severity,
            verb,
            uri,
            code,
            stage: cell("stage"),
            credential: cell("credential"),
            user: cell("user"),
        };
        let title = title(rule, &request);
        let (analytic, kind) = analytic(rule);

        let mut finding_info = json!({
            "uid": row.uid(),
            "title": title,
            "analytic": analytic,
            "types": [kind],
            "data_sources": ["Kubernetes audit log"],
        });
        if triage.reason != FILL {
            finding_info["desc"] = triage.reason.clone().into();
        }
        if let Some(start) = start {
            finding_info["first_seen_time"] = start.into();
        }
        if let Some(end) = end {
            finding_info["last_seen_time"] = end.into();
        }

        // The one who asked: the anonymous user of ESCU's match (or a cut
        // record's); a refused authentication has no user at all.
        let mut evidence = json!({});
        if let Some(name) = cell("user") {
            let mut user = json!({ "name": name });
            if let Some(uid) = cell("user.uid") {
                user["uid"] = uid.into();
            }
            if let Some(group) = cell("user.groups{}") {
                user["groups"] = json!([{ "name": group }]);
            }
            evidence["actor"] = json!({ "user": user });
        }
        if let Some(ip) = cell("src_ip").and_then(|ip| ip.parse::<IpAddr>().ok()) {
            evidence["src_endpoint"] = json!({ "ip": ip.to_string() });
        }
        let mut http = Map::new();
        if let Some(agent) = cell("userAgent") {
            http.insert("user_agent".into(), agent.into());
        }
        if let Some(uri) = uri {
            let mut url = Map::new();
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            url.insert("path".into(), path.into());
            if !query.is_empty() {
                url.insert("query_string".into(), query.into());
            }
            http.insert("url".into(), url.into());
        }
        if let Some(method) = verb.and_then(http_method) {
            http.insert("http_method".into(), method.into());
        }
        if !http.is_empty() {
            evidence["http_request"] = http.into();
        }
        if let Some(verb) = verb {
            let mut api = json!({ "operation": verb });
            if let Some(code) = code.and_then(|c| c.parse::<i64>().ok()) {
                api["response"] = json!({ "code": code });
            }
            evidence["api"] = api;
        }

        let mut resources = Vec::new();
        if let Some(resource) = cell("objectRef.resource") {
            // A list or a create names no object: the collection stands in.
            let mut r = json!({
                "type": resource,
                "name": cell("objectRef.name").unwrap_or(resource),
            });
            if let Some(ns) = cell("objectRef.namespace") {
                r["namespace"] = ns.into();
            }
            resources.push(r);
        }
        if let Some(cluster) = cell("cluster") {
            let mut r = json!({ "type": "Kubernetes cluster", "name": cluster });
            if let Some(region) = cell("region") {
                r["region"] = region.into();
            }
            if let Some(version) = cell("kubernetes_version") {
                r["version"] = version.into();
            }
            resources.push(r);
        }

        let mut metadata = json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "kubeanon",
                "vendor_name": "kubeanon",
                "version": env!("CARGO_PKG_VERSION"),
            },
        });
        if let Some(log_group) = cell("log_group") {
            metadata["log_name"] = log_group.into();
        }

        let mut unmapped = Map::new();
        for (name, value) in self.columns.iter().zip(&cells) {
            let value = match (name.as_str(), value.parse::<u64>()) {
                ("count", Ok(n)) => n.into(),
                _ => value.as_str().into(),
            };
            unmapped.insert(name.clone(), value);
        }

        let mut f = json!({
            "class_uid": 2004,
            "class_name": "Detection Finding",
            "category_uid": 2,
            "category_name": "Findings",
            "activity_id": 1,
            "activity_name": "Create",
            "type_uid": 200401,
            "type_name": "Detection Finding: Create",
            "severity_id": severity.id(),
            "severity": severity.caption(),
            "status_id": 1,
            "status": "New",
            "is_alert": severity >= Severity::High,
            "time": end.unwrap_or(self.run_ms),
            "count": row.count(),
            "message": title,
            "finding_info": finding_info,
            "evidences": [evidence],
            "metadata": metadata,
            "unmapped": unmapped,
        });
        if let Some(start) = start {
            f["start_time"] = start.into();
        }
        if let Some(end) = end {
            f["end_time"] = end.into();
        }
        if !resources.is_empty() {
            f["resources"] = resources.into();
        }
        if let Some(region) = cell("region") {
            let mut cloud = json!({ "provider": "AWS", "region": region });
            if let Some(account) = cell("account") {
                cloud["account"] = json!({ "uid": account });
            }
            f["cloud"] = cloud;
            f["metadata"]["profiles"] = json!(["cloud"]);
        }
        if !triage.bindings.is_empty() {
            let desc: Vec<String> = triage.bindings.iter().map(|b| b.remediation()).collect();
            f["remediation"] = json!({ "desc": desc.join(" ") });
        }
        f
    }
}

/// The OCSF version of [`security_finding`]'s records.
pub const SECURITY_LAKE_OCSF_VERSION: &str = "1.1.0";

/// The row's finding in the class and version Amazon Security Lake takes
/// from a custom source: OCSF 1.1.0 Security Finding (`class_uid` 2001,
/// `SECURITY_FINDING` in `CreateCustomLogSource`'s event classes, which
/// has no Detection Finding), made from `detection` ([`Ocsf::finding`]'s
/// Detection Finding of the same row), so the two mappings are one:
///
/// - `finding_info` becomes `finding` (`uid`, `title`, `types`, `desc`,
///   first and last seen) and takes the `remediation`; its `analytic` and
///   `data_sources` go to the top level, where 1.1.0 has them;
/// - `evidences[0]` becomes `evidence` (1.1.0's free-form JSON), but for
///   its `api`, which 1.1.0 has at the top level;
/// - `status` becomes `state` (New), `is_alert` (not in 1.1.0) is left out;
/// - `cloud` is required in 1.1.0: `provider` AWS even without a region;
/// - `unmapped` holds the row's columns as text (`count` too), the
///   `map<string,string>` Security Lake's tables give `unmapped`.
#[cfg_attr(not(feature = "parquet"), allow(dead_code))]
pub fn security_finding(detection: Value) -> Value {
    let Value::Object(mut d) = detection else {
        return detection;
    };
    let mut take = |k: &str| d.remove(k);
    let mut info = match take("finding_info") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let analytic = info.remove("analytic");
    let data_sources = info.remove("data_sources");
    if let Some(r) = take("remediation") {
        info.insert("remediation".into(), r);
    }
    let mut evidence = match take("evidences") {
        Some(Value::Array(mut e)) if !e.is_empty() => e.swap_remove(0),
        _ => json!({}),
    };
    let api = evidence.as_object_mut().and_then(|e| e.remove("api"));
    take("status_id");
    take("status");
    take("is_alert");
    let mut cloud = take("cloud").unwrap_or_else(|| json!({ "provider": "AWS" }));
    if cloud.get("provider").is_none() {
        cloud["provider"] = "AWS".into();
    }
    let unmapped = match take("unmapped") {
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, Value::String(s)),
                other => (k, Value::String(other.to_string())),
            })
            .collect(),
        _ => Map::new(),
    };
    let mut metadata = take("metadata").unwrap_or_else(|| json!({}));
    metadata["version"] = SECURITY_LAKE_OCSF_VERSION.into();
    metadata["profiles"] = json!(["cloud"]);
    d.insert("class_uid".into(), 2001.into());
    d.insert("class_name".into(), "Security Finding".into());
    d.insert("type_uid".into(), 200101.into());
    d.insert("type_name".into(), "Security Finding: Create".into());
    d.insert("state_id".into(), 1.into());
    d.insert("state".into(), "New".into());
    d.insert("finding".into(), info.into());
    if let Some(a) = analytic {
        d.insert("analytic".into(), a);
    }
    if let Some(s) = data_sources {
        d.insert("data_sources".into(), s);
    }
    if let Some(api) = api {
        d.insert("api".into(), api);
    }
    if evidence.as_object().is_some_and(|e| !e.is_empty()) {
        d.insert("evidence".into(), evidence);
    }
    d.insert("cloud".into(), cloud);
    d.insert("metadata".into(), metadata);
    d.insert("unmapped".into(), Value::Object(unmapped));
    Value::Object(d)
}

/// What a title says of a row's request.
struct Request<'a> {
    severity: Severity,
    verb: Option<&'a str>,
    uri: Option<&'a str>,
    code: Option<&'a str>,
    stage: Option<&'a str>,
    credential: Option<&'a str>,
    user: Option<&'a str>,
}

/// What happened, in a line: `Anonymous list /api/v1/secrets: allowed
/// (200)`, `Unauthenticated get /version: refused (401), no credentials`.
fn title(rule: Rule, r: &Request<'_>) -> String {
    let uri = r.uri;
    let path = uri.map_or("/", |u| u.split_once('?').map_or(u, |(p, _)| p));
    let path: String = match path.char_indices().nth(TITLE_PATH) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_string(),
    };
    let verb = r.verb.unwrap_or("request");
    let code = r.code.unwrap_or("no response code");
    match rule {
        Rule::Unauthenticated => {
            let presented = match r.credential {
                None | Some("none") => "no credentials".to_string(),
                Some(methods) => format!("credentials refused: {methods}"),
            };
            format!("Unauthenticated {verb} {path}: refused ({code}), {presented}")
        }
        Rule::Truncated => {
            let who = if r.user.is_some() {
                "Anonymous"
            } else {
                "Unauthenticated"
            };
            let outcome = match r.code {
                Some(code) => format!("{code}; the rest of the record was cut"),
                None => "the record was cut before its outcome".to_string(),
            };
            format!("{who} {verb} {path} (cut record): {outcome}")
        }
        Rule::Escu => {
            let outcome = if r.severity > Severity::Informational {
                format!("allowed ({code})")
            } else if r.stage == Some("RequestReceived") {
                "received; the outcome is on its later stage".to_string()
            } else {
                format!("refused ({code})")
            };
            format!("Anonymous {verb} {path}: {outcome}")
        }
    }
}

/// The HTTP method of a Kubernetes verb (a non-resource request's verb is
/// its method already). PATCH is not among OCSF 1.5's methods.
fn http_method(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "get" | "list" | "watch" => "GET",
        "create" | "post" => "POST",
        "update" | "put" => "PUT",
        "delete" | "deletecollection" => "DELETE",
        "head" => "HEAD",
        "options" => "OPTIONS",
        _ => return None,
    })
}

impl Sink for Ocsf {
    fn begin(&mut self, columns: &[&str], _out: &mut dyn Write) -> io::Result<()> {
        self.columns = columns.iter().map(|c| c.to_string()).collect();
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        let text = serde_json::to_string(&self.finding(row)).map_err(io::Error::other)?;
        escape_hidden(&text, &mut self.chunk);
        self.chunk.push(b'\n');
        if self.chunk.len() >= CHUNK {
            self.finish(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.chunk)?;
        self.chunk.clear();
        Ok(())
    }

    fn close(&mut self, _columns: &[&str], _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}
