#!/usr/bin/env bash
# Chat-ops: an XMPP user asks an AMQP worker questions by chatting with a JID of the
# router, and gets the answers back in the same conversation.
# One command: examples/chatops/run.sh   (--check: exit 1 unless every answer came back)
#
# Starts a throw-away Prosody (component bridge.localhost) and RabbitMQ on loopback when
# they do not answer (scripts/setup prosody rabbitmq), creates the chat account
# chatops-user@localhost, and uses target/release/switchboard (built if missing; or
# $SWITCHBOARD_BIN) and the Python clients of `scripts/setup python`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
up() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
up 5672 || "$root/scripts/setup" rabbitmq >&2
up 5347 || "$root/scripts/setup" prosody >&2
"$root/scripts/peers/prosody-ctl.sh" adduser chatops-user@localhost chatops-pw >/dev/null 2>&1 || true
bin=${SWITCHBOARD_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -q)
  bin="$root/target/release/switchboard"
fi
py=${SWITCHBOARD_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { echo "no Python clients: run scripts/setup python first" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
CHATOPS_COMPONENT_SECRET=${CHATOPS_COMPONENT_SECRET:-bridgesecret} "$bin" run \
  --config "$here/switchboard.yaml" --routes "$here/routes" --data-dir "$work/data" \
  --ready-file "$work/ready.json" --listen admin=127.0.0.1:0 --listen stomp=off \
  --listen stomp-ws=off --listen mqtt=off --listen mqtt-ws=off 2>"$work/switchboard.log" &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { echo "switchboard did not start:" >&2; cat "$work/switchboard.log" >&2; exit 1; }
admin=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['listeners']['admin'])" "$work/ready.json")
# Wait until both links are connected (GET /links).
for _ in $(seq 200); do
  "$py" -c "import json,sys,urllib.request; v=json.load(urllib.request.urlopen(sys.argv[1])); sys.exit(0 if all(l['state']=='connected' for l in v) and len(v)==2 else 1)" "http://$admin/links" 2>/dev/null && break
  sleep 0.1
done
"$py" "$here/chatops.py" --jid chatops-user@localhost --password chatops-pw "$@" \
  || { echo "router log:" >&2; tail -20 "$work/switchboard.log" >&2; exit 1; }
