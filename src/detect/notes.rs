//! What the API server said about each row's events: the distinct
//! authorization annotations (decision, reason) they carried, and the
//! highest severity among them.
//!
//! A row is a group of events that share the 13 by-field values; the
//! annotations are not among them, so one row may have seen several. A
//! cluster has few distinct reasons (one per binding that allows
//! something), so each distinct (decision, reason) pair is kept once and a
//! row holds a number: a pair's, or, for the rare row whose events
//! disagree, its own set of them. A row costs no more memory than before.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

use hashbrown::HashSet;

use super::FILL;
use super::severity::{Binding, Severity};

/// A row's triage in 32 bits: the highest severity of its events (3 bits),
/// and either one annotation pair or a set of them (a flag and 28 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Note(u32);

const SEVERITY_SHIFT: u32 = 29;
const SET: u32 = 1 << 28;
const INDEX: u32 = SET - 1;

impl Note {
    pub(super) fn pair(severity: Severity, pair: u32) -> Note {
        Note(u32::from(severity.id()) << SEVERITY_SHIFT | (pair & INDEX))
    }

    fn set(severity: Severity, set: u32) -> Note {
        Note(u32::from(severity.id()) << SEVERITY_SHIFT | SET | (set & INDEX))
    }

    pub(super) fn severity(self) -> Severity {
        Severity::from_id((self.0 >> SEVERITY_SHIFT) as u8).unwrap_or(Severity::Informational)
    }

    fn index(self) -> u32 {
        self.0 & INDEX
    }

    fn is_set(self) -> bool {
        self.0 & SET != 0
    }

    fn raised_to(self, severity: Severity) -> Note {
        let highest = self.severity().max(severity);
        Note(self.0 & !(7 << SEVERITY_SHIFT) | u32::from(highest.id()) << SEVERITY_SHIFT)
    }
}

impl Default for Note {
    /// No annotations seen ([`Notes`]' pair 0).
    fn default() -> Note {
        Note::pair(Severity::Informational, 0)
    }
}

/// A pair recently looked up, by the raw JSON texts it came from: events
/// mostly repeat one of the last few (a scanner's refusals between the
/// health checks' allowances), and a hit costs a comparison or two. Its
/// text buffer is reused, so a miss allocates nothing either.
#[derive(Debug, Clone, Default)]
struct Recent {
    /// The decision's text, then the reason's.
    raw: String,
    split: usize,
    present: (bool, bool),
    pair: u32,
}

impl Recent {
    fn is(&self, decision: Option<&str>, reason: Option<&str>) -> bool {
        self.present == (decision.is_some(), reason.is_some())
            && self.raw.get(..self.split) == Some(decision.unwrap_or(""))
            && self.raw.get(self.split..) == Some(reason.unwrap_or(""))
    }

    fn set(&mut self, decision: Option<&str>, reason: Option<&str>, pair: u32) {
        self.raw.clear();
        self.raw.push_str(decision.unwrap_or(""));
        self.split = self.raw.len();
        self.raw.push_str(reason.unwrap_or(""));
        self.present = (decision.is_some(), reason.is_some());
        self.pair = pair;
    }
}

/// How many recent pairs are remembered.
const RECENT: usize = 4;

/// The distinct (decision, reason) pairs of a run's rows, and the sets of
/// them that rows whose events disagree hold.
#[derive(Debug, Clone)]
pub(super) struct Notes {
    /// The values as a row shows them ("0" where absent); pair 0 is
    /// ("0", "0"), an event without annotations.
    pairs: Vec<(Box<str>, Box<str>)>,
    /// Pair numbers, by the hash of their values: looked up with borrowed
    /// values, without building a key.
    index: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Each a row's own: changed in place as its events come.
    sets: Vec<HashSet<u32, foldhash::fast::RandomState>>,
    recent: [Recent; RECENT],
    /// The entry of `recent` replaced next.
    next: usize,
}

