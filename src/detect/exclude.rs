//! `--exclude COLUMN=PATTERN[,COLUMN=PATTERN...]`: the user's tuning hook,
//! standing in for the SPL search's
//! `kubernetes_aws_detect_suspicious_kubectl_calls_filter` macro. A result
//! row that matches any exclusion is dropped; an exclusion of several
//! comma-separated conditions matches a row only when every condition
//! does, so an attacker-chosen field (`userAgent`) can be paired with one
//! the attacker cannot choose (`src_ip`).
//!
//! Patterns compare as Splunk's `search field=value` does: whole value,
//! ASCII case-insensitive, `*` matching any run of characters (no other
//! wildcard: `?` is common in request URIs and means itself). For `src_ip`
//! a pattern that parses as a CIDR block matches the addresses inside it.
//! In a spec, `\,` is a literal comma and `\\` a literal backslash; any
//! other backslash is itself.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{COLUMNS, SRC_IP};

/// One `--exclude`: conditions that must all match.
#[derive(Debug, Clone)]
pub struct Exclusion {
    conditions: Vec<Condition>,
}

/// One `COLUMN=PATTERN`.
#[derive(Debug, Clone)]
struct Condition {
    column: usize,
    pattern: Pattern,
}

#[derive(Debug, Clone)]
enum Pattern {
    Glob(String),
    Cidr(IpNet),
}

impl Exclusion {
    /// Parses `COLUMN=PATTERN[,COLUMN=PATTERN...]`; the error says what is
    /// wrong.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let conditions = split_conditions(spec)
            .iter()
            .map(|part| Condition::parse(spec, part))
            .collect::<Result<_, _>>()?;
        Ok(Exclusion { conditions })
    }

    /// Whether a row with these 13 column values is excluded: every
    /// condition matches it.
    pub fn matches(&self, cols: &[&str; 13]) -> bool {
        self.conditions.iter().all(|c| c.matches(cols))
    }
}

impl Condition {
    /// Parses one `COLUMN=PATTERN` (`part`, unescaped) of `spec`.
    fn parse(spec: &str, part: &str) -> Result<Self, String> {
        if part.is_empty() {
            return Err(format!(
                "--exclude '{spec}': empty condition (conditions are COLUMN=PATTERN, \
                 separated by commas; a literal comma is written \\,)"
            ));
        }
        let (name, pattern) = part.split_once('=').ok_or_else(|| {
            format!(
                "--exclude '{spec}': expected COLUMN=PATTERN, got '{part}' \
                 (a literal comma in a pattern is written \\,)"
            )
        })?;
        let column = COLUMNS[..13]
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| {
                format!(
                    "--exclude '{spec}': unknown column '{name}' (one of: {})",
                    COLUMNS[..13].join(", ")
                )
            })?;
        let pattern = match pattern.parse::<IpNet>() {
            Ok(net) if column == SRC_IP => Pattern::Cidr(net),
            // A src_ip block that does not parse (`10.0.0.0/33`, `10.0.0/8`)
            // would match nothing as a glob and exclude nothing, silently.
            Err(_) if column == SRC_IP && looks_like_cidr(pattern) => {
                return Err(format!(
                    "--exclude '{spec}': src_ip={pattern} is not a CIDR block ({}): \
                     write it like 10.0.0.0/8 or fd00::/8",
                    cidr_fault(pattern)
                ));
            }
            _ => Pattern::Glob(pattern.to_string()),
        };
        Ok(Condition { column, pattern })
    }

    fn matches(&self, cols: &[&str; 13]) -> bool {
        let value = cols[self.column];
        match &self.pattern {
            Pattern::Glob(glob) => glob_match(glob.as_bytes(), value.as_bytes()),
            Pattern::Cidr(net) => value.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

/// `10.0.0.0/33`, `10.0.0/8`, `fd00::/129`: a slash, and otherwise only
/// what addresses are written with (no `*`: a glob is a glob).
fn looks_like_cidr(pattern: &str) -> bool {
    pattern.contains('/')
        && pattern
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/'))
        && pattern.bytes().any(|b| b.is_ascii_digit())
}

/// What is wrong with a block that does not parse, in words.
fn cidr_fault(pattern: &str) -> String {
    let (addr, len) = pattern.split_once('/').unwrap_or((pattern, ""));
    match addr.parse::<IpAddr>() {
        Err(_) => format!("'{addr}' is not a whole IPv4 or IPv6 address"),
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            format!("the prefix length after '/' must be 0 to {max}, not '{len}'")
        }
    }
}

/// Splits a spec at its unescaped commas and unescapes each part: `\,` is
/// a comma, `\\` a backslash, and any other backslash stays as it is.
fn split_conditions(spec: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' => parts.push(std::mem::take(&mut part)),
            '\\' => part.push(chars.next_if(|&n| n == ',' || n == '\\').unwrap_or('\\')),
            c => part.push(c),
        }
    }
    parts.push(part);
    parts
}

