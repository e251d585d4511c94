# shellcheck shell=bash disable=SC2034  # variables are read by the scripts that source this
# Shared by bench/run.sh and bench/ai.sh: CPU pinning and priority, the temp dir with cleanup of
# every process started, and free loopback ports. Source it after defining log(); it reads
# NICE, LOADGEN_CPU and PROXY_CPU.

# bench_pinning LOAD_LABEL PROXY_LABEL: sets PIN_LOAD / PIN_PROXY (command prefixes), BOOST and
# PINNING (a description). Each started process runs in its own session, so that with the
# kernel's autogroup scheduling (one CPU share per session) it can be given nice $NICE as a
# group; without autogroups plain nice is used. Either way only as root.
bench_pinning() {
  local ncpu
  ncpu=$(nproc)
  BOOST=none
  PRIO=()
  if [ "$(id -u)" = 0 ] && [ "$NICE" != 0 ]; then
    if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
      BOOST=autogroup
    else
      BOOST="nice"
      PRIO=(nice -n "$NICE")
    fi
  fi
  if [ "$ncpu" -ge 2 ]; then
    PIN_LOAD=(setsid "${PRIO[@]}" taskset -c "$LOADGEN_CPU")
    PIN_PROXY=(setsid "${PRIO[@]}" taskset -c "$PROXY_CPU")
    PINNING="$1 on CPU $LOADGEN_CPU, $2 on CPU $PROXY_CPU"
  else
    PIN_LOAD=(setsid "${PRIO[@]}")
    PIN_PROXY=(setsid "${PRIO[@]}")
    PINNING="no pinning (only $ncpu CPU)"
  fi
  [ "$BOOST" = none ] || PINNING="$PINNING; each in its own session at nice $NICE ($BOOST)"
}

# Gives a just-started process's session its priority (autogroup mode).
boost() {
  [ "$BOOST" = autogroup ] || return 0
  # Wait for the child to have called setsid(), or the nice would go to this script's session.
  local i
  for i in $(seq 1 200); do
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $4 }')" = "$1" ] && break
    sleep 0.01
  done
  echo "$NICE" >"/proc/$1/autogroup" 2>/dev/null || log "warning: cannot set the priority of pid $1"
}

# bench_tmp PREFIX: makes $TMP and stops every pid in PIDS (and a running LOADGEN) on exit.
bench_tmp() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  PIDS=()
  LOADGEN=
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local pid
  [ -n "$LOADGEN" ] && PIDS+=("$LOADGEN")
  for pid in "${PIDS[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}

# free_ports N: prints N free loopback ports, asked of the kernel.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
}

# proxy_head ADMIN_PORT LISTEN_PORT: the start of a benchmark's citoroute config on stdout
# (one worker, no access log, one HTTP listener "http" on loopback).
proxy_head() {
  cat <<EOF
version = 1

[runtime]
admin_address = "127.0.0.1:$1"
worker_threads = 1
access_log = false
grace_period = "0s"
shutdown_timeout = "1s"

[[listeners]]
name = "http"
address = "127.0.0.1"
port = $2
protocol = "HTTP"
EOF
}

# proxy_config ADMIN_PORT LISTEN_PORT ORIGIN_PORT: that config with one route to the origin.
proxy_config() {
  proxy_head "$1" "$2"
  cat <<EOF

[backends.origin]
endpoints = ["127.0.0.1:$3"]

[[http_routes]]
name = "bench"
listeners = ["http"]

[[http_routes.rules]]
backends = [{ backend = "origin" }]
EOF
}

# nginx_head DIR: the start of a one-worker nginx.conf whose files live in DIR, up to and
# inside `http {` (no access log, long keep-alive); the caller adds servers and closes it.
nginx_head() {
  cat <<EOF
user root;
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
EOF
}

# ticks PID: CPU ticks "user system" of a process and its children (nginx workers).
ticks() {
  local u=0 s=0 p pu ps
  [ -n "$1" ] || { echo "0 0"; return; }
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] || continue
    read -r pu ps < <(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12, $13 }')
    u=$((u + pu)); s=$((s + ps))
  done
  echo "$u $s"
}

# cpu_jiffies N: "busy total" jiffies of CPU N.
cpu_jiffies() {
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# to_us VALUE: wrk's "102.00us" / "1.23ms" / "1.01s" / "1.5m" in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.0f", v }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.0f", v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f", v * 1000000 }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.0f", v * 60000000 }
    else print "nan" }'
}
