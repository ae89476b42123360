//! Unit tests for the detection rule, fill, grouping and counting.
//!
//! Every expectation here is written by hand from the spec (issue 2, "The
//! detection"), or computed by an independent reference implementation over
//! `serde_json::Value` (`reference` below); none is produced by the code
//! under test.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::Value;

use super::*;

// ---------------------------------------------------------------------------
// Helpers

/// The `user` object of an event that matches the rule.
const ANON: &str = r#""user":{"username":"system:anonymous","groups":["system:unauthenticated"]}"#;

/// A matching event with extra top-level `fields` (JSON members, or "").
fn anon(fields: &str) -> String {
    if fields.is_empty() {
        format!("{{{ANON}}}")
    } else {
        format!("{{{ANON},{fields}}}")
    }
}

/// An event with the given `user` object and extra top-level fields.
fn with_user(user: &str, fields: &str) -> String {
    if fields.is_empty() {
        format!(r#"{{"user":{user}}}"#)
    } else {
        format!(r#"{{"user":{user},{fields}}}"#)
    }
}

fn run(records: &[&str]) -> (Findings, Stats) {
    run_with(records, &[])
}

fn run_with(records: &[&str], exclude: &[&str]) -> (Findings, Stats) {
    let exclusions = exclude
        .iter()
        .map(|spec| Exclusion::parse(spec).expect("valid test exclusion"))
        .collect();
    let mut det = Detector::new(exclusions).with_rules(Rules::ESCU);
    for r in records {
        det.feed(r.as_bytes(), Origin::default());
    }
    let (agg, stats) = det.finish();
    (agg.into_findings(), stats)
}

fn col(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// A row of the 13 by-fields: everything "0" except the matching user, then
/// the given (column, value) pairs.
fn row(set: &[(&str, &str)]) -> Vec<String> {
    let mut r = vec![FILL.to_string(); 13];
    r[col("user.groups{}")] = "system:unauthenticated".into();
    r[col("user")] = "system:anonymous".into();
    for (name, value) in set {
        r[col(name)] = value.to_string();
    }
    r
}

/// Findings as (13 values, count), in output order.
fn table<'a>(findings: impl IntoIterator<Item = Finding<'a>>) -> Vec<(Vec<String>, u64)> {
    findings
        .into_iter()
        .map(|f| (f.cols().iter().map(|c| c.to_string()).collect(), f.count))
        .collect()
}

/// One value of every finding, in order.
fn column(findings: &Findings, name: &str) -> Vec<String> {
    findings
        .iter()
        .map(|f| f.cols()[col(name)].to_string())
        .collect()
}

fn assert_no_match(record: &str) {
    let (findings, stats) = run(&[record]);
    assert!(findings.is_empty(), "{record} gave {findings:?}");
    assert_eq!(stats.matched, 0, "{record}");
    assert_eq!(stats.malformed, 0, "{record}");
    assert_eq!(stats.events, 1, "{record}");
}

/// The findings of `record`, which must be one row.
fn assert_single_match(record: &str) -> Findings {
    let (findings, stats) = run(&[record]);
    assert_eq!(stats.matched, 1, "{record}");
    assert_eq!(findings.len(), 1, "{record} gave {findings:?}");
    findings
}

// ---------------------------------------------------------------------------
// Match

#[test]
fn column_names_are_fixed() {
    assert_eq!(
        COLUMNS,
        [
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
        ]
    );
}

#[test]
fn anonymous_unauthenticated_event_matches() {
    let found = assert_single_match(&anon(""));
    let f = found.get(0).expect("one finding");
    assert_eq!(table([f]), vec![(row(&[]), 1)]);
}

#[test]
fn username_and_group_compare_ignoring_ascii_case() {
    let found = assert_single_match(&with_user(
        r#"{"username":"SYSTEM:Anonymous","groups":["System:UNAUTHENTICATED"]}"#,
        "",
    ));
    let f = found.get(0).expect("one finding");
    // Shown verbatim, not case-folded.
    assert_eq!(f.cols()[col("user")].as_ref(), "SYSTEM:Anonymous");
    assert_eq!(
        f.cols()[col("user.groups{}")].as_ref(),
        "System:UNAUTHENTICATED"
    );
}

#[test]
fn only_ascii_case_is_ignored() {
    // U+017F LATIN SMALL LETTER LONG S upper-cases to 'S' under Unicode
    // rules, and U+0130 lower-cases to 'i': neither is an ASCII case change.
    assert_no_match(&with_user(
        r#"{"username":"ſystem:anonymous","groups":["system:unauthenticated"]}"#,
        "",
    ));
    assert_no_match(&with_user(
        r#"{"username":"system:anonymous","groups":["system:unauthentİcated"]}"#,
        "",
    ));
    assert_no_match(&with_user(
        r#"{"username":"system:anonymou\u017f","groups":["system:unauthenticated"]}"#,
        "",
    ));
}

#[test]
fn values_are_compared_after_json_unescaping() {
    let found = assert_single_match(&with_user(
        r#"{"username":"system\u003aanonymous","groups":["system\u003Aunauthenticated"]}"#,
        "",
    ));
    let f = found.get(0).expect("one finding");
    assert_eq!(table([f]), vec![(row(&[]), 1)]);

    let found = assert_single_match(&with_user(
        r#"{"username":"\u0053YSTEM:\u0061NONYMOU\u0073","groups":["\u0073ystem:unauthenticate\u0044"]}"#,
        "",
    ));
    let f = found.get(0).expect("one finding");
    assert_eq!(f.cols()[col("user")].as_ref(), "SYSTEM:aNONYMOUs");
    assert_eq!(
        f.cols()[col("user.groups{}")].as_ref(),
        "system:unauthenticateD"
    );

    // Escaped keys are the same keys.
    assert_single_match(
        r#"{"us\u0065r":{"user\u006eame":"system:anonymous","groups":["system:unauthenticated"]}}"#,
    );
}

#[test]
fn groups_must_be_an_array_holding_the_string() {
    for groups in [
        r#""groups":"system:unauthenticated""#,
        r#""groups":null"#,
        r#""groups":[]"#,
        r#""groups":{"0":"system:unauthenticated"}"#,
        r#""groups":[["system:unauthenticated"]]"#,
        r#""groups":[{"name":"system:unauthenticated"}]"#,
        r#""groups":["system:authenticated"]"#,
        r#""groups":["system:masters","system:authenticated"]"#,
        r#""groups":["system:unauthenticated "]"#,
        r#""groups":[" system:unauthenticated"]"#,
        r#""groups":["system:unauthenticated\n"]"#,
        r#""groups":["system:unauthenticated,system:authenticated"]"#,
        r#""groups":["unauthenticated"]"#,
    ] {
        assert_no_match(&with_user(
            &format!(r#"{{"username":"system:anonymous",{groups}}}"#),
            "",
        ));
    }
    // No groups at all.
    assert_no_match(&with_user(r#"{"username":"system:anonymous"}"#, ""));
}

#[test]
fn username_must_be_exactly_the_anonymous_string() {
    for username in [
        r#""system:anonymous ""#,
        r#"" system:anonymous""#,
        r#""system:anonymous\t""#,
        r#""system:anonymou""#,
        r#""system:anonymouss""#,
        r#""anonymous""#,
        r#""system:anonymous:x""#,
        r#""system:unauthenticated""#,
        r#""""#,
        // Not a string.
        r#"["system:anonymous"]"#,
        r#"{"name":"system:anonymous"}"#,
        "null",
        "0",
        "true",
    ] {
        assert_no_match(&with_user(
            &format!(r#"{{"username":{username},"groups":["system:unauthenticated"]}}"#),
            "",
        ));
    }
    // No username, or a `user` that is not an object.
    assert_no_match(&with_user(r#"{"groups":["system:unauthenticated"]}"#, ""));
    assert_no_match(r#"{"user":"system:anonymous","sourceIPs":["1.2.3.4"]}"#);
    assert_no_match(r#"{"user":["system:anonymous","system:unauthenticated"]}"#);
    assert_no_match(r#"{"user":null}"#);
}

#[test]
fn other_users_do_not_match() {
    // The falco sample's first event: anonymous, but authenticated groups.
    assert_no_match(&with_user(
        r#"{"username":"system:anonymous","groups":["system:masters","system:authenticated"]}"#,
        r#""sourceIPs":["192.168.99.1"]"#,
    ));
    // An authenticated user impersonating the anonymous user: the rule
    // reads `user`, not `impersonatedUser`.
    assert_no_match(
        r#"{"user":{"username":"admin","groups":["system:masters"]},"impersonatedUser":{"username":"system:anonymous","groups":["system:unauthenticated"]}}"#,
    );
    // The words elsewhere in the event do not matter.
    assert_no_match(
        r#"{"user":{"username":"kube-probe","groups":["system:authenticated"]},"requestURI":"/system:anonymous","userAgent":"system:unauthenticated"}"#,
    );
}

#[test]
fn matching_group_among_others_matches_and_every_group_is_a_row() {
    let (findings, stats) = run(&[&with_user(
        r#"{"username":"system:anonymous","groups":["system:authenticated","system:unauthenticated"]}"#,
        "",
    )]);
    assert_eq!(stats.matched, 1);
    // `stats ... by user.groups{}` splits the multi-value field: each group
    // is a row, including the one that did not make the event match.
    assert_eq!(
        table(&findings),
        vec![
            (row(&[("user.groups{}", "system:authenticated")]), 1),
            (row(&[("user.groups{}", "system:unauthenticated")]), 1),
        ]
    );
}

// ---------------------------------------------------------------------------
// Fill and values

#[test]
fn absent_fields_are_filled_with_zero() {
    let found = assert_single_match(&anon(""));
    let f = found.get(0).expect("one finding");
    let owned = f.cols();
    let cols: Vec<&str> = owned.iter().map(|c| c.as_ref()).collect();
    assert_eq!(
        cols,
        [
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "system:unauthenticated",
            "0",
            "system:anonymous",
            "0",
            "0"
        ]
    );
    assert_eq!(f.count, 1);
}

#[test]
fn null_empty_and_structured_values_are_filled_with_zero() {
    for v in [
        "null",
        r#""""#,
        "[]",
        "{}",
        r#"{"a":"b"}"#,
        r#"["x"]"#,
        "[null]",
    ] {
        let event = format!(
            r#"{{"user":{{"username":"system:anonymous","groups":["system:unauthenticated"],"uid":{v}}},"objectRef":{{"name":{v},"namespace":{v},"resource":{v}}},"requestReceivedTimestamp":{v},"requestURI":{v},"responseStatus":{{"code":{v}}},"stage":{v},"userAgent":{v},"verb":{v}}}"#
        );
        let found = assert_single_match(&event);
        let f = found.get(0).expect("one finding");
        assert_eq!(table([f]), vec![(row(&[]), 1)], "value {v}");
    }
}

#[test]
fn nested_objects_of_the_wrong_type_fill_their_fields() {
    for v in [
        "null",
        r#""""#,
        "[]",
        r#""pods""#,
        "403",
        r#"["pods"]"#,
        "true",
    ] {
        let found = assert_single_match(&anon(&format!(r#""objectRef":{v},"responseStatus":{v}"#)));
        let f = found.get(0).expect("one finding");
        assert_eq!(table([f]), vec![(row(&[]), 1)], "value {v}");
    }
}

#[test]
fn values_are_shown_as_written() {
    let found = assert_single_match(
        r#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"],"uid":1001},"responseStatus":{"code":403,"status":"Failure"},"stage":true,"verb":false,"requestReceivedTimestamp":1.5e3,"objectRef":{"name":-7,"namespace":12345678901234567890123,"resource":"pods"},"userAgent":"curl\/8 \"x\" \u00e9\\","requestURI":"/api?a=1\u0026b=2"}"#,
    );
    let f = found.get(0).expect("one finding");
    assert_eq!(
        table([f]),
        vec![(
            row(&[
                ("objectRef.name", "-7"),
                ("objectRef.namespace", "12345678901234567890123"),
                ("objectRef.resource", "pods"),
                ("requestReceivedTimestamp", "1.5e3"),
                ("requestURI", "/api?a=1&b=2"),
                ("responseStatus.code", "403"),
                ("stage", "true"),
                ("user.uid", "1001"),
                ("userAgent", "curl/8 \"x\" é\\"),
                ("verb", "false"),
            ]),
            1
        )]
    );
}

#[test]
fn strings_keep_their_spaces_and_controls() {
    let found = assert_single_match(&anon(r#""userAgent":" a\tb\u001b[2J ","verb":" ""#));
    let f = found.get(0).expect("one finding");
    assert_eq!(f.cols()[col("userAgent")].as_ref(), " a\tb\u{1b}[2J ");
    assert_eq!(f.cols()[col("verb")].as_ref(), " ");
}

// ---------------------------------------------------------------------------
// Multi-valued fields

#[test]
fn source_ips_and_groups_give_the_cartesian_product() {
    let (findings, stats) = run(&[&with_user(
        r#"{"username":"system:anonymous","groups":["system:unauthenticated","custom"]}"#,
        r#""sourceIPs":["2.2.2.2","1.1.1.1"]"#,
    )]);
    assert_eq!(stats.matched, 1);
    assert_eq!(
        table(&findings),
        vec![
            (
                row(&[("src_ip", "1.1.1.1"), ("user.groups{}", "custom")]),
                1
            ),
            (row(&[("src_ip", "1.1.1.1")]), 1),
            (
                row(&[("src_ip", "2.2.2.2"), ("user.groups{}", "custom")]),
                1
            ),
            (row(&[("src_ip", "2.2.2.2")]), 1),
        ]
    );
}

#[test]
fn duplicate_values_are_counted() {
    let (findings, stats) = run(&[&anon(r#""sourceIPs":["1.2.3.4","1.2.3.4"]"#)]);
    assert_eq!(stats.matched, 1);
    assert_eq!(table(&findings), vec![(row(&[("src_ip", "1.2.3.4")]), 2)]);

    // Duplicates in both fields multiply.
    let (findings, _) = run(&[&with_user(
        r#"{"username":"system:anonymous","groups":["system:unauthenticated","system:unauthenticated"]}"#,
        r#""sourceIPs":["1.2.3.4","1.2.3.4"]"#,
    )]);
    assert_eq!(table(&findings), vec![(row(&[("src_ip", "1.2.3.4")]), 4)]);

    // Two identical events: count 2.
    let e = anon(r#""sourceIPs":["1.2.3.4"],"verb":"get""#);
    let (findings, stats) = run(&[&e, &e]);
    assert_eq!(stats.matched, 2);
    assert_eq!(
        table(&findings),
        vec![(row(&[("src_ip", "1.2.3.4"), ("verb", "get")]), 2)]
    );
}

// ---------------------------------------------------------------------------
// The cap on addresses per event (--max-addresses)

/// `n` distinct addresses, in order.
fn addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("198.18.{}.{}", i / 256, i % 256))
        .collect()
}

/// An anonymous `get /version` whose `sourceIPs` holds `ips`.
fn padded(ips: &[String]) -> String {
    let ips = serde_json::to_string(ips).expect("strings");
    anon(&format!(
        r#""requestURI":"/version","verb":"get","sourceIPs":{ips}"#
    ))
}

/// Runs `records` through a detector with this cap: (src_ip, count,
/// note) of every row, in order, and the counters.
fn run_capped(cap: AddressCap, records: &[&str]) -> (Vec<(String, u64, String)>, Stats) {
    let mut det = Detector::new(Vec::new())
        .with_rules(Rules::ESCU)
        .max_addresses(cap);
    for r in records {
        det.feed(r.as_bytes(), Origin::default());
    }
    let (agg, stats) = det.finish();
    let rows = agg
        .into_findings()
        .iter()
        .map(|f| {
            let ip = f.cols()[col("src_ip")].to_string();
            (ip, f.count, f.extras()[2].to_string())
        })
        .collect();
    (rows, stats)
}

/// The rows ESCU makes of these addresses (one per distinct address,
/// counted as often as it occurs), with this note, sorted as findings are.
fn escu_rows(ips: &[&String], note: &str) -> Vec<(String, u64, String)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for ip in ips {
        *counts.entry(ip.to_string()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(ip, n)| (ip, n, note.to_string()))
        .collect()
}

const CAPPED_64_OF_65: &str = "sourceIPs capped: 64 of 65 distinct addresses kept, the first ones and the last (the connection's own); --max-addresses 0 keeps all";

#[test]
fn events_at_or_under_the_cap_are_escu_s_rows() {
    for n in [1, 2, 63, 64] {
        let ips = addresses(n);
        let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips)]);
        assert_eq!(
            rows,
            escu_rows(&ips.iter().collect::<Vec<_>>(), FILL),
            "{n}"
        );
        assert_eq!(stats.capped, 0, "{n}");
    }
    // 64 distinct among 300 values: not capped, duplicates counted.
    let ips: Vec<String> = addresses(64).into_iter().cycle().take(300).collect();
    let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips)]);
    assert_eq!(rows, escu_rows(&ips.iter().collect::<Vec<_>>(), FILL));
    assert_eq!(stats.capped, 0);
}

#[test]
fn an_event_over_the_cap_keeps_its_first_63_and_its_last_address_and_says_so() {
    let ips = addresses(65);
    let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips)]);
    let kept: Vec<&String> = ips[..63].iter().chain([&ips[64]]).collect();
    assert_eq!(rows, escu_rows(&kept, CAPPED_64_OF_65));
    assert_eq!((stats.matched, stats.capped), (1, 1));

    // 16,000: the same 64, the note says how many there were.
    let ips = addresses(16_000);
    let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips)]);
    let kept: Vec<&String> = ips[..63].iter().chain([&ips[15_999]]).collect();
    let note = CAPPED_64_OF_65.replace("of 65", "of 16000");
    assert_eq!(rows, escu_rows(&kept, &note));
    assert_eq!(stats.capped, 1);
}

#[test]
fn a_capped_event_s_kept_addresses_count_their_duplicates() {
    // 65 distinct, each of the first 10 twice more, and the last (the
    // connection's) also first: the kept rows count every occurrence, as
    // ESCU does; the rows of dropped addresses are gone with theirs.
    let distinct = addresses(65);
    let mut ips = vec![distinct[64].clone()];
    ips.extend(distinct.iter().cloned());
    ips.extend(distinct[..10].iter().cloned());
    ips.extend(distinct[..10].iter().cloned());
    ips.push(distinct[64].clone());
    let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips)]);
    // The distinct addresses in order: 64 (also the last), 0, 1, ..., 63.
    // The first 64 of them are kept (64 and 0..=62): only 63 is dropped.
    let kept: Vec<&String> = ips.iter().filter(|ip| **ip != distinct[63]).collect();
    assert_eq!(rows, escu_rows(&kept, CAPPED_64_OF_65));
    assert_eq!(rows.len(), 64);
    assert_eq!(stats.capped, 1);
}

#[test]
fn a_last_address_among_the_first_63_leaves_room_for_the_64th() {
    let distinct = addresses(100);
    let mut ips = distinct.clone();
    ips.push(distinct[5].clone());
    let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips)]);
    let mut kept: Vec<&String> = distinct[..64].iter().collect();
    kept.push(&distinct[5]);
    let note = CAPPED_64_OF_65.replace("of 65", "of 100");
    assert_eq!(rows, escu_rows(&kept, &note));
    assert_eq!(stats.capped, 1);
}

