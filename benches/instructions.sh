#!/usr/bin/env bash
# Instructions executed (cachegrind's `I refs`) by `kubeanon scan` on the
# first 30 MB of the all-anonymous benchmark input: a count that does not
# drift with the machine's load, for comparing two builds of a change on a
# shared machine where wall times move by a third between runs.
#
#   benches/instructions.sh                  # the profiling build
#   benches/instructions.sh OLD_BIN NEW_BIN  # any builds, side by side
#   benches/instructions.sh "BIN --rules escu" BIN
#                                            # one build, two sets of flags
#
# An argument is a binary and, after spaces, flags for its `scan` (split at
# spaces, so no path or flag with a space in it). INPUT (environment)
# counts on the first SLICE_BYTES (default 30000000) of another file
# instead, cut back to a whole line and kept beside it as
# INPUT.<bytes>.jsonl.
#
# Needs valgrind (sudo apt-get install -y valgrind) and the benchmark input
# (benches/run.sh makes it). Prints one line per binary; the per-function
# breakdown is in /tmp/kubeanon-cachegrind.<n>.out (cg_annotate FILE).
set -euo pipefail

cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/bench-data}
ANON=${INPUT:-$BENCH_DIR/anonymous-500m.jsonl}
SLICE_BYTES=${SLICE_BYTES:-30000000}
if [ -n "${INPUT:-}" ]; then
    SLICE=${INPUT%.jsonl}.$SLICE_BYTES.jsonl
else
    SLICE=$BENCH_DIR/anonymous-30m.jsonl
fi

command -v valgrind >/dev/null || {
    echo "benches/instructions.sh: needs valgrind (sudo apt-get install -y valgrind)" >&2
    exit 1
}
[ -s "$ANON" ] || {
    echo "benches/instructions.sh: $ANON is missing: run benches/run.sh first" >&2
    exit 1
}
if [ ! -s "$SLICE" ]; then
    # 30 MB, cut back to the last whole line: under the size at which scan
    # splits a file across cores, so every build reads it the same way.
    head -c "$SLICE_BYTES" "$ANON" | head -n -1 >"$SLICE.tmp"
    mv "$SLICE.tmp" "$SLICE"
fi
if [ $# -eq 0 ]; then
    cargo build --profile profiling --bin kubeanon >&2
    set -- target/profiling/kubeanon
fi
n=0
for arg in "$@"; do
    n=$((n + 1))
    read -r -a cmd <<<"$arg"
    out=/tmp/kubeanon-cachegrind.$n.out
    refs=$(valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
        "${cmd[0]}" scan -q "$SLICE" --format ndjson -o /dev/null "${cmd[@]:1}" 2>&1 |
        awk -F: '/I[ ]+refs/ {gsub(/[ ,]/, "", $2); print $2}')
    printf '%s\t%s instructions\n' "$arg" "$refs"
done
