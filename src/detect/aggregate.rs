//! `stats count by` the 13 fields: the aggregate, its row keys, and the
//! sorted findings it ends as.
//!
//! Every row's key lives in one arena string, so a new row costs no
//! allocation of its own and the end of a run frees one block, whatever
//! the number of rows (an all-anonymous flood makes a row per event).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

use sha2::{Digest, Sha256};

use super::notes::{Note, Notes, Triage};
use super::rule::Rule;
use super::severity::Severity;
use crate::audit::{json_output_stop, json_stop};

/// The aggregate's key: the 13 values, the row's rule, credential and note
/// (see [`super::rule`]), and the scope in one string, so that rows hash,
/// compare and sort as plain bytes (by the 13 values first, as ESCU's
/// rows always have). Each value is written with
/// its NUL characters escaped as `00 01` and ended by `00 00`, which keeps
/// byte order equal to value-by-value order (a value sorts before its
/// extensions, and an escaped NUL before any other character); the scope
/// follows as 8 hex digits, so it sorts last. No key is a prefix of
/// another: each holds exactly [`VALUES`] terminators and 8 digits.
pub(super) struct Key;

const SCOPE_DIGITS: usize = 8;
/// The 13 by-field values, then the 3 of [`super::RULE_COLUMNS`].
const VALUES: usize = 16;
const BY_FIELDS: usize = 13;

impl Key {
    /// `decoded` says whether the value went through JSON unescaping: raw
    /// JSON text cannot hold a NUL character, so only such a value needs
    /// the check.
    pub(super) fn push_value(buf: &mut String, value: &str, decoded: bool) {
        if decoded && value.contains('\0') {
            buf.push_str(&value.replace('\0', "\0\x01"));
        } else {
            buf.push_str(value);
        }
        buf.push_str("\0\0");
    }

