//! CLI tests for `kubeanon scan` over the public samples in tests/fixtures
//! (origins in tests/fixtures/SOURCES.md) and small crafted inputs.
//!
//! Expected rows are written by hand from the fixtures, and the expected
//! counts were obtained with jq, independently of kubeanon:
//!
//! ```sh
//! jq -c 'select(.user.username=="system:anonymous"
//!   and (.user.groups//[]|index("system:unauthenticated")))' tests/fixtures/FILE | wc -l
//! ```
//!
//! which gives 3 for 90daysofdevops_day61_openshift_audit.jsonl, 1 for
//! openshift_clo_anonymous_oauth_apiserver.jsonl, 2 for
//! panther_analysis_anonymous_rule_tests_events.jsonl and 0 for the other
//! five (a case-insensitive variant with `ascii_downcase` gives the same).
//! All 162 fixture lines are JSON objects (`jq -c . | wc -l`).

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use util::*;

/// Lines in all fixtures together (`cat tests/fixtures/*.jsonl | wc -l`).
const FIXTURE_EVENTS: u64 = 162;
/// Anonymous + unauthenticated events in all fixtures (jq, see above).
const FIXTURE_MATCHED: u64 = 6;

/// The rows the six matching fixture events give, in output order. Written
/// by hand from the events; none has objectRef or user.uid, so those are
/// "0", and the RequestReceived ones have no responseStatus.
fn sample_rows() -> Vec<Row> {
    let oauth_uri = "/oauth/authorize?client_id=openshift-challenging-client\
        &code_challenge=L56_-VuTMU7qF36WuKxF6mnA2nj_oEEETPsAdQ-w24I\
        &code_challenge_method=S256\
        &redirect_uri=https%3A%2F%2Foauth-openshift.apps.90days-ocp.simon.local%2Foauth%2Ftoken%2Fimplicit\
        &response_type=code";
    vec![
        // 90daysofdevops: HEAD / received ...
        row(
            [
                "0",
                "0",
                "0",
                "2023-03-30T14:13:04.446550Z",
                "/",
                "0",
                "10.131.0.2",
                "RequestReceived",
                "system:unauthenticated",
                "0",
                "system:anonymous",
                "Go-http-client/1.1",
                "head",
            ],
            1,
        ),
        // ... and answered 403.
        row(
            [
                "0",
                "0",
                "0",
                "2023-03-30T14:13:04.446550Z",
                "/",
                "403",
                "10.131.0.2",
                "ResponseComplete",
                "system:unauthenticated",
                "0",
                "system:anonymous",
                "Go-http-client/1.1",
                "head",
            ],
            1,
        ),
        // 90daysofdevops: the oauth authorize request (\u0026 unescaped).
        row(
            [
                "0",
                "0",
                "0",
                "2023-03-30T14:13:04.489643Z",
                oauth_uri,
                "0",
                "10.131.0.2",
                "RequestReceived",
                "system:unauthenticated",
                "0",
                "system:anonymous",
                "Go-http-client/1.1",
                "get",
            ],
            1,
        ),
        // openshift_clo_anonymous_oauth_apiserver.
        oauth_apiserver_row(),
        // panther: a scanner on /version ...
        row(
            [
                "0",
                "0",
                "0",
                "2024-11-13 18:34:10.595141000",
                "/version",
                "200",
                "44.238.138.237",
                "ResponseComplete",
                "system:unauthenticated",
                "0",
                "system:anonymous",
                "python-requests/2.31.0",
                "get",
            ],
            1,
        ),
        // ... and one probing for phpunit.
        row(
            [
                "0",
                "0",
                "0",
                "2024-11-13 23:50:32.672347000",
                "/vendor/phpunit/src/Util/PHP/eval-stdin.php",
                "403",
                "8.216.81.10",
                "ResponseComplete",
                "system:unauthenticated",
                "0",
                "system:anonymous",
                "Custom-AsyncHttpClient",
                "get",
            ],
            1,
        ),
    ]
}

fn oauth_apiserver_row() -> Row {
    row(
        [
            "0",
            "0",
            "0",
            "2024-07-02T17:03:43.017443Z",
            "/",
            "403",
            "10.131.0.5",
            "ResponseComplete",
            "system:unauthenticated",
            "0",
            "system:anonymous",
            "Go-http-client/1.1",
            "head",
        ],
        1,
    )
}

fn all_fixture_paths() -> Vec<PathBuf> {
    FIXTURES.iter().map(|f| fixture(f)).collect()
}

/// Runs `kubeanon scan ARGS` expecting success; returns stdout and stderr.
fn scan_ok(args: &[&std::ffi::OsStr]) -> (Vec<u8>, Vec<u8>) {
    let out = kubeanon().arg("scan").args(args).assert().success();
    let out = out.get_output();
    (out.stdout.clone(), out.stderr.clone())
}

/// Scans one file (ndjson) and checks the rows and counters it gives for
/// the fixtures in whatever shape `path` holds them.
fn assert_sample_findings(path: &Path) {
    let (stdout, stderr) = scan_ok(&[path.as_os_str()]);
    assert_eq!(ndjson_rows(&stdout), sample_rows(), "{}", path.display());
    let s = summary(&stderr);
    assert_eq!(s.matched, FIXTURE_MATCHED, "{s:?}");
    assert_eq!(s.findings, 6, "{s:?}");
    assert_eq!(s.malformed, 0, "{s:?}");
    assert_eq!(s.events, FIXTURE_EVENTS, "{s:?}");
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test input");
    path
}

