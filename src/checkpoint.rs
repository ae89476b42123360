//! The poller's checkpoint: where each log group was read up to, and which
//! matched events near that point were already reported.
//!
//! CloudWatch Logs can only be queried by event time and events arrive
//! late, so each run rescans an overlap before the watermark and skips the
//! matched events whose eventIds are remembered here. The file is JSON,
//! versioned, replaced atomically (temporary file, fsync, rename), and
//! guarded by a lock on a sibling `.lock` file for the whole run.
//!
//! For exactly-once delivery to an `--append` file the checkpoint also
//! records a pending delivery (the bytes to append, where, and the state to
//! commit once they are there) before the append. A run that finds a
//! pending delivery completes it first; see [`Pending`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::output;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// One entry per (region, log group) ever polled with this file.
    pub groups: Vec<GroupState>,
    /// A delivery to an append file that may or may not have happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub region: String,
    pub log_group: String,
    /// Everything before this (ms since the epoch) has been read, up to
    /// events that arrive later than the overlap.
    pub watermark_ms: i64,
    /// eventId -> event time (ms) of matched events at or after
    /// `watermark_ms - overlap`, already reported.
    pub seen: BTreeMap<String, i64>,
}

/// A delivery to an append file, recorded before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub file: PathBuf,
    /// File length before the append.
    pub offset: u64,
    /// The exact bytes appended.
    pub data: String,
    /// The group states to commit once the bytes are in the file.
    pub groups: Vec<GroupState>,
}

impl State {
    pub fn new() -> Self {
        State {
            version: VERSION,
            ..Default::default()
        }
    }

    pub fn group(&self, region: &str, log_group: &str) -> Option<&GroupState> {
        self.groups
            .iter()
            .find(|g| g.region == region && g.log_group == log_group)
    }

    /// Replaces (or adds) the states of these groups.
    pub fn update(&mut self, updated: Vec<GroupState>) {
        for g in updated {
            match self
                .groups
                .iter_mut()
                .find(|o| o.region == g.region && o.log_group == g.log_group)
            {
                Some(old) => *old = g,
                None => self.groups.push(g),
            }
        }
    }
}

/// An open checkpoint: its path, the lock held for the run, the state.
pub struct Checkpoint {
    path: PathBuf,
    _lock: File,
    pub state: State,
}

impl Checkpoint {
    /// Takes the lock and reads the file (a missing file is a first run).
    /// A second run on the same checkpoint fails here, touching nothing.
    pub fn open(path: &Path) -> Result<Self> {
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another kubeanon run is using checkpoint {} (lock {} is held); this run did nothing",
                path.display(),
                lock_path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        let state = read(path)?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            _lock: lock,
            state,
        })
    }

    /// Writes the state atomically and durably.
    pub fn save(&self) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.state).expect("checkpoint serialises");
        output::replace(&self.path, |w| w.write_all(json.as_bytes()))
            .with_context(|| format!("cannot save checkpoint {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

fn read(path: &Path) -> Result<State> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read checkpoint {}", path.display()));
        }
    };
    let recover = "to recover, restore it from a backup, or move it aside to start over from --start/--since \
                   (events between then and the lost watermark may be missed or reported again)";
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
    match version {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => bail!(
            "checkpoint {} has version {v}, this kubeanon reads version {VERSION}; {recover}",
            path.display()
        ),
        None => bail!(
            "checkpoint {} is not a kubeanon checkpoint (corrupt or truncated); {recover}",
            path.display()
        ),
    }
    let state: State = serde_json::from_str(&text)
        .with_context(|| format!("checkpoint {} is corrupt; {recover}", path.display()))?;
    if let Some(bad) = state
        .groups
        .iter()
        .find(|g| g.watermark_ms < 0 || g.log_group.is_empty())
    {
        bail!(
            "checkpoint {} is corrupt: bad entry for log group '{}'; {recover}",
            path.display(),
            bad.log_group
        );
    }
    Ok(state)
}

/// What completing a pending delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The bytes were all in the file already.
    AlreadyDelivered,
    /// Part of them was; the rest was appended.
    Completed,
    /// None were; all were appended.
    Delivered,
    /// The file no longer matched (rotated or edited): appended at its end,
    /// so these rows may appear twice.
    AppendedAfterChange,
}