    pub(super) fn push_scope(buf: &mut String, scope: u32) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for digit in (0..SCOPE_DIGITS).rev() {
            buf.push(char::from(HEX[(scope >> (4 * digit)) as usize & 0xf]));
        }
    }

    /// The key of these values (as given, not unescaped) and scope: for
    /// tests that build keys directly.
    #[cfg(test)]
    pub(super) fn of(cols: &[String], scope: u32) -> String {
        let mut key = String::new();
        for c in cols {
            Key::push_value(&mut key, c, true);
        }
        // Given the 13 by-fields alone: an ESCU row's rule, credential and
        // note.
        if cols.len() == BY_FIELDS {
            for extra in ["escu", super::FILL, super::FILL] {
                Key::push_value(&mut key, extra, false);
            }
        }
        Key::push_scope(&mut key, scope);
        key
    }

    /// The 13 values.
    pub(super) fn decode(key: &str) -> [Cow<'_, str>; 13] {
        let mut cols: [Cow<'_, str>; 13] = Default::default();
        Key::each_value(key, BY_FIELDS, |n, value, _| cols[n] = value);
        cols
    }

    /// The rule, credential and note.
    pub(super) fn extras(key: &str) -> [Cow<'_, str>; 3] {
        let mut extras: [Cow<'_, str>; 3] = Default::default();
        Key::each_value(key, VALUES, |n, value, _| {
            if n >= BY_FIELDS {
                extras[n - BY_FIELDS] = value;
            }
        });
        extras
    }

    /// The first `count` values one at a time, in order, without
    /// collecting them: `each` gets each value's number, the value and
    /// whether it is plain (holds no quote,
    /// backslash, control character, DEL or non-ASCII character: nothing
    /// JSON output escapes). Values are short: the inline search for those
    /// bytes (NUL is one of them) finds their ends sooner than a vector
    /// search, and tells plain values apart on the way.
    pub(super) fn each_value<'k>(
        key: &'k str,
        count: usize,
        mut each: impl FnMut(usize, Cow<'k, str>, bool),
    ) {
        let bytes = key.as_bytes();
        let (mut start, mut i) = (0, 0);
        for n in 0..count.min(VALUES) {
            let mut escaped = false;
            let mut stopped = false;
            let end = loop {
                let rest = bytes.get(i..).unwrap_or_default();
                // Once a value is known not to be plain, only its end
                // matters: a value of non-ASCII text is not searched byte
                // by byte.
                let found = if stopped {
                    json_stop(rest)
                } else {
                    json_output_stop(rest)
                };
                let Some(at) = found.map(|n| i + n) else {
                    break bytes.len();
                };
                match (bytes[at], bytes.get(at + 1)) {
                    (0, Some(&1)) => {
                        escaped = true;
                        i = at + 2;
                    }
                    (0, _) => break at,
                    _ => {
                        // A quote, backslash, control, DEL or a byte of a
                        // non-ASCII character: value text.
                        stopped = true;
                        i = at + 1;
                    }
                }
            };
            // NUL is ASCII: these cuts are on character boundaries.
            let raw = key.get(start..end).unwrap_or("");
            let value = if escaped {
                Cow::Owned(raw.replace("\0\x01", "\0"))
            } else {
                Cow::Borrowed(raw)
            };
            each(n, value, !escaped && !stopped);
            i = end + 2;
            start = i;
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    ids: u128,
    /// Also the key's last 8 characters; kept apart for the reader.
    scope: u32,
    /// The highest severity and the annotations of the row's events (in
    /// what was padding: a row is no larger for it).
    note: Note,
}

/// Where a row's key sits: in which arena (0 is the aggregate's own,
/// 1 on those of parts merged in, see [`Aggregator::merge`]), and where in
/// it. A key is one record's values, far below 4 GiB.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: u32,
    arena: u32,
}

impl Span {
    fn of<'k>(self, own: &'k str, merged: &'k [String]) -> &'k str {
        let arena = match self.arena {
            0 => own,
            n => &merged[n as usize - 1],
        };
        &arena[self.start..self.start + self.len as usize]
    }

    /// Asks the CPU to start loading the key, which is read soon. Rows
    /// are read in key order (sorted, merged, written) and their keys lie
    /// all over the arenas: without it each key's first read waits for
    /// memory (in a profile of the flood's writing, a fifth of its time
    /// was that first read). Slicing bytes reads none of them.
    #[inline(always)]
    fn prefetch(self, own: &str, merged: &[String]) {
        let arena = match self.arena {
            0 => own,
            n => merged.get(n as usize - 1).map_or("", |a| a),
        };
        let key = arena
            .as_bytes()
            .get(self.start..self.start + self.len as usize)
            .unwrap_or_default();
        // The first four lines: most keys' whole (about 250 bytes).
        for line in key.iter().step_by(64).take(4) {
            prefetch(line);
        }
    }
}

/// One cache line into the cache ahead of use; nothing where there is no
/// safe way to ask.
#[inline(always)]
fn prefetch(byte: &u8) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    safe_arch::prefetch_t0(byte);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = byte;
}

/// How many rows ahead a pass in key order prefetches keys: enough to
/// cover memory's latency at a row's work, few enough that they are
/// still in the cache when reached.
const AHEAD: usize = 8;

/// `stats count by` the 13 fields, plus the source's scope tag. Memory grows
/// with the number of distinct rows, not with the input. The hasher is
/// seeded per process (the keys are attacker-chosen), and each key is
/// hashed once: the hash is kept for lookups and growth.
///
/// Rows are kept in the order they were first seen, keys back to back in
/// that order too, and the hash table holds only row numbers: the table
/// stays small, and the sort at the end reads the keys front to back.
///
/// A part read by another thread is sorted there ([`Aggregator::sort`])
/// and merged in by key ([`Aggregator::merge`]): the threads sort at the
/// same time, and the merge is one pass over both instead of a lookup
/// per row. Its keys stay in their own arena. A merged aggregate is
/// sorted and has no index; one is built again only if rows are added
/// after it (a second input read on this thread).
#[derive(Debug, Default, Clone)]
pub struct Aggregator {
    /// (hash, row number) of every row, unless `unindexed`.
    index: hashbrown::HashTable<(u64, usize)>,
    rows: Vec<(Span, Tally)>,
    /// The arena new keys go to (arena 0).
    keys: String,
    /// The arenas of merged parts (arena 1 on).
    merged: Vec<String>,
    /// `index` is empty however many rows there are (after a sort).
    unindexed: bool,
    /// `rows` are in key order.
    sorted: bool,
    hasher: foldhash::fast::RandomState,
    /// The annotations the rows' notes refer to.
    pub(super) notes: Notes,
    /// Rows below it are left out of the findings (`--min-severity`).
    min: Option<Severity>,
}

impl Aggregator {
    /// Counts `count` events with these `ids` in the row with this key
    /// (which ends with `scope`, see [`Key`]): for tests that build keys
    /// directly.
    #[cfg(test)]
    pub(super) fn add(&mut self, key: &str, scope: u32, count: u64, ids: u128) {
        self.add_built(scope, count, ids, Severity::Informational, 0, |buf| {
            buf.push_str(key)
        });
    }

    /// [`Aggregator::add`] for the key that `build` appends to the string
    /// it is given, of events with this severity and annotation pair. The
    /// key is built at the end of the arena, where it stays if the row is
    /// new: no copy either way. Returns the row's number.
    pub(super) fn add_built(
        &mut self,
        scope: u32,
        count: u64,
        ids: u128,
        severity: Severity,
        pair: u32,
        build: impl FnOnce(&mut String),
    ) -> usize {
        if self.unindexed {
            self.reindex();
        }
        let start = self.keys.len();
        build(&mut self.keys);
        let (rows, keys, merged) = (&mut self.rows, &self.keys, &self.merged);
        let key = &keys[start..];
        let hash = self.hasher.hash_one(key);
        let found = self.index.find(hash, |&(h, i)| {
            h == hash && rows[i].0.of(keys, merged) == key
        });
        match found {
            Some(&(_, i)) => {
                let tally = &mut rows[i].1;
                tally.count += count;
                tally.ids = tally.ids.wrapping_add(ids);
                tally.note = self.notes.join(tally.note, severity, pair);
                self.keys.truncate(start);
                i
            }
            None => {
                let span = Span {
                    start,
                    len: u32::try_from(key.len()).expect("a key is one record's values"),
                    arena: 0,
                };
                let i = rows.len();
                self.index.insert_unique(hash, (hash, i), |&(h, _)| h);
                let note = Note::pair(severity, pair);
                rows.push((
                    span,
                    Tally {
                        count,
                        ids,
                        scope,
                        note,
                    },
                ));
                self.sorted = false;
                i
            }
        }
    }

    /// The index again, for rows added after a sort or merge dropped it.
    fn reindex(&mut self) {
        let (rows, keys, merged) = (&self.rows, &self.keys, &self.merged);
        self.index = hashbrown::HashTable::with_capacity(rows.len());
        for (i, (span, _)) in rows.iter().enumerate() {
            let hash = self.hasher.hash_one(span.of(keys, merged));
            self.index.insert_unique(hash, (hash, i), |&(h, _)| h);
        }
        self.unindexed = false;
    }

    /// Puts the rows in key order (by the 13 columns, then by scope), now:
    /// a reader thread sorts its part before the part is merged. The index
    /// is dropped (its row numbers are the old order's).
    pub(super) fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let order = sort_rows(&self.rows, &self.keys, &self.merged);
        self.rows = order.into_iter().map(|i| self.rows[i]).collect();
        self.sorted = true;
        self.index = hashbrown::HashTable::new();
        self.unindexed = true;
    }

    /// Adds another partial aggregate into this one (same as having fed
    /// both inputs to one aggregator): both sorted (a reader thread has
    /// sorted its own already), then merged in one pass by key. The
    /// other's keys are not copied: its arenas become this one's.
    pub fn merge(&mut self, mut other: Aggregator) {
        if self.rows.is_empty() {
            // Nothing to merge with: take the other one whole.
            let min = self.min;
            *self = other;
            self.min = min;
            return;
        }
        self.sort();
        other.sort();
        // The other's arena n is this one's `first + n`.
        let first = u32::try_from(self.merged.len() + 1).expect("few parts");
        // The other's pairs as this one numbers them, each looked up once.
        let mut pairs: Vec<Option<u32>> = vec![None; other.notes.len()];
        let ours = std::mem::take(&mut self.rows);
        let theirs = &other.rows;
        let mut rows = Vec::with_capacity(ours.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let order = match (ours.get(i), theirs.get(j)) {
                (Some((x, _)), Some((y, _))) => x
                    .of(&self.keys, &self.merged)
                    .cmp(y.of(&other.keys, &other.merged)),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            // Each side's keys are read in order: load them ahead.
            let mine = (order != Ordering::Greater).then(|| {
                if let Some((span, _)) = ours.get(i + AHEAD) {
                    span.prefetch(&self.keys, &self.merged);
                }
                i += 1;
                ours[i - 1]
            });
            if order == Ordering::Less {
                rows.extend(mine);
                continue;
            }
            if let Some((span, _)) = theirs.get(j + AHEAD) {
                span.prefetch(&other.keys, &other.merged);
            }
            let (span, row) = theirs[j];
            j += 1;
            let (tally, note) = match mine {
                Some((_, tally)) => (tally, Some(tally.note)),
                None => (Tally::default(), None),
            };
            let note = self
                .notes
                .join_other(note, &other.notes, row.note, &mut pairs);
            let tally = Tally {
                count: tally.count + row.count,
                ids: tally.ids.wrapping_add(row.ids),
                scope: row.scope,
                note,
            };
            let span = Span {
                arena: first + span.arena,
                ..span
            };
            rows.push((span, tally));
        }
        self.merged.push(other.keys);
        self.merged.append(&mut other.merged);
        self.rows = rows;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Leaves rows below `min` out of the findings; returns how many rows
    /// that is.
    pub(super) fn at_least(&mut self, min: Option<Severity>) -> u64 {
        self.min = min;
        let Some(min) = min else { return 0 };
        self.rows
            .iter()
            .filter(|(_, t)| t.note.severity() < min)
            .count() as u64
    }

    /// The rows, sorted by the 13 columns in order, then by scope.
    pub fn into_findings(mut self) -> Findings {
        self.sort();
        if let Some(min) = self.min {
            self.rows.retain(|(_, t)| t.note.severity() >= min);
        }
        Findings {
            rows: self.rows,
            keys: self.keys,
            merged: self.merged,
            triage: self.notes.render(),
            notes: self.notes,
        }
    }
}

/// Below this many rows a comparison sort is as quick as another round of
/// tags.
const SMALL_RUN: usize = 32;
/// Past this depth, rows still tied share a long prefix (an attacker can
/// send many events with one huge requestURI): compare them whole rather
/// than 16 bytes per round.
const MAX_TAG_DEPTH: usize = 512;

/// Sorts rows by their keys' bytes.
/// The row numbers in key order.
fn sort_rows(rows: &[(Span, Tally)], keys: &str, merged: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // One scratch for every round: a round works on the same range of it
    // as of `order`, so nested rounds never overlap their parent's unread
    // part, and its memory is touched once.
    let mut scratch = vec![Tag::default(); rows.len()];
    let keys = Keys {
        rows,
        own: keys,
        merged,
    };
    sort_by_key(&mut order, &mut scratch, keys, 0);
    order
}

/// The keys of rows by row number, for the sort.
#[derive(Clone, Copy)]
struct Keys<'k> {
    rows: &'k [(Span, Tally)],
    own: &'k str,
    merged: &'k [String],
}

impl<'k> Keys<'k> {
    fn of(self, row: usize) -> &'k [u8] {
        self.rows[row].0.of(self.own, self.merged).as_bytes()
    }

    fn prefetch(self, row: usize) {
        self.rows[row].0.prefetch(self.own, self.merged);
    }
}

