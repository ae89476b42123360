//! Every format, over values made of any code points: what each writes
//! reads back to what the events held (or, in CSV, to its neutralised
//! form), and what reaches a terminal holds no control or invisible
//! format character raw (CSV included: it is read with `cat` too). Expectations are computed here from the values
//! given, with lists and rules written out independently of the code
//! under test.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Format, Parts, Rows, Style, Written};
use crate::detect::{COLUMNS, Detector, FILL, Origin, RULE_COLUMNS, TRIAGE_COLUMNS};

/// The characters no sink may write raw (besides the line breaks that end
/// ndjson and table lines): C0, DEL, C1, and the bidi, invisible and
/// separator characters, spelled out.
fn forbidden(c: char) -> bool {
    let format = [
        0x061c, 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b, 0x202c,
        0x202d, 0x202e, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0x2065, 0x2066, 0x2067, 0x2068,
        0x2069, 0xfeff,
    ];
    let c = u32::from(c);
    c < 0x20 || (0x7f..=0x9f).contains(&c) || format.contains(&c)
}

/// Characters from every corner that matters: printable ASCII (quotes,
/// backslashes, commas, formula characters), C0, DEL and C1, bidi and
/// invisible ones, neighbours of the surrogate range and other edges,
/// astral ones, and any character at all.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range(' ', '~'),
        2 => prop::sample::select(vec![' ', '\t', '\r', '\n', '\0', '=', '+', '-', '@', '\'', ',', '"', '\\']),
        1 => prop::char::range('\0', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{a0}'),
        2 => prop::sample::select(vec![
            '\u{61c}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{2028}',
            '\u{2029}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2060}',
            '\u{2064}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{feff}',
            // Neighbours, which are text.
            '\u{200a}', '\u{2010}', '\u{2027}', '\u{202f}', '\u{205f}', '\u{206a}', '\u{fefe}',
        ]),
        1 => prop::sample::select(vec!['\u{d7ff}', '\u{e000}', '\u{fffd}', '\u{fffe}', '\u{ffff}', 'é', '日']),
        1 => prop::char::range('\u{10000}', '\u{10ffff}'),
        1 => any::<char>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(any_char(), 0..10).prop_map(|v| v.into_iter().collect()),
        // Values the triage policy reads, so that every severity shows.
        1 => prop::sample::select(vec![
            "403", "401", "200", "forbid", "allow", "RequestReceived", "create", "get", "secrets",
            "roles", "/version", "/healthz?x=1",
        ]).prop_map(String::from),
    ]
}

/// One matching event's values: the 11 columns an event sets freely
/// (all but `user`), the source IP, a second group, `user` in some ASCII
/// case, and its authorization decision and reason.
#[derive(Debug, Clone)]
struct Event {
    scalars: Vec<String>,
    ip: String,
    group: String,
    user: String,
    decision: String,
    reason: String,
}

fn event() -> impl Strategy<Value = Event> {
    (
        prop::collection::vec(value(), 10),
        value(),
        value(),
        "[sS][yY][sS][tT][eE][mM]:[aA][nN][oO][nN][yY][mM][oO][uU][sS]",
        value(),
        value(),
    )
        .prop_map(|(scalars, ip, group, user, decision, reason)| Event {
            scalars,
            ip,
            group,
            user,
            decision,
            reason,
        })
}

/// The severity policy, written out from the README for these tests.
fn severity_name(row: &[String], decision: &str) -> &'static str {
    let (resource, uri, code, stage, verb) = (&row[2], &row[4], &row[5], &row[7], &row[12]);
    let path = uri.split('?').next().unwrap_or("");
    if code == "401" || code == "403" || decision == "forbid" || stage == "RequestReceived" {
        "informational"
    } else if [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "post",
        "put",
    ]
    .contains(&verb.as_str())
        || [
            "secrets",
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
        ]
        .contains(&resource.as_str())
    {
        "critical"
    } else if [
        "/version",
        "/version/",
        "/healthz",
        "/livez",
        "/readyz",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    ]
    .contains(&path)
    {
        "low"
    } else {
        "high"
    }
}

const LEVELS: [&str; 4] = ["informational", "low", "high", "critical"];

impl Event {
    fn json(&self) -> String {
        let s = &self.scalars;
        serde_json::json!({
            "objectRef": {"name": s[0], "namespace": s[1], "resource": s[2]},
            "requestReceivedTimestamp": s[3],
            "requestURI": s[4],
            "responseStatus": {"code": s[5]},
            "sourceIPs": [self.ip],
            "stage": s[6],
            "user": {
                "username": self.user,
                "groups": ["system:unauthenticated", self.group],
                "uid": s[7],
            },
            "userAgent": s[8],
            "verb": s[9],
            "annotations": {
                "authorization.k8s.io/decision": self.decision,
                "authorization.k8s.io/reason": self.reason,
                "other": "x",
            },
        })
        .to_string()
    }