/// A CloudWatch log event, as `aws logs filter-log-events` prints each.
fn cloudwatch_event(message: &str, i: usize) -> Value {
    json!({
        "logStreamName": "kube-apiserver-audit-0123456789abcdef0123456789abcdef",
        "timestamp": 1_714_564_800_000u64 + i as u64,
        "message": message,
        "ingestionTime": 1_714_564_801_000u64 + i as u64,
        "eventId": format!("3817{i:052}"),
    })
}

fn filter_log_events_document() -> Value {
    let events: Vec<Value> = all_fixture_lines()
        .iter()
        .enumerate()
        .map(|(i, l)| cloudwatch_event(l, i))
        .collect();
    json!({
        "events": events,
        "searchedLogStreams": [
            {"logStreamName": "kube-apiserver-audit-0123456789abcdef0123456789abcdef", "searchedCompletely": true}
        ]
    })
}

/// Pretty-printed with four-space indents, as the AWS CLI prints JSON.
fn aws_cli_pretty(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("serialise");
    out.push(b'\n');
    out
}

fn event_list() -> Value {
    let items: Vec<Value> = all_fixture_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("fixture lines are JSON"))
        .collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn lines_text(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------
// Real samples, plain event lines

#[test]
fn plain_event_lines_from_the_samples() {
    let paths = all_fixture_paths();
    let args: Vec<&std::ffi::OsStr> = paths.iter().map(|p| p.as_os_str()).collect();
    let (stdout, stderr) = scan_ok(&args);
    assert_eq!(ndjson_rows(&stdout), sample_rows());
    let s = summary(&stderr);
    assert_eq!(
        s,
        Summary {
            events: FIXTURE_EVENTS,
            malformed: 0,
            matched: FIXTURE_MATCHED,
            findings: 6,
            truncated: 0
        }
    );
}

#[test]
fn matched_events_per_sample_file() {
    // Numbers from the jq command at the top of this file.
    for (file, matched, lines) in [
        ("90daysofdevops_day61_openshift_audit.jsonl", 3, 9),
        (
            "90daysofdevops_day61_openshift_audit_prettyprinted_compacted.jsonl",
            0,
            2,
        ),
        ("falco_k8s_audit_trace_files.jsonl", 0, 51),
        ("liggitt_audit2rbac_demo_log.jsonl", 0, 30),
        ("openshift_clo_anonymous_oauth_apiserver.jsonl", 1, 1),
        ("openshift_clo_audit_in.jsonl", 0, 42),
        ("panther_analysis_anonymous_rule_tests_events.jsonl", 2, 26),
        (
            "splunk_security_content_kubernetes_audit_example_log.jsonl",
            0,
            1,
        ),
    ] {
        let (stdout, stderr) = scan_ok(&[fixture(file).as_os_str()]);
        let s = summary(&stderr);
        assert_eq!(s.matched, matched, "{file}: {s:?}");
        assert_eq!(s.events, lines, "{file}: {s:?}");
        assert_eq!(s.malformed, 0, "{file}: {s:?}");
        assert_eq!(ndjson_rows(&stdout).len() as u64, matched, "{file}");
    }
}

#[test]
fn falco_anonymous_with_authenticated_groups_does_not_match() {
    // The falco file's first line is system:anonymous, but in groups
    // system:masters and system:authenticated.
    let first = &fixture_lines("falco_k8s_audit_trace_files.jsonl")[0];
    let v: Value = serde_json::from_str(first).expect("JSON");
    assert_eq!(v["user"]["username"], "system:anonymous");
    assert_eq!(
        v["user"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    let out = kubeanon()
        .args(["scan", "-"])
        .write_stdin(format!("{first}\n"))
        .assert()
        .success();
    assert!(out.get_output().stdout.is_empty());
    let s = summary(&out.get_output().stderr);
    assert_eq!((s.events, s.matched, s.findings), (1, 0, 0));
}

#[test]
fn openshift_anonymous_oauth_event_matches() {
    let (stdout, _) =
        scan_ok(&[fixture("openshift_clo_anonymous_oauth_apiserver.jsonl").as_os_str()]);
    let rows = ndjson_rows(&stdout);
    assert_eq!(rows, vec![oauth_apiserver_row()]);
    let (cols, _) = &rows[0];
    assert_eq!(cols[5], "403", "responseStatus.code");
    assert_eq!(cols[9], "0", "user.uid");
}

#[test]
fn pretty_printed_single_event() {
    // The oauth sample is pretty-printed in its source repository.
    let line = &fixture_lines("openshift_clo_anonymous_oauth_apiserver.jsonl")[0];
    let v: Value = serde_json::from_str(line).expect("JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "event.json", &aws_cli_pretty(&v));
    let (stdout, stderr) = scan_ok(&[path.as_os_str()]);
    assert_eq!(ndjson_rows(&stdout), vec![oauth_apiserver_row()]);
    assert_eq!(summary(&stderr).matched, 1);
}

// ---------------------------------------------------------------------------
// Input formats

#[test]
fn cloudwatch_event_lines() {
    let lines: Vec<String> = all_fixture_lines()
        .iter()
        .enumerate()
        .map(|(i, l)| cloudwatch_event(l, i).to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "cw.jsonl", lines_text(&lines).as_bytes());
    assert_sample_findings(&path);
}

#[test]
fn filter_log_events_document_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = filter_log_events_document().to_string() + "\n";
    let path = write_file(dir.path(), "doc.json", doc.as_bytes());
    assert_sample_findings(&path);
}

#[test]
fn filter_log_events_document_pretty_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = aws_cli_pretty(&filter_log_events_document());
    assert!(text.starts_with(b"{\n    \"events\": [\n        {\n"));
    let path = write_file(dir.path(), "doc.json", &text);
    assert_sample_findings(&path);
    // The same through stdin.
    let out = kubeanon().arg("scan").write_stdin(text).assert().success();
    assert_eq!(ndjson_rows(&out.get_output().stdout), sample_rows());
}

#[test]
fn s3_export_lines() {
    let lines: Vec<String> = all_fixture_lines()
        .iter()
        .enumerate()
        .map(|(i, l)| format!("2024-05-01T12:{:02}:{:02}.000Z {l}", i / 60, i % 60))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "000000", lines_text(&lines).as_bytes());
    assert_sample_findings(&path);
    // And gzipped, as the export writes them.
    let gz = write_file(
        dir.path(),
        "000000.gz",
        &gzip(lines_text(&lines).as_bytes()),
    );
    assert_sample_findings(&gz);
}

#[test]
fn event_list_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one_line = write_file(
        dir.path(),
        "list.json",
        (event_list().to_string() + "\n").as_bytes(),
    );
    assert_sample_findings(&one_line);
    let pretty = write_file(
        dir.path(),
        "list-pretty.json",
        &aws_cli_pretty(&event_list()),
    );
    assert_sample_findings(&pretty);
}