/// 16 bytes of a key (as two big-endian words, so they compare as the
/// bytes do) and the row's number.
type Tag = (u64, u64, usize);

/// Sorts row numbers by their keys' bytes from `depth` on. Each round
/// sorts by a 16-byte tag read once per row, so most comparisons are of
/// integers, not of two keys behind two pointers; rows whose tags tie go
/// another round on the next 16 bytes. Ties end because keys are distinct
/// and none is a prefix of another.
fn sort_by_key(order: &mut [usize], scratch: &mut [Tag], keys: Keys<'_>, depth: usize) {
    let rest = |i: usize| {
        let k = keys.of(i);
        &k[depth.min(k.len())..]
    };
    if order.len() <= SMALL_RUN || depth >= MAX_TAG_DEPTH {
        order.sort_unstable_by(|&a, &b| rest(a).cmp(rest(b)));
        return;
    }
    for (n, (tag, &i)) in scratch.iter_mut().zip(order.iter()).enumerate() {
        if let Some(&ahead) = order.get(n + AHEAD) {
            keys.prefetch(ahead);
        }
        let r = rest(i);
        let bytes = match r.first_chunk::<16>() {
            Some(head) => *head,
            None => {
                let mut t = [0u8; 16];
                t[..r.len()].copy_from_slice(r);
                t
            }
        };
        let (hi, lo) = bytes.split_at(8);
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        *tag = (word(hi), word(lo), i);
    }
    scratch.sort_unstable();
    for (slot, tag) in order.iter_mut().zip(scratch.iter()) {
        *slot = tag.2;
    }
    let mut start = 0;
    while start < order.len() {
        let (hi, lo, _) = scratch[start];
        let len = scratch[start..]
            .iter()
            .position(|t| (t.0, t.1) != (hi, lo))
            .unwrap_or(order.len() - start);
        let end = start + len;
        if len > 1 {
            sort_by_key(
                &mut order[start..end],
                &mut scratch[start..end],
                keys,
                depth + 16,
            );
        }
        start = end;
    }
}

