//! State, leases and deliveries in S3: the building blocks for running
//! `poll` as many processes (a Kubernetes Indexed Job, two overlapping
//! CronJobs, a laptop) over one fleet, with no shared disk and no lock
//! server. S3's conditional writes are the only coordination.
//!
//! - [`unit`]: a work unit (account, region, log group), its key path and
//!   stable hash; any log group name becomes a safe key segment.
//! - [`shard`]: `--shard I/N` and which units it takes.
//! - [`s3`]: a bucket and prefix; read with ETag, create-if-absent,
//!   replace-if-unchanged, delete-if-unchanged. A lost race is a typed
//!   [`LostRace`], never an overwrite.
//! - [`States`]: one state object per unit, `PREFIX/state/<unit>.json`,
//!   compare-and-swap on its ETag.
//! - [`lease`]: one lease object per unit, `PREFIX/lease/<unit>.json`, so
//!   two runs never work on one unit at once and a crashed run's units are
//!   free again when its lease expires.
//! - [`deliveries`]: one immutable gzip ndjson object per delivered step,
//!   under a partition-friendly key.
//!
//! # The protocol, per unit
//!
//! ```text
//! acquire the unit's lease (held by another run: skip the unit, say who holds it and until when)
//! read the unit's state (bytes, ETag); none yet: a first run
//! if the state records a pending delivery K:            (an earlier run stopped mid-step)
//!     K exists -> apply the pending commit, clear it, replace state (If-Match)
//!     K absent -> clear it (the step is read again), replace state (If-Match)
//! for each step (read a window, detect):
//!     lease.ensure()                                      (renews at half its time; fails once lost)
//!     no rows -> apply the commit, replace state (If-Match), next step
//!     K = the delivery key (unit, window, the state's next sequence number)
//!     1. record K and the step's commit as pending in the state, replace (If-Match)
//!     2. lease.ensure(); write the rows to K (If-None-Match: *)
//!            already there with the same rows -> fine (a retry, or 1-2 repeated)
//!            already there with other rows   -> stop the unit: another writer
//!     3. apply the commit, clear pending, replace state (If-Match)
//! release the lease (delete If-Match: only while it is still ours)
//! ```
//!
//! Every state replace is conditional on the ETag read or last written: a
//! [`LostRace`] means another run advanced the unit (its lease expired
//! under this one), so this run stops that unit and leaves the state as
//! the other run wrote it. Exactly once follows from the order: the key is
//! in the state before the object exists, the object exists before the
//! state moves past it, and a key is never written twice (`If-None-Match`).
//! A crash anywhere leaves either no pending key (nothing written, or
//! written and committed) or a pending key that the next holder settles by
//! looking for the object. The lease is what keeps a second writer out
//! between step 1 and step 2: a holder writes only with at least half its
//! lease left (see [`lease`] for the clocks).

pub mod file;
pub mod lease;
#[cfg(test)]
mod memory;
pub mod protocol;
pub mod s3;
pub mod shard;
pub mod unit;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::lease::{Acquire, Lease, LeaseInfo, Leases};
pub use self::s3::{Bucket, CasError, Condition, ETag, LostRace, Versioned};
pub use self::shard::{Shard, shard_of};
pub use self::unit::WorkUnit;

use crate::exit::UsageError;

