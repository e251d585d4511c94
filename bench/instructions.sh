#!/usr/bin/env bash
# User-space instructions per request of citoroute-proxy builds, counted by callgrind: a figure
# that does not move with the neighbours, unlike req/s or CPU time on a shared machine.
#
#   bench/instructions.sh BINARY [BINARY...]
#   REQUESTS=10000 bench/instructions.sh a b
#
# Per binary: origin nginx (1 worker, "ok\n") and the proxy with the bench/run.sh config under
# `valgrind --tool=callgrind --instr-atstart=no`; 2,000 warm-up requests uninstrumented, then
# instrumentation on for REQUESTS requests (h2load --h1, 8 keep-alive connections), then a dump.
# Prints the instructions per request over all the proxy's threads (startup excluded), and
# keeps the callgrind file for callgrind_annotate when KEEP=1. Needs valgrind, nginx, h2load.
# Traffic goes to 127.0.0.1 only; every process started is stopped by its PID.
set -euo pipefail

REQUESTS=${REQUESTS:-5000}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}

log() { printf '[instructions %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ $# -ge 1 ] || die "usage: bench/instructions.sh BINARY [BINARY...]"
for c in valgrind callgrind_control nginx h2load curl; do
  command -v "$c" >/dev/null || die "$c is missing (Debian: valgrind, nginx-light, nghttp2-client, curl)"
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NICE=0 LOADGEN_CPU=0 PROXY_CPU=0
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_tmp citoroute-instructions

for bin in "$@"; do
  [ -x "$bin" ] || die "not executable: $bin"
  d=$(mktemp -d "$TMP/run.XXXX")
  mkdir -p "$d/origin"
  read -r po pc pa < <(free_ports 3)
  { nginx_head "$d/origin"; cat <<EOF
  server { listen 127.0.0.1:$po; default_type text/plain; location / { return 200 "ok\n"; } }
}
EOF
  } >"$d/origin/nginx.conf"
  proxy_config "$pa" "$pc" "$po" >"$d/config.toml"
  nginx -p "$d/origin" -c "$d/origin/nginx.conf" >"$d/origin/out.log" 2>&1 &
  origin=$!; PIDS+=("$origin")
  # TMPDIR stays /tmp: callgrind_control finds the process through files there.
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/callgrind.out" \
    "$bin" --config "$d/config.toml" >"$d/proxy.log" 2>&1 &
  vg=$!; PIDS+=("$vg")
  for _ in $(seq 1 200); do
    [ "$(curl -s --max-time 2 "http://127.0.0.1:$pc/" 2>/dev/null)" = ok ] && break
    sleep 0.3
  done
  [ "$(curl -s --max-time 2 "http://127.0.0.1:$pc/")" = ok ] || die "$bin does not answer under valgrind"
  timeout 300 h2load --h1 -n "$WARMUP_REQUESTS" -c 8 "http://127.0.0.1:$pc/" >/dev/null 2>&1
  callgrind_control -i on "$vg" >/dev/null 2>&1
  timeout 600 h2load --h1 -n "$REQUESTS" -c 8 "http://127.0.0.1:$pc/" >"$d/h2load.txt" 2>&1
  callgrind_control -i off "$vg" >/dev/null 2>&1
  callgrind_control -d "$vg" >/dev/null 2>&1
  kill -INT "$vg" "$origin" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  wait "$origin" 2>/dev/null || true
  ok=$(awk '/^requests:/ { print $8 }' "$d/h2load.txt")
  [ "${ok:-0}" = "$REQUESTS" ] || die "$bin: only ${ok:-0} of $REQUESTS requests succeeded"
  total=$(cat "$d"/callgrind.out.* | awk '/^totals:/ { s += $2 } END { print s + 0 }')
  printf '%s  %s instructions/request\n' "$bin" "$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')"
  if [ "${KEEP:-0}" = 1 ]; then
    cp "$d"/callgrind.out.1 "$(basename "$bin").callgrind.out"
    log "kept $(basename "$bin").callgrind.out"
  fi
done