#[test]
fn a_capped_event_s_rows_are_apart_from_an_uncapped_one_s() {
    // The same values from an event under the cap: a row of its own,
    // without the note; only the capped event is counted.
    let ips = addresses(65);
    let small = padded(&ips[..1]);
    let (rows, stats) = run_capped(AddressCap::default(), &[&padded(&ips), &small]);
    assert_eq!(rows.len(), 65);
    assert_eq!(rows[0], (ips[0].clone(), 1, FILL.to_string()));
    assert_eq!(rows[1], (ips[0].clone(), 1, CAPPED_64_OF_65.to_string()));
    assert_eq!((stats.matched, stats.capped), (2, 1));
}

#[test]
fn lifting_the_cap_gives_escu_s_rows_and_other_caps_are_kept() {
    let ips = addresses(1_000);
    let all: Vec<&String> = ips.iter().collect();
    let (rows, stats) = run_capped(AddressCap::none(), &[&padded(&ips)]);
    assert_eq!(rows, escu_rows(&all, FILL));
    assert_eq!(stats.capped, 0);

    let (rows, stats) = run_capped(AddressCap::new(3), &[&padded(&ips)]);
    let note = "sourceIPs capped: 3 of 1000 distinct addresses kept, the first ones and the last (the connection's own); --max-addresses 0 keeps all";
    assert_eq!(rows, escu_rows(&[&ips[0], &ips[1], &ips[999]], note));
    assert_eq!(stats.capped, 1);
}

