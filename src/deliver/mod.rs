//! Delivery targets: where a run's rows go, each behind the protocol's
//! [`Target`] (`crate::state::protocol`), which decides when state moves.
//!
//! - [`Local`]: stdout, a device, `--output FILE` and `--append FILE`.
//!   - stdout and devices: rows, then the commit. At least once: a crash
//!     in between repeats the step's rows, with the same row ids.
//!   - `--output FILE`: a temporary file renamed into place at the end of
//!     the run; the run's commits are written only after that. At least
//!     once, as stdout: a crash after the rename repeats the run's rows.
//!   - `--append FILE`: exactly once (see [`append`]): the target is
//!     locked for each append and for its recovery, and the pending
//!     write's bytes are kept with the target, so any run taking the lock
//!     next settles a cut write, whichever checkpoint it has.
//! - [`s3::Deliveries`]: immutable objects, exactly once.

pub mod append;
pub mod s3;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::fleet::WorkUnit;
use crate::output::{Out, Parts, Rows, Style, Target as Where};
use crate::state::protocol::{Digest, Found, Pending, Prepared, Target};
use crate::testhooks;

/// Stdout, a device, a replaced file or an append file, shared by the
/// run's units: one step's rows at a time, through one document.
pub struct Local {
    inner: Arc<Mutex<Inner>>,
    /// The append file (absolute): exactly once.
    append: Option<PathBuf>,
    /// A replaced file: commits wait for its rename.
    replace: bool,
}

struct Inner {
    out: Option<Out>,
    parts: Parts,
}

/// What a prepared step holds until its write: the output (one step at a
/// time), the document's state after it, and an append's lock and offset.
pub struct Hold {
    inner: OwnedMutexGuard<Inner>,
    parts: Parts,
    append: Option<(append::Locked, u64)>,
}

impl Local {
    /// Opens the target. An append target is made absolute first: the
    /// pending record must name the same file from any working directory.
    pub fn open(style: Style, target: &Where) -> Result<Self> {
        let target = match target {
            Where::Append(p) => Where::Append(
                crate::checkpoint::resolve(p)
                    .with_context(|| format!("cannot resolve {}", p.display()))?,
            ),
            t => t.clone(),
        };
        let out = Out::open(&target)?;
        let parts = Parts::new(style, out.existing_header());
        Ok(Local {
            append: match &target {
                Where::Append(p) => Some(p.clone()),
                _ => None,
            },
            replace: matches!(out, Out::Replace(_)),
            inner: Arc::new(Mutex::new(Inner {
                out: Some(out),
                parts,
            })),
        })
    }
}

impl Target for Local {
    type Hold = Hold;

    async fn prepare(
        &self,
        _: &WorkUnit,
        _: (i64, i64),
        _: u64,
        rows: &Rows<'_>,
    ) -> Result<Option<Prepared<Hold>>> {
        let inner = Arc::clone(&self.inner).lock_owned().await;
        // Rendered with a copy of the document's state, kept only once
        // the bytes are written (a failed step leaves no half header).
        let mut parts = inner.parts.clone();
        let mut bytes = Vec::new();
        parts
            .write(rows, &mut bytes)
            .context("cannot render the rows")?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let (place, append) = match &self.append {
            None => (None, None),
            Some(path) => {
                let locked = append::Locked::take(path).await?;
                let offset = locked.offset()?;
                (
                    Some((path.display().to_string(), Some(offset))),
                    Some((locked, offset)),
                )
            }
        };
        let written = parts.written;
        let rows = written.rows - inner.parts.written.rows;
        Ok(Some(Prepared {
            digest: Digest::of(&bytes),
            bytes,
            place,
            hold: Hold {
                inner,
                parts,
                append,
            },
            rows,
            worst: written.worst,
        }))
    }

    async fn write(&self, p: Prepared<Hold>) -> Result<bool> {
        let Hold {
            mut inner,
            parts,
            append,
        } = p.hold;
        let out = inner.out.as_mut().context("the output is closed")?;
        match append {
            Some((locked, offset)) => locked.append(out, offset, &p.bytes)?,
            None => out.write(|w| w.write_all(&p.bytes))?,
        }
        inner.parts = parts;
        Ok(true)
    }

    async fn claim_or_find(&self, pending: &Pending) -> Result<Found> {
        let path = PathBuf::from(&pending.key);
        if !path.is_absolute() || pending.offset.is_none() {
            bail!(
                "the previous run left a delivery to {} pending: it wrote to S3, this run writes to a file. \
                 Run once more with the --deliver it had, to settle it",
                crate::output::neutralise_terminal(&pending.key)
            );
        }
        append::claim_or_find(&path, pending).await
    }

    fn defers_commits(&self) -> bool {
        self.replace
    }

    fn finish(&self, empty: &Rows<'_>) -> Result<()> {
        // Every step has ended: nothing else holds the output.
        let mut inner = self
            .inner
            .try_lock()
            .context("the output is still in use")?;
        let Inner { out, parts } = &mut *inner;
        let Some(mut o) = out.take() else {
            return Ok(());
        };
        o.write(|w| parts.finish(empty, w))?;
        o.finish()?;
        if self.replace {
            testhooks::crash_at("after-output");
        }
        Ok(())
    }
}
