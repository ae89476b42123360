#!/usr/bin/env bash
# What the default rules (`--rules all`: escu, unauthenticated, truncated)
# cost against ESCU's rule alone (`--rules escu`, the behaviour before the
# other two), as ratios from one run of one binary:
#
#   benches/rules.sh          # from the repository root (or anywhere)
#
#   1. builds kubeanon and the generator (`cargo build --profile profiling`;
#      CARGO_TARGET_DIR is honoured),
#   2. generates, unless already there, into BENCH_DIR (default ./bench-data):
#        realistic-1g.jsonl     as benches/run.sh: 1 GiB, 0.2% anonymous, no
#                               refused authentication (seed 1)
#        anonymous-500m.jsonl   as benches/run.sh: every event anonymous (seed 2)
#        refused-500m.jsonl     every event a refused authentication, as
#                               kubernetes authn_audit.go logs them (401,
#                               "user":{}, ResponseStarted; what scanners'
#                               requests become with anonymous access off)
#                               (gen_audit --size 500M --anonymous-ratio 0
#                               --refused-ratio 1 --seed 3)
#   3. checks the rows: `--rules escu` finds the generator's anonymous
#      count; the default finds those plus the refused ones (by `rule`),
#   4. times `scan --rules escu` against `scan` with hyperfine, alternated:
#      RUNS rounds, each one hyperfine run of both commands (WARMUP untimed
#      runs of each first, and the input read, untimed, before every timed
#      run, so it comes from the page cache), the order swapped every
#      round; so RUNS timed runs of each, side by side in time,
#   5. counts instructions (cachegrind, benches/instructions.sh) of the
#      two on the first 30 MB of each input (one thread: under the size at
#      which scan splits a file); the per-function counts are kept as
#      BENCH_DIR/cachegrind.<input>.<rules>.out (cg_annotate FILE),
#   6. peak RSS of each (/usr/bin/time -v), and prints markdown tables.
#
# Knobs (environment): RUNS (default 5), WARMUP (default 1), BENCH_DIR,
# KUBEANON (the binary to measure instead of the profiling build; NO_BUILD=1
# skips the build), BASELINE (a build from before --rules, e.g. of commit
# a1d7a45: timed and counted in the same rounds as a third command,
# `before`, whose rows are ESCU's),
# INPUTS (default "realistic anonymous refused"), SMALL=1 for inputs of a
# tenth of the size (realistic-100m-gen, anonymous-50m, refused-50m).
#
# Needs: cargo, hyperfine, jq, valgrind, GNU time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-$ROOT/bench-data}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
INPUTS=${INPUTS:-realistic anonymous refused}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in cargo hyperfine jq valgrind; do
    command -v $tool >/dev/null || {
        echo "benches/rules.sh: needs $tool" >&2
        exit 1
    }
done
[ -x /usr/bin/time ] || {
    echo "benches/rules.sh: needs GNU time" >&2
    exit 1
}

if [ -z "${NO_BUILD:-}" ]; then
    echo "== build" >&2
    cargo build --profile profiling --bin kubeanon --example gen_audit >&2
fi
K=${KUBEANON:-$TARGET/profiling/kubeanon}
GEN=$TARGET/profiling/examples/gen_audit
mkdir -p "$BENCH_DIR"

# input name -> file, label, generator arguments
if [ -n "${SMALL:-}" ]; then
    declare -A FILE=([realistic]=realistic-100m-gen.jsonl [anonymous]=anonymous-50m.jsonl [refused]=refused-50m.jsonl)
    declare -A LABEL=([realistic]="realistic 100 MiB, 0.2% anonymous" [anonymous]="all-anonymous 50 MiB" [refused]="all-refused 50 MiB")
    declare -A ARGS=([realistic]="--size 100M --anonymous-ratio 0.002 --seed 1" [anonymous]="--size 50M --anonymous-ratio 1 --seed 2" [refused]="--size 50M --anonymous-ratio 0 --refused-ratio 1 --seed 3")
