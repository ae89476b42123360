//! Deliveries as immutable objects: each delivered step of a unit is one
//! gzip ndjson object, written once (`If-None-Match: *`) and never
//! replaced, under a key that S3-reading tools partition by:
//!
//! ```text
//! PREFIX/account=A/region=R/cluster=C/dt=YYYY-MM-DD/START-END-UNIT-SEQ.ndjson.gz
//! ```
//!
//! - `account`, `region`: the unit's; `cluster`: the EKS cluster name of its
//!   log group (the log group itself for others), percent-encoded as unit
//!   keys are (Hive and Athena decode `%XX` in partition values).
//! - `dt`: the UTC date the window starts on (a window across midnight is
//!   filed under its first day).
//! - `START`, `END`: the window `[START, END)` in UTC, `20261129T010000.000Z`,
//!   so names sort by time.
//! - `UNIT`: 16 hex digits of the unit's hash: two log groups that map to
//!   one cluster name never share a name.
//! - `SEQ`: the unit's delivery sequence number (kept in its state): a
//!   window delivered again on purpose (`--rebaseline --start`) gets a new
//!   object instead of colliding with the first.
//!
//! Names start with a digit, never `_` or `.`, which Hive-style readers
//! skip. The object carries `Content-Type: application/x-ndjson`,
//! `Content-Encoding: gzip` and the SHA-256 of its uncompressed rows as
//! `x-amz-meta-rows-sha256`: a repeated write of the same step finds the
//! object there with the same rows (success: exactly once follows from the
//! key); the same key with other rows means a second writer and is an
//! error, never an overwrite.
//!
//! # Recovery: claim or find
//!
//! A run that finds a delivery pending in a unit's state looks for its
//! key: there with the recorded digest, it is delivered. Absent, the
//! writer may still be on its way (a PUT held past its timeout lands
//! late), so recovery first **claims** the key: it creates, with
//! `If-None-Match`, a valid gzip stream of no rows marked
//! `x-amz-meta-kubeanon-claim`. Any late PUT of the key then fails its own
//! `If-None-Match`, every reader of the prefix reads the claim as zero rows
//! (it is a well-formed, empty ndjson.gz), and the step's events are read
//! again into the unit's next sequence number, another key.
//!
//! # Parquet: Amazon Security Lake's layout
//!
//! With `--format parquet` each delivered step is one Parquet file of OCSF
//! 1.1.0 Security Findings (`crate::output`'s parquet format), laid out as
//! Security Lake's custom sources are, the partitions directly under the
//! prefix (for Security Lake, the source's `s3://LAKE/ext/SOURCE/`):
//!
//! ```text
//! PREFIX/region=R/accountId=A/eventDay=YYYYMMDD/START-END-UNIT-SEQ.parquet
//! ```
//!
//! `eventDay` is the UTC day of the step's window, which holds one day
//! only: `poll` cuts its steps at UTC midnight for this format. The name is
//! as above; the digest in `x-amz-meta-rows-sha256` is the file's own, and
//! a claim is a valid Parquet file of no records (every reader of the
//! prefix reads it as zero rows), with the same claim metadata.

use std::io::Write;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::output::{Format, Parts, Rows, Style, empty_parquet};
use crate::state::protocol::{self, Found, Pending, Prepared, Target};
use crate::state::s3::{Bucket, PutExtra};
use crate::state::unit::{WorkUnit, hex, segment};

/// The metadata name (`x-amz-meta-rows-sha256`) of the rows' digest.
pub const ROWS_SHA256: &str = "rows-sha256";
/// The metadata name of a claim (`x-amz-meta-kubeanon-claim`).
pub const CLAIM: &str = "kubeanon-claim";

/// What one delivery object holds: a unit's rows over a window.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryName<'a> {
    pub unit: &'a WorkUnit,
    /// The cluster name for the partition (`cloudwatch::cluster_name`).
    pub cluster: &'a str,
    /// The window `[start_ms, end_ms)`, ms since the epoch.
    pub start_ms: i64,
    pub end_ms: i64,
    /// The unit's delivery sequence number.
    pub seq: u64,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// This call wrote the object.
    Written,
    /// The object was there already with the same rows (a retry, or a step
    /// delivered again after a crash before its commit).
    AlreadyThere,
}

/// The delivery target: a bucket and prefix (`--deliver s3://B/P/`),
/// and the style of its documents (ndjson, or OCSF with `--format ocsf`;
/// `--rollup` rolls them up).
#[derive(Debug, Clone)]
pub struct Deliveries {
    bucket: Bucket,
    style: Style,
}

