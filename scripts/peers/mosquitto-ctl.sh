#!/usr/bin/env bash
# Throw-away Mosquitto (Debian bookworm 'mosquitto' 2.0.11) without systemd, loopback only.
# Usage: mosquitto-ctl.sh start|stop
# Env:   MOSQ_DIR (state, default /tmp/mosquitto-test)
# Ports: MQTT 127.0.0.1:18830, MQTT over WebSocket 18080 on interface 'lo' (ws://127.0.0.1:18080/, any path).
# 'start' is idempotent: if 127.0.0.1:18830 and :18080 already answer it does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); D=${MOSQ_DIR:-/tmp/mosquitto-test}; mkdir -p "$D"

. "$here/lib.sh"

case "${1:-}" in
  start)
    exit_if_answering mosquitto 18830 18080 "127.0.0.1:18830 answers but the WebSocket port 18080 does not: \
a broker not started by this script holds the port."
    command -v mosquitto >/dev/null || { echo "mosquitto-ctl: mosquitto is not installed (run scripts/setup mosquitto)" >&2; exit 1; }
    # as root, mosquitto drops privileges to user 'mosquitto' (exists from the Debian package); no -d: we keep the PID
    launch "$D/mosquitto.pid" "$D/mosquitto.log" mosquitto -c "$here/mosquitto.conf"
    for _ in $(seq 1 100); do
      port_open 127.0.0.1 18830 && port_open 127.0.0.1 18080 && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if ! { port_open 127.0.0.1 18830 && port_open 127.0.0.1 18080; }; then
      echo "mosquitto-ctl: mosquitto did not come up" >&2; tail -n 20 "$D/mosquitto.log" >&2 || true
      kill "$pid" 2>/dev/null || true; rm -f "$D/mosquitto.pid"; exit 1
    fi
    echo "mosquitto up, pid $pid (log $D/mosquitto.log)" ;;
  stop) stop_launched mosquitto "$D/mosquitto.pid" 50 ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
