//! Faults injected between the real `kubeanon` binary and a real CloudWatch
//! Logs API (moto's server, through the fault proxy in tests/support):
//! throttling storms, 5xx, dropped connections, timeouts, a retry budget
//! running out, kill -9 at random moments, concurrent runs, full disks.
//! Every test compares against a clean run over the same events.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::proxy::{Fault, Proxy};
use support::*;

/// `kubeanon poll` through `proxy` instead of straight to moto.
fn poll_via(proxy: &Proxy, group: &str) -> Command {
    poll_at(&proxy.endpoint, group)
}

/// A small deterministic PRNG (xorshift64*), so failures replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A group with `n` events over the last 20 minutes, every fourth anonymous.
fn group_with_events(name: &str, n: u64) -> (String, i64) {
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM]);
    let base = now_ms() - 20 * 60_000;
    let events: Vec<(i64, String)> = (0..n)
        .map(|i| (base + i as i64 * 100, audit_event(i, i % 4 == 0)))
        .collect();
    put(&group, AUDIT_STREAM, &events);
    (group, base)
}

/// `--start`/`--end` from `base` to now, and the rows of a clean run (no
/// proxy) over that window with these extra arguments.
fn window_and_clean(
    group: &str,
    base: i64,
    extra: &[&str],
) -> ([String; 4], Vec<serde_json::Value>) {
    let window = [
        "--start".to_string(),
        rfc(base),
        "--end".to_string(),
        rfc(now_ms()),
    ];
    let clean = rows(&run(poll(group).args(&window).args(extra)).stdout);
    (window, clean)
}

fn ids(rows: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn throttling_storm_gives_exact_results_within_the_rate_limit() {
    let (group, base) = group_with_events("storm", 80);
    let (window, clean) = window_and_clean(&group, base, &["--page-size", "4"]);
    assert_eq!(clean.len(), 20);

    let proxy = Proxy::start(&moto().endpoint);
    let mut rng = Rng(7);
    // Half of the first 40 calls throttled, then calm.
    proxy.set_plan(move |i, _| {
        if i < 40 && rng.below(2) == 0 {
            Fault::Throttle
        } else {
            Fault::Forward
        }
    });
    let out = ok(poll_via(&proxy, &group)
        .args(&window)
        .args(["--page-size", "4", "--max-rps", "8", "--max-attempts", "12"])
        .output()
        .unwrap());
    let stormy = rows(&out.stdout);
    assert_eq!(
        totals(&stormy),
        totals(&clean),
        "nothing lost, nothing doubled"
    );
    assert_eq!(ids(&stormy), ids(&clean), "same events in the same rows");
    let reqs = proxy.requests();
    let throttled = reqs.iter().filter(|r| r.fault == Fault::Throttle).count() as u64;
    assert!(throttled >= 10, "the storm happened: {throttled} throttled");
    assert_eq!(summary_number(&out.stderr, "throttled)"), throttled);
    let max = proxy.max_per_second();
    eprintln!(
        "throttling storm: {} calls, {throttled} throttled, at most {max} in any second (limit 8)",
        reqs.len()
    );
    assert!(
        max <= 8,
        "at most --max-rps requests in any one-second window, saw {max}"
    );
}

#[test]
fn server_errors_dropped_connections_and_timeouts_lose_nothing() {
    let (group, base) = group_with_events("flaky", 60);
    let (window, clean) = window_and_clean(&group, base, &[]);
    let proxy = Proxy::start(&moto().endpoint);
    let mut rng = Rng(11);
    proxy.set_plan(move |_, _| match rng.below(8) {
        0 => Fault::Status(500),
        1 => Fault::Status(503),
        2 => Fault::CutResponse,
        3 => Fault::Delay(Duration::from_millis(2500)),
        _ => Fault::Forward,
    });
    let out = ok(poll_via(&proxy, &group)
        .args(&window)
        .args([
            "--page-size",
            "3",
            "--max-attempts",
            "20",
            "--attempt-timeout",
            "1s",
            "--max-rps",
            "50",
        ])
        .output()
        .unwrap());
    let faults: Vec<Fault> = proxy
        .requests()
        .iter()
        .map(|r| r.fault)
        .filter(|f| *f != Fault::Forward)
        .collect();
    assert!(faults.len() >= 5, "faults were injected: {faults:?}");
    assert_eq!(totals(&rows(&out.stdout)), totals(&clean));
    assert_eq!(ids(&rows(&out.stdout)), ids(&clean));
}

#[test]
fn connections_closed_before_the_answer_are_retried_and_lose_nothing() {
    let (group, base) = group_with_events("dropped", 200);
    let (window, clean) = window_and_clean(&group, base, &["--page-size", "3"]);
    let proxy = Proxy::start(&moto().endpoint);
    let mut rng = Rng(23);
    // About one connection in twenty is dropped before the answer.
    proxy.set_plan(move |_, _| {
        if rng.below(20) == 0 {
            Fault::CloseBeforeAnswer
        } else {
            Fault::Forward
        }
    });
    let out = ok(poll_via(&proxy, &group)
        .args(&window)
        .args(["--page-size", "3", "--max-rps", "100"])
        .output()
        .unwrap());
    let requests = proxy.requests();
    let dropped = requests
        .iter()
        .filter(|r| r.fault == Fault::CloseBeforeAnswer)
        .count();
    eprintln!(
        "dropped {dropped} of {} connections before the answer",
        requests.len()
    );
    assert!(dropped >= 2, "the faults happened: {dropped}");
    assert_eq!(summary_number(&out.stderr, "retried"), dropped as u64);
    assert_eq!(totals(&rows(&out.stdout)), totals(&clean));
    assert_eq!(ids(&rows(&out.stdout)), ids(&clean));
}

#[test]
fn a_page_failing_past_the_budget_fails_the_run_and_keeps_the_checkpoint() {
    let (group, _) = group_with_events("budget", 20);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    ok(poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .output()
        .unwrap());
    let before = std::fs::read(&cp).unwrap();
    put(
        &group,
        AUDIT_STREAM,
        &(0..5)
            .map(|i| (now_ms() - 5 * 60_000 + i, audit_event(500 + i as u64, true)))
            .collect::<Vec<_>>(),
    );

    let proxy = Proxy::start(&moto().endpoint);
    proxy.set_plan(|i, _| {
        if i >= 1 {
            Fault::Status(500)
        } else {
            Fault::Forward
        }
    });
    let out = poll_via(&proxy, &group)
        .args(["--page-size", "2", "--max-attempts", "3"])
        .arg("--checkpoint")
        .arg(&cp)
        .output()
        .unwrap();
    assert_fails_with(&out, &["failed after 3 attempt(s)"]);
    assert!(out.stdout.is_empty(), "no partial findings");
    assert_eq!(std::fs::read(&cp).unwrap(), before, "checkpoint untouched");
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.target.ends_with("FilterLogEvents"))
            .count(),
        4,
        "one good page, then three attempts"
    );
    // The next healthy run picks the event up.
    let next = ok(poll(&group).arg("--checkpoint").arg(&cp).output().unwrap());
    assert_eq!(
        rows(&next.stdout).len(),
        5,
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
}

