#!/usr/bin/env bash
# Reshape: MQTT sensors publish their own JSON; a jq route turns each reading into the
# job message an AMQP worker expects (pika), on a queue the route declares.
# One command: examples/reshape/run.sh   (--check: exit 1 unless everything arrived)
#
# Starts a throw-away RabbitMQ on 127.0.0.1:5672 when none answers (scripts/setup
# rabbitmq), and uses target/release/switchboard (built if missing; or $SWITCHBOARD_BIN)
# and the Python clients of `scripts/setup python`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
if ! timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; then
  "$root/scripts/setup" rabbitmq >&2
fi
bin=${SWITCHBOARD_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -q)
  bin="$root/target/release/switchboard"
fi
py=${SWITCHBOARD_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { echo "no Python clients: run scripts/setup python first" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
RESHAPE_AMQP_PASSWORD=${RESHAPE_AMQP_PASSWORD:-guest} "$bin" run --config "$here/switchboard.yaml" \
  --routes "$here/routes" --data-dir "$work/data" --ready-file "$work/ready.json" \
  --listen admin=127.0.0.1:0 --listen mqtt=127.0.0.1:0 \
  --listen stomp=off --listen stomp-ws=off --listen mqtt-ws=off 2>"$work/switchboard.log" &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { echo "switchboard did not start:" >&2; cat "$work/switchboard.log" >&2; exit 1; }
mqtt=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['listeners']['mqtt'])" "$work/ready.json")
"$py" "$here/reshape.py" --mqtt-port "${mqtt##*:}" "$@" || { echo "router log:" >&2; tail -20 "$work/switchboard.log" >&2; exit 1; }