#[test]
fn mixed_line_formats_in_one_file() {
    // Every accepted line shape, interleaved.
    let lines: Vec<String> = all_fixture_lines()
        .iter()
        .enumerate()
        .map(|(i, l)| match i % 4 {
            0 => l.clone(),
            1 => cloudwatch_event(l, i).to_string(),
            2 => format!("2024-05-01T12:00:00.123+02:00 {l}"),
            _ => json!({"kind": "EventList", "items": [serde_json::from_str::<Value>(l).expect("JSON")]})
                .to_string(),
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "mixed.log", lines_text(&lines).as_bytes());
    assert_sample_findings(&path);
}

#[test]
fn gzip_is_recognised_by_its_magic_bytes() {
    let text = lines_text(&all_fixture_lines());
    let dir = tempfile::tempdir().expect("tempdir");
    // No .gz in the name: the content decides.
    let path = write_file(dir.path(), "audit.log", &gzip(text.as_bytes()));
    assert_sample_findings(&path);
    // Two gzip members back to back (concatenated .gz files).
    let half = text.len() / 2;
    let cut = text[..half].rfind('\n').expect("a newline") + 1;
    let mut two = gzip(&text.as_bytes()[..cut]);
    two.extend(gzip(&text.as_bytes()[cut..]));
    let path = write_file(dir.path(), "two-members", &two);
    assert_sample_findings(&path);
    // Through stdin.
    let out = kubeanon()
        .args(["scan", "-"])
        .write_stdin(gzip(text.as_bytes()))
        .assert()
        .success();
    assert_eq!(ndjson_rows(&out.get_output().stdout), sample_rows());
    // A pretty-printed document, gzipped.
    let path = write_file(
        dir.path(),
        "doc.json.gz",
        &gzip(&aws_cli_pretty(&filter_log_events_document())),
    );
    assert_sample_findings(&path);
}

#[test]
fn stdin_with_dash_and_with_no_path() {
    let text = lines_text(&all_fixture_lines());
    for args in [vec!["scan", "-"], vec!["scan"]] {
        let out = kubeanon()
            .args(&args)
            .write_stdin(text.clone())
            .assert()
            .success();
        let out = out.get_output();
        assert_eq!(ndjson_rows(&out.stdout), sample_rows(), "{args:?}");
        assert_eq!(summary(&out.stderr).events, FIXTURE_EVENTS, "{args:?}");
    }
    // stdin and a file together.
    let out = kubeanon()
        .args(["scan", "-"])
        .arg(fixture("openshift_clo_anonymous_oauth_apiserver.jsonl"))
        .write_stdin(lines_text(&fixture_lines(
            "90daysofdevops_day61_openshift_audit.jsonl",
        )))
        .assert()
        .success();
    assert_eq!(summary(&out.get_output().stderr).matched, 4);
}

#[test]
fn empty_input_has_no_findings() {
    let out = kubeanon().arg("scan").write_stdin("").assert().success();
    let out = out.get_output();
    assert!(out.stdout.is_empty());
    assert_eq!(
        summary(&out.stderr),
        Summary {
            events: 0,
            malformed: 0,
            matched: 0,
            findings: 0,
            truncated: 0
        }
    );
}

// ---------------------------------------------------------------------------
// Malformed input

#[test]
fn bad_lines_are_counted_as_malformed() {
    let good = r#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"verb":"get","sourceIPs":["203.0.113.1"]}"#;
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(good.as_bytes());
    input.extend_from_slice(b"\n\n   \n\r\n"); // blank lines: not counted
    // Binary: invalid UTF-8 and NUL bytes.
    input.extend_from_slice(b"\xff\xfe\x00\x00\x01garbage\x00\xc3\x28\n");
    input.extend_from_slice(b"\x00\x00\x00\x00\n");
    // A matching-looking event with invalid UTF-8 inside.
    input.extend_from_slice(
        b"{\"user\":{\"username\":\"system:anonymous\",\"groups\":[\"system:unauthenticated\"]},\"userAgent\":\"\xff\xc0\"}\n",
    );
    // A CloudWatch-truncated event.
    input.extend_from_slice(
        br#"{"kind":"Event","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"requestURI":"/x","requestObject":{"a":"bbbb[Truncated...]"#,
    );
    input.push(b'\n');
    input.extend_from_slice(b"not json at all\n");
    input.extend_from_slice(good.as_bytes());
    input.push(b'\n');
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "bad.log", &input);
    let escu = [
        std::ffi::OsStr::new("--rules"),
        "escu".as_ref(),
        path.as_os_str(),
    ];
    let (stdout, stderr) = scan_ok(&escu);
    let s = summary(&stderr);
    assert_eq!(s.malformed, 5, "{s:?}");
    assert_eq!(s.matched, 2, "{s:?}");
    assert_eq!(s.events, 2, "{s:?}");
    let rows = ndjson_rows(&stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, 2);
    // With every rule, the cut anonymous event is a row of its own (rule
    // truncated), no longer malformed; the rest is as above.
    let (stdout, stderr) = scan_ok(&[path.as_os_str()]);
    let s = summary(&stderr);
    assert_eq!((s.malformed, s.truncated, s.matched), (4, 1, 2), "{s:?}");
    assert_eq!(ndjson_rows(&stdout).len(), 2);
}

