#!/usr/bin/env bash
# Memory of `kubeanon scan` on hostile input: requests padded through
# X-Forwarded-For, which the API server copies into `sourceIPs`.
#
#   benches/memory.sh            # 100 requests x 16,000 addresses
#   benches/memory.sh 100 16000
#
# The input (bench-data/padded-N-A.jsonl, deterministic) is N anonymous
# requests from gen_audit (`--events N --anonymous-ratio 1 --xff A-1
# --seed 4`), each with A addresses in `sourceIPs` (A-1 forged, distinct,
# then the connection's own), about 230 KB each at 16,000: under
# CloudWatch's 256 KB limit. gen_audit also writes a RequestReceived copy
# of a few of them, as the API server logs both stages. `kubeanon scan
# --format ndjson` runs with the default cap (--max-addresses 64) and with
# the cap lifted (--max-addresses 0); peak RSS is /usr/bin/time -v's
# maximum resident set size (not a timed test: one run each). Prints a
# table: rows written, capped events (from the summary line), seconds
# (wall clock of that run) and peak RSS.
#
# Needs: cargo, GNU time (apt-get install time).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-100}
A=${2:-16000}
BENCH_DIR=${BENCH_DIR:-$ROOT/bench-data}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[ -x /usr/bin/time ] || { echo "benches/memory.sh: needs GNU time (apt-get install time)" >&2; exit 1; }

cargo build --profile profiling --bin kubeanon --example gen_audit >&2
KUBEANON=$TARGET/profiling/kubeanon
GEN=$TARGET/profiling/examples/gen_audit

mkdir -p "$BENCH_DIR"
IN=$BENCH_DIR/padded-$N-$A.jsonl
if [ ! -s "$IN" ]; then
    echo "== generating $IN" >&2
    "$GEN" --events "$N" --anonymous-ratio 1 --xff $((A - 1)) --seed 4 >"$IN.tmp"
    mv "$IN.tmp" "$IN"
fi
cat "$IN" >/dev/null # into the page cache
echo "input: $(wc -l <"$IN") lines, $(stat -L -c %s "$IN") bytes, longest line $(awk '{ if (length($0) > m) m = length($0) } END { print m }' "$IN") bytes" >&2

echo "| command | rows | capped events | seconds | peak RSS |"
echo "|---|---|---|---|---|"
for cap in 64 0; do
    err=$(mktemp)
    /usr/bin/time -v -o "$err.time" "$KUBEANON" scan --format ndjson --max-addresses "$cap" "$IN" 2>"$err" | wc -l >"$err.rows"
    rows=$(cat "$err.rows")
    summary=$(grep '^kubeanon scan:' "$err")
    capped=$(echo "$summary" | sed -nE 's/.*\(([0-9]+) events? with source addresses capped.*/\1/p')
    seconds=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$err.time")
    kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$err.time")
    awk -v c="$cap" -v r="$rows" -v x="${capped:-0}" -v s="$seconds" -v k="$kb" 'BEGIN {
        printf "| `kubeanon scan --max-addresses %s` | %d | %d | %.2f | %.1f MB |\n", c, r, x, s, k * 1024 / 1e6
    }'
    echo "  --max-addresses $cap: $summary" >&2
    rm -f "$err" "$err.time" "$err.rows"
done
echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)," \
    "$(uname -sr); $(date -u +%Y-%m-%d)."
