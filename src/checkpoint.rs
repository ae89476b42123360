//! The poller's checkpoint: per work unit (account, region, log group), what was read (the read
//! settings), up to where (the watermark), and which matched events near
//! that point were already reported (the dedup set, and how far back it
//! reaches: the horizon).
//!
//! CloudWatch Logs can only be queried by event time and events arrive
//! late, so each run rescans an overlap before the watermark and skips the
//! matched events remembered here. A run never rescans before the horizon,
//! whatever its `--overlap`: before it, the dedup set is incomplete, and an
//! event found there could not be told from one already delivered.
//!
//! The file is JSON, versioned, replaced atomically (temporary file, fsync,
//! rename), and guarded by a lock on a sibling `.lock` file for the whole
//! run. It holds state only, never rendered rows: a delivery in progress
//! lives in the journal beside it (`crate::deliver`). Its size is
//! proportional to the dedup sets, which are capped at [`MAX_SEEN`] ids per
//! log group.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::detect::{Rule, Rules};
use crate::fleet::WorkUnit;
use crate::output;

pub const VERSION: u32 = 3;

/// The most eventIds one log group remembers. A flood beyond it moves the
/// horizon forward (the run says so): the checkpoint stays small, at the
/// cost of a shorter overlap for that stretch.
pub const MAX_SEEN: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Which records of the commit log beside the file (`.commits`) are
    /// newer than it: those written with this generation (see
    /// `crate::state::file`). Absent (0) in files written before the log.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// One entry per work unit (account, region, log group) ever polled
    /// with this file.
    pub groups: Vec<GroupState>,
    /// Per unit (its key path): the delivery sequence number and the
    /// delivery recorded before its rows were written. Absent in files
    /// written before the one protocol (their journal is adopted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, UnitExtra>,
}

/// What the protocol keeps of a unit beside its entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitExtra {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::state::protocol::Pending>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What defines the events a run reads from a log group: a run with other
/// settings reads other events, so it may not move this entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSettings {
    pub stream_prefix: String,
    pub server_filter: bool,
    /// `--rules`, as `escu,unauthenticated,truncated`. None in an entry
    /// written before `--rules` existed, which was read with ESCU's rule
    /// alone (and is written back without it, so such an entry and its
    /// journal read as they did).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rules_text")]
    pub rules: Option<Rules>,
}

/// How an entry's read settings compare with a run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fits {
    /// The same events: the run goes on from the watermark.
    Same,
    /// An entry from before `--rules` (read with ESCU's alone), and a run
    /// with ESCU's and more: it goes on from the watermark with the new
    /// rules and records them; what the others would have matched before
    /// it was never read (the run says so).
    Upgrade,
    /// Other events: moving this entry would skip some.
    Differs,
}

impl ReadSettings {
    /// The rules this entry was read with (ESCU's for one from before
    /// `--rules`).
    pub fn rules_read(&self) -> Rules {
        self.rules.unwrap_or(Rules::ESCU)
    }

    /// How `self` (an entry's) fits `run` (this run's settings, whose
    /// rules are always recorded).
    pub fn fits(&self, run: &ReadSettings) -> Fits {
        if self.stream_prefix != run.stream_prefix || self.server_filter != run.server_filter {
            return Fits::Differs;
        }
        let wanted = run.rules_read();
        match self.rules {
            Some(r) if r == wanted => Fits::Same,
            None if wanted == Rules::ESCU => Fits::Same,
            None if wanted.contains(Rule::Escu) => Fits::Upgrade,
            _ => Fits::Differs,
        }
    }

    /// The FilterLogEvents filter pattern these settings send (none with
    /// `--no-server-filter`).
    pub fn filter_pattern(&self) -> Option<String> {
        self.server_filter
            .then(|| crate::source::cloudwatch::server_pattern(self.rules_read()))
    }
}

impl std::fmt::Display for ReadSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--stream-prefix '{}'{} --rules {}{}",
            self.stream_prefix,
            if self.server_filter {
                ""
            } else {
                " --no-server-filter"
            },
            self.rules_read(),
            if self.rules.is_none() {
                " (recorded before --rules existed)"
            } else {
                ""
            }
        )
    }
}

