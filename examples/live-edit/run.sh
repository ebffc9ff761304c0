#!/usr/bin/env bash
# Live route edit: traffic flows while a route file is rewritten; the change takes effect
# without a restart and nothing is lost. One command: examples/live-edit/run.sh
#
# Uses target/release/switchboard (built if missing; or $SWITCHBOARD_BIN) and the Python
# clients of `scripts/setup python` (.venv; or $SWITCHBOARD_PYTHON).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${SWITCHBOARD_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -q)
  bin="$root/target/release/switchboard"
fi
py=${SWITCHBOARD_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { echo "no Python clients: run scripts/setup python first" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$here/routes" "$work/routes"
"$bin" run --routes "$work/routes" --data-dir "$work/data" --ready-file "$work/ready.json" \
  --listen admin=127.0.0.1:0 --listen stomp=127.0.0.1:0 \
  --listen stomp-ws=off --listen mqtt=off --listen mqtt-ws=off 2>"$work/switchboard.log" &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { echo "switchboard did not start:" >&2; cat "$work/switchboard.log" >&2; exit 1; }
"$py" "$here/live_edit.py" --ready "$work/ready.json" --routes "$work/routes"
