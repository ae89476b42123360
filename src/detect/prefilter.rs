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

use regex::bytes::Regex;

pub struct Prefilter {
    re: Regex,
}

impl Default for Prefilter {
    fn default() -> Self {
        Self::new()
    }
}

impl Prefilter {
    pub fn new() -> Self {
        // `-u`: match bytes, ASCII case folding only, as the rule does.
        let re = Regex::new(r"(?i-u)anonymous|\\u").expect("static pattern");
        Prefilter { re }
    }

    /// True when `bytes` may hold a matching event (never false for one
    /// that does).
    pub fn could_match(&self, bytes: &[u8]) -> bool {
        self.re
            .find_iter(bytes)
            .any(|m| m.len() != 2 || escape_may_matter(bytes.get(m.end()..m.end() + 4)))
    }
}

/// Whether the four bytes after a `\u` might form part of `anonymous` once
/// unescaped (at any nesting depth).
fn escape_may_matter(hex: Option<&[u8]>) -> bool {
    let Some(hex) = hex else { return true };
    let Some(code) = std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
    else {
        return true;
    };
    if hex.iter().any(|b| !b.is_ascii_hexdigit()) {
        return true; // from_str_radix accepts a leading '+'
    }
    match char::from_u32(code) {
        Some(c) => c == '\\' || "anonymousANONYMOUS".contains(c),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may(s: &str) -> bool {
        Prefilter::new().could_match(s.as_bytes())
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
