//! Leases: one object per unit, `PREFIX/lease/<unit>.json`, holding who
//! works on the unit and until when.
//!
//! - acquire: no lease -> create it (`If-None-Match: *`); a lease past its
//!   expiry -> replace it (`If-Match` on the expired lease's ETag, so of two
//!   runs taking it over only one wins); a live lease -> [`Acquire::Held`].
//! - renew: replace our lease (`If-Match` on the ETag we wrote). It succeeds
//!   exactly when nobody took the lease over, even if it had expired.
//! - release: delete it (`If-Match`: only while it is still ours).
//!
//! # Clocks
//!
//! The expiry is a time on **S3's clock** (ms since the epoch), so that
//! runs on machines whose clocks disagree compare it against one clock.
//! Each run estimates S3's time as its own clock minus the offset the
//! `Date` header of S3's latest response showed ([`ServerClock`], as for
//! CloudWatch). `Date` has whole seconds and is written before the answer
//! travels, so the estimate is at most about a second *behind* S3's real
//! time and never ahead of it:
//!
//! - a taker sees a lease as expired only when its estimate is past the
//!   expiry, so only after S3's real time is: a machine whose clock is
//!   hours ahead does not take a live lease (its offset cancels out);
//! - a holder counts its time on its monotonic clock from the moment it
//!   sent the write, and gives itself [`CLOCK_ERROR`] less than the lease
//!   (which covers the estimate being up to a second behind when the expiry
//!   was computed). It writes only while at least half the lease is left,
//!   so any write it starts has `ttl/2 - CLOCK_ERROR` to land before anyone
//!   may take over, and [`Leases::new`] refuses a lease shorter than twice
//!   that plus the longest an S3 request can take ([`shortest`]: 3
//!   attempts of `--attempt-timeout` and their backoff; 3 minutes and 6 s
//!   for the default 30 s).
//!
//! Clock drift during one lease (parts per million) is not a concern.
//!
//! [`ServerClock`]: crate::source::cloudwatch::ServerClock

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::s3::{Bucket, CasError, Condition, ETag, PutExtra};
use super::unit::WorkUnit;
use crate::output::neutralise_terminal;

/// How far a holder's estimate of S3's time may be behind S3's real time
/// when it computes an expiry: the `Date` header's second, and the time
/// its answer took to arrive.
pub const CLOCK_ERROR: Duration = Duration::from_secs(2);

/// Largest lease object accepted.
const MAX_LEASE: u64 = 64 << 10;

const VERSION: u32 = 1;

/// The lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u32,
    holder: String,
    /// S3's time (ms since the epoch) after which others may take it.
    expires_ms: i64,
    /// The unit, for people reading the bucket.
    unit: String,
}

/// Who holds a unit's lease, and until when (S3's clock, ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub holder: String,
    pub expires_ms: i64,
}

impl std::fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.expires_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| self.expires_ms.to_string());
        write!(
            f,
            "held by {} until {until}",
            neutralise_terminal(&self.holder)
        )
    }
}

/// What [`Leases::acquire`] found.
#[derive(Debug)]
pub enum Acquire {
    /// This run holds the unit.
    Acquired(Lease),
    /// Another run holds it and its lease has not expired.
    Held(LeaseInfo),
}

/// The leases of one state prefix, taken in one holder's name.
#[derive(Debug, Clone)]
pub struct Leases {
    bucket: Bucket,
    ttl: Duration,
    holder: String,
}

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    unit: WorkUnit,
    key: String,
    etag: ETag,
    ttl: Duration,
    /// When the latest acquire or renew was sent (monotonic).
    sent: Instant,
    expires_ms: i64,
}

