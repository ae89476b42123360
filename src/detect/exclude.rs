//! `--exclude COLUMN=PATTERN`: the user's tuning hook, standing in for the
//! SPL search's `kubernetes_aws_detect_suspicious_kubectl_calls_filter`
//! macro. A result row that matches any exclusion is dropped.
//!
//! Patterns compare as Splunk's `search field=value` does: whole value,
//! ASCII case-insensitive, `*` matching any run of characters (no other
//! wildcard: `?` is common in request URIs and means itself). For `src_ip`
//! a pattern that parses as a CIDR block matches the addresses inside it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{COLUMNS, SRC_IP};

#[derive(Debug, Clone)]
pub struct Exclusion {
    column: usize,
    pattern: Pattern,
}

#[derive(Debug, Clone)]
enum Pattern {
    Glob(String),
    Cidr(IpNet),
}

impl Exclusion {
    /// Parses `COLUMN=PATTERN`; the error says what is wrong.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, pattern) = spec
            .split_once('=')
            .ok_or_else(|| format!("--exclude '{spec}': expected COLUMN=PATTERN"))?;
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
            _ => Pattern::Glob(pattern.to_string()),
        };
        Ok(Exclusion { column, pattern })
    }

    /// Whether a row with these 13 column values is excluded.
    pub fn matches(&self, cols: &[&str; 13]) -> bool {
        let value = cols[self.column];
        match &self.pattern {
            Pattern::Glob(glob) => glob_match(glob.as_bytes(), value.as_bytes()),
            Pattern::Cidr(net) => value.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

/// Whole-string match with `*` wildcards, ASCII case-insensitive. Greedy
/// with backtracking to the last star: linear for one star, O(n*m) worst.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
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
    fn glob_on_a_named_column() {
        let ex = Exclusion::parse("userAgent=kube-probe/*").unwrap();
        assert!(ex.matches(&row_with(11, "kube-probe/1.30")));
        assert!(!ex.matches(&row_with(11, "curl/8.0")));
        let ex = Exclusion::parse("src_ip=192.168.*").unwrap();
        assert!(ex.matches(&row_with(SRC_IP, "192.168.0.9")));
    }

    #[test]
    fn bad_specs_are_explained() {
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