#[test]
fn the_cap_holds_for_refused_authentications_and_in_fresh_detectors() {
    let ips = serde_json::to_string(&addresses(65)).expect("strings");
    let refused = format!(r#"{{"user":{{}},"sourceIPs":{ips},"responseStatus":{{"code":401}}}}"#);
    let det = Detector::new(Vec::new()).max_addresses(AddressCap::new(2));
    // A fresh detector (another thread's, in scan) has the same cap.
    let mut fresh = det.fresh();
    fresh.feed(refused.as_bytes(), Origin::default());
    assert_eq!(fresh.rows(), 2);
    let mut det = det;
    det.absorb(fresh);
    let (agg, stats) = det.finish();
    assert_eq!((stats.matched, stats.capped), (1, 1));
    let findings = agg.into_findings();
    assert!(findings.iter().all(|f| f.rule() == Rule::Unauthenticated
        && f.extras()[2].starts_with("sourceIPs capped: 2 of 65")));
}

#[test]
fn rows_counts_the_distinct_rows_held() {
    let mut det = Detector::new(Vec::new());
    assert_eq!(det.rows(), 0);
    let ips = addresses(3);
    det.feed(padded(&ips).as_bytes(), Origin::default());
    assert_eq!(det.rows(), 3);
    // The same event again: more counts, no more rows.
    det.feed(padded(&ips).as_bytes(), Origin::default());
    assert_eq!(det.rows(), 3);
    det.feed(padded(&addresses(16_000)).as_bytes(), Origin::default());
    assert_eq!(det.rows(), 3 + 64);
}

#[test]
fn unusable_elements_are_skipped() {
    let (findings, _) = run(&[&anon(
        r#""sourceIPs":[null,"",{},[],["9.9.9.9"],{"ip":"8.8.8.8"},"1.2.3.4"]"#,
    )]);
    assert_eq!(table(&findings), vec![(row(&[("src_ip", "1.2.3.4")]), 1)]);

    let (findings, _) = run(&[&with_user(
        r#"{"username":"system:anonymous","groups":[null,"",{},[],["x"],"system:unauthenticated"]}"#,
        "",
    )]);
    assert_eq!(table(&findings), vec![(row(&[]), 1)]);
}

#[test]
fn scalar_elements_are_shown_as_written() {
    let (findings, _) = run(&[&anon(r#""sourceIPs":[7,true]"#)]);
    assert_eq!(
        table(&findings),
        vec![
            (row(&[("src_ip", "7")]), 1),
            (row(&[("src_ip", "true")]), 1),
        ]
    );
}

#[test]
fn non_array_or_empty_multi_value_is_zero() {
    for ips in [
        r#""sourceIPs":"1.2.3.4""#,
        r#""sourceIPs":{"0":"1.2.3.4"}"#,
        r#""sourceIPs":7"#,
        r#""sourceIPs":null"#,
        r#""sourceIPs":[]"#,
        r#""sourceIPs":[null,"",{},[]]"#,
        r#""other":1"#,
    ] {
        let (findings, _) = run(&[&anon(ips)]);
        assert_eq!(table(&findings), vec![(row(&[]), 1)], "{ips}");
    }
}

// ---------------------------------------------------------------------------
// Grouping and order

#[test]
fn rows_are_sorted_by_the_columns_in_order() {
    let events = [
        anon(r#""objectRef":{"name":"b"},"requestURI":"/a","verb":"get""#),
        anon(r#""objectRef":{"name":"a"},"requestURI":"/z","verb":"get""#),
        anon(r#""objectRef":{"name":"a"},"requestURI":"/b","verb":"list""#),
        anon(r#""objectRef":{"name":"a"},"requestURI":"/b","verb":"get""#),
        anon(r#""requestURI":"/zzz""#),
        anon(r#""objectRef":{"name":"a"},"requestURI":"/z","verb":"get""#),
    ];
    let refs: Vec<&str> = events.iter().map(String::as_str).collect();
    let (findings, stats) = run(&refs);
    assert_eq!(stats.matched, 6);
    let got: Vec<(String, String, String, u64)> = findings
        .iter()
        .map(|f| {
            (
                f.cols()[col("objectRef.name")].to_string(),
                f.cols()[col("requestURI")].to_string(),
                f.cols()[col("verb")].to_string(),
                f.count,
            )
        })
        .collect();
    let want = [
        ("0", "/zzz", "0", 1),
        ("a", "/b", "get", 1),
        ("a", "/b", "list", 1),
        ("a", "/z", "get", 2),
        ("b", "/a", "get", 1),
    ];
    let want: Vec<(String, String, String, u64)> = want
        .iter()
        .map(|(a, b, c, n)| (a.to_string(), b.to_string(), c.to_string(), *n))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn earlier_columns_take_precedence_in_the_order() {
    // requestReceivedTimestamp (column 4) sorts before src_ip (column 7)
    // and userAgent (column 12), whatever the feed order.
    let events = [
        anon(r#""requestReceivedTimestamp":"2024-01-02","sourceIPs":["1.1.1.1"],"userAgent":"a""#),
        anon(r#""requestReceivedTimestamp":"2024-01-01","sourceIPs":["9.9.9.9"],"userAgent":"z""#),
        anon(r#""requestReceivedTimestamp":"2024-01-01","sourceIPs":["9.9.9.9"],"userAgent":"b""#),
        anon(r#""requestReceivedTimestamp":"2024-01-01","sourceIPs":["2.2.2.2"],"userAgent":"z""#),
    ];
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
        let refs: Vec<&str> = order.iter().map(|&i| events[i].as_str()).collect();
        let (findings, _) = run(&refs);
        assert_eq!(
            column(&findings, "userAgent"),
            ["z", "b", "z", "a"],
            "feed order {order:?}"
        );
        assert_eq!(
            column(&findings, "src_ip"),
            ["2.2.2.2", "9.9.9.9", "9.9.9.9", "1.1.1.1"]
        );
    }
}

#[test]
fn scopes_are_kept_apart() {
    let e = anon(r#""verb":"get""#);
    let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
    det.feed(
        e.as_bytes(),
        Origin {
            scope: 2,
            event_id: None,
            timestamp_ms: None,
        },
    );
    det.feed(
        e.as_bytes(),
        Origin {
            scope: 1,
            event_id: None,
            timestamp_ms: None,
        },
    );
    det.feed(
        e.as_bytes(),
        Origin {
            scope: 2,
            event_id: None,
            timestamp_ms: None,
        },
    );
    let findings = det.finish().0.into_findings();
    let got: Vec<(u32, u64)> = findings.iter().map(|f| (f.scope, f.count)).collect();
    assert_eq!(got, [(1, 1), (2, 2)]);
    assert_eq!(
        findings.get(0).unwrap().cols(),
        findings.get(1).unwrap().cols()
    );
}

// ---------------------------------------------------------------------------
// --exclude

#[test]
fn exclude_glob_drops_matching_rows() {
    let probe = anon(r#""userAgent":"kube-probe/1.29","sourceIPs":["10.0.0.5"]"#);
    let curl = anon(r#""userAgent":"curl/8.5.0","sourceIPs":["203.0.113.9"]"#);
    let (findings, stats) = run_with(&[&probe, &curl], &["userAgent=kube-probe/*"]);
    assert_eq!(column(&findings, "userAgent"), ["curl/8.5.0"]);
    assert_eq!(stats.matched, 2);
    assert_eq!(stats.excluded, 1);

    // ASCII case-insensitive; whole value.
    let (findings, _) = run_with(&[&probe, &curl], &["userAgent=KUBE-PROBE/*"]);
    assert_eq!(column(&findings, "userAgent"), ["curl/8.5.0"]);
    let (findings, stats) = run_with(&[&probe, &curl], &["userAgent=kube-probe"]);
    assert_eq!(findings.len(), 2);
    assert_eq!(stats.excluded, 0);

    // Several exclusions: a row matching any one is dropped.
    let (findings, stats) = run_with(
        &[&probe, &curl],
        &["userAgent=kube-probe/*", "src_ip=203.0.113.*"],
    );
    assert!(findings.is_empty());
    assert_eq!(stats.excluded, 2);
}

#[test]
fn exclude_cidr_drops_only_the_addresses_inside() {
    let e = anon(r#""sourceIPs":["10.1.2.3","8.8.8.8","fd00::1"]"#);
    let (findings, stats) = run_with(&[&e], &["src_ip=10.0.0.0/8"]);
    assert_eq!(column(&findings, "src_ip"), ["8.8.8.8", "fd00::1"]);
    assert_eq!(stats.excluded, 1);
    let (findings, _) = run_with(&[&e], &["src_ip=10.0.0.0/8", "src_ip=fc00::/7"]);
    assert_eq!(column(&findings, "src_ip"), ["8.8.8.8"]);
    // A filled "0" is not an address.
    let (findings, _) = run_with(&[&anon("")], &["src_ip=0.0.0.0/0"]);
    assert_eq!(column(&findings, "src_ip"), ["0"]);
}

#[test]
fn exclude_applies_to_the_shown_values() {
    // Filled values are "0", groups are split, values are unescaped.
    let e = with_user(
        r#"{"username":"system:anonymous","groups":["system:unauthenticated","extra"]}"#,
        r#""requestURI":"/healthz?x=1\u0026y=2""#,
    );
    let (findings, _) = run_with(&[&e], &["user.groups{}=extra"]);
    assert_eq!(
        column(&findings, "user.groups{}"),
        ["system:unauthenticated"]
    );
    let (findings, _) = run_with(&[&e], &["requestURI=/healthz?x=1&y=*"]);
    assert!(findings.is_empty());
    let (findings, _) = run_with(
        &[&e, &anon(r#""objectRef":{"name":"x"}"#)],
        &["objectRef.name=0"],
    );
    assert_eq!(column(&findings, "objectRef.name"), ["x"]);
}

// ---------------------------------------------------------------------------
// Malformed input

#[test]
fn malformed_records_are_counted_and_never_fatal() {
    let good = anon(r#""verb":"get""#);
    let bad: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"[1,2]".to_vec(),
        b"42".to_vec(),
        b"\"system:anonymous\"".to_vec(),
        // An array of events is not an object.
        format!("[{good}]").into_bytes(),
        // CloudWatch truncates events over 256 KB like this.
        br#"{"kind":"Event","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"requestURI":"/aaaa[Truncated...]"#.to_vec(),
        br#"{"kind":"Event","verb":"get","requestURI":"/x[Truncated...]"#.to_vec(),
        // Cut lines, two objects on one line.
        br#"{"kind":"Event","user":{"username":"system:anonymous""#.to_vec(),
        format!("{good}{good}").into_bytes(),
        // Invalid UTF-8 and NUL bytes.
        b"\xff\xfe\x00\x00 system:anonymous \x00".to_vec(),
        b"\x00\x00\x00\x00".to_vec(),
        [
            br#"{"user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"userAgent":""#.as_slice(),
            b"\xff\xc0".as_slice(),
            br#""}"#.as_slice(),
        ]
        .concat(),
    ];
    let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
    det.feed(good.as_bytes(), Origin::default());
    for b in &bad {
        assert_eq!(det.feed(b, Origin::default()), Fed::Nothing, "{b:?}");
        det.feed(good.as_bytes(), Origin::default());
    }
    let (agg, stats) = det.finish();
    assert_eq!(stats.malformed, bad.len() as u64);
    assert_eq!(stats.matched, bad.len() as u64 + 1);
    assert_eq!(stats.events, bad.len() as u64 + 1);
    assert_eq!(
        table(&agg.into_findings()),
        vec![(row(&[("verb", "get")]), bad.len() as u64 + 1)]
    );
}

#[test]
fn truncated_cloudwatch_message_is_malformed() {
    let inner = r#"{"kind":"Event","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"requestURI":"/x[Truncated...]"#;
    let cw = serde_json::json!({"message": inner, "eventId": "1", "logStreamName": "kube-apiserver-audit-1"})
        .to_string();
    let (findings, stats) = run(&[&cw]);
    assert!(findings.is_empty());
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.matched, 0);
}

#[test]
fn deep_nesting_does_not_panic() {
    // Wrappers nested far deeper than any real export: judged, not fatal.
    let mut rec = anon("");
    for i in 0..10 {
        rec = if i % 2 == 0 {
            serde_json::json!({ "message": rec, "eventId": i.to_string() }).to_string()
        } else {
            format!(r#"{{"events":[{rec}]}}"#)
        };
    }
    let (_, stats) = run(&[&rec]);
    assert_eq!(stats.events + stats.malformed, 1, "{stats:?}");
    // A deeply nested value in a field the rule does not read: still an
    // ordinary, valid, matching event.
    let deep = format!(
        "{}{}{}",
        anon(r#""requestObject":"#).trim_end_matches('}'),
        "[".repeat(100_000),
        "]".repeat(100_000) + "}"
    );
    let (findings, stats) = run(&[&deep]);
    assert_eq!(stats.malformed, 0);
    assert_eq!(table(&findings), vec![(row(&[]), 1)]);
}

// ---------------------------------------------------------------------------
// Wrappers the core unpacks

/// A CloudWatch log event as `aws logs filter-log-events` prints it.
fn cloudwatch(event: &str, id: &str) -> String {
    serde_json::json!({
        "logStreamName": "kube-apiserver-audit-0123456789abcdef",
        "timestamp": 1_714_564_800_000u64,
        "message": event,
        "ingestionTime": 1_714_564_801_000u64,
        "eventId": id,
    })
    .to_string()
}

#[test]
fn cloudwatch_events_are_unwrapped_and_their_ids_kept() {
    let e = anon(r#""requestURI":"/version\u0026x""#);
    let (findings, stats) = run(&[&cloudwatch(&e, "111"), &cloudwatch(&e, "222")]);
    assert_eq!(stats.matched, 2);
    assert_eq!(
        table(&findings),
        vec![(row(&[("requestURI", "/version&x")]), 2)]
    );
    assert_eq!(
        findings.get(0).unwrap().ids,
        event_hash("111").wrapping_add(event_hash("222"))
    );
    // Plain events carry no id.
    let (findings, _) = run(&[&e]);
    assert_eq!(findings.get(0).unwrap().ids, 0);
}

#[test]
fn lists_of_events_are_unpacked() {
    let a = anon(r#""verb":"get""#);
    let other = r#"{"user":{"username":"admin","groups":["system:masters"]},"verb":"get"}"#;
    let doc = format!(
        r#"{{"events":[{},{},{{"message":"not json (anonymous)","eventId":"3"}}],"searchedLogStreams":[]}}"#,
        cloudwatch(&a, "1"),
        cloudwatch(other, "2")
    );
    let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
    assert_eq!(det.feed(doc.as_bytes(), Origin::default()), Fed::Matched);
    let (agg, stats) = det.finish();
    assert_eq!(stats.matched, 1);
    assert_eq!(stats.malformed, 1);
    assert_eq!(
        table(&agg.into_findings()),
        vec![(row(&[("verb", "get")]), 1)]
    );

    let list = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{a},{other},{a}]}}"#
    );
    let (findings, stats) = run(&[&list]);
    assert_eq!(stats.matched, 2);
    assert_eq!(stats.events, 3);
    assert_eq!(table(&findings), vec![(row(&[("verb", "get")]), 2)]);

    // `items` without kind EventList is an ordinary object, not a list.
    let (findings, stats) = run(&[&format!(r#"{{"items":[{a}]}}"#)]);
    assert!(findings.is_empty());
    assert_eq!(stats.matched, 0);
}

// ---------------------------------------------------------------------------
// Aggregator::merge

#[test]
fn merged_aggregates_equal_one_pass() {
    let e1 = anon(r#""verb":"get","sourceIPs":["1.1.1.1","2.2.2.2"]"#);
    let e2 = anon(r#""verb":"list""#);
    let e3 = cloudwatch(&anon(r#""verb":"get","sourceIPs":["1.1.1.1"]"#), "7");
    let feed = |records: &[&str]| {
        let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
        for r in records {
            det.feed(r.as_bytes(), Origin::default());
        }
        det.finish()
    };
    let (mut a, mut sa) = feed(&[&e1, &e2, "junk"]);
    let (b, sb) = feed(&[&e1, &e3]);
    let (whole, sw) = feed(&[&e1, &e2, "junk", &e1, &e3]);
    a.merge(b);
    sa.merge(&sb);
    assert_eq!(sa, sw);
    assert_eq!(a.len(), 3);
    let merged = a.into_findings();
    assert_eq!(merged, whole.into_findings());
    assert_eq!(
        table(&merged),
        vec![
            // src_ip "0" sorts first: src_ip comes before verb.
            (row(&[("verb", "list")]), 1),
            (row(&[("src_ip", "1.1.1.1"), ("verb", "get")]), 3),
            (row(&[("src_ip", "2.2.2.2"), ("verb", "get")]), 2),
        ]
    );
    assert_eq!(merged.get(1).unwrap().ids, event_hash("7"));

    // Merging an empty aggregate changes nothing, either way round.
    let (x, _) = feed(&[&e2]);
    let mut empty = Aggregator::default();
    assert!(empty.is_empty());
    empty.merge(x.clone());
    let mut y = x.clone();
    y.merge(Aggregator::default());
    assert_eq!(empty.into_findings(), x.clone().into_findings());
    assert_eq!(y.into_findings(), x.into_findings());
}

// ---------------------------------------------------------------------------
// Property: chunked feeding + merge == one pass

fn line_strategy() -> impl Strategy<Value = String> {
    let username = prop::sample::select(vec![
        r#""system:anonymous""#,
        r#""SYSTEM:Anonymous""#,
        r#""system\u003aanonymous""#,
        r#""system:anonymous ""#,
        r#""admin""#,
        r#"["system:anonymous"]"#,
    ]);
    let groups = prop::sample::select(vec![
        r#","groups":["system:unauthenticated"]"#,
        r#","groups":["system:unauthenticated","system:unauthenticated"]"#,
        r#","groups":["system:authenticated","System:Unauthenticated"]"#,
        r#","groups":[null,"system:unauthenticated",""]"#,
        r#","groups":"system:unauthenticated""#,
        r#","groups":[]"#,
        "",
    ]);
    let ips = prop::sample::select(vec![
        r#","sourceIPs":["1.1.1.1"]"#,
        r#","sourceIPs":["1.1.1.1","1.1.1.1"]"#,
        r#","sourceIPs":["1.1.1.1","2.2.2.2",null]"#,
        r#","sourceIPs":["10.0.0.1",{}]"#,
        r#","sourceIPs":"1.1.1.1""#,
        r#","sourceIPs":[]"#,
        "",
    ]);
    let verb = prop::sample::select(vec![r#","verb":"get""#, r#","verb":"list""#, ""]);
    let agent = prop::sample::select(vec![
        r#","userAgent":"kube-probe/1.29""#,
        r#","userAgent":"curl/8""#,
        "",
    ]);
    let code = prop::sample::select(vec![
        r#","responseStatus":{"code":403}"#,
        r#","responseStatus":{"code":200}"#,
        "",
    ]);
    // Events of one row that disagree give it a set of annotation pairs.
    let annotations = prop::sample::select(vec![
        r#","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"r\" to Group \"g\""}"#,
        r#","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}"#,
        "",
    ]);
    let event = (username, groups, ips, verb, agent, code, annotations).prop_map(
        |(u, g, i, v, a, c, n)| {
            format!(r#"{{"kind":"Event","user":{{"username":{u}{g}}}{i}{v}{a}{c}{n}}}"#)
        },
    );
    prop_oneof![
        6 => event.clone(),
        2 => (event.clone(), 0u32..4).prop_map(|(e, id)| cloudwatch(&e, &id.to_string())),
        1 => prop::collection::vec(event, 0..4)
            .prop_map(|es| format!(r#"{{"events":[{}]}}"#, es.join(","))),
        1 => prop::sample::select(vec![
            "garbage".to_string(),
            r#"{"user":{"username":"system:anonymous"[Truncated...]"#.to_string(),
            "[]".to_string(),
        ]),
    ]
}

fn chunk_detector() -> Detector {
    let exclusions = vec![Exclusion::parse("userAgent=kube-probe/*").expect("valid")];
    Detector::new(exclusions).with_rules(Rules::ESCU)
}

fn detect_chunk(lines: &[String]) -> (Aggregator, Stats) {
    let mut det = chunk_detector();
    for line in lines {
        det.feed(line.as_bytes(), Origin::default());
    }
    det.finish()
}

proptest! {
    #[test]
    fn chunked_and_merged_equals_one_pass(
        lines in prop::collection::vec(line_strategy(), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let (whole, whole_stats) = detect_chunk(&lines);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(lines.len() + 1)).collect();
        cuts.push(0);
        cuts.push(lines.len());
        cuts.sort_unstable();
        let mut merged = Aggregator::default();
        let mut merged_stats = Stats::default();
        for w in cuts.windows(2) {
            let (agg, stats) = detect_chunk(&lines[w[0]..w[1]]);
            merged.merge(agg);
            merged_stats.merge(&stats);
        }
        prop_assert_eq!(merged_stats, whole_stats);
        prop_assert_eq!(merged.into_findings(), whole.into_findings());
    }

    /// Parts sorted on their own or not (a reader thread sorts its part),
    /// absorbed one after another, then more lines fed to the detector
    /// that absorbed them (the next input, read on this thread): the same
    /// findings and counts as one pass.
    #[test]
    fn sorted_parts_absorbed_then_fed_equal_one_pass(
        lines in prop::collection::vec(line_strategy(), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        sorted in prop::collection::vec(any::<bool>(), 5),
        after in prop::collection::vec(line_strategy(), 0..10),
    ) {
        let all: Vec<String> = lines.iter().chain(&after).cloned().collect();
        let (whole, whole_stats) = detect_chunk(&all);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(lines.len() + 1)).collect();
        cuts.push(0);
        cuts.push(lines.len());
        cuts.sort_unstable();
        let mut det = chunk_detector();
        for (w, sort) in cuts.windows(2).zip(&sorted) {
            let mut part = chunk_detector();
            for line in &lines[w[0]..w[1]] {
                part.feed(line.as_bytes(), Origin::default());
            }
            if *sort {
                part.sort();
            }
            det.absorb(part);
        }
        for line in &after {
            det.feed(line.as_bytes(), Origin::default());
        }
        let (agg, stats) = det.finish();
        prop_assert_eq!(stats, whole_stats);
        prop_assert_eq!(agg.into_findings(), whole.into_findings());
    }
}

/// Lines the prefilter rejects, of every shape it counts by their framing:
/// broken JSON inside braces, and wrappers (a one-line document is one
/// event), whose counts would differ if they were parsed.
fn rejected_line_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{not json}".to_string(),
        r#"{"kind":"Event","user":{"username":"bob"}}"#.to_string(),
        r#"{"events":[{"kind":"Event"},{"kind":"Event"}]}"#.to_string(),
        r#"{"kind":"EventList","items":[{"verb":"get"},{"verb":"list"},"x"]}"#.to_string(),
        r#"{"message":"{\"kind\":\"Event\"}","eventId":"7"}"#.to_string(),
        r#"{"message":"{cut"}"#.to_string(),
        "plain text".to_string(),
        "[1,2]".to_string(),
    ])
}

proptest! {
    #[test]
    fn records_read_unjudged_count_as_judged_ones(
        lines in prop::collection::vec(
            prop_oneof![2 => line_strategy(), 1 => rejected_line_strategy()],
            0..40,
        ),
    ) {
        let mut judged = Detector::new(Vec::new()).with_rules(Rules::ESCU);
        let mut unjudged = Detector::new(Vec::new()).with_rules(Rules::ESCU);
        for line in &lines {
            judged.feed(line.as_bytes(), Origin::default());
            unjudged.feed_prejudged(line.as_bytes(), Origin::default(), Verdict::Unjudged);
        }
        let (judged, judged_stats) = judged.finish();
        let (unjudged, unjudged_stats) = unjudged.finish();
        prop_assert_eq!(unjudged_stats, judged_stats);
        prop_assert_eq!(unjudged.into_findings(), judged.into_findings());
    }
}

// ---------------------------------------------------------------------------
// Property: the fast path (prefilter) agrees with a full parse

/// splitmix64: a tiny deterministic generator, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `p` percent.
    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A `\uXXXX` escape with each hex digit randomly upper or lower case.
fn escape_unit(rng: &mut Rng, unit: u16, out: &mut String) {
    out.push_str("\\u");
    for c in format!("{unit:04x}").chars() {
        out.push(if rng.pct(50) {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
}

/// Encodes `s` as a JSON string literal, writing each character as a
/// `\uXXXX` escape with probability `p` percent (surrogate pairs beyond the
/// BMP). Quotes, backslashes and controls are always escaped, one of the
/// valid ways at random.
fn json_string(rng: &mut Rng, s: &str, p: u64) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let must = c == '"' || c == '\\' || c < ' ';
        if rng.pct(p) || (must && rng.pct(30)) || (c < ' ' && c != '\n' && c != '\t') {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                escape_unit(rng, *unit, &mut out);
            }
        } else if c == '"' {
            out.push_str("\\\"");
        } else if c == '\\' {
            out.push_str("\\\\");
        } else if c == '\n' {
            out.push_str("\\n");
        } else if c == '\t' {
            out.push_str("\\t");
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Flips the ASCII case of each letter with probability `p` percent.
fn vary_case(rng: &mut Rng, s: &str, p: u64) -> String {
    s.chars()
        .map(|c| {
            if rng.pct(p) {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// A random string literal built from `base`: case-varied and escaped.
fn fuzzed(rng: &mut Rng, base: &str) -> String {
    let case = [0, 0, 20, 50, 100][rng.below(5)];
    let esc = [0, 0, 10, 30, 100][rng.below(5)];
    let text = vary_case(rng, base, case);
    json_string(rng, &text, esc)
}

/// With probability `p` percent, puts lone surrogate escapes (a high one
/// not followed by a low one, a low one alone) at the start or the end of
/// the string literal `literal`.
fn with_lone_surrogate(rng: &mut Rng, literal: String, p: u64) -> String {
    if !rng.pct(p) {
        return literal;
    }
    let lone = rng.pick(&[
        r"\ud800",
        r"\uDBFF",
        r"\udc00",
        r"\uDFFF",
        r"\ud83d",
        r"\ud800\ud800\udc00",
        r"\udc00\ud800",
        r"\ud800\u0041",
        r"\uD800\n",
    ]);
    let inner = &literal[1..literal.len() - 1];
    if rng.pct(50) {
        format!("\"{lone}{inner}\"")
    } else {
        format!("\"{inner}{lone}\"")
    }
}

/// One audit event as JSON text, fields in random order.
fn gen_event(rng: &mut Rng) -> String {
    let username = match rng.below(12) {
        0..=5 => fuzzed(rng, "system:anonymous"),
        6 => {
            let near_miss = rng.pick(&[
                "system:anonymou",
                "system:anonymous ",
                "anonymous",
                "system:anonymous:x",
                "system:anonymouſ",
                "system:unauthenticated",
            ]);
            fuzzed(rng, near_miss)
        }
        7 => fuzzed(rng, "system:serviceaccount:kube-system:anonymous-probe"),
        8 => r#"["system:anonymous"]"#.to_string(),
        9 => "null".to_string(),
        _ => {
            let other = rng.pick(&["kubernetes-admin", "system:node:ip-10-0-0-1"]);
            fuzzed(rng, other)
        }
    };
    let group_pool = [
        "system:unauthenticated",
        "system:unauthenticated",
        "system:authenticated",
        "system:masters",
        "system:unauthenticated ",
    ];
    let groups = match rng.below(8) {
        0 => None,
        1 => Some(fuzzed(rng, "system:unauthenticated")), // a plain string
        2 => Some("[]".to_string()),
        _ => {
            let n = 1 + rng.below(3);
            let items: Vec<String> = (0..n)
                .map(|_| match rng.below(8) {
                    0 => "null".to_string(),
                    1 => "{}".to_string(),
                    2 => r#""""#.to_string(),
                    _ => {
                        let g = rng.pick(&group_pool);
                        let g = fuzzed(rng, g);
                        with_lone_surrogate(rng, g, 5)
                    }
                })
                .collect();
            Some(format!("[{}]", items.join(",")))
        }
    };
    let mut user = vec![format!(r#""username":{username}"#)];
    if let Some(g) = groups {
        user.push(format!(r#""groups":{g}"#));
    }
    if rng.pct(20) {
        let uid = fuzzed(rng, "aws-iam-authenticator:1");
        user.push(format!(r#""uid":{}"#, with_lone_surrogate(rng, uid, 10)));
    }
    if rng.pct(10) {
        let last = user.len() - 1;
        user.swap(0, last);
    }
    let ip_pool = ["10.0.0.1", "10.0.0.1", "203.0.113.7", "::1", ""];
    let ips = match rng.below(6) {
        0 => None,
        1 => Some(format!(r#""{}""#, rng.pick(&ip_pool))),
        _ => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| match rng.below(8) {
                    0 => "null".to_string(),
                    1 => "[]".to_string(),
                    _ => {
                        let ip = rng.pick(&ip_pool);
                        fuzzed(rng, ip)
                    }
                })
                .collect();
            Some(format!("[{}]", items.join(",")))
        }
    };
    let mut fields = vec![
        r#""kind":"Event""#.to_string(),
        r#""apiVersion":"audit.k8s.io/v1""#.to_string(),
        format!(r#""user":{{{}}}"#, user.join(",")),
    ];
    if let Some(ips) = ips {
        fields.push(format!(r#""sourceIPs":{ips}"#));
    }
    if rng.pct(80) {
        let verb = rng.pick(&["get", "list", "head", "watch"]);
        fields.push(format!(r#""verb":{}"#, fuzzed(rng, verb)));
    }
    if rng.pct(80) {
        let uri = rng.pick(&[
            "/version",
            "/healthz?timeout=1s&x=<y>",
            "/api/v1/namespaces/anonymous/pods",
            "/vendor/phpunit/src/Util/PHP/eval-stdin.php",
            "/",
        ]);
        let uri = fuzzed(rng, uri);
        fields.push(format!(
            r#""requestURI":{}"#,
            with_lone_surrogate(rng, uri, 5)
        ));
    }
    if rng.pct(70) {
        let agent = rng.pick(&[
            "curl/8.5.0",
            "kube-probe/1.29",
            "Go-http-client/1.1",
            "a\"b\\c\u{1b}é😀",
        ]);
        let agent = fuzzed(rng, agent);
        fields.push(format!(
            r#""userAgent":{}"#,
            with_lone_surrogate(rng, agent, 15)
        ));
    }
    if rng.pct(70) {
        let code = rng.pick(&["403", "200", "401", "null", r#""x""#, "{}"]);
        fields.push(format!(
            r#""responseStatus":{{"metadata":{{}},"code":{code}}}"#
        ));
    }
    if rng.pct(60) {
        let stage = rng.pick(&["ResponseComplete", "RequestReceived"]);
        fields.push(format!(r#""stage":{}"#, fuzzed(rng, stage)));
    }
    if rng.pct(40) {
        let resource = fuzzed(rng, "pods");
        let name = rng.pick(&[r#""x""#, "null", r#""""#, "5"]);
        fields.push(format!(
            r#""objectRef":{{"resource":{resource},"namespace":"default","name":{name}}}"#
        ));
    }
    if rng.pct(60) {
        let ts = rng.pick(&["2024-05-01T12:00:00.000000Z", "2024-05-01T12:00:01.000000Z"]);
        fields.push(format!(r#""requestReceivedTimestamp":"{ts}""#));
    }
    if rng.pct(10) {
        // Another principal, not read by the rule.
        fields.push(
            r#""impersonatedUser":{"username":"system:anonymous","groups":["system:unauthenticated"]}"#
                .to_string(),
        );
    }
    // Shuffle (Fisher-Yates).
    for i in (1..fields.len()).rev() {
        let j = rng.below(i + 1);
        fields.swap(i, j);
    }
    format!("{{{}}}", fields.join(","))
}

/// One input record: an event, maybe wrapped as a CloudWatch event (its
/// text escaped once more, at random), maybe in a filter-log-events
/// document or an EventList.
fn gen_record(rng: &mut Rng) -> String {
    let wrap = |rng: &mut Rng, event: String| -> String {
        let esc = [0, 0, 5, 30][rng.below(4)];
        let message = json_string(rng, &event, esc);
        format!(
            r#"{{"logStreamName":"kube-apiserver-audit-1","timestamp":1714564800000,"message":{message},"ingestionTime":1714564801000,"eventId":"{}"}}"#,
            rng.next() % 1000
        )
    };
    match rng.below(10) {
        0..=4 => gen_event(rng),
        5..=7 => {
            let e = gen_event(rng);
            wrap(rng, e)
        }
        8 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let e = gen_event(rng);
                    wrap(rng, e)
                })
                .collect();
            format!(
                r#"{{"events":[{}],"searchedLogStreams":[]}}"#,
                items.join(",")
            )
        }
        _ => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| gen_event(rng)).collect();
            format!(
                r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{}]}}"#,
                items.join(",")
            )
        }
    }
}

/// The reference: the spec, over `serde_json::Value`, sharing no code with
/// the crate. Returns the matched events and the rows.
#[derive(Default)]
struct Reference {
    matched: u64,
    rows: BTreeMap<Vec<String>, u64>,
}

/// Parses JSON text as the spec reads it. serde_json's `Value` refuses a
/// lone surrogate escape, which the spec decodes to U+FFFD: so each one in
/// the text's strings is first rewritten as `\ufffd`.
fn ref_parse(text: &str) -> serde_json::Result<Value> {
    let b = text.as_bytes();
    // The code unit of a `\uXXXX` escape at `at`.
    let unit = |at: usize| -> Option<u32> {
        let hex = text.get(at..at + 6)?.strip_prefix("\\u")?;
        u32::from_str_radix(hex, 16).ok()
    };
    let high = |u: Option<u32>| u.is_some_and(|u| (0xd800..0xdc00).contains(&u));
    let low = |u: Option<u32>| u.is_some_and(|u| (0xdc00..0xe000).contains(&u));
    let mut out = Vec::with_capacity(b.len());
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        let n = match b[i] {
            b'"' => {
                in_string = !in_string;
                1
            }
            b'\\' if in_string && high(unit(i)) && low(unit(i + 6)) => 12,
            b'\\' if in_string && (high(unit(i)) || low(unit(i))) => {
                out.extend_from_slice(br"\ufffd");
                i += 6;
                continue;
            }
            b'\\' if in_string => 2,
            _ => 1,
        };
        out.extend_from_slice(&b[i..(i + n).min(b.len())]);
        i += n;
    }
    serde_json::from_slice(&out)
}

fn ref_scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn ref_multi(v: Option<&Value>) -> Vec<String> {
    let values: Vec<String> = match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| ref_scalar(Some(i))).collect(),
        _ => Vec::new(),
    };
    if values.is_empty() {
        vec!["0".to_string()]
    } else {
        values
    }
}

fn ref_matches(event: &Value) -> bool {
    let is = |v: &Value, want: &str| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(want));
    let user_ok = event
        .pointer("/user/username")
        .is_some_and(|u| is(u, "system:anonymous"));
    let group_ok = event
        .pointer("/user/groups")
        .and_then(Value::as_array)
        .is_some_and(|gs| gs.iter().any(|g| is(g, "system:unauthenticated")));
    user_ok && group_ok
}

/// The records a filter-log-events document or an EventList holds.
fn ref_list(v: &Value) -> Option<&Vec<Value>> {
    if let Some(events) = v.get("events") {
        return events.as_array();
    }
    if v.get("kind").and_then(Value::as_str) == Some("EventList") {
        return v.get("items").and_then(Value::as_array);
    }
    None
}

/// Whether any event in this record (unwrapping as needed) matches.
fn ref_record_matches(v: &Value) -> bool {
    if let Some(m) = v.get("message").and_then(Value::as_str) {
        return ref_parse(m).is_ok_and(|inner| ref_record_matches(&inner));
    }
    if let Some(items) = ref_list(v) {
        return items.iter().any(ref_record_matches);
    }
    ref_matches(v)
}

impl Reference {
    fn record(&mut self, v: &Value) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            if let Ok(inner) = ref_parse(m) {
                self.record(&inner);
            }
            return;
        }
        let list = v.get("events").or_else(|| {
            (v.get("kind") == Some(&Value::from("EventList"))).then(|| v.get("items"))?
        });
        if let Some(Value::Array(items)) = list {
            items.iter().for_each(|i| self.record(i));
            return;
        }
        if !ref_matches(v) {
            return;
        }
        self.matched += 1;
        let s = |p: &str| ref_scalar(v.pointer(p)).unwrap_or_else(|| "0".to_string());
        for ip in ref_multi(v.get("sourceIPs")) {
            for group in ref_multi(v.pointer("/user/groups")) {
                let key = vec![
                    s("/objectRef/name"),
                    s("/objectRef/namespace"),
                    s("/objectRef/resource"),
                    s("/requestReceivedTimestamp"),
                    s("/requestURI"),
                    s("/responseStatus/code"),
                    ip.clone(),
                    s("/stage"),
                    group,
                    s("/user/uid"),
                    s("/user/username"),
                    s("/userAgent"),
                    s("/verb"),
                ];
                *self.rows.entry(key).or_default() += 1;
            }
        }
    }
}

fn corpus(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..n).map(|_| gen_record(&mut rng)).collect()
}

fn check_fast_path(records: &[String]) -> Result<(), TestCaseError> {
    let mut prefilter = Prefilter::new();
    let mut reference = Reference::default();
    let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
    for r in records {
        let v = ref_parse(r).expect("generated records are valid JSON");
        if ref_record_matches(&v) {
            prop_assert!(
                prefilter.could_match(r.as_bytes()),
                "prefilter rejected {}",
                r
            );
        }
        reference.record(&v);
        det.feed(r.as_bytes(), Origin::default());
    }
    let (agg, stats) = det.finish();
    prop_assert_eq!(stats.matched, reference.matched);
    let got = table(&agg.into_findings());
    let want: Vec<(Vec<String>, u64)> = reference.rows.into_iter().collect();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn fast_path_agrees_with_full_parse(seed in any::<u64>()) {
        check_fast_path(&corpus(seed, 64))?;
    }
}

/// The generator makes the cases the property is about: without this, a
/// generator bug could make the property above pass vacuously.
#[test]
fn fast_path_corpus_covers_escaped_and_case_varied_names() {
    let records = corpus(42, 3000);
    let mut matched = 0;
    let mut escaped = 0;
    let mut double_escaped = 0;
    let mut case_varied = 0;
    let mut rejected = 0;
    let mut prefilter = Prefilter::new();
    for r in &records {
        let v = ref_parse(r).expect("valid JSON");
        if !prefilter.could_match(r.as_bytes()) {
            rejected += 1;
        }
        if !ref_record_matches(&v) {
            continue;
        }
        matched += 1;
        let lower = r.to_ascii_lowercase();
        if !lower.contains("system:anonymous") {
            escaped += 1; // the name is spelled with escapes
        }
        if v.get("message").is_some() && (r.contains(r"\\u") || r.contains(r"\u005c")) {
            double_escaped += 1;
        }
        if !r.contains("system:anonymous") && lower.contains("system:anonymous") {
            case_varied += 1;
        }
    }
    assert!(matched > 300, "{matched}");
    assert!(escaped > 50, "{escaped}");
    assert!(double_escaped > 20, "{double_escaped}");
    assert!(case_varied > 50, "{case_varied}");
    // And the fast path does reject some records.
    assert!(rejected > 100, "{rejected}");
    // Lone surrogate escapes reach rows, as U+FFFD.
    let mut reference = Reference::default();
    for r in &records {
        reference.record(&ref_parse(r).expect("valid JSON"));
    }
    let replaced = reference
        .rows
        .keys()
        .filter(|row| row.iter().any(|c| c.contains('\u{fffd}')))
        .count();
    assert!(replaced > 30, "{replaced}");
    check_fast_path(&records).expect("fast path agrees on the fixed corpus");
}

/// What the README says of duplicated keys.
#[test]
fn duplicated_keys_are_judged_as_serde_json_judges_them() {
    // A field the rule reads, twice at the top level: malformed, also
    // when one of the two is spelled with escapes.
    for record in [
        anon(r#""userAgent":"a","userAgent":"b""#),
        anon(r#""userAgent":"a","user\u0041gent":"b""#),
        anon(ANON),
        anon(r#""sourceIPs":["1.2.3.4"],"sourceIPs":[]"#),
        r#"{"message":"anonymous","message":"x"}"#.to_string(),
        r#"{"kind":"EventList","items":[],"items":["anonymous"]}"#.to_string(),
    ] {
        let (findings, stats) = run(&[&record]);
        assert!(findings.is_empty(), "{record}");
        assert_eq!((stats.events, stats.malformed), (0, 1), "{record}");
    }
    // Twice inside user: the object reads as empty, no match.
    assert_no_match(&with_user(
        r#"{"username":"system:anonymous","username":"system:anonymous","groups":["system:unauthenticated"]}"#,
        "",
    ));
    // Twice inside objectRef: its fields are "0".
    let found = assert_single_match(&anon(
        r#""objectRef":{"name":"a","name":"b","resource":"pods"},"verb":"get""#,
    ));
    assert_eq!(
        table(&found),
        vec![(row(&[("verb", "get")]), 1)],
        "objectRef read as empty"
    );
    // Keys the rule does not read may repeat.
    assert_single_match(&anon(
        r#""apiVersion":"a","apiVersion":"b","requestObject":{"x":1,"x":2}"#,
    ));
}

#[test]
fn lone_surrogates_are_shown_as_replacement_characters() {
    let event = anon(
        r#""userAgent":"curl\ud800/8","requestURI":"/\uDC00","verb":"get\ud83d","stage":"\ud800\ud83d\ude00""#,
    );
    // The fast parse answers for it (and the reference agrees, below).
    assert!(crate::audit::Record::parse_fast(event.as_bytes()).is_some());
    for record in [event.clone(), cloudwatch(&event, "7")] {
        let found = assert_single_match(&record);
        let cols = found.get(0).expect("one row").cols();
        assert_eq!(cols[col("userAgent")], "curl\u{fffd}/8", "{record}");
        assert_eq!(cols[col("requestURI")], "/\u{fffd}");
        assert_eq!(cols[col("verb")], "get\u{fffd}");
        assert_eq!(cols[col("stage")], "\u{fffd}😀");
        check_fast_path(&[record]).expect("agrees with the reference");
    }
    // A username with one is not the anonymous user.
    assert_no_match(&with_user(
        r#"{"username":"system:anonymous\ud800","groups":["system:unauthenticated"]}"#,
        "",
    ));
}

#[test]
fn fast_path_handles_hand_written_escapes() {
    // The event's own escape, escaped once more by CloudWatch, in the ways
    // a JSON encoder may choose.
    let inner =
        r#"{"user":{"username":"system:\u0061NONYMOU\u0053","groups":["system:unauthenticated"]}}"#;
    for record in [
        inner.to_string(),
        cloudwatch(inner, "1"),
        format!(
            r#"{{"message":"{}","eventId":"1"}}"#,
            // Every escape's backslash as \u005C: no letter is escaped
            // in the outer text.
            inner.replace("\\u00", "\\u005Cu00").replace('"', "\\u0022")
        ),
        format!(
            r#"{{"message":"{}","eventId":"1"}}"#,
            inner
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace("\\\\u0061", "\\\\\\u00750061")
        ),
    ] {
        let v: Value = serde_json::from_str(&record).expect("valid");
        assert!(ref_record_matches(&v), "{record}");
        assert!(Prefilter::new().could_match(record.as_bytes()), "{record}");
        let (findings, stats) = run(&[&record]);
        assert_eq!(stats.matched, 1, "{record}");
        assert_eq!(column(&findings, "user"), ["system:aNONYMOUS"], "{record}");
    }
}

proptest! {
    /// The row key keeps every value (NUL bytes included) and sorts exactly
    /// as the values do, column by column; decoding tells which values have
    /// nothing JSON would escape.
    #[test]
    fn row_keys_round_trip_and_sort_like_their_values(
        a in prop::collection::vec("[a\\x00\\x01\\x1f\\x7e\\x7f\\x80\\xff\u{2028}é\"\\\\-]{0,4}", 13),
        b in prop::collection::vec("[a\\x00\\x01\\xff-]{0,4}", 13),
    ) {
        let (ka, kb) = (Key::of(&a, 7), Key::of(&b, 7));
        let decoded: Vec<String> = Key::decode(&ka).iter().map(|c| c.to_string()).collect();
        prop_assert_eq!(&decoded, &a);
        let mut each = Vec::new();
        Key::each_value(&ka, 13, |_, value, plain| each.push((value.into_owned(), plain)));
        prop_assert_eq!(each.len(), a.len());
        for ((value, plain), want) in each.iter().zip(&a) {
            prop_assert_eq!(value, want);
            // Quotes, backslashes, controls, DEL and non-ASCII bytes.
            let needs_escape = value
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b));
            prop_assert_eq!(*plain, !needs_escape, "{:?}", value);
        }
        prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
    }
}

#[test]
fn values_read_back_exactly_whatever_they_hold() {
    // NULs, quotes and backslashes (unescaped values), and long values.
    let long = "x".repeat(70_000);
    let agents = [
        r"a\u0000b".to_string(),
        r"\u0000".to_string(),
        r#"q\"uote\\"#.to_string(),
        "plain".to_string(),
        long.clone(),
        format!(r"{long}\u0000"),
        // DEL and non-ASCII characters, escaped or not.
        r"del\u007f".to_string(),
        "del\u{7f}".to_string(),
        r"caf\u00e9".to_string(),
        "café".to_string(),
        "a\u{2028}b".to_string(),
        format!("{long}é"),
    ];
    for ua in agents {
        let found = assert_single_match(&anon(&format!(
            r#""userAgent":"{ua}","requestURI":"/\u0000/","verb":"get""#
        )));
        let f = found.get(0).expect("one finding");
        let want: String = serde_json::from_str(&format!("\"{ua}\"")).expect("valid");
        let cols = f.cols();
        assert_eq!(cols[col("userAgent")], want, "{ua:.20}");
        assert_eq!(cols[col("requestURI")], "/\0/");
        assert_eq!(cols[col("verb")], "get");
        let mut n = 0;
        f.each_value(|c, plain| {
            assert_eq!(c, cols[n]);
            // Plain: nothing JSON output might escape.
            let escapable = c
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b));
            assert_eq!(plain, !escapable, "{c:.20}");
            n += 1;
        });
        assert_eq!(n, 13);
    }
}

// ---------------------------------------------------------------------------
// Property: each row's severity, decision, reason and binding agree with a
// reference over serde_json values

/// Reasons, with the binding each names (written out by hand).
const REASONS: [(&str, &str); 7] = [
    ("", "0"),
    (
        r#"RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole "system:public-info-viewer" to Group "system:unauthenticated""#,
        "ClusterRoleBinding/system:public-info-viewer",
    ),
    (
        r#"RBAC: allowed by ClusterRoleBinding "debug-anonymous" of ClusterRole "secret-reader" to User "system:anonymous""#,
        "ClusterRoleBinding/debug-anonymous",
    ),
    (
        r#"RBAC: allowed by RoleBinding "leaky/kube-system" of Role "r" to Group "system:unauthenticated""#,
        "RoleBinding/kube-system/leaky",
    ),
    (
        "RBAC: allowed by ClusterRoleBinding system:public-info-viewer",
        "ClusterRoleBinding/system:public-info-viewer",
    ),
    (
        r#"EKS Access Policy: allowed by ClusterRoleBinding "arn:aws:iam::1:role/x" of ClusterRole "p" to User "u""#,
        "0",
    ),
    (
        r#"RBAC: allowed by ClusterRoleBinding "a\"b" of ClusterRole "r" to Group "g""#,
        "ClusterRoleBinding/a\"b",
    ),
];

/// A family of matching events that share every by-field and differ in
/// their annotations (so that rows see several), each as JSON text.
fn gen_triage_family(rng: &mut Rng) -> Vec<String> {
    let lit = |rng: &mut Rng, s: &str| {
        let p = [0, 0, 10, 100][rng.below(4)];
        json_string(rng, s, p)
    };
    let mut fields = vec![
        r#""user":{"username":"system:anonymous","groups":["system:unauthenticated"]}"#.to_string(),
        format!(
            r#""sourceIPs":[{}]"#,
            rng.pick(&[r#""203.0.113.7""#, r#""10.0.0.1","198.51.100.9""#])
        ),
    ];
    let verb = rng.pick(&[
        "get",
        "list",
        "watch",
        "head",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "post",
        "put",
        "GET",
    ]);
    fields.push(format!(r#""verb":{}"#, lit(rng, verb)));
    let uri = rng.pick(&[
        "/version",
        "/version/",
        "/healthz?timeout=5s",
        "/livez",
        "/readyz",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
        "/healthz/etcd",
        "/api",
        "/api/v1/namespaces/default/pods/p/exec?command=sh",
    ]);
    fields.push(format!(r#""requestURI":{}"#, lit(rng, uri)));
    if rng.pct(60) {
        let resource = rng.pick(&[
            "secrets",
            "pods",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
            "configmaps",
            "Secrets",
        ]);
        let mut members = vec![format!(r#""resource":{}"#, lit(rng, resource))];
        if rng.pct(60) {
            let sub = rng.pick(&[
                "exec",
                "attach",
                "portforward",
                "token",
                "log",
                "status",
                "",
            ]);
            members.push(format!(r#""subresource":{}"#, lit(rng, sub)));
        }
        if rng.pct(50) {
            members.push(r#""namespace":"default","name":"p""#.to_string());
        }
        fields.push(format!(r#""objectRef":{{{}}}"#, members.join(",")));
    }
    if rng.pct(85) {
        let code = rng.pick(&[
            "200", "201", "101", "404", "401", "403", "500", r#""403""#, "null",
        ]);
        fields.push(format!(r#""responseStatus":{{"code":{code}}}"#));
    }
    if rng.pct(85) {
        let stage = rng.pick(&[
            "ResponseComplete",
            "RequestReceived",
            "ResponseStarted",
            "Panic",
        ]);
        fields.push(format!(r#""stage":{}"#, lit(rng, stage)));
    }
    fields.push(format!(
        r#""requestReceivedTimestamp":"2024-05-01T12:00:0{}.000000Z""#,
        rng.below(2)
    ));
    let copies = 1 + rng.below(3);
    (0..copies)
        .map(|_| {
            let mut event = fields.clone();
            match rng.below(10) {
                0 => {}
                1 => event.push(format!(
                    r#""annotations":{}"#,
                    rng.pick(&["null", "[]", r#""x""#])
                )),
                _ => {
                    let mut members = Vec::new();
                    // An escaped slash in a key is the same key.
                    let key = |rng: &mut Rng, name: &str| {
                        if rng.pct(20) {
                            format!(r#""authorization.k8s.io\/{name}""#)
                        } else {
                            format!(r#""authorization.k8s.io/{name}""#)
                        }
                    };
                    if rng.pct(90) {
                        let decision = match rng.below(10) {
                            0 => "null".to_string(),
                            1 => "{}".to_string(),
                            2 => "1".to_string(),
                            _ => {
                                let d =
                                    rng.pick(&["allow", "allow", "forbid", "forbid", "", "Forbid"]);
                                lit(rng, d)
                            }
                        };
                        members.push(format!("{}:{decision}", key(rng, "decision")));
                    }
                    if rng.pct(80) {
                        let (reason, _) = REASONS[rng.below(REASONS.len())];
                        let reason = lit(rng, reason);
                        members.push(format!("{}:{reason}", key(rng, "reason")));
                    }
                    if rng.pct(30) {
                        members.push(
                            r#""pod-security.kubernetes.io/enforce-policy":"privileged:latest""#
                                .to_string(),
                        );
                    }
                    for i in (1..members.len()).rev() {
                        let j = rng.below(i + 1);
                        members.swap(i, j);
                    }
                    event.push(format!(r#""annotations":{{{}}}"#, members.join(",")));
                }
            }
            for i in (1..event.len()).rev() {
                let j = rng.below(i + 1);
                event.swap(i, j);
            }
            let event = format!("{{{}}}", event.join(","));
            if rng.pct(30) {
                // As CloudWatch delivers it: the event escaped once more.
                format!(
                    r#"{{"message":{},"eventId":"1"}}"#,
                    json_string(rng, &event, 5)
                )
            } else {
                event
            }
        })
        .collect()
}

/// The severity policy, written out from the README over serde_json values.
fn ref_severity(v: &Value) -> usize {
    let s = |p: &str| ref_scalar(v.pointer(p)).unwrap_or_else(|| "0".to_string());
    let annotation = |name: &str| {
        ref_scalar(v.get("annotations").and_then(|a| a.as_object()?.get(name)))
            .unwrap_or_else(|| "0".to_string())
    };
    let (code, stage, verb) = (s("/responseStatus/code"), s("/stage"), s("/verb"));
    let (resource, sub, uri) = (
        s("/objectRef/resource"),
        s("/objectRef/subresource"),
        s("/requestURI"),
    );
    let path = uri.split('?').next().unwrap_or("").to_string();
    let writes = [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "post",
        "put",
    ];
    let rbac = [
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
    ];
    let public = [
        "/version",
        "/version/",
        "/healthz",
        "/livez",
        "/readyz",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    ];
    if code == "401"
        || code == "403"
        || annotation("authorization.k8s.io/decision") == "forbid"
        || stage == "RequestReceived"
    {
        1
    } else if writes.contains(&verb.as_str())
        || rbac.contains(&resource.as_str())
        || resource == "secrets"
        || (resource == "pods" && ["exec", "attach", "portforward"].contains(&sub.as_str()))
        || (resource == "serviceaccounts" && sub == "token")
    {
        5
    } else if public.contains(&path.as_str()) {
        2
    } else {
        4
    }
}

type TriageRow = (usize, BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

/// The reference's rows with their triage, from events (unwrapping
/// CloudWatch messages).
fn ref_triage(records: &[String]) -> BTreeMap<(Vec<String>, u64), TriageRow> {
    let mut counts: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    let mut triage: BTreeMap<Vec<String>, TriageRow> = BTreeMap::new();
    for r in records {
        let mut v = ref_parse(r).expect("generated records are valid JSON");
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            v = ref_parse(m).expect("the message is an event");
        }
        let mut reference = Reference::default();
        reference.record(&v);
        let annotation = |name: &str| {
            ref_scalar(v.get("annotations").and_then(|a| a.as_object()?.get(name)))
                .unwrap_or_else(|| "0".to_string())
        };
        let reason = annotation("authorization.k8s.io/reason");
        let binding = REASONS
            .iter()
            .find(|(text, _)| *text == reason)
            .map_or("0", |(_, b)| *b);
        for (key, n) in reference.rows {
            *counts.entry(key.clone()).or_default() += n;
            let t = triage.entry(key).or_default();
            t.0 = t.0.max(ref_severity(&v));
            t.1.insert(annotation("authorization.k8s.io/decision"));
            t.2.insert(reason.clone());
            if binding != "0" {
                t.3.insert(binding.to_string());
            }
        }
    }
    counts
        .into_iter()
        .map(|(k, n)| {
            let t = triage.remove(&k).unwrap();
            ((k, n), t)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn triage_agrees_with_a_reference_over_serde_json(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let records: Vec<String> = (0..24).flat_map(|_| gen_triage_family(&mut rng)).collect();
        let mut det = Detector::new(Vec::new()).with_rules(Rules::ESCU);
        for r in &records {
            det.feed(r.as_bytes(), Origin::default());
        }
        let findings = det.finish().0.into_findings();
        let join = |set: &BTreeSet<String>| {
            if set.is_empty() { "0".to_string() } else { set.iter().cloned().collect::<Vec<_>>().join(" | ") }
        };
        let got: Vec<_> = findings
            .iter()
            .map(|f| {
                let cols: Vec<String> = f.cols().iter().map(|c| c.to_string()).collect();
                let t = f.triage;
                ((cols, f.count), (f.severity.id() as usize, t.decision.clone(), t.reason.clone(), t.binding.clone()))
            })
            .collect();
        let want: Vec<_> = ref_triage(&records)
            .into_iter()
            .map(|(row, (s, d, r, b))| (row, (s, join(&d), join(&r), join(&b))))
            .collect();
        prop_assert_eq!(got, want);
    }
}

/// The generator makes the cases the property is about.
#[test]
fn triage_corpus_covers_every_severity_and_rows_whose_events_disagree() {
    let mut rng = Rng(7);
    let records: Vec<String> = (0..400).flat_map(|_| gen_triage_family(&mut rng)).collect();
    let rows = ref_triage(&records);
    let severities: BTreeSet<usize> = rows.values().map(|t| t.0).collect();
    assert_eq!(severities, BTreeSet::from([1, 2, 4, 5]));
    assert!(rows.values().filter(|t| t.1.len() > 1).count() > 10);
    assert!(rows.values().filter(|t| t.3.len() > 1).count() > 3);
    let bindings: BTreeSet<&String> = rows.values().flat_map(|t| &t.3).collect();
    assert!(bindings.len() >= 4, "{bindings:?}");
}