#[test]
fn truncated_cloudwatch_event_line_is_malformed_to_escu_and_a_truncated_row_otherwise() {
    let inner = r#"{"kind":"Event","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"requestURI":"/a[Truncated...]"#;
    let line = cloudwatch_event(inner, 1).to_string();
    let out = kubeanon()
        .args(["scan", "--rules", "escu"])
        .write_stdin(line.clone() + "\n")
        .assert()
        .success();
    let out = out.get_output();
    assert!(out.stdout.is_empty());
    let s = summary(&out.stderr);
    assert_eq!((s.malformed, s.matched), (1, 0), "{s:?}");
    let out = kubeanon()
        .args(["scan", "--format", "ndjson"])
        .write_stdin(line + "\n")
        .assert()
        .success();
    let out = out.get_output();
    let s = summary(&out.stderr);
    assert_eq!((s.malformed, s.truncated, s.matched), (0, 1, 0), "{s:?}");
    let rows = ndjson_rows(&out.stdout);
    assert_eq!(rows.len(), 1);
    // The requestURI was cut inside its string: not read.
    assert_eq!(rows[0].0[4], "0");
}

#[test]
fn overlong_line_is_one_malformed_record() {
    // A 40 MiB line (over the 16 MiB record limit, more than twice) is one
    // malformed record; the event after it is still read.
    let good = r#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"verb":"get"}"#;
    let mut input = Vec::with_capacity(41 << 20);
    input.extend_from_slice(br#"{"requestURI":""#);
    input.resize(40 << 20, b'a');
    input.extend_from_slice(b"\"}\n");
    input.extend_from_slice(good.as_bytes());
    input.push(b'\n');
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "long.log", &input);
    drop(input);
    let (stdout, stderr) = scan_ok(&[path.as_os_str()]);
    let s = summary(&stderr);
    assert_eq!((s.events, s.malformed, s.matched), (1, 1, 1), "{s:?}");
    assert_eq!(ndjson_rows(&stdout).len(), 1);
}

// ---------------------------------------------------------------------------
// Output formats