else
    declare -A FILE=([realistic]=realistic-1g.jsonl [anonymous]=anonymous-500m.jsonl [refused]=refused-500m.jsonl)
    declare -A LABEL=([realistic]="realistic 1 GiB, 0.2% anonymous" [anonymous]="all-anonymous 500 MiB" [refused]="all-refused 500 MiB")
    declare -A ARGS=([realistic]="--size 1G --anonymous-ratio 0.002 --seed 1" [anonymous]="--size 500M --anonymous-ratio 1 --seed 2" [refused]="--size 500M --anonymous-ratio 0 --refused-ratio 1 --seed 3")
fi

for inp in $INPUTS; do
    f=$BENCH_DIR/${FILE[$inp]}
    if [ ! -s "$f" ]; then
        echo "== generating $f" >&2
        # shellcheck disable=SC2086
        "$GEN" ${ARGS[$inp]} >"$f.tmp" 2>"$f.gen.txt"
        mv "$f.tmp" "$f"
    fi
    sed "s/^/  $inp: /" "$f.gen.txt" >&2
done

ESCU="--rules escu"
summary=$BENCH_DIR/rules-summary.txt
: >"$summary"

echo "== rows" >&2
for inp in $INPUTS; do
    f=$BENCH_DIR/${FILE[$inp]}
    for rules in escu all; do
        flags=$([ $rules = escu ] && echo "$ESCU" || true)
        # shellcheck disable=SC2086
        by_rule=$("$K" scan $flags "$f" --format ndjson 2>"$BENCH_DIR/rules-stderr.txt" |
            jq -r '.rule' | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')
        echo "$inp $rules rows: ${by_rule:-none}; scan said: $(tr '\n' ' ' <"$BENCH_DIR/rules-stderr.txt")" |
            tee -a "$summary" >&2
    done
    echo "$inp generator: $(cat "$f.gen.txt")" | tee -a "$summary" >&2
done

echo "== timing (hyperfine, $RUNS alternated rounds, $WARMUP warm-up each)" >&2
for inp in $INPUTS; do
    f=$BENCH_DIR/${FILE[$inp]}
    rm -f "$BENCH_DIR"/rules-"$inp".*.json
    cat "$f" >/dev/null
    escu_cmd="$K scan -q $ESCU $f --format ndjson >/dev/null"
    all_cmd="$K scan -q $f --format ndjson >/dev/null"
    before=()
    [ -n "${BASELINE:-}" ] && before=(-n before "$BASELINE scan -q $f --format ndjson >/dev/null")
    for r in $(seq 1 "$RUNS"); do
        if [ $((r % 2)) -eq 1 ]; then
            pair=("${before[@]}" -n escu "$escu_cmd" -n all "$all_cmd")
        else
            pair=(-n all "$all_cmd" -n escu "$escu_cmd" "${before[@]}")
        fi
        hyperfine --style basic --warmup "$WARMUP" --runs 1 --prepare "cat '$f' >/dev/null" \
            --export-json "$BENCH_DIR/rules-$inp.$r.json" "${pair[@]}" >&2
    done
done

echo "== instructions (cachegrind, first 30 MB)" >&2
declare -A INSTR
for inp in $INPUTS; do
    f=$BENCH_DIR/${FILE[$inp]}
    while IFS=$'\t' read -r what refs; do
        case $what in
        *"$ESCU") INSTR[$inp.escu]=${refs% instructions} ;;
        "$K") INSTR[$inp.all]=${refs% instructions} ;;
        *) INSTR[$inp.before]=${refs% instructions} ;;
        esac
    done < <(INPUT=$f BENCH_DIR=$BENCH_DIR benches/instructions.sh "$K $ESCU" "$K" ${BASELINE:+"$BASELINE"})
    mv /tmp/kubeanon-cachegrind.1.out "$BENCH_DIR/cachegrind.$inp.escu.out"
    mv /tmp/kubeanon-cachegrind.2.out "$BENCH_DIR/cachegrind.$inp.all.out"
    [ -n "${BASELINE:-}" ] && mv /tmp/kubeanon-cachegrind.3.out "$BENCH_DIR/cachegrind.$inp.before.out"
