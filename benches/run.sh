#!/usr/bin/env bash
# Benchmark: `kubeanon scan` against ripgrep and jq, in one hyperfine run.
#
#   benches/run.sh            # from the repository root (or anywhere)
#
# What it does:
#   1. builds kubeanon and the log generator (`cargo build --profile
#      profiling`: release code with line tables),
#   2. generates, unless already there, into ./bench-data/ (gitignored):
#        realistic-1g.jsonl      1 GiB of EKS audit events, 0.2% anonymous
#                                (gen_audit --size 1G --anonymous-ratio 0.002 --seed 1)
#        anonymous-500m.jsonl    500 MiB where every event is anonymous
#                                (gen_audit --size 500M --anonymous-ratio 1 --seed 2)
#        realistic-100m.jsonl    the first 100 MiB (whole lines) of the
#                                realistic file, for jq, which is too slow for 1 GiB
#   3. times all commands in a single hyperfine run (each input is read
#      once, untimed, before every timed run, so every command reads from
#      the page cache),
#   4. measures peak RSS of each command with /usr/bin/time -v,
#   5. prints a markdown table: tool, input, seconds, MB/s, peak RSS.
#
# MB/s is input bytes / 10^6 / mean seconds. Inputs are the GiB/MiB sizes above.
#
# Knobs (environment): RUNS (default 5), WARMUP (default 1), BENCH_DIR
# (default ./bench-data), CORE (the core for the one-core rows, default 0),
# BASELINE (another kubeanon binary, e.g. one built from the commit before
# a change: its scans are timed in the same run, for a ratio).
#
# Needs: cargo, hyperfine, ripgrep, jq, GNU time, taskset. On Debian/Ubuntu:
#   sudo apt-get install -y hyperfine ripgrep jq time util-linux
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-$ROOT/bench-data}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
CORE=${CORE:-0}

missing=()
command -v cargo >/dev/null || missing+=("cargo (https://rustup.rs)")
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v rg >/dev/null || missing+=(ripgrep)
command -v jq >/dev/null || missing+=(jq)
[ -x /usr/bin/time ] || missing+=(time)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    echo "benches/run.sh: missing: ${missing[*]}" >&2
    echo "install with: sudo apt-get install -y hyperfine ripgrep jq time util-linux" >&2
    exit 1
fi

echo "== build" >&2
cargo build --profile profiling --bin kubeanon --example gen_audit >&2
KUBEANON=$ROOT/target/profiling/kubeanon
GEN=$ROOT/target/profiling/examples/gen_audit

mkdir -p "$BENCH_DIR"
REAL=$BENCH_DIR/realistic-1g.jsonl
ANON=$BENCH_DIR/anonymous-500m.jsonl
SLICE=$BENCH_DIR/realistic-100m.jsonl

generate() { # file, generator args...
    local out=$1
    shift
    if [ ! -s "$out" ]; then
        echo "== generating $out" >&2
        "$GEN" "$@" >"$out.tmp" 2>"$out.gen.txt"
        mv "$out.tmp" "$out"
        cat "$out.gen.txt" >&2
    fi
}
generate "$REAL" --size 1G --anonymous-ratio 0.002 --seed 1
generate "$ANON" --size 500M --anonymous-ratio 1 --seed 2
if [ ! -s "$SLICE" ]; then
    # 100 MiB, cut back to the last whole line.
    head -c $((100 * 1024 * 1024)) "$REAL" | head -n -1 >"$SLICE.tmp"
    mv "$SLICE.tmp" "$SLICE"
fi

size() { stat -L -c %s "$1"; }
# Warm the page cache so the first timed command is not penalised.
cat "$REAL" "$ANON" "$SLICE" >/dev/null

