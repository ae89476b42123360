//! Hostile input: random and mutated bytes, huge lines, deep nesting,
//! invalid UTF-8, NUL bytes, and a 2 GB stream with no newline. Nothing
//! panics, memory stays bounded, and what cannot be read is counted.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kubeanon::audit::{Record, Shape};
use kubeanon::detect::{Detector, Origin, Prefilter, matches};
use kubeanon::source::file::read_input;
use proptest::prelude::*;

const ANON: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","requestURI":"/api?a=1\u0026b=2","verb":"get","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["198.51.100.1","10.0.0.1"],"userAgent":"curl/8","responseStatus":{"metadata":{},"code":403},"requestReceivedTimestamp":"2026-11-29T01:00:00.000001Z"}"#;

/// The full rule on bytes, without the fast path.
fn full_parse_matches(bytes: &[u8]) -> bool {
    match Record::parse(bytes) {
        Ok(r) => matches!(r.shape(), Shape::Event(e) if matches(&e)),
        Err(_) => false,
    }
}

/// Bytes that are close to real events: a valid one with random edits.
fn mutated_event() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 0..8);
    edits.prop_map(|edits| {
        let mut bytes = ANON.as_bytes().to_vec();
        for (at, kind, byte) in edits {
            let i = at.index(bytes.len().max(1));
            let special = [b'"', b'\\', b'{', b'[', b'}', b'\n', 0, 0xff][byte as usize % 8];
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 if i < bytes.len() => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i.min(bytes.len()), special),
                _ => bytes.truncate(i),
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut det = Detector::default();
        det.feed(&bytes, Origin::default());
        read_input(&bytes[..], &mut det).unwrap();
        let stats = det.finish().1;
        prop_assert!(stats.matched <= stats.events);
    }

    #[test]
    fn mutated_events_never_panic_and_the_fast_path_is_never_narrower(bytes in mutated_event()) {
        let mut det = Detector::default();
        det.feed(&bytes, Origin::default());
        if full_parse_matches(&bytes) {
            prop_assert!(Prefilter::new().could_match(&bytes));
            prop_assert_eq!(det.finish().1.matched, 1);
        }
        let mut lines = Detector::default();
        read_input(&bytes[..], &mut lines).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// The file source runs the prefilter over whole buffers of lines; the
    /// result must equal feeding each line on its own (full per-record path).
    #[test]
    fn buffer_prefilter_equals_per_record_feeding(records in prop::collection::vec(mutated_event(), 1..40)) {
        // A first line that keeps the input in line mode (a lone `{` would
        // start document mode, which is another test's business).
        let mut input = b"{}\n".to_vec();
        input.extend(records.join(&b"\n"[..]));
        let mut whole = Detector::default();
        read_input(&input[..], &mut whole).unwrap();
        let mut each = Detector::default();
        for line in input.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if !line.is_empty() {
                each.feed(line, Origin::default());
            }
        }
        let (a, sa) = whole.finish();
        let (b, sb) = each.finish();
        prop_assert_eq!(sa.matched, sb.matched);
        prop_assert_eq!(a.into_findings(), b.into_findings());
    }
}

/// Records that exercise the fast parser's edges: every field type, nulls,
/// duplicates, escapes in keys and values, numbers, nesting, wrappers.
fn structured_record() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "kind",
        "user",
        "sourceIPs",
        "userAgent",
        "verb",
        "stage",
        "requestURI",
        "objectRef",
        "responseStatus",
        "annotations",
        "message",
        "eventId",
        "events",
        "items",
        "other",
        "us\\u0065r",
        "",
    ]);
    let value = prop::sample::select(vec![
        "null",
        "true",
        "false",
        "0",
        "-0",
        "01",
        "1.",
        "1.5e3",
        "-",
        "2E+7",
        "\"\"",
        "\"a\\u0026b\"",
        "\"bad\\x\"",
        "\"\\ud800\"",
        "{}",
        "[]",
        "[1,2",
        "{\"username\":\"system:anonymous\",\"groups\":[\"system:unauthenticated\"]}",
        "[\"1.2.3.4\",null,\"\"]",
        "{\"a\":[{\"b\":[[]]}]}",
        "{\"authorization.k8s.io/decision\":\"allow\",\"authorization.k8s.io/reason\":\"\"}",
        "{\"authorization.k8s.io\\/decision\":\"forbid\",\"authorization.k8s.io/decision\":1}",
        "\"tab\there\"",
        "\"\u{e9}\"",
        "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
    ]);
    (prop::collection::vec((key, value), 0..8), any::<bool>()).prop_map(|(members, spaced)| {
        let sep = if spaced { " , " } else { "," };
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(sep)).into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// The fast record parser answers only where it agrees with serde_json:
    /// same fields when both accept, and never accepting what serde rejects.
    #[test]
    fn fast_record_parse_agrees_with_serde(bytes in prop_oneof![
        structured_record(),
        mutated_event(),
        prop::collection::vec(any::<u8>(), 0..256),
    ]) {
        if let Some(fast) = Record::parse_fast(&bytes) {
            let reference = Record::parse(&bytes);
            prop_assert!(reference.is_ok(), "fast accepted what serde rejects: {:?}", String::from_utf8_lossy(&bytes));
            prop_assert_eq!(fast, reference.unwrap());
        }
    }
}

