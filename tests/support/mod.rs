//! Shared helpers for the tests that run `kubeanon` against a real
//! CloudWatch Logs API: moto's server, started once per test binary on a
//! free loopback port (and gone when the test process exits).

#![allow(dead_code)] // each test binary uses its own subset

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

/// The python that has moto installed: set by `tests/run`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBEANON_TEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "moto's server is needed for this test: run the tests with `tests/run`, which installs it into .venv"
    );
    venv
}

/// The shared moto server, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_server.py");
        let child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto's server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    })
}

/// The environment every `kubeanon` run against moto gets: dummy static
/// credentials, no shared config files, no instance metadata lookups.
pub fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/kubeanon-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/kubeanon-test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS")
        .env_remove("AWS_ENDPOINT_URL_STS")
        .env_remove("AWS_ENDPOINT_URL_EKS")
        .env_remove("AWS_ENDPOINT_URL_S3")
}

/// `kubeanon poll` against moto for one log group, with fast test pacing.
pub fn poll(log_group: &str) -> Command {
    poll_at(&moto().endpoint, log_group)
}

/// `kubeanon poll` against `endpoint` (moto, or a proxy in front of it).
pub fn poll_at(endpoint: &str, log_group: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeanon"));
    aws_env(&mut cmd);
    cmd.args([
        "poll",
        "--log-group",
        log_group,
        "--endpoint-url",
        endpoint,
        "--max-rps",
        "200",
    ]);
    cmd
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The SDK configuration of a test's own clients: moto, dummy credentials.
async fn moto_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&moto().endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

async fn client() -> Client {
    Client::new(&moto_config().await)
}

/// A plain S3 client straight to moto (path-style): a test's own eyes on
/// the buckets kubeanon writes.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&moto_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Runs `f` with a plain S3 client to moto, on a runtime of its own.
pub fn s3<T>(f: impl AsyncFnOnce(aws_sdk_s3::Client) -> T) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { f(s3_client().await).await })
}

/// Creates a bucket in moto.
pub fn make_bucket(bucket: &str) {
    s3(async |c| c.create_bucket().bucket(bucket).send().await.unwrap());
}

/// Every key under `prefix`.
pub fn keys(bucket: &str, prefix: &str) -> Vec<String> {
    s3(async |c| {
        let out = c
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect()
    })
}

/// Runs `tests/support/ocsf_validate.py` on `file` (OCSF events, one a
/// line): (passed, its report).
pub fn validate_ocsf(file: &std::path::Path) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/ocsf_validate.py");
    let out = Command::new(python())
        .arg(script)
        .arg(file)
        .output()
        .expect("run the OCSF validator");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

/// Reads Parquet files with pyarrow (`tests/support/parquet_read.py`):
/// per file, its row count, codecs, metadata, columns and records.
pub fn read_parquet(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/parquet_read.py");
    let out = Command::new(python())
        .arg(script)
        .args(files)
        .output()
        .expect("run pyarrow");
    assert!(
        out.status.success(),
        "pyarrow could not read {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rows(&out.stdout)
}

/// Creates a log group and streams (fresh names per test keep tests apart).
pub fn create(log_group: &str, streams: &[&str]) {
    runtime().block_on(async {
        let c = client().await;
        c.create_log_group()
            .log_group_name(log_group)
            .send()
            .await
            .expect("create log group");
        for s in streams {
            c.create_log_stream()
                .log_group_name(log_group)
                .log_stream_name(*s)
                .send()
                .await
                .expect("create stream");
        }
    })
}

/// Puts (timestamp ms, message) events into a stream, in batches.
pub fn put(log_group: &str, stream: &str, events: &[(i64, String)]) {
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.0);
    runtime().block_on(async {
        let c = client().await;
        for batch in events.chunks(1000) {
            let list: Vec<InputLogEvent> = batch
                .iter()
                .map(|(ts, m)| {
                    InputLogEvent::builder()
                        .timestamp(*ts)
                        .message(m)
                        .build()
                        .unwrap()
                })
                .collect();
            c.put_log_events()
                .log_group_name(log_group)
                .log_stream_name(stream)
                .set_log_events(Some(list))
                .send()
                .await
                .expect("put events");
        }
    })
}

