//! The shared detection core: match, fill, group, count.
//!
//! Reimplements Splunk ESCU "Kubernetes AWS detect suspicious kubectl
//! calls" (042a3d32-8318-4763-9679-09db2644a8f2, v4):
//!
//! ```text
//! `kube_audit` user.username="system:anonymous" user.groups{} IN ("system:unauthenticated")
//! | fillnull
//! | stats count by objectRef.name objectRef.namespace objectRef.resource requestReceivedTimestamp
//!     requestURI responseStatus.code sourceIPs{} stage user.groups{} user.uid user.username userAgent verb
//! | rename sourceIPs{} as src_ip, user.username as user | `..._filter`
//! ```
//!
//! Sources hand records (raw JSON bytes) to [`Detector::feed`]; the detector
//! knows nothing of files or CloudWatch. Results come out as [`Finding`]s.

mod exclude;
mod prefilter;

use std::borrow::Cow;

use std::hash::BuildHasher;

use sha2::{Digest, Sha256};

use crate::audit::{Event, Record, Shape};
pub use exclude::Exclusion;
pub use prefilter::Prefilter;

/// Output column names, in order. The first 13 are the by-fields.
pub const COLUMNS: [&str; 14] = [
    "objectRef.name",
    "objectRef.namespace",
    "objectRef.resource",
    "requestReceivedTimestamp",
    "requestURI",
    "responseStatus.code",
    "src_ip",
    "stage",
    "user.groups{}",
    "user.uid",
    "user",
    "userAgent",
    "verb",
    "count",
];
const SRC_IP: usize = 6;
const GROUPS: usize = 8;

const USERNAME: &str = "system:anonymous";
const GROUP: &str = "system:unauthenticated";
/// SPL `fillnull`'s value.
pub const FILL: &str = "0";
/// How deep wrappers may nest (a CloudWatch event in an `events` document).
const MAX_DEPTH: u8 = 3;

/// The rule: `user.username="system:anonymous" user.groups{} IN
/// ("system:unauthenticated")`, as Splunk evaluates it (ASCII case-insensitive,
/// on unescaped values, `groups` an array).
pub fn matches(event: &Event<'_, '_>) -> bool {
    event
        .username()
        .is_some_and(|u| u.eq_ignore_ascii_case(USERNAME))
        && event.groups().iter().any(|g| g.eq_ignore_ascii_case(GROUP))
}

/// Counters a run reports in its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records read: audit events, or lines/messages judged cheaply.
    pub events: u64,
    /// Records that are not a JSON object (truncated, binary, cut lines).
    pub malformed: u64,
    /// Events that matched the rule.
    pub matched: u64,
    /// Matched events already counted by an earlier run (poll only).
    pub duplicates: u64,
    /// Result rows dropped by `--exclude` (each event/value pair once).
    pub excluded: u64,
}

impl Stats {
    pub fn merge(&mut self, other: &Stats) {
        self.events += other.events;
        self.malformed += other.malformed;
        self.matched += other.matched;
        self.duplicates += other.duplicates;
        self.excluded += other.excluded;
    }
}

/// One group of the `stats count by ...` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Opaque tag the source chose (poll: which region and log group).
    pub scope: u32,
    /// The 13 by-field values, in [`COLUMNS`] order, in the aggregate's
    /// key encoding (see [`Key`]); read them with [`Finding::cols`].
    key: Box<[u8]>,
    pub count: u64,
    /// Order-independent combination (wrapping sum) of the hashes of the
    /// CloudWatch eventIds counted here; 0 when events carry no id.
    pub ids: u128,
}

impl Finding {
    /// The 13 by-field values, in [`COLUMNS`] order.
    pub fn cols(&self) -> [Cow<'_, str>; 13] {
        Key::decode(&self.key)
    }