/// `s3://BUCKET/PREFIX/`, checked: a bucket name S3 accepts, a prefix of
/// non-empty segments ending in `/` (or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl S3Url {
    /// Parses `flag`'s value. A missing trailing `/` is added: the prefix
    /// names a folder, never the start of a file name.
    pub fn parse(flag: &str, text: &str) -> Result<S3Url, UsageError> {
        let bad = |why: &str| {
            UsageError(format!(
                "{flag} '{}': {why} (expected s3://BUCKET/PREFIX/)",
                crate::output::neutralise_terminal(text)
            ))
        };
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
            && !bucket.contains("..");
        if !valid_bucket {
            return Err(bad(
                "the bucket name must be 3-63 lower-case letters, digits, dots and hyphens",
            ));
        }
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() {
            if prefix
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(bad("the prefix has an empty, '.' or '..' segment"));
            }
            if prefix.chars().any(crate::output::is_hidden) {
                return Err(bad("the prefix has control or invisible characters"));
            }
            if prefix.len() > 512 {
                return Err(bad("the prefix is longer than 512 bytes"));
            }
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The units' state objects: `PREFIX/state/<account>/<region>/<log
/// group>.json`, one per unit, so shards can be re-cut without moving
/// state. The bytes are the caller's (the checkpoint model's JSON).
#[derive(Debug, Clone)]
pub struct States {
    bucket: Bucket,
}

impl States {
    pub fn new(bucket: Bucket) -> Self {
        States { bucket }
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The unit's state object key.
    pub fn key(&self, unit: &WorkUnit) -> String {
        format!("{}state/{}.json", self.bucket.url().prefix, unit.path())
    }

    /// The unit's state and its ETag; None before its first commit.
    pub async fn read(&self, unit: &WorkUnit) -> Result<Option<Versioned>> {
        self.bucket.read(&self.key(unit), s3::MAX_OBJECT).await
    }

    /// Creates the unit's first state (`If-None-Match: *`).
    pub async fn create(&self, unit: &WorkUnit, body: &[u8]) -> Result<ETag, CasError> {
        self.write(unit, body, None).await
    }

    /// Replaces the state read with `etag` (`If-Match`).
    pub async fn replace(
        &self,
        unit: &WorkUnit,
        body: &[u8],
        etag: &ETag,
    ) -> Result<ETag, CasError> {
        self.write(unit, body, Some(etag)).await
    }

    /// Creates (`prev` None) or replaces (`prev` the ETag read or last
    /// written) the unit's state.
    pub async fn write(
        &self,
        unit: &WorkUnit,
        body: &[u8],
        prev: Option<&ETag>,
    ) -> Result<ETag, CasError> {
        let cond = prev.map_or(Condition::Absent, Condition::Is);
        let extra = s3::PutExtra {
            content_type: Some("application/json"),
            ..Default::default()
        };
        self.bucket.put(&self.key(unit), body, cond, &extra).await
    }

    /// [`read`](Self::read), parsed as JSON.
    pub async fn read_json<T: DeserializeOwned>(
        &self,
        unit: &WorkUnit,
    ) -> Result<Option<(T, ETag)>> {
        let Some(v) = self.read(unit).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&v.body).with_context(|| {
            format!(
                "the state of {unit} ({}) is not kubeanon state (corrupt or written by something else); \
                 restore an earlier version (bucket versioning) or delete it to start that unit over",
                self.bucket.display(&self.key(unit))
            )
        })?;
        Ok(Some((value, v.etag)))
    }

    /// [`write`](Self::write), as JSON.
    pub async fn write_json<T: Serialize>(
        &self,
        unit: &WorkUnit,
        value: &T,
        prev: Option<&ETag>,
    ) -> Result<ETag, CasError> {
        let body = serde_json::to_vec(value).map_err(|e| CasError::Failed(e.into()))?;
        self.write(unit, &body, prev).await
    }
}

impl protocol::Store for States {
    type Version = ETag;

    async fn load(&self, unit: &WorkUnit) -> Result<Option<(protocol::UnitDoc, ETag)>> {
        self.read_json(unit).await
    }

    async fn cas(
        &self,
        unit: &WorkUnit,
        doc: &protocol::UnitDoc,
        expected: Option<&ETag>,
    ) -> Result<ETag> {
        match self.write_json(unit, doc, expected).await {
            Ok(etag) => Ok(etag),
            Err(CasError::LostRace(_)) => Err(anyhow::Error::new(protocol::StateChanged)
                .context(format!("the S3 state of {unit}"))),
            Err(CasError::Failed(e)) => Err(e),
        }
    }

    fn describe(&self, unit: &WorkUnit) -> String {
        format!("the S3 state of {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        let u = S3Url::parse("--checkpoint", "s3://my-bucket/kube/anon").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("my-bucket", "kube/anon/")
        );
        assert_eq!(u.to_string(), "s3://my-bucket/kube/anon/");
        let u = S3Url::parse("--checkpoint", "s3://my.bucket").unwrap();
        assert_eq!(u.prefix, "");
        assert_eq!(S3Url::parse("--x", "s3://b12/p/").unwrap().prefix, "p/");
        for (bad, says) in [
            ("/tmp/x", "not an s3:// URL"),
            ("s3://", "bucket name"),
            ("s3://Bucket/x", "bucket name"),
            ("s3://ab/x", "bucket name"),
            ("s3://-ab/x", "bucket name"),
            ("s3://bucket/a//b/", "empty"),
            ("s3://bucket/a/../b", "'..'"),
            ("s3://bucket/a\u{1b}[2J/", "control"),
        ] {
            let err = S3Url::parse("--deliver", bad).unwrap_err().0;
            assert!(
                err.contains("--deliver") && err.contains(says),
                "{bad}: {err}"
            );
            assert!(!err.contains('\u{1b}'), "{err:?}");
        }
    }
}