/// Matching events whose attacker-controlled fields hold spreadsheet
/// formulas, CSV metacharacters and terminal controls.
fn hostile_input() -> String {
    let agents = [
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "+1+1",
        "-2+3",
        "@SUM(A1:A9)",
        "a,\"b\"\r\nc",
        "evil\u{1b}[2J\u{1b}]0;title\u{7}\u{202e}txt.exe\u{9b}31m",
        // Hidden in a terminal: zero-width, line separator, BOM, DEL.
        "in\u{200b}vis\u{2028}ible\u{feff}\u{7f}\u{2066}",
        // Formulas behind blanks, and a NUL first.
        " =cmd|' /C calc'!A0",
        "\r\n@SUM(A1:A9)",
        "\u{0}=1+1",
    ];
    agents
        .iter()
        .map(|a| {
            json!({
                "kind": "Event",
                "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
                "sourceIPs": ["198.51.100.7"],
                "userAgent": a,
                "requestURI": "/api?q=\u{1b}[31m\u{2066}",
                "verb": "get",
                "responseStatus": {"code": 403},
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn default_format_off_a_terminal_is_ndjson() {
    let out = kubeanon()
        .arg("scan")
        .write_stdin(lines_text(&all_fixture_lines()))
        .assert()
        .success();
    // ndjson_rows checks the 14 column names, in order, on every line.
    assert_eq!(ndjson_rows(&out.get_output().stdout), sample_rows());
}

#[test]
fn ndjson_format() {
    let out = kubeanon()
        .args(["scan", "--format", "ndjson"])
        .write_stdin(hostile_input())
        .assert()
        .success();
    let stdout = &out.get_output().stdout;
    let text = std::str::from_utf8(stdout).expect("UTF-8");
    assert_eq!(text.lines().count(), 10);
    assert!(text.ends_with('\n'));
    let rows = ndjson_rows(stdout);
    // Values come back exactly (JSON escaping, no neutralising).
    let agents: Vec<&str> = rows.iter().map(|(c, _)| c[11].as_str()).collect();
    assert!(agents.contains(&"a,\"b\"\r\nc"));
    assert!(agents.contains(&"=HYPERLINK(\"http://evil.example\",\"x\")"));
    assert!(agents.contains(&"evil\u{1b}[2J\u{1b}]0;title\u{7}\u{202e}txt.exe\u{9b}31m"));
    assert!(agents.contains(&"in\u{200b}vis\u{2028}ible\u{feff}\u{7f}\u{2066}"));
    // The output itself carries no raw control, bidi or invisible
    // character: each is a \uXXXX escape (`tail -F` is safe).
    for bad in [
        '\u{1b}', '\u{7}', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{2028}',
        '\u{feff}', '\r', '\0',
    ] {
        assert!(!text.contains(bad), "{bad:?} written raw: {text:?}");
    }
    for escape in [
        r"\u001b", r"\u007f", r"\u009b", r"\u202e", r"\u200b", r"\u2028", r"\ufeff",
    ] {
        assert!(text.contains(escape), "no {escape} in {text}");
    }
}

#[test]
fn json_format_is_one_array() {
    let out = kubeanon()
        .args(["scan", "--format", "json"])
        .write_stdin(lines_text(&all_fixture_lines()))
        .assert()
        .success();
    let stdout = &out.get_output().stdout;
    let items: Vec<Ordered> = serde_json::from_slice(stdout).expect("one JSON array");
    let rows: Vec<Row> = items.iter().map(object_row).collect();
    assert_eq!(rows, sample_rows());
    // No findings: still a valid (empty) array.
    let out = kubeanon()
        .args(["scan", "--format", "json"])
        .arg(fixture("liggitt_audit2rbac_demo_log.jsonl"))
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON");
    assert_eq!(v, json!([]));
}

#[test]
fn csv_format_is_rfc4180_and_safe_in_a_spreadsheet() {
    let out = kubeanon()
        .args(["scan", "--format", "csv"])
        .write_stdin(hostile_input())
        .assert()
        .success();
    let stdout = out.get_output().stdout.clone();
    let text = String::from_utf8(stdout.clone()).expect("UTF-8");
    // RFC 4180: CRLF line ends; a field with a comma, quote or line break
    // is quoted, quotes doubled.
    let names: Vec<&str> = COLUMNS
        .iter()
        .chain(&TRIAGE)
        .chain(&RULES)
        .copied()
        .collect();
    assert!(text.starts_with(&(names.join(",") + "\r\n")), "{text}");
    // Line breaks inside a cell are shown as the table shows them, never
    // raw (a terminal or a reader splitting lines sees one row a line).
    assert!(text.contains("\"a,\"\"b\"\"\\u{d}\\u{a}c\""), "{text}");
    let mut reader = csv::ReaderBuilder::new().from_reader(stdout.as_slice());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, names);
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("valid CSV");
    assert_eq!(records.len(), 10);
    let agents: Vec<&str> = records.iter().map(|r| &r[11]).collect();
    for want in [
        "'=HYPERLINK(\"http://evil.example\",\"x\")",
        "'+1+1",
        "'-2+3",
        "'@SUM(A1:A9)",
        "a,\"b\"\\u{d}\\u{a}c",
        "' =cmd|' /C calc'!A0",
        "\\u{d}\\u{a}@SUM(A1:A9)",
        "\\u{0}=1+1",
    ] {
        assert!(agents.contains(&want), "{want:?} not in {agents:?}");
    }
    for r in &records {
        assert_eq!(r.len(), 21);
        assert_eq!(&r[5], "403");
        assert_eq!(&r[6], "198.51.100.7");
        assert_eq!(&r[13], "1");
        // No cell starts with a formula character, behind blanks or not,
        // or with a NUL.
        for cell in r.iter() {
            assert!(
                !cell
                    .trim_start_matches([' ', '\t', '\r', '\n'])
                    .starts_with(['=', '+', '-', '@', '\0']),
                "formula cell {cell:?}"
            );
        }
    }
}

#[test]
fn table_format_neutralises_terminal_controls() {
    // The table that fits a width, and --wide's with every column uncut.
    let table = |extra: &[&str]| {
        let out = kubeanon()
            .args(["scan", "--format", "table"])
            .args(extra)
            .env("COLUMNS", "80")
            .write_stdin(hostile_input())
            .assert()
            .success();
        String::from_utf8(out.get_output().stdout.clone()).expect("UTF-8")
    };
    let (fitted, text) = (table(&[]), table(&["--wide"]));
    for text in [&fitted, &text] {
        for bad in [
            '\u{1b}', '\u{7}', '\u{202e}', '\u{2066}', '\u{9b}', '\r', '\u{7f}', '\u{200b}',
            '\u{2028}', '\u{feff}', '\0',
        ] {
            assert!(
                !text.contains(bad),
                "{bad:?} reached the terminal: {text:?}"
            );
        }
        // Header and ten rows.
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(text.contains("198.51.100.7"));
    }
    for line in fitted.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
    let first = text.lines().next().expect("a header line");
    for name in COLUMNS {
        assert!(first.contains(name), "{name} not in header {first:?}");
    }
    assert!(
        text.contains(r"in\u{200b}vis\u{2028}ible\u{feff}\u{7f}"),
        "{text}"
    );
    assert!(text.contains("evil"));
}

#[test]
fn a_lone_surrogate_is_shown_as_the_replacement_character() {
    // serde_json's `json!` cannot write a lone surrogate: written by hand.
    let lines = [
        r#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["198.51.100.7"],"userAgent":"curl\ud800/8","requestURI":"/\udc00","verb":"get"}"#,
        // The same event as CloudWatch delivers it: escaped once more.
        r#"{"message":"{\"user\":{\"username\":\"system:anonymous\",\"groups\":[\"system:unauthenticated\"]},\"sourceIPs\":[\"198.51.100.8\"],\"userAgent\":\"curl\\ud800/8\",\"requestURI\":\"/\\udc00\",\"verb\":\"get\"}","eventId":"1"}"#,
    ];
    let out = kubeanon()
        .args(["scan", "--format", "ndjson"])
        .write_stdin(lines.join("\n") + "\n")
        .assert()
        .success();
    let output = out.get_output();
    let s = summary(&output.stderr);
    assert_eq!((s.events, s.malformed, s.matched), (2, 0, 2), "{s:?}");
    let rows = ndjson_rows(&output.stdout);
    assert_eq!(rows.len(), 2);
    for (ip, (cols, _)) in ["198.51.100.7", "198.51.100.8"].iter().zip(&rows) {
        assert_eq!(cols[6], *ip);
        assert_eq!(cols[11], "curl\u{fffd}/8");
        assert_eq!(cols[4], "/\u{fffd}");
    }
}

// ---------------------------------------------------------------------------
// --output, --append

#[test]
fn output_file_replaces_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("findings.ndjson");
    std::fs::write(&out_path, "old content\n").expect("write");
    let out = kubeanon()
        .arg("scan")
        .arg("--output")
        .arg(&out_path)
        .args(all_fixture_paths())
        .assert()
        .success();
    assert!(out.get_output().stdout.is_empty());
    let written = std::fs::read(&out_path).expect("output file");
    assert_eq!(ndjson_rows(&written), sample_rows());
    // No temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["findings.ndjson"]);

    // -o with csv.
    let csv_path = dir.path().join("findings.csv");
    kubeanon()
        .args(["scan", "--format", "csv", "-o"])
        .arg(&csv_path)
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .success();
    let mut reader = csv::Reader::from_path(&csv_path).expect("csv");
    assert_eq!(reader.records().count(), 3);
}

#[test]
fn output_into_a_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir");
    let target = missing.join("out.ndjson");
    let out = kubeanon()
        .arg("scan")
        .arg("--output")
        .arg(&target)
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    assert!(stderr.contains("error"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!missing.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read dir").count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn failed_run_leaves_the_previous_output_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("findings.ndjson");
    std::fs::write(&out_path, "previous\n").expect("write");
    kubeanon()
        .arg("scan")
        .arg("--output")
        .arg(&out_path)
        .arg(dir.path().join("missing.jsonl"))
        .assert()
        .code(1);
    assert_eq!(
        std::fs::read_to_string(&out_path).expect("read"),
        "previous\n"
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 1);
}

#[test]
fn append_writes_the_csv_header_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("findings.csv");
    for _ in 0..2 {
        kubeanon()
            .args(["scan", "--format", "csv", "--append"])
            .arg(&path)
            .args(all_fixture_paths())
            .assert()
            .success();
    }
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.matches("objectRef.name,").count(), 1, "{text}");
    let mut reader = csv::Reader::from_path(&path).expect("csv");
    let rows: Vec<Row> = reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            (
                r.iter().take(13).map(str::to_string).collect(),
                r[13].parse().expect("count"),
            )
        })
        .collect();
    let mut want = sample_rows();
    want.extend(sample_rows());
    assert_eq!(rows, want);
}

