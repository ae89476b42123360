//! Delivery: a run's rows to their target, one step at a time, and the
//! checkpoint advanced only once a step's rows are out. The one place the
//! protocol lives:
//!
//! - stdout, a device, `--output FILE`: rows first, then the commit
//!   (at least once: a crash in between repeats the step's rows, with the
//!   same ids). A replaced file is renamed into place at the end of the
//!   run, and the run's commits are applied only after that.
//! - `--append FILE` with a checkpoint: exactly once, through a journal
//!   beside the checkpoint (`CHECKPOINT.journal`). Before appending, the
//!   journal records where the step's bytes go (the file's absolute path,
//!   its length before, the bytes' length and SHA-256) and the commit they
//!   stand for. A run that finds a journal settles it before anything
//!   else: bytes all there -> commit; cut short -> cut back and forget
//!   (the step's events are read again); file changed -> forget, say so.
//!   The rows themselves are never stored: the journal is as small as one
//!   step's commit, and the checkpoint holds state only.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, Commit, sibling};
use crate::detect::Severity;
use crate::fleet::WorkUnit;
use crate::output::{self, Out, Parts, Rows, Style, Target};
use crate::testhooks;

const JOURNAL_VERSION: u32 = 1;

/// An append that may or may not have happened, and what it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    version: u32,
    file: PathBuf,
    /// The file's length before the append.
    offset: u64,
    len: u64,
    sha256: String,
    commit: Commit,
}

/// What settling a journal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The bytes were all there: the commit was applied.
    Delivered,
    /// The append was cut short: cut back to where it began, not committed;
    /// the step's events will be read and delivered again.
    RolledBack,
    /// The file was changed (rotated, edited) since: not committed; the
    /// step's rows will be appended again and may appear twice.
    FileChanged,
}

/// The journal beside a checkpoint.
fn journal_path(checkpoint: &Path) -> PathBuf {
    sibling(checkpoint, ".journal")
}

/// Settles a journal an earlier run left (it crashed, or could not roll
/// back a failed append). Returns what it found and the file it names.
pub fn settle(cp: &mut Checkpoint) -> Result<Option<(Settled, PathBuf)>> {
    let path = journal_path(cp.path());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read journal {}", path.display())),
    };
    let j: Journal = match serde_json::from_str(&text) {
        Ok(j) => j,
        // A journal is written whole (rename) or not at all: one that does
        // not parse was never anything the checkpoint relied on.
        Err(e) => bail!(
            "journal {} is corrupt ({e}); it records the last append to an --append file: \
             check that file's last rows, then delete the journal",
            path.display()
        ),
    };
    if j.version != JOURNAL_VERSION {
        bail!(
            "journal {} has version {}, this kubeanon reads {JOURNAL_VERSION}",
            path.display(),
            j.version
        );
    }
    let found = inspect(&j).with_context(|| {
        format!(
            "cannot check {} against journal {}",
            j.file.display(),
            path.display()
        )
    })?;
    match found {
        Settled::Delivered => {
            cp.state.apply(&j.commit);
            cp.save()?;
        }
        Settled::RolledBack => truncate(&j.file, j.offset)?,
        Settled::FileChanged => {}
    }
    remove(&path)?;
    Ok(Some((found, j.file)))
}

/// Compares the file with the journal.
fn inspect(j: &Journal) -> Result<Settled> {
    let mut file = match std::fs::File::open(&j.file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Settled::FileChanged),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len < j.offset {
        return Ok(Settled::FileChanged);
    }
    if len < j.offset + j.len {
        // Only this run appends while it holds the lock: a short tail is
        // its own cut write.
        return Ok(Settled::RolledBack);
    }
    file.seek(SeekFrom::Start(j.offset))?;
    let mut h = HashWriter::default();
    io::copy(&mut Read::by_ref(&mut file).take(j.len), &mut h)?;
    Ok(if h.hex() == j.sha256 {
        Settled::Delivered
    } else {
        Settled::FileChanged
    })
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} to cut back a failed append", path.display()))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot cut back a failed append to {}", path.display()))
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            output::sync_dir(output::parent_dir(path));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove journal {}", path.display())),
    }
}

/// Counts and hashes what is written through it.
#[derive(Default)]
struct HashWriter {
    sha: Sha256,
    len: u64,
}

