//! The table for people (issue 22): the columns that fit the width, long
//! values cut with `…`, no line wider than the width, rows worst first;
//! `--wide` for every column uncut. The expected tables in tests/fixtures
//! (table-*.txt) were checked line by line against the sample's rows and
//! those rules (see tests/fixtures/SOURCES.md), not pasted from a run.
//! The width comes from the terminal (stdout's window, else stderr's),
//! then COLUMNS, then 120: tested on a pseudo-terminal whose window is set.

mod support;
mod util;

use std::path::PathBuf;
use std::process::Command;

use util::{COLUMNS, TRIAGE, kubeanon};

const SAMPLE: &str = "examples/eks-audit-sample.jsonl";

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SAMPLE)
}

fn expected(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// `kubeanon scan SAMPLE -q --format table ARGS` with COLUMNS set to
/// `columns` (or unset), stdout a pipe: its stdout.
fn table(args: &[&str], columns: Option<&str>) -> String {
    let mut cmd = kubeanon();
    cmd.args(["scan", "-q", "--format", "table"])
        .args(args)
        .arg(sample());
    match columns {
        Some(c) => cmd.env("COLUMNS", c),
        None => cmd.env_remove("COLUMNS"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// No line wider than `width` characters.
fn fits(text: &str, width: usize) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= width,
            "{} chars: {line:?}",
            line.chars().count()
        );
    }
}

/// The first data row is the anonymous `list secrets` from
/// 185.220.101.34 (allowed by ClusterRoleBinding/debug-anonymous), the
/// sample's one critical row.
fn critical_first(text: &str) {
    let first = text.lines().nth(1).expect("a row");
    let words: Vec<&str> = first.split_whitespace().collect();
    for word in ["critical", "185.220.101.34", "list"] {
        assert!(words.contains(&word), "{word} not in {first}");
    }
    let others = text.lines().skip(2);
    assert!(
        others
            .clone()
            .all(|l| !l.split_whitespace().any(|w| w == "critical")),
        "{text}"
    );
}

#[test]
fn the_sample_at_80_and_120_columns() {
    for (args, columns, fixture) in [
        (&[][..], 80, "table-80.txt"),
        (&[], 120, "table-120.txt"),
        (&["--rules", "escu"], 80, "table-escu-80.txt"),
        (&["--rules", "escu"], 120, "table-escu-120.txt"),
        (&["--rollup"], 80, "table-rollup-80.txt"),
    ] {
        let text = table(args, Some(&columns.to_string()));
        assert_eq!(text, expected(fixture), "{fixture}");
        fits(&text, columns);
        critical_first(&text);
    }
}

#[test]
fn without_a_terminal_or_columns_the_width_is_120() {
    let want = expected("table-120.txt");
    assert_eq!(table(&[], None), want);
    for columns in ["", "0", "wide", "-5"] {
        assert_eq!(table(&[], Some(columns)), want, "COLUMNS={columns:?}");
    }
}

#[test]
fn wider_terminals_add_rule_and_binding_then_values_grow() {
    let text = table(&[], Some("200"));
    fits(&text, 200);
    critical_first(&text);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "severity",
            "last seen",
            "source",
            "verb",
            "path",
            "code",
            "count",
            "user agent",
            "rule",
            "binding"
        ]
    );
    let first = text.lines().nth(1).unwrap();
    assert!(
        first.ends_with("  ClusterRoleBinding/debug-anonymous"),
        "{first}"
    );
    // Narrower than the core columns: every line is cut to the width.
    let text = table(&[], Some("50"));
    fits(&text, 50);
    assert!(text.lines().skip(1).all(|l| l.ends_with('…')), "{text}");
}

#[test]
fn wide_shows_every_column_of_the_machine_formats_uncut() {
    for rollup in [&[][..], &["--rollup"]] {
        let out = kubeanon()
            .args(["scan", "-q", "--format", "csv"])
            .args(rollup)
            .arg(sample())
            .output()
            .unwrap();
        let csv = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let text = table(&[&["--wide"][..], rollup].concat(), Some("80"));
        let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, names);
        critical_first(&text);
        // Nothing cut, whatever the width: every user agent and path
        // whole (the sample's have no character the table escapes).
        assert!(!text.contains('…'), "{text}");
        let mut rows = csv::Reader::from_reader(csv.as_bytes());
        let at = |name| names.iter().position(|n| *n == name).unwrap();
        for row in rows.records() {
            let row = row.unwrap();
            for name in ["userAgent", "requestURI", "reason"] {
                assert!(text.contains(&row[at(name)]), "{}", &row[at(name)]);
            }
        }
    }
    let names: Vec<&str> = COLUMNS.iter().chain(&TRIAGE).copied().collect();
    let text = table(&["--wide"], None);
    let header = text.lines().next().unwrap();
    for name in names {
        assert!(header.contains(name), "{name}");
    }
}

