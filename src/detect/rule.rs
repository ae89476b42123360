//! The rules a run applies, side by side: ESCU's (anonymous requests, as
//! Splunk's analytic has it), `unauthenticated` (requests refused by
//! authentication: a 401 with no user, which is what every request without
//! credentials becomes on EKS 1.32 and later), and `truncated` (records
//! CloudWatch cut at its size limit whose readable prefix shows either).
//!
//! Every rule's rows have the same 13 by-fields with ESCU's fill and
//! grouping; the rule is a column of the row.

use std::fmt;
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