impl Deliveries {
    pub fn new(bucket: Bucket, style: Style) -> Self {
        let style = Style {
            format: match style.format {
                Format::Ocsf => Format::Ocsf,
                Format::Parquet => Format::Parquet,
                _ => Format::Ndjson,
            },
            colour: false,
            ..style
        };
        Deliveries { bucket, style }
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The object key for `name` (see the module docs).
    pub fn key(&self, name: &DeliveryName<'_>) -> Result<String> {
        let prefix = &self.bucket.url().prefix;
        match self.style.format {
            Format::Parquet => lake_key_under(prefix, name),
            _ => key_under(prefix, name),
        }
    }

    /// Writes `ndjson` (the step's rows) gzipped to `key`, once; a
    /// Parquet key takes a Parquet file, written as it is.
    pub async fn put(&self, key: &str, ndjson: &[u8]) -> Result<Delivered> {
        let digest = hex(&Sha256::digest(ndjson));
        if is_parquet(key) {
            return self.put_body(key, ndjson, &digest).await;
        }
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(ndjson)
            .and_then(|()| gz.flush())
            .context("cannot compress a delivery")?;
        let body = gz.finish().context("cannot compress a delivery")?;
        self.put_body(key, &body, &digest).await
    }

    /// Writes `body` (gzip of rows whose SHA-256 is `digest`, or a Parquet
    /// file and its own digest) to `key`, once.
    async fn put_body(&self, key: &str, body: &[u8], digest: &str) -> Result<Delivered> {
        let (content_type, content_encoding) = body_type(key);
        let extra = PutExtra {
            content_type: Some(content_type),
            content_encoding,
            metadata: &[(ROWS_SHA256, digest)],
        };
        if self.bucket.put_new(key, body, &extra).await?.is_some() {
            return Ok(Delivered::Written);
        }
        match self.bucket.metadata(key).await? {
            Some(meta) if meta.get(ROWS_SHA256).map(String::as_str) == Some(digest) => {
                Ok(Delivered::AlreadyThere)
            }
            Some(meta) if meta.contains_key(CLAIM) => bail!(
                "{} was claimed by another run's recovery while this one wrote it (this run's lease had                  expired): that run reads the step again, and this run's rows are not delivered twice",
                self.bucket.display(key)
            ),
            Some(meta) => bail!(
                "{} already exists with other rows ({}): another writer delivered this unit's window \
                 (two runs without a shared lease, or another kubeanon's state). kubeanon never overwrites a delivery: \
                 compare that object with this run's rows, delete it if it is wrong, and run again",
                self.bucket.display(key),
                match meta.get(ROWS_SHA256) {
                    Some(_) => "a different rows-sha256",
                    None => "not written by kubeanon",
                }
            ),
            None => bail!(
                "{} was there and is gone again: something else deletes deliveries",
                self.bucket.display(key)
            ),
        }
    }
}

/// Hashes what is written through it and gzips it: a delivery is rendered
/// once, and never held uncompressed.
struct HashGz {
    sha: Sha256,
    len: u64,
    gz: GzEncoder<Vec<u8>>,
}

impl Write for HashGz {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha.update(buf);
        self.len += buf.len() as u64;
        self.gz.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Deliveries {
    /// A rendered step, placed at its key; `digest` None: the bytes' own.
    fn prepared(
        &self,
        unit: &WorkUnit,
        (start_ms, end_ms): (i64, i64),
        seq: u64,
        parts: &Parts,
        bytes: Vec<u8>,
        digest: Option<protocol::Digest>,
    ) -> Result<Option<Prepared<String>>> {
        let key = self.key(&DeliveryName {
            unit,
            cluster: unit.cluster(),
            start_ms,
            end_ms,
            seq,
        })?;
        Ok(Some(Prepared {
            digest: digest.unwrap_or_else(|| protocol::Digest::of(&bytes)),
            bytes,
            place: Some((key.clone(), None)),
            hold: key,
            rows: parts.written.rows,
            worst: parts.written.worst,
        }))
    }
}

/// Whether `key` names a Parquet delivery (a pending one may be of an
/// earlier run's format: its key says which).
fn is_parquet(key: &str) -> bool {
    key.ends_with(".parquet")
}

/// The Content-Type and Content-Encoding of the object at `key`.
fn body_type(key: &str) -> (&'static str, Option<&'static str>) {
    if is_parquet(key) {
        ("application/vnd.apache.parquet", None)
    } else {
        ("application/x-ndjson", Some("gzip"))
    }
}

impl Target for Deliveries {
    type Hold = String;

