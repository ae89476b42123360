//! `--deliver s3://... --format parquet` against moto's S3: the objects are
//! at Security Lake's partitioned keys, one UTC day each; pyarrow (an
//! independent reader) reads them as zstd Parquet, sorted by time; their
//! records are the rows an `--format ndjson` run over the same window
//! prints, column by column; and they validate against OCSF 1.1.0's schema
//! (`tests/support/ocsf_validate.py`, as `tests/ocsf.rs` validates 1.5.0).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use support::*;

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
const ACCOUNT: &str = "123456789012";

fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y%m%d")
        .to_string()
}

/// A row as text, column by column (`count` too): what `unmapped` holds.
fn as_text(row: &Value) -> BTreeMap<String, String> {
    row.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn parquet_objects_are_security_lake_partitions_that_hold_the_ndjson_rows() {
    // A window across a UTC midnight at least half an hour past (and
    // within CloudWatch's 14 days).
    let now = now_ms();
    let mut midnight = now - now.rem_euclid(DAY);
    if now - midnight < 30 * MIN {
        midnight -= DAY;
    }
    let group = "/aws/eks/lake/cluster";
    create(group, &[AUDIT_STREAM]);
    // 6 anonymous events before midnight, 4 after, a minute apart; and one
    // that is not anonymous.
    let mut events: Vec<(i64, String)> = (0..10)
        .map(|i| (midnight + (i - 6) * MIN, audit_event(700 + i as u64, true)))
        .collect();
    events.push((midnight + 30_000, audit_event(799, false)));
    // The first event names an object: its row sorts after the others
    // (by the columns, `objectRef.name` first), though its time is the
    // earliest, so only sorting by time puts it first.
    events[0].1 = events[0].1.replace(
        r#""verb":"get""#,
        r#""objectRef":{"resource":"pods","namespace":"default","name":"zzz"},"verb":"get""#,
    );
    events.sort();
    put(group, AUDIT_STREAM, &events);
    let bucket = "kubeanon-lake";
    make_bucket(bucket);
    let window = [
        "--start".to_string(),
        rfc(midnight - 15 * MIN),
        "--end".to_string(),
        rfc(midnight + 15 * MIN),
    ];

    ok(poll(group)
        .args(&window)
        .args(["--format", "parquet", "--quiet"])
        .args(["--checkpoint", &format!("s3://{bucket}/kubeanon/")])
        .args(["--deliver", &format!("s3://{bucket}/ext/kubeanon/")])
        .output()
        .unwrap());
    let ndjson = ok(poll(group)
        .args(&window)
        .args(["--format", "ndjson", "--quiet"])
        .output()
        .unwrap());
    let expected = rows(&ndjson.stdout);
    assert_eq!(expected.len(), 10, "one row per anonymous event");

    // One object per day of the window, directly under the prefix.
    let mut found = keys(bucket, "ext/kubeanon/");
    found.sort();
    let name = regex::Regex::new(&format!(
        r"^ext/kubeanon/region={REGION}/accountId={ACCOUNT}/eventDay=(\d{{8}})/(\d{{8}}T\d{{6}}\.\d{{3}}Z)-(\d{{8}}T\d{{6}}\.\d{{3}}Z)-[0-9a-f]{{16}}-\d+\.parquet$"
    ))
    .unwrap();
    let days: Vec<String> = found
        .iter()
        .map(|k| {
            let c = name
                .captures(k)
                .unwrap_or_else(|| panic!("not a Security Lake key: {k}"));
            // The name's window starts on its eventDay.
            assert!(c[2].starts_with(&c[1]), "{k}");
            c[1].to_string()
        })
        .collect();
    assert_eq!(days, [day(midnight - 1), day(midnight)], "{found:?}");

    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = found
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let body = s3(async |c| {
                let o = c.get_object().bucket(bucket).key(k).send().await.unwrap();
                assert_eq!(o.content_type(), Some("application/vnd.apache.parquet"));
                o.body.collect().await.unwrap().into_bytes().to_vec()
            });
            let f = dir.path().join(format!("{i}.parquet"));
            std::fs::write(&f, body).unwrap();
            f
        })
        .collect();
    let read = read_parquet(&files);
    let mut records = Vec::new();
    for (file, want) in read.iter().zip([6, 4]) {
        assert_eq!(file["rows"], want, "the events of its day: {file}");
        assert_eq!(file["codecs"], serde_json::json!(["ZSTD"]));
        let times: Vec<i64> = file["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["time"].as_i64().unwrap())
            .collect();
        assert!(times.is_sorted(), "sorted by time: {times:?}");
        assert_eq!(
            times
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            want
        );
        records.extend(file["records"].as_array().unwrap().iter().cloned());
    }

    // The records are the ndjson rows, column by column.
    let by_id =
        |rows: Vec<BTreeMap<String, String>>| -> BTreeMap<String, BTreeMap<String, String>> {
            rows.into_iter().map(|r| (r["id"].clone(), r)).collect()
        };
    assert_eq!(records[0]["unmapped"]["objectRef.name"], "zzz");
    let got = by_id(records.iter().map(|r| as_text(&r["unmapped"])).collect());
    let want = by_id(expected.iter().map(as_text).collect());
    assert_eq!(got.len(), records.len(), "ids are unique");
    assert_eq!(got, want);
    for r in &records {
        let u = &r["unmapped"];
        assert_eq!(r["class_uid"], 2001);
        assert_eq!(r["metadata"]["version"], "1.1.0");
        assert_eq!(r["finding"]["uid"], u["id"]);
        assert_eq!(r["count"].to_string(), u["count"].as_str().unwrap());
        assert_eq!(r["cloud"]["account"]["uid"], ACCOUNT);
        assert_eq!(r["cloud"]["region"], REGION);
        assert_eq!(r["api"]["operation"], u["verb"]);
        assert_eq!(r["evidence"]["src_endpoint"]["ip"], u["src_ip"]);
    }

    // And they are OCSF 1.1.0 Security Findings.
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    let file = dir.path().join("records.ndjson");
    std::fs::write(&file, lines).unwrap();
    let (valid, report) = validate_ocsf(&file);
    assert!(valid, "{report}");
    assert!(report.contains("validated 10 events, 0 errors"), "{report}");
}

#[test]
fn parquet_anywhere_but_s3_objects_is_a_usage_error() {
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/eks-audit-sample.jsonl");
    let scan = std::process::Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .args(["scan", "--format", "parquet"])
        .arg(&sample)
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let append = dir.path().join("x");
    let polls = [
        poll("/aws/eks/none/cluster")
            .args(["--since", "1h", "--format", "parquet"])
            .output()
            .unwrap(),
        poll("/aws/eks/none/cluster")
            .args(["--since", "1h", "--format", "parquet", "--append"])
            .arg(&append)
            .output()
            .unwrap(),
    ];
    for out in [&scan, &polls[0], &polls[1]] {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--format parquet"), "{err}");
        assert!(err.contains("--deliver s3://"), "{err}");
        assert!(out.stdout.is_empty());
    }
    assert!(!append.exists());
}
