//! The file backend of the protocol: a local `--checkpoint FILE` (or none).
//!
//! - [`FileStore`]: every unit's state in one checkpoint file, taken for
//!   the whole run with its lock (a second run on the same file exits 1
//!   and touches nothing, as it always has). A replace of one unit's state
//!   costs that unit, not the fleet: it is one record appended (and
//!   synced) to a commit log beside the file, `FILE.commits`, holding what
//!   changed (the entry without its dedup set, and the ids added and
//!   dropped). Opening replays the log over the file; the end of a run
//!   folds it into the file (a new generation, renamed into place) and
//!   empties it. A record cut by a crash is the last line and is ignored:
//!   its replace never returned, so nothing relied on it.
//! - [`NoLocks`]: the checkpoint's lock already keeps every other run
//!   out, so a unit's lock is always this run's. Per-unit locks are the S3
//!   backend's leases.
//!
//! Without `--checkpoint` the store keeps states in memory for the run.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::protocol::{Digest, Guard, Locks, Pending, StateChanged, Store, UnitDoc, VERSION};
use crate::checkpoint::{Checkpoint, Commit, GroupState, UnitExtra, sibling};
use crate::fleet::WorkUnit;

/// One record of the commit log: a unit's state, less its dedup set,
/// and how the set changed.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    generation: u64,
    unit: String,
    group: GroupState,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    pending: Option<Pending>,
    #[serde(default)]
    add: Vec<(String, i64)>,
    #[serde(default)]
    drop: Vec<String>,
}

/// Units' states in a checkpoint file (or in memory).
pub struct FileStore {
    inner: Mutex<Inner>,
}

struct Inner {
    checkpoint: Option<Checkpoint>,
    /// States of a run without a checkpoint.
    memory: HashMap<String, UnitDoc>,
    /// Per unit: how many replaces this run made (the CAS version).
    versions: HashMap<String, u64>,
    log: Option<(PathBuf, File)>,
    /// Bytes written to the log since it was last folded.
    logged: u64,
}

/// The commit log's size at which it is folded into the file mid-run.
const MAX_LOG: u64 = 16 << 20;

impl FileStore {
    /// A run without a checkpoint: states live for the run.
    pub fn memory() -> Self {
        FileStore::with(None)
    }

    /// Takes the checkpoint's lock, reads it, replays its commit log and
    /// adopts a journal of before the one protocol. A second run fails
    /// here, touching nothing.
    pub fn open(path: &Path) -> Result<Self> {
        let mut cp = Checkpoint::open(path)?;
        let log_path = sibling(cp.path(), ".commits");
        let replayed = replay(&mut cp, &log_path)?;
        let adopted = adopt_journal(&mut cp)?;
        if replayed || adopted {
            fold(&mut cp, &log_path)?;
            if adopted {
                crate::output::remove_synced(&sibling(cp.path(), ".journal"))?;
            }
        }
        Ok(FileStore::with(Some(cp)))
    }

