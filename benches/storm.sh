#!/usr/bin/env bash
# Scanner storm: `kubeanon scan` with and without `--rollup` on a file where
# a few internet scanners hammer a few paths, every request its own row.
#
#   benches/storm.sh            # 1,000,000 events (about 470 MB)
#   benches/storm.sh 200000
#
# The input (bench-data/storm-N.jsonl, deterministic) is EKS-shaped audit
# events from 40 scanners (source IP and user agent fixed per scanner),
# each probing 6 paths: /version and /healthz (allowed by
# system:public-info-viewer), /api, /apis, /.env and /wp-login.php
# (forbidden), all ResponseComplete with distinct timestamps, and one in
# a thousand an allowed anonymous `list secrets` through a
# ClusterRoleBinding. Prints a table: rows or lines written, their count
# sum (the same both ways), mean seconds (hyperfine, 5 runs after 1
# warm-up, the input in the page cache) and peak RSS.
#
# Needs: cargo, hyperfine, jq, GNU time, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${1:-1000000}
BENCH_DIR=${BENCH_DIR:-$PWD/bench-data}
RUNS=${RUNS:-5}
mkdir -p "$BENCH_DIR"
IN=$BENCH_DIR/storm-$N.jsonl

cargo build --profile profiling --bin kubeanon >&2
KUBEANON=$PWD/target/profiling/kubeanon

if [ ! -s "$IN" ]; then
    echo "== generating $IN" >&2
    python3 - "$N" >"$IN.tmp" <<'EOF'
import json, random, sys
n = int(sys.argv[1])
rng = random.Random(14)
scanners = [(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
             rng.choice(["zgrab/0.x", "Mozilla/5.0 zgrab/0.x", "python-requests/2.31.0",
                         "Go-http-client/1.1", "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)"]))
            for _ in range(40)]
public = 'RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole "system:public-info-viewer" to Group "system:unauthenticated"'
paths = [("/version", 200, "allow", public), ("/healthz", 200, "allow", public),
         ("/api", 403, "forbid", ""), ("/apis", 403, "forbid", ""),
         ("/.env", 403, "forbid", ""), ("/wp-login.php", 403, "forbid", "")]
user = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
out = sys.stdout
for i in range(n):
    us = 1_741_910_400_000_000 + i * 997
    t = f"2025-03-14T{us // 3_600_000_000 % 24:02}:{us // 60_000_000 % 60:02}:{us // 1_000_000 % 60:02}.{us % 1_000_000:06}Z"
    ip, agent = scanners[i % len(scanners)]
    e = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
         "auditID": f"storm-{i}", "stage": "ResponseComplete", "verb": "get",
         "user": user, "sourceIPs": [ip], "userAgent": agent,
         "requestReceivedTimestamp": t, "stageTimestamp": t}
    if i % 1000 == 999:
        e.update(requestURI="/api/v1/namespaces/kube-system/secrets",
                 objectRef={"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
                 responseStatus={"metadata": {}, "code": 200}, verb="list",
                 annotations={"authorization.k8s.io/decision": "allow",
                              "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "debug-anonymous" of ClusterRole "secret-reader" to User "system:anonymous"'})
    else:
        path, code, decision, reason = paths[(i // len(scanners)) % len(paths)]
        e.update(requestURI=path, responseStatus={"metadata": {}, "code": code},
                 annotations={"authorization.k8s.io/decision": decision,
                              "authorization.k8s.io/reason": reason})
    out.write(json.dumps(e, separators=(",", ":")) + "\n")
EOF
    mv "$IN.tmp" "$IN"
fi
cat "$IN" >/dev/null

hyperfine --warmup 1 --runs "$RUNS" --export-json "$BENCH_DIR/storm.json" \
    --prepare "cat '$IN' >/dev/null" \
    -n "scan" "$KUBEANON scan -q $IN --format ndjson >/dev/null" \
    -n "scan --rollup" "$KUBEANON scan -q --rollup $IN --format ndjson >/dev/null" >&2

echo
echo "| \`kubeanon\` on $(wc -l <"$IN" | tr -d ' ') storm events ($(($(stat -L -c %s "$IN") / 1000000)) MB) | lines written | count sum | seconds (mean ± sd) | peak RSS |"
echo "|---|---|---|---|---|"
i=0
for flags in "" "--rollup"; do
    read -r lines sum < <("$KUBEANON" scan -q $flags "$IN" --format ndjson | jq -s -r 'map(.count) | "\(length) \(add)"')
    read -r mean sd < <(jq -r ".results[$i] | \"\(.mean) \(.stddev)\"" "$BENCH_DIR/storm.json")
    kb=$(/usr/bin/time -v "$KUBEANON" scan -q $flags "$IN" --format ndjson 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}')
    awk -v f="scan${flags:+ $flags}" -v l="$lines" -v s="$sum" -v m="$mean" -v d="$sd" -v k="$kb" 'BEGIN {
        printf "| `%s` | %d | %d | %.3f ± %.3f | %.1f MB |\n", f, l, s, m, d, k * 1024 / 1e6
    }'
    i=$((i + 1))
done
