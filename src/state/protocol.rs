//! The delivery protocol, written once for every state store, lock and
//! target: a unit's lock taken, its state loaded and a delivery an earlier
//! run left pending settled, then per step: the intent (where the rows go,
//! with their digest) recorded in the state, the rows written, the state
//! moved past them; finally the lock given back.
//!
//! ```text
//! open(unit):   lock (held elsewhere: skip, say by whom) -> load state
//!               pending P?  target.claim_or_find(P): delivered -> commit P
//!                                                   absent    -> claimed: a late write of P is
//!                                                                harmless; P's events are read again
//! step(rows):   lost lock? stop.   no rows -> commit
//!               exactly-once target: record P = (place, digest, commit) -> lost lock? stop -> write -> commit
//!               at-least-once target (stdout, -o): write -> commit (a crash between repeats the rows)
//! close:        lock released on every path (a crash leaves it to expire)
//! ```
//!
//! Exactly once follows from the order: the intent is in the state before
//! the rows exist, the rows exist before the state moves past them, the
//! state is replaced only from the version this run read or wrote
//! (compare-and-swap), and recovery looks at the target itself. The
//! properties are tested once, against this code, with the in-memory
//! backends of [`super::memory`] (scripted crashes, late writes, expiring
//! locks, lost swaps), and hold for every store and target.

use std::future::Future;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Commit, GroupState};
use crate::detect::Severity;
use crate::fleet::WorkUnit;
use crate::output::Rows;
use crate::testhooks;

/// The unit state's version (the S3 state object's `version`).
pub const VERSION: u32 = 1;

/// A unit's state: its checkpoint entry, the next delivery's sequence
/// number, and the delivery recorded before its rows were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitDoc {
    pub version: u32,
    pub group: GroupState,
    pub seq: u64,
    pub pending: Option<Pending>,
}

/// A delivery whose rows may or may not have been written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Where the rows go: an object key, or an append file's path.
    pub key: String,
    /// An append file's length before the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The rows' length and SHA-256 (absent in an S3 state written before
    /// intents carried it: any kubeanon object at the key is then its).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Digest>,
    /// A journal of before the append target's lock: a short tail after
    /// the offset can only be this write's own, and is cut back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_back: bool,
    pub commit: Commit,
}

/// The length and SHA-256 (hex) of a step's rendered rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub len: u64,
    pub sha256: String,
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest {
            len: bytes.len() as u64,
            sha256: super::unit::hex(&sha2::Sha256::digest(bytes)),
        }
    }
}

/// Another run replaced a unit's state between this run's read and write.
#[derive(Debug)]
pub struct StateChanged;

impl std::fmt::Display for StateChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "another run changed this unit's state while this one held its lock (the lock had expired: \
             a step took longer than --lease allows, or a clock jumped); this run stops the unit and leaves \
             the other's state as it is",
        )
    }
}

impl std::error::Error for StateChanged {}

/// Where units' states are kept: loaded with a version, replaced only
/// from that version.
pub trait Store {
    type Version: Clone;
    /// The unit's state and its version; None before its first commit.
    fn load(
        &self,
        unit: &WorkUnit,
    ) -> impl Future<Output = Result<Option<(UnitDoc, Self::Version)>>>;
    /// Replaces the unit's state if it is still at `expected` (None: it
    /// has none). A lost race is [`StateChanged`].
    fn cas(
        &self,
        unit: &WorkUnit,
        doc: &UnitDoc,
        expected: Option<&Self::Version>,
    ) -> impl Future<Output = Result<Self::Version>>;
    /// How messages name where the unit's state is: a checkpoint file,
    /// "the S3 state of UNIT".
    fn describe(&self, unit: &WorkUnit) -> String;
    /// The unit's entry, when the store holds every entry at hand (a
    /// checkpoint file): a run checks them all against its flags before
    /// it reads anything. None: known only once the unit is opened.
    fn local_entry(&self, _unit: &WorkUnit) -> Option<Option<GroupState>> {
        None
    }
}

/// Who may work on a unit: one run at a time.
pub trait Locks {
    type Guard: Guard;
    /// The unit's lock; `Err(who)` inside `Ok` when another run holds it.
    fn acquire(
        &self,
        unit: &WorkUnit,
    ) -> impl Future<Output = Result<std::result::Result<Self::Guard, String>>>;
}

