#!/usr/bin/env bash
# Memory as a flood grows. Runs tests/flood.rs (one `poll --checkpoint
# --append` run over N anonymous events in one ten-minute window, each its
# own finding, against moto's server; rows checked exact against `scan`)
# with a release build at several sizes, and prints one table row each:
# peak RSS (the kernel's count, via tests/support/peak_rss.py), the largest
# checkpoint and commit log seen (sampled every 2 ms) and the steps taken.
# Usage: benches/flood.sh [N...]   (default: 60000 150000 300000 600000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(60000 150000 300000 600000)
echo "| matched events | rows | steps | seconds | peak RSS | largest checkpoint | largest commit log |"
echo "|---|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  line=$(KUBEANON_FLOOD_EVENTS=$n tests/run --release --test flood -- --nocapture 2>&1 | grep '^flood:' || true)
  [ -n "$line" ] || { echo "flood of $n failed: run KUBEANON_FLOOD_EVENTS=$n tests/run --release --test flood -- --nocapture" >&2; exit 1; }
  # flood: N matched events in 10 min -> R rows in S steps, T s; peak RSS M MB; largest checkpoint C MiB, commit log J MiB
  echo "$line" | sed -E 's/^flood: ([0-9]+) matched events in 10 min -> ([0-9]+) rows in ([0-9]+) steps, ([0-9.]+) s; peak RSS ([0-9.]+) MB; largest checkpoint ([0-9.]+) MiB, commit log ([0-9.]+) MiB$/| \1 | \2 | \3 | \4 | \5 MB | \6 MiB | \7 MiB |/'
done