pub const AUDIT_STREAM: &str = "kube-apiserver-audit-0123456789abcdef0123456789abcdef";
pub const APISERVER_STREAM: &str = "kube-apiserver-0123456789abcdef0123456789abcdef";

/// A realistic audit event; `anonymous` ones are what the rule reports.
/// `n` makes each distinct (timestamp and source IP).
pub fn audit_event(n: u64, anonymous: bool) -> String {
    let (user, uri, agent, code) = if anonymous {
        (
            r#"{"username":"system:anonymous","groups":["system:unauthenticated"]}"#.to_string(),
            "/version",
            "python-requests/2.31.0",
            403,
        )
    } else {
        (
            r#"{"username":"system:serviceaccount:kube-system:coredns","uid":"5a1c","groups":["system:serviceaccounts","system:authenticated"]}"#.to_string(),
            r"/api/v1/namespaces/kube-system/endpoints?limit=500\u0026resourceVersion=0",
            "coredns/v1.11.1 (linux/amd64) kubernetes/$Format",
            200,
        )
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-{n}","stage":"ResponseComplete","requestURI":"{uri}","verb":"get","user":{user},"sourceIPs":["203.0.113.{}"],"userAgent":"{agent}","responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"2026-11-29T01:{:02}:{:02}.{:06}Z","stageTimestamp":"2026-11-29T01:00:00.000000Z"}}"#,
        n % 250,
        (n / 60) % 60,
        n % 60,
        n
    )
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// ndjson output -> rows as JSON objects.
pub fn rows(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("ndjson row"))
        .collect()
}

/// Sum of `count` by the 13 detection columns (what "the same findings"
/// means across runs).
pub fn totals(rows: &[serde_json::Value]) -> std::collections::BTreeMap<Vec<String>, u64> {
    let mut out = std::collections::BTreeMap::new();
    for r in rows {
        let key: Vec<String> = kubeanon::detect::COLUMNS[..13]
            .iter()
            .map(|c| r[*c].as_str().unwrap().to_string())
            .collect();
        *out.entry(key).or_default() += r["count"].as_u64().unwrap();
    }
    out
}

/// A number from the summary line, e.g. `summary_number(stderr, "late")`.
pub fn summary_number(stderr: &[u8], label: &str) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ';')
        .collect();
    words
        .windows(2)
        // `1 finding`, `2 findings`: either form of the label.
        .find(|w| {
            w[1] == label
                || w[1].strip_suffix('s') == Some(label)
                || label.strip_suffix('s') == Some(w[1])
        })
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no '{label}' in summary: {text}"))
}
pub mod fleet;
pub mod proxy;

/// An RFC 3339 time (ms precision) for `--start`/`--end`.
pub fn rfc(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `http://127.0.0.1:PORT` where nothing listens (a port just freed).
pub fn closed_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// Fails a test that drives the test-only hooks (`KUBEANON_FAULT`,
/// `KUBEANON_TEST_NOW`) in a build without them.
pub fn require_test_hooks() {
    if !cfg!(feature = "test-hooks") {
        panic!(
            "this test drives test-only hooks: run the tests with tests/run (cargo test --features test-hooks)"
        );
    }
}

/// Asserts that a run succeeded, showing its stderr if not.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "kubeanon failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, asserting success.
pub fn run(cmd: &mut Command) -> Output {
    ok(cmd.output().expect("run kubeanon"))
}

/// `cmd` run under tests/support/peak_rss.py, which adds `peak_rss_kb N`
/// (the kernel's count for the child) to its stderr.
pub fn with_peak_rss(cmd: &Command) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/peak_rss.py");
    let mut wrapped = Command::new(python());
    wrapped
        .arg(script)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Asserts that a run failed with exit code 1 and a message (on stderr)
/// naming each of `needles`.
pub fn assert_fails_with(out: &Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

/// Sets a log group's retention (days).
pub fn set_retention(log_group: &str, days: i32) {
    runtime().block_on(async {
        client()
            .await
            .put_retention_policy()
            .log_group_name(log_group)
            .retention_in_days(days)
            .send()
            .await
            .expect("put retention policy");
    })
}
