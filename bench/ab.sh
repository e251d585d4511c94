#!/usr/bin/env bash
# A/B of citoroute-proxy builds against each other and nginx, on the bench/run.sh rig, in one run.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY [MORE_BINARIES...]
#   DURATION=5 ROUNDS=4 bench/ab.sh a b
#
# Same pinning, priority and configs as bench/run.sh (origin nginx and wrk on LOADGEN_CPU, every
# proxy on PROXY_CPU, only one carrying traffic at a time). Each round runs wrk once against
# every proxy (binaries in the order given, then nginx), so slow drifts of the neighbours hit
# all of them alike. Per target it prints the median req/s, the median ratio to nginx in the
# same round, and the median proxy CPU (user + sys) per request, which is the steadiest figure
# on a shared machine. Traffic goes to 127.0.0.1 only; every process started is stopped by PID.
set -euo pipefail

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-64}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
NICE=${NICE:--10}

log() { printf '[ab %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ $# -ge 1 ] || die "usage: bench/ab.sh BINARY [BINARY...]"
BINS=("$@")
for b in "${BINS[@]}"; do [ -x "$b" ] || die "not executable: $b"; done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_pinning "origin + wrk" "proxies"
bench_tmp citoroute-ab
read -r PORT_ORIGIN PORT_NGINX < <(free_ports 2)

mkdir -p "$TMP/origin" "$TMP/nginx"
{ nginx_head "$TMP/origin"; cat <<EOF
  server { listen 127.0.0.1:$PORT_ORIGIN; default_type text/plain; location / { return 200 "ok\n"; } }
}
EOF
} >"$TMP/origin/nginx.conf"
{ nginx_head "$TMP/nginx"; cat <<EOF
  upstream origin { server 127.0.0.1:$PORT_ORIGIN; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$PORT_NGINX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF
} >"$TMP/nginx/nginx.conf"

"${PIN_LOAD[@]}" nginx -p "$TMP/origin" -c "$TMP/origin/nginx.conf" >"$TMP/origin/out.log" 2>&1 &
PIDS+=("$!"); boost "$!"
"${PIN_PROXY[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/out.log" 2>&1 &
PID_NGINX=$!; PIDS+=("$PID_NGINX"); boost "$PID_NGINX"

declare -A PORT PROC
NAMES=()
i=0
for b in "${BINS[@]}"; do
  i=$((i + 1))
  name="p$i"
  NAMES+=("$name")
  read -r port admin < <(free_ports 2)
  mkdir -p "$TMP/$name"
  proxy_config "$admin" "$port" "$PORT_ORIGIN" >"$TMP/$name/config.toml"
  TMPDIR="$TMP/$name" RUST_LOG=warn "${PIN_PROXY[@]}" "$b" --config "$TMP/$name/config.toml" \
    >"$TMP/$name/out.log" 2>&1 &
  PROC[$name]=$!; PIDS+=("$!"); boost "$!"
  PORT[$name]=$port
  log "$name = $b (pid ${PROC[$name]}, port $port)"
done
NAMES+=(nginx)
PORT[nginx]=$PORT_NGINX
PROC[nginx]=$PID_NGINX

for t in "${NAMES[@]}"; do
  for _ in $(seq 1 100); do
    [ "$(curl -s --max-time 1 "http://127.0.0.1:${PORT[$t]}/" 2>/dev/null)" = ok ] && break
    sleep 0.1
  done
  [ "$(curl -s --max-time 1 "http://127.0.0.1:${PORT[$t]}/")" = ok ] || die "$t does not answer"
done

HZ=$(getconf CLK_TCK)
run() { # $1 target, $2 seconds -> "rps cpu_us_per_req p99_us"
  local u0 s0 u1 s1 out n rps p99
  read -r u0 s0 < <(ticks "${PROC[$1]}")
  out=$("${PIN_LOAD[@]}" wrk -t 1 -c "$CONNS" -d "${2}s" --latency "http://127.0.0.1:${PORT[$1]}/" 2>&1 || true)
  read -r u1 s1 < <(ticks "${PROC[$1]}")
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  awk -v rps="$rps" -v n="${n:-0}" -v c=$((u1 - u0 + s1 - s0)) -v hz="$HZ" -v p99="$p99" \
    'BEGIN { printf "%s %.1f %s\n", rps, (n > 0 ? c / hz * 1e6 / n : 0), p99 }'
}

for t in "${NAMES[@]}"; do run "$t" "$WARMUP" >/dev/null; done
declare -A RES
for r in $(seq 1 "$ROUNDS"); do
  line="round $r:"
  for t in "${NAMES[@]}"; do
    RES[$t,$r]=$(run "$t" "$DURATION")
    line="$line $t=${RES[$t,$r]// /\/}"
  done
  log "$line"
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf '%-6s %9s %12s %14s  %s\n' target "req/s" "ratio/nginx" "cpu_us/req" binary
for t in "${NAMES[@]}"; do
  rps=$(for r in $(seq 1 "$ROUNDS"); do echo "${RES[$t,$r]}" | cut -d' ' -f1; done | median)
  cpu=$(for r in $(seq 1 "$ROUNDS"); do echo "${RES[$t,$r]}" | cut -d' ' -f2; done | median)
  ratio=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(echo "${RES[$t,$r]}" | cut -d' ' -f1)" -v b="$(echo "${RES[nginx,$r]}" | cut -d' ' -f1)" \
      'BEGIN { printf "%.3f\n", a / b }'
  done | median)
  bin=nginx
  [ "$t" = nginx ] || bin=${BINS[$((${t#p} - 1))]}
  printf '%-6s %9s %12s %14s  %s\n' "$t" "$rps" "$ratio" "$cpu" "$bin"
done