impl Default for Notes {
    fn default() -> Notes {
        let mut notes = Notes {
            pairs: Vec::new(),
            index: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            sets: Vec::new(),
            recent: Default::default(),
            next: 0,
        };
        let none = notes.intern(FILL, FILL);
        // Every entry starts as "no annotations", pair 0.
        for r in &mut notes.recent {
            r.set(None, None, none);
        }
        notes
    }
}

impl Notes {
    /// The pair these raw annotation texts give (the values shown as a row
    /// shows them: see [`crate::audit::shown`]).
    pub(super) fn lookup(&mut self, decision: Option<&str>, reason: Option<&str>) -> u32 {
        if let Some(r) = self.recent.iter().find(|r| r.is(decision, reason)) {
            return r.pair;
        }
        fn shown(raw: Option<&str>) -> Cow<'_, str> {
            raw.and_then(crate::audit::shown)
                .unwrap_or(Cow::Borrowed(FILL))
        }
        let pair = self.intern(&shown(decision), &shown(reason));
        self.recent[self.next].set(decision, reason, pair);
        self.next = (self.next + 1) % RECENT;
        pair
    }

    fn intern(&mut self, decision: &str, reason: &str) -> u32 {
        let Notes {
            pairs,
            index,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one((decision, reason));
        let same = |p: &u32| {
            let (d, r) = &pairs[*p as usize];
            **d == *decision && **r == *reason
        };
        if let Some(&pair) = index.find(hash, same) {
            return pair;
        }
        let pair = u32::try_from(pairs.len()).expect("fewer pairs than bytes read");
        pairs.push((decision.into(), reason.into()));
        index.insert_unique(hash, pair, |&p| {
            let (d, r) = &pairs[p as usize];
            hasher.hash_one((&**d, &**r))
        });
        pair
    }

    /// How many distinct pairs there are.
    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// The decision of a pair, as shown.
    pub(super) fn decision(&self, pair: u32) -> &str {
        &self.pairs[pair as usize].0
    }

    /// `row` with one more event's pair and severity.
    pub(super) fn join(&mut self, row: Note, severity: Severity, pair: u32) -> Note {
        let row = row.raised_to(severity);
        if row.is_set() {
            self.sets[row.index() as usize].insert(pair);
            return row;
        }
        if row.index() == pair {
            return row;
        }
        let set = u32::try_from(self.sets.len()).expect("fewer sets than rows");
        self.sets.push([row.index(), pair].into_iter().collect());
        Note::set(row.severity(), set)
    }

    /// The pairs a row holds.
    #[cfg(test)]
    fn pairs_of(&self, note: Note) -> Vec<u32> {
        if note.is_set() {
            let mut pairs: Vec<u32> = self.sets[note.index() as usize].iter().copied().collect();
            pairs.sort_unstable();
            pairs
        } else {
            vec![note.index()]
        }
    }

    /// Adds the pairs a row holds to `into`.
    pub(super) fn extend_pairs(&self, note: Note, into: &mut impl Extend<u32>) {
        if note.is_set() {
            into.extend(self.sets[note.index() as usize].iter().copied());
        } else {
            into.extend([note.index()]);
        }
    }

    /// This notes' pair `pair` of `other`'s, added here if new.
    fn import(&mut self, other: &Notes, pair: u32) -> u32 {
        let (d, r) = &other.pairs[pair as usize];
        self.intern(d, r)
    }

    /// The note of a row of `other`'s, as these notes number its pairs,
    /// joined with `row` (this one's note of the same row, if it has it):
    /// its pairs are imported, each once (`imported` keeps what `other`'s
    /// pair `p` is here at `p`).
    pub(super) fn join_other(
        &mut self,
        row: Option<Note>,
        other: &Notes,
        note: Note,
        imported: &mut [Option<u32>],
    ) -> Note {
        let severity = note.severity();
        let mut row = row;
        let mut add = |notes: &mut Notes, p: u32| {
            let pair = *imported[p as usize].get_or_insert_with(|| notes.import(other, p));
            row = Some(match row {
                Some(r) => notes.join(r, severity, pair),
                None => Note::pair(severity, pair),
            });
        };
        if note.is_set() {
            for &p in &other.sets[note.index() as usize] {
                add(self, p);
            }
        } else {
            add(self, note.index());
        }
        row.expect("a note holds a pair")
    }

    /// What a set of pairs shows: each column's distinct values, sorted,
    /// joined by ` | `.
    pub(super) fn triage(&self, pairs: impl IntoIterator<Item = u32>) -> Triage {
        let mut decisions = BTreeSet::new();
        let mut reasons = BTreeSet::new();
        let mut bindings = BTreeSet::new();
        for p in pairs {
            let (d, r) = &self.pairs[p as usize];
            decisions.insert(&**d);
            reasons.insert(&**r);
            if let Some(b) = Binding::from_reason(r) {
                bindings.insert((b.to_string(), b));
            }
        }
        let join = |values: Vec<&str>| {
            if values.is_empty() {
                FILL.to_string()
            } else {
                values.join(" | ")
            }
        };
        Triage {
            decision: join(decisions.into_iter().collect()),
            reason: join(reasons.into_iter().collect()),
            binding: join(bindings.iter().map(|(s, _)| s.as_str()).collect()),
            bindings: bindings.into_iter().map(|(_, b)| b).collect(),
        }
    }

    /// The triage of every pair, then of every set, as [`Findings`] keeps
    /// them.
    ///
    /// [`Findings`]: super::Findings
    pub(super) fn render(&self) -> (Vec<Triage>, Vec<Triage>) {
        let pairs = (0..self.pairs.len() as u32)
            .map(|p| self.triage([p]))
            .collect();
        let sets = self
            .sets
            .iter()
            .map(|s| self.triage(s.iter().copied()))
            .collect();
        (pairs, sets)
    }

    /// Where a note's triage is in [`Notes::render`]'s two lists.
    pub(super) fn rendered(note: Note, rendered: &(Vec<Triage>, Vec<Triage>)) -> &Triage {
        if note.is_set() {
            &rendered.1[note.index() as usize]
        } else {
            &rendered.0[note.index() as usize]
        }
    }
}