    fn with(checkpoint: Option<Checkpoint>) -> Self {
        FileStore {
            inner: Mutex::new(Inner {
                checkpoint,
                memory: HashMap::new(),
                versions: HashMap::new(),
                log: None,
                logged: 0,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The checkpoint file, for messages; None without one.
    pub fn path(&self) -> Option<PathBuf> {
        self.inner()
            .checkpoint
            .as_ref()
            .map(|c| c.path().to_path_buf())
    }

    /// Whether entries of before accounts wait for the caller's account.
    pub fn needs_caller(&self) -> bool {
        self.inner()
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.state.has_entries_without_account())
    }

    /// Entries from before accounts become the caller's.
    pub fn adopt_caller(&self, account: &str) {
        if let Some(cp) = self.inner().checkpoint.as_mut() {
            cp.state.adopt(account);
        }
    }

    /// Folds the commit log into the file (the end of a run).
    pub fn finish(&self) -> Result<()> {
        let mut inner = self.inner();
        if inner.logged == 0 {
            return Ok(());
        }
        let Inner {
            checkpoint, log, ..
        } = &mut *inner;
        let (Some(cp), Some((path, _))) = (checkpoint.as_mut(), log.as_ref()) else {
            return Ok(());
        };
        let path = path.clone();
        fold(cp, &path)?;
        inner.log = None;
        inner.logged = 0;
        Ok(())
    }
}

impl Store for FileStore {
    type Version = u64;

    async fn load(&self, unit: &WorkUnit) -> Result<Option<(UnitDoc, u64)>> {
        let inner = self.inner();
        let key = unit.path();
        let v = inner.versions.get(&key).copied().unwrap_or(0);
        let doc = match &inner.checkpoint {
            None => inner.memory.get(&key).cloned(),
            Some(cp) => {
                let extra = cp.state.units.get(&key);
                let group = cp.state.group(unit).cloned();
                (group.is_some() || extra.is_some()).then(|| {
                    let extra = extra.cloned().unwrap_or_default();
                    UnitDoc {
                        version: VERSION,
                        group: group.unwrap_or_else(|| GroupState::empty(unit)),
                        seq: extra.seq,
                        pending: extra.pending,
                    }
                })
            }
        };
        Ok(doc.map(|d| (d, v)))
    }

    async fn cas(&self, unit: &WorkUnit, doc: &UnitDoc, expected: Option<&u64>) -> Result<u64> {
        let mut inner = self.inner();
        let key = unit.path();
        let now = inner.versions.get(&key).copied().unwrap_or(0);
        if expected.copied().unwrap_or(0) != now {
            return Err(StateChanged.into());
        }
        match inner.checkpoint.is_some() {
            false => {
                inner.memory.insert(key.clone(), doc.clone());
            }
            true => inner.log_and_apply(unit, doc)?,
        }
        inner.versions.insert(key, now + 1);
        Ok(now + 1)
    }

    fn describe(&self, _: &WorkUnit) -> String {
        self.path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    fn local_entry(&self, unit: &WorkUnit) -> Option<Option<GroupState>> {
        let inner = self.inner();
        let cp = inner.checkpoint.as_ref()?;
        Some(cp.state.group(unit).cloned())
    }
}

impl Inner {
    /// Appends (and syncs) the record of `doc`, then applies it.
    fn log_and_apply(&mut self, unit: &WorkUnit, doc: &UnitDoc) -> Result<()> {
        let cp = self.checkpoint.as_mut().expect("a checkpoint");
        let key = unit.path();
        let old = cp.state.group(unit);
        let (add, drop) = match old {
            None => (
                doc.group
                    .seen
                    .iter()
                    .map(|(k, t)| (k.clone(), *t))
                    .collect(),
                Vec::new(),
            ),
            Some(old) => (
                doc.group
                    .seen
                    .iter()
                    .filter(|(k, t)| old.seen.get(*k) != Some(t))
                    .map(|(k, t)| (k.clone(), *t))
                    .collect(),
                old.seen
                    .keys()
                    .filter(|k| !doc.group.seen.contains_key(*k))
                    .cloned()
                    .collect(),
            ),
        };
        let record = Record {
            generation: cp.state.generation,
            unit: key.clone(),
            group: GroupState {
                seen: Default::default(),
                ..doc.group.clone()
            },
            seq: doc.seq,
            pending: doc.pending.clone(),
            add,
            drop,
        };
        let mut line = serde_json::to_vec(&record).context("cannot write a commit record")?;
        line.push(b'\n');
        if self.log.is_none() {
            let path = sibling(cp.path(), ".commits");
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let f = options
                .open(&path)
                .with_context(|| format!("cannot open commit log {}", path.display()))?;
            self.log = Some((path, f));
        }
        let (path, f) = self.log.as_mut().expect("opened above");
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .with_context(|| format!("cannot write commit log {}", path.display()))?;
        self.logged += line.len() as u64;
        put(cp, doc.group.clone(), &key, doc.seq, doc.pending.clone());
        // A long run (a catch-up, a flood) folds the log into the file now
        // and then, so the log stays bounded as the file is.
        if self.logged > MAX_LOG {
            let path = path.clone();
            fold(cp, &path)?;
            self.log = None;
            self.logged = 0;
        }
        Ok(())
    }
}

/// Puts a unit's state into the checkpoint's state (in memory).
fn put(cp: &mut Checkpoint, group: GroupState, key: &str, seq: u64, pending: Option<Pending>) {
    if group.is_placeholder() {
        // A unit with a pending delivery and no entry yet (its first step).
        let unit = group.unit();
        cp.state.groups.retain(|g| g.unit() != unit);
    } else {
        cp.state.replace(group);
    }
    if seq == 0 && pending.is_none() {
        cp.state.units.remove(key);
    } else {
        cp.state
            .units
            .insert(key.to_string(), UnitExtra { seq, pending });
    }
}

/// Applies the log's records of the file's generation. True if any.
fn replay(cp: &mut Checkpoint, log: &Path) -> Result<bool> {
    let f = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", log.display())),
    };
    let mut lines = io::BufReader::new(f).split(b'\n').peekable();
    let mut any = false;
    while let Some(line) = lines.next() {
        let line = line.with_context(|| format!("cannot read {}", log.display()))?;
        let last = lines.peek().is_none();
        let record: Record = match serde_json::from_slice(&line) {
            Ok(r) => r,
            // A crash mid-write cuts the last record: its replace never
            // returned, so nothing relied on it.
            Err(_) if last => break,
            Err(e) => bail!(
                "commit log {} is corrupt ({e}); it holds the checkpoint's latest commits: \
                 restore both files from a backup, or move both aside to start over",
                log.display()
            ),
        };
        if record.generation != cp.state.generation {
            continue; // folded into the file already
        }
        let mut group = record.group;
        if let Some(old) = cp.state.group(&group.unit()) {
            group.seen = old.seen.clone();
        }
        for k in &record.drop {
            group.seen.remove(k);
        }
        group.seen.extend(record.add);
        put(cp, group, &record.unit, record.seq, record.pending);
        any = true;
    }
    Ok(any)
}

/// Writes the state as a new generation of the file, then empties the
/// log: a crash between the two leaves records of the old generation,
/// which the next open skips.
fn fold(cp: &mut Checkpoint, log: &Path) -> Result<()> {
    cp.state.generation += 1;
    cp.save()?;
    match File::options().write(true).open(log) {
        Ok(f) => f
            .set_len(0)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot empty commit log {}", log.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", log.display())),
    }
}

/// The journal of an append (`CHECKPOINT.journal`) written before the one
/// protocol: its delivery becomes its unit's pending one, settled by the
/// append target when the unit is next read.
fn adopt_journal(cp: &mut Checkpoint) -> Result<bool> {
    #[derive(Deserialize)]
    struct Journal {
        version: u32,
        file: PathBuf,
        offset: u64,
        len: u64,
        sha256: String,
        commit: Commit,
    }
    let path = sibling(cp.path(), ".journal");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read journal {}", path.display())),
    };
    let j: Journal = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "journal {} is corrupt ({e}); it records the last append to an --append file: \
             check that file's last rows, then delete the journal",
            path.display()
        )
    })?;
    if j.version != 1 {
        bail!(
            "journal {} has version {}, this kubeanon reads 1",
            path.display(),
            j.version
        );
    }
    let mut unit = j.commit.unit();
    if unit.account.is_empty() {
        // Written before accounts: its entry is adopted with the others.
        unit.account = cp
            .state
            .groups
            .iter()
            .find(|g| g.region == unit.region && g.log_group == unit.log_group)
            .map(|g| g.account.clone())
            .unwrap_or_default();
    }
    let group = cp
        .state
        .group(&unit)
        .cloned()
        .unwrap_or_else(|| GroupState::empty(&unit));
    let pending = Pending {
        key: j.file.display().to_string(),
        offset: Some(j.offset),
        rows: Some(Digest {
            len: j.len,
            sha256: j.sha256,
        }),
        cut_back: true,
        commit: j.commit,
    };
    let key = unit.path();
    let seq = cp.state.units.get(&key).map_or(0, |e| e.seq);
    put(cp, group, &key, seq, Some(pending));
    Ok(true)
}

