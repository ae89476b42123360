//! `stats count by` the 13 fields: the aggregate, its row keys, and the
//! sorted findings it ends as.
//!
//! Every row's key lives in one arena string, so a new row costs no
//! allocation of its own and the end of a run frees one block, whatever
//! the number of rows (an all-anonymous flood makes a row per event).

use std::borrow::Cow;
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

/// Where a row's key sits in the arena.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn of(self, keys: &str) -> &str {
        &keys[self.start..self.start + self.len]
    }
}

/// `stats count by` the 13 fields, plus the source's scope tag. Memory grows
/// with the number of distinct rows, not with the input. The hasher is
/// seeded per process (the keys are attacker-chosen), and each key is
/// hashed once: the hash is kept for lookups and growth.
///
/// Rows are kept in the order they were first seen, keys back to back in
/// that order too, and the hash table holds only row numbers: the table
/// stays small, and the sort at the end reads the keys front to back.
#[derive(Debug, Default, Clone)]
pub struct Aggregator {
    /// (hash, row number) of every row.
    index: hashbrown::HashTable<(u64, usize)>,
    rows: Vec<(Span, Tally)>,
    keys: String,
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
        let start = self.keys.len();
        build(&mut self.keys);
        let (rows, keys) = (&mut self.rows, &self.keys);
        let key = &keys[start..];
        let hash = self.hasher.hash_one(key);
        let found = self
            .index
            .find(hash, |&(h, i)| h == hash && rows[i].0.of(keys) == key);
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
                    len: key.len(),
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
                i
            }
        }
    }

    /// Adds another partial aggregate into this one (same as having fed
    /// both inputs to one aggregator).
    pub fn merge(&mut self, other: Aggregator) {
        if self.rows.is_empty() {
            // Nothing to look up against: take the other one whole.
            let min = self.min;
            *self = other;
            self.min = min;
            return;
        }
        // Room for every row of the other at once: a flood's parts are
        // hundreds of MB of keys, which would otherwise be copied again at
        // each doubling of the arena, and the table rehashed at each of its.
        self.keys.reserve(other.keys.len());
        self.rows.reserve(other.rows.len());
        self.index
            .reserve(other.rows.len(), |&(h, _): &(u64, usize)| h);
        // The other's pairs as this one numbers them, each looked up once.
        let mut pairs: Vec<Option<u32>> = vec![None; other.notes.len()];
        for (span, tally) in &other.rows {
            let mut theirs = other.notes.pairs_of(tally.note).into_iter();
            let mut ours = |p: u32, notes: &mut Notes| {
                *pairs[p as usize].get_or_insert_with(|| notes.import(&other.notes, p))
            };
            let first = ours(theirs.next().unwrap_or(0), &mut self.notes);
            let severity = tally.note.severity();
            let key = span.of(&other.keys);
            let row = self.add_built(
                tally.scope,
                tally.count,
                tally.ids,
                severity,
                first,
                |buf| buf.push_str(key),
            );
            for p in theirs {
                let pair = ours(p, &mut self.notes);
                let note = &mut self.rows[row].1.note;
                *note = self.notes.join(*note, severity, pair);
            }
        }
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
    pub fn into_findings(self) -> Findings {
        let kept: Vec<(Span, Tally)>;
        let rows = match self.min {
            Some(min) => {
                kept = self
                    .rows
                    .iter()
                    .filter(|(_, t)| t.note.severity() >= min)
                    .copied()
                    .collect();
                kept
            }
            None => self.rows,
        };
        Findings {
            order: sort_rows(&rows, &self.keys),
            rows,
            keys: self.keys,
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
fn sort_rows(rows: &[(Span, Tally)], keys: &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // One scratch for every round: a round works on the same range of it
    // as of `order`, so nested rounds never overlap their parent's unread
    // part, and its memory is touched once.
    let mut scratch = vec![Tag::default(); rows.len()];
    sort_by_key(&mut order, &mut scratch, rows, keys.as_bytes(), 0);
    order
}

/// 16 bytes of a key (as two big-endian words, so they compare as the
/// bytes do) and the row's number.
type Tag = (u64, u64, usize);

/// Sorts row numbers by their keys' bytes from `depth` on. Each round
/// sorts by a 16-byte tag read once per row, so most comparisons are of
/// integers, not of two keys behind two pointers; rows whose tags tie go
/// another round on the next 16 bytes. Ties end because keys are distinct
/// and none is a prefix of another.
fn sort_by_key(
    order: &mut [usize],
    scratch: &mut [Tag],
    rows: &[(Span, Tally)],
    keys: &[u8],
    depth: usize,
) {
    let rest = |i: usize| {
        let s = rows[i].0;
        &keys[s.start + depth.min(s.len)..s.start + s.len]
    };
    if order.len() <= SMALL_RUN || depth >= MAX_TAG_DEPTH {
        order.sort_unstable_by(|&a, &b| rest(a).cmp(rest(b)));
        return;
    }
    for (tag, &i) in scratch.iter_mut().zip(order.iter()) {
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
                rows,
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
    /// In the order they were first seen.
    rows: Vec<(Span, Tally)>,
    /// Row numbers, in key order.
    order: Vec<usize>,
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
            order: self.order.iter(),
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
    order: std::slice::Iter<'a, usize>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Finding<'a>;

    fn next(&mut self) -> Option<Finding<'a>> {
        let row = *self.order.next()?;
        Some(self.finding(row))
    }

    /// Skips rows without reading them ([`Findings::get`] is direct).
    fn nth(&mut self, n: usize) -> Option<Finding<'a>> {
        let row = *self.order.nth(n)?;
        Some(self.finding(row))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.order.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> Iter<'a> {
    fn finding(&self, row: usize) -> Finding<'a> {
        let f = self.findings;
        let (span, tally) = f.rows[row];
        Finding {
            scope: tally.scope,
            key: span.of(&f.keys),
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