/// The result of a run: its rows, sorted by the 13 columns in order, then
/// by scope.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    keys: String,
    /// The arenas of merged parts (see [`Aggregator`]).
    merged: Vec<String>,
    /// In key order.
    rows: Vec<(Span, Tally)>,
    notes: Notes,
    /// Each pair's and each set's triage columns, made once.
    triage: (Vec<Triage>, Vec<Triage>),
}

impl Findings {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            findings: self,
            rows: self.rows.iter(),
        }
    }

    pub fn get(&self, i: usize) -> Option<Finding<'_>> {
        self.iter().nth(i)
    }

    /// Adds the annotation pairs of `f` (one of these findings) to `into`:
    /// with [`Findings::triage_of_pairs`], the triage of several rows.
    pub(super) fn pairs_into(&self, f: &Finding<'_>, into: &mut BTreeSet<u32>) {
        self.notes.extend_pairs(f.note, into);
    }

    /// The triage columns of these pairs together.
    pub(super) fn triage_of_pairs(&self, pairs: BTreeSet<u32>) -> Triage {
        self.notes.triage(pairs)
    }
}

impl PartialEq for Findings {
    fn eq(&self, other: &Findings) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Findings {}

/// One group of the `stats count by ...` output.
#[derive(Debug, Clone, Copy)]
pub struct Finding<'a> {
    /// Opaque tag the source chose (poll: which region and log group).
    pub scope: u32,
    /// The 13 by-field values, in [`super::COLUMNS`] order, in the
    /// aggregate's key encoding (see [`Key`]); read them with
    /// [`Finding::cols`].
    key: &'a str,
    pub count: u64,
    /// Order-independent combination (wrapping sum) of the hashes of the
    /// CloudWatch eventIds counted here; 0 when events carry no id.
    pub ids: u128,
    /// The highest severity of its events ([`super::severity`]).
    pub severity: Severity,
    /// Its triage columns: decision, reason, binding.
    pub triage: &'a Triage,
    /// Which annotation pairs its events had (for [`Findings::triage_of`]).
    note: Note,
}

