# Helpers of the *-ctl.sh scripts here (sourced, not run): each peer is a foreground server we
# background ourselves, with its PID in a file under its state directory, on fixed loopback ports.

# Does something accept connections on HOST PORT?
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_port() { # host port timeout_s [pid that must stay alive]
  local i; for i in $(seq 1 $(( $3 * 10 ))); do
    port_open "$1" "$2" && return 0
    if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then return 1; fi
    sleep 0.1; done; return 1; }

# What makes 'start' idempotent: when 127.0.0.1:PORT and :SECOND_PORT both answer, the peer is up
# and this exits 0; when only PORT does, a server this script did not start holds it: MESSAGE, exit 1.
exit_if_answering() { # name port second_port message
  port_open 127.0.0.1 "$2" || return 0
  if port_open 127.0.0.1 "$3"; then echo "$1 already answering on 127.0.0.1:$2 (nothing to do)"; exit 0; fi
  echo "$1-ctl: $4" >&2
  exit 1
}

# Runs COMMAND in the background, detached from the terminal, output to LOG; its PID goes to
# PIDFILE and to $pid.
launch() { # pidfile log command...
  local pidfile=$1 log=$2; shift 2
  # From / rather than the caller's directory, which may be a clone deleted while the
  # server still runs (rabbitmq-ctl.sh says what that broke).
  (cd / && exec nohup "$@" >"$log" 2>&1 </dev/null) &
  pid=$!
  echo "$pid" >"$pidfile"
}

# After a failed start: says so with the end of the logs, ends the launched $pid, exit 1.
give_up() { # name pidfile tail_lines log...
  local name=$1 pidfile=$2 lines=$3; shift 3
  echo "$name-ctl: $name did not come up" >&2
  tail -n "$lines" "$@" 2>/dev/null >&2 || true
  kill "$pid" 2>/dev/null || true; rm -f "$pidfile"; exit 1
}

# Ends what 'start' launched (nothing if it did not): SIGTERM, up to TENTHS tenths of a second to
# finish, then SIGKILL.
stop_launched() { # name pidfile tenths
  [ -f "$2" ] || return 0
  local pid; pid=$(cat "$2")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$3"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$2"
  echo "$1 stopped"
}