/// Makes sure a pending delivery's bytes are in its file exactly once,
/// appending whatever part is missing, and fsyncs.
pub fn complete_delivery(p: &Pending) -> Result<Recovery> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&p.file)
        .with_context(|| {
            format!(
                "cannot open {} to complete an interrupted delivery",
                p.file.display()
            )
        })?;
    let len = file.metadata()?.len();
    let data = p.data.as_bytes();
    let present = if len < p.offset {
        None
    } else {
        file.seek(SeekFrom::Start(p.offset))?;
        let mut tail = Vec::new();
        Read::by_ref(&mut file)
            .take(data.len() as u64 + 1)
            .read_to_end(&mut tail)?;
        // The tail must be a prefix of our bytes (a cut write) and nothing
        // else may follow it.
        (tail.len() as u64 == len - p.offset && data.starts_with(&tail)).then_some(tail.len())
    };
    let (rest, outcome) = match present {
        Some(n) if n == data.len() => (&data[..0], Recovery::AlreadyDelivered),
        Some(0) => (data, Recovery::Delivered),
        Some(n) => (&data[n..], Recovery::Completed),
        None => (data, Recovery::AppendedAfterChange),
    };
    if !rest.is_empty() {
        if fault_point("mid-append") {
            let _ = file
                .write_all(&rest[..rest.len() / 2])
                .and_then(|()| file.sync_all());
            std::process::abort();
        }
        file.write_all(rest)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot append to {}", p.file.display()))?;
    }
    Ok(outcome)
}

/// Crash-test hook: with `KUBEANON_FAULT=<point>` in the environment the
/// process aborts at that point (callers abort on `true`), as a crash or
/// `kill -9` would. Points: `after-pending`, `mid-append`, `after-output`.
pub fn fault_point(point: &str) -> bool {
    std::env::var_os("KUBEANON_FAULT").is_some_and(|v| v == point)
}

/// Crash-test hook: `KUBEANON_FAULT=slow-delivery` pauses between the
/// steps of a delivery, so that a test killing the process at random
/// moments lands inside them often, not once in a thousand runs.
pub fn fault_pause() {
    if fault_point("slow-delivery") {
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(dir: &Path, offset: u64, data: &str) -> Pending {
        Pending {
            file: dir.join("out.ndjson"),
            offset,
            data: data.into(),
            groups: vec![],
        }
    }

    #[test]
    fn delivery_is_completed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), 4, "row1\nrow2\n");
        // Nothing appended yet.
        std::fs::write(&p.file, "old\n").unwrap();
        assert_eq!(complete_delivery(&p).unwrap(), Recovery::Delivered);
        assert_eq!(
            std::fs::read_to_string(&p.file).unwrap(),
            "old\nrow1\nrow2\n"
        );
        // Already there: nothing more.
        assert_eq!(complete_delivery(&p).unwrap(), Recovery::AlreadyDelivered);
        assert_eq!(
            std::fs::read_to_string(&p.file).unwrap(),
            "old\nrow1\nrow2\n"
        );
        // Cut mid-row: the rest is appended.
        std::fs::write(&p.file, "old\nrow1\nro").unwrap();
        assert_eq!(complete_delivery(&p).unwrap(), Recovery::Completed);
        assert_eq!(
            std::fs::read_to_string(&p.file).unwrap(),
            "old\nrow1\nrow2\n"
        );
    }

    #[test]
    fn changed_file_gets_the_rows_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), 4, "row1\n");
        std::fs::write(&p.file, "").unwrap(); // rotated away
        assert_eq!(
            complete_delivery(&p).unwrap(),
            Recovery::AppendedAfterChange
        );
        assert_eq!(std::fs::read_to_string(&p.file).unwrap(), "row1\n");
        std::fs::write(&p.file, "old\nsomething else\n").unwrap();
        assert_eq!(
            complete_delivery(&p).unwrap(),
            Recovery::AppendedAfterChange
        );
        assert_eq!(
            std::fs::read_to_string(&p.file).unwrap(),
            "old\nsomething else\nrow1\n"
        );
    }

    #[test]
    fn corrupt_or_foreign_checkpoints_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        for (text, says) in [
            (
                "{\"version\":1,\"groups\":[{\"regi",
                "not a kubeanon checkpoint",
            ),
            ("{\"version\":2,\"groups\":[]}", "version 2"),
            ("{\"version\":1,\"groups\":\"x\"}", "corrupt"),
            (
                "{\"version\":1,\"groups\":[{\"region\":\"r\",\"log_group\":\"g\",\"watermark_ms\":-5,\"seen\":{}}]}",
                "corrupt",
            ),
            ("", "not a kubeanon checkpoint"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Checkpoint::open(&path).err().expect("refused"));
            assert!(err.contains(says), "{text}: {err}");
            assert!(
                err.contains("cp.json") && err.contains("to recover"),
                "{err}"
            );
        }
    }

    #[test]
    fn state_round_trips_and_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let mut cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.state, State::new());
        let g = GroupState {
            region: "us-east-1".into(),
            log_group: "/aws/eks/a/cluster".into(),
            watermark_ms: 1000,
            seen: [("e1".to_string(), 990)].into(),
        };
        cp.state.update(vec![g.clone()]);
        cp.save().unwrap();
        let err = Checkpoint::open(&path).err().expect("locked");
        assert!(err.to_string().contains("another kubeanon run"), "{err}");
        drop(cp);
        let again = Checkpoint::open(&path).unwrap();
        assert_eq!(
            again.state.group("us-east-1", "/aws/eks/a/cluster"),
            Some(&g)
        );
    }
}