    /// The rows it gives, by the spec: "" is filled with "0", and the
    /// second group is a row of its own unless it is "".
    fn rows(&self) -> Vec<Vec<String>> {
        let fill = |v: &str| if v.is_empty() { FILL } else { v }.to_string();
        let s: Vec<String> = self.scalars.iter().map(|v| fill(v)).collect();
        let mut groups = vec!["system:unauthenticated".to_string()];
        if !self.group.is_empty() {
            groups.push(self.group.clone());
        }
        groups
            .into_iter()
            .map(|g| {
                vec![
                    s[0].clone(),
                    s[1].clone(),
                    s[2].clone(),
                    s[3].clone(),
                    s[4].clone(),
                    s[5].clone(),
                    fill(&self.ip),
                    s[6].clone(),
                    g,
                    s[7].clone(),
                    self.user.clone(),
                    s[8].clone(),
                    s[9].clone(),
                ]
            })
            .collect()
    }
}

/// The rows, each with its count and its eight values after the count:
/// severity, decision, reason, binding (none: the reasons here name no
/// RBAC binding), rule, credential and note (every event here is ESCU's),
/// and `cluster` (the same for every row); sorted.
type Expected = Vec<(Vec<String>, u64, [String; 8])>;

fn expected(events: &[Event], cluster: &str) -> Expected {
    type Seen = (u64, usize, BTreeSet<String>, BTreeSet<String>);
    let mut rows: BTreeMap<Vec<String>, Seen> = BTreeMap::new();
    let fill = |v: &str| if v.is_empty() { FILL } else { v }.to_string();
    for e in events {
        for row in e.rows() {
            let level = severity_name(&row, &fill(&e.decision));
            let level = LEVELS.iter().position(|l| *l == level).unwrap();
            let seen = rows.entry(row).or_default();
            seen.0 += 1;
            seen.1 = seen.1.max(level);
            seen.2.insert(fill(&e.decision));
            seen.3.insert(fill(&e.reason));
        }
    }
    let join = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>().join(" | ");
    rows.into_iter()
        .map(|(row, (n, level, decisions, reasons))| {
            let after = [
                LEVELS[level].to_string(),
                join(decisions),
                join(reasons),
                FILL.to_string(),
                "escu".to_string(),
                FILL.to_string(),
                FILL.to_string(),
                cluster.to_string(),
            ];
            (row, n, after)
        })
        .collect()
}

/// Renders `events`' findings in `format`, as one run.
fn render(events: &[Event], cluster: &str, format: Format) -> Vec<u8> {
    render_with(events, cluster, format, 1, 1).0
}

/// [`render`] by up to `threads` threads, `batch` rows at a time; with
/// what was written.
fn render_with(
    events: &[Event],
    cluster: &str,
    format: Format,
    threads: usize,
    batch: usize,
) -> (Vec<u8>, Written) {
    let mut det = Detector::new(Vec::new());
    for e in events {
        det.feed(e.json().as_bytes(), Origin::default());
    }
    let findings = det.finish().0.into_findings();
    let rows = Rows {
        findings: &findings,
        fixed: &[("cluster", cluster)],
        id_label: Some("label"),
        anonymous_health_only: false,
    };
    let mut parts = Parts::new(Style::plain(format), None);
    let mut out = Vec::new();
    parts
        .write_with(&rows, &mut out, threads, batch)
        .expect("written");
    parts.finish(&rows, &mut out).expect("finished");
    (out, parts.written)
}

fn names() -> Vec<&'static str> {
    COLUMNS
        .iter()
        .chain(&TRIAGE_COLUMNS)
        .chain(&RULE_COLUMNS)
        .chain(&["cluster", "id"])
        .copied()
        .collect()
}

/// A row's id: 32 hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A JSON object of a row, read back: values by name.
fn json_row(object: &serde_json::Value) -> (Vec<String>, u64, [String; 8]) {
    let object = object.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut want = names();
    keys.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys, want);
    let text = |name: &str| object[name].as_str().expect("a string").to_string();
    assert!(is_id(&text("id")));
    (
        COLUMNS[..13].iter().map(|c| text(c)).collect(),
        object["count"].as_u64().expect("a number"),
        [
            "severity",
            "decision",
            "reason",
            "binding",
            "rule",
            "credential",
            "note",
            "cluster",
        ]
        .map(text),
    )
}

