//! `--rollup`: rows grouped by source IP, user agent, verb, request URI and
//! response code, the per-request timestamp dropped, with the first and
//! last time seen and the count of each group. A scanner storm of
//! thousands of rows becomes a line per scanner and probe.
//!
//! Every other by-field is dropped with the timestamp, among them `stage`
//! and `user.groups{}`: a request logged at two stages, or with two
//! groups, counts twice here as it does in the rows. So the groups' counts
//! add up to the rows' counts exactly, and a group's severity is the
//! highest of its rows' (the `RequestReceived` row of an allowed request
//! is informational; its `ResponseComplete` row carries the verdict).

use std::borrow::Cow;
use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDateTime, Utc};
use hashbrown::HashMap;
use sha2::{Digest, Sha256};

use super::notes::Triage;
use super::rule::Rule;
use super::severity::Severity;
use super::{FILL, Finding, Findings};

/// A rollup's columns before the triage columns.
pub const ROLLUP_COLUMNS: [&str; 8] = [
    "src_ip",
    "userAgent",
    "verb",
    "requestURI",
    "responseStatus.code",
    "first_seen",
    "last_seen",
    "count",
];

/// Where the grouped columns are among the 13: src_ip, userAgent, verb,
/// requestURI, responseStatus.code.
const KEPT: [usize; 5] = [6, 11, 12, 4, 5];
/// requestReceivedTimestamp.
const TIMESTAMP: usize = 3;

/// One line of a rollup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    /// The source's scope tag (poll: which log group): groups never mix
    /// scopes.
    pub scope: u32,
    /// src_ip, userAgent, verb, requestURI, responseStatus.code.
    pub values: [Cow<'a, str>; 5],
    /// Its rows' rule, credential and note (rows of different rules, or
    /// that presented different credentials, are not grouped together).
    pub extras: [Cow<'a, str>; 3],
    /// The earliest and latest `requestReceivedTimestamp` of its rows
    /// ("0" when none has one).
    pub first_seen: Cow<'a, str>,
    pub last_seen: Cow<'a, str>,
    pub count: u64,
    /// The wrapping sum of its rows' eventId hashes.
    pub ids: u128,
    pub severity: Severity,
    /// Its rows' triage together: one of theirs when they all share it.
    pub triage: Cow<'a, Triage>,
}

impl Group<'_> {
    /// Its rule.
    pub fn rule(&self) -> Rule {
        Rule::from_name(&self.extras[0]).unwrap_or(Rule::Escu)
    }

    /// A stable id, as [`super::Finding::id`] for rows: the same events
    /// grouped again give the same id (an ESCU group's as before the other
    /// rules existed).
    pub fn id(&self, scope_label: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"rollup\0");
        h.update(scope_label.as_bytes());
        let tail: &[Cow<'_, str>] = if self.rule() == Rule::Escu {
            &[]
        } else {
            &self.extras
        };
        for v in self
            .values
            .iter()
            .chain([&self.first_seen, &self.last_seen])
            .chain(tail)
        {
            h.update([0]);
            h.update(v.as_bytes());
        }
        h.update([0]);
        h.update(self.count.to_be_bytes());
        h.update(self.ids.to_be_bytes());
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The groups of a run's (or a step's) findings, highest severity first,
/// then largest count, then by their values.
#[derive(Debug, Clone, Default)]
pub struct Rollup<'a> {
    pub groups: Vec<Group<'a>>,
}