    async fn prepare(
        &self,
        unit: &WorkUnit,
        (start_ms, end_ms): (i64, i64),
        seq: u64,
        rows: &Rows<'_>,
    ) -> Result<Option<Prepared<String>>> {
        if rows.findings.is_empty() {
            return Ok(None);
        }
        // Each object is a whole document.
        let mut parts = Parts::new(self.style, None);
        if self.style.format == Format::Parquet {
            // A Parquet file is compressed inside: written as it is, its
            // digest its own.
            let mut bytes = Vec::new();
            parts
                .write(rows, &mut bytes)
                .and_then(|()| parts.finish(rows, &mut bytes))
                .context("cannot render a delivery")?;
            return self.prepared(unit, (start_ms, end_ms), seq, &parts, bytes, None);
        }
        let mut w = HashGz {
            sha: Sha256::new(),
            len: 0,
            gz: GzEncoder::new(Vec::new(), Compression::default()),
        };
        parts
            .write(rows, &mut w)
            .and_then(|()| parts.finish(rows, &mut w))
            .context("cannot render a delivery")?;
        let digest = protocol::Digest {
            len: w.len,
            sha256: hex(&w.sha.finalize()),
        };
        let bytes = w.gz.finish().context("cannot compress a delivery")?;
        self.prepared(unit, (start_ms, end_ms), seq, &parts, bytes, Some(digest))
    }

    fn objects_in(&self) -> Option<(&'static str, &'static str)> {
        Some(("S3", "object"))
    }

    async fn write(&self, p: Prepared<String>) -> Result<bool> {
        Ok(self.put_body(&p.hold, &p.bytes, &p.digest.sha256).await? == Delivered::Written)
    }

