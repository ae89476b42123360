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
//! knows nothing of files or CloudWatch. Results come out as [`Findings`],
//! sorted rows counted in the aggregate (`aggregate.rs`). Each row also
//! carries its triage: the highest severity of its events
//! (`severity.rs`) and the authorization annotations they had
//! (`notes.rs`); `rollup.rs` groups rows for `--rollup`. An event with
//! more distinct source addresses than `--max-addresses` makes rows of some
//! of them only (`addresses.rs`).

mod addresses;
mod aggregate;
mod exclude;
mod notes;
mod prefilter;
pub mod rollup;
pub mod rule;
pub mod severity;

use std::borrow::Cow;

use crate::audit::{Event, Record, Shape, Values};
pub use addresses::{AddressCap, DEFAULT_MAX_ADDRESSES};
use aggregate::Key;
pub use aggregate::{Aggregator, Finding, Findings, event_hash};
pub use exclude::{Exclusion, glob_match};
pub use notes::Triage;
pub use prefilter::Prefilter;
pub use rollup::{Group, ROLLUP_COLUMNS, Rollup};
pub use rule::{Rule, Rules};
pub use severity::{Binding, Severity};

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
/// The triage columns every row has after the detection's (see
/// [`severity`]): its severity, the distinct authorization decisions and
/// reasons of its events, and the bindings the reasons name.
pub const TRIAGE_COLUMNS: [&str; 4] = ["severity", "decision", "reason", "binding"];
/// The columns after the triage columns: which rule made the row
/// ([`Rule::name`]), the credential a refused request presented (`none`,
/// or the methods the API server says it attempted: `bearer`, `basic,
/// bearer`), and what kubeanon itself has to say about the row (a cut
/// record; an event's source addresses capped by `--max-addresses`; in
/// poll, a version restriction); `"0"` where nothing.
pub const RULE_COLUMNS: [&str; 3] = ["rule", "credential", "note"];
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
    matches_with_groups(event, &event.groups())
}

/// [`matches`], given the event's `user.groups{}`, which the caller needs
/// again for the rows.
fn matches_with_groups(event: &Event<'_, '_>, groups: &[Cow<'_, str>]) -> bool {
    event
        .username()
        .is_some_and(|u| u.eq_ignore_ascii_case(USERNAME))
        && groups.iter().any(|g| g.eq_ignore_ascii_case(GROUP))
}

/// Counters a run reports in its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records read: audit events, or lines/messages judged cheaply.
    pub events: u64,
    /// Records that are not a JSON object (truncated, binary, cut lines)
    /// and that no rule reported.
    pub malformed: u64,
    /// Cut records reported by the `truncated` rule (not counted in
    /// `events` or `malformed`).
    pub truncated: u64,
    /// Events that matched the rule.
    pub matched: u64,
    /// Matched events already counted by an earlier run (poll only).
    pub duplicates: u64,
    /// Result rows dropped by `--exclude` (each event/value pair once).
    pub excluded: u64,
    /// Result rows left out by `--min-severity` (each aggregated row once).
    pub below_min_severity: u64,
    /// Matched events with more distinct source addresses than
    /// `--max-addresses`, of which only some became rows.
    pub capped: u64,
}

impl Stats {
    pub fn merge(&mut self, other: &Stats) {
        self.events += other.events;
        self.malformed += other.malformed;
        self.truncated += other.truncated;
        self.matched += other.matched;
        self.duplicates += other.duplicates;
        self.excluded += other.excluded;
        self.below_min_severity += other.below_min_severity;
        self.capped += other.capped;
    }
}

/// Where a record came from, as far as the core needs to know.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// Scope tag copied into the findings.
    pub scope: u32,
    /// The CloudWatch eventId, when the source has one.
    pub event_id: Option<&'a str>,
    /// The CloudWatch event's timestamp (ms since the epoch), when the
    /// source has one: a cut record's time when its own was cut away.
    pub timestamp_ms: Option<i64>,
}

/// The detection core. Feed it records; take the findings at the end.
#[derive(Default)]
pub struct Detector {
    prefilter: Prefilter,
    exclusions: Vec<Exclusion>,
    /// `--min-severity`: rows below it are left out at the end.
    min_severity: Option<Severity>,
    /// `--rules`.
    rules: Rules,
    /// `--max-addresses`.
    max_addresses: AddressCap,
    agg: Aggregator,
    pub stats: Stats,
}