impl HashWriter {
    fn hex(&self) -> String {
        self.sha
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sha.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A run's delivery: the target, open for the whole run, and the
/// checkpoint (with its lock) when there is one.
pub struct Delivery {
    out: Out,
    parts: Parts,
    checkpoint: Option<Checkpoint>,
    /// Commits that wait for the end of the run (a replaced file).
    held: Vec<Commit>,
    /// Log groups whose dedup set hit its cap, with the horizon it moved to.
    pub capped: Vec<(WorkUnit, i64)>,
    /// Findings (detection rows) delivered, and the highest severity
    /// among them (the same with `--rollup`, whose lines group them).
    pub rows: u64,
    pub worst: Option<Severity>,
}

impl Delivery {
    /// Opens the target. An append target is made absolute first: the
    /// journal must name the same file from any working directory.
    pub fn open(style: Style, target: &Target, checkpoint: Option<Checkpoint>) -> Result<Self> {
        let target = match target {
            Target::Append(p) => Target::Append(
                crate::checkpoint::resolve(p)
                    .with_context(|| format!("cannot resolve {}", p.display()))?,
            ),
            t => t.clone(),
        };
        let out = Out::open(&target)?;
        let parts = Parts::new(style, out.existing_header());
        Ok(Delivery {
            out,
            parts,
            checkpoint,
            held: Vec::new(),
            capped: Vec::new(),
            rows: 0,
            worst: None,
        })
    }

    /// Delivers one step's rows, then applies its commit.
    pub fn step(&mut self, rows: &Rows<'_>, commit: Option<Commit>) -> Result<()> {
        self.deliver(rows, commit)?;
        self.rows += rows.findings.len() as u64;
        self.worst = self.parts.written.worst;
        Ok(())
    }

    fn deliver(&mut self, rows: &Rows<'_>, commit: Option<Commit>) -> Result<()> {
        let (Some(commit), Some(_)) = (commit, self.checkpoint.as_ref()) else {
            return self.out.write(|w| self.parts.write(rows, w));
        };
        match &self.out {
            Out::Append(path, file) => {
                let (path, offset) = (path.clone(), file.metadata()?.len());
                self.append_journaled(rows, commit, path, offset)
            }
            Out::Replace(_) => {
                self.out.write(|w| self.parts.write(rows, w))?;
                self.held.push(commit);
                Ok(())
            }
            Out::Stdout(_) | Out::Device(..) => {
                self.out.write(|w| self.parts.write(rows, w))?;
                testhooks::crash_at("after-output");
                testhooks::pause();
                self.commit(&commit)
            }
        }
    }

    fn append_journaled(
        &mut self,
        rows: &Rows<'_>,
        commit: Commit,
        file: PathBuf,
        offset: u64,
    ) -> Result<()> {
        // The bytes, measured without keeping them: rendered again below.
        let mut h = HashWriter::default();
        self.parts.clone().write(rows, &mut h)?;
        if h.len == 0 {
            return self.commit(&commit);
        }
        let cp_path = self
            .checkpoint
            .as_ref()
            .expect("journaled")
            .path()
            .to_path_buf();
        let journal = journal_path(&cp_path);
        let record = Journal {
            version: JOURNAL_VERSION,
            file: file.clone(),
            offset,
            len: h.len,
            sha256: h.hex(),
            commit,
        };
        let json = serde_json::to_vec(&record).expect("journal serialises");
        output::replace(&journal, |w| w.write_all(&json))
            .with_context(|| format!("cannot write journal {}", journal.display()))?;
        testhooks::crash_at("after-pending");
        testhooks::pause();
        if testhooks::fault_point("mid-append") {
            let mut bytes = Vec::new();
            self.parts.write(rows, &mut bytes)?;
            let _ = self.out.write(|w| w.write_all(&bytes[..bytes.len() / 2]));
            std::process::abort();
        }
        if let Err(err) = self.out.write(|w| self.parts.write(rows, w)) {
            // Not a crash (a full disk, say): put the file and the journal
            // back as they were. If that fails too, the journal stays and
            // the next run settles it.
            if truncate(&file, offset)
                .and_then(|()| remove(&journal))
                .is_err()
            {
                eprintln!(
                    "kubeanon: could not roll back the failed append to {}; the next run will",
                    file.display()
                );
            }
            return Err(err);
        }
        testhooks::crash_at("after-output");
        testhooks::pause();
        self.commit(&record.commit)?;
        remove(&journal)
    }

    fn commit(&mut self, c: &Commit) -> Result<()> {
        commit(self.checkpoint.as_mut(), &mut self.capped, c)
    }

    /// Ends the run's output; then applies the commits that waited for it.
    /// Returns the units whose dedup set hit its cap.
    pub fn finish(mut self, empty: &Rows<'_>) -> Result<Vec<(WorkUnit, i64)>> {
        let parts = &mut self.parts;
        self.out.write(|w| parts.finish(empty, w))?;
        let Delivery {
            out,
            mut checkpoint,
            held,
            mut capped,
            ..
        } = self;
        out.finish()?;
        if !held.is_empty() {
            testhooks::crash_at("after-output");
            for c in &held {
                commit(checkpoint.as_mut(), &mut capped, c)?;
            }
        }
        Ok(capped)
    }
}

/// Applies a commit to the checkpoint and saves it.
fn commit(
    cp: Option<&mut Checkpoint>,
    capped: &mut Vec<(WorkUnit, i64)>,
    c: &Commit,
) -> Result<()> {
    let cp = cp.expect("a commit needs a checkpoint");
    if let Some(h) = cp.state.apply(c) {
        let unit = c.unit();
        capped.retain(|(u, _)| *u != unit);
        capped.push((unit, h));
    }
    cp.save()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ReadSettings;

    fn commit() -> Commit {
        Commit {
            account: "111122223333".into(),
            region: "r".into(),
            log_group: "/g".into(),
            read: ReadSettings {
                stream_prefix: "p".into(),
                server_filter: true,
                rules: Some(crate::detect::Rules::ALL),
            },
            watermark_ms: 1000,
            horizon_ms: 900,
            new_seen: vec![],
        }
    }

    /// A checkpoint and an append file holding "old\n", with a journal for
    /// appending `data`; `written` is what actually reached the file.
    fn setup(data: &str, written: &str) -> (tempfile::TempDir, Checkpoint, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(&dir.path().join("cp.json")).unwrap();
        let file = dir.path().join("out.ndjson");
        std::fs::write(&file, format!("old\n{written}")).unwrap();
        let mut h = HashWriter::default();
        h.write_all(data.as_bytes()).unwrap();
        let j = Journal {
            version: JOURNAL_VERSION,
            file: file.clone(),
            offset: 4,
            len: h.len,
            sha256: h.hex(),
            commit: commit(),
        };
        std::fs::write(journal_path(cp.path()), serde_json::to_vec(&j).unwrap()).unwrap();
        (dir, cp, file)
    }

    #[test]
    fn a_complete_append_is_committed() {
        let (_d, mut cp, file) = setup("row1\nrow2\n", "row1\nrow2\n");
        assert_eq!(settle(&mut cp).unwrap().unwrap().0, Settled::Delivered);
        assert_eq!(cp.state.group(&commit().unit()).unwrap().watermark_ms, 1000);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old\nrow1\nrow2\n");
        assert!(!journal_path(cp.path()).exists());
        assert!(settle(&mut cp).unwrap().is_none(), "settled once");
    }

    #[test]
    fn a_cut_append_is_rolled_back_and_not_committed() {
        for written in ["", "row1\nro"] {
            let (_d, mut cp, file) = setup("row1\nrow2\n", written);
            assert_eq!(settle(&mut cp).unwrap().unwrap().0, Settled::RolledBack);
            assert!(cp.state.groups.is_empty());
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "old\n");
        }
    }

    #[test]
    fn a_changed_file_is_left_alone_and_not_committed() {
        for contents in ["", "old\nsomething else\n"] {
            let (_d, mut cp, file) = setup("row1\n", "");
            std::fs::write(&file, contents).unwrap();
            assert_eq!(settle(&mut cp).unwrap().unwrap().0, Settled::FileChanged);
            assert!(cp.state.groups.is_empty());
            assert_eq!(std::fs::read_to_string(&file).unwrap(), contents);
        }
    }
}
