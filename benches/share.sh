#!/usr/bin/env bash
# The flood's share: the all-anonymous flood's MB/s over the realistic
# mix's, `kubeanon scan --format ndjson` to /dev/null, the two alternated
# RUNS times (default 5) in one go, each input read into the page cache
# before each timed run. Ratios, not absolute speeds, are what compare
# across runs on a shared machine.
#
#   benches/share.sh REALISTIC ANONYMOUS
#   benches/share.sh bench-data/realistic-1g.jsonl bench-data/anonymous-500m.jsonl
#
# The inputs are benches/run.sh's (gen_audit). K names the binary
# (default: the profiling build, which `cargo build --profile profiling`
# makes). Needs bc.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
K=${K:-$TARGET/profiling/kubeanon}
[ -x "$K" ] || { echo "benches/share.sh: no $K (cargo build --profile profiling, or set K)" >&2; exit 1; }
REAL=$1; ANON=$2; RUNS=${RUNS:-5}
t() { local s e; cat "$1" >/dev/null; s=$(date +%s.%N); "$K" scan -q "$1" --format ndjson >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
"$K" scan -q "$REAL" --format ndjson >/dev/null; "$K" scan -q "$ANON" --format ndjson >/dev/null
rs=(); as=()
for i in $(seq $RUNS); do rs+=($(t "$REAL")); as+=($(t "$ANON")); done
mean() { printf '%s\n' "$@" | awk '{s+=$1; ss+=$1*$1} END {m=s/NR; printf "%.3f %.3f\n", m, sqrt(ss/NR-m*m)}'; }
read rm rsd < <(mean "${rs[@]}"); read am asd < <(mean "${as[@]}")
rb=$(stat -L -c %s "$REAL"); ab=$(stat -L -c %s "$ANON")
rows=$("$K" scan -q "$ANON" --format ndjson | wc -l)
awk -v rm=$rm -v rsd=$rsd -v am=$am -v asd=$asd -v rb=$rb -v ab=$ab -v rows=$rows 'BEGIN {
  r = rb/1e6/rm; a = ab/1e6/am;
  printf "realistic %.3f ± %.3f s, %.0f MB/s; flood %.3f ± %.3f s, %.0f MB/s, %d rows, %.0f rows/s; share %.3f\n", rm, rsd, r, am, asd, a, rows, rows/am, a/r }'