impl Leases {
    /// Leases lasting `ttl`, in the name of `holder` (unique per run: see
    /// [`holder_id`]). `ttl` must be at least [`shortest`] for the bucket.
    pub fn new(bucket: Bucket, ttl: Duration, holder: String) -> Result<Self> {
        let min = shortest(&bucket);
        if ttl < min {
            bail!(
                "a lease of {} is too short: S3 requests may take up to {} ({} attempts of --attempt-timeout), \
                 and a holder writes only with half its lease left, less {}s for S3's clock; use at least {}",
                humantime::format_duration(ttl),
                humantime::format_duration(bucket.longest_request()),
                super::s3::ATTEMPTS,
                CLOCK_ERROR.as_secs(),
                humantime::format_duration(Duration::from_secs(min.as_secs_f64().ceil() as u64))
            );
        }
        Ok(Leases {
            bucket,
            ttl,
            holder,
        })
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The unit's lease object key.
    pub fn key(&self, unit: &WorkUnit) -> String {
        format!("{}lease/{}.json", self.bucket.url().prefix, unit.path())
    }

    /// Takes the unit's lease if nobody holds it or its holder's lease has
    /// expired; otherwise says who holds it.
    pub async fn acquire(&self, unit: &WorkUnit) -> Result<Acquire> {
        let key = self.key(unit);
        // Twice at most: a race lost to another taker is answered by the
        // lease it wrote.
        for _ in 0..2 {
            // The read also samples S3's clock.
            let current = self.bucket.read(&key, MAX_LEASE).await?;
            let prev = match &current {
                None => None,
                Some(v) => {
                    let body = self.parse(&key, &v.body)?;
                    if self.bucket.server_now_ms() <= body.expires_ms {
                        return Ok(Acquire::Held(LeaseInfo {
                            holder: body.holder,
                            expires_ms: body.expires_ms,
                        }));
                    }
                    tracing::debug!(unit = %unit, holder = %neutralise_terminal(&body.holder), "taking over an expired lease");
                    Some(&v.etag)
                }
            };
            match self.write(unit, &key, prev).await {
                Ok(lease) => return Ok(Acquire::Acquired(lease)),
                Err(CasError::LostRace(lost)) => match lost.current {
                    Some(v) => {
                        let body = self.parse(&key, &v.body)?;
                        return Ok(Acquire::Held(LeaseInfo {
                            holder: body.holder,
                            expires_ms: body.expires_ms,
                        }));
                    }
                    // Released between our read and write: look again.
                    None => continue,
                },
                Err(CasError::Failed(e)) => return Err(e),
            }
        }
        bail!(
            "the lease of {unit} ({}) keeps changing: another run is taking and releasing it",
            self.bucket.display(&key)
        )
    }

    /// Renews `lease` when less than half of it is left. Fails when it was
    /// taken over (after it expired) or deleted: this run must then stop
    /// working on the unit and write nothing more for it.
    pub async fn ensure(&self, lease: &mut Lease) -> Result<()> {
        if lease.sent.elapsed() < self.ttl / 2 {
            return Ok(());
        }
        self.renew(lease).await
    }

    /// Renews `lease` now.
    pub async fn renew(&self, lease: &mut Lease) -> Result<()> {
        match self.write(&lease.unit, &lease.key, Some(&lease.etag)).await {
            Ok(renewed) => {
                *lease = renewed;
                Ok(())
            }
            Err(CasError::LostRace(lost)) => {
                let now = match lost.current {
                    Some(v) => match self.parse(&lease.key, &v.body) {
                        Ok(b) => LeaseInfo {
                            holder: b.holder,
                            expires_ms: b.expires_ms,
                        }
                        .to_string(),
                        Err(_) => "changed by something else".to_string(),
                    },
                    None => "deleted".to_string(),
                };
                Err(anyhow::Error::new(LeaseLost(format!(
                    "lost the lease of {} after it expired (now {now}): this run wrote nothing more for it",
                    lease.unit
                ))))
            }
            Err(CasError::Failed(e)) => Err(e),
        }
    }

    /// Deletes the lease if it is still ours. Ok(false): it had been taken
    /// over (or deleted) already.
    pub async fn release(&self, lease: Lease) -> Result<bool> {
        self.bucket.delete_if(&lease.key, &lease.etag).await
    }

    /// Writes a lease in our name from now for `ttl`.
    async fn write(
        &self,
        unit: &WorkUnit,
        key: &str,
        prev: Option<&ETag>,
    ) -> Result<Lease, CasError> {
        let sent = Instant::now();
        let expires_ms = self.bucket.server_now_ms()
            + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let body = Body {
            version: VERSION,
            holder: self.holder.clone(),
            expires_ms,
            unit: unit.path(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| CasError::Failed(e.into()))?;
        let cond = prev.map_or(Condition::Absent, Condition::Is);
        let extra = PutExtra {
            content_type: Some("application/json"),
            ..Default::default()
        };
        let etag = self.bucket.put(key, &bytes, cond, &extra).await?;
        Ok(Lease {
            unit: unit.clone(),
            key: key.to_string(),
            etag,
            ttl: self.ttl,
            sent,
            expires_ms,
        })
    }

    fn parse(&self, key: &str, bytes: &[u8]) -> Result<Body> {
        match serde_json::from_slice::<Body>(bytes) {
            Ok(b) if b.version == VERSION => Ok(b),
            _ => bail!(
                "{} is not a kubeanon lease (corrupt, or another version's): \
                 if no kubeanon run is working on that unit, delete it",
                self.bucket.display(key)
            ),
        }
    }
}

impl Lease {
    pub fn unit(&self) -> &WorkUnit {
        &self.unit
    }

    /// The expiry written (S3's clock, ms since the epoch).
    pub fn expires_ms(&self) -> i64 {
        self.expires_ms
    }

    /// How long this run may still count on the lease without renewing.
    pub fn remaining(&self) -> Duration {
        (self.ttl.saturating_sub(CLOCK_ERROR)).saturating_sub(self.sent.elapsed())
    }
}

/// The shortest lease that still covers a write started with half of it
/// left: twice ([`CLOCK_ERROR`] + the bucket's longest request).
pub fn shortest(bucket: &Bucket) -> Duration {
    shortest_for(bucket.longest_request())
}

/// [`shortest`] for requests that take up to `longest_request` (known
/// from `--attempt-timeout` before any bucket is reached).
pub fn shortest_for(longest_request: Duration) -> Duration {
    (CLOCK_ERROR + longest_request) * 2
}

/// A holder name unique to this run, that says where it runs: the host
/// name (a pod's name in Kubernetes), the process id, and a random part.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!(
        "{}/{}/{:08x}",
        neutralise_terminal(&host),
        std::process::id(),
        fastrand::u32(..)
    )
}