    async fn claim_or_find(&self, pending: &Pending) -> Result<Found> {
        let key = &pending.key;
        let ours = |meta: &std::collections::HashMap<String, String>| match &pending.rows {
            Some(d) => meta.get(ROWS_SHA256) == Some(&d.sha256),
            // Recorded before intents carried a digest: a kubeanon object.
            None => meta.contains_key(ROWS_SHA256),
        };
        for _ in 0..2 {
            match self.bucket.metadata(key).await? {
                Some(meta) if meta.contains_key(CLAIM) => return Ok(Found::Absent),
                Some(meta) if ours(&meta) => return Ok(Found::Delivered),
                Some(_) => bail!(
                    "{} holds other rows than the delivery recorded for it: another writer                      (two runs without a shared lease, or another kubeanon's state). kubeanon never overwrites a delivery:                      compare that object with the unit's state, delete it if it is wrong, and run again",
                    self.bucket.display(key)
                ),
                None => {
                    // A late write of the recorded rows must not land after
                    // the step is read again: claim the key first.
                    let empty = if is_parquet(key) {
                        empty_parquet().context("cannot make a claim")?
                    } else {
                        GzEncoder::new(Vec::new(), Compression::default())
                            .finish()
                            .context("cannot compress a claim")?
                    };
                    let (content_type, content_encoding) = body_type(key);
                    let extra = PutExtra {
                        content_type: Some(content_type),
                        content_encoding,
                        metadata: &[(CLAIM, "1")],
                    };
                    if self.bucket.put_new(key, &empty, &extra).await?.is_some() {
                        return Ok(Found::Absent);
                    }
                    // The late write landed meanwhile: look again.
                }
            }
        }
        bail!(
            "{} keeps changing while this run settles it",
            self.bucket.display(key)
        )
    }
}

/// The object key for `name` under `prefix` (empty, or ending in `/`).
pub fn key_under(prefix: &str, name: &DeliveryName<'_>) -> Result<String> {
    if name.end_ms <= name.start_ms {
        bail!("a delivery window must not be empty");
    }
    let (start, end) = (utc(name.start_ms)?, utc(name.end_ms)?);
    Ok(format!(
        "{prefix}account={}/region={}/cluster={}/dt={}/{}-{}-{}-{}.ndjson.gz",
        segment(&name.unit.account),
        segment(&name.unit.region),
        segment(name.cluster),
        start.format("%Y-%m-%d"),
        start.format("%Y%m%dT%H%M%S%.3fZ"),
        end.format("%Y%m%dT%H%M%S%.3fZ"),
        name.unit.short_hash(),
        name.seq
    ))
}

/// The Parquet object key for `name` under `prefix`, in Security Lake's
/// partitions (see the module docs). The window must lie within one UTC
/// day: its `eventDay`.
pub fn lake_key_under(prefix: &str, name: &DeliveryName<'_>) -> Result<String> {
    if name.end_ms <= name.start_ms {
        bail!("a delivery window must not be empty");
    }
    let (start, end) = (utc(name.start_ms)?, utc(name.end_ms)?);
    if utc(name.end_ms - 1)?.date_naive() != start.date_naive() {
        bail!("a Parquet delivery holds one UTC day, and {start} to {end} crosses midnight");
    }
    Ok(format!(
        "{prefix}region={}/accountId={}/eventDay={}/{}-{}-{}-{}.parquet",
        segment(&name.unit.region),
        segment(&name.unit.account),
        start.format("%Y%m%d"),
        start.format("%Y%m%dT%H%M%S%.3fZ"),
        end.format("%Y%m%dT%H%M%S%.3fZ"),
        name.unit.short_hash(),
        name.seq
    ))
}

fn utc(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .with_context(|| format!("{ms} ms is not a time a delivery can be named by"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cluster prod's hour from 2026-11-29T01:00:00Z, its 7th delivery.
    fn prod_name(unit: &WorkUnit) -> DeliveryName<'_> {
        DeliveryName {
            unit,
            cluster: "prod",
            start_ms: 1_795_914_000_000,
            end_ms: 1_795_917_600_500,
            seq: 7,
        }
    }

    #[test]
    fn keys_are_partitioned_and_name_the_unit_and_window() {
        let unit = WorkUnit::new("111122223333", "eu-west-1", "/aws/eks/prod/cluster").unwrap();
        let name = prod_name(&unit);
        let key = key_under("findings/", &name).unwrap();
        assert_eq!(
            key,
            format!(
                "findings/account=111122223333/region=eu-west-1/cluster=prod/dt=2026-11-29/\
                 20261129T010000.000Z-20261129T020000.500Z-{}-7.ndjson.gz",
                unit.short_hash()
            )
        );
        // Another log group of the same cluster name, or another sequence
        // number, is another object.
        let other = WorkUnit::new("111122223333", "eu-west-1", "prod").unwrap();
        assert_ne!(
            key_under(
                "findings/",
                &DeliveryName {
                    unit: &other,
                    ..name
                }
            )
            .unwrap(),
            key
        );
        assert_ne!(
            key_under("findings/", &DeliveryName { seq: 8, ..name }).unwrap(),
            key
        );
    }

    #[test]
    fn parquet_keys_are_security_lakes_partitions_of_one_day() {
        let unit = WorkUnit::new("111122223333", "eu-west-1", "/aws/eks/prod/cluster").unwrap();
        let name = prod_name(&unit);
        assert_eq!(
            lake_key_under("ext/kubeanon/", &name).unwrap(),
            format!(
                "ext/kubeanon/region=eu-west-1/accountId=111122223333/eventDay=20261129/\
                 20261129T010000.000Z-20261129T020000.500Z-{}-7.parquet",
                unit.short_hash()
            )
        );
        // Up to midnight is the day; past it, another day, refused.
        let midnight = 1_795_910_400_000 + 86_400_000; // 2026-11-30T00:00:00Z
        let to_midnight = DeliveryName {
            end_ms: midnight,
            ..name
        };
        assert!(
            lake_key_under("p/", &to_midnight)
                .unwrap()
                .contains("/eventDay=20261129/")
        );
        let across = DeliveryName {
            end_ms: midnight + 1,
            ..name
        };
        assert!(lake_key_under("p/", &across).is_err());
        let next = DeliveryName {
            start_ms: midnight,
            end_ms: midnight + 1,
            ..name
        };
        assert!(
            lake_key_under("p/", &next)
                .unwrap()
                .contains("/eventDay=20261130/")
        );
        let hostile = WorkUnit::new("1/../x", "r=/y", "g").unwrap();
        let key = lake_key_under(
            "p/",
            &DeliveryName {
                unit: &hostile,
                ..name
            },
        )
        .unwrap();
        assert_eq!(key.matches('/').count(), 4, "{key}");
    }

    #[test]
    fn hostile_cluster_names_stay_inside_their_segment() {
        let unit = WorkUnit::new("1", "r", "/x/../../y").unwrap();
        let name = DeliveryName {
            unit: &unit,
            cluster: "/x/../../y\n=",
            start_ms: 0,
            end_ms: 1,
            seq: 0,
        };
        let key = key_under("p/", &name).unwrap();
        assert!(
            key.contains("/cluster=%2Fx%2F%2E%2E%2F%2E%2E%2Fy%0A%3D/"),
            "{key}"
        );
        assert_eq!(key.matches('/').count(), 5, "{key}");
        assert!(key_under("p/", &DeliveryName { end_ms: 0, ..name }).is_err());
        assert!(
            key_under(
                "p/",
                &DeliveryName {
                    start_ms: i64::MAX - 1,
                    end_ms: i64::MAX,
                    ..name
                }
            )
            .is_err()
        );
    }
}
