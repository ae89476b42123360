//! Scale-out against moto's server: `poll` with its state in S3
//! (`--checkpoint s3://...`), its deliveries as immutable S3 objects
//! (`--deliver s3://...`) and the fleet cut into shards (`--shard I/N`),
//! many processes at once over one discovered fleet:
//!
//! - four shards at once deliver exactly what one plain run reads, each
//!   unit read by exactly one shard, and a second round delivers nothing;
//! - two copies of one shard at once: one skips what the other holds, and
//!   nothing is delivered twice;
//! - kill -9 of shards at random moments, reruns after the leases expire,
//!   new and late events between rounds: every matched event is in exactly
//!   one delivered row;
//! - a state object changed between a run's read and its write is never
//!   overwritten (the race made deterministic by the fault proxy).
//!
//! What is delivered is read back from the bucket (list, download, gunzip,
//! parse) and compared with a plain run to stdout and with `kubeanon scan`
//! of the events written. Each test has its own bucket and accounts: moto's
//! state is shared by the tests of this binary.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeanon::state::{WorkUnit, shard_of};
use support::fleet::*;
use support::proxy::{Fault, Proxy};
use support::*;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// A unit as the rows name it: (account, region, cluster).
type Unit = (String, String, String);

// ---- S3, straight to moto: the tests' own eyes ----

async fn s3() -> aws_sdk_s3::Client {
    s3_client().await
}

fn make_bucket(name: &str) {
    rt().block_on(async {
        s3().await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket")
    });
}

/// Every key under `prefix`.
fn list(bucket: &str, prefix: &str) -> Vec<String> {
    rt().block_on(async {
        let client = s3().await;
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list objects");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        keys.sort();
        keys
    })
}

async fn get_async(bucket: &str, key: &str) -> Option<Vec<u8>> {
    match s3().await.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
        Err(e) => panic!("get {key}: {e:?}"),
    }
}

fn get(bucket: &str, key: &str) -> Option<Vec<u8>> {
    rt().block_on(get_async(bucket, key))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a delivery is gzip");
    out
}

/// One delivered object, its key taken apart, its rows read.
#[derive(Debug)]
struct Object {
    key: String,
    unit: Unit,
    /// The unit's hash in the name (16 hex digits).
    hash: String,
    /// The window, as the name has it (`20261129T010000.000Z`: sorts as
    /// time does).
    start: String,
    end: String,
    seq: u64,
    rows: Vec<serde_json::Value>,
}

/// Every object under `findings/`, checked against the documented key
/// scheme: `account=A/region=R/cluster=C/dt=D/START-END-UNIT-SEQ.ndjson.gz`,
/// its rows those of that unit. Claims (a recovery's, so that a late
/// write of the key lands nowhere) are left out: they must hold no rows.
fn deliveries(bucket: &str) -> Vec<Object> {
    let listed = list(bucket, "findings/");
    let (keys, bodies): (Vec<String>, Vec<Vec<u8>>) = rt().block_on(async {
        let mut out = Vec::new();
        for k in listed {
            let body = get_async(bucket, &k).await.expect("listed object");
            let head = s3()
                .await
                .head_object()
                .bucket(bucket)
                .key(&k)
                .send()
                .await
                .unwrap();
            if head
                .metadata()
                .is_some_and(|m| m.contains_key("kubeanon-claim"))
            {
                assert!(gunzip(&body).is_empty(), "{k}: a claim with rows");
                continue;
            }
            out.push((k, body));
        }
        out.into_iter().unzip()
    });
    keys.into_iter()
        .zip(bodies)
        .map(|(key, body)| {
            let parts: Vec<&str> = key.split('/').collect();
            assert_eq!(parts.len(), 6, "{key}");
            let value = |i: usize, name: &str| {
                parts[i]
                    .strip_prefix(&format!("{name}="))
                    .unwrap_or_else(|| panic!("{key}: no {name}="))
                    .to_string()
            };
            let unit = (value(1, "account"), value(2, "region"), value(3, "cluster"));
            let dt = value(4, "dt");
            let name = parts[5]
                .strip_suffix(".ndjson.gz")
                .unwrap_or_else(|| panic!("{key}: not .ndjson.gz"));
            let fields: Vec<&str> = name.split('-').collect();
            assert_eq!(fields.len(), 4, "{key}");
            let (start, end) = (fields[0].to_string(), fields[1].to_string());
            assert!(start < end, "{key}: an empty window");
            assert_eq!(
                dt,
                format!("{}-{}-{}", &start[..4], &start[4..6], &start[6..8]),
                "{key}: dt is the window's first day"
            );
            let rows = rows(&gunzip(&body));
            assert!(!rows.is_empty(), "{key}: an object with no rows");
            for r in &rows {
                let row_unit = (
                    r["account"].as_str().unwrap().to_string(),
                    r["region"].as_str().unwrap().to_string(),
                    r["cluster"].as_str().unwrap().to_string(),
                );
                assert_eq!(row_unit, unit, "{key}: a row of another unit");
                let u = WorkUnit::new(&unit.0, &unit.1, r["log_group"].as_str().unwrap()).unwrap();
                assert_eq!(u.short_hash(), fields[2], "{key}: the unit's hash");
            }
            Object {
                hash: fields[2].to_string(),
                seq: fields[3].parse().unwrap_or_else(|_| panic!("{key}: seq")),
                key,
                unit,
                start,
                end,
                rows,
            }
        })
        .collect()
}

