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
//! - [`securityhub::SecurityHub`]: ASFF findings upserted by id; a step
//!   delivered again updates the same findings (exactly once in effect).
//! - [`hec::Hec`]: Splunk HEC batches, committed once HEC accepted them
//!   (with `--hec-ack`, once it reports them indexed). At least once: only
//!   the step in flight at a crash is sent again.
//!
//! [`Delivery`] is the one target a run has: `poll` builds it from
//! `--deliver` (or stdout, -o, --append) and runs the protocol over it.

pub mod append;
pub mod hec;
pub mod s3;
pub mod securityhub;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::exit::UsageError;
use crate::fleet::WorkUnit;
use crate::output::{Out, Parts, Rows, Style, Target as Where};
use crate::state::S3Url;
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
            return Err(pending_elsewhere(pending, "to a file"));
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

/// A step's rows rendered through `parts` for a target that records
/// nothing before it writes (Security Hub, HEC); None when there are none.
fn unplaced<H>(
    mut parts: Parts,
    rows: &Rows<'_>,
    hold: H,
    what: &str,
) -> Result<Option<Prepared<H>>> {
    if rows.findings.is_empty() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    parts
        .write(rows, &mut bytes)
        .with_context(|| format!("cannot render {what}"))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Prepared {
        digest: Digest::of(&bytes),
        bytes,
        place: None,
        hold,
        rows: parts.written.rows,
        worst: parts.written.worst,
    }))
}

/// A delivery an earlier run left pending in another target than this
/// run's (a run with other flags): only a run with that target can settle
/// it. `here`: where this run delivers ("to HEC").
pub fn pending_elsewhere(pending: &Pending, here: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the previous run left a delivery to {} pending, and this run delivers {here}. \
         Run once more with the --deliver (or --append) it had, to settle it",
        crate::output::neutralise_terminal(&pending.key)
    )
}

/// Where `--deliver` sends rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `s3://BUCKET/PREFIX/`: immutable objects.
    Objects(S3Url),
    /// `securityhub`, `securityhub:REGION`: imported in REGION (a central
    /// aggregation region), else in each unit's own.
    SecurityHub { region: Option<String> },
    /// `hec+https://HOST[:PORT][/PATH]`.
    Hec(hec::Endpoint),
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination, UsageError> {
        let shown = crate::output::neutralise_terminal(text);
        if text.starts_with("s3://") {
            return Ok(Destination::Objects(S3Url::parse("--deliver", text)?));
        }
        if text == "securityhub" {
            return Ok(Destination::SecurityHub { region: None });
        }
        if let Some(region) = text.strip_prefix("securityhub:") {
            let valid = !region.is_empty()
                && region.len() <= 32
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(UsageError(format!(
                    "--deliver {shown}: not a region (securityhub:us-east-1)"
                )));
            }
            return Ok(Destination::SecurityHub {
                region: Some(region.to_string()),
            });
        }
        if let Some(rest) = text.strip_prefix("hec+") {
            return Ok(Destination::Hec(hec::Endpoint::parse(rest)?));
        }
        Err(UsageError(format!(
            "--deliver {shown}: expected s3://BUCKET/PREFIX/, securityhub, securityhub:REGION or hec+https://HOST:PORT"
        )))
    }
}

/// The run's one target: stdout and files, S3 objects, Security Hub or
/// HEC. The protocol runs over it without knowing which.
pub enum Delivery {
    Local(Local),
    Objects(s3::Deliveries),
    SecurityHub(securityhub::SecurityHub),
    Hec(Box<hec::Hec>),
}

/// What a prepared step of a [`Delivery`] holds until its write.
pub enum Held {
    Local(Hold),
    Objects(String),
    Import(securityhub::Import),
    Batches,
}

impl<H> Prepared<H> {
    fn with_hold<K>(self, f: impl FnOnce(H) -> K) -> Prepared<K> {
        Prepared {
            bytes: self.bytes,
            place: self.place,
            digest: self.digest,
            hold: f(self.hold),
            rows: self.rows,
            worst: self.worst,
        }
    }
}

impl Target for Delivery {
    type Hold = Held;

    async fn prepare(
        &self,
        unit: &WorkUnit,
        window: (i64, i64),
        seq: u64,
        rows: &Rows<'_>,
    ) -> Result<Option<Prepared<Held>>> {
        Ok(match self {
            Delivery::Local(t) => t
                .prepare(unit, window, seq, rows)
                .await?
                .map(|p| p.with_hold(Held::Local)),
            Delivery::Objects(t) => t
                .prepare(unit, window, seq, rows)
                .await?
                .map(|p| p.with_hold(Held::Objects)),
            Delivery::SecurityHub(t) => t
                .prepare(unit, window, seq, rows)
                .await?
                .map(|p| p.with_hold(Held::Import)),
            Delivery::Hec(t) => t
                .prepare(unit, window, seq, rows)
                .await?
                .map(|p| p.with_hold(|()| Held::Batches)),
        })
    }

    async fn write(&self, p: Prepared<Held>) -> Result<bool> {
        let mut held = None;
        let p = p.with_hold(|h| held = Some(h));
        match (self, held) {
            (Delivery::Local(t), Some(Held::Local(h))) => t.write(p.with_hold(|()| h)).await,
            (Delivery::Objects(t), Some(Held::Objects(h))) => t.write(p.with_hold(|()| h)).await,
            (Delivery::SecurityHub(t), Some(Held::Import(h))) => t.write(p.with_hold(|()| h)).await,
            (Delivery::Hec(t), Some(Held::Batches)) => t.write(p).await,
            _ => bail!("a step prepared for one target was written to another"),
        }
    }

    async fn claim_or_find(&self, pending: &Pending) -> Result<Found> {
        match self {
            Delivery::Local(t) => t.claim_or_find(pending).await,
            Delivery::Objects(t) => t.claim_or_find(pending).await,
            Delivery::SecurityHub(t) => t.claim_or_find(pending).await,
            Delivery::Hec(t) => t.claim_or_find(pending).await,
        }
    }

    fn defers_commits(&self) -> bool {
        match self {
            Delivery::Local(t) => t.defers_commits(),
            _ => false,
        }
    }

    fn finish(&self, empty: &Rows<'_>) -> Result<()> {
        match self {
            Delivery::Local(t) => t.finish(empty),
            _ => Ok(()),
        }
    }

    fn objects_in(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Delivery::Local(_) => None,
            Delivery::Objects(t) => t.objects_in(),
            Delivery::SecurityHub(_) => Some(("Security Hub", "step")),
            Delivery::Hec(_) => Some(("HEC", "step")),
        }
    }
}