/// Whole-string match with `*` wildcards, ASCII case-insensitive. Greedy
/// with backtracking to the last star: linear for one star, O(n*m) worst.
/// `*` matches any run of bytes; the rest matches ASCII case-insensitively.
pub fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_with(column: usize, value: &'static str) -> [&'static str; 13] {
        let mut cols = ["0"; 13];
        cols[column] = value;
        cols
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"kube-probe/*", b"kube-probe/1.29"));
        assert!(glob_match(b"*probe*", b"KUBE-PROBE/1.29"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(!glob_match(b"/version", b"/version?timeout=32s"));
        assert!(glob_match(b"/version?timeout=*", b"/version?timeout=32s"));
        assert!(!glob_match(b"/version?", b"/versionX"));
    }

    #[test]
    fn cidr_applies_to_src_ip_only() {
        let ex = Exclusion::parse("src_ip=10.0.0.0/8").unwrap();
        assert!(ex.matches(&row_with(SRC_IP, "10.1.2.3")));
        assert!(!ex.matches(&row_with(SRC_IP, "11.1.2.3")));
        assert!(!ex.matches(&row_with(SRC_IP, "0")));
        let v6 = Exclusion::parse("src_ip=fd00::/8").unwrap();
        assert!(v6.matches(&row_with(SRC_IP, "fd12::1")));
        // Elsewhere a CIDR-looking pattern is just text.
        let uri = Exclusion::parse("requestURI=10.0.0.0/8").unwrap();
        assert!(uri.matches(&row_with(4, "10.0.0.0/8")));
        assert!(!uri.matches(&row_with(4, "10.1.2.3")));
    }

    #[test]
    fn a_src_ip_block_that_does_not_parse_is_refused() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "10.0.0.0/",
            "300.0.0.0/8",
        ] {
            let err = Exclusion::parse(&format!("src_ip={bad}")).unwrap_err();
            assert!(err.contains("--exclude") && err.contains(bad), "{err}");
        }
        // Globs with a slash stay globs, and other columns take any text.
        assert!(Exclusion::parse("src_ip=10.0.*/8").is_ok());
        assert!(Exclusion::parse("requestURI=10.0.0/8").is_ok());
    }

    #[test]
    fn glob_on_a_named_column() {
        let ex = Exclusion::parse("userAgent=kube-probe/*").unwrap();
        assert!(ex.matches(&row_with(11, "kube-probe/1.30")));
        assert!(!ex.matches(&row_with(11, "curl/8.0")));
        let ex = Exclusion::parse("src_ip=192.168.*").unwrap();
        assert!(ex.matches(&row_with(SRC_IP, "192.168.0.9")));
    }

    fn row(set: &[(usize, &'static str)]) -> [&'static str; 13] {
        let mut cols = ["0"; 13];
        for &(column, value) in set {
            cols[column] = value;
        }
        cols
    }

    #[test]
    fn conditions_must_all_match() {
        let ex = Exclusion::parse("userAgent=kube-probe/*,src_ip=10.0.0.0/8").unwrap();
        let probe_inside = row(&[(11, "kube-probe/1.30"), (SRC_IP, "10.1.2.3")]);
        let probe_outside = row(&[(11, "kube-probe/1.30"), (SRC_IP, "203.0.113.9")]);
        let curl_inside = row(&[(11, "curl/8"), (SRC_IP, "10.1.2.3")]);
        assert!(ex.matches(&probe_inside));
        // An attacker who sets the user agent from outside is still seen.
        assert!(!ex.matches(&probe_outside));
        assert!(!ex.matches(&curl_inside));
        // Three conditions, one column twice.
        let ex = Exclusion::parse("userAgent=a*,userAgent=*z,verb=get").unwrap();
        assert!(ex.matches(&row(&[(11, "abcz"), (12, "GET")])));
        assert!(!ex.matches(&row(&[(11, "abc"), (12, "get")])));
        assert!(!ex.matches(&row(&[(11, "abcz"), (12, "list")])));
    }

    #[test]
    fn a_literal_comma_is_escaped_with_a_backslash() {
        let ex = Exclusion::parse(r"userAgent=Mozilla/5.0 (X11\, Linux)*").unwrap();
        assert!(ex.matches(&row(&[(11, "Mozilla/5.0 (X11, Linux) Firefox")])));
        assert!(!ex.matches(&row(&[(11, "Mozilla/5.0 (X11")])));
        // A comma after an escaped backslash separates; a backslash before
        // anything else is itself.
        let ex = Exclusion::parse(r"requestURI=C:\\,verb=get").unwrap();
        assert!(ex.matches(&row(&[(4, r"C:\"), (12, "get")])));
        let ex = Exclusion::parse(r"requestURI=\x\\\,y").unwrap();
        assert!(ex.matches(&row(&[(4, r"\x\,y")])));
        assert_eq!(
            split_conditions(r"a=1\,2,b=\\,c=\d\"),
            ["a=1,2", r"b=\", r"c=\d\"]
        );
        // Unescaped, a comma in a value splits it, and the rest is not a
        // condition: an error, never a silently different exclusion.
        let err = Exclusion::parse("userAgent=Mozilla/5.0 (X11, Linux)").unwrap_err();
        assert!(
            err.contains("COLUMN=PATTERN") && err.contains(r"\,"),
            "{err}"
        );
    }

    #[test]
    fn bad_specs_are_explained() {
        for spec in ["userAgent=x,", ",userAgent=x", "userAgent=x,,verb=get", ""] {
            let err = Exclusion::parse(spec).unwrap_err();
            assert!(err.contains("empty condition"), "{spec}: {err}");
        }
        assert!(
            Exclusion::parse("userAgent=x,nope=1")
                .unwrap_err()
                .contains("unknown column 'nope'")
        );
        assert!(
            Exclusion::parse("userAgent")
                .unwrap_err()
                .contains("COLUMN=PATTERN")
        );
        assert!(
            Exclusion::parse("count=1")
                .unwrap_err()
                .contains("unknown column")
        );
        assert!(
            Exclusion::parse("sourceIPs{}=1")
                .unwrap_err()
                .contains("unknown column")
        );
    }
}