# name | input label | input file | command
ROWS=(
    "kubeanon scan|realistic 1 GiB, 0.2% anonymous|$REAL|$KUBEANON scan -q $REAL --format ndjson >/dev/null"
    "kubeanon scan (1 core)|realistic 1 GiB, 0.2% anonymous|$REAL|taskset -c $CORE $KUBEANON scan -q $REAL --format ndjson >/dev/null"
    "rg -c -i system:anonymous|realistic 1 GiB, 0.2% anonymous|$REAL|rg -c -i system:anonymous $REAL >/dev/null"
    "jq select(username)|realistic, first 100 MiB|$SLICE|jq -c 'select(.user.username==\"system:anonymous\")' $SLICE >/dev/null"
    "kubeanon scan (1 core)|all-anonymous 500 MiB|$ANON|taskset -c $CORE $KUBEANON scan -q $ANON --format ndjson >/dev/null"
    "kubeanon scan|all-anonymous 500 MiB|$ANON|$KUBEANON scan -q $ANON --format ndjson >/dev/null"
    "rg -c -i system:anonymous|all-anonymous 500 MiB|$ANON|rg -c -i system:anonymous $ANON >/dev/null"
    "kubeanon scan --rollup|realistic 1 GiB, 0.2% anonymous|$REAL|$KUBEANON scan -q --rollup $REAL --format ndjson >/dev/null"
    "kubeanon scan --rollup|all-anonymous 500 MiB|$ANON|$KUBEANON scan -q --rollup $ANON --format ndjson >/dev/null"
)
if [ -n "${BASELINE:-}" ]; then
    ROWS+=(
        "baseline scan|realistic 1 GiB, 0.2% anonymous|$REAL|$BASELINE scan -q $REAL --format ndjson >/dev/null"
        "baseline scan (1 core)|all-anonymous 500 MiB|$ANON|taskset -c $CORE $BASELINE scan -q $ANON --format ndjson >/dev/null"
        "baseline scan|all-anonymous 500 MiB|$ANON|$BASELINE scan -q $ANON --format ndjson >/dev/null"
    )
fi

args=()
for row in "${ROWS[@]}"; do
    IFS='|' read -r name label file cmd <<<"$row"
    # Read the input once more before every timed run (not timed): the
    # page cache can be reclaimed between runs, and a run that reads part
    # of its input from disk times the disk, not the tool.
    args+=(--prepare "cat '$file' >/dev/null" -n "$name / $label" "$cmd")
done

echo "== timing (hyperfine, $RUNS runs, $WARMUP warmup)" >&2
JSON=$BENCH_DIR/hyperfine.json
hyperfine --warmup "$WARMUP" --runs "$RUNS" --export-json "$JSON" "${args[@]}" >&2

echo "== peak RSS (/usr/bin/time -v)" >&2
rss_kb() { # command -> max RSS in KiB
    /usr/bin/time -v bash -c "$1" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'
}

echo "== sanity: what each tool found" >&2
"$KUBEANON" scan "$REAL" --format ndjson 2>&1 >/dev/null | sed 's/^/  realistic: /' >&2
"$KUBEANON" scan "$ANON" --format ndjson 2>&1 >/dev/null | sed 's/^/  all-anonymous: /' >&2
[ -f "$REAL.gen.txt" ] && sed 's/^/  realistic generator: /' "$REAL.gen.txt" >&2
[ -f "$ANON.gen.txt" ] && sed 's/^/  all-anonymous generator: /' "$ANON.gen.txt" >&2
echo "  realistic: rg -c -i system:anonymous = $(rg -c -i system:anonymous "$REAL")" >&2
# A rollup's lines add up to the rows' counts.
for f in "$REAL" "$ANON"; do
    rows=$("$KUBEANON" scan -q "$f" --format ndjson | jq -s 'map(.count) | [length, add]' -c)
    lines=$("$KUBEANON" scan -q --rollup "$f" --format ndjson | jq -s 'map(.count) | [length, add]' -c)
    echo "  $(basename "$f"): rows [lines, count sum] = $rows, --rollup = $lines" >&2
done
echo "  realistic 100 MiB slice: jq matches = $(jq -c 'select(.user.username=="system:anonymous")' "$SLICE" | wc -l)," \
    "kubeanon: $("$KUBEANON" scan "$SLICE" --format ndjson 2>&1 >/dev/null)" >&2

echo
echo "| tool | input | seconds (mean ± sd) | MB/s | peak RSS |"
echo "|---|---|---|---|---|"
i=0
for row in "${ROWS[@]}"; do
    IFS='|' read -r name label file cmd <<<"$row"
    read -r mean sd < <(jq -r ".results[$i] | \"\(.mean) \(.stddev)\"" "$JSON")
    bytes=$(size "$file")
    kb=$(rss_kb "$cmd")
    awk -v n="$name" -v l="$label" -v m="$mean" -v s="$sd" -v b="$bytes" -v k="$kb" 'BEGIN {
        printf "| `%s` | %s | %.3f ± %.3f | %.0f | %.1f MB |\n", n, l, m, s, b / 1e6 / m, k * 1024 / 1e6
    }'
    i=$((i + 1))
done
echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo);" \
    "$(uname -sr); $(date -u +%Y-%m-%d)." \
    "$(rg --version | head -1), $(jq --version), $(hyperfine --version)."
