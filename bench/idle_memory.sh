#!/usr/bin/env bash
# Memory per idle keep-alive client connection: citoroute-proxy against an nginx reverse proxy,
# one worker each, on loopback.
#
#   bench/idle_memory.sh                      CONNS [5000] connections through each proxy
#   PROXY_BIN=/path/to/citoroute-proxy CONNS=2000 bench/idle_memory.sh
#
# Per proxy: its resident memory (VmRSS, all processes of it) before, then CONNS client
# connections are opened (200 at a time), each sends one GET, reads the answer and stays open;
# the resident memory is read again while they are all open. Prints the growth per connection.
# Needs nginx and python3; raises its own open-files limit as far as the hard limit allows.
# Traffic goes to 127.0.0.1 only; every process started is stopped by its PID.
set -euo pipefail

CONNS=${CONNS:-5000}
NICE=0 LOADGEN_CPU=0 PROXY_CPU=0

log() { printf '[idle-memory %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/citoroute-proxy}
[ -x "$PROXY_BIN" ] || die "no proxy binary at $PROXY_BIN (cargo build --release -p citoroute-proxy)"
command -v nginx >/dev/null || die "nginx is missing (Debian: nginx-light)"
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((CONNS * 2 + 100)) ] || die "open-files limit $(ulimit -n) is too low for CONNS=$CONNS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_tmp citoroute-idle-memory
read -r PORT_ORIGIN PORT_CITO PORT_NGINX PORT_ADMIN < <(free_ports 4)
mkdir -p "$TMP/origin" "$TMP/nginx" "$TMP/cito"

{ nginx_head "$TMP/origin"; cat <<EOF
  server { listen 127.0.0.1:$PORT_ORIGIN; default_type text/plain; location / { return 200 "ok\n"; } }
}
EOF
} >"$TMP/origin/nginx.conf"
{ nginx_head "$TMP/nginx"; cat <<EOF
  upstream origin { server 127.0.0.1:$PORT_ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT_NGINX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
} >"$TMP/nginx/nginx.conf"
# nginx's default of 512 connections per worker would refuse most of them.
sed -i "s/worker_connections 4096;/worker_connections $((CONNS * 2 + 100));/" \
  "$TMP/origin/nginx.conf" "$TMP/nginx/nginx.conf"
proxy_config "$PORT_ADMIN" "$PORT_CITO" "$PORT_ORIGIN" >"$TMP/cito/config.toml"

nginx -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log" >/dev/null 2>&1 &
PIDS+=($!)
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >/dev/null 2>&1 &
PID_NGINX=$!; PIDS+=("$PID_NGINX")
RUST_LOG=warn "$PROXY_BIN" --config "$TMP/cito/config.toml" >"$TMP/cito/stdout.log" 2>&1 &
PID_CITO=$!; PIDS+=("$PID_CITO")
for port in "$PORT_ORIGIN" "$PORT_CITO" "$PORT_NGINX"; do
  for _ in $(seq 1 100); do
    [ "$(curl -s --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null)" = ok ] && break
    sleep 0.1
  done
done

# rss PID: resident KiB of a process and its children (nginx's worker).
rss() {
  local p total=0 kb
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# The client: opens CONNS connections to a port, one GET each, prints how many are open and
# keeps them until its stdin closes.
cat >"$TMP/hold.py" <<'PY'
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def one(keep):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n")
    await w.drain()
    data = b""
    while not data.endswith(b"ok\n"):
        chunk = await asyncio.wait_for(r.read(4096), 10)
        if not chunk:
            raise SystemExit("a connection was closed")
        data += chunk
    keep.append(w)
async def main():
    keep = []
    for i in range(0, n, 200):
        await asyncio.gather(*(one(keep) for _ in range(min(200, n - i))))
    print(len(keep), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
PY

measure() { # $1 = name, $2 = pid, $3 = port
  local before after open fd
  before=$(rss "$2")
  coproc HOLD { python3 "$TMP/hold.py" "$3" "$CONNS"; }
  read -r open <&"${HOLD[0]}" || die "$1: the client did not get its connections open"
  sleep 1
  after=$(rss "$2")
  fd=${HOLD[1]}
  exec {fd}>&-
  wait "$HOLD_PID" 2>/dev/null || true
  printf '%-10s %8s %10s %12s %14s\n' "$1" "$open" "$before" "$after" \
    "$(( (after - before) * 1024 / open ))"
}

log "citoroute $PROXY_BIN (pid $PID_CITO), nginx (pid $PID_NGINX); $CONNS connections each"
printf '%-10s %8s %10s %12s %14s\n' proxy conns rss_kib rss_open_kib bytes_per_conn
measure citoroute "$PID_CITO" "$PORT_CITO"
measure nginx "$PID_NGINX" "$PORT_NGINX"