/// The lease was taken over (after it expired) or deleted.
#[derive(Debug)]
pub struct LeaseLost(String);

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LeaseLost {}

/// A held lease, renewed in the background: every write of the unit
/// checks it first ([`super::protocol::Guard::check`]).
pub struct LeaseGuard {
    leases: Leases,
    lease: std::sync::Arc<tokio::sync::Mutex<Lease>>,
    /// Set by the renewer when the lease was taken over or deleted.
    lost: tokio::sync::watch::Receiver<Option<String>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl super::protocol::Locks for Leases {
    type Guard = LeaseGuard;

    async fn acquire(&self, unit: &WorkUnit) -> Result<std::result::Result<LeaseGuard, String>> {
        let lease = match Leases::acquire(self, unit).await? {
            Acquire::Acquired(l) => l,
            Acquire::Held(info) => return Ok(Err(info.to_string())),
        };
        let lease = std::sync::Arc::new(tokio::sync::Mutex::new(lease));
        let (tx, lost) = tokio::sync::watch::channel(None);
        let renewer = tokio::spawn(renew_in_background(
            self.clone(),
            std::sync::Arc::clone(&lease),
            tx,
        ));
        Ok(Ok(LeaseGuard {
            leases: self.clone(),
            lease,
            lost,
            renewer,
        }))
    }
}

/// Renews the lease every quarter of its time, so a unit waiting on the
/// request pacer or reading a long step keeps it; says once it is lost.
async fn renew_in_background(
    leases: Leases,
    lease: std::sync::Arc<tokio::sync::Mutex<Lease>>,
    lost: tokio::sync::watch::Sender<Option<String>>,
) {
    loop {
        tokio::time::sleep(leases.ttl / 4).await;
        let mut l = lease.lock().await;
        match leases.renew(&mut l).await {
            Ok(()) => {}
            // Taken over or deleted: nothing more may be written.
            Err(e) if e.is::<LeaseLost>() => {
                lost.send_replace(Some(format!("{e:#}")));
                return;
            }
            // A failed request: tried again next time; a write checks
            // the time left itself.
            Err(e) => tracing::debug!(unit = %l.unit, error = %e, "lease renewal failed"),
        }
    }
}

impl super::protocol::Guard for LeaseGuard {
    async fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.borrow().clone() {
            bail!("{why}");
        }
        // Renewed here too when less than half is left (the renewer
        // may be behind): a write starts only with half the lease left.
        let mut l = self.lease.lock().await;
        self.leases.ensure(&mut l).await
    }

    async fn release(self) -> Result<()> {
        let LeaseGuard {
            leases,
            lease,
            renewer,
            ..
        } = self;
        // Stopped only while it holds no renewal in flight: one cut off
        // after S3 applied it would leave a lease whose ETag this run never
        // learnt, which it then could not delete (the next run would wait
        // for it to expire).
        let held = lease.lock().await;
        renewer.abort();
        let _ = renewer.await;
        drop(held);
        let lease = std::sync::Arc::try_unwrap(lease)
            .map_err(|_| anyhow!("the lease is still in use"))?
            .into_inner();
        leases.release(lease).await.map(|_| ())
    }
}