/// All rows of these objects.
fn all_rows(objects: &[Object]) -> Vec<serde_json::Value> {
    objects
        .iter()
        .flat_map(|o| o.rows.iter().cloned())
        .collect()
}

/// Sorted row ids, and how many ids are repeated.
fn ids(rows: &[serde_json::Value]) -> (Vec<String>, usize) {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    let unique: BTreeSet<&String> = v.iter().collect();
    let repeated = v.len() - unique.len();
    (v, repeated)
}

/// Per unit: totals of the 13 columns (with counts).
fn unit_totals(rows: &[serde_json::Value]) -> BTreeMap<Unit, BTreeMap<Vec<String>, u64>> {
    by_unit(rows)
        .into_iter()
        .map(|(u, r)| (u, totals(&r)))
        .collect()
}

fn count(rows: &[serde_json::Value]) -> u64 {
    rows.iter().map(|r| r["count"].as_u64().unwrap()).sum()
}

/// No window of a unit in two objects: per unit, the objects' windows do
/// not overlap, and their sequence numbers differ.
fn assert_windows_apart(objects: &[Object]) {
    let mut by: BTreeMap<&str, Vec<&Object>> = BTreeMap::new();
    for o in objects {
        by.entry(&o.hash).or_default().push(o);
    }
    for list in by.values_mut() {
        list.sort_by(|a, b| a.start.cmp(&b.start));
        for w in list.windows(2) {
            assert!(
                w[0].end <= w[1].start,
                "one unit's window in two objects:\n{}\n{}",
                w[0].key,
                w[1].key
            );
        }
        let seqs: BTreeSet<u64> = list.iter().map(|o| o.seq).collect();
        assert_eq!(seqs.len(), list.len(), "a sequence number used twice");
    }
}

// ---- the fleet and the runs ----

fn log_group(cluster: &str) -> String {
    format!("/aws/eks/{cluster}/cluster")
}

/// The cluster of an EKS log group name.
fn cluster_of(log_group: &str) -> &str {
    log_group
        .strip_prefix("/aws/eks/")
        .and_then(|g| g.strip_suffix("/cluster"))
        .unwrap()
}

fn unit_key(u: &Unit) -> WorkUnit {
    WorkUnit::new(&u.0, &u.1, log_group(&u.2)).unwrap()
}

/// `per_scope` clusters in each account and region, named
/// `NAME-<account index><region index>-<i>` (so a log group's name alone
/// says its unit), with the events `events(i, seed)` gives.
fn fleet(
    accounts: &[&str],
    per_scope: usize,
    name: &str,
    events: impl Fn(usize, u64) -> Vec<(i64, String)>,
) -> BTreeMap<Unit, Vec<(i64, String)>> {
    let mut out = BTreeMap::new();
    for (a, account) in accounts.iter().enumerate() {
        for (r, region) in REGIONS.iter().enumerate() {
            let clusters: Vec<Cluster> = (0..per_scope)
                .map(|i| Cluster {
                    name: format!("{name}-{a}{r}-{i}"),
                    audit: true,
                    events: events(i, (a * 1000 + r * 100 + i * 10) as u64),
                })
                .collect();
            build(account, region, &clusters, &[]);
            for c in clusters {
                out.insert((account.to_string(), region.to_string(), c.name), c.events);
            }
        }
    }
    out
}

/// `kubeanon poll --all-clusters` over the accounts (by role) and both
/// regions.
fn poll_fleet(endpoint: &str, accounts: &[&str], extra: &[&str]) -> Command {
    let mut cmd = kubeanon(endpoint, &["poll", "--all-clusters"]);
    for a in accounts {
        cmd.args(["--role-arn", &role(a)]);
    }
    cmd.args(["--region", &REGIONS.join(","), "--max-rps", "50"])
        .args(extra);
    cmd
}

/// State (`kubeanon/state/`, `kubeanon/lease/`) in and deliveries
/// (`findings/`) to `bucket`.
fn s3_args(bucket: &str) -> [String; 4] {
    [
        "--checkpoint".into(),
        format!("s3://{bucket}/kubeanon/"),
        "--deliver".into(),
        format!("s3://{bucket}/findings/"),
    ]
}

/// A process started by a test, its output read as it comes (so a full
/// pipe never stalls it).
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    began: Instant,
}

