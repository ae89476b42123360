//! A fast, exact-superset test: can these bytes hold an anonymous event?
//!
//! The rule needs `user.username` to unescape to `system:anonymous` ignoring
//! ASCII case. In the raw bytes each of the letters of `anonymous` is then
//! either written as itself (either case) or as a `\uXXXX` escape. So a
//! record can match only if it contains `anonymous` case-insensitively, or
//! a `\u` escape that decodes to one of those letters. Escapes of a
//! backslash, and anything after `\u` that is not four hex digits, are also
//! let through: a CloudWatch `message` is JSON inside a JSON string, so an
//! event's own escapes arrive escaped once more (`\\u0061`, `\u005cu0061`).
//! Records the test rejects cannot match; records it passes get a full
//! parse. That keeps the common case (no anonymous traffic) at memory speed.
//!
//! The `unauthenticated` rule needs `responseStatus.code` to show as `401`.
//! A number cannot be escaped, so its record holds the bytes `401` as a
//! value: after a `:` (blanks allowed between) and before a byte that
//! cannot continue a number. A string `"401"` holds them between quotes
//! (escaped ones inside a CloudWatch message), or writes a digit as a
//! `\u` escape, which is let through as for the letters above. The
//! `truncated` rule needs a prefix that shows one or the other, so it adds
//! nothing: a cut record is judged by the same bytes.

use memchr::memmem::Finder;

use super::rule::{Rule, Rules};

/// Finds candidate positions. Searching a lowercased copy with two SIMD
/// substring finders is several times faster than a case-insensitive
/// regex, and a source can run it over a whole buffer of lines at once.
pub struct Prefilter {
    anonymous: Finder<'static>,
    escape: Finder<'static>,
    /// `Some` when the `unauthenticated` rule is applied.
    code_401: Option<Finder<'static>>,
    lower: Vec<u8>,
    hits: Vec<usize>,
}

impl Default for Prefilter {
    /// For every rule (a [`super::Detector`]'s default).
    fn default() -> Self {
        Self::for_rules(Rules::ALL)
    }
}

impl Clone for Prefilter {
    fn clone(&self) -> Self {
        Prefilter {
            code_401: self.code_401.clone(),
            ..Self::new()
        }
    }
}