done

rss() { # command -> peak RSS in MB
    /usr/bin/time -v bash -c "$1" 2>&1 >/dev/null |
        awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 * 1024 / 1e6}'
}

echo
echo "| input | rules | seconds (mean ± sd) | user + sys s | × escu (of means) | × escu (each round: min-max) | instructions, 30 MB | × escu | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|"
for inp in $INPUTS; do
    f=$BENCH_DIR/${FILE[$inp]}
    # Each round's pair of times; then the means, sds and ratios.
    stats=$(jq -rs '
        def mean: add / length;
        def sd: (mean) as $m | (map(. - $m | . * .) | add / (length - 1 | if . < 1 then 1 else . end)) | sqrt;
        def t($n): map(.results[] | select(.command == $n) | .times[0]);
        def cpu($n): map(.results[] | select(.command == $n) | .user + .system);
        (t("escu")) as $e | (t("all")) as $a | (t("before")) as $b |
        [range(0; $e | length) | $a[.] / $e[.]] as $r |
        [($e | mean), ($e | sd), (cpu("escu") | mean), ($a | mean), ($a | sd), (cpu("all") | mean),
         ($a | mean) / ($e | mean), ($r | min), ($r | max),
         if ($b | length) > 0 then ($b | mean), ($b | sd), (cpu("before") | mean) else 0, 0, 0 end] | @tsv' \
        "$BENCH_DIR"/rules-"$inp".*.json)
    read -r em es ec am as ac ratio rmin rmax bm bs bc <<<"$stats"
    ie=${INSTR[$inp.escu]}
    ia=${INSTR[$inp.all]}
    if [ -n "${BASELINE:-}" ]; then
        rb=$(rss "$BASELINE scan -q $f --format ndjson >/dev/null")
        awk -v l="${LABEL[$inp]}" -v bm="$bm" -v bs="$bs" -v bc="$bc" -v em="$em" -v ib="${INSTR[$inp.before]}" \
            -v ie="$ie" -v rb="$rb" 'BEGIN {
            printf "| %s | `BASELINE` | %.3f ± %.3f | %.3f | %.3f | | %.1f M | %.3f | %s MB |\n", l, bm, bs, bc, bm / em, ib / 1e6, ib / ie, rb
        }'
    fi
    re=$(rss "$K scan -q $ESCU $f --format ndjson >/dev/null")
    ra=$(rss "$K scan -q $f --format ndjson >/dev/null")
    awk -v l="${LABEL[$inp]}" -v em="$em" -v es="$es" -v ec="$ec" -v am="$am" -v as="$as" -v ac="$ac" \
        -v ratio="$ratio" -v rmin="$rmin" -v rmax="$rmax" -v ie="$ie" -v ia="$ia" -v re="$re" -v ra="$ra" 'BEGIN {
        printf "| %s | `--rules escu` | %.3f ± %.3f | %.3f | 1 | | %.1f M | 1 | %s MB |\n", l, em, es, ec, ie / 1e6, re
        printf "| %s | default (all) | %.3f ± %.3f | %.3f | %.3f | %.3f-%.3f | %.1f M | %.3f | %s MB |\n", l, am, as, ac, ratio, rmin, rmax, ia / 1e6, ia / ie, ra
    }'
done
echo
cat "$summary"
echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo);" \
    "$(uname -sr); $(date -u +%Y-%m-%d); load $(cut -d' ' -f1-3 /proc/loadavg)." \
    "$(hyperfine --version), $(valgrind --version)."
