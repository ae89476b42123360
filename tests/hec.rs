//! `--deliver hec+https://`: against a receiver that follows Splunk's
//! documented HEC protocol (`tests/support/hec_receiver.py`: tokens,
//! channels, indexer acknowledgements that come late or never, busy
//! answers), over TLS with a CA of its own. No Splunk server installs
//! here; this is how HEC delivery is tested.

mod support;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const MIN: i64 = 60_000;
const TOKEN: &str = "11111111-2222-3333-4444-555555555555";

struct Receiver {
    url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(control: Value) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Receiver {
            url: format!("hec+https://127.0.0.1:{port}"),
            child: Command::new(python())
                .arg(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/hec_receiver.py"),
                )
                .arg(port.to_string())
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("start the HEC receiver"),
            dir,
        };
        r.control(control);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.ca().exists() || TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the HEC receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn control(&self, control: Value) {
        let mut c = json!({ "token": TOKEN, "ack": false, "busy": 0, "acks": "now" });
        c.as_object_mut()
            .unwrap()
            .extend(control.as_object().unwrap().clone());
        let tmp = self.dir.path().join("control.json.tmp");
        std::fs::write(&tmp, c.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.path().join("control.json")).unwrap();
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Every event it accepted: (channel, ackId, the HEC event).
    fn events(&self) -> Vec<Value> {
        lines(&self.dir.path().join("events.jsonl"))
    }

    /// How many of its answers had this status.
    fn answered(&self, status: u16) -> usize {
        std::fs::read_to_string(self.dir.path().join("answers.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').next() == Some(&status.to_string()))
            .count()
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A log group with `n` anonymous events spread over the last 40 minutes
/// (several steps with `--step-span 10m`).
fn group_with(name: &str, n: u64) -> String {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM]);
    let t = now_ms() - 45 * MIN;
    let events: Vec<(i64, String)> = (0..n)
        .map(|i| {
            (
                t + (i as i64) * (40 * MIN / n as i64),
                audit_event(3000 + i, true),
            )
        })
        .collect();
    put(&group, AUDIT_STREAM, &events);
    group
}

/// `poll` of `group` to the receiver, with its CA trusted.
fn to_hec(group: &str, r: &Receiver) -> Command {
    let mut cmd = poll(group);
    cmd.args(["--step-span", "10m", "--deliver", &r.url, "--hec-ca"])
        .arg(r.ca())
        .env("KUBEANON_HEC_TOKEN", TOKEN);
    cmd
}

/// The rows an ndjson run over the same window gives, by id.
fn expected_ids(group: &str, since: &str) -> BTreeMap<String, Value> {
    let out = ok(run(poll(group).args([
        "--since",
        since,
        "--format",
        "ndjson",
        "--step-span",
        "10m",
    ])));
    rows(&out.stdout)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

fn ids(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e["hec"]["fields"]["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn each_row_is_one_event_in_hecs_envelope() {
    let group = group_with("hec-envelope", 6);
    let r = Receiver::start(json!({}));
    let out = ok(run(to_hec(&group, &r).args([
        "--since",
        "1h",
        "--hec-index",
        "k8s_security",
    ])));
    let want = expected_ids(&group, "1h");
    let got = r.events();
    assert_eq!(got.len(), want.len(), "{}", text(&out));
    assert_eq!(want.len(), 6);
    for e in &got {
        let hec = &e["hec"];
        let id = hec["fields"]["id"].as_str().unwrap();
        let row = &want[id];
        assert_eq!(hec["event"], *row, "the event is the ndjson row");
        assert_eq!(hec["host"], "hec-envelope");
        assert_eq!(hec["source"], "kubeanon");
        assert_eq!(hec["sourcetype"], "kubeanon:finding");
        assert_eq!(hec["index"], "k8s_security");
        for f in ["severity", "rule", "cluster", "region", "account"] {
            assert_eq!(hec["fields"][f], row[f], "{f}");
        }
        // Epoch seconds with milliseconds, the row's request time.
        let t =
            chrono::DateTime::parse_from_rfc3339(row["requestReceivedTimestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
        assert_eq!((hec["time"].as_f64().unwrap() * 1000.0).round() as i64, t);
    }
    assert!(text(&out).contains("delivered to HEC"), "{}", text(&out));

    // A target takes the rows the run would print: rolled up, a group per
    // event, its time the group's last seen.
    let r = Receiver::start(json!({}));
    ok(run(to_hec(&group, &r).args(["--since", "1h", "--rollup"])));
    let got = r.events();
    assert_eq!(got.len(), 6);
    for e in &got {
        let event = &e["hec"]["event"];
        assert_eq!(event["count"], 1);
        let t = chrono::DateTime::parse_from_rfc3339(event["last_seen"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            (e["hec"]["time"].as_f64().unwrap() * 1000.0).round() as i64,
            t
        );
    }

    // OCSF events are OCSF findings, under their own sourcetype.
    let r = Receiver::start(json!({}));
    ok(run(
        to_hec(&group, &r).args(["--since", "1h", "--format", "ocsf"])
    ));
    let got = r.events();
    assert_eq!(got.len(), 6);
    for e in &got {
        assert_eq!(e["hec"]["sourcetype"], "kubeanon:ocsf");
        assert_eq!(e["hec"]["event"]["class_uid"], 2004);
        assert_eq!(
            e["hec"]["event"]["finding_info"]["uid"],
            e["hec"]["fields"]["id"]
        );
    }
}

#[test]
fn a_kill_between_send_and_ack_resends_only_the_step_in_flight_and_a_clean_rerun_sends_nothing() {
    let group = group_with("hec-kill", 8);
    let want = expected_ids(&group, "1h");
    assert_eq!(want.len(), 8);
    // Acknowledgements on, and none given yet: the first step waits.
    let r = Receiver::start(json!({ "ack": true, "acks": "never" }));
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp.json");
    let mut first = to_hec(&group, &r)
        .args([
            "--since",
            "1h",
            "--hec-ack",
            "--hec-ack-timeout",
            "5m",
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.events().is_empty() {
        assert!(Instant::now() < deadline, "nothing was sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Sent, not acknowledged: kill -9.
    std::thread::sleep(Duration::from_millis(300));
    first.kill().unwrap();
    first.wait().unwrap();
    let in_flight = ids(&r.events());
    assert!(!in_flight.is_empty() && in_flight.len() < want.len());

    r.control(json!({ "ack": true, "acks": "after:0.5" }));
    let out = ok(run(to_hec(&group, &r)
        .args(["--hec-ack", "--checkpoint"])
        .arg(&checkpoint)));
    let got = ids(&r.events());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "every row arrives: {}",
        text(&out)
    );
    for (id, n) in &got {
        // Twice only if it was in the step the kill cut short.
        let expected = if in_flight.contains_key(id) { 2 } else { 1 };
        assert_eq!(*n, expected, "{id}");
    }
    // Acknowledged and committed: a clean run sends nothing again.
    let before = r.events().len();
    ok(run(to_hec(&group, &r)
        .args(["--hec-ack", "--checkpoint"])
        .arg(&checkpoint)));
    assert_eq!(r.events().len(), before);
}

#[test]
fn acknowledgements_that_never_come_fail_the_step_and_commit_nothing() {
    let group = group_with("hec-no-ack", 3);
    let r = Receiver::start(json!({ "ack": true, "acks": "never" }));
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp.json");
    let out = to_hec(&group, &r)
        .args([
            "--since",
            "1h",
            "--hec-ack",
            "--hec-ack-timeout",
            "2s",
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("batches indexed within 2s"),
        "{}",
        text(&out)
    );
    let sent = r.events().len();
    assert!(sent > 0);
    // Not committed: the next run sends it again, and then it counts.
    r.control(json!({ "ack": true, "acks": "now" }));
    ok(run(to_hec(&group, &r)
        .args(["--hec-ack", "--checkpoint"])
        .arg(&checkpoint)));
    assert_eq!(ids(&r.events()).len(), 3);
    assert!(r.events().len() > sent);
}

#[test]
fn a_busy_receiver_loses_nothing() {
    let group = group_with("hec-busy", 5);
    let want = expected_ids(&group, "1h");
    let r = Receiver::start(json!({ "busy": 4 }));
    let out = ok(run(to_hec(&group, &r).args(["--since", "1h"])));
    assert_eq!(r.answered(503), 4, "{}", text(&out));
    let got = ids(&r.events());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got.values().all(|n| *n == 1));
}

#[test]
fn a_wrong_token_is_exit_1_naming_hec_and_where_the_token_came_from() {
    let group = group_with("hec-token", 2);
    let r = Receiver::start(json!({}));
    let wrong = "not-the-token-0000";
    let out = to_hec(&group, &r)
        .args(["--since", "1h"])
        .env("KUBEANON_HEC_TOKEN", wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for needle in ["HEC", "KUBEANON_HEC_TOKEN", "403", "Invalid token"] {
        assert!(text(&out).contains(needle), "{needle}: {}", text(&out));
    }
    assert!(!text(&out).contains(wrong), "the token is never shown");
    assert!(r.events().is_empty());
    // From a file: the message names the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hec-token");
    std::fs::write(&file, format!("{wrong}\n")).unwrap();
    let out = to_hec(&group, &r)
        .args(["--since", "1h", "--hec-token-file"])
        .arg(&file)
        .env_remove("KUBEANON_HEC_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--hec-token-file"), "{}", text(&out));
    assert!(!text(&out).contains(wrong));
    // No token at all: a usage error before anything is read.
    let out = to_hec(&group, &r)
        .args(["--since", "1h"])
        .env_remove("KUBEANON_HEC_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("KUBEANON_HEC_TOKEN"), "{}", text(&out));
}

#[test]
fn the_certificate_is_verified() {
    let group = group_with("hec-tls", 1);
    let r = Receiver::start(json!({}));
    // Without --hec-ca the receiver's private CA is not trusted.
    let mut cmd = poll(&group);
    cmd.args(["--since", "1h", "--deliver", &r.url])
        .env("KUBEANON_HEC_TOKEN", TOKEN);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot reach HEC"), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    assert!(r.events().is_empty());
    // Plain http is refused outright.
    let mut cmd = poll(&group);
    cmd.args(["--since", "1h", "--deliver", "hec+http://127.0.0.1:1"])
        .env("KUBEANON_HEC_TOKEN", TOKEN);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("in the clear"), "{}", text(&out));
}

#[test]
fn a_hec_that_is_down_at_the_start_fails_the_run_before_anything_is_read() {
    let group = group_with("hec-down", 1);
    let down = closed_endpoint().replace("http://", "hec+https://");
    let mut cmd = poll(&group);
    cmd.args(["--since", "1h", "--deliver", &down])
        .env("KUBEANON_HEC_TOKEN", TOKEN);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot reach HEC"), "{}", text(&out));
    // The check's 20 s, not the 2 minutes a batch is retried for.
    assert!(
        text(&out).contains("unreachable or busy for 20s"),
        "{}",
        text(&out)
    );
}
