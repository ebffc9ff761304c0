#!/usr/bin/env bash
# Throw-away RabbitMQ node (Debian bookworm 'rabbitmq-server' 3.10.x) without systemd, as root, loopback only.
# Usage: rabbitmq-ctl.sh start|stop|status|ctl ARGS...|plugins ARGS...
# Env:   RMQ_DIR (state, default /tmp/rabbitmq-test)
# Ports (127.0.0.1): AMQP 5672, AMQPS 5671 (CA: $RMQ_DIR/tls/ca.pem), STOMP 61623, MQTT 1893, Web-STOMP 15674 (/ws), Web-MQTT 15675 (/ws),
#                    management 15672, Erlang distribution 25672, epmd 4369. Login guest/guest.
# 'start' is idempotent: if 127.0.0.1:5672 already answers (with the plugin ports above) it does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=${RMQ_DIR:-/tmp/rabbitmq-test}
PLUGIN_PORTS=(5671 61623 1893 15674 15675 15672)   # 5671: AMQP over TLS

. "$here/lib.sh"

setup_env() {
  mkdir -p "$D/mnesia" "$D/log"
  cp "$here/rabbitmq.conf" "$D/rabbitmq.conf"
  # AMQPS on 5671 with a throw-away CA ($D/tls/ca.pem is what clients trust) and a server
  # certificate for 127.0.0.1 / localhost, made once per state directory.
  if [ ! -s "$D/tls/server.pem" ]; then
    mkdir -p "$D/tls"
    ( cd "$D/tls"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=switchboard test CA" \
        -keyout ca.key -out ca.pem >/dev/null 2>&1
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr >/dev/null 2>&1
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile ext.cnf -out server.pem >/dev/null 2>&1
      chmod 644 ./*.pem ./*.key )
  fi
  cat >>"$D/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:5671
ssl_options.cacertfile = $D/tls/ca.pem
ssl_options.certfile = $D/tls/server.pem
ssl_options.keyfile = $D/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
  # plugins: management + STOMP + MQTT (+ their WebSocket variants)
  echo '[rabbitmq_management,rabbitmq_stomp,rabbitmq_mqtt,rabbitmq_web_stomp,rabbitmq_web_mqtt].' >"$D/enabled_plugins"
  export HOME=$D                                  # .erlang.cookie lives here (shared by server and CLI)
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_CONFIG_FILE=$D/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$D/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$D/mnesia
  export RABBITMQ_LOG_BASE=$D/log
  export RABBITMQ_PID_FILE=$D/rabbit.pid
  export RABBITMQ_CONF_ENV_FILE=/dev/null         # ignore /etc/rabbitmq/rabbitmq-env.conf
  export ERL_EPMD_ADDRESS=127.0.0.1               # epmd (port 4369) on loopback only
  export RABBITMQ_DIST_PORT=25672
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}
BIN=/usr/lib/rabbitmq/bin                         # bypass /usr/sbin wrappers (they su to 'rabbitmq')

show_logs() { tail -n 30 "$D/stdout.log" "$D"/log/*.log 2>/dev/null >&2 || true; }

case "${1:-}" in
  start)
    if port_open 127.0.0.1 5672; then
      missing=(); for p in "${PLUGIN_PORTS[@]}"; do port_open 127.0.0.1 "$p" || missing+=("$p"); done
      if [ ${#missing[@]} -eq 0 ]; then echo "rabbitmq already answering on 127.0.0.1:5672 (nothing to do)"; exit 0; fi
      echo "rabbitmq-ctl: 127.0.0.1:5672 answers but 127.0.0.1:{${missing[*]}} do not: a RabbitMQ not started by" \
           "this script (or still starting) holds the port. Stop it, or enable rabbitmq_stomp rabbitmq_mqtt" \
           "rabbitmq_web_stomp rabbitmq_web_mqtt rabbitmq_management on it with the ports of $here/rabbitmq.conf." >&2
      exit 1
    fi
    [ -x "$BIN/rabbitmq-server" ] || { echo "rabbitmq-ctl: rabbitmq-server is not installed (run scripts/setup rabbitmq)" >&2; exit 1; }
    setup_env
    rm -f "$RABBITMQ_PID_FILE"
    # From its own directory: a server started from a clone that is later deleted (a CI run
    # in a temporary clone) kept that clone as its working directory, and Erlang's
    # filename:absname failed on it (rabbitmqctl stop_app: enoent in rabbit_plugins).
    (cd "$D" && exec nohup "$BIN/rabbitmq-server" >"$D/stdout.log" 2>&1 </dev/null) &
    launcher=$!
    echo "$launcher" >"$D/launcher.pid"
    # wait for the pid file, but give up at once if the server dies (rabbitmqctl wait would sit out its timeout)
    for _ in $(seq 1 1200); do
      [ -s "$RABBITMQ_PID_FILE" ] && break
      kill -0 "$launcher" 2>/dev/null || { echo "rabbitmq-ctl: rabbitmq-server exited during start" >&2; show_logs; exit 1; }
      sleep 0.1
    done
    "$BIN/rabbitmqctl" -q wait --timeout 120 "$RABBITMQ_PID_FILE" \
      || { echo "rabbitmq-ctl: node did not come up" >&2; show_logs; exit 1; }
    for p in 5672 "${PLUGIN_PORTS[@]}"; do
      for _ in $(seq 1 100); do port_open 127.0.0.1 "$p" && break; sleep 0.1; done
      port_open 127.0.0.1 "$p" || { echo "rabbitmq-ctl: node up but 127.0.0.1:$p does not answer" >&2; show_logs; exit 1; }
    done
    echo "rabbitmq up, os pid $(cat "$RABBITMQ_PID_FILE") (state in $D)" ;;
  stop)
    setup_env
    if [ -f "$D/launcher.pid" ]; then
      launcher=$(cat "$D/launcher.pid")
      "$BIN/rabbitmqctl" -q shutdown 2>/dev/null || kill "$launcher" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$launcher" 2>/dev/null || true
      rm -f "$D/launcher.pid"
      # epmd was spawned by this node's Erlang VM; stop it (it refuses if other nodes are registered)
      epmd -kill >/dev/null 2>&1 || true
      echo "rabbitmq stopped"
    fi ;;
  status) setup_env; "$BIN/rabbitmq-diagnostics" -q status ;;
  ctl) shift; setup_env; "$BIN/rabbitmqctl" "$@" ;;
  plugins) shift; setup_env; "$BIN/rabbitmq-plugins" "$@" ;;
  *) echo "usage: $0 start|stop|status|ctl ARGS|plugins ARGS" >&2; exit 2 ;;
esac
