#!/usr/bin/env bash
# Throw-away ejabberd (Debian bookworm 'ejabberd' 23.01) without systemd, as root, loopback only.
# Usage: ejabberd-ctl.sh start|stop|status|adduser JID PASS|pubsub|ctl ARGS...
# Env:   EJABBERD_DIR (state, default /tmp/ejabberd-test), EJABBERD_CFG (default: ejabberd.yml next to this script)
# Ports (127.0.0.1): c2s 5223, component 5348 (bridge.localhost, secret 'bridgesecret').
#                    Domain 'localhost', MUC conference.localhost. Erlang node ejabberd-sbtest@localhost.
# 'start' is idempotent: if 127.0.0.1:5223 and :5348 already answer it does nothing.
#
# Like rabbitmq-ctl.sh, this runs erl directly rather than /usr/sbin/ejabberdctl: that wrapper su's to
# the 'ejabberd' user and reads /etc/ejabberd. HOME is the state directory, so the Erlang cookie shared
# by the server and the 'ctl' commands lives there and never meets RabbitMQ's (another Erlang node on
# the same epmd: the distinct node name keeps them apart).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=${EJABBERD_DIR:-/tmp/ejabberd-test}
CFG=${EJABBERD_CFG:-$here/ejabberd.yml}
NODE=ejabberd-sbtest@localhost

. "$here/lib.sh"

setup_env() {
  mkdir -p "$D/db" "$D/logs" "$D/certs"
  local lib
  lib=$(ls -d /usr/lib/*/ejabberd-[0-9]* 2>/dev/null | head -n 1) || true
  [ -n "$lib" ] || { echo "ejabberd-ctl: ejabberd is not installed (run scripts/setup ejabberd)" >&2; exit 1; }
  export ERL_LIBS=${lib%/*}                       # where ejabberd and its deps (erlang-p1-*) live
  export HOME=$D                                  # .erlang.cookie lives here (shared by server and ctl)
  export EJABBERD_CONFIG_PATH=$D/ejabberd.yml
  export EJABBERD_LOG_PATH=$D/logs/ejabberd.log
  export ERL_INETRC=/etc/ejabberd/inetrc
  export ERL_EPMD_ADDRESS=127.0.0.1               # epmd (port 4369, maybe RabbitMQ's) on loopback only
  export ERL_CRASH_DUMP=$D/logs/erl_crash.dump ERL_CRASH_DUMP_BYTES=0
}
# a command on the running node, as ejabberdctl does (exit 0 = ok; 'status' 3 = not running)
ctl() { erl -sname "ctl-$$@localhost" -hidden -noinput -kernel inet_dist_use_interface '{127,0,0,1}' \
          -s ejabberd_ctl -extra "$NODE" "$@"; }

case "${1:-}" in
  start)
    exit_if_answering ejabberd 5223 5348 "127.0.0.1:5223 answers but the component port 127.0.0.1:5348 does not: \
a server not started by this script holds the port."
    setup_env
    sed "s|@DIR@|$D|g" "$CFG" >"$D/ejabberd.yml"
    if [ ! -s "$D/certs/localhost.pem" ]; then  # STARTTLS offered with a self-signed cert (key + cert in one file)
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,DNS:*.localhost" \
        -keyout "$D/certs/localhost.key" -out "$D/certs/localhost.crt" 2>/dev/null
      cat "$D/certs/localhost.key" "$D/certs/localhost.crt" >"$D/certs/localhost.pem"
    fi
    # erl stays in the foreground (-noinput, no -detached): we background it and keep its PID;
    # SIGTERM makes the VM stop ejabberd cleanly.
    launch "$D/launcher.pid" "$D/stdout.log" erl -sname "$NODE" -noinput +K true +P 250000 \
      -kernel inet_dist_use_interface '{127,0,0,1}' \
      -mnesia dir "\"$D/db\"" -s ejabberd
    { wait_port 127.0.0.1 5223 60 "$pid" && wait_port 127.0.0.1 5348 10 "$pid"; } ||
      give_up ejabberd "$D/launcher.pid" 30 "$D/stdout.log" "$D/logs/ejabberd.log"
    echo "ejabberd up, pid $pid (state in $D)" ;;
  stop) stop_launched ejabberd "$D/launcher.pid" 100 ;;
  status) setup_env; ctl status ;;
  adduser) # JID PASS; needs the server running (accounts live in its mnesia database)
    [ $# -eq 3 ] || { echo "usage: $0 adduser JID PASS" >&2; exit 2; }
    setup_env; ctl register "${2%@*}" "${2#*@}" "$3" ;;
  pubsub) # loads this script's config (with mod_pubsub: pubsub.localhost, PEP) into a server started
    # with an older copy of it, without a restart (reload_config starts the modules it adds)
    setup_env
    if ! grep -q '^  mod_pubsub:' "$D/ejabberd.yml"; then
      sed "s|@DIR@|$D|g" "$CFG" >"$D/ejabberd.yml"
      ctl reload_config
    fi
    echo "mod_pubsub is in the configuration of the running server" ;;
  ctl) shift; setup_env; ctl "$@" ;;
  *) echo "usage: $0 start|stop|status|adduser JID PASS|pubsub|ctl ARGS..." >&2; exit 2 ;;
esac
