#!/usr/bin/env bash
# CitoRoute vs nginx, one worker each, small keep-alive responses, loopback only.
#
#   bench/run.sh                 build, install what is missing, measure, print, save
#   DURATION=10 REPEATS=3 bench/run.sh
#   SKIP_BUILD=1 bench/run.sh    reuse the release binary already built
#   PERF=1 bench/run.sh          also record a perf profile of citoroute-proxy at max load
#   SKIP_BUILD=1 PROXY_BIN=/path/to/citoroute-proxy bench/run.sh   measure another build
#   TLS=1 bench/run.sh           both proxies terminate TLS (self-signed, made here with
#                                openssl); clients speak HTTP/1.1 over TLS, the origin stays plain
#
# What runs where (on a 2-core machine):
#   core LOADGEN_CPU (0): the origin nginx (1 worker) and the load generator (wrk / h2load)
#   core PROXY_CPU   (1): the proxy under test (citoroute-proxy with 1 worker thread, or an
#                         nginx reverse proxy with 1 worker process); both proxies are started
#                         up front but only one carries traffic at a time.
#
# Measurements, per target (origin direct, through citoroute, through nginx):
#   1. max throughput: wrk, keep-alive, CONNS connections, REPEATS runs of DURATION seconds,
#      interleaved across targets; the median run is reported with its p50/p99.
#   2. fixed rate at half of each proxy's max throughput: h2load --h1 with --rps, the same rate
#      sent to the origin directly and through the proxy; "added p99" is the difference.
# See docs/benchmarks.md for the reasoning and the last results.
#
# Traffic goes to 127.0.0.1 only. Every process this script starts is stopped by its PID on exit.
# Results: printed, and written to bench/results/latest.txt (raw outputs next to it in raw/).
set -euo pipefail