/// A lock this run holds.
pub trait Guard {
    /// Fails once the lock is lost (its renewal, in the background, found
    /// it taken over): nothing more may be written for the unit.
    fn check(&self) -> impl Future<Output = Result<()>>;
    /// Gives it back (only while it is still this run's).
    fn release(self) -> impl Future<Output = Result<()>>;
}

/// A step's rows, rendered for a target and placed in it.
pub struct Prepared<H> {
    /// The bytes the target writes.
    pub bytes: Vec<u8>,
    /// Where, for an exactly-once target (recorded before the write).
    pub place: Option<(String, Option<u64>)>,
    /// The digest recovery compares with what it finds.
    pub digest: Digest,
    /// What the target holds until the write (an append file's lock).
    pub hold: H,
    /// The rows, and the worst severity among them.
    pub rows: u64,
    pub worst: Option<Severity>,
}

/// What recovery found of a pending delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The rows are there: the pending commit applies.
    Delivered,
    /// They are not, and can no longer appear (claimed, or cut back): the
    /// step's events are read again.
    Absent,
}

/// Where rows go.
pub trait Target {
    type Hold;
    /// Renders a step's rows and places them; None when there is nothing
    /// to write (no rows, in a format without a document per step).
    fn prepare(
        &self,
        unit: &WorkUnit,
        window: (i64, i64),
        seq: u64,
        rows: &Rows<'_>,
    ) -> impl Future<Output = Result<Option<Prepared<Self::Hold>>>>;
    /// Writes prepared rows. Ok(false): they were there already (a repeat).
    fn write(&self, prepared: Prepared<Self::Hold>) -> impl Future<Output = Result<bool>>;
    /// Settles a pending delivery by looking at the target.
    fn claim_or_find(&self, pending: &Pending) -> impl Future<Output = Result<Found>>;
    /// Commits wait for the end of the run (a replaced file appears only
    /// then): the state is written at [`Protocol::close`].
    fn defers_commits(&self) -> bool {
        false
    }
    /// Ends the run's output (closes a JSON array, renames a replaced
    /// file into place).
    fn finish(&self, _empty: &Rows<'_>) -> Result<()> {
        Ok(())
    }
    /// Where the summary says deliveries went, and what one is called
    /// (`("S3", "object")`); None for a stream of rows.
    fn objects_in(&self) -> Option<(&'static str, &'static str)> {
        None
    }
}

/// One store, its locks and one target: the protocol.
pub struct Protocol<S, L, T> {
    pub store: S,
    pub locks: L,
    pub target: T,
}

/// A unit this run holds.
pub struct Held<S: Store, G> {
    pub unit: WorkUnit,
    guard: G,
    /// The state as last written (or to be written).
    pub doc: UnitDoc,
    version: Option<S::Version>,
    /// What settling found of a pending delivery, and where it was.
    pub settled: Option<(Found, String)>,
    /// Commits applied in memory, to be written at close.
    dirty: bool,
    /// The horizon the dedup cap moved to, when it did.
    pub capped: Option<i64>,
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stepped {
    /// Rows written by this step, and the worst among them.
    pub rows: u64,
    pub worst: Option<Severity>,
    /// Whether anything was written (an object, bytes).
    pub wrote: bool,
}

impl<S: Store, G> Held<S, G> {
    /// The unit's entry, None before its first commit.
    pub fn entry(&self) -> Option<&GroupState> {
        (!self.doc.group.is_placeholder()).then_some(&self.doc.group)
    }
}

impl<S: Store, L: Locks, T: Target> Protocol<S, L, T> {
    /// Takes `unit`'s lock and loads its state, settling a pending
    /// delivery. `Err(who)` inside `Ok` when another run holds the unit.
    /// The lock is released on every failure.
    pub async fn open(
        &self,
        unit: &WorkUnit,
    ) -> Result<std::result::Result<Held<S, L::Guard>, String>> {
        let guard = match self.locks.acquire(unit).await? {
            Ok(g) => g,
            Err(who) => return Ok(Err(who)),
        };
        let loaded = match self.store.load(unit).await {
            Ok(l) => l,
            Err(e) => {
                let _ = guard.release().await;
                return Err(e);
            }
        };
        let (doc, version) = match loaded {
            Some((doc, v)) => (Some(doc), Some(v)),
            None => (None, None),
        };
        let mut held = Held {
            unit: unit.clone(),
            guard,
            doc: doc.unwrap_or_else(|| UnitDoc {
                version: VERSION,
                group: GroupState::empty(unit),
                seq: 0,
                pending: None,
            }),
            version,
            settled: None,
            dirty: false,
            capped: None,
        };
        match self.settle(&mut held).await {
            Ok(()) => Ok(Ok(held)),
            Err(e) => {
                let _ = held.guard.release().await;
                Err(e)
            }
        }
    }