impl Prefilter {
    /// For ESCU's rule alone.
    pub fn new() -> Self {
        Prefilter {
            anonymous: Finder::new(b"anonymous"),
            escape: Finder::new(br"\u"),
            code_401: None,
            lower: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// For these rules.
    pub fn for_rules(rules: Rules) -> Self {
        Prefilter {
            code_401: rules
                .contains(Rule::Unauthenticated)
                .then(|| Finder::new(b"401")),
            ..Self::new()
        }
    }

    /// True when `bytes` may hold a matching event (never false for one
    /// that does).
    pub fn could_match(&mut self, bytes: &[u8]) -> bool {
        !self.candidates(bytes).is_empty()
    }

    /// The positions in `buf`, ascending, where a matching event may be: a
    /// record (line) of `buf` that contains none of them cannot match.
    pub fn candidates(&mut self, buf: &[u8]) -> &[usize] {
        self.lower.clear();
        self.lower.extend_from_slice(buf);
        // ASCII folding only, as the rule does; `\U` folds to `\u`, which
        // only adds candidates.
        self.lower.make_ascii_lowercase();
        self.hits.clear();
        let lower = &self.lower;
        self.hits.extend(self.anonymous.find_iter(lower));
        let digits = self.code_401.is_some();
        let mut sorted = true;
        let mut extend = |hits: &mut Vec<usize>, more: &mut dyn Iterator<Item = usize>| {
            let before = hits.len();
            hits.extend(more);
            sorted &= before == 0 || before == hits.len();
        };
        extend(
            &mut self.hits,
            &mut self
                .escape
                .find_iter(lower)
                .filter(|&at| escape_may_matter(lower.get(at + 2..at + 6), digits)),
        );
        if let Some(code) = &self.code_401 {
            extend(
                &mut self.hits,
                &mut code.find_iter(lower).filter(|&at| is_401_value(lower, at)),
            );
        }
        if !sorted {
            self.hits.sort_unstable();
        }
        &self.hits
    }
}

/// Whether the `401` at `at` in `buf` may be a value of its own: a number
/// after a `:`, or a string's whole text (between quotes, which a
/// CloudWatch message escapes as `\"`), and not part of a longer number
/// or word. Timestamps (`.401234Z`), addresses and names are not.
fn is_401_value(buf: &[u8], at: usize) -> bool {
    let after = buf.get(at + 3).copied();
    if after.is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')) {
        return false;
    }
    // Blanks before it, written as themselves or, inside a JSON string
    // (a CloudWatch message), as `\n`, `\t`, `\r` escapes at any depth.
    let mut rest = &buf[..at];
    loop {
        match rest {
            [head @ .., b' ' | b'\t' | b'\n' | b'\r'] => rest = head,
            [head @ .., b'\\', b'n' | b't' | b'r'] => {
                rest = head;
                while let [head @ .., b'\\'] = rest {
                    rest = head;
                }
            }
            _ => break,
        }
    }
    matches!(rest.last(), Some(b':' | b'"') | None)
}

/// Whether the four bytes after a `\u` might form part of `anonymous` once
/// unescaped (at any nesting depth), or with `digits`, of `401`.
fn escape_may_matter(hex: Option<&[u8]>, digits: bool) -> bool {
    let Some(hex) = hex else { return true };
    let mut code = 0;
    for &b in hex {
        let Some(digit) = char::from(b).to_digit(16) else {
            return true; // not an escape we can read: keep the record
        };
        code = code * 16 + digit;
    }
    char::from_u32(code).is_some_and(|c| {
        c == '\\' || "anonymousANONYMOUS".contains(c) || (digits && "014 \t\n\r".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may(s: &str) -> bool {
        Prefilter::new().could_match(s.as_bytes())
    }

    #[test]
    fn candidates_in_a_buffer_point_into_the_right_lines() {
        let buf = b"{\"a\":1}\n{\"u\":\"System:ANONYMOUS\"}\n{\"q\":\"a\\u0026b\"}\n{\"n\":\"x\\u0061nonymous\"}\n";
        let mut p = Prefilter::new();
        let hits = p.candidates(buf).to_vec();
        let lines: Vec<usize> = hits
            .iter()
            .map(|&h| buf[..h].iter().filter(|&&b| b == b'\n').count())
            .collect();
        assert_eq!(lines, vec![1, 3], "line 2's \\u0026 is not a candidate");
    }

    #[test]
    fn plain_and_case_varied_names_pass() {
        assert!(may(r#"{"user":{"username":"system:anonymous"}}"#));
        assert!(may(r#"{"user":{"username":"SYSTEM:AnOnYmOuS"}}"#));
    }

    #[test]
    fn escaped_letters_pass_at_any_depth() {
        assert!(may(r#"{"user":{"username":"system:\u0061nonymous"}}"#));
        assert!(may(r#"{"user":{"username":"system:anonym\u004Fus"}}"#));
        assert!(may(
            r#"{"message":"{\"user\":{\"username\":\"system:\\u0061nonymous\"}}"}"#
        ));
        assert!(may(r#"{"message":"system:\u005cu0061nonymous"}"#));
        assert!(may(r#"{"message":"system:\\u\u0030061nonymous"}"#));
        assert!(may(r#"x\u+061"#));
        assert!(may(r#"x\u00"#));
    }

    #[test]
    fn ordinary_events_are_rejected() {
        assert!(!may(
            r#"{"user":{"username":"system:serviceaccount:kube-system:x"},"requestURI":"/api?a=1\u0026b=2\u003c"}"#
        ));
        assert!(!may(r#"{"user":{"username":"kubernetes-admin"}}"#));
        assert!(!may(""));
    }
}