fn start(cmd: &mut Command) -> Running {
    let began = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubeanon");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    Running {
        child,
        stdout,
        stderr,
        began,
    }
}

impl Running {
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills it with SIGKILL; true when it was still running.
    fn kill(&mut self) -> bool {
        let was = self.running();
        if was {
            self.child.kill().unwrap();
        }
        was
    }

    /// Its end (a run still going after `limit` fails the test).
    fn finish(mut self, limit: Duration) -> Output {
        while self.running() {
            if self.began.elapsed() > limit {
                self.child.kill().unwrap();
                let err = self.stderr.join().unwrap();
                panic!(
                    "kubeanon still running after {limit:?}:\n{}",
                    String::from_utf8_lossy(&err)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = self.child.wait().unwrap();
        Output {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}

const LIMIT: Duration = Duration::from_secs(180);

/// The run's summary line.
fn summary(out: &Output) -> String {
    stderr(out)
        .lines()
        .rev()
        .find(|l| l.starts_with("kubeanon poll: ") && l.contains(", window "))
        .unwrap_or_else(|| panic!("no summary line in:\n{}", stderr(out)))
        .to_string()
}

/// The number right before `label` in the summary line.
fn summary_count(out: &Output, label: &str) -> u64 {
    let line = summary(out);
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        // The label in the singular or the plural ("1 object", "5 objects").
        .find(|w| {
            (w[1] == label || w[1].strip_suffix('s') == Some(label)) && w[0].parse::<u64>().is_ok()
        })
        .map(|w| w[0].parse().unwrap())
        .unwrap_or_else(|| panic!("no '{label}' in summary: {line}"))
}

/// The lines saying a unit was skipped because another run holds it.
fn skip_notes(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("kubeanon poll: note: ") && l.contains("skipped"))
        .map(String::from)
        .collect()
}

/// Asserts a run ended well: exit 0, and no rows on stdout (they go
/// to S3).
fn assert_clean(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
    assert!(
        out.stdout.is_empty(),
        "{what}: rows on stdout with --deliver: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// FilterLogEvents' log groups among a proxy's requests.
fn groups_read(proxy: &Proxy) -> BTreeSet<String> {
    proxy
        .requests()
        .iter()
        .filter(|r| r.target.ends_with("FilterLogEvents"))
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["logGroupName"].as_str().unwrap().to_string()
        })
        .collect()
}

/// S3 PUTs under a prefix of the bucket among a proxy's requests.
fn puts_under(proxy: &Proxy, bucket: &str, prefix: &str) -> Vec<String> {
    let path = format!("PUT /{bucket}/{prefix}");
    proxy
        .requests()
        .iter()
        .filter(|r| r.rest && r.target.starts_with(&path))
        .map(|r| r.target.clone())
        .collect()
}

/// A small deterministic PRNG (xorshift64*), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---- the tests ----

#[test]
fn four_shards_at_once_deliver_what_one_run_reads_each_unit_read_by_one_shard() {
    let accounts = ["200000000001", "200000000002"];
    let bucket = "kubeanon-scale-shards";
    make_bucket(bucket);
    // 2 accounts x 2 regions x 4 clusters: 16 units, 1 to 3 anonymous
    // events each.
    let expected = fleet(&accounts, 4, "shards", |i, seed| {
        cluster("x", true, 40_000 + seed, 1 + (i as u64 % 3)).events
    });
    assert_eq!(expected.len(), 16);
    let plain = poll_fleet(
        &moto().endpoint,
        &accounts,
        &["--since", "30m", "--format", "ndjson"],
    )
    .output()
    .unwrap();
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let plain_rows = rows(&plain.stdout);
    let want = unit_totals(&plain_rows);
    assert_eq!(want.len(), 16, "{}", stderr(&plain));
    for (unit, events) in &expected {
        assert_eq!(want[unit], scan(events), "{unit:?}");
    }

    // Which shard each unit falls in (the documented hash).
    let shard_units: Vec<BTreeSet<String>> = (0..4)
        .map(|i| {
            expected
                .keys()
                .filter(|u| shard_of(&unit_key(u), 4) == i)
                .map(|u| log_group(&u.2))
                .collect()
        })
        .collect();
    let sizes: Vec<usize> = shard_units.iter().map(BTreeSet::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 16);

    // Four shards at once, each through a proxy of its own that records
    // what it read and wrote.
    let proxies: Vec<Proxy> = (0..4).map(|_| Proxy::start(&moto().endpoint)).collect();
    let round = |what: &str| -> (Vec<Output>, Duration) {
        let began = Instant::now();
        let running: Vec<Running> = (0..4)
            .map(|i| {
                start(
                    poll_fleet(&proxies[i].endpoint, &accounts, &["--since", "30m"])
                        .args(s3_args(bucket))
                        .args(["--shard", &format!("{i}/4")]),
                )
            })
            .collect();
        let outs: Vec<Output> = running.into_iter().map(|r| r.finish(LIMIT)).collect();
        for (i, out) in outs.iter().enumerate() {
            assert_clean(out, &format!("{what}, shard {i}/4"));
            assert!(skip_notes(out).is_empty(), "{}", stderr(out));
        }
        (outs, began.elapsed())
    };
    let (outs, took) = round("first round");
    for (i, out) in outs.iter().enumerate() {
        // Each shard read its units and no other (CloudWatch), and wrote
        // state for its units only (S3).
        assert_eq!(groups_read(&proxies[i]), shard_units[i], "shard {i}/4");
        for put in puts_under(&proxies[i], bucket, "kubeanon/state/") {
            assert!(
                shard_units[i].iter().any(|g| put.contains(cluster_of(g))),
                "shard {i}/4 wrote another shard's state: {put}"
            );
        }
        assert_eq!(
            summary_count(out, "log") as usize,
            sizes[i],
            "shard {i}/4: {}",
            summary(out)
        );
    }

    let objects = deliveries(bucket);
    let got = all_rows(&objects);
    assert_windows_apart(&objects);
    assert_eq!(
        unit_totals(&got),
        want,
        "the union of the shards' deliveries"
    );
    assert_eq!(
        outs.iter().map(|o| summary_count(o, "object")).sum::<u64>(),
        objects.len() as u64,
        "the shards' summaries count the objects"
    );
    let (got_ids, repeated) = ids(&got);
    assert_eq!(repeated, 0);
    assert_eq!(got_ids, ids(&plain_rows).0, "the same rows, by id");
    assert_eq!(count(&got), count(&plain_rows));
    assert_eq!(
        list(bucket, "kubeanon/state/").len(),
        16,
        "one state object per unit"
    );
    assert!(
        list(bucket, "kubeanon/lease/").is_empty(),
        "leases released: {:?}",
        list(bucket, "kubeanon/lease/")
    );
    eprintln!(
        "four shards over 16 units (2 accounts x 2 regions x 4 clusters): {:?} units per shard, \
         {} objects, {} rows, {} matched events, first round {:.1} s",
        sizes,
        objects.len(),
        got.len(),
        count(&got),
        took.as_secs_f64()
    );

    // A second round of all four: nothing new, no object written.
    for p in &proxies {
        p.clear();
    }
    let (_, took) = round("second round");
    for (i, p) in proxies.iter().enumerate() {
        assert_eq!(
            puts_under(p, bucket, "findings/"),
            Vec::<String>::new(),
            "shard {i}/4 delivered again"
        );
    }
    let again: Vec<String> = deliveries(bucket).into_iter().map(|o| o.key).collect();
    assert_eq!(
        again,
        objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()
    );
    eprintln!(
        "second round of four shards: {:.1} s, 0 new objects",
        took.as_secs_f64()
    );
}

#[test]
fn two_copies_of_one_shard_at_once_deliver_each_unit_once_and_say_what_they_skipped() {
    require_test_hooks();
    let accounts = ["200000000011"];
    let bucket = "kubeanon-scale-twins";
    make_bucket(bucket);
    // Twelve anonymous events 25 s apart in each cluster (and two
    // normal ones): with 30 s steps, twelve steps with rows per unit, each
    // slowed by slow-delivery, so the two runs overlap.
    let now = now_ms();
    let expected = fleet(&accounts, 5, "twins", |_, seed| {
        (0..14)
            .map(|k| {
                (
                    now - 7 * 60_000 + k * 25_000,
                    audit_event(50_000 + seed + k as u64, k < 12),
                )
            })
            .collect()
    });
    let shard = "1/2";
    let mine: BTreeSet<Unit> = expected
        .keys()
        .filter(|u| shard_of(&unit_key(u), 2) == 1)
        .cloned()
        .collect();
    assert!(mine.len() >= 2, "{} units in shard {shard}", mine.len());
    let twin = || {
        let mut cmd = poll_fleet(
            &moto().endpoint,
            &accounts,
            &["--since", "10m", "--step-span", "30s", "--shard", shard],
        );
        cmd.args(s3_args(bucket))
            .env("KUBEANON_FAULT", "slow-delivery");
        start(&mut cmd)
    };
    let began = Instant::now();
    let (a, b) = (twin(), twin());
    let pids = [a.child.id(), b.child.id()];
    let outs = [a.finish(LIMIT), b.finish(LIMIT)];
    let took = began.elapsed();
    // The units each copy skipped, by the log group its note names.
    let mut skipped: [BTreeSet<Unit>; 2] = Default::default();
    for (i, out) in outs.iter().enumerate() {
        // Skipping is not failing.
        assert_clean(out, &format!("copy {i}"));
        let notes = skip_notes(out);
        for n in &notes {
            // It names the holder: the other copy (host/pid/random).
            assert!(
                n.contains("held by ") && n.contains(&format!("/{}/", pids[1 - i])),
                "copy {i} (pid {}) skipped a unit not held by the other copy (pid {}): {n}",
                pids[i],
                pids[1 - i]
            );
            let unit = mine
                .iter()
                .find(|u| n.contains(&format!("{} ", log_group(&u.2))))
                .unwrap_or_else(|| panic!("a note about a unit not in shard {shard}: {n}"));
            assert!(skipped[i].insert(unit.clone()), "skipped twice: {n}");
        }
        assert_eq!(
            summary_count(out, "unit"),
            notes.len() as u64,
            "{}",
            summary(out)
        );
    }
    // No unit skipped by both: one of them worked on each.
    assert!(skipped[0].is_disjoint(&skipped[1]), "{:?}", skipped);
    assert!(
        !skipped[0].is_empty() || !skipped[1].is_empty(),
        "two copies started at once and neither skipped a unit the other held:\n{}\n{}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );

    let objects = deliveries(bucket);
    let got = all_rows(&objects);
    assert_windows_apart(&objects);
    let (_, repeated) = ids(&got);
    assert_eq!(repeated, 0, "a row delivered twice");
    // Exactly the shard's units, each exactly as a plain run reads it.
    let plain = ok(poll_fleet(
        &moto().endpoint,
        &accounts,
        &["--since", "10m", "--format", "ndjson"],
    )
    .output()
    .unwrap());
    let plain_rows: Vec<serde_json::Value> = rows(&plain.stdout)
        .into_iter()
        .filter(|r| {
            mine.contains(&(
                r["account"].as_str().unwrap().to_string(),
                r["region"].as_str().unwrap().to_string(),
                r["cluster"].as_str().unwrap().to_string(),
            ))
        })
        .collect();
    assert_eq!(unit_totals(&got), unit_totals(&plain_rows));
    assert_eq!(count(&got), 12 * mine.len() as u64);
    // Each copy counts what it delivered.
    assert_eq!(
        outs.iter().map(|o| summary_count(o, "object")).sum::<u64>(),
        objects.len() as u64
    );
    for u in &mine {
        assert_eq!(
            unit_totals(&got)[u],
            scan(&expected[u]),
            "{u:?}: as kubeanon scan finds"
        );
    }
    eprintln!(
        "two copies of shard {shard} ({} units) at once: the first skipped {}, the second {} (held by the other); \
         {} objects, {} rows, {} matched events, each once; {:.1} s",
        mine.len(),
        skipped[0].len(),
        skipped[1].len(),
        objects.len(),
        got.len(),
        count(&got),
        took.as_secs_f64()
    );
}

/// The delivery a unit's state object records as pending (its key), if
/// any: a run stopped between recording it and committing it.
fn pending_key(state: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(state).expect("state is JSON");
    let p = &v["pending"];
    (!p.is_null()).then(|| {
        p["key"]
            .as_str()
            .unwrap_or_else(|| panic!("a pending delivery without a key: {p}"))
            .to_string()
    })
}

#[test]
fn kill_9_of_shards_at_random_moments_delivers_every_event_exactly_once() {
    require_test_hooks();
    // Six shards at once: more kills per lease expiry waited for.
    const SHARDS: u32 = 6;
    const KILLS: usize = 30;
    let accounts = ["200000000021", "200000000022"];
    let bucket = "kubeanon-scale-kills";
    make_bucket(bucket);
    let test_began = Instant::now();
    let t0 = now_ms() - 6 * 60_000;
    // 20 units; five minutes of events in each, every other one
    // anonymous, 20 s apart: with 30 s steps about ten steps per unit.
    let mut expected = fleet(&accounts, 5, "kills", |_, seed| {
        (0..15)
            .map(|k| {
                (
                    t0 + 20_000 * k as i64,
                    audit_event(60_000 + seed + k, k % 2 == 0),
                )
            })
            .collect()
    });
    let units: Vec<Unit> = expected.keys().cloned().collect();
    let shard_of_unit: BTreeMap<Unit, u32> = units
        .iter()
        .map(|u| (u.clone(), shard_of(&unit_key(u), SHARDS)))
        .collect();
    let args = |i: u32| {
        let mut cmd = poll_fleet(
            &moto().endpoint,
            &accounts,
            &[
                "--start",
                &rfc(t0 - 1000),
                "--lag",
                "0s",
                "--overlap",
                "60s",
                "--step-span",
                "30s",
                "--attempt-timeout",
                "1s",
                "--lease",
                "12s",
                "--allow-idle",
                "--shard",
                &format!("{i}/{SHARDS}"),
            ],
        );
        cmd.args(s3_args(bucket))
            // Widen the protocol's steps so kills land inside them.
            .env("KUBEANON_FAULT", "slow-delivery");
        cmd
    };
    let mut rng = Rng(0x5eed_4b11);
    let mut n = 70_000u64;
    let state_key = |u: &Unit| format!("kubeanon/state/{}.json", unit_key(u).path());
    let states = || -> BTreeMap<Unit, Option<Vec<u8>>> {
        units
            .iter()
            .map(|u| (u.clone(), get(bucket, &state_key(u))))
            .collect()
    };
    let (mut runs, mut rounds, mut kills) = (0, 0, 0);
    // What the kills interrupted: runs that had changed no state yet
    // (starting, discovering, taking leases, reading), runs that had
    // committed steps, runs killed inside a delivery (a pending key left
    // in a state: recorded, the object maybe written, not committed).
    let (mut before_progress, mut inside_delivery) = (0, 0);
    let (mut pending_left, mut pending_written) = (0, 0);
    let mut skips_while_killing = 0;
    // How long a shard's run takes: kill moments are spread over it.
    let mut run_ms: Vec<u64> = vec![1500; SHARDS as usize];
    let mut last_round_start = now_ms();
    while kills < KILLS {
        rounds += 1;
        assert!(rounds <= 20, "only {kills} kills in {} rounds", rounds - 1);
        // New events: one anonymous on time, one anonymous late (before
        // where the last round read to, inside the overlap), one normal.
        if rounds > 1 {
            let now = now_ms();
            for (unit, events) in expected.iter_mut() {
                let fresh = vec![
                    (now - 200, audit_event(n, true)),
                    (
                        last_round_start - 1000 - rng.below(15_000) as i64,
                        audit_event(n + 1, true),
                    ),
                    (now - 100, audit_event(n + 2, false)),
                ];
                n += 3;
                add_events(&unit.0, &unit.1, &unit.2, &fresh);
                events.extend(fresh);
            }
        }
        let before = states();
        last_round_start = now_ms();
        let mut running: Vec<(Running, Instant)> = (0..SHARDS)
            .map(|i| {
                let r = start(&mut args(i));
                let at = r.began + Duration::from_millis(rng.below(run_ms[i as usize] * 13 / 10));
                (r, at)
            })
            .collect();
        // Each run is killed at its moment, unless it ended before.
        let mut killed = vec![false; SHARDS as usize];
        let mut ended: Vec<Option<Duration>> = vec![None; SHARDS as usize];
        loop {
            let mut waiting = false;
            for (i, (r, at)) in running.iter_mut().enumerate() {
                if killed[i] || ended[i].is_some() {
                    continue;
                }
                if !r.running() {
                    ended[i] = Some(r.began.elapsed());
                } else if Instant::now() >= *at {
                    killed[i] = r.kill();
                    if !killed[i] {
                        ended[i] = Some(r.began.elapsed());
                    }
                } else {
                    waiting = true;
                }
            }
            if !waiting {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for (i, (r, _)) in running.into_iter().enumerate() {
            let out = r.finish(LIMIT);
            runs += 1;
            match ended[i] {
                None => {
                    kills += 1;
                    // Killed before its end: its end is later than thought.
                    run_ms[i] = run_ms[i] * 5 / 4;
                }
                Some(took) => {
                    // A run that was not killed ends well: no unit failed.
                    assert_clean(&out, &format!("round {rounds}, shard {i}"));
                    skips_while_killing += skip_notes(&out).len();
                    run_ms[i] = (took.as_millis() as u64).max(200);
                }
            }
        }
        // Where each kill left its shard's units.
        let after = states();
        for i in (0..SHARDS).filter(|&i| killed[i as usize]) {
            let mine: Vec<&Unit> = units.iter().filter(|u| shard_of_unit[*u] == i).collect();
            if mine.iter().all(|u| before[*u] == after[*u]) {
                before_progress += 1;
            }
            let mut left = 0;
            for u in mine {
                let was = before[u].as_deref().and_then(pending_key);
                if let Some(key) = after[u].as_deref().and_then(pending_key)
                    && Some(&key) != was.as_ref()
                {
                    left += 1;
                    if get(bucket, &key).is_some() {
                        pending_written += 1;
                    }
                }
            }
            pending_left += left;
            if left > 0 {
                inside_delivery += 1;
            }
        }
        // The leases of killed runs expire (12 s, and S3's clock read to
        // the second) before the next round.
        std::thread::sleep(Duration::from_millis(14_000));
    }
    // One clean round: everything settled, nothing skipped.
    let now = now_ms();
    for (unit, events) in expected.iter_mut() {
        let fresh = vec![(now - 200, audit_event(n, true))];
        n += 1;
        add_events(&unit.0, &unit.1, &unit.2, &fresh);
        events.extend(fresh);
    }
    let running: Vec<Running> = (0..SHARDS).map(|i| start(&mut args(i))).collect();
    let mut summed_units = 0;
    for (i, r) in running.into_iter().enumerate() {
        let out = r.finish(LIMIT);
        assert_clean(&out, &format!("the clean round, shard {i}"));
        assert!(skip_notes(&out).is_empty(), "{}", stderr(&out));
        summed_units += summary_count(&out, "log");
    }
    assert_eq!(summed_units, units.len() as u64);
    for u in &units {
        let state = get(bucket, &state_key(u)).unwrap_or_else(|| panic!("{u:?}: no state"));
        assert_eq!(pending_key(&state), None, "{u:?}: still pending");
    }

    let objects = deliveries(bucket);
    let got = all_rows(&objects);
    let (_, repeated) = ids(&got);
    assert_eq!(repeated, 0, "a row delivered twice");
    let anonymous: u64 = expected
        .values()
        .flatten()
        .filter(|(_, m)| m.contains("system:anonymous"))
        .count() as u64;
    assert_eq!(count(&got), anonymous, "every matched event exactly once");
    let plain = ok(poll_fleet(
        &moto().endpoint,
        &accounts,
        &[
            "--start",
            &rfc(t0 - 1000),
            "--lag",
            "0s",
            "--format",
            "ndjson",
        ],
    )
    .output()
    .unwrap());
    let plain_rows = rows(&plain.stdout);
    assert_eq!(count(&plain_rows), anonymous);
    assert_eq!(unit_totals(&got), unit_totals(&plain_rows));
    for (u, events) in &expected {
        assert_eq!(unit_totals(&got)[u], scan(events), "{u:?}");
    }
    assert!(kills >= KILLS);
    // Kills did land inside the protocol, on both sides of the object's
    // write: the exactly-once above was tested where it is hard.
    assert!(
        pending_written >= 1 && pending_left > pending_written,
        "{pending_left} deliveries left pending, {pending_written} with the object written"
    );
    eprintln!(
        "kill -9 of {SHARDS} shards over {} units: {runs} runs in {rounds} rounds, {kills} killed with SIGKILL \
         ({before_progress} before changing any state, {inside_delivery} inside a delivery: {pending_left} deliveries \
         left pending, {pending_written} of them with the object written), {skips_while_killing} units skipped by runs \
         not killed; then a clean round: {} objects, {} rows, {} matched events, each delivered exactly once; {:.0} s",
        units.len(),
        objects.len(),
        got.len(),
        count(&got),
        test_began.elapsed().as_secs_f64()
    );
}

#[test]
fn a_state_changed_between_read_and_write_is_never_overwritten_by_poll() {
    let account = "200000000031";
    let bucket = "kubeanon-scale-race";
    make_bucket(bucket);
    let clusters = [
        cluster("race-a", true, 80_000, 2),
        cluster("race-b", true, 80_100, 2),
    ];
    build(account, REGION, &clusters, &[]);
    let poll_two = |endpoint: &str| {
        let mut cmd = kubeanon(
            endpoint,
            &[
                "poll",
                "--cluster",
                "race-a",
                "--cluster",
                "race-b",
                "--role-arn",
                &role(account),
                "--region",
                REGION,
                "--since",
                "30m",
                "--lag",
                "0s",
            ],
        );
        cmd.args(s3_args(bucket));
        cmd
    };
    let first = poll_two(&moto().endpoint).output().unwrap();
    assert_clean(&first, "first run");
    let before = deliveries(bucket);
    assert_eq!(before.len(), 2, "one object per cluster");
    // New events for both; then the next run, whose first write of
    // race-a's state is held at the proxy while another writer replaces
    // that state at S3.
    for (c, seed) in [("race-a", 80_200), ("race-b", 80_300)] {
        add_events(
            account,
            REGION,
            c,
            &[(now_ms() - 1000, audit_event(seed, true))],
        );
    }
    let key = format!(
        "kubeanon/state/{}.json",
        WorkUnit::new(account, REGION, "/aws/eks/race-a/cluster")
            .unwrap()
            .path()
    );
    let read_before = get(bucket, &key).expect("race-a's state");
    let theirs: Vec<u8> = [read_before.as_slice(), b"\n"].concat();
    let proxy = Proxy::start(&moto().endpoint);
    let raced = Arc::new(Mutex::new(0));
    let (r, k, t, b) = (
        raced.clone(),
        key.clone(),
        theirs.clone(),
        bucket.to_string(),
    );
    proxy.set_rest_plan(move |_, target| {
        if target.starts_with(&format!("PUT /{b}/kubeanon/state/"))
            && target.contains("race-a")
            && *r.lock().unwrap() == 0
        {
            *r.lock().unwrap() += 1;
            let (k, t, b) = (k.clone(), t.clone(), b.clone());
            std::thread::spawn(move || {
                rt().block_on(async {
                    s3().await
                        .put_object()
                        .bucket(&b)
                        .key(&k)
                        .body(t.into())
                        .send()
                        .await
                        .expect("the other writer's put")
                })
            })
            .join()
            .unwrap();
        }
        Fault::Forward
    });
    let out = poll_two(&proxy.endpoint).output().unwrap();
    let err = stderr(&out);
    assert_eq!(*raced.lock().unwrap(), 1, "the other writer ran: {err}");
    // race-a failed, race-b was delivered: exit 4.
    assert_eq!(out.status.code(), Some(4), "{err}");
    let failed: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(failed.len(), 1, "{err}");
    assert!(
        failed[0].contains("race-a") && failed[0].contains("another run"),
        "{err}"
    );
    assert!(
        err.contains("1 failed; 1 of 2 log groups was delivered"),
        "{err}"
    );
    // The other writer's bytes stand.
    assert_eq!(
        get(bucket, &key).unwrap(),
        theirs,
        "the state was overwritten"
    );
    let state_puts: Vec<String> = puts_under(&proxy, bucket, "kubeanon/state/")
        .into_iter()
        .filter(|p| p.contains("race-a"))
        .collect();
    assert_eq!(
        state_puts.len(),
        1,
        "refused once, not retried: {state_puts:?}"
    );
    // Nothing new for race-a (it stopped before delivering); race-b's new
    // event in one new object.
    let after = deliveries(bucket);
    let new: Vec<&Object> = after
        .iter()
        .filter(|o| !before.iter().any(|b| b.key == o.key))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "{:?}",
        new.iter().map(|o| &o.key).collect::<Vec<_>>()
    );
    assert_eq!(new[0].unit.2, "race-b");
    assert_eq!(count(&new[0].rows), 1);
    eprintln!("the lost race: {}", failed[0]);
}

#[test]
fn s3_flags_go_together_and_a_lease_too_short_is_refused() {
    let endpoint = closed_endpoint();
    let run_with = |extra: &[&str]| {
        let mut cmd = kubeanon(
            &endpoint,
            &["poll", "--cluster", "c", "--attempt-timeout", "1s"],
        );
        cmd.args(extra).output().unwrap()
    };
    let usage = |extra: &[&str], says: &[&str]| {
        let out = run_with(extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        for s in says {
            assert!(
                stderr(&out).contains(s),
                "{extra:?}: {s:?} not in {}",
                stderr(&out)
            );
        }
    };
    let s3 = [
        "--checkpoint",
        "s3://kubeanon-flags/kubeanon/",
        "--deliver",
        "s3://kubeanon-flags/findings/",
    ];
    usage(&s3[2..], &["--deliver", "--checkpoint"]);
    usage(&s3[..2], &["--deliver"]);
    usage(
        &[
            "--checkpoint",
            "/tmp/kubeanon-flags.json",
            "--deliver",
            "s3://kubeanon-flags/findings/",
        ],
        &["--deliver"],
    );
    usage(
        &[&s3[..], &["-o", "/tmp/kubeanon-flags.ndjson"]].concat(),
        &["--deliver"],
    );
    usage(
        &[&s3[..], &["--append", "/tmp/kubeanon-flags.ndjson"]].concat(),
        &["--deliver"],
    );
    usage(&["--shard", "4/4"], &["--shard"]);
    let out = run_with(&["--shard", "0/2"]);
    assert_fails_with(&out, &["cannot connect to", &endpoint]);

    // The lease: 12 s is the shortest with 1 s attempts (2 x (2 s + 3 x
    // 1 s + 1 s)). 11 s is refused as a usage error before anything is
    // reached (a closed endpoint, then a real bucket); 12 s goes on to read
    // (and fails on the log group that does not exist).
    let bucket = "kubeanon-scale-flags";
    make_bucket(bucket);
    let lease = |lease: &str| {
        kubeanon(
            &moto().endpoint,
            &[
                "poll",
                "--log-group",
                "/aws/eks/kubeanon-scale-flags-none/cluster",
                "--attempt-timeout",
                "1s",
                "--shard",
                "0/1",
                "--lease",
                lease,
            ],
        )
        .args(s3_args(bucket))
        .output()
        .unwrap()
    };
    let offline = kubeanon(
        &closed_endpoint(),
        &[
            "poll",
            "--cluster",
            "x",
            "--attempt-timeout",
            "1s",
            "--lease",
            "11s",
        ],
    )
    .args(s3_args(bucket))
    .output()
    .unwrap();
    assert_eq!(offline.status.code(), Some(2), "{}", stderr(&offline));
    assert!(
        stderr(&offline).contains("at least 12s"),
        "{}",
        stderr(&offline)
    );
    let short = lease("11s");
    assert_eq!(short.status.code(), Some(2), "{}", stderr(&short));
    assert!(
        stderr(&short).contains("--lease") && stderr(&short).contains("at least 12s"),
        "{}",
        stderr(&short)
    );
    let enough = lease("12s");
    assert_eq!(enough.status.code(), Some(1), "{}", stderr(&enough));
    assert!(
        !stderr(&enough).contains("--lease") && stderr(&enough).contains("does not exist"),
        "{}",
        stderr(&enough)
    );
}