#[test]
fn append_ndjson_adds_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("findings.ndjson");
    for _ in 0..2 {
        kubeanon()
            .args(["scan", "--append"])
            .arg(&path)
            .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
            .assert()
            .success();
    }
    let rows = ndjson_rows(&std::fs::read(&path).expect("read"));
    let mut want = sample_rows()[..3].to_vec();
    want.extend_from_slice(&sample_rows()[..3]);
    assert_eq!(rows, want);
}

#[cfg(unix)]
#[test]
fn append_files_are_created_private_and_keep_their_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = tempfile::tempdir().expect("tempdir");
    for format in ["ndjson", "csv"] {
        let path = dir.path().join(format!("new.{format}"));
        kubeanon()
            .args(["scan", "--format", format, "--append"])
            .arg(&path)
            .args(all_fixture_paths())
            .assert()
            .success();
        assert_eq!(mode(&path), 0o600, "{format}");
        assert!(!std::fs::read(&path).expect("read").is_empty());
    }
    // Created with nothing to append: private too.
    let empty = dir.path().join("empty.ndjson");
    kubeanon()
        .args(["scan", "--append"])
        .arg(&empty)
        .arg(fixture("liggitt_audit2rbac_demo_log.jsonl"))
        .assert()
        .success();
    assert_eq!(mode(&empty), 0o600);
    // An existing file keeps the mode its owner gave it.
    let shared = dir.path().join("shared.ndjson");
    std::fs::write(&shared, "").expect("write");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    kubeanon()
        .args(["scan", "--append"])
        .arg(&shared)
        .args(all_fixture_paths())
        .assert()
        .success();
    assert_eq!(mode(&shared), 0o644);
    assert_eq!(
        ndjson_rows(&std::fs::read(&shared).expect("read")),
        sample_rows()
    );
    // And -o, as the README says.
    let replaced = dir.path().join("out.ndjson");
    kubeanon()
        .args(["scan", "-o"])
        .arg(&replaced)
        .args(all_fixture_paths())
        .assert()
        .success();
    assert_eq!(mode(&replaced), 0o600);
}