/// A row's triage columns: the distinct authorization decisions and
/// reasons its events carried, and the bindings the reasons name, each
/// column's values sorted and joined by ` | ` ("0" when none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triage {
    pub decision: String,
    pub reason: String,
    pub binding: String,
    /// The bindings of [`Triage::binding`], in its order.
    pub bindings: Vec<Binding>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_keeps_the_highest_severity_and_every_pair() {
        let mut notes = Notes::default();
        let allow = notes.lookup(Some(r#""allow""#), Some(r#""RBAC: allowed by ClusterRoleBinding \"b\" of ClusterRole \"r\" to Group \"g\"""#));
        let forbid = notes.lookup(Some(r#""forbid""#), Some(r#""""#));
        let none = notes.lookup(None, None);
        assert_eq!(none, 0);
        assert_eq!(notes.lookup(Some(r#""forbid""#), Some(r#""""#)), forbid);
        // The same values spelled otherwise are the same pair.
        assert_eq!(notes.lookup(Some(r#""for\u0062id""#), None), forbid);
        let row = Note::pair(Severity::Informational, forbid);
        assert_eq!(notes.join(row, Severity::Informational, forbid), row);
        let row = notes.join(row, Severity::Critical, allow);
        let row = notes.join(row, Severity::Low, none);
        assert_eq!(row.severity(), Severity::Critical);
        let t = notes.triage(notes.pairs_of(row));
        assert_eq!(t.decision, "0 | allow | forbid");
        assert_eq!(
            t.reason,
            r#"0 | RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to Group "g""#
        );
        assert_eq!(t.binding, "ClusterRoleBinding/b");
        let t = notes.triage([none]);
        assert_eq!((&*t.decision, &*t.reason, &*t.binding), ("0", "0", "0"));
    }
}
