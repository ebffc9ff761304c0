#!/usr/bin/env bash
# Throw-away Prosody (Debian bookworm 'prosody' 0.12.x) without systemd, loopback only.
# Usage: prosody-ctl.sh start|stop|status|adduser JID PASS|cert|shell COMMAND|pubsub
# Env:   PROSODY_DIR (state, default /tmp/prosody-test), PROSODY_CFG (default: prosody.cfg.lua next to this script)
# Ports (127.0.0.1): c2s 5222, component 5347 (bridge.localhost, secret 'bridgesecret'), HTTP 5280
#                    (BOSH /http-bind, WebSocket /xmpp-websocket). Domain 'localhost', MUC conference.localhost.
# 'start' is idempotent: if 127.0.0.1:5222 and :5347 already answer it does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PROSODY_DIR=${PROSODY_DIR:-/tmp/prosody-test}
CFG=${PROSODY_CFG:-$here/prosody.cfg.lua}
mkdir -p "$PROSODY_DIR/data" "$PROSODY_DIR/certs"

. "$here/lib.sh"

case "${1:-}" in
  start)
    exit_if_answering prosody 5222 5347 "127.0.0.1:5222 answers but the component port 127.0.0.1:5347 does not: \
an XMPP server not started by this script (e.g. the system's prosody: 'service prosody stop') holds the port."
    command -v prosody >/dev/null || { echo "prosody-ctl: prosody is not installed (run scripts/setup prosody)" >&2; exit 1; }
    [ -f "$PROSODY_DIR/certs/localhost.crt" ] || "$0" cert   # STARTTLS needs a cert, else clients that try it fail
    # -F: stay in the foreground; we background it ourselves and keep the PID.
    launch "$PROSODY_DIR/launcher.pid" "$PROSODY_DIR/stdout.log" prosody --config "$CFG" -F
    { wait_port 127.0.0.1 5222 20 "$pid" && wait_port 127.0.0.1 5347 5 "$pid"; } ||
      give_up prosody "$PROSODY_DIR/launcher.pid" 20 "$PROSODY_DIR/stdout.log" "$PROSODY_DIR/prosody.err"
    echo "prosody up, pid $pid (state in $PROSODY_DIR)" ;;
  stop) stop_launched prosody "$PROSODY_DIR/launcher.pid" 50 ;;
  status) prosodyctl --config "$CFG" status ;;
  shell) # COMMAND: one admin shell command on the running server, e.g. "c2s:close('bot@localhost')"
    [ $# -eq 2 ] || { echo "usage: $0 shell COMMAND" >&2; exit 2; }
    prosodyctl --config "$CFG" shell "$2" ;;
  pubsub) # adds the PubSub service pubsub.localhost and PEP on localhost (as in prosody.cfg.lua) to a running
    # server started without them
    out=$(prosodyctl --config "$CFG" shell '>local cm = require "core.configmanager"; if prosody.hosts["pubsub.localhost"] then return "pubsub.localhost is active" end; cm.set("pubsub.localhost", "component_module", "pubsub"); cm.set("pubsub.localhost", "admins", { "bridge.localhost", "pubsub-admin@localhost", "pubsub-bot@localhost" }); return require "core.hostmanager".activate("pubsub.localhost")')
    echo "$out"; case "$out" in *"is active"*|*true*) ;; *) exit 1 ;; esac
    out=$(prosodyctl --config "$CFG" shell '>local mm = require "core.modulemanager"; if mm.is_loaded("localhost", "pep") then return "pep is loaded" end; return mm.load("localhost", "pep") and "pep is loaded" or "pep did not load"')
    echo "$out"; case "$out" in *"pep is loaded"*) ;; *) exit 1 ;; esac ;;
  adduser) # JID PASS; works with the server running or not (internal storage = files in data_path)
    [ $# -eq 3 ] || { echo "usage: $0 adduser JID PASS" >&2; exit 2; }
    printf '%s\n%s\n' "$3" "$3" | prosodyctl --config "$CFG" adduser "$2" ;;
  cert) # self-signed cert for localhost + subdomains (for STARTTLS tests)
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,DNS:*.localhost" \
      -keyout "$PROSODY_DIR/certs/localhost.key" -out "$PROSODY_DIR/certs/localhost.crt" 2>/dev/null
    echo "wrote $PROSODY_DIR/certs/localhost.{crt,key}" ;;
  *) echo "usage: $0 start|stop|status|adduser JID PASS|cert|shell COMMAND|pubsub" >&2; exit 2 ;;
esac
