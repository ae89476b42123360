//! `--append FILE`, exactly once, shared by any number of schedules.
//!
//! - The file is locked (`FILE.lock`) for each append and for each
//!   recovery, so appends never interleave and one run's recovery never
//!   meets another's write in flight.
//! - Before appending, the bytes are written beside the file
//!   (`FILE.pending`: a header line with the offset, length and SHA-256,
//!   then the bytes), so whichever run takes the lock next settles a cut
//!   append first, whatever checkpoint it has: the tail found after the
//!   offset is a prefix of those bytes -> the rest is appended (the write
//!   completes; its owner's recovery finds it delivered); anything else
//!   (the file was rotated or edited) -> the file is left alone.
//! - The owner's recovery (a delivery pending in its state) then looks for
//!   its bytes at its offset: there -> delivered; not -> absent, read
//!   again. It never removes bytes, except for a journal of before the
//!   lock (`cut_back`), whose short tail could only be its own.
//!
//! Every line of the file stays whole, and no run removes another's rows.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::checkpoint::sibling;
use crate::output::{self, Out};
use crate::state::protocol::{Digest, Found, Pending};
use crate::testhooks;

/// How long a run waits for another's append to end.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// The header of `FILE.pending`.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    version: u32,
    offset: u64,
    len: u64,
    sha256: String,
}

/// The append file, locked, with any cut write of an earlier run settled.
pub struct Locked {
    path: PathBuf,
    _lock: File,
}

impl Locked {
    /// Waits for the file's lock (another run appending), then settles a
    /// cut write it finds.
    pub async fn take(path: &Path) -> Result<Locked> {
        let lock_path = sibling(path, ".lock");
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options
            .open(&lock_path)
            .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
        let waited = tokio::time::Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if waited.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => bail!(
                    "{} has been locked by another run for {}s ({} is held): nothing was appended",
                    path.display(),
                    LOCK_WAIT.as_secs(),
                    lock_path.display()
                ),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
                }
            }
        }
        settle_cut_write(path)?;
        Ok(Locked {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The file's length (0 before it exists): where an append begins.
    pub fn offset(&self) -> Result<u64> {
        length(&self.path)
    }

    /// Appends `bytes` at `offset` (the file's length when it was
    /// locked), its bytes kept beside it until they are all there.
    pub fn append(self, out: &mut Out, offset: u64, bytes: &[u8]) -> Result<()> {
        let pending = pending_path(&self.path);
        let header = Header {
            version: 1,
            offset,
            len: bytes.len() as u64,
            sha256: Digest::of(bytes).sha256,
        };
        let mut head = serde_json::to_vec(&header).context("cannot write a pending append")?;
        head.push(b'\n');
        output::replace(&pending, |w| {
            w.write_all(&head).and_then(|()| w.write_all(bytes))
        })
        .with_context(|| format!("cannot write {}", pending.display()))?;
        if testhooks::fault_point("mid-append") {
            let _ = out.write(|w| w.write_all(&bytes[..bytes.len() / 2]));
            std::process::abort();
        }
        if let Err(err) = out.write(|w| w.write_all(bytes)) {
            // Not a crash (a full disk, say): put the file back as it was.
            // If that fails too, the pending bytes stay and the next run
            // settles them.
            if truncate(&self.path, offset)
                .and_then(|()| output::remove_synced(&pending))
                .is_err()
            {
                eprintln!(
                    "kubeanon: could not roll back the failed append to {}; the next run will",
                    self.path.display()
                );
            }
            return Err(err);
        }
        output::remove_synced(&pending)
    }
}

/// Settles a delivery to `path` pending in a unit's state: its bytes at
/// its offset, or not.
pub async fn claim_or_find(path: &Path, p: &Pending) -> Result<Found> {
    let (Some(offset), Some(rows)) = (p.offset, p.rows.as_ref()) else {
        return Ok(Found::Absent);
    };
    let _locked = Locked::take(path).await?;
    let len = length(path)?;
    if len >= offset + rows.len && digest_at(path, offset, rows.len)?.sha256 == rows.sha256 {
        return Ok(Found::Delivered);
    }
    if p.cut_back && (offset..offset + rows.len).contains(&len) {
        // A journal of before the lock: only its run appended while it
        // held the checkpoint, so the short tail is its own cut write.
        truncate(path, offset)?;
    }
    Ok(Found::Absent)
}

/// `FILE.pending`.
fn pending_path(path: &Path) -> PathBuf {
    sibling(path, ".pending")
}

/// Completes a cut append whose bytes wait beside the file (the lock is
/// held), or leaves a changed file alone.
fn settle_cut_write(path: &Path) -> Result<()> {
    let pending = pending_path(path);
    let mut f = match File::open(&pending) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", pending.display())),
    };
    let mut all = Vec::new();
    f.read_to_end(&mut all)
        .with_context(|| format!("cannot read {}", pending.display()))?;
    let (head, bytes) = match all.iter().position(|&b| b == b'\n') {
        Some(i) => (&all[..i], &all[i + 1..]),
        None => (&all[..], &[][..]),
    };
    let header: Header = match serde_json::from_slice::<Header>(head) {
        Ok(h) if bytes.len() as u64 == h.len && Digest::of(bytes).sha256 == h.sha256 => h,
        // Written whole (renamed into place) or not at all: anything else
        // is not ours.
        _ => bail!(
            "{} is not a pending kubeanon append (corrupt, or another program's): \
             check the end of {}, then delete it",
            pending.display(),
            path.display()
        ),
    };
    let len = length(path)?;
    let end = header.offset + header.len;
    let tail_is_ours = (header.offset..=end).contains(&len)
        && read_at(path, header.offset, len - header.offset)?
            == bytes[..(len - header.offset) as usize];
    if tail_is_ours {
        if len < end {
            let mut f = OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.write_all(&bytes[(len - header.offset) as usize..])
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot complete a cut append to {}", path.display()))?;
            eprintln!(
                "kubeanon: completed an append to {} that an earlier run left cut",
                path.display()
            );
        }
    } else {
        eprintln!(
            "kubeanon: warning: an append to {} was cut, and the file was changed since (rotated or edited): \
             it was left as it is, and that append's rows are delivered again",
            path.display()
        );
    }
    output::remove_synced(&pending)
}

fn length(path: &Path) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

fn digest_at(path: &Path, offset: u64, len: u64) -> Result<Digest> {
    Ok(Digest::of(&read_at(path, offset, len)?))
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} to cut back a failed append", path.display()))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot cut back a failed append to {}", path.display()))
}