// ---------------------------------------------------------------------------
// --exclude

#[test]
fn exclude_drops_matching_rows() {
    let run = |excludes: &[&str]| -> Vec<Row> {
        let mut cmd = kubeanon();
        cmd.arg("scan");
        for x in excludes {
            cmd.arg("--exclude").arg(x);
        }
        let out = cmd.args(all_fixture_paths()).assert().success();
        ndjson_rows(&out.get_output().stdout)
    };
    let all = sample_rows();
    // The four OpenShift rows come from 10.131.0.0/16.
    assert_eq!(run(&["src_ip=10.0.0.0/8"]), all[4..].to_vec());
    // Glob, ASCII case-insensitive.
    assert_eq!(run(&["userAgent=go-http-client/*"]), all[4..].to_vec());
    assert_eq!(run(&["requestURI=/vendor/*"]), all[..5].to_vec());
    // Repeatable: any match drops the row.
    assert_eq!(
        run(&["src_ip=10.0.0.0/8", "requestURI=/version"]),
        all[5..].to_vec()
    );
    // Whole-value match: a prefix alone drops nothing.
    assert_eq!(run(&["userAgent=Go-http-client"]), all);
}

/// A matching event from `ip` with user agent `agent`.
fn anonymous_from(ip: &str, agent: &str) -> String {
    json!({
        "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
        "sourceIPs": [ip],
        "userAgent": agent,
        "verb": "get",
    })
    .to_string()
        + "\n"
}

#[test]
fn exclude_conditions_joined_by_commas_must_all_match() {
    let input: String = [
        anonymous_from("10.0.0.5", "kube-probe/1.30"),
        anonymous_from("203.0.113.9", "kube-probe/1.30"),
        anonymous_from("10.0.0.6", "curl/8.5.0"),
        anonymous_from("10.0.0.7", "Mozilla/5.0 (X11, Linux)"),
    ]
    .concat();
    let run = |excludes: &[&str]| -> Vec<(String, String)> {
        let mut cmd = kubeanon();
        cmd.arg("scan");
        for x in excludes {
            cmd.arg("--exclude").arg(x);
        }
        let out = cmd.write_stdin(input.clone()).assert().success();
        ndjson_rows(&out.get_output().stdout)
            .into_iter()
            .map(|(c, _)| (c[6].clone(), c[11].clone()))
            .collect()
    };
    let pair = |ip: &str, agent: &str| (ip.to_string(), agent.to_string());
    // Only the probe from inside the cluster's network is dropped: the one
    // from outside spoofed an agent it chose.
    assert_eq!(
        run(&["userAgent=kube-probe/*,src_ip=10.0.0.0/8"]),
        [
            pair("10.0.0.6", "curl/8.5.0"),
            pair("10.0.0.7", "Mozilla/5.0 (X11, Linux)"),
            pair("203.0.113.9", "kube-probe/1.30"),
        ]
    );
    // Alone, each condition drops more.
    assert_eq!(run(&["userAgent=kube-probe/*"]).len(), 2);
    assert_eq!(run(&["src_ip=10.0.0.0/8"]).len(), 1);
    // A literal comma is written \, ...
    assert_eq!(
        run(&[r"userAgent=Mozilla/5.0 (X11\, Linux),src_ip=10.0.0.7"]).len(),
        3
    );
    // ... and unescaped it is a usage error, not another exclusion.
    let out = kubeanon()
        .args(["scan", "--exclude", "userAgent=Mozilla/5.0 (X11, Linux)"])
        .write_stdin(input.clone())
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(stderr.contains(r"\,"), "{stderr}");
}

