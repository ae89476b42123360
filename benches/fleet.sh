#!/usr/bin/env bash
# The fleet benchmark: 2 accounts x 2 regions x 50 EKS clusters in moto's
# server (accounts reached through assumed roles), one `poll --all-clusters`
# run at the default pace, then a second run with nothing new (the steady
# state of a schedule). Prints wall times and API calls by kind. The time
# is the pacer's (4 FilterLogEvents requests/s per account and region), so a
# debug build measures the same as a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/run --test fleet -- a_fleet_of_200_clusters_is_read_in_one_run --nocapture 2>&1 |
  grep -E "^fleet of 200|test result"