#[test]
fn machine_formats_keep_their_order_whatever_the_width() {
    for format in ["ndjson", "csv", "json", "ocsf"] {
        let run = |columns: &str| {
            kubeanon()
                .env("COLUMNS", columns)
                .env("KUBEANON_TEST_NOW", "2025-03-14T01:00:00Z")
                .args(["scan", "-q", "--format", format])
                .arg(sample())
                .output()
                .unwrap()
                .stdout
        };
        assert_eq!(run("80"), run("400"), "{format}");
    }
    // The rows as read: the first is the sample's first finding, a low
    // /livez probe, not the critical row the table puts first.
    let out = kubeanon()
        .args(["scan", "-q", "--format", "ndjson"])
        .arg(sample())
        .output()
        .unwrap();
    let first = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(first["requestURI"], "/livez");
    assert_eq!(first["severity"], "low");
}

/// Runs `kubeanon ARGS` on a pseudo-terminal whose window is `columns`
/// wide, with COLUMNS=300; with `stdout_to_file`, stdout goes to a file
/// and only stderr is the terminal. Returns what stdout got, line ends
/// as `\n`.
fn on_a_window(columns: u16, stdout_to_file: bool, args: &[&str]) -> String {
    let script = "import fcntl, os, pty, struct, sys, termios\n\
                  cols, to_file, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]\n\
                  pid, fd = pty.fork()\n\
                  if pid == 0:\n    \
                      fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack('HHHH', 40, cols, 0, 0))\n    \
                      if to_file:\n        \
                          f = os.open(to_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n        \
                          os.dup2(f, 1)\n    \
                      os.execv(argv[0], argv)\n\
                  out = b''\n\
                  while True:\n    \
                      try:\n        \
                          chunk = os.read(fd, 65536)\n    \
                      except OSError:\n        \
                          break\n    \
                      if not chunk:\n        \
                          break\n    \
                      out += chunk\n\
                  _, status = os.waitpid(pid, 0)\n\
                  sys.stdout.buffer.write(out)\n\
                  sys.exit(os.waitstatus_to_exitcode(status))";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stdout");
    let out = Command::new(support::python())
        .arg("-c")
        .arg(script)
        .arg(columns.to_string())
        .arg(if stdout_to_file {
            file.to_str().unwrap()
        } else {
            ""
        })
        .arg(env!("CARGO_BIN_EXE_kubeanon"))
        .args(args)
        .env("COLUMNS", "300")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = if stdout_to_file {
        std::fs::read_to_string(&file).unwrap()
    } else {
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    text.replace("\r\n", "\n")
}

/// `text` without the table's own colour sequences.
fn uncoloured(text: &str) -> String {
    [
        "\u{1b}[0m",
        "\u{1b}[1;31m",
        "\u{1b}[31m",
        "\u{1b}[33m",
        "\u{1b}[36m",
        "\u{1b}[2m",
    ]
    .iter()
    .fold(text.to_string(), |t, sgr| t.replace(sgr, ""))
}

#[test]
fn the_terminal_window_comes_before_columns() {
    let sample = sample();
    let sample = sample.to_str().unwrap();
    // stdout on a 90-column terminal (COLUMNS says 300): coloured, and
    // fitted to 90.
    let shown = on_a_window(90, false, &["scan", "-q", sample]);
    assert!(shown.contains("\u{1b}[1;31mcritical\u{1b}[0m"), "{shown}");
    let plain = uncoloured(&shown);
    assert!(!plain.contains('\u{1b}'), "{shown}");
    fits(&plain, 90);
    critical_first(&plain);
    assert!(plain.lines().any(|l| l.chars().count() > 80), "{plain}");
    // stdout to a file, stderr on a 100-column terminal: the table (as
    // asked for) fits stderr's window, uncoloured.
    let filed = on_a_window(100, true, &["scan", "-q", "--format", "table", sample]);
    assert!(!filed.contains('\u{1b}'), "{filed}");
    fits(&filed, 100);
    critical_first(&filed);
    assert!(filed.lines().any(|l| l.chars().count() > 90), "{filed}");
}
