//! Helpers for the `kubeanon scan` CLI tests: fixtures, running the binary,
//! reading its output back. Nothing here uses the crate under test.

#![allow(dead_code)]

use std::fmt;
use std::path::PathBuf;

use assert_cmd::Command;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The output columns, in order, exactly as the spec names them.
pub const COLUMNS: [&str; 14] = [
    "objectRef.name",
    "objectRef.namespace",
    "objectRef.resource",
    "requestReceivedTimestamp",
    "requestURI",
    "responseStatus.code",
    "src_ip",
    "stage",
    "user.groups{}",
    "user.uid",
    "user",
    "userAgent",
    "verb",
    "count",
];

/// The triage columns every row has after the 14 (README: Severity).
pub const TRIAGE: [&str; 4] = ["severity", "decision", "reason", "binding"];
/// The columns after the triage columns: which rule, the credential, the note.
pub const RULES: [&str; 3] = ["rule", "credential", "note"];

/// Every fixture file (see tests/fixtures/SOURCES.md).
pub const FIXTURES: [&str; 8] = [
    "90daysofdevops_day61_openshift_audit.jsonl",
    "90daysofdevops_day61_openshift_audit_prettyprinted_compacted.jsonl",
    "falco_k8s_audit_trace_files.jsonl",
    "liggitt_audit2rbac_demo_log.jsonl",
    "openshift_clo_anonymous_oauth_apiserver.jsonl",
    "openshift_clo_audit_in.jsonl",
    "panther_analysis_anonymous_rule_tests_events.jsonl",
    "splunk_security_content_kubernetes_audit_example_log.jsonl",
];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The non-blank lines of a fixture.
pub fn fixture_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(name))
        .unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Every line of every fixture, in [`FIXTURES`] order.
pub fn all_fixture_lines() -> Vec<String> {
    FIXTURES.iter().flat_map(|f| fixture_lines(f)).collect()
}

/// The binary under test.
pub fn kubeanon() -> Command {
    Command::cargo_bin("kubeanon").expect("the kubeanon binary is built")
}

/// A JSON object with its keys in the order written.
#[derive(Debug)]
pub struct Ordered(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// One output row: the 13 by-field values as text, and the count.
pub type Row = (Vec<String>, u64);

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // The spec allows typed values (numbers as numbers).
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("unexpected cell value {other}"),
    }
}

/// An output object as a row, checking it has exactly the 14 columns in
/// order, then the triage columns, then the rule columns.
pub fn object_row(obj: &Ordered) -> Row {
    let keys: Vec<&str> = obj.0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys[..14], COLUMNS, "column names and order");
    assert_eq!(keys[14..18], TRIAGE, "triage columns after the 14");
    assert_eq!(keys[18..], RULES, "rule columns after the triage columns");
    let cols = obj.0[..13].iter().map(|(_, v)| cell_text(v)).collect();
    let count = match &obj.0[13].1 {
        Value::Number(n) => n.as_u64().expect("count is a whole number"),
        other => panic!("count is not a number: {other}"),
    };
    (cols, count)
}

/// Parses ndjson output into rows.
pub fn ndjson_rows(stdout: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(stdout).expect("ndjson output is UTF-8");
    text.lines()
        .map(|line| {
            let obj: Ordered = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad ndjson line {line:?}: {e}"));
            object_row(&obj)
        })
        .collect()
}

/// The counters of the summary line on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub malformed: u64,
    pub matched: u64,
    pub findings: u64,
    /// Cut records reported (rule truncated); 0 when the line says none.
    pub truncated: u64,
}

/// Reads "N events, N malformed, N matched, N findings" from stderr.
pub fn summary(stderr: &[u8]) -> Summary {
    let text = String::from_utf8_lossy(stderr);
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let number_before = |word: &str| -> u64 {
        let at = words
            .iter()
            // `1 finding`, `2 findings`: either form of the word.
            .position(|w| *w == word || word.strip_suffix('s') == Some(*w))
            .unwrap_or_else(|| panic!("no '{word}' in summary: {text}"));
        assert!(at > 0, "no number before '{word}': {text}");
        words[at - 1]
            .parse()
            .unwrap_or_else(|_| panic!("no number before '{word}': {text}"))
    };
    Summary {
        events: number_before("events"),
        malformed: number_before("malformed"),
        matched: number_before("matched"),
        findings: number_before("findings"),
        truncated: if words.contains(&"truncated") {
            number_before("truncated")
        } else {
            0
        },
    }
}

/// A row from 13 literal values and a count.
pub fn row(cols: [&str; 13], count: u64) -> Row {
    (cols.iter().map(|c| c.to_string()).collect(), count)
}
