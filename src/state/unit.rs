//! The work unit's name in S3: (account, region, log group) as a key
//! path, a stable hash, and the encoding that makes any log group name a
//! safe key segment.
//!
//! Log group names come from discovery and from `--log-group`, so they are
//! treated as attacker-controlled: every byte outside `A-Z a-z 0-9 - _` is
//! percent-encoded (`%2F` for `/`, `%2E` for `.`), which keeps a key free of
//! `/` inside a segment, of `.`/`..` segments, of control and invisible
//! characters, and of anything an S3 console, a shell or a Hive partition
//! would read differently. Hive (and so Athena) decodes `%XX` in partition
//! values, so `cluster=%2Fcustom%2Fgroup` reads back as `/custom/group`. A
//! segment that would be longer than [`MAX_SEGMENT`] bytes keeps a readable
//! beginning and ends in `~` and a hash of the whole name (`~` is always
//! encoded, so such a segment cannot be confused with a short one).

use sha2::{Digest, Sha256};

/// Longest encoded key segment. CloudWatch allows 512-character log group
/// names, up to 1536 bytes encoded; S3 keys end at 1024.
pub const MAX_SEGMENT: usize = 200;

pub use crate::fleet::WorkUnit;

/// The unit's name in S3 (the type is the fleet's).
impl WorkUnit {
    /// A unit; every part must be non-empty.
    pub fn new(
        account: impl Into<String>,
        region: impl Into<String>,
        log_group: impl Into<String>,
    ) -> anyhow::Result<Self> {
        let unit = WorkUnit {
            account: account.into(),
            region: region.into(),
            log_group: log_group.into(),
        };
        for (what, part) in [
            ("account", &unit.account),
            ("region", &unit.region),
            ("log group", &unit.log_group),
        ] {
            if part.is_empty() {
                anyhow::bail!("a work unit needs a {what}");
            }
        }
        Ok(unit)
    }

    /// `<account>/<region>/<log group>`, each encoded: where the unit's
    /// state and lease objects live under their prefixes.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}",
            segment(&self.account),
            segment(&self.region),
            segment(&self.log_group)
        )
    }

    /// SHA-256 of the three parts, each preceded by its length: the same
    /// for the same unit in every run, process and discovery order, and
    /// never the same for two units that differ only in where a part ends.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.account, &self.region, &self.log_group] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// The first 16 hex digits of [`digest`](Self::digest): names the unit
    /// in delivery object names.
    pub fn short_hash(&self) -> String {
        hex(&self.digest()[..8])
    }
}

/// Percent-encodes every byte outside `A-Z a-z 0-9 - _`.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// [`encode`]d, and cut to [`MAX_SEGMENT`] bytes with a hash of the whole
/// text when longer. Never empty for a non-empty text.
pub fn segment(text: &str) -> String {
    let full = encode(text);
    if full.len() <= MAX_SEGMENT {
        return full;
    }
    let hash = hex(&Sha256::digest(text.as_bytes())[..16]);
    // Room for `~` and 32 hex digits; never cut inside a `%XX`.
    let mut cut = MAX_SEGMENT - 1 - hash.len();
    while full.as_bytes()[..cut]
        .iter()
        .rev()
        .take(2)
        .any(|&b| b == b'%')
    {
        cut -= 1;
    }
    format!("{}~{hash}", &full[..cut])
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Percent-decoding, written out here so the test does not trust the
    /// encoder's own table.
    fn decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn eks_names_stay_readable_and_the_rest_is_encoded() {
        assert_eq!(encode("prod-eu_1"), "prod-eu_1");
        assert_eq!(
            encode("/aws/eks/prod/cluster"),
            "%2Faws%2Feks%2Fprod%2Fcluster"
        );
        assert_eq!(encode(".."), "%2E%2E");
        assert_eq!(encode("a b%"), "a%20b%25");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("x\u{202e}\n"), "x%E2%80%AE%0A");
        let unit = WorkUnit::new("111122223333", "eu-west-1", "/aws/eks/prod/cluster").unwrap();
        assert_eq!(
            unit.path(),
            "111122223333/eu-west-1/%2Faws%2Feks%2Fprod%2Fcluster"
        );
    }

    #[test]
    fn empty_parts_are_refused() {
        assert!(WorkUnit::new("", "r", "g").is_err());
        assert!(WorkUnit::new("a", "", "g").is_err());
        let err = WorkUnit::new("a", "r", "").unwrap_err().to_string();
        assert!(err.contains("log group"), "{err}");
    }

    #[test]
    fn long_names_end_in_a_hash_and_stay_apart() {
        let a = "/".repeat(512);
        let b = format!("{}x", "/".repeat(511));
        let (sa, sb) = (segment(&a), segment(&b));
        assert!(sa.len() <= MAX_SEGMENT && sb.len() <= MAX_SEGMENT, "{sa}");
        assert_ne!(sa, sb);
        assert!(sa.starts_with("%2F%2F"), "{sa}");
        let (head, hash) = sa.split_once('~').unwrap();
        assert_eq!(hash.len(), 32);
        assert!(head.len() % 3 == 0, "cut between escapes: {head}");
        // The longest name S3 allows in a whole state key still fits.
        let unit = WorkUnit::new("111122223333", "ap-southeast-2", a).unwrap();
        assert!(format!("some/prefix/state/{}.json", unit.path()).len() < 1024);
    }

    #[test]
    fn the_digest_separates_where_parts_end() {
        let a = WorkUnit::new("1", "r", "ab").unwrap();
        let b = WorkUnit::new("1", "ra", "b").unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.short_hash().len(), 16);
    }

    #[test]
    fn messages_show_hidden_characters_as_escapes() {
        let unit = WorkUnit::new("1", "r", "/g\u{1b}[31m\u{202e}").unwrap();
        let shown = unit.to_string();
        assert!(!shown.chars().any(crate::output::is_hidden), "{shown:?}");
        assert!(shown.contains("\\u{1b}"), "{shown}");
    }

    proptest! {
        /// Any text: the segment is safe, and a short one decodes back to it.
        #[test]
        fn segments_are_safe_and_decode_back(text in "\\PC{0,80}|[\\x00-\\x7f]{0,80}|.{0,300}") {
            let s = segment(&text);
            prop_assert!(s.len() <= MAX_SEGMENT);
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_%~".contains(&b)), "{}", s);
            prop_assert!(s != "." && s != "..");
            if !s.contains('~') {
                prop_assert_eq!(decode(&s), text.as_bytes());
            }
        }

        /// Two different units never share a path.
        #[test]
        fn paths_are_injective(a in "[a-z/%.~]{1,8}", b in "[a-z/%.~]{1,8}") {
            let ua = WorkUnit::new("1", "r", a.clone()).unwrap();
            let ub = WorkUnit::new("1", "r", b.clone()).unwrap();
            prop_assert_eq!(ua.path() == ub.path(), a == b);
        }
    }
}