#[test]
fn exclude_with_an_unknown_column_is_a_usage_error() {
    for spec in ["sourceIPs{}=10.0.0.1", "nope=1", "userAgent"] {
        let out = kubeanon()
            .args(["scan", "--exclude", spec])
            .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
            .assert()
            .code(2);
        let out = out.get_output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(spec), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

// ---------------------------------------------------------------------------
// Exit codes and the summary

#[test]
fn fail_on_findings_exits_3_only_with_findings() {
    kubeanon()
        .args(["scan", "--fail-on-findings"])
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .code(3);
    kubeanon()
        .args(["scan", "--fail-on-findings"])
        .arg(fixture("liggitt_audit2rbac_demo_log.jsonl"))
        .assert()
        .code(0);
    // All findings excluded: none left, exit 0.
    kubeanon()
        .args([
            "scan",
            "--fail-on-findings",
            "--exclude",
            "src_ip=10.0.0.0/8",
        ])
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .code(0);
    // Without the flag, findings are a success.
    kubeanon()
        .arg("scan")
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .code(0);
}

#[test]
fn quiet_suppresses_the_summary() {
    let out = kubeanon()
        .args(["scan", "-q"])
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .success();
    let out = out.get_output();
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ndjson_rows(&out.stdout).len(), 3);

    let out = kubeanon()
        .args(["scan", "--quiet"])
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .success();
    assert!(out.get_output().stderr.is_empty());

    // Without -q: one summary line with the counters, bytes and seconds.
    let out = kubeanon()
        .arg("scan")
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        summary(stderr.as_bytes()),
        Summary {
            events: 9,
            malformed: 0,
            matched: 3,
            findings: 3,
            truncated: 0
        }
    );
    assert!(stderr.contains("MB"), "{stderr}");
    assert!(stderr.contains(" s"), "{stderr}");
}

#[test]
fn missing_input_file_exits_1_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-audit.log");
    let out = kubeanon()
        .arg("scan")
        .arg(fixture("90daysofdevops_day61_openshift_audit.jsonl"))
        .arg(&missing)
        .assert()
        .code(1);
    let out = out.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flags_are_usage_errors() {
    kubeanon()
        .args(["scan", "--format", "xml", "-"])
        .write_stdin("")
        .assert()
        .code(2);
    kubeanon()
        .args(["scan", "--no-such-flag"])
        .write_stdin("")
        .assert()
        .code(2);
    // --append takes a line format only.
    let dir = tempfile::tempdir().expect("tempdir");
    kubeanon()
        .args(["scan", "--format", "json", "--append"])
        .arg(dir.path().join("x.json"))
        .write_stdin("")
        .assert()
        .code(2);
}

/// `-o /dev/null` (as root, especially) must write into the device, not
/// rename a regular file over it; a symlink's target is replaced, not the
/// link.
#[test]
fn output_to_a_device_or_through_a_symlink_keeps_them() {
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/eks-audit-sample.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "-q", "-o", "/dev/null"])
        .arg(&sample)
        .output()
        .unwrap();
    assert!(out.status.success());
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );

    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.ndjson");
    let link = dir.path().join("link.ndjson");
    std::fs::write(&real, "old\n").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "-q", "-o"])
        .arg(&link)
        .arg(&sample)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("system:anonymous")
    );
}

// ---------------------------------------------------------------------------
// Operators' files

#[test]
fn a_byte_order_mark_at_the_start_is_skipped_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let text = lines_text(&all_fixture_lines());
    let mut with_bom = b"\xef\xbb\xbf".to_vec();
    with_bom.extend_from_slice(text.as_bytes());
    // Plain, gzip, and one large enough to be read in parallel.
    assert_sample_findings(&write_file(dir.path(), "bom.jsonl", &with_bom));
    assert_sample_findings(&write_file(dir.path(), "bom.jsonl.gz", &gzip(&with_bom)));
    let mut big = b"\xef\xbb\xbf".to_vec();
    let filler = format!(
        "{}\n",
        r#"{"kind":"Event","user":{"username":"system:node:x"}}"#
    );
    while big.len() < 40 << 20 {
        big.extend_from_slice(filler.as_bytes());
    }
    big.extend_from_slice(text.as_bytes());
    let path = write_file(dir.path(), "big.jsonl", &big);
    let (stdout, stderr) = scan_ok(&[path.as_os_str()]);
    assert_eq!(ndjson_rows(&stdout), sample_rows());
    assert_eq!(summary(&stderr).malformed, 0);
}

#[test]
fn a_reader_that_closes_a_fifo_fails_the_run_only_stdout_may_close() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The reader opens the FIFO and goes away at once.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || drop(std::fs::File::open(fifo).unwrap()))
    };
    // Rows far beyond a pipe's buffer (64 KiB): whenever the reader leaves,
    // before or during the write, the write meets a closed pipe.
    let input: String = (0..5000)
        .map(|i| {
            format!(
                "{{\"user\":{{\"username\":\"system:anonymous\",\"groups\":[\"system:unauthenticated\"]}},\"requestURI\":\"/probe/{i}\",\"sourceIPs\":[\"203.0.113.7\"]}}\n"
            )
        })
        .collect();
    let input = write_file(dir.path(), "many.jsonl", input.as_bytes());
    let out = kubeanon()
        .arg("scan")
        .arg(&input)
        .arg("-o")
        .arg(&fifo)
        .output()
        .unwrap();
    reader.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("out.fifo"));
}