/// The file backend's locks: the checkpoint's lock is the run's.
pub struct NoLocks;

/// A unit lock that cannot be lost.
pub struct NoGuard;

impl Locks for NoLocks {
    type Guard = NoGuard;
    async fn acquire(&self, _: &WorkUnit) -> Result<std::result::Result<NoGuard, String>> {
        Ok(Ok(NoGuard))
    }
}

impl Guard for NoGuard {
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn release(self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ReadSettings;

    fn unit(n: usize) -> WorkUnit {
        WorkUnit::new(
            "111122223333",
            "eu-west-1",
            format!("/aws/eks/c{n}/cluster"),
        )
        .unwrap()
    }

    fn doc(u: &WorkUnit, watermark: i64, ids: std::ops::Range<i64>) -> UnitDoc {
        UnitDoc {
            version: VERSION,
            group: GroupState {
                read: ReadSettings {
                    stream_prefix: "kube-apiserver-audit-".into(),
                    server_filter: true,
                    rules: None,
                },
                watermark_ms: watermark,
                horizon_ms: 0,
                seen: ids.map(|i| (format!("{i:032x}"), i)).collect(),
                ..GroupState::empty(u)
            },
            seq: 0,
            pending: None,
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_replace_costs_the_unit_not_the_fleet_and_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let units: Vec<WorkUnit> = (0..50).map(unit).collect();
        // 50 units with 2,000 remembered ids each, folded into the file.
        let store = FileStore::open(&path).unwrap();
        for u in &units {
            block_on(store.cas(u, &doc(u, 1_000, 0..2_000), None)).unwrap();
        }
        store.finish().unwrap();
        drop(store);
        let base = std::fs::read(&path).unwrap();
        assert!(base.len() > 50 * 2_000 * 32, "{} bytes", base.len());
        // A step of one unit: 10 new ids. The file is not rewritten; the
        // log grows by about the change.
        let store = FileStore::open(&path).unwrap();
        let (mut d, v) = block_on(store.load(&units[7])).unwrap().unwrap();
        d.group.watermark_ms = 2_000;
        d.group
            .seen
            .extend((5_000..5_010).map(|i| (format!("{i:032x}"), i)));
        block_on(store.cas(&units[7], &d, Some(&v))).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), base, "the file as it was");
        let log = std::fs::metadata(sibling(&path, ".commits")).unwrap().len();
        assert!(log < 4_096, "a record of {log} bytes for 10 ids");
        // A run killed now: the next open replays the record.
        drop(store);
        let store = FileStore::open(&path).unwrap();
        let (got, _) = block_on(store.load(&units[7])).unwrap().unwrap();
        assert_eq!(got, d);
        let (other, _) = block_on(store.load(&units[8])).unwrap().unwrap();
        assert_eq!(other, doc(&units[8], 1_000, 0..2_000));
        // Folded into a new generation, the log is empty.
        assert_eq!(
            std::fs::metadata(sibling(&path, ".commits")).unwrap().len(),
            0
        );
    }

