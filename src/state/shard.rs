//! Shards: `--shard I/N` takes the units whose stable hash falls in shard
//! I of N (I from 0, as a Kubernetes Indexed Job's
//! `JOB_COMPLETION_INDEX`). The hash is SHA-256 of the unit
//! ([`WorkUnit::digest`]), so a unit's shard is the same in every run,
//! process and discovery order, and depends on nothing else: N shards
//! started at once split the fleet with no unit read twice and none left
//! out. Changing N re-cuts the shards; state is per unit, so nothing
//! moves with them (a unit's lease keeps two cuts from working on it at
//! once).

use super::unit::WorkUnit;
use crate::exit::UsageError;

/// Most shards: a Kubernetes Indexed Job's limit on completions.
pub const MAX_SHARDS: u32 = 100_000;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The shard (0..n) a unit falls in: the first 64 bits of its digest,
/// scaled to n (multiply and shift: every shard gets an equal share of
/// the hash space, to one part in 2^64).
pub fn shard_of(unit: &WorkUnit, n: u32) -> u32 {
    assert!(n > 0, "shard_of needs at least one shard");
    let d = unit.digest();
    let h = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    ((u128::from(h) * u128::from(n)) >> 64) as u32
}

impl Shard {
    /// All units in one shard: no `--shard`.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` (the value of `--shard`).
    pub fn parse(text: &str) -> Result<Shard, UsageError> {
        let bad = |why: String| {
            UsageError(format!(
                "--shard '{}': {why} (expected I/N: shard I of N, I from 0 to N-1, as JOB_COMPLETION_INDEX counts)",
                crate::output::neutralise_terminal(text)
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(|| bad("no '/'".into()))?;
        let number = |s: &str, what: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{what} is not a number")));
            }
            s.parse::<u32>()
                .map_err(|_| bad(format!("{what} is too large")))
        };
        let (index, count) = (number(i, "I")?, number(n, "N")?);
        if count == 0 || count > MAX_SHARDS {
            return Err(bad(format!("N must be 1 to {MAX_SHARDS}")));
        }
        if index >= count {
            return Err(bad(format!(
                "I must be below N: shards are numbered 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// Is the unit in this shard?
    pub fn contains(&self, unit: &WorkUnit) -> bool {
        shard_of(unit, self.count) == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = UsageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Shard::parse(s)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(log_group: &str) -> WorkUnit {
        WorkUnit::new("111122223333", "us-east-1", log_group).unwrap()
    }

    #[test]
    fn the_hash_is_sha256_of_the_length_prefixed_parts() {
        // Computed outside kubeanon (Python's hashlib):
        // sha256(b"".join(len(p).to_bytes(8, "big") + p for p in
        //   [b"111122223333", b"us-east-1", b"/aws/eks/prod/cluster"])).hexdigest()
        let u = unit("/aws/eks/prod/cluster");
        assert_eq!(
            super::super::unit::hex(&u.digest()),
            "b112b8ccb966d82210e5dd0dfe0c348154f30679e569f4f6ccc5eacedb09f02b"
        );
        // Its first 64 bits scaled to 4 and to 7 shards, by the same script.
        assert_eq!(shard_of(&u, 4), 2);
        assert_eq!(shard_of(&u, 7), 4);
        assert_eq!(shard_of(&u, 1), 0);
    }

    #[test]
    fn shard_flags() {
        assert_eq!(Shard::parse("0/1").unwrap(), Shard::ALL);
        assert_eq!(Shard::parse("3/4").unwrap(), Shard { index: 3, count: 4 });
        assert_eq!("2/5".parse::<Shard>().unwrap().to_string(), "2/5");
        for (bad, says) in [
            ("4/4", "I must be below N: shards are numbered 0 to 3"),
            ("1/0", "N must be 1"),
            ("0/100001", "N must be 1"),
            ("3", "no '/'"),
            ("-1/4", "I is not a number"),
            ("+1/4", "I is not a number"),
            (" 1/4", "I is not a number"),
            ("1/", "N is not a number"),
            ("$(JOB_COMPLETION_INDEX)/4", "I is not a number"),
            ("99999999999/4", "I is too large"),
        ] {
            let err = Shard::parse(bad).unwrap_err().0;
            assert!(
                err.contains(says) && err.contains("--shard"),
                "{bad}: {err}"
            );
        }
    }

    proptest! {
        /// Every unit is in exactly one shard, whatever the order units are
        /// listed in.
        #[test]
        fn each_unit_in_exactly_one_shard(groups in proptest::collection::vec("[ -~]{1,40}", 1..60), n in 1u32..40) {
            let units: Vec<WorkUnit> = groups.iter().map(|g| unit(g)).collect();
            let mut reversed = units.clone();
            reversed.reverse();
            for u in &units {
                let owners: Vec<u32> = (0..n).filter(|&i| Shard { index: i, count: n }.contains(u)).collect();
                prop_assert_eq!(owners.len(), 1);
            }
            let pick = |list: &[WorkUnit], i| -> std::collections::BTreeSet<WorkUnit> {
                list.iter().filter(|u| Shard { index: i, count: n }.contains(u)).cloned().collect()
            };
            for i in 0..n {
                prop_assert_eq!(pick(&units, i), pick(&reversed, i));
            }
        }

        /// Balance: 4,000 units over N shards, as a uniform hash spreads
        /// them. The bounds are six standard deviations (a false alarm about
        /// once in 10^9 checks), per shard and for the chi-square statistic
        /// of all of them (Wilson-Hilferty); a hash of part of the unit
        /// (its account and region only) puts them all in one shard.
        #[test]
        fn shards_are_balanced(seed in any::<u64>(), n in 2u32..=16) {
            const UNITS: f64 = 4000.0;
            let mut counts = vec![0u32; n as usize];
            for i in 0..UNITS as u64 {
                let g = format!("/aws/eks/cluster-{seed:x}-{i}/cluster");
                counts[shard_of(&unit(&g), n) as usize] += 1;
            }
            let p = 1.0 / f64::from(n);
            let (share, sd) = (UNITS * p, (UNITS * p * (1.0 - p)).sqrt());
            for c in &counts {
                prop_assert!((f64::from(*c) - share).abs() <= 6.0 * sd, "{:?}", counts);
            }
            let chi2: f64 = counts.iter().map(|c| (f64::from(*c) - share).powi(2) / share).sum();
            let df = f64::from(n - 1);
            let a = 2.0 / (9.0 * df);
            let limit = df * (1.0 - a + 6.0 * a.sqrt()).powi(3);
            prop_assert!(chi2 <= limit, "chi2 {} > {} for {:?}", chi2, limit, counts);
        }
    }
}
