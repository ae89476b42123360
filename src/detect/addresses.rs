//! The cap on the source addresses one event makes rows of
//! (`--max-addresses`).
//!
//! ESCU makes a row per value of `sourceIPs`, and the API server copies
//! every valid address of the caller's `X-Forwarded-For` header there
//! (kubernetes `utilnet.SourceIPs`), so one request under CloudWatch's
//! 256 KB limit can carry about 16,000 addresses it chose itself: 16,000
//! rows from one event, and memory that grows with what a caller writes
//! rather than with what it did. No real client sends more than a few
//! proxies' worth.
//!
//! An event with more distinct addresses than the cap keeps the last one
//! (`SourceIPs` appends the connection's own peer last, and the caller
//! cannot forge it) and the first distinct ones before it, up to the cap
//! in all. A kept address is counted as often as the array holds it, as
//! ESCU counts duplicates, so each kept row is the row ESCU would have
//! made, with the cap's note added. At or under the cap nothing changes:
//! the rows are ESCU's.

use std::borrow::Cow;

use hashbrown::HashMap;

use crate::audit::Values;

/// `--max-addresses`' default.
pub const DEFAULT_MAX_ADDRESSES: usize = 64;

/// How many distinct addresses of one event become rows; `None`: all of
/// them (`--max-addresses 0`), memory then bounded only by the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressCap(Option<usize>);

impl Default for AddressCap {
    fn default() -> Self {
        AddressCap(Some(DEFAULT_MAX_ADDRESSES))
    }
}

impl AddressCap {
    /// At most `n` distinct addresses per event; `0` lifts the cap (a cap
    /// of no address would report nothing of a matched event).
    pub fn new(n: usize) -> Self {
        AddressCap((n > 0).then_some(n))
    }

    /// No cap: ESCU's rows for every event, however many addresses.
    pub fn none() -> Self {
        AddressCap(None)
    }

    /// The cap, `None` when lifted.
    pub fn get(self) -> Option<usize> {
        self.0
    }

    /// Applies the cap to one event's `sourceIPs{}` values (in the
    /// array's order, duplicates included). Returns what was capped, if
    /// anything; `ips` then holds only the kept addresses, each as often
    /// as before.
    pub(super) fn apply(self, ips: &mut Values<'_>) -> Option<Capped> {
        let cap = self.0?;
        // No more values than the cap: no more distinct ones either. This
        // is every real event, and costs one comparison.
        if ips.len() <= cap {
            return None;
        }
        let keep = kept(ips, cap)?;
        let mut flags = keep.flags.into_iter();
        ips.retain(|_| flags.next().unwrap_or(false));
        Some(keep.capped)
    }
}

/// What the cap left out of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Capped {
    /// Distinct addresses kept (the cap).
    pub kept: usize,
    /// Distinct addresses the event had.
    pub distinct: usize,
}

impl Capped {
    /// The row's note: neutral, and names the flag that lifts the cap.
    pub(super) fn note(self) -> String {
        format!(
            "sourceIPs capped: {} of {} distinct addresses kept, the first ones and the last \
             (the connection's own); --max-addresses 0 keeps all",
            self.kept, self.distinct
        )
    }
}

struct Keep {
    /// Per value of the array: kept or not.
    flags: Vec<bool>,
    capped: Capped,
}

