//! The per-unit protocol of the module docs, for `poll`: take a unit's
//! lease, read its state and settle a delivery an earlier run left pending,
//! then per step deliver (pending key in the state, the object, the commit)
//! and finally give the lease back.

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use super::{Acquire, CasError, Deliveries, DeliveryName, ETag, Lease, LeaseInfo, Leases, States};
use crate::checkpoint::{Commit, GroupState};
use crate::fleet::WorkUnit;
use crate::testhooks;

/// The state object's version.
pub const VERSION: u32 = 1;

/// A unit's state object: the checkpoint entry (as in a local
/// checkpoint), the next delivery's sequence number, and the delivery
/// recorded before its object was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitDoc {
    pub version: u32,
    pub group: GroupState,
    pub seq: u64,
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub key: String,
    pub commit: Commit,
}

/// Where a run keeps state and delivers, in S3.
pub struct S3Run {
    pub states: States,
    pub leases: Leases,
    pub deliveries: Deliveries,
}

/// A unit this run holds: its lease, its state as last written, and that
/// write's ETag (None before the unit's first write).
pub struct Held {
    pub unit: WorkUnit,
    lease: Lease,
    pub doc: Option<UnitDoc>,
    etag: Option<ETag>,
    /// What settling found: the pending delivery was complete (committed
    /// now) or not (read again).
    pub settled: Option<bool>,
}

/// How a step ended in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// No rows: only the state moved.
    Committed,
    /// One new object.
    Delivered,
    /// The object was there already with these rows (a repeated step).
    AlreadyThere,
}

impl S3Run {
    /// Takes `unit`'s lease and reads its state, settling a pending
    /// delivery. `Err(info)` inside `Ok` when another run holds the unit.
    pub async fn open(&self, unit: &WorkUnit) -> Result<Result<Held, LeaseInfo>> {
        let lease = match self.leases.acquire(unit).await? {
            Acquire::Acquired(l) => l,
            Acquire::Held(info) => return Ok(Err(info)),
        };
        let mut held = Held {
            unit: unit.clone(),
            lease,
            doc: None,
            etag: None,
            settled: None,
        };
        if let Some((doc, etag)) = self.states.read_json::<UnitDoc>(unit).await? {
            if doc.version != VERSION {
                return Err(anyhow!(
                    "the state of {unit} has version {}, this kubeanon reads {VERSION}",
                    doc.version
                ));
            }
            held.doc = Some(doc);
            held.etag = Some(etag);
        }
        let pending = held.doc.as_mut().and_then(|d| d.pending.take());
        if let Some(p) = pending {
            // An earlier run recorded this delivery and stopped: the object
            // is there (commit it) or not (its events are read again).
            let there = self.deliveries.exists(&p.key).await?;
            if let Some(doc) = held.doc.as_mut()
                && there
            {
                doc.group.apply(&p.commit);
                doc.seq += 1;
            }
            held.settled = Some(there);
            self.write(&mut held).await?;
        }
        Ok(Ok(held))
    }

    /// Puts `group` as the unit's state (checked for this run: a first
    /// run's, a rebaseline's, or the one read),
    /// written with the next step.
    pub fn adopt(&self, held: &mut Held, group: GroupState) {
        let seq = held.doc.as_ref().map_or(0, |d| d.seq);
        held.doc = Some(UnitDoc {
            version: VERSION,
            group,
            seq,
            pending: None,
        });
    }

    /// One step: `ndjson` holds its rows (empty: none), `commit` its state.
    pub async fn step(
        &self,
        held: &mut Held,
        (start_ms, end_ms): (i64, i64),
        ndjson: &[u8],
        commit: &Commit,
    ) -> Result<Stepped> {
        self.leases.ensure(&mut held.lease).await?;
        let doc = held
            .doc
            .as_mut()
            .expect("a held unit has its state adopted");
        if ndjson.is_empty() {
            doc.group.apply(commit);
            self.write(held).await?;
            return Ok(Stepped::Committed);
        }
        let key = self.deliveries.key(&DeliveryName {
            unit: &held.unit,
            cluster: held.unit.cluster(),
            start_ms,
            end_ms,
            seq: doc.seq,
        })?;
        // 1. The key is in the state before the object exists.
        doc.pending = Some(Pending {
            key: key.clone(),
            commit: commit.clone(),
        });
        self.write(held).await?;
        testhooks::pause();
        testhooks::crash_at("after-pending");
        // 2. The object, once (If-None-Match).
        self.leases.ensure(&mut held.lease).await?;
        let written = self.deliveries.put(&key, ndjson).await?;
        testhooks::pause();
        testhooks::crash_at("after-output");
        // 3. The state moves past it.
        let doc = held.doc.as_mut().expect("adopted above");
        doc.group.apply(commit);
        doc.pending = None;
        doc.seq += 1;
        self.write(held).await?;
        Ok(match written {
            super::Delivered::Written => Stepped::Delivered,
            super::Delivered::AlreadyThere => Stepped::AlreadyThere,
        })
    }

    /// Gives the lease back (only while it is still this run's).
    pub async fn close(&self, held: Held) -> Result<()> {
        self.leases.release(held.lease).await.map(|_| ())
    }

    /// Writes the unit's state, conditional on the ETag last read or
    /// written: a lost race stops the unit and never overwrites.
    async fn write(&self, held: &mut Held) -> Result<()> {
        let doc = held
            .doc
            .as_ref()
            .expect("only a unit with state is written");
        match self
            .states
            .write_json(&held.unit, doc, held.etag.as_ref())
            .await
        {
            Ok(etag) => {
                held.etag = Some(etag);
                Ok(())
            }
            Err(CasError::LostRace(_)) => Err(anyhow!(
                "another run changed the state of {} while this one held its lease (its lease had expired: \
                 a step took longer than --lease allows, or a clock jumped); this run stops the unit and leaves \
                 the other's state as it is",
                held.unit
            )),
            Err(CasError::Failed(e)) => Err(e),
        }
    }
}