DURATION=${DURATION:-10}        # seconds per measured run
WARMUP=${WARMUP:-2}             # seconds of warm-up traffic before each target's first run
CONNS=${CONNS:-64}              # wrk keep-alive connections
WRK_THREADS=${WRK_THREADS:-1}   # wrk threads; one, since wrk gets a single core
REPEATS=${REPEATS:-3}           # max-throughput runs per target (median reported)
RATE_PROCS=${RATE_PROCS:-8}     # h2load processes (one connection each) in the fixed-rate runs
LOADGEN_CPU=${LOADGEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
TLS=${TLS:-0}                   # 1: the proxies listen with TLS
NICE=${NICE:--10}               # niceness of the sessions the benchmark starts (root only), so
                                # that builds running beside it steal little CPU; 0 disables

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS="$ROOT/bench/results"
OUT="$RESULTS/latest.txt"

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
[ "${PERF:-0}" = 1 ] && ! command -v perf >/dev/null && need_pkgs+=(linux-perf)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}; install them (Debian: apt-get install -y ${need_pkgs[*]})"
  log "installing ${need_pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # nginx-light is the small build; fall back to the full one where it is not packaged.
  if [[ " ${need_pkgs[*]} " == *" nginx-light "* ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
    need_pkgs=("${need_pkgs[@]/nginx-light/nginx}")
  fi
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# ---------------------------------------------------------------- build (once)
cd "$ROOT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p citoroute-proxy"
  cargo build --release -p citoroute-proxy
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
PROXY_BIN=${PROXY_BIN:-"${TARGET_DIR:-$ROOT/target}/release/citoroute-proxy"}
[ -x "$PROXY_BIN" ] || die "no release binary at $PROXY_BIN (run without SKIP_BUILD=1)"

# ---------------------------------------------------------------- pinning, temp dir, ports
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_pinning "origin + load generator" "proxy under test"
bench_tmp citoroute-bench
read -r PORT_ORIGIN PORT_CITO PORT_NGINX PORT_ADMIN < <(free_ports 4)

# ---------------------------------------------------------------- configs
mkdir -p "$TMP/origin" "$TMP/nginx" "$TMP/cito" "$TMP/raw"
NGINX_TLS=";"
SCHEME=http
if [ "$TLS" = 1 ]; then
  SCHEME=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
  NGINX_TLS=" ssl; ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;"
fi
# url TARGET: where the load goes (the origin is always plain HTTP).
url() {
  if [ "$1" = direct ]; then echo "http://127.0.0.1:${PORT[$1]}/"; else echo "$SCHEME://127.0.0.1:${PORT[$1]}/"; fi
}
{
  nginx_head "$TMP/origin"
  cat <<EOF
  server {
    listen 127.0.0.1:$PORT_ORIGIN;
    default_type text/plain;
    location / { return 200 "ok\n"; }
  }
}
EOF
} >"$TMP/origin/nginx.conf"

{
  nginx_head "$TMP/nginx"
  cat <<EOF
  upstream origin {
    server 127.0.0.1:$PORT_ORIGIN;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PORT_NGINX$NGINX_TLS
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$TMP/nginx/nginx.conf"

proxy_config "$PORT_ADMIN" "$PORT_CITO" "$PORT_ORIGIN" >"$TMP/cito/config.toml"
if [ "$TLS" = 1 ]; then
  sed -i 's/^protocol = "HTTP"$/protocol = "HTTPS"\ntls = { certificates = ["bench"] }/' "$TMP/cito/config.toml"
  printf '\n[certificates.bench]\ncert_file = "%s"\nkey_file = "%s"\n' "$TMP/cert.pem" "$TMP/key.pem" \
    >>"$TMP/cito/config.toml"
fi
"$PROXY_BIN" check "$TMP/cito/config.toml" >/dev/null

# ---------------------------------------------------------------- start
"${PIN_LOAD[@]}" nginx -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -e "$TMP/origin/error.log" \
  >"$TMP/origin/stdout.log" 2>&1 &
PID_ORIGIN=$!; PIDS+=("$PID_ORIGIN"); boost "$PID_ORIGIN"
"${PIN_PROXY[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
  >"$TMP/nginx/stdout.log" 2>&1 &
PID_NGINX=$!; PIDS+=("$PID_NGINX"); boost "$PID_NGINX"
TMPDIR="$TMP/cito" RUST_LOG=warn "${PIN_PROXY[@]}" "$PROXY_BIN" --config "$TMP/cito/config.toml" \
  >"$TMP/cito/stdout.log" 2>&1 &
PID_CITO=$!; PIDS+=("$PID_CITO"); boost "$PID_CITO"

wait_ok() { # $1 = port, $2 = name, $3 = scheme
  for _ in $(seq 1 100); do
    if [ "$(curl -sk --max-time 1 "${3:-http}://127.0.0.1:$1/" 2>/dev/null)" = ok ]; then return 0; fi
    sleep 0.1
  done
  cat "$TMP"/*/error.log "$TMP"/*/stdout.log >&2 2>/dev/null || true
  die "$2 on port $1 did not answer 'ok'"
}
wait_ok "$PORT_ORIGIN" origin
wait_ok "$PORT_CITO" citoroute "$SCHEME"
wait_ok "$PORT_NGINX" nginx "$SCHEME"
log "origin :$PORT_ORIGIN (pid $PID_ORIGIN), citoroute :$PORT_CITO (pid $PID_CITO), nginx :$PORT_NGINX (pid $PID_NGINX)"

declare -A PORT=([direct]=$PORT_ORIGIN [citoroute]=$PORT_CITO [nginx]=$PORT_NGINX)
declare -A PROC=([direct]="" [citoroute]=$PID_CITO [nginx]=$PID_NGINX)

# ---------------------------------------------------------------- accounting helpers
CLK_TCK=$(getconf CLK_TCK)


# wrk run; prints "rps p50_us p99_us errors proxy_cpu_pct cpu0_pct cpu1_pct
# proxy_user_us_per_req proxy_sys_us_per_req".
run_wrk() { # $1 = target, $2 = seconds, $3 = raw file
  local u0 s0 u1 s1 a0 a1 b0 b1 rps n p50 p99 non2xx sockerr
  read -r u0 s0 < <(ticks "${PROC[$1]}"); read -r a0 at0 < <(cpu_jiffies "$LOADGEN_CPU"); read -r b0 bt0 < <(cpu_jiffies "$PROXY_CPU")
  "${PIN_LOAD[@]}" wrk -t "$WRK_THREADS" -c "$CONNS" -d "${2}s" --latency \
    "$(url "$1")" >"$3" 2>&1 &
  LOADGEN=$!; boost "$LOADGEN"; wait "$LOADGEN" || true; LOADGEN=
  read -r u1 s1 < <(ticks "${PROC[$1]}"); read -r a1 at1 < <(cpu_jiffies "$LOADGEN_CPU"); read -r b1 bt1 < <(cpu_jiffies "$PROXY_CPU")
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$3")
  n=$(awk '/requests in/ { print $1 }' "$3")
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$3")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$3")")
  non2xx=$(awk '/Non-2xx/ { print $NF }' "$3"); non2xx=${non2xx:-0}
  sockerr=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$3"); sockerr=${sockerr:-0}
  awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v err=$((non2xx + sockerr)) \
    -v pu=$((u1 - u0)) -v ps=$((s1 - s0)) -v hz="$CLK_TCK" -v s="$2" -v n="${n:-0}" \
    -v a=$((a1 - a0)) -v at=$((at1 - at0)) -v b=$((b1 - b0)) -v bt=$((bt1 - bt0)) \
    'BEGIN { printf "%s %s %s %d %.0f %.0f %.0f %.1f %.1f\n", rps, p50, p99, err, 100 * (pu + ps) / hz / s,
             (at > 0 ? 100 * a / at : 0), (bt > 0 ? 100 * b / bt : 0),
             (n > 0 ? pu / hz * 1e6 / n : 0), (n > 0 ? ps / hz * 1e6 / n : 0) }'
}

# h2load fixed-rate run; prints "achieved_rps p50_us p90_us p99_us p999_us max_us errors".
# RATE_PROCS separate h2load processes with one connection each, started a few milliseconds
# apart: one h2load with many connections fires all its clients' timers together, so requests
# arrive in bursts of that many and the measured latency is mostly queueing behind the burst.
run_rate() { # $1 = target, $2 = total rps, $3 = raw file prefix
  local per=$(( ($2 + RATE_PROCS - 1) / RATE_PROCS )) i pids=() pid
  for i in $(seq 1 "$RATE_PROCS"); do
    rm -f "$3.$i.log" # h2load appends to an existing log file
    "${PIN_LOAD[@]}" h2load --h1 -t 1 -c 1 --rps="$per" -D "$DURATION" --warm-up-time=1 \
      --log-file="$3.$i.log" "$(url "$1")" >"$3.$i.txt" 2>&1 &
    pids+=($!)
    boost "$!"
    sleep "0.0$((RANDOM % 9 + 1))"
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  cat "$3".*.log >"$3.log" 2>/dev/null || true
  cat "$3".*.txt >"$3.txt" 2>/dev/null || true
  rm -f "$3".*.log "$3".*.txt
  touch "$3.log"
  local n bad
  n=$(wc -l <"$3.log")
  bad=$(awk -F'\t' '$2 != 200' "$3.log" | wc -l)
  [ "$n" -gt 0 ] || { echo "0 nan nan nan nan nan 0"; return; }
  # Each process logs only its measured DURATION (not the warm-up).
  cut -f3 "$3.log" | sort -n | awk -v n="$n" -v s="$DURATION" -v bad="$bad" '
    function at(q,  i) { i = int(q * n + 0.999999); if (i < 1) i = 1; if (i > n) i = n; return v[i] }
    { v[NR] = $1 }
    END { printf "%.0f %d %d %d %d %d %d\n", (s > 0 ? n / s : 0), at(0.50), at(0.90), at(0.99), at(0.999), v[n], bad }'
}

median_index() { # stdin: "value index" lines; prints the index of the median value
  sort -n | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }'
}

# ---------------------------------------------------------------- environment header
{
  echo "CitoRoute proxy benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  echo "pinning: $PINNING"
  if [ "$TLS" = 1 ]; then
    echo "TLS: both proxies terminate TLS (P-256 self-signed); clients send HTTP/1.1 over TLS; origin plain HTTP"
  fi
  echo "tools: $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $(h2load --version 2>&1 | head -1)"
  echo "citoroute: $("$PROXY_BIN" --version 2>/dev/null || echo unknown), worker_threads = 1, access_log = false"
  echo "load: wrk -t $WRK_THREADS -c $CONNS -d ${DURATION}s --latency (x$REPEATS, median); $RATE_PROCS x h2load --h1 -c 1 --rps=R/$RATE_PROCS -D $DURATION --warm-up-time=1"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$TMP/header.txt"

# ---------------------------------------------------------------- 1. max throughput
TARGETS=(direct citoroute nginx)
for t in "${TARGETS[@]}"; do
  log "warm-up $t (${WARMUP}s)"
  run_wrk "$t" "$WARMUP" "$TMP/raw/warmup-$t.txt" >/dev/null
done
declare -A MAXRUN
for r in $(seq 1 "$REPEATS"); do
  for t in "${TARGETS[@]}"; do
    MAXRUN[$t,$r]=$(run_wrk "$t" "$DURATION" "$TMP/raw/wrk-$t-$r.txt")
    log "max $t run $r: ${MAXRUN[$t,$r]}"
  done
done
declare -A MAX
for t in "${TARGETS[@]}"; do
  i=$(for r in $(seq 1 "$REPEATS"); do echo "${MAXRUN[$t,$r]%% *} $r"; done | median_index)
  MAX[$t]=${MAXRUN[$t,$i]}
  cp "$TMP/raw/wrk-$t-$i.txt" "$TMP/raw/wrk-$t-median.txt"
done

if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  log "perf record on citoroute-proxy during a ${DURATION}s max-throughput run"
  perf record -N -F 999 -g -p "$PID_CITO" -o "$TMP/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  perf_pid=$!
  run_wrk citoroute "$DURATION" "$TMP/raw/wrk-perf.txt" >/dev/null
  wait "$perf_pid" || true
  perf report -i "$TMP/perf.data" --no-children -g none --sort dso,sym --percent-limit 0.2 \
    --stdio 2>/dev/null | grep -v '^$' | head -150 >"$TMP/raw/perf-citoroute.txt" || true
fi

# ---------------------------------------------------------------- 2. fixed rate (half of max)
declare -A RATE RATERES
for p in citoroute nginx; do
  RATE[$p]=$(( ${MAX[$p]%% *} / 2 ))
done
for p in citoroute nginx; do
  R=${RATE[$p]}
  for t in direct "$p"; do
    RATERES[$t,$p]=$(run_rate "$t" "$R" "$TMP/raw/h2load-$t-at-half-$p")
    log "rate $R on $t: ${RATERES[$t,$p]}"
  done
done
# Both proxies at one common rate (the lower half-max), for a like-for-like latency view.
COMMON=$(( RATE[citoroute] < RATE[nginx] ? RATE[citoroute] : RATE[nginx] ))
other=$([ "$COMMON" = "${RATE[citoroute]}" ] && echo nginx || echo citoroute)
RATERES[$other,common]=$(run_rate "$other" "$COMMON" "$TMP/raw/h2load-$other-at-common")
log "rate $COMMON on $other: ${RATERES[$other,common]}"
owner=$([ "$other" = nginx ] && echo citoroute || echo nginx)
RATERES[$owner,common]=${RATERES[$owner,$owner]}
RATERES[direct,common]=${RATERES[direct,$owner]}

echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TMP/header.txt"

# ---------------------------------------------------------------- report
f() { echo "$1" | awk -v i="$2" '{ print $i }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.2f", a / b }'; }
report() {
  cat "$TMP/header.txt"
  echo
  echo "## Max throughput (keep-alive, $CONNS connections, median of $REPEATS x ${DURATION}s)"
  printf '%-10s %10s %9s %9s %7s %10s %10s %9s %9s %6s %6s\n' target req/s p50_us p99_us errors proxy_cpu% req/cpu-s user_us/r sys_us/r cpu$LOADGEN_CPU% cpu$PROXY_CPU%
  for t in "${TARGETS[@]}"; do
    m=${MAX[$t]}
    eff=n/a
    [ "$t" != direct ] && [ "$(f "$m" 5)" -gt 0 ] && eff=$(awk -v r="$(f "$m" 1)" -v c="$(f "$m" 5)" 'BEGIN { printf "%.0f", r / (c / 100) }')
    d() { [ "$t" = direct ] && echo - || f "$m" "$1"; }
    printf '%-10s %10s %9s %9s %7s %10s %10s %9s %9s %6s %6s\n' "$t" "$(f "$m" 1)" "$(f "$m" 2)" "$(f "$m" 3)" "$(f "$m" 4)" \
      "$(d 5)" "$eff" "$(d 8)" "$(d 9)" "$(f "$m" 6)" "$(f "$m" 7)"
  done
  echo "  all runs (req/s): $(for t in "${TARGETS[@]}"; do printf '%s=' "$t"; for r in $(seq 1 "$REPEATS"); do printf '%s,' "$(f "${MAXRUN[$t,$r]}" 1)"; done; printf ' '; done)"
  echo
  echo "## Fixed rate: half of each proxy's max ($RATE_PROCS x h2load --h1 -c 1, ${DURATION}s)"
  printf '%-22s %9s %9s %8s %8s %8s %9s %9s %7s %13s\n' run target_rps got_rps p50_us p90_us p99_us p99.9_us max_us errors added_p99_us
  for p in citoroute nginx common; do
    R=$([ "$p" = common ] && echo "$COMMON" || echo "${RATE[$p]}")
    if [ "$p" = common ]; then list=(direct citoroute nginx); else list=(direct "$p"); fi
    for t in "${list[@]}"; do
      x=${RATERES[$t,$p]}
      added=-
      [ "$t" != direct ] && added=$(( $(f "$x" 4) - $(f "${RATERES[direct,$p]}" 4) ))
      printf '%-22s %9s %9s %8s %8s %8s %9s %9s %7s %13s\n' "$t@half-$p" "$R" "$(f "$x" 1)" "$(f "$x" 2)" \
        "$(f "$x" 3)" "$(f "$x" 4)" "$(f "$x" 5)" "$(f "$x" 6)" "$(f "$x" 7)" "$added"
    done
  done
  echo
  c=${MAX[citoroute]}; n=${MAX[nginx]}
  added_c=$(( $(f "${RATERES[citoroute,citoroute]}" 4) - $(f "${RATERES[direct,citoroute]}" 4) ))
  added_n=$(( $(f "${RATERES[nginx,nginx]}" 4) - $(f "${RATERES[direct,nginx]}" 4) ))
  added_cc=$(( $(f "${RATERES[citoroute,common]}" 4) - $(f "${RATERES[direct,common]}" 4) ))
  added_nc=$(( $(f "${RATERES[nginx,common]}" 4) - $(f "${RATERES[direct,common]}" 4) ))
  # short TARGET RATE_KEY: a marker when the load generator sent under 95% of the asked rate, so
  # that its own queueing is in the latency (on 2 CPUs it shares its core with the origin).
  short() {
    awk -v got="$(f "${RATERES[$1,$2]}" 1)" -v want="$( [ "$2" = common ] && echo "$COMMON" || echo "${RATE[$2]}")" \
      'BEGIN { if (got < 0.95 * want) printf " (generator sent %.0f%% of the rate)", 100 * got / want }'
  }
  echo "## Ratios citoroute / nginx"
  echo "max throughput:               $(div "$(f "$c" 1)" "$(f "$n" 1)")   (aim >= 1.0)"
  echo "requests per proxy CPU-second: $(div "$(awk -v r="$(f "$c" 1)" -v p="$(f "$c" 5)" 'BEGIN { print r / p }')" "$(awk -v r="$(f "$n" 1)" -v p="$(f "$n" 5)" 'BEGIN { print r / p }')")"
  echo "proxy CPU per request:        citoroute $(f "$c" 8) us user + $(f "$c" 9) us sys, nginx $(f "$n" 8) us user + $(f "$n" 9) us sys"
  echo "p50 at max load:              $(div "$(f "$c" 2)" "$(f "$n" 2)")"
  echo "p99 at max load:              $(div "$(f "$c" 3)" "$(f "$n" 3)")"
  echo "added p99 at own half max:    citoroute ${added_c} us$(short citoroute citoroute), nginx ${added_n} us$(short nginx nginx)   (aim: citoroute <= 100 us)"
  echo "added p99 at common rate $COMMON: citoroute ${added_cc} us, nginx ${added_nc} us, ratio $(div "$added_cc" "$added_nc")"
}
rm -rf "$RESULTS/raw"
mkdir -p "$RESULTS/raw"
report | tee "$OUT"
cp "$TMP"/raw/wrk-*-median.txt "$TMP"/raw/h2load-*.txt "$RESULTS/raw/" 2>/dev/null || true
[ -f "$TMP/raw/perf-citoroute.txt" ] && cp "$TMP/raw/perf-citoroute.txt" "$RESULTS/raw/"
log "written $OUT"
