//! The rules a run applies, side by side: ESCU's (anonymous requests, as
//! Splunk's analytic has it), `unauthenticated` (requests refused by
//! authentication: a 401 with no user, which is what every request without
//! credentials becomes on EKS 1.32 and later), and `truncated` (records
//! CloudWatch cut at its size limit whose readable prefix shows either).
//!
//! Every rule's rows have the same 13 by-fields with ESCU's fill and
//! grouping; the rule is a column of the row.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use super::FILL;
use super::severity::Severity;
use crate::audit::Event;

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Splunk ESCU "Kubernetes AWS detect suspicious kubectl calls":
    /// `user.username="system:anonymous"` in `system:unauthenticated`.
    Escu,
    /// `responseStatus.code` 401 and no username: authentication refused
    /// (kubernetes `WithFailedAuthenticationAudit`).
    Unauthenticated,
    /// A record cut before its end whose prefix shows an anonymous user,
    /// or a 401 with no user.
    Truncated,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Escu, Rule::Unauthenticated, Rule::Truncated];

    /// The `rule` column's value and `--rules`' spelling.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Escu => "escu",
            Rule::Unauthenticated => "unauthenticated",
            Rule::Truncated => "truncated",
        }
    }

    /// The rule of a `rule` column's value.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of rules a run applies (`--rules`). The default is all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rules(u8);

impl Rules {
    pub const ALL: Rules = Rules(0b111);
    /// ESCU's rule alone: exactly the analytic's rows (`--rules escu`), and
    /// what every checkpoint written before the other rules was read with.
    pub const ESCU: Rules = Rules(0b001);

    pub fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    /// The rules in the set, in [`Rule::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Whether ESCU's is the only rule.
    pub fn is_escu_only(self) -> bool {
        self == Rules::ESCU
    }
}

impl Default for Rules {
    fn default() -> Rules {
        Rules::ALL
    }
}

/// Comma-separated names, in [`Rule::ALL`]'s order: `escu,unauthenticated`.
/// The spelling `--rules` takes and a checkpoint records.
impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for r in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(r.name())?;
        }
        Ok(())
    }
}

impl FromStr for Rules {
    type Err = String;

    /// Names joined by commas, in any order, each once or more; `all` for
    /// all of them. Case matters, as in the `rule` column.
    fn from_str(text: &str) -> Result<Rules, String> {
        let mut set = 0u8;
        for name in text.split(',').map(str::trim) {
            if name == "all" {
                set |= Rules::ALL.0;
                continue;
            }
            let rule = Rule::from_name(name).ok_or_else(|| {
                format!(
                    "'{}' is not a rule: escu, unauthenticated, truncated or all (comma-separated)",
                    crate::output::neutralise_terminal(name)
                )
            })?;
            set |= rule.bit();
        }
        Ok(Rules(set))
    }
}

/// What API server's failed-authentication audit writes as
/// `responseStatus.message` (kubernetes `authn_audit.go`).
const NO_CREDENTIALS: &str = "Authentication failed, no credentials provided";
const ATTEMPTED: &str = "Authentication failed, attempted: ";

/// The `credential` column of a refused request, from its
/// `responseStatus.message`: `none` when it presented none, the methods
/// exactly as the message lists them when it presented some (`bearer`,
/// `basic, bearer`), `"0"` when the message says neither.
pub fn credential(message: Option<Cow<'_, str>>) -> Cow<'_, str> {
    match message {
        Some(m) if m == NO_CREDENTIALS => Cow::Borrowed("none"),
        Some(m) if m.len() > ATTEMPTED.len() && m.starts_with(ATTEMPTED) => match m {
            Cow::Borrowed(m) => Cow::Borrowed(&m[ATTEMPTED.len()..]),
            Cow::Owned(m) => Cow::Owned(m[ATTEMPTED.len()..].to_string()),
        },
        _ => Cow::Borrowed(FILL),
    }
}

/// The severity of a refused authentication: informational when it
/// presented no credentials (or the message does not say: a scanner's
/// probe), low when it presented some and they were refused (an expired,
/// revoked or forged token or certificate: someone holds, or tried to
/// make, a credential).
pub fn refusal_severity(credential: &str) -> Severity {
    if credential == "none" || credential == FILL {
        Severity::Informational
    } else {
        Severity::Low
    }
}

/// What the readable prefix of a cut record shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutShows {
    /// An anonymous user; `refused` when a 401 or 403 is readable.
    Anonymous { refused: bool },
    /// A 401 with no user: a refused authentication.
    RefusedAuthentication,
}