/// Rows are equal when what they show is: the numbering of annotation
/// pairs differs between aggregates.
impl PartialEq for Finding<'_> {
    fn eq(&self, other: &Self) -> bool {
        (
            self.scope,
            self.key,
            self.count,
            self.ids,
            self.severity,
            self.triage,
        ) == (
            other.scope,
            other.key,
            other.count,
            other.ids,
            other.severity,
            other.triage,
        )
    }
}

impl Eq for Finding<'_> {}

impl<'a> Finding<'a> {
    /// The 13 by-field values, in [`super::COLUMNS`] order.
    pub fn cols(&self) -> [Cow<'a, str>; 13] {
        Key::decode(self.key)
    }

    /// [`Finding::cols`] one value at a time, for a sink that copies them
    /// out as they come: `each` gets each value, in order, and whether it
    /// is plain (holds no quote, backslash, control character, DEL or
    /// non-ASCII character, so it may be copied where any of those might be
    /// escaped).
    pub fn each_value(&self, mut each: impl FnMut(Cow<'a, str>, bool)) {
        Key::each_value(self.key, BY_FIELDS, |_, value, plain| each(value, plain));
    }

    /// [`Finding::each_value`] for the 13 by-fields and then the rule,
    /// credential and note (`each` gets each value's number too).
    pub fn each_value_and_extra(&self, each: impl FnMut(usize, Cow<'a, str>, bool)) {
        Key::each_value(self.key, VALUES, each);
    }

    /// Its rule, credential and note ([`super::RULE_COLUMNS`]).
    pub fn extras(&self) -> [Cow<'a, str>; 3] {
        Key::extras(self.key)
    }

    /// Its rule.
    pub fn rule(&self) -> Rule {
        Rule::from_name(&self.extras()[0]).unwrap_or(Rule::Escu)
    }

    /// A stable id for this row: same log group, values and events give the
    /// same id, so a row delivered twice can be recognised downstream. An
    /// ESCU row's id is what it was before the other rules existed (a
    /// re-read window gives the same ids across the upgrade); another
    /// rule's row adds its rule, credential and note.
    pub fn id(&self, scope_label: &str) -> String {
        let mut h = Sha256::new();
        h.update(scope_label.as_bytes());
        let extras = self.extras();
        let tail: &[Cow<'_, str>] = if extras[0] == Rule::Escu.name() {
            &[]
        } else {
            &extras
        };
        for col in self.cols().iter().chain(tail) {
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

/// The 128-bit hash of one CloudWatch eventId.
pub fn event_hash(event_id: &str) -> u128 {
    let digest = Sha256::digest(event_id.as_bytes());
    u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
}

impl<'a> IntoIterator for &'a Findings {
    type Item = Finding<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The rows of [`Findings`], in order.
#[derive(Clone)]
pub struct Iter<'a> {
    findings: &'a Findings,
    rows: std::slice::Iter<'a, (Span, Tally)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Finding<'a>;

    fn next(&mut self) -> Option<Finding<'a>> {
        let row = *self.rows.next()?;
        if let Some((span, _)) = self.rows.as_slice().get(AHEAD) {
            span.prefetch(&self.findings.keys, &self.findings.merged);
        }
        Some(self.finding(row))
    }

    /// Skips rows without reading them ([`Findings::get`] is direct).
    fn nth(&mut self, n: usize) -> Option<Finding<'a>> {
        let row = *self.rows.nth(n)?;
        Some(self.finding(row))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> Iter<'a> {
    fn finding(&self, (span, tally): (Span, Tally)) -> Finding<'a> {
        let f = self.findings;
        Finding {
            scope: tally.scope,
            key: span.of(&f.keys, &f.merged),
            count: tally.count,
            ids: tally.ids,
            severity: tally.note.severity(),
            triage: Notes::rendered(tally.note, &f.triage),
            note: tally.note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values that share long prefixes (past the tag rounds' depth limit),
    /// hold NULs, or are prefixes of each other; few enough that many rows
    /// tie for many rounds.
    fn value() -> impl Strategy<Value = String> {
        let long = "p".repeat(MAX_TAG_DEPTH + 40);
        prop_oneof![
            4 => prop::sample::select(vec![
                String::new(),
                "a".into(),
                "a\0".into(),
                "a\0b".into(),
                "ab".into(),
                "\u{ff}".into(),
                "\u{1}".into(),
                format!("{long}a"),
                long,
            ]),
            1 => "[a\\x00\\x01\\xff]{0,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Findings come out sorted by their values column by column, then
        /// by scope, each row once, whatever sort rounds they went through.
        #[test]
        fn findings_sort_like_their_values(
            rows in prop::collection::vec((prop::collection::vec(value(), 13), 0u32..3), 0..300),
        ) {
            let mut agg = Aggregator::default();
            for (cols, scope) in &rows {
                agg.add(&Key::of(cols, *scope), *scope, 1, 0);
            }
            let findings = agg.into_findings();
            let got: Vec<(Vec<String>, u32, u64)> = findings
                .iter()
                .map(|f| (f.cols().iter().map(|c| c.to_string()).collect(), f.scope, f.count))
                .collect();
            let mut want: std::collections::BTreeMap<(Vec<String>, u32), u64> = Default::default();
            for (cols, scope) in rows {
                *want.entry((cols, scope)).or_default() += 1;
            }
            let want: Vec<(Vec<String>, u32, u64)> =
                want.into_iter().map(|((c, s), n)| (c, s, n)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
