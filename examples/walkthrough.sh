#!/usr/bin/env bash
# Sets up the README's "Try `poll` without AWS": an emulator of AWS
# (moto's server) on a free loopback port, left running, with the bundled
# sample loaded as the audit log of EKS cluster `demo` and an S3 bucket
# `kubeanon-demo` (examples/moto_demo.py). Then it
# prints the one line to paste, which exports the emulator's address
# (DEMO), the python that has moto (DEMO_PYTHON), a fresh checkpoint file
# (DEMO_CHECKPOINT) and moto's dummy credentials; the README's poll
# commands use them.
#
# moto comes from ./.venv when tests/run made one, else from
# examples/.venv-demo, created here on first use (PyPI `moto[server]`;
# needs Python 3 with venv). KUBEANON_DEMO_PYTHON names another python
# that has moto (the tests use theirs). The server's log goes to
# ${TMPDIR:-/tmp}/kubeanon-demo-moto-PORT.log.
set -euo pipefail
cd "$(dirname "$0")/.."
has_moto() { "$1" -c "import moto.server, flask" >/dev/null 2>&1; }
py="${KUBEANON_DEMO_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ] && has_moto .venv/bin/python; then
    py="$PWD/.venv/bin/python"
  else
    py="$PWD/examples/.venv-demo/bin/python"
    if ! [ -x "$py" ] || ! has_moto "$py"; then
      echo "walkthrough: installing moto[server]==5.2.5 into examples/.venv-demo" >&2
      python3 -m venv examples/.venv-demo
      examples/.venv-demo/bin/pip install --quiet --disable-pip-version-check "moto[server]==5.2.5"
    fi
  fi
fi
has_moto "$py" || { echo "walkthrough: $py has no moto server" >&2; exit 1; }
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
log="${TMPDIR:-/tmp}/kubeanon-demo-moto-$port.log"
nohup "$py" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 600); do
  if "$py" -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
    break
  fi
  kill -0 "$pid" 2>/dev/null || { echo "walkthrough: moto's server stopped; see $log" >&2; exit 1; }
  sleep 0.1
done
"$py" examples/moto_demo.py "$endpoint"
# A checkpoint of its own: one from an earlier demo would hold that
# emulator's watermark.
checkpoint="$(mktemp -d "${TMPDIR:-/tmp}/kubeanon-demo.XXXXXX")/checkpoint.json"
echo "moto's server: $endpoint, pid $pid (stop it with: kill $pid)"
echo "Paste this, then the README's poll commands:"
echo
printf 'export DEMO=%q DEMO_PYTHON=%q DEMO_CHECKPOINT=%q AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing\n' \
  "$endpoint" "$py" "$checkpoint"
