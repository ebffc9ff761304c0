#!/usr/bin/env bash
# Web dashboard: a browser page on STOMP-over-WebSocket shows MQTT telemetry live.
# One command: examples/dashboard/run.sh   (then open the printed URL; Ctrl-C stops)
#              examples/dashboard/run.sh --check   (headless Chromium checks the page, then exits)
#
# Uses target/release/switchboard (built if missing; or $SWITCHBOARD_BIN), the Python
# clients of `scripts/setup python` and the browser packages of `scripts/setup browser`.
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
node_dir=${SWITCHBOARD_NODE_DIR:-$root/tests/browser}
bundle="$node_dir/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js"
[ -f "$bundle" ] || { echo "no stomp.js bundle: run scripts/setup browser first" >&2; exit 2; }

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$here/routes" "$work/routes"
mkdir "$work/www"
cp "$here/index.html" "$bundle" "$work/www/"
http_port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The page comes from the example's own web server: an origin the WebSocket listener
# must be told about (it accepts only its own by default), and whose pages may connect
# anonymously (loopback only, as any anonymous client here).
cat >"$work/sb.yaml" <<EOF
stomp:
  ws_allowed_origins: ["http://127.0.0.1:$http_port"]
  ws_allow_anonymous_browsers: true
EOF
"$bin" run -c "$work/sb.yaml" --routes "$work/routes" --data-dir "$work/data" --ready-file "$work/ready.json" \
  --listen admin=127.0.0.1:0 --listen stomp=off --listen stomp-ws=127.0.0.1:0 \
  --listen mqtt=127.0.0.1:0 --listen mqtt-ws=off 2>"$work/switchboard.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { echo "switchboard did not start:" >&2; cat "$work/switchboard.log" >&2; exit 1; }
listener() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['listeners'][sys.argv[2]])" "$work/ready.json" "$1"; }
ws=$(listener stomp-ws)
mqtt_port=$(listener mqtt); mqtt_port=${mqtt_port##*:}
"$py" -m http.server "$http_port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)
"$py" "$here/sensors.py" --port "$mqtt_port" &
pids+=($!)
page="http://127.0.0.1:$http_port/index.html?ws=ws://$ws/ws"
for _ in $(seq 100); do "$py" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1])" "$page" 2>/dev/null && break; sleep 0.05; done
if [ "${1:-}" = "--check" ]; then
  (cd "$node_dir" && node dashboard_check.mjs "$page")
else
  echo "dashboard: $page   (Ctrl-C stops)"
  wait
fi