/// The CSV rule: each forbidden character as the table shows it
/// (`\u{1b}`, lower-case hex) and a backslash doubled; then, from OWASP's
/// advice and ASVS 5.0 1.2.10, a cell starting with `=`, `+`, `-`, `@`,
/// tab, CR or NUL, or with blanks (space, tab, CR, LF) before one of the
/// first four, gets a leading `'`.
fn csv_cell(value: &str) -> String {
    let mut shown = String::new();
    for c in value.chars() {
        if c == '\\' {
            shown.push_str("\\\\");
        } else if forbidden(c) {
            shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    let risky = shown.starts_with(['=', '+', '-', '@', '\t', '\r', '\0'])
        || shown
            .trim_start_matches([' ', '\t', '\r', '\n'])
            .starts_with(['=', '+', '-', '@']);
    if risky { format!("'{shown}") } else { shown }
}

/// The lines of `text`, split at LF only (so a raw CR shows).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.strip_suffix('\n').unwrap_or(text).split('\n')
}

fn no_forbidden_chars(line: &str) -> Result<(), TestCaseError> {
    if let Some(c) = line.chars().find(|&c| forbidden(c)) {
        return Err(TestCaseError::fail(format!(
            "{c:?} written raw in {line:?}"
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn json_reads_back_to_the_values(events in prop::collection::vec(event(), 1..4), cluster in value()) {
        let want = expected(&events, &cluster);
        let out = render(&events, &cluster, Format::Json);
        let text = String::from_utf8(out).expect("UTF-8");
        let items: Vec<serde_json::Value> = serde_json::from_str(&text).expect("one JSON array");
        let got: Expected = items.iter().map(json_row).collect();
        prop_assert_eq!(got, want);
        // Line breaks only between elements.
        for line in lines(&text) {
            no_forbidden_chars(line)?;
        }
    }

    #[test]
    fn ndjson_reads_back_to_the_values_and_hides_nothing(events in prop::collection::vec(event(), 1..4), cluster in value()) {
        let want = expected(&events, &cluster);
        let out = render(&events, &cluster, Format::Ndjson);
        let text = String::from_utf8(out).expect("UTF-8");
        prop_assert!(text.ends_with('\n'));
        let mut got = Expected::new();
        for line in lines(&text) {
            no_forbidden_chars(line)?;
            let object: serde_json::Value = serde_json::from_str(line).expect("a JSON object");
            got.push(json_row(&object));
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn csv_reads_back_to_the_values_neutralised_and_hides_nothing(events in prop::collection::vec(event(), 1..4), cluster in value()) {
        let want: Vec<Vec<String>> = expected(&events, &cluster)
            .into_iter()
            .map(|(row, n, extra)| {
                row.iter()
                    .map(|v| csv_cell(v))
                    .chain([n.to_string()])
                    .chain(extra.iter().map(|v| csv_cell(v)))
                    .chain(["id".to_string()])
                    .collect()
            })
            .collect();
        let out = render(&events, &cluster, Format::Csv);
        let text = String::from_utf8(out.clone()).expect("UTF-8");
        // One record per CRLF-ended line: no value breaks a line.
        prop_assert_eq!(lines(&text).count(), 1 + want.len(), "{}", text);
        for line in lines(&text) {
            no_forbidden_chars(line.strip_suffix('\r').unwrap_or(line))?;
        }
        let mut reader = csv::ReaderBuilder::new().from_reader(out.as_slice());
        let header: Vec<String> = reader.headers().expect("a header").iter().map(str::to_string).collect();
        prop_assert_eq!(header, names());
        let got: Vec<Vec<String>> = reader
            .records()
            .map(|r| {
                let mut cells: Vec<String> = r.expect("a valid record").iter().map(str::to_string).collect();
                let id = cells.pop().expect("an id");
                assert!(is_id(&id), "{id}");
                cells.push("id".to_string());
                cells
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn table_shows_nothing_raw(events in prop::collection::vec(event(), 1..4), cluster in value()) {
        let rows = expected(&events, &cluster).len();
        let out = render(&events, &cluster, Format::Table);
        let text = String::from_utf8(out).expect("UTF-8");
        // A header, and one line per row: no value breaks a line.
        prop_assert_eq!(lines(&text).count(), 1 + rows, "{}", text);
        for line in lines(&text) {
            no_forbidden_chars(line)?;
            // Style::plain's width, 120: no line wider, whatever the values.
            prop_assert!(line.chars().count() <= 120, "{:?}", line);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Rows rendered by several threads, a few at a time, are the bytes
    /// one thread writes, in every format (those whose rows do not stand
    /// alone are written by one thread whatever the count).
    #[test]
    fn rows_rendered_by_threads_are_one_threads_bytes(
        events in prop::collection::vec(event(), 1..40),
        cluster in value(),
        threads in 2..5usize,
        batch in 1..5usize,
    ) {
        for format in [Format::Ndjson, Format::Json, Format::Csv, Format::Ocsf, Format::Table] {
            let one = render_with(&events, &cluster, format, 1, batch);
            let many = render_with(&events, &cluster, format, threads, batch);
            prop_assert_eq!(&one.1, &many.1);
            prop_assert_eq!(String::from_utf8_lossy(&one.0), String::from_utf8_lossy(&many.0));
        }
    }
}

#[test]
fn health_paths_are_the_three_whole_paths() {
    for uri in ["/healthz", "/livez?verbose", "/readyz"] {
        assert!(super::is_health_path(uri), "{uri}");
    }
    for uri in [
        "/healthz/etcd",
        "/version",
        "/",
        "/livezz",
        "/api?x=/readyz",
    ] {
        assert!(!super::is_health_path(uri), "{uri}");
    }
}