/// What a source knows of a record before the detector parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The [`Prefilter`] passed it: parse it.
    Passed,
    /// The [`Prefilter`] rejected it: no anonymous event can be inside, so
    /// it is only checked for being framed as a JSON object.
    Rejected,
    /// Not judged, because nearly every record lately passed (a flood of
    /// anonymous traffic), where running the prefilter costs more than it
    /// saves. It is parsed, and judged only when it is not an audit event,
    /// so the counts come out as if it had been judged.
    Unjudged,
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

    /// Applies these rules (all of them by default).
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self.prefilter = Prefilter::for_rules(rules);
        self
    }

    /// The rules it applies.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Makes rows of at most `cap` distinct source addresses per event
    /// (`--max-addresses`; 64 by default, see `addresses.rs`).
    pub fn max_addresses(mut self, cap: AddressCap) -> Self {
        self.max_addresses = cap;
        self
    }

    /// How many rows (distinct aggregated keys) it holds now, before
    /// `--min-severity` is applied: a constant-time count, for a caller
    /// that bounds the memory of what it has fed (each row holds its key,
    /// so memory grows with this number, not with the events).
    pub fn rows(&self) -> u64 {
        self.agg.len() as u64
    }

    /// Leaves rows below `min` out of the findings (`--min-severity`). A
    /// row's severity is the highest of its events', known once all are
    /// in: the rows are judged when the run [`finish`](Detector::finish)es.
    pub fn at_least(mut self, min: Option<Severity>) -> Self {
        self.min_severity = min;
        self
    }

    /// Feeds one record: an audit event, a CloudWatch event wrapping one, or
    /// a document listing either. Never fails: what is not a JSON object is
    /// counted as malformed.
    pub fn feed(&mut self, bytes: &[u8], origin: Origin<'_>) -> Fed {
        self.feed_at(bytes, origin, 0)
    }

    /// Feeds a record with what the caller already knows of it: a source
    /// that runs the [`Prefilter`] over a whole buffer of records at once,
    /// or one that skipped it because nearly every record passed.
    pub fn feed_prejudged(&mut self, bytes: &[u8], origin: Origin<'_>, verdict: Verdict) -> Fed {
        self.feed_judged(bytes, origin, verdict, 0)
    }

    fn feed_at(&mut self, bytes: &[u8], origin: Origin<'_>, depth: u8) -> Fed {
        let verdict = self.judge(bytes);
        self.feed_judged(bytes, origin, verdict, depth)
    }

    fn judge(&mut self, bytes: &[u8]) -> Verdict {
        if self.prefilter.could_match(bytes) {
            Verdict::Passed
        } else {
            Verdict::Rejected
        }
    }

    fn feed_judged(
        &mut self,
        bytes: &[u8],
        origin: Origin<'_>,
        verdict: Verdict,
        depth: u8,
    ) -> Fed {
        if verdict == Verdict::Rejected {
            // No anonymous event can be in here: judge the framing only,
            // which keeps the common case at memory speed.
            if looks_like_object(bytes) {
                self.stats.events += 1;
            } else {
                self.stats.malformed += 1;
            }
            return Fed::Nothing;
        }
        let record = parse(bytes);
        let shape = record.as_ref().map(Record::shape);
        // An audit event counts the same whether or not the prefilter
        // would have passed it (one event; it matches only if it could).
        // Anything else is counted as its verdict says: judge it now.
        if verdict == Verdict::Unjudged
            && !matches!(shape, Some(Shape::Event(_)))
            && self.judge(bytes) == Verdict::Rejected
        {
            return self.feed_judged(bytes, origin, Verdict::Rejected, depth);
        }
        let Some(shape) = shape else {
            if self.rules.contains(Rule::Truncated) {
                return self.count_cut(bytes, origin);
            }
            self.stats.malformed += 1;
            return Fed::Nothing;
        };
        match shape {
            Shape::Event(event) => {
                self.stats.events += 1;
                self.count(&event, origin)
            }
            _ if depth >= MAX_DEPTH => {
                self.stats.malformed += 1;
                Fed::Nothing
            }
            Shape::CloudWatch {
                message,
                event_id,
                timestamp_ms,
            } => {
                let event_id = origin.event_id.or(event_id.as_deref());
                let origin = Origin {
                    event_id,
                    timestamp_ms: origin.timestamp_ms.or(timestamp_ms),
                    ..origin
                };
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

    /// Counts an event if a rule takes it: one row per (source IP, group)
    /// pair, of at most `--max-addresses` distinct source IPs.
    fn count(&mut self, event: &Event<'_, '_>, origin: Origin<'_>) -> Fed {
        let groups = event.groups();
        // Decided before the other scalars are read: most events a
        // prefilter passes match no rule.
        let rule = if self.rules.contains(Rule::Escu) && matches_with_groups(event, &groups) {
            Rule::Escu
        } else if self.rules.contains(Rule::Unauthenticated) && refused_authentication(event) {
            Rule::Unauthenticated
        } else {
            return Fed::Nothing;
        };
        let s = event.scalars();
        self.stats.matched += 1;
        let pair = self.pair(event);
        let (credential, severity) = match rule {
            Rule::Escu => (Cow::Borrowed(FILL), self.escu_severity(event, &s, pair)),
            _ => {
                let credential = rule::credential(event.status_message());
                let severity = rule::refusal_severity(&credential);
                (credential, severity)
            }
        };
        let mut ips = event.source_ips();
        let note = match self.max_addresses.apply(&mut ips) {
            Some(capped) => {
                self.stats.capped += 1;
                Cow::Owned(capped.note())
            }
            None => Cow::Borrowed(FILL),
        };
        let extras = [Cow::Borrowed(rule.name()), credential, note];
        self.add_rows(s, ips, groups, extras, severity, pair, origin);
        Fed::Matched
    }

    /// A record that is not whole JSON: a row of rule `truncated` when
    /// its readable prefix shows an anonymous user or a 401 with no user;
    /// otherwise malformed, as before.
    fn count_cut(&mut self, bytes: &[u8], origin: Origin<'_>) -> Fed {
        let Some(text) = crate::audit::prefix::readable(bytes) else {
            self.stats.malformed += 1;
            return Fed::Nothing;
        };
        let record = parse(text.as_bytes());
        let Some(Shape::Event(event)) = record.as_ref().map(Record::shape) else {
            self.stats.malformed += 1;
            return Fed::Nothing;
        };
        let mut s = event.scalars();
        let Some(shown) = rule::cut_shows(&event, &s) else {
            self.stats.malformed += 1;
            return Fed::Nothing;
        };
        self.stats.truncated += 1;
        // The time: the prefix's own, else CloudWatch's, else filled.
        if s[3].is_none() {
            s[3] = origin
                .timestamp_ms
                .and_then(rule::timestamp_of_ms)
                .map(Cow::Owned);
        }
        let pair = self.pair(&event);
        let groups = event.groups();
        // One row for one cut record: a cut usually falls in `sourceIPs`,
        // padded through X-Forwarded-For, and thousands of addresses the
        // sender wrote are not thousands of findings. The row shows the
        // first; the note says how many more could be read.
        let mut ips = event.source_ips();
        let note = match ips.len() {
            0 | 1 => Cow::Borrowed(shown.note()),
            n => Cow::Owned(format!(
                "{}; {n} source addresses could be read, src_ip is the first",
                shown.note()
            )),
        };
        ips.truncate(1);
        let extras = [
            Cow::Borrowed(Rule::Truncated.name()),
            Cow::Borrowed(FILL),
            note,
        ];
        let severity = shown.severity();
        self.add_rows(s, ips, groups, extras, severity, pair, origin);
        Fed::Matched
    }

    /// The event's authorization annotations, as a pair of the notes.
    fn pair(&mut self, event: &Event<'_, '_>) -> u32 {
        let [decision, reason] = event.authorization();
        self.agg.notes.lookup(decision, reason)
    }

    /// ESCU's row's severity (see [`severity`]), from its scalars.
    fn escu_severity(
        &self,
        event: &Event<'_, '_>,
        s: &[Option<Cow<'_, str>>; 11],
        pair: u32,
    ) -> Severity {
        let fill = Cow::Borrowed(FILL);
        let scalar = |i: usize| s[i].as_ref().unwrap_or(&fill);
        let subresource = event.subresource();
        // Indices into the eleven scalars (see Event::scalars).
        severity::severity(&severity::Request {
            code: scalar(5),
            stage: scalar(6),
            decision: self.agg.notes.decision(pair),
            verb: scalar(10),
            resource: scalar(2),
            subresource: subresource.as_deref().unwrap_or(FILL),
            uri: scalar(4),
        })
    }

    /// Adds the rows of one event: one per (source IP, group) pair, with
    /// the 13 by-fields from `s`, the IPs and the groups, then `extras`
    /// (rule, credential, note).
    #[allow(clippy::too_many_arguments)]
    fn add_rows(
        &mut self,
        s: [Option<Cow<'_, str>>; 11],
        ips: Values<'_>,
        groups: Values<'_>,
        extras: [Cow<'_, str>; 3],
        severity: Severity,
        pair: u32,
        origin: Origin<'_>,
    ) {
        let ids = origin.event_id.map_or(0, event_hash);
        let fill = Cow::Borrowed(FILL);
        let scalar = |i: usize| s[i].as_ref().unwrap_or(&fill);
        let ips = or_fill(ips);
        let groups = or_fill(groups);
        for ip in &ips {
            for group in &groups {
                let values: [&Cow<'_, str>; 13] = std::array::from_fn(|i| match i {
                    SRC_IP => ip,
                    GROUPS => group,
                    i if i < SRC_IP => scalar(i),
                    i if i < GROUPS => scalar(i - 1),
                    i => scalar(i - 2),
                });
                if self
                    .exclusions
                    .iter()
                    .any(|x| x.matches(&values.map(|v| &**v)))
                {
                    self.stats.excluded += 1;
                    continue;
                }
                self.agg
                    .add_built(origin.scope, 1, ids, severity, pair, |key| {
                        for value in values.into_iter().chain(&extras) {
                            // Only an unescaped (owned) value can hold a NUL.
                            Key::push_value(key, value, matches!(value, Cow::Owned(_)));
                        }
                        Key::push_scope(key, origin.scope);
                    });
            }
        }
    }

    /// A new, empty detector with the same settings (for another thread).
    pub fn fresh(&self) -> Detector {
        Detector::new(self.exclusions.clone())
            .at_least(self.min_severity)
            .with_rules(self.rules)
            .max_addresses(self.max_addresses)
    }

    /// Puts its rows in key order now, on this thread: a reader thread
    /// does it before its detector is absorbed, so that the threads sort
    /// their parts at the same time and absorbing them is a merge by key.
    pub fn sort(&mut self) {
        self.agg.sort();
    }

    /// Takes in another detector's rows and counters (one that read another
    /// part of the same input). Its rows are judged with these, at the end:
    /// a row's severity is the highest over both parts.
    pub fn absorb(&mut self, other: Detector) {
        self.agg.merge(other.agg);
        self.stats.merge(&other.stats);
    }

    /// Ends the run: the aggregate and the counters. Rows below the
    /// minimum severity are counted here and left out of its findings.
    pub fn finish(mut self) -> (Aggregator, Stats) {
        self.stats.below_min_severity += self.agg.at_least(self.min_severity);
        (self.agg, self.stats)
    }
}

/// The `unauthenticated` rule: `responseStatus.code` 401 and no username
/// (the `user` column filled with "0": absent, `null`, empty, an object
/// or an array). The username first: it is already parsed.
fn refused_authentication(event: &Event<'_, '_>) -> bool {
    event.shown_username().is_none() && event.shown_code().as_deref() == Some("401")
}

/// One JSON object: the fast parse, or serde_json's where it declines.
fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    Record::parse_fast(bytes).or_else(|| Record::parse(bytes).ok())
}

/// A multi-valued field with no usable value groups as one "0" row.
fn or_fill(mut values: Values<'_>) -> Values<'_> {
    if values.is_empty() {
        values.push(Cow::Borrowed(FILL));
    }
    values
}

/// The cheap framing check for records the prefilter rejected: a JSON
/// object's first and last non-blank bytes. Catches CloudWatch-truncated
/// events (`...[Truncated...]`), binary data and cut lines.
fn looks_like_object(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod tests;
