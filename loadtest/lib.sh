# Helpers shared by the benchmark scripts in loadtest/ (sourced, not run):
# the peers from Debian, the release binaries, free ports, a server in the
# background.

# mosquitto from Debian, unless installed; sets MOSQUITTO to its path.
need_mosquitto() {
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
}

# Builds the release binaries (SKIP_BUILD=1 reuses those in target/release);
# sets TRIB and LT to their paths.
release_binaries() {
  [ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p tributary -p tributary-loadtest --bins
  TRIB=$PWD/target/release/tributary
  LT=$PWD/target/release/tributary-loadtest
}

# Stops the server in PID, if any, and waits for it.
stop_server() {
  if [ -n "${PID:-}" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port HOST PORT SECONDS: until something listens there.
wait_port() {
  for _ in $(seq 1 $(( $3 * 20 ))); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2 after $3 s" >&2; return 1
}


# Waits (at most 2 minutes) until fewer than 2,000 TCP sockets are in
# TIME_WAIT: a storm leaves one per connection for 60 s, and the next run's
# connects from the same addresses would collide with them.
wait_time_wait() {
  local tw
  for _ in $(seq 1 120); do
    tw=$(awk '/^TCP:/ { for (i = 1; i <= NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat)
    [ "${tw:-0}" -lt 2000 ] && return 0
    sleep 1
  done
}