impl CutShows {
    /// The row's `note`.
    pub fn note(self) -> &'static str {
        match self {
            CutShows::Anonymous { .. } => {
                "cut record: the part that could be read shows an anonymous request (system:anonymous); the rest was cut"
            }
            CutShows::RefusedAuthentication => {
                "cut record: the part that could be read shows a refused authentication (401, no user); the rest was cut"
            }
        }
    }

    /// High: what the request did was cut away, and someone made it large
    /// enough to be cut. Informational when the prefix shows it refused.
    pub fn severity(self) -> Severity {
        match self {
            CutShows::Anonymous { refused: false } => Severity::High,
            _ => Severity::Informational,
        }
    }
}

/// Whether the `truncated` rule takes a cut record, given the event its
/// readable prefix holds and that event's scalars (see `Event::scalars`).
pub fn cut_shows(event: &Event<'_, '_>, s: &[Option<Cow<'_, str>>; 11]) -> Option<CutShows> {
    let code = s[5].as_deref();
    if event
        .username()
        .is_some_and(|u| u.eq_ignore_ascii_case("system:anonymous"))
    {
        let refused = matches!(code, Some("401" | "403"));
        return Some(CutShows::Anonymous { refused });
    }
    (s[8].is_none() && code == Some("401")).then_some(CutShows::RefusedAuthentication)
}

/// A CloudWatch timestamp in the API server's own form
/// (`2026-11-30T01:02:03.123000Z`), so that it sorts and rolls up with
/// the others.
pub fn timestamp_of_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_read_as_the_message_lists_them() {
        let of = |m: &str| credential(Some(Cow::Borrowed(m))).into_owned();
        assert_eq!(of(NO_CREDENTIALS), "none");
        assert_eq!(of("Authentication failed, attempted: bearer"), "bearer");
        assert_eq!(
            of("Authentication failed, attempted: basic, bearer"),
            "basic, bearer"
        );
        assert_eq!(
            credential(Some(Cow::Owned(format!("{ATTEMPTED}x509")))),
            "x509"
        );
        assert_eq!(of("Authentication failed, attempted: "), "0");
        assert_eq!(of("Unauthorized"), "0");
        assert_eq!(credential(None), "0");
        assert_eq!(refusal_severity("none"), Severity::Informational);
        assert_eq!(refusal_severity("0"), Severity::Informational);
        assert_eq!(refusal_severity("x509"), Severity::Low);
        assert_eq!(
            timestamp_of_ms(1_764_464_523_123).as_deref(),
            Some("2025-11-30T01:02:03.123000Z")
        );
    }

    #[test]
    fn rules_parse_and_print_in_one_order() {
        assert_eq!("escu".parse::<Rules>(), Ok(Rules::ESCU));
        assert_eq!("all".parse::<Rules>(), Ok(Rules::ALL));
        let two: Rules = "truncated, escu,escu".parse().unwrap();
        assert_eq!(two.to_string(), "escu,truncated");
        assert!(two.contains(Rule::Truncated) && !two.contains(Rule::Unauthenticated));
        assert_eq!(Rules::ALL.to_string(), "escu,unauthenticated,truncated");
        assert_eq!(Rules::default(), Rules::ALL);
        let err = "escu,ESCU".parse::<Rules>().unwrap_err();
        assert!(err.contains("'ESCU' is not a rule"), "{err}");
        assert!("".parse::<Rules>().is_err());
    }
}