/// Runs a checkpointed schedule, killing runs with SIGKILL at random
/// moments, with new (and late) events written between runs. Returns the
/// rows delivered (from the append file, or every run's stdout), the group,
/// its start, how many runs were killed and how many anonymous events were
/// written.
fn schedule_with_kills(
    name: &str,
    append: bool,
    kills_wanted: usize,
) -> (Vec<serde_json::Value>, String, i64, usize, u64) {
    require_test_hooks();
    let group = format!("/aws/eks/{name}/cluster");
    create(&group, &[AUDIT_STREAM]);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let file = dir.path().join("findings.ndjson");
    let start = now_ms() - 60_000;
    let mut rng = Rng(if append { 1234 } else { 5678 });
    let mut stdout_rows = Vec::new();
    let mut written = 0u64;
    let mut n = 1000;
    let mut killed = 0;
    let args = |cmd: &mut Command| {
        cmd.args([
            "--start",
            &rfc(start),
            "--lag",
            "0s",
            "--overlap",
            "60s",
            "--page-size",
            "10",
            "-q",
            // The group starts empty: blindness is not what this tests.
            "--allow-idle",
        ])
        // Widen the delivery steps so random kills land inside them too.
        .env("KUBEANON_FAULT", "slow-delivery")
        .arg("--checkpoint")
        .arg(&cp);
        if append {
            cmd.arg("--append").arg(&file);
        }
    };
    // A first, timed run: kill moments are spread over a run's length.
    let timer = Instant::now();
    let mut cmd = poll(&group);
    args(&mut cmd);
    ok(cmd.output().unwrap());
    let mut run_ms = (timer.elapsed().as_millis() as u64).max(20);
    let mut late_kills = 0;
    let mut runs = 0;
    while killed < kills_wanted {
        runs += 1;
        assert!(
            runs < kills_wanted * 4,
            "too few runs were killed: {killed} of {runs}"
        );
        // New events: one on time, one late (before the last watermark).
        let now = now_ms();
        let fresh = vec![
            (now - 200, audit_event(n, true)),
            (
                now - 3_000 - rng.below(20_000) as i64,
                audit_event(n + 1, true),
            ),
        ];
        n += 2;
        written += 2;
        put(&group, AUDIT_STREAM, &fresh);
        let mut cmd = poll(&group);
        args(&mut cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Up to 1.5 run lengths: most runs die somewhere inside, some
        // finish and update the estimate of how long a run takes.
        let began = Instant::now();
        let deadline = began + Duration::from_millis(rng.below(run_ms * 3 / 2));
        let mut was_killed = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            was_killed = true;
        }
        let out = child.wait_with_output().unwrap();
        if was_killed {
            // Runs grow as events pile up in the overlap: stretch the
            // estimate until some finish again.
            run_ms = run_ms * 11 / 10;
        } else {
            run_ms = (began.elapsed().as_millis() as u64).max(20);
        }
        if was_killed {
            killed += 1;
            // Killed after the findings were out (or recorded as pending)?
            let pending = cp.with_file_name("cp.json.journal").exists();
            if !out.stdout.is_empty() || pending {
                late_kills += 1;
            }
        }
        // A killed run's stdout may end in a cut line: keep whole lines.
        let text = String::from_utf8_lossy(&out.stdout);
        stdout_rows.extend(
            text.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A last, clean run of the schedule.
    let mut cmd = poll(&group);
    args(&mut cmd);
    let out = ok(cmd.output().unwrap());
    stdout_rows.extend(rows(&out.stdout));
    let delivered = if append {
        rows(&std::fs::read(&file).unwrap())
    } else {
        stdout_rows
    };
    eprintln!(
        "{name}: {runs} runs of ~{run_ms} ms, {killed} killed with SIGKILL ({late_kills} during delivery), {written} anonymous events"
    );
    (delivered, group, start, killed, written)
}

#[test]
fn kill_9_at_random_moments_with_append_loses_and_doubles_nothing() {
    let (delivered, group, start, killed, written) = schedule_with_kills("kill-append", true, 50);
    assert!(killed >= 50);
    let clean = rows(
        &ok(poll(&group)
            .args(["--start", &rfc(start), "--lag", "0s"])
            .output()
            .unwrap())
        .stdout,
    );
    assert_eq!(
        clean
            .iter()
            .map(|r| r["count"].as_u64().unwrap())
            .sum::<u64>(),
        written
    );
    assert_eq!(totals(&delivered), totals(&clean), "exactly once");
}

#[test]
fn kill_9_at_random_moments_to_stdout_loses_nothing_and_repeats_known_ids() {
    let (delivered, group, start, killed, _) = schedule_with_kills("kill-stdout", false, 50);
    assert!(killed >= 50);
    let clean = rows(
        &ok(poll(&group)
            .args(["--start", &rfc(start), "--lag", "0s"])
            .output()
            .unwrap())
        .stdout,
    );
    // At least once: keep the first row of each id; repeats carry a known id.
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    let mut repeats = 0;
    for r in delivered {
        if seen.insert(r["id"].as_str().unwrap().to_string()) {
            unique.push(r);
        } else {
            repeats += 1;
        }
    }
    eprintln!("kill-stdout: {repeats} repeated rows, all with a known id");
    assert_eq!(
        totals(&unique),
        totals(&clean),
        "nothing lost, and dropping repeats by id leaves no double count"
    );
}

#[test]
fn two_runs_on_one_checkpoint_one_proceeds_the_other_touches_nothing() {
    let (group, _) = group_with_events("concurrent", 40);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let proxy = Proxy::start(&moto().endpoint);
    proxy.set_plan(|_, _| Fault::Delay(Duration::from_millis(150)));
    let first = poll_via(&proxy, &group)
        .args(["--since", "30m", "--page-size", "5"])
        .arg("--checkpoint")
        .arg(&cp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let second = poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .output()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    assert_fails_with(&second, &["another kubeanon run"]);
    assert!(second.stdout.is_empty());
    assert_eq!(
        rows(&first.stdout).len(),
        10,
        "the first run reported everything: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    // The first run's state: its window's end, and no remembered ids (its
    // events are older than the next run's overlap).
    assert_eq!(state["groups"][0]["log_group"], group.as_str());
    assert!(state["groups"][0]["watermark_ms"].as_i64().unwrap() > now_ms() - 5 * 60_000);
}

/// A tmpfs of `size` mounted on a temp dir (root only); unmounted on drop.
struct Tmpfs(tempfile::TempDir);
impl Tmpfs {
    fn mount(opts: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?
            .success();
        ok.then_some(Tmpfs(dir))
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_output_and_checkpoint_intact() {
    let (group, _) = group_with_events("fulldisk", 40);
    let Some(fs) = Tmpfs::mount("size=64k") else {
        panic!("mounting a tmpfs needs root, which CI has; run the tests as root");
    };
    let state_dir = tempfile::tempdir().unwrap();
    let cp = state_dir.path().join("cp.json");
    let out_file = fs.path().join("findings.json");
    std::fs::write(&out_file, "previous findings\n").unwrap();
    // Fill the disk.
    let filler = vec![b'x'; 4096];
    let mut f = std::fs::File::create(fs.path().join("filler")).unwrap();
    while std::io::Write::write_all(&mut f, &filler).is_ok() {}
    drop(f);

    // --output FILE on a full disk.
    let out = poll(&group)
        .args(["--since", "30m", "--format", "json"])
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--output")
        .arg(&out_file)
        .output()
        .unwrap();
    assert_fails_with(&out, &["findings.json", "No space left"]);
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "previous findings\n"
    );
    assert!(!cp.exists(), "the checkpoint did not advance");

    // --append FILE on a full disk: rolled back, checkpoint as before.
    ok(poll(&group)
        .args(["--since", "30m", "--end", "15m"])
        .arg("--checkpoint")
        .arg(&cp)
        .output()
        .unwrap());
    put(
        &group,
        AUDIT_STREAM,
        &[(now_ms() - 5 * 60_000, audit_event(600, true))],
    );
    let cp_before = std::fs::read(&cp).unwrap();
    let append_file = fs.path().join("findings.ndjson");
    let out = poll(&group)
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--append")
        .arg(&append_file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"));
    assert_eq!(
        std::fs::metadata(&append_file)
            .map(|m| m.len())
            .unwrap_or(0),
        0,
        "no partial rows"
    );
    // The entries as before the run: the watermark did not move. (The
    // file may now record the append as pending, which the next run
    // settles by looking at the file.)
    let groups = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes).unwrap()["groups"].clone()
    };
    assert_eq!(
        groups(&std::fs::read(&cp).unwrap()),
        groups(&cp_before),
        "checkpoint entries as before the run"
    );

    // Space again: the next run delivers.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    ok(poll(&group)
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--append")
        .arg(&append_file)
        .output()
        .unwrap());
    assert!(!rows(&std::fs::read(&append_file).unwrap()).is_empty());
}

#[test]
fn output_into_a_missing_or_read_only_directory_fails_clearly() {
    let (group, _) = group_with_events("badpath", 8);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    let missing = dir.path().join("no/such/dir/out.ndjson");
    let out = poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--output")
        .arg(&missing)
        .output()
        .unwrap();
    assert_fails_with(&out, &["no/such/dir"]);
    assert!(!cp.exists());

    let ro =
        Tmpfs::mount("size=64k,ro").expect("mount a read-only tmpfs (needs root, which CI has)");
    let target = ro.path().join("out.ndjson");
    let out = poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--output")
        .arg(&target)
        .output()
        .unwrap();
    assert_fails_with(&out, &["Read-only file system"]);
    assert!(!cp.exists());
}

#[test]
fn a_corrupt_checkpoint_stops_the_run_with_recovery_advice() {
    let (group, _) = group_with_events("corrupt", 8);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.json");
    ok(poll(&group)
        .args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .output()
        .unwrap());
    let good = std::fs::read(&cp).unwrap();
    for bad in [
        &good[..good.len() / 2],
        b"{\"version\":9,\"groups\":[]}".as_slice(),
        b"{\"version\":1,\"groups\":[{\"region\":1}]}".as_slice(),
    ] {
        std::fs::write(&cp, bad).unwrap();
        let out = poll(&group).arg("--checkpoint").arg(&cp).output().unwrap();
        assert_fails_with(&out, &["cp.json", "to recover"]);
        assert!(out.stdout.is_empty());
        assert_eq!(std::fs::read(&cp).unwrap(), bad, "left as found");
    }
}
