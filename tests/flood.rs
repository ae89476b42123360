//! A flood of anonymous events, the thing kubeanon exists to catch, in one
//! scheduled run: delivered exactly, in steps, with memory and the
//! checkpoint bounded. `KUBEANON_FLOOD_EVENTS=N` sets the flood's size
//! (default 60,000 in ten minutes); `benches/flood.sh` runs it at several
//! sizes to show memory flat as the flood grows.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

const MIB: u64 = 1 << 20;

#[test]
fn a_flood_is_delivered_exactly_with_bounded_memory_and_checkpoint() {
    let n: u64 = std::env::var("KUBEANON_FLOOD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let group = "/aws/eks/flood/cluster";
    create(group, &[AUDIT_STREAM]);
    // n anonymous events, each its own finding, in one ten-minute window.
    let base = now_ms() - 15 * 60_000;
    let events: Vec<(i64, String)> = (0..n)
        .map(|i| (base + (i * 600_000 / n) as i64, audit_event(i, true)))
        .collect();
    put(group, AUDIT_STREAM, &events);
    let dir = tempfile::tempdir().unwrap();
    let (cp, out) = (dir.path().join("cp.json"), dir.path().join("f.ndjson"));

    // Watch the checkpoint and its commit log (and the append's pending
    // bytes) while the run works.
    let stop = Arc::new(AtomicBool::new(false));
    let (largest_cp, largest_journal) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let largest_pending = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, lc, lj, lp) = (
            stop.clone(),
            largest_cp.clone(),
            largest_journal.clone(),
            largest_pending.clone(),
        );
        let (cp, journal, pending) = (
            cp.clone(),
            dir.path().join("cp.json.commits"),
            dir.path().join("f.ndjson.pending"),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (path, max) in [(&cp, &lc), (&journal, &lj), (&pending, &lp)] {
                    if let Ok(m) = std::fs::metadata(path) {
                        max.fetch_max(m.len(), Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut cmd: Command = poll(group);
    cmd.args(["--since", "30m"])
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--append")
        .arg(&out);
    let began = Instant::now();
    let run = with_peak_rss(&cmd).output().unwrap();
    let seconds = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    let peak_kb: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb "))
        .and_then(|v| v.trim().parse().ok())
        .expect("peak_rss_kb on stderr");

    // Exact: the same rows as `kubeanon scan` over the same events.
    let delivered = rows(&std::fs::read(&out).unwrap());
    let file = dir.path().join("events.jsonl");
    let lines: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let scan = Command::new(env!("CARGO_BIN_EXE_kubeanon"))
        .arg("scan")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(delivered.len() as u64, n);
    assert_eq!(totals(&delivered), totals(&rows(&scan.stdout)));
    let steps = summary_number(&run.stderr, "steps");
    let (cp_max, journal_max) = (
        largest_cp.load(Ordering::Relaxed),
        largest_journal.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {n} matched events in 10 min -> {} rows in {steps} steps, {seconds:.1} s; peak RSS {:.1} MB; largest checkpoint {:.2} MiB, commit log {:.2} MiB",
        delivered.len(),
        peak_kb as f64 / 1000.0,
        cp_max as f64 / MIB as f64,
        journal_max as f64 / MIB as f64
    );
    assert!(steps > 1, "a flood is delivered in steps");
    assert!(cp_max <= 8 * MIB, "checkpoint reached {cp_max} bytes");
    // The commit log holds what the steps changed, and is folded at the
    // end; it was seen (the watcher watches what the run writes).
    assert!(
        journal_max > 0 && journal_max <= 8 * MIB,
        "commit log reached {journal_max} bytes"
    );
    let pending_max = largest_pending.load(Ordering::Relaxed);
    assert!(
        pending_max <= 8 * MIB,
        "pending append reached {pending_max} bytes"
    );
    assert!(peak_kb <= 96_000, "peak RSS {peak_kb} kB");
}