    async fn settle(&self, held: &mut Held<S, L::Guard>) -> Result<()> {
        if held.doc.version != VERSION {
            return Err(anyhow!(
                "{} has version {}, this kubeanon reads {VERSION}",
                self.store.describe(&held.unit),
                held.doc.version
            ));
        }
        let Some(p) = held.doc.pending.clone() else {
            return Ok(());
        };
        // An earlier run recorded this delivery and stopped. Settling
        // may write (a claim): only while the lock is held.
        held.guard.check().await?;
        let found = self.target.claim_or_find(&p).await?;
        if found == Found::Delivered {
            held.capped = held.doc.group.apply(&p.commit);
        }
        // Either way the key is used up: delivered, or claimed.
        held.doc.seq += 1;
        held.doc.pending = None;
        held.settled = Some((found, p.key));
        self.save(held).await
    }

    /// Puts `group` as the unit's state for this run (a first run's, a
    /// rebaseline's, or the one loaded, checked), written with the next
    /// step.
    pub fn adopt(&self, held: &mut Held<S, L::Guard>, group: GroupState) {
        held.doc.group = group;
    }

    /// One step: its rows and the commit that moves the state past them.
    pub async fn step(
        &self,
        held: &mut Held<S, L::Guard>,
        window: (i64, i64),
        rows: &Rows<'_>,
        commit: &Commit,
    ) -> Result<Stepped> {
        held.guard.check().await?;
        let Some(prepared) = self
            .target
            .prepare(&held.unit, window, held.doc.seq, rows)
            .await?
        else {
            self.commit(held, commit).await?;
            return Ok(Stepped {
                rows: 0,
                worst: None,
                wrote: false,
            });
        };
        let (n, worst) = (prepared.rows, prepared.worst);
        if let Some((key, offset)) = prepared.place.clone() {
            // 1. The intent is in the state before the rows exist.
            held.doc.pending = Some(Pending {
                key,
                offset,
                rows: Some(prepared.digest.clone()),
                cut_back: false,
                commit: commit.clone(),
            });
            self.save(held).await?;
            testhooks::pause();
            testhooks::crash_at("after-pending");
            held.guard.check().await?;
        }
        // 2. The rows, once.
        let wrote = self.target.write(prepared).await?;
        testhooks::pause();
        testhooks::crash_at("after-output");
        // 3. The state moves past them.
        held.doc.pending = None;
        held.doc.seq += 1;
        self.commit(held, commit).await?;
        Ok(Stepped {
            rows: n,
            worst,
            wrote,
        })
    }

    async fn commit(&self, held: &mut Held<S, L::Guard>, commit: &Commit) -> Result<()> {
        if let Some(h) = held.doc.group.apply(commit) {
            held.capped = Some(h);
        }
        if self.target.defers_commits() {
            held.dirty = true;
            return Ok(());
        }
        self.save(held).await
    }

    /// Writes what waited for the end of the run (a deferring target),
    /// then gives the lock back. `flush`: false when the run's output did
    /// not complete, so nothing that waited for it may be committed.
    pub async fn close(&self, mut held: Held<S, L::Guard>, flush: bool) -> Result<()> {
        let saved = if held.dirty && flush {
            self.save(&mut held).await
        } else {
            Ok(())
        };
        let released = held.guard.release().await;
        saved.and(released)
    }

    /// Writes the unit's state from the version last read or written.
    async fn save(&self, held: &mut Held<S, L::Guard>) -> Result<()> {
        held.guard.check().await?;
        let v = self
            .store
            .cas(&held.unit, &held.doc, held.version.as_ref())
            .await?;
        held.version = Some(v);
        held.dirty = false;
        Ok(())
    }
}
