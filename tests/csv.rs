//! CSV read in a terminal (`cat findings.csv`, `tail -F`): a user agent an
//! attacker sent with escape sequences reaches the file in the visible
//! form the table shows, never raw.

mod util;

use util::kubeanon;

/// An anonymous request whose user agent is an OSC 0 (set the window
/// title to "pwned", ended by BEL) and a CSI 2J (clear the screen), as the
/// audit log holds it (JSON escapes).
const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"csv-1","stage":"ResponseComplete","requestURI":"/version","verb":"get","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["203.0.113.7"],"userAgent":"\u001b]0;pwned\u0007\u001b[2J","responseStatus":{"metadata":{},"code":403},"requestReceivedTimestamp":"2025-03-14T00:02:24.000000Z","stageTimestamp":"2025-03-14T00:02:24.001000Z"}"#;

/// What the table shows for that user agent (README: Output).
const SHOWN: &str = r"\u{1b}]0;pwned\u{7}\u{1b}[2J";

fn scan(format: &str, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.jsonl");
    std::fs::write(&path, format!("{EVENT}\n")).unwrap();
    let out = kubeanon()
        .args(["scan", "-q", "--format", format])
        .args(extra)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

#[test]
fn a_crafted_user_agent_reaches_the_csv_as_the_table_shows_it() {
    let csv = scan("csv", &[]);
    for byte in [0x1b, 0x07] {
        assert!(
            !csv.contains(&byte),
            "{byte:#04x} written raw: {:?}",
            String::from_utf8_lossy(&csv)
        );
    }
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let header = reader.headers().unwrap().clone();
    let at = header.iter().position(|h| h == "userAgent").unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{:?}", String::from_utf8_lossy(&csv));
    assert_eq!(&rows[0][at], SHOWN);
    // The table (every column, nothing cut) shows the same cell: the one
    // word in it that holds the title.
    let table = String::from_utf8(scan("table", &["--wide"])).unwrap();
    assert!(!table.contains(['\u{1b}', '\u{7}']), "{table:?}");
    let shown: Vec<&str> = table
        .split_whitespace()
        .filter(|w| w.contains("pwned"))
        .collect();
    assert_eq!(shown, [&rows[0][at]], "{table}");
}