/// Which values to keep under `cap`; `None` when the event has no more
/// distinct addresses than that (duplicates only). The map holds each
/// distinct address once, borrowed from `ips`: transient, and no larger
/// than the event.
fn kept(ips: &[Cow<'_, str>], cap: usize) -> Option<Keep> {
    let last = ips.last()?;
    // Seeded per process: the addresses are the caller's choice.
    let mut seen: HashMap<&str, bool, foldhash::fast::RandomState> = HashMap::default();
    // The last address first, so that it is kept whatever comes before.
    seen.insert(last.as_ref(), true);
    let mut kept = 1;
    let flags = ips
        .iter()
        .map(|ip| {
            *seen.entry(ip.as_ref()).or_insert_with(|| {
                let keep = kept < cap;
                kept += usize::from(keep);
                keep
            })
        })
        .collect();
    let distinct = seen.len();
    (distinct > cap).then_some(Keep {
        flags,
        capped: Capped { kept, distinct },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply` on these values: what is left, and what was capped.
    fn capped(cap: AddressCap, values: &[&str]) -> (Vec<String>, Option<Capped>) {
        let mut ips: Values<'_> = values.iter().map(|v| Cow::Borrowed(*v)).collect();
        let capped = cap.apply(&mut ips);
        (ips.iter().map(|v| v.to_string()).collect(), capped)
    }

    fn addresses(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect()
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_default_is_64_and_0_lifts_it() {
        assert_eq!(AddressCap::default().get(), Some(64));
        assert_eq!(AddressCap::new(0), AddressCap::none());
        assert_eq!(AddressCap::new(5).get(), Some(5));
    }

    #[test]
    fn at_or_under_the_cap_every_value_is_kept() {
        for n in [0, 1, 63, 64] {
            let all = addresses(n);
            assert_eq!(
                capped(AddressCap::default(), &strs(&all)),
                (all, None),
                "{n}"
            );
        }
    }

    #[test]
    fn duplicates_count_once_towards_the_cap_and_are_all_kept() {
        // 200 values, 64 distinct: not capped, every duplicate kept.
        let distinct = addresses(64);
        let all: Vec<String> = distinct.iter().cycle().take(200).cloned().collect();
        assert_eq!(capped(AddressCap::default(), &strs(&all)), (all, None));
    }

    #[test]
    fn over_the_cap_the_first_63_and_the_last_are_kept() {
        let all = addresses(16_000);
        let (kept, capped) = capped(AddressCap::default(), &strs(&all));
        let mut want = all[..63].to_vec();
        want.push(all[15_999].clone());
        assert_eq!(kept, want);
        assert_eq!(
            capped,
            Some(Capped {
                kept: 64,
                distinct: 16_000
            })
        );
    }

    /// `apply` under `cap` keeps `want` of `values`, `kept` of `distinct`.
    fn assert_capped(cap: usize, values: &[&str], want: &[&str], kept: usize, distinct: usize) {
        let got = capped(AddressCap::new(cap), values);
        assert_eq!(got.0, want, "{values:?}");
        assert_eq!(got.1, Some(Capped { kept, distinct }), "{values:?}");
    }

    #[test]
    fn kept_addresses_keep_their_duplicates_and_the_rest_go() {
        // a b a c d b e d, cap 3: distinct a b c d e; kept a, b and the
        // last (d), each as often as the array holds it.
        let values = ["a", "b", "a", "c", "d", "b", "e", "d"];
        assert_capped(3, &values, &["a", "b", "a", "d", "b", "d"], 3, 5);
    }

    #[test]
    fn a_last_address_among_the_first_leaves_room_for_one_more() {
        // The last is also the second: the first 3 distinct are kept (the
        // last among them), 3 of 5.
        let values = ["a", "b", "c", "d", "e", "b"];
        assert_capped(3, &values, &["a", "b", "c", "b"], 3, 5);
    }

    #[test]
    fn a_cap_of_one_keeps_the_connection_s_address() {
        assert_capped(1, &["x", "y", "x", "z"], &["z"], 1, 3);
    }

    #[test]
    fn no_cap_keeps_everything() {
        let all = addresses(1_000);
        assert_eq!(capped(AddressCap::none(), &strs(&all)), (all, None));
    }

    #[test]
    fn the_note_says_how_many_and_how_to_keep_all() {
        let note = Capped {
            kept: 64,
            distinct: 16_000,
        }
        .note();
        assert!(note.starts_with("sourceIPs capped: 64 of 16000 distinct addresses kept"));
        assert!(note.contains("--max-addresses 0"));
    }
}