impl<'a> Rollup<'a> {
    pub fn of(findings: &'a Findings) -> Rollup<'a> {
        type GroupKey<'a> = (u32, [Cow<'a, str>; 5], [Cow<'a, str>; 3]);
        let mut index: HashMap<GroupKey<'a>, usize, foldhash::fast::RandomState> =
            HashMap::default();
        let mut groups: Vec<Group<'a>> = Vec::new();
        // Per group: its first row, and the annotation pairs of all its
        // rows once they differ from the first's (most groups never do).
        let mut pairs: Vec<(Finding<'a>, Option<BTreeSet<u32>>)> = Vec::new();
        for f in findings.iter() {
            let mut cols = f.cols();
            let values = KEPT.map(|i| std::mem::take(&mut cols[i]));
            let seen = std::mem::take(&mut cols[TIMESTAMP]);
            let i = *index
                .entry((f.scope, values, f.extras()))
                .or_insert_with_key(|(scope, values, extras)| {
                    groups.push(Group {
                        scope: *scope,
                        values: values.clone(),
                        extras: extras.clone(),
                        first_seen: Cow::Borrowed(FILL),
                        last_seen: Cow::Borrowed(FILL),
                        count: 0,
                        ids: 0,
                        severity: Severity::Informational,
                        triage: Cow::Borrowed(f.triage),
                    });
                    pairs.push((f, None));
                    groups.len() - 1
                });
            let g = &mut groups[i];
            g.count += f.count;
            g.ids = g.ids.wrapping_add(f.ids);
            g.severity = g.severity.max(f.severity);
            let (first, set) = &mut pairs[i];
            if set.is_some() || !std::ptr::eq(f.triage, first.triage) {
                let set = set.get_or_insert_with(|| {
                    let mut set = BTreeSet::new();
                    findings.pairs_into(first, &mut set);
                    set
                });
                findings.pairs_into(&f, set);
            }
            if seen != FILL {
                if g.first_seen == FILL || earlier(&seen, &g.first_seen) {
                    g.first_seen = seen.clone();
                }
                if g.last_seen == FILL || earlier(&g.last_seen, &seen) {
                    g.last_seen = seen;
                }
            }
        }
        for (g, (_, set)) in groups.iter_mut().zip(pairs) {
            if let Some(set) = set {
                g.triage = Cow::Owned(findings.triage_of_pairs(set));
            }
        }
        groups.sort_unstable_by(|a, b| {
            (b.severity, b.count)
                .cmp(&(a.severity, a.count))
                .then_with(|| (&a.values, &a.extras, a.scope).cmp(&(&b.values, &b.extras, b.scope)))
        });
        Rollup { groups }
    }
}

/// Whether timestamp `a` is before `b`. The API server writes one
/// fixed-width UTC form (`2026-11-29T01:02:03.000004Z`), where text order
/// is time order; other forms are read as times (RFC 3339, or
/// `2024-11-13 18:34:10.595141000` taken as UTC), and what is no time at
/// all sorts after every time, by its text.
fn earlier(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.ends_with('Z') && b.ends_with('Z') {
        return a < b;
    }
    match (parse_time(a), parse_time(b)) {
        (Some(x), Some(y)) => x < y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => a < b,
    }
}

/// A timestamp as kubeanon reads one: RFC 3339, or a date and time with a
/// space between them and no zone (taken as UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_compare_as_times() {
        assert!(earlier(
            "2026-11-29T01:02:03.000004Z",
            "2026-11-29T01:02:03.000005Z"
        ));
        assert!(!earlier(
            "2026-11-29T01:02:03.000005Z",
            "2026-11-29T01:02:03.000004Z"
        ));
        // Different widths: read as times, not text.
        assert!(earlier(
            "2026-11-29T01:02:03.4465Z",
            "2026-11-29T01:02:03.44655Z"
        ));
        assert!(earlier("2026-11-29T01:02:03Z", "2026-11-29T02:02:03+00:30"));
        assert!(earlier(
            "2024-11-13 18:34:10.595141000",
            "2024-11-13T18:34:11Z"
        ));
        // Not a time: after every time.
        assert!(earlier("2024-11-13T18:34:11Z", "yesterday"));
        assert!(!earlier("yesterday", "2024-11-13T18:34:11Z"));
        assert_eq!(
            parse_time("2024-11-13 18:34:10.5").map(|t| t.timestamp_millis()),
            Some(1_731_522_850_500)
        );
    }
}