    #[test]
    fn a_record_cut_by_a_crash_is_ignored_and_a_stale_one_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let u = unit(1);
        let store = FileStore::open(&path).unwrap();
        block_on(store.cas(&u, &doc(&u, 1_000, 0..3), None)).unwrap();
        store.finish().unwrap();
        drop(store);
        // A record of an older generation (folded already, then the log
        // not emptied) and a last record cut mid-write.
        let log = sibling(&path, ".commits");
        let stale = serde_json::json!({
            "generation": 0, "unit": u.path(),
            "group": doc(&u, 9_999, 0..0).group, "seq": 0
        });
        std::fs::write(&log, format!("{stale}\n{{\"generation\":1,\"unit\":")).unwrap();
        let store = FileStore::open(&path).unwrap();
        let (got, _) = block_on(store.load(&u)).unwrap().unwrap();
        assert_eq!(got, doc(&u, 1_000, 0..3));
        // A corrupt record before the last is refused, with advice.
        drop(store);
        std::fs::write(&log, "garbage\n{}\n").unwrap();
        let err = format!("{:#}", FileStore::open(&path).err().unwrap());
        assert!(
            err.contains("is corrupt") && err.contains("restore both files"),
            "{err}"
        );
    }

    #[test]
    fn a_swap_from_a_stale_version_is_refused() {
        let store = FileStore::memory();
        let u = unit(2);
        let v1 = block_on(store.cas(&u, &doc(&u, 1, 0..0), None)).unwrap();
        block_on(store.cas(&u, &doc(&u, 2, 0..0), Some(&v1))).unwrap();
        let err = block_on(store.cas(&u, &doc(&u, 3, 0..0), Some(&v1))).unwrap_err();
        assert!(err.is::<StateChanged>(), "{err:#}");
        assert!(block_on(store.cas(&u, &doc(&u, 3, 0..0), None)).is_err());
    }

    #[test]
    fn a_journal_of_before_the_one_protocol_becomes_its_units_pending_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let u = unit(3);
        let store = FileStore::open(&path).unwrap();
        block_on(store.cas(&u, &doc(&u, 1_000, 0..2), None)).unwrap();
        store.finish().unwrap();
        drop(store);
        // The journal a version-3 run wrote before appending.
        let journal = serde_json::json!({
            "version": 1, "file": "/srv/findings.ndjson", "offset": 40, "len": 12,
            "sha256": "ab".repeat(32),
            "commit": {
                "account": u.account, "region": u.region, "log_group": u.log_group,
                "read": {"stream_prefix": "kube-apiserver-audit-", "server_filter": true},
                "watermark_ms": 2_000, "horizon_ms": 1_000, "new_seen": [["ff", 1_500]]
            }
        });
        std::fs::write(sibling(&path, ".journal"), journal.to_string()).unwrap();
        let store = FileStore::open(&path).unwrap();
        assert!(
            !sibling(&path, ".journal").exists(),
            "adopted into the file"
        );
        let (got, _) = block_on(store.load(&u)).unwrap().unwrap();
        let p = got.pending.expect("its delivery is pending");
        assert_eq!(
            (
                p.key.as_str(),
                p.offset,
                p.rows.as_ref().map(|d| d.len),
                p.cut_back
            ),
            ("/srv/findings.ndjson", Some(40), Some(12), true)
        );
        assert_eq!(p.commit.watermark_ms, 2_000);
        assert_eq!(got.group.watermark_ms, 1_000, "not committed until settled");
        // Kept across opens until a run settles it.
        drop(store);
        let store = FileStore::open(&path).unwrap();
        assert!(
            block_on(store.load(&u))
                .unwrap()
                .unwrap()
                .0
                .pending
                .is_some()
        );
    }
}