/// `rules` as the text `--rules` takes.
mod rules_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::detect::Rules;

    pub fn serialize<S: Serializer>(rules: &Option<Rules>, s: S) -> Result<S::Ok, S::Error> {
        match rules {
            Some(r) => s.serialize_str(&r.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rules>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Empty in an entry from version 2 (before accounts) until a run
    /// adopts it for the caller's account ([`State::adopt`]).
    #[serde(default)]
    pub account: String,
    pub region: String,
    pub log_group: String,
    pub read: ReadSettings,
    /// Everything before this (ms since the epoch) has been read, up to
    /// events that arrive later than the overlap.
    pub watermark_ms: i64,
    /// Every matched event reported with a time in `[horizon_ms,
    /// watermark_ms)` is in `seen`; nothing before the horizon is read again.
    pub horizon_ms: i64,
    /// Hash of the eventId (32 hex digits) -> event time (ms) of reported
    /// matched events at or after the horizon.
    pub seen: BTreeMap<String, i64>,
}

/// One step's change to a log group's entry, applied once its rows are
/// delivered. Applying it twice changes nothing (a recovered journal may).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Empty in a journal written before accounts (see [`GroupState`]).
    #[serde(default)]
    pub account: String,
    pub region: String,
    pub log_group: String,
    pub read: ReadSettings,
    pub watermark_ms: i64,
    pub horizon_ms: i64,
    /// The matched events this step reported: eventId hash -> time.
    pub new_seen: Vec<(String, i64)>,
}

impl State {
    pub fn new() -> Self {
        State {
            version: VERSION,
            ..Default::default()
        }
    }

    pub fn group(&self, unit: &WorkUnit) -> Option<&GroupState> {
        self.groups.iter().find(|g| g.is(unit))
    }

    /// Puts `g` in place of the entry for its unit (a rebaseline).
    pub fn replace(&mut self, g: GroupState) {
        let unit = g.unit();
        self.groups.retain(|o| !o.is(&unit));
        self.groups.push(g);
    }

    /// Entries from before accounts (version 2) belong to the account
    /// whose credentials wrote them, the caller's: they become its.
    /// Returns whether there were any.
    pub fn adopt(&mut self, caller_account: &str) -> bool {
        let mut any = false;
        for g in self.groups.iter_mut().filter(|g| g.account.is_empty()) {
            g.account = caller_account.to_string();
            any = true;
        }
        any
    }

    /// Whether [`State::adopt`] has anything to do.
    pub fn has_entries_without_account(&self) -> bool {
        self.groups.iter().any(|g| g.account.is_empty())
    }

    /// Applies a step's commit. Returns the horizon when the dedup cap
    /// moved it past where the commit asked.
    pub fn apply(&mut self, c: &Commit) -> Option<i64> {
        let at = self.groups.iter().position(|g| {
            g.account == c.account && g.region == c.region && g.log_group == c.log_group
        });
        let g = match at {
            Some(i) => &mut self.groups[i],
            None => {
                self.groups.push(GroupState {
                    account: c.account.clone(),
                    region: c.region.clone(),
                    log_group: c.log_group.clone(),
                    read: c.read.clone(),
                    watermark_ms: c.watermark_ms,
                    horizon_ms: c.horizon_ms,
                    seen: BTreeMap::new(),
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        g.apply(c)
    }
}

impl Commit {
    pub fn unit(&self) -> WorkUnit {
        WorkUnit {
            account: self.account.clone(),
            region: self.region.clone(),
            log_group: self.log_group.clone(),
        }
    }
}

impl GroupState {
    /// A unit's entry before its first commit (replaced by the run's).
    pub fn empty(unit: &WorkUnit) -> GroupState {
        GroupState {
            account: unit.account.clone(),
            region: unit.region.clone(),
            log_group: unit.log_group.clone(),
            read: ReadSettings {
                stream_prefix: String::new(),
                server_filter: true,
                rules: None,
            },
            watermark_ms: 0,
            horizon_ms: 0,
            seen: BTreeMap::new(),
        }
    }

    /// Is this [`GroupState::empty`], no entry at all?
    pub fn is_placeholder(&self) -> bool {
        self.read.stream_prefix.is_empty() && self.watermark_ms == 0 && self.seen.is_empty()
    }

    pub fn unit(&self) -> WorkUnit {
        WorkUnit {
            account: self.account.clone(),
            region: self.region.clone(),
            log_group: self.log_group.clone(),
        }
    }

    fn is(&self, u: &WorkUnit) -> bool {
        self.account == u.account && self.region == u.region && self.log_group == u.log_group
    }

    /// See [`State::apply`].
    pub fn apply(&mut self, c: &Commit) -> Option<i64> {
        self.read = c.read.clone();
        self.watermark_ms = self.watermark_ms.max(c.watermark_ms);
        self.horizon_ms = self.horizon_ms.max(c.horizon_ms).min(self.watermark_ms);
        self.seen.extend(c.new_seen.iter().cloned());
        let mut capped = None;
        let max_seen = crate::testhooks::max_seen().unwrap_or(MAX_SEEN);
        if self.seen.len() > max_seen {
            // Keep the newest max_seen: the horizon moves to the oldest kept.
            let mut times: Vec<i64> = self.seen.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() - max_seen];
            // Events at `cut` itself are all kept or all dropped: an event
            // at the horizon must be in the set.
            let horizon = if times.iter().filter(|t| **t >= cut).count() > max_seen {
                cut + 1
            } else {
                cut
            };
            self.horizon_ms = self.horizon_ms.max(horizon);
            capped = Some(self.horizon_ms);
        }
        let h = self.horizon_ms;
        self.seen.retain(|_, ts| *ts >= h);
        capped
    }
}

/// An open checkpoint: its path (symlinks followed), the lock held for the
/// run, the state.
pub struct Checkpoint {
    path: PathBuf,
    _lock: File,
    pub state: State,
}

impl Checkpoint {
    /// Takes the lock and reads the file (a missing or empty file is a
    /// first run). A second run on the same checkpoint fails here,
    /// touching nothing. Through a symlink, the file it points to is the
    /// checkpoint, and its lock is beside that file.
    pub fn open(path: &Path) -> Result<Self> {
        let path = resolve(path)
            .with_context(|| format!("cannot resolve checkpoint path {}", path.display()))?;
        let lock_path = sibling(&path, ".lock");
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
        let state = read(&path)?;
        Ok(Checkpoint {
            path,
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

    /// The checkpoint file (absolute, symlinks followed).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `path` with `suffix` added to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// An absolute path with every symlink of the file itself followed (a
/// dangling link names the file to create).
pub fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = std::path::absolute(path)?;
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => break,
        }
    }
    // The directory part canonical too, so two spellings lock one file.
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => match std::fs::canonicalize(dir) {
            Ok(dir) => Ok(dir.join(name)),
            Err(_) => Ok(path.clone()),
        },
        _ => Ok(path),
    }
}

const RECOVER: &str = "to recover, restore it from a backup, or move it aside to start over from --start/--since \
                       (events between then and the lost watermark may be missed or reported again)";

fn read(path: &Path) -> Result<State> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
        Err(_) if path.is_dir() => bail!(
            "checkpoint {} is a directory: --checkpoint names a file, like {}",
            path.display(),
            path.join("kubeanon-checkpoint.json").display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read checkpoint {}", path.display()));
        }
    };
    // A checkpoint is JSON text: bytes that are not UTF-8 are some other
    // file (a gzip, a binary) named by mistake, or a checkpoint destroyed.
    let Ok(text) = String::from_utf8(bytes) else {
        bail!(
            "checkpoint {} is not a kubeanon checkpoint (binary, not JSON text): if --checkpoint names another file, \
             point it at a new path; if it was a checkpoint, {RECOVER}",
            path.display()
        );
    };
    // `touch`, or an init container, made it: no state yet.
    if text.trim().is_empty() {
        return Ok(State::new());
    }
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
    let state: State = match version {
        // Version 2 is version 3 without accounts (adopted by the run).
        Some(v) if v == u64::from(VERSION) || v == 2 => {
            let mut state: State = serde_json::from_str(&text)
                .with_context(|| format!("checkpoint {} is corrupt; {RECOVER}", path.display()))?;
            state.version = VERSION;
            state
        }
        Some(1) => migrate_v1(&text)
            .with_context(|| format!("checkpoint {} (version 1)", path.display()))?,
        Some(v) => bail!(
            "checkpoint {} has version {v}, this kubeanon reads versions 1 to {VERSION}; {RECOVER}",
            path.display()
        ),
        None => bail!(
            "checkpoint {} is not a kubeanon checkpoint (corrupt or truncated); {RECOVER}",
            path.display()
        ),
    };
    if let Some(bad) = state
        .groups
        .iter()
        .find(|g| g.watermark_ms < 0 || g.log_group.is_empty() || g.horizon_ms > g.watermark_ms)
    {
        bail!(
            "checkpoint {} is corrupt: bad entry for log group '{}'; {RECOVER}",
            path.display(),
            bad.log_group
        );
    }
    Ok(state)
}

/// Version 1 kept raw eventIds, no read settings and no horizon, and could
/// hold a pending delivery with its rows inside.
fn migrate_v1(text: &str) -> Result<State> {
    #[derive(Deserialize)]
    struct V1 {
        groups: Vec<V1Group>,
        #[serde(default)]
        pending: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct V1Group {
        region: String,
        log_group: String,
        watermark_ms: i64,
        seen: BTreeMap<String, i64>,
    }
    let v1: V1 = serde_json::from_str(text).with_context(|| format!("corrupt; {RECOVER}"))?;
    if v1.pending.is_some() {
        bail!(
            "it records a delivery that did not finish: run the kubeanon version that wrote it once more to complete it, then this one"
        );
    }
    let groups = v1
        .groups
        .into_iter()
        .map(|g| GroupState {
            account: String::new(),
            // Version 1 kept the ids from `watermark - overlap`, an overlap
            // it did not record: its oldest id is a horizon that is safe.
            horizon_ms: g
                .seen
                .values()
                .min()
                .copied()
                .unwrap_or(g.watermark_ms)
                .min(g.watermark_ms),
            seen: g.seen.iter().map(|(id, ts)| (seen_key(id), *ts)).collect(),
            region: g.region,
            log_group: g.log_group,
            // The defaults every version-1 run used unless told otherwise.
            read: ReadSettings {
                stream_prefix: "kube-apiserver-audit-".into(),
                server_filter: true,
                rules: None,
            },
            watermark_ms: g.watermark_ms,
        })
        .collect();
    Ok(State {
        version: VERSION,
        groups,
        ..State::default()
    })
}

/// How an eventId is kept in the dedup set: 128 bits of its SHA-256 in hex
/// (CloudWatch's eventIds are 56 digits; this is 32).
pub fn seen_key(event_id: &str) -> String {
    format!("{:032x}", crate::detect::event_hash(event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(watermark: i64, horizon: i64, seen: &[(&str, i64)]) -> Commit {
        Commit {
            account: "111122223333".into(),
            region: "us-east-1".into(),
            log_group: "/aws/eks/a/cluster".into(),
            read: ReadSettings {
                stream_prefix: "kube-apiserver-audit-".into(),
                server_filter: true,
                rules: None,
            },
            watermark_ms: watermark,
            horizon_ms: horizon,
            new_seen: seen.iter().map(|(k, t)| (k.to_string(), *t)).collect(),
        }
    }

    fn unit(account: &str, region: &str, log_group: &str) -> WorkUnit {
        WorkUnit {
            account: account.into(),
            region: region.into(),
            log_group: log_group.into(),
        }
    }

    #[test]
    fn version_2_entries_are_the_callers_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        std::fs::write(
            &path,
            r#"{"version":2,"groups":[{"region":"r","log_group":"/g","read":{"stream_prefix":"k","server_filter":true},"watermark_ms":5,"horizon_ms":4,"seen":{}}]}"#,
        )
        .unwrap();
        let mut cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.state.version, VERSION);
        assert!(cp.state.has_entries_without_account());
        assert_eq!(cp.state.group(&unit("111122223333", "r", "/g")), None);
        assert!(cp.state.adopt("111122223333"));
        assert!(!cp.state.adopt("444455556666"), "adopted once");
        assert_eq!(
            cp.state
                .group(&unit("111122223333", "r", "/g"))
                .unwrap()
                .watermark_ms,
            5
        );
        assert_eq!(cp.state.group(&unit("444455556666", "r", "/g")), None);
    }

    fn read(rules: Option<&str>) -> ReadSettings {
        ReadSettings {
            stream_prefix: "kube-apiserver-audit-".into(),
            server_filter: true,
            rules: rules.map(|r| r.parse().unwrap()),
        }
    }

    #[test]
    fn rules_are_read_settings_and_entries_from_before_them_were_escu() {
        let all = read(Some("all"));
        assert_eq!(read(Some("all")).fits(&all), Fits::Same);
        assert_eq!(read(Some("escu")).fits(&all), Fits::Differs);
        assert_eq!(all.fits(&read(Some("escu"))), Fits::Differs);
        assert_eq!(
            read(Some("escu,truncated")).fits(&read(Some("escu"))),
            Fits::Differs
        );
        // Before --rules: ESCU's alone. More rules with it go on from the
        // watermark; ESCU's alone is what was read; without ESCU's the
        // run would skip what the schedule reads.
        let before = read(None);
        assert_eq!(before.rules_read(), Rules::ESCU);
        assert_eq!(before.fits(&read(Some("escu"))), Fits::Same);
        assert_eq!(before.fits(&all), Fits::Upgrade);
        assert_eq!(before.fits(&read(Some("escu,truncated"))), Fits::Upgrade);
        assert_eq!(before.fits(&read(Some("unauthenticated"))), Fits::Differs);
        // The other settings still decide first.
        let mut other = all.clone();
        other.server_filter = false;
        assert_eq!(before.fits(&other), Fits::Differs);
        other = all.clone();
        other.stream_prefix = "x".into();
        assert_eq!(read(Some("all")).fits(&other), Fits::Differs);
        assert!(
            before.to_string().contains("--rules escu (recorded before"),
            "{before}"
        );
        assert_eq!(
            all.to_string(),
            "--stream-prefix 'kube-apiserver-audit-' --rules escu,unauthenticated,truncated"
        );
    }

    #[test]
    fn rules_are_written_as_text_and_absent_before_them() {
        let json = serde_json::to_string(&read(Some("escu,truncated"))).unwrap();
        assert_eq!(
            json,
            r#"{"stream_prefix":"kube-apiserver-audit-","server_filter":true,"rules":"escu,truncated"}"#
        );
        let back: ReadSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, read(Some("escu,truncated")));
        // As every release before --rules wrote it, and written back so.
        let old = r#"{"stream_prefix":"kube-apiserver-audit-","server_filter":true}"#;
        let parsed: ReadSettings = serde_json::from_str(old).unwrap();
        assert_eq!(parsed, read(None));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old);
        let bad = r#"{"stream_prefix":"k","server_filter":true,"rules":"escu,ESCU"}"#;
        let err = serde_json::from_str::<ReadSettings>(bad).unwrap_err();
        assert!(err.to_string().contains("'ESCU' is not a rule"), "{err}");
    }

    #[test]
    fn accounts_keep_their_own_entries() {
        let mut s = State::new();
        let mut other = commit(2000, 1500, &[("x", 1600)]);
        other.account = "444455556666".into();
        s.apply(&commit(1000, 900, &[]));
        s.apply(&other);
        assert_eq!(s.groups.len(), 2);
        let mine = s.group(&unit("111122223333", "us-east-1", "/aws/eks/a/cluster"));
        assert_eq!(mine.unwrap().watermark_ms, 1000);
        let theirs = s.group(&unit("444455556666", "us-east-1", "/aws/eks/a/cluster"));
        assert_eq!(theirs.unwrap().seen.len(), 1);
    }

    #[test]
    fn commits_are_idempotent_and_never_move_back() {
        let mut s = State::new();
        let c = commit(1000, 400, &[("a", 300), ("b", 500)]);
        assert_eq!(s.apply(&c), None);
        let once = s.clone();
        s.apply(&c);
        assert_eq!(s, once, "applying twice changes nothing");
        let g = &s.groups[0];
        assert_eq!((g.watermark_ms, g.horizon_ms), (1000, 400));
        assert_eq!(
            g.seen.keys().collect::<Vec<_>>(),
            ["b"],
            "a is before the horizon"
        );
        // An older commit (a recovered journal) moves nothing back.
        s.apply(&commit(900, 100, &[]));
        assert_eq!(
            (s.groups[0].watermark_ms, s.groups[0].horizon_ms),
            (1000, 400)
        );
    }

    #[test]
    fn the_dedup_set_is_capped_by_moving_the_horizon() {
        let mut s = State::new();
        let ids: Vec<(String, i64)> = (0..MAX_SEEN as i64 + 10)
            .map(|i| (format!("{i:032x}"), 1000 + i))
            .collect();
        let mut c = commit(1_000_000, 0, &[]);
        c.new_seen = ids;
        assert_eq!(s.apply(&c), Some(1010));
        assert_eq!(s.groups[0].seen.len(), MAX_SEEN);
        assert_eq!(s.groups[0].horizon_ms, 1010);
    }

    #[test]
    fn corrupt_or_foreign_checkpoints_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        for (text, says) in [
            (
                "{\"version\":2,\"groups\":[{\"regi",
                "not a kubeanon checkpoint",
            ),
            ("{\"version\":9,\"groups\":[]}", "version 9"),
            ("{\"version\":2,\"groups\":\"x\"}", "corrupt"),
            (
                "{\"version\":2,\"groups\":[{\"region\":\"r\",\"log_group\":\"g\",\"read\":{\"stream_prefix\":\"k\",\"server_filter\":true},\"watermark_ms\":-5,\"horizon_ms\":-6,\"seen\":{}}]}",
                "corrupt",
            ),
            (
                "{\"version\":2,\"groups\":[{\"region\":\"r\",\"log_group\":\"g\",\"read\":{\"stream_prefix\":\"k\",\"server_filter\":true},\"watermark_ms\":5,\"horizon_ms\":6,\"seen\":{}}]}",
                "corrupt",
            ),
            ("\u{0}", "not a kubeanon checkpoint"),
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
    fn an_empty_file_is_a_first_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        std::fs::write(&path, "").unwrap();
        assert_eq!(Checkpoint::open(&path).unwrap().state, State::new());
    }

    #[test]
    fn version_1_is_migrated_and_its_pending_delivery_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        std::fs::write(
            &path,
            r#"{"version":1,"groups":[{"region":"r","log_group":"/g","watermark_ms":1000,"seen":{"e1":700,"e2":900}}]}"#,
        )
        .unwrap();
        let cp = Checkpoint::open(&path).unwrap();
        let mut cp = cp;
        assert!(cp.state.adopt("111122223333"));
        let g = cp.state.group(&unit("111122223333", "r", "/g")).unwrap();
        assert_eq!((g.watermark_ms, g.horizon_ms), (1000, 700));
        assert_eq!(g.seen.get(&seen_key("e1")), Some(&700));
        drop(cp);
        std::fs::write(
            &path,
            r#"{"version":1,"groups":[],"pending":{"file":"x","offset":0,"data":"row\n","groups":[]}}"#,
        )
        .unwrap();
        let err = format!("{:#}", Checkpoint::open(&path).err().unwrap());
        assert!(err.contains("did not finish"), "{err}");
    }

    #[test]
    fn a_symlinked_checkpoint_is_followed_and_locked_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut cp = Checkpoint::open(&link).unwrap();
        cp.state.apply(&commit(1000, 900, &[]));
        cp.save().unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(real.exists() && dir.path().join("real.json.lock").exists());
        assert!(!dir.path().join("link.json.lock").exists());
        let err = Checkpoint::open(&real)
            .err()
            .expect("one lock for both names");
        assert!(err.to_string().contains("another kubeanon run"), "{err}");
    }

    #[test]
    fn state_round_trips_and_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let mut cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.state, State::new());
        cp.state.apply(&commit(1000, 990, &[("e1", 990)]));
        cp.save().unwrap();
        let saved = cp.state.clone();
        let err = Checkpoint::open(&path).err().expect("locked");
        assert!(err.to_string().contains("another kubeanon run"), "{err}");
        drop(cp);
        let again = Checkpoint::open(&path).unwrap();
        assert_eq!(again.state, saved);
    }
}