#[test]
fn fast_record_parse_answers_for_ordinary_events() {
    // The point of the fast path: real events do not fall back.
    assert!(Record::parse_fast(ANON.as_bytes()).is_some());
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/eks-audit-sample.jsonl"
    ))
    .unwrap();
    let answered = sample
        .lines()
        .filter(|l| Record::parse_fast(l.as_bytes()).is_some())
        .count();
    let valid = sample
        .lines()
        .filter(|l| Record::parse(l.as_bytes()).is_ok())
        .count();
    assert_eq!(answered, valid);
}

fn scan(input: &[u8]) -> (kubeanon::detect::Stats, usize) {
    let mut det = Detector::default();
    read_input(input, &mut det).unwrap();
    let (agg, stats) = det.finish();
    (stats, agg.len())
}

#[test]
fn a_one_megabyte_event_is_read_and_matched() {
    let big = ANON.replacen(
        r#""verb":"get""#,
        &format!(
            r#""verb":"get","requestObject":{{"data":"{}"}}"#,
            "x".repeat(1 << 20)
        ),
        1,
    );
    assert!(big.len() > 1 << 20);
    let input = format!("{big}\n{ANON}\n");
    let (stats, rows) = scan(input.as_bytes());
    assert_eq!((stats.events, stats.matched, stats.malformed), (2, 2, 0));
    assert_eq!(rows, 2, "one row per source IP; both events share them");
}

#[test]
fn deep_nesting_is_malformed_not_a_stack_overflow() {
    for depth in [1_000, 100_000] {
        let line = format!("{}{}\n", r#"{"user":"#.repeat(depth), "1");
        let array = format!("[\n{}\n", "[".repeat(depth));
        assert_eq!(scan(line.as_bytes()).0.malformed, 1);
        assert_eq!(scan(array.as_bytes()).0.malformed, 1, "document mode too");
        let anon = format!(
            r#"{{"user":{{"username":"system:anonymous","groups":{}}}}}"#,
            "[".repeat(depth)
        );
        // Not JSON, but its readable part shows an anonymous user: a row
        // of rule truncated (what could be read, up to a depth limit).
        let (stats, rows) = scan(anon.as_bytes());
        assert_eq!((stats.malformed, stats.truncated, rows), (0, 1, 1));
    }
}

#[test]
fn invalid_utf8_and_nul_bytes_are_counted_not_fatal() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe\x00\x00garbage\n");
    input.extend_from_slice(b"{\"user\":{\"username\":\"system:anonymous\xff\"}}\n");
    input.extend_from_slice(b"\x00\x00\x00\n");
    input.extend_from_slice(ANON.as_bytes());
    input.push(b'\n');
    let (stats, _) = scan(&input);
    assert_eq!(stats.matched, 1);
    assert_eq!(stats.malformed, 3);
}

/// Peak resident memory of a running process, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_two_gigabyte_stream_without_a_newline_runs_in_bounded_memory() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "-", "--format", "ndjson"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut peak = 0;
    for i in 0..2048 {
        stdin.write_all(&chunk).unwrap();
        if i % 64 == 0 {
            peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        }
    }
    // Then one good line, which must still be found.
    stdin.write_all(format!("\n{ANON}\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("1 malformed") && summary.contains("1 matched"),
        "{summary}"
    );
    eprintln!("2 GiB line-free stream: peak RSS {} MiB", peak / 1024);
    assert!(peak > 0, "peak RSS was read");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

/// Large files are read by one worker per core over runs of whole lines:
/// the findings and counters must equal one sequential read, whatever sits
/// at the split points (a lone `{`, gzip magic, CRLF, blank lines).
#[test]
fn parallel_reading_of_a_large_file_equals_one_sequential_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let tricky: [&[u8]; 5] = [b"{\n", b"\x1f\x8b garbage\n", b"\r\n", b"[\n", b"\n"];
    let mut i = 0u64;
    let mut written = 0;
    while written < 40 << 20 {
        let line = if i.is_multiple_of(7) {
            ANON.replacen(
                "198.51.100.1",
                &format!("198.51.{}.{}", i % 200, i % 250),
                1,
            )
        } else {
            ANON.replacen("system:anonymous", "system:serviceaccount:kube-system:x", 1)
        };
        f.write_all(line.as_bytes()).unwrap();
        f.write_all(if i.is_multiple_of(3) { b"\r\n" } else { b"\n" })
            .unwrap();
        if i.is_multiple_of(5000) {
            f.write_all(tricky[(i / 5000) as usize % tricky.len()])
                .unwrap();
        }
        written += line.len() + 2;
        i += 1;
    }
    drop(f);
    for threads in [2, 3, 8] {
        let (parts, bytes) =
            kubeanon::source::file::read_file_parallel(&path, threads, Detector::default)
                .unwrap()
                .expect("a 40 MiB line file is split");
        assert_eq!(parts.len(), threads);
        let mut merged = Detector::default();
        for p in parts {
            merged.absorb(p);
        }
        let mut one = Detector::default();
        let one_bytes = read_input(std::fs::File::open(&path).unwrap(), &mut one).unwrap();
        assert_eq!(bytes, one_bytes);
        let ((a, sa), (b, sb)) = (merged.finish(), one.finish());
        assert_eq!(sa, sb, "{threads} threads");
        assert!(sa.matched > 1000);
        assert_eq!(a.into_findings(), b.into_findings());
    }
}