    /// A stable id for this row: same log group, values and events give the
    /// same id, so a row delivered twice can be recognised downstream.
    pub fn id(&self, scope_label: &str) -> String {
        let mut h = Sha256::new();
        h.update(scope_label.as_bytes());
        for col in &self.cols() {
            h.update([0]);
            h.update(col.as_bytes());
        }
        h.update([0]);
        h.update(self.ids.to_be_bytes());
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The aggregate's key: the 13 values and the scope in one byte string, so
/// that a row costs one allocation, an existing row none, and rows sort
/// with a byte comparison. Each value is written with its NUL bytes
/// escaped as `00 FF` and ended by `00 00`, which keeps byte order equal
/// to value-by-value order (a value sorts before its extensions); the
/// scope follows as 4 big-endian bytes, so it sorts last.
struct Key;

impl Key {
    /// `decoded` says whether the value went through JSON unescaping: raw
    /// JSON text cannot hold a NUL byte, so only such a value needs the
    /// check.
    fn push_value(buf: &mut Vec<u8>, value: &str, decoded: bool) {
        let bytes = value.as_bytes();
        if !decoded || memchr::memchr(0, bytes).is_none() {
            buf.extend_from_slice(bytes);
        } else {
            for &b in bytes {
                buf.push(b);
                if b == 0 {
                    buf.push(0xff);
                }
            }
        }
        buf.extend_from_slice(&[0, 0]);
    }

    fn decode(key: &[u8]) -> [Cow<'_, str>; 13] {
        let mut rest = key;
        std::array::from_fn(|_| {
            let (value, tail) = Self::split_value(rest);
            rest = tail;
            value
        })
    }

    /// The first value of `key` and what follows it.
    fn split_value(key: &[u8]) -> (Cow<'_, str>, &[u8]) {
        let mut i = 0;
        let mut escaped = false;
        while let Some(nul) = memchr::memchr(0, &key[i..]) {
            let at = i + nul;
            if key.get(at + 1) == Some(&0xff) {
                escaped = true;
                i = at + 2;
                continue;
            }
            let raw = &key[..at];
            let value = if escaped {
                let mut v = Vec::with_capacity(raw.len());
                let mut j = 0;
                while j < raw.len() {
                    v.push(raw[j]);
                    j += if raw[j] == 0 { 2 } else { 1 };
                }
                Cow::Owned(String::from_utf8_lossy(&v).into_owned())
            } else {
                // Keys are built from `&str`s: this never goes lossy.
                std::str::from_utf8(raw)
                    .map_or_else(|_| String::from_utf8_lossy(raw), Cow::Borrowed)
            };
            return (value, &key[(at + 2).min(key.len())..]);
        }
        (Cow::Borrowed(""), &[])
    }
}

/// The 128-bit hash of one CloudWatch eventId.
pub fn event_hash(event_id: &str) -> u128 {
    let digest = Sha256::digest(event_id.as_bytes());
    u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: u64,
    ids: u128,
}

/// `stats count by` the 13 fields, plus the source's scope tag. Memory grows
/// with the number of distinct rows, not with the input. The hasher is
/// seeded per process (the keys are attacker-chosen), and each key is
/// hashed once: the hash is kept for lookups and growth.
#[derive(Debug, Default, Clone)]
pub struct Aggregator {
    rows: hashbrown::HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
}

#[derive(Debug, Clone)]
struct Entry {
    key: Box<[u8]>,
    hash: u64,
    tally: Tally,
}

impl Aggregator {
    /// Counts `count` events with these `ids` in the row with this key.
    fn add(&mut self, key: &[u8], count: u64, ids: u128) {
        let hash = self.hasher.hash_one(key);
        match self.rows.find_mut(hash, |e| *e.key == *key) {
            Some(e) => {
                e.tally.count += count;
                e.tally.ids = e.tally.ids.wrapping_add(ids);
            }
            None => {
                let entry = Entry {
                    key: key.into(),
                    hash,
                    tally: Tally { count, ids },
                };
                self.rows.insert_unique(hash, entry, |e| e.hash);
            }
        }
    }

    /// Adds another partial aggregate into this one (same as having fed
    /// both inputs to one aggregator).
    pub fn merge(&mut self, other: Aggregator) {
        for e in other.rows {
            self.add(&e.key, e.tally.count, e.tally.ids);
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, sorted by the 13 columns in order, then by scope.
    pub fn into_findings(self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .rows
            .into_iter()
            .map(|Entry { key, tally, .. }| {
                let split = key.len().saturating_sub(4);
                let scope = key[split..].try_into().map_or(0, u32::from_be_bytes);
                Finding {
                    scope,
                    key,
                    count: tally.count,
                    ids: tally.ids,
                }
            })
            .collect();
        // The key encoding makes byte order the column order.
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Where a record came from, as far as the core needs to know.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// Scope tag copied into the findings.
    pub scope: u32,
    /// The CloudWatch eventId, when the source has one.
    pub event_id: Option<&'a str>,
}

/// The detection core. Feed it records; take the findings at the end.
#[derive(Default)]
pub struct Detector {
    prefilter: Prefilter,
    exclusions: Vec<Exclusion>,
    agg: Aggregator,
    /// Reused for building row keys.
    key: Vec<u8>,
    pub stats: Stats,
}

/// What [`Detector::feed`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// No event in it matched (or it was malformed).
    Nothing,
    /// At least one event matched and was counted.
    Matched,
}

impl Detector {
    pub fn new(exclusions: Vec<Exclusion>) -> Self {
        Detector {
            exclusions,
            ..Default::default()
        }
    }

    /// Feeds one record: an audit event, a CloudWatch event wrapping one, or
    /// a document listing either. Never fails: what is not a JSON object is
    /// counted as malformed.
    pub fn feed(&mut self, bytes: &[u8], origin: Origin<'_>) -> Fed {
        self.feed_at(bytes, origin, 0)
    }

    /// Feeds a record whose [`Prefilter`] verdict the caller already has: a
    /// source that runs the prefilter over a whole buffer of records at
    /// once. `could_match` must be the prefilter's verdict, or `true`.
    pub fn feed_prejudged(&mut self, bytes: &[u8], origin: Origin<'_>, could_match: bool) -> Fed {
        self.feed_judged(bytes, origin, could_match, 0)
    }

    fn feed_at(&mut self, bytes: &[u8], origin: Origin<'_>, depth: u8) -> Fed {
        let could_match = self.prefilter.could_match(bytes);
        self.feed_judged(bytes, origin, could_match, depth)
    }

    fn feed_judged(
        &mut self,
        bytes: &[u8],
        origin: Origin<'_>,
        could_match: bool,
        depth: u8,
    ) -> Fed {
        if !could_match {
            // No anonymous event can be in here: judge the framing only,
            // which keeps the common case at memory speed.
            if looks_like_object(bytes) {
                self.stats.events += 1;
            } else {
                self.stats.malformed += 1;
            }
            return Fed::Nothing;
        }
        let Some(record) = Record::parse_fast(bytes).or_else(|| Record::parse(bytes).ok()) else {
            self.stats.malformed += 1;
            return Fed::Nothing;
        };
        match record.shape() {
            Shape::Event(event) => {
                self.stats.events += 1;
                self.count(&event, origin)
            }
            _ if depth >= MAX_DEPTH => {
                self.stats.malformed += 1;
                Fed::Nothing
            }
            Shape::CloudWatch { message, event_id } => {
                let event_id = origin.event_id.or(event_id.as_deref());
                let origin = Origin { event_id, ..origin };
                self.feed_at(message.as_bytes(), origin, depth + 1)
            }
            Shape::List(items) => {
                let mut fed = Fed::Nothing;
                for item in items {
                    if self.feed_at(item.as_bytes(), origin, depth + 1) == Fed::Matched {
                        fed = Fed::Matched;
                    }
                }
                fed
            }
        }
    }

    /// Counts a matched event: one row per (source IP, group) pair.
    fn count(&mut self, event: &Event<'_, '_>, origin: Origin<'_>) -> Fed {
        if !matches(event) {
            return Fed::Nothing;
        }
        self.stats.matched += 1;
        let ids = origin.event_id.map_or(0, event_hash);
        let s = event.scalars();
        let scalar = |i: usize| s[i].as_deref().unwrap_or(FILL);
        let decoded = |i: usize| matches!(s[i], Some(Cow::Owned(_)));
        let ips = or_fill(event.source_ips());
        let groups = or_fill(event.groups());
        for ip in &ips {
            for group in &groups {
                let cols: [&str; 13] = std::array::from_fn(|i| match i {
                    SRC_IP => ip.as_ref(),
                    GROUPS => group.as_ref(),
                    i if i < SRC_IP => scalar(i),
                    i if i < GROUPS => scalar(i - 1),
                    i => scalar(i - 2),
                });
                if self.exclusions.iter().any(|x| x.matches(&cols)) {
                    self.stats.excluded += 1;
                    continue;
                }
                let owned: [bool; 13] = std::array::from_fn(|i| match i {
                    SRC_IP => matches!(ip, Cow::Owned(_)),
                    GROUPS => matches!(group, Cow::Owned(_)),
                    i if i < SRC_IP => decoded(i),
                    i if i < GROUPS => decoded(i - 1),
                    i => decoded(i - 2),
                });
                self.key.clear();
                for (col, owned) in cols.into_iter().zip(owned) {
                    Key::push_value(&mut self.key, col, owned);
                }
                self.key.extend_from_slice(&origin.scope.to_be_bytes());
                self.agg.add(&self.key, 1, ids);
            }
        }
        Fed::Matched
    }

    /// A new, empty detector with the same exclusions (for another thread).
    pub fn fresh(&self) -> Detector {
        Detector::new(self.exclusions.clone())
    }

    /// Takes in another detector's rows and counters (one that read another
    /// part of the same input).
    pub fn absorb(&mut self, other: Detector) {
        let (agg, stats) = other.finish();
        self.agg.merge(agg);
        self.stats.merge(&stats);
    }

    /// Ends the run: the partial aggregate and the counters.
    pub fn finish(self) -> (Aggregator, Stats) {
        (self.agg, self.stats)
    }
}

/// A multi-valued field with no usable value groups as one "0" row.
fn or_fill(values: Vec<Cow<'_, str>>) -> Vec<Cow<'_, str>> {
    if values.is_empty() {
        vec![Cow::Borrowed(FILL)]
    } else {
        values
    }
}

/// The cheap framing check for records the prefilter rejected: a JSON
/// object's first and last non-blank bytes. Catches CloudWatch-truncated
/// events (`...[Truncated...]`), binary data and cut lines.
fn looks_like_object(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

#[cfg(test)]
mod tests;
