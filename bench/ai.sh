#!/usr/bin/env bash
# CitoRoute's AI gateway vs LiteLLM's proxy, one worker each, against a fast fake OpenAI
# provider, loopback only.
#
#   bench/ai.sh                  build, install what is missing, measure, print, save
#   DURATION=5 REPEATS=1 bench/ai.sh
#   SKIP_BUILD=1 bench/ai.sh     reuse the release binary already built
#   SKIP_BUILD=1 PROXY_BIN=/path/to/citoroute-proxy bench/ai.sh   measure another build
#
# What runs where (on a 2-core machine):
#   core LOADGEN_CPU (0): the fake provider (nginx, 1 worker, a fixed chat.completion JSON body)
#                         and the load generator (wrk / h2load)
#   core PROXY_CPU   (1): the gateway under test: citoroute-proxy (worker_threads = 1, one LLM
#                         route, provider "openai") or LiteLLM's proxy (uvicorn, 1 worker, same
#                         model and provider); both are started up front, only one carries
#                         traffic at a time.
#
# Every request is the same small non-streaming POST /v1/chat/completions.
# Measurements, per target (provider direct, through citoroute, through litellm):
#   1. max throughput: wrk with a POST script, keep-alive, CONNS connections, REPEATS runs of
#      DURATION seconds interleaved across targets; the median run is reported.
#   2. fixed rate at half of LiteLLM's max throughput (a rate LiteLLM sustains), sent to all
#      three for RATE_DURATION seconds: "added p99" = p99 through a gateway - p99 direct.
#      Also citoroute at half of its own max, against the provider direct at that rate.
# See docs/benchmarks.md ("AI gateway vs LiteLLM") for the reasoning and the last results.
#
# Traffic goes to 127.0.0.1 only. Every process this script starts is stopped by its PID on exit.
# Results: printed, and written to bench/results/ai-latest.txt (raw outputs in raw-ai/).
set -euo pipefail

DURATION=${DURATION:-10}        # seconds per max-throughput run
RATE_DURATION=${RATE_DURATION:-20} # seconds per fixed-rate run (LiteLLM's rate is low: more samples)
WARMUP=${WARMUP:-3}             # seconds of warm-up traffic before each target's first run
CONNS=${CONNS:-64}              # wrk keep-alive connections
REPEATS=${REPEATS:-3}           # max-throughput runs per target (median reported)
RATE_PROCS=${RATE_PROCS:-8}     # h2load processes (one connection each) in the fixed-rate runs
LOADGEN_CPU=${LOADGEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
NICE=${NICE:--10}               # niceness of the sessions the benchmark starts (root only); 0 disables
LITELLM_VENV=${LITELLM_VENV:-}  # a virtualenv with LiteLLM's proxy; default bench/.venv, made if missing
LITELLM_VERSION=${LITELLM_VERSION:-} # pin a LiteLLM version when installing; empty = newest

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS="$ROOT/bench/results"
OUT="$RESULTS/ai-latest.txt"
LITELLM_VENV=${LITELLM_VENV:-$ROOT/bench/.venv}
MODEL=${MODEL:-bench-model}         # model name in requests, both gateways and the answer

log() { printf '[bench-ai %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}; install them (Debian: apt-get install -y ${need_pkgs[*]})"
  log "installing ${need_pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [[ " ${need_pkgs[*]} " == *" nginx-light "* ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
    need_pkgs=("${need_pkgs[@]/nginx-light/nginx}")
  fi
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# LiteLLM's proxy from PyPI, in its own virtualenv (bench/.venv is not committed).
if [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
  log "installing litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION} into $LITELLM_VENV"
  python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/python" -m pip install -q "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}" ||
    die "pip install 'litellm[proxy]' failed (output above)"
fi
LITELLM_VER=$("$LITELLM_VENV/bin/python" -c 'from importlib.metadata import version; print(version("litellm"))')

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
bench_pinning "fake provider + load generator" "gateway under test"
bench_tmp citoroute-bench-ai
read -r PORT_FAKE PORT_CITO PORT_ADMIN PORT_LITELLM < <(free_ports 4)

mkdir -p "$TMP/fake" "$TMP/cito" "$TMP/litellm" "$TMP/raw"

# ---------------------------------------------------------------- the request
# A small chat request, the same bytes to every target.
cat >"$TMP/body.json" <<EOF
{"model":"$MODEL","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in five words."}],"max_tokens":16,"temperature":0}
EOF
cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$(cat "$TMP/body.json")]]
EOF

# ---------------------------------------------------------------- fake provider (nginx)
# A non-streaming chat.completion in the documented OpenAI shape, whatever was asked.
ANSWER='{"id":"chatcmpl-bench0001","object":"chat.completion","created":1763900000,"model":"'$MODEL'","system_fingerprint":"fp_bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":7,"total_tokens":31}}'
{ nginx_head "$TMP/fake"; cat <<EOF
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$PORT_FAKE;
    default_type application/json;
    location = /v1/chat/completions { return 200 '$ANSWER'; }
    location / { return 404 '{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}'; }
  }
}
EOF
} >"$TMP/fake/nginx.conf"

# ---------------------------------------------------------------- citoroute
printf 'sk-bench-not-a-real-key\n' >"$TMP/provider-key"
{ proxy_head "$PORT_ADMIN" "$PORT_CITO"; cat <<EOF

[llm_backends.fake]
provider = "openai"
model = "$MODEL"
endpoint = "http://127.0.0.1:$PORT_FAKE"
api_key_file = "$TMP/provider-key"
timeout = "30s"

[[llm_routes]]
name = "chat"
listeners = ["http"]
backends = [{ backend = "fake" }]
EOF
} >"$TMP/cito/config.toml"
"$PROXY_BIN" check "$TMP/cito/config.toml" >/dev/null

# ---------------------------------------------------------------- litellm
# One model entry to the same provider, no database, no callbacks, logging at ERROR.
cat >"$TMP/litellm/config.yaml" <<EOF
model_list:
  - model_name: $MODEL
    litellm_params:
      model: openai/$MODEL
      api_base: http://127.0.0.1:$PORT_FAKE/v1
      api_key: $(cat "$TMP/provider-key")
litellm_settings:
  set_verbose: false
  json_logs: false
  request_timeout: 30
general_settings:
  # Open, like the citoroute route (no consumers): LiteLLM refuses to start without a master
  # key unless told that this is intended.
  dangerously_permit_weak_or_unset_master_key: true
EOF

# ---------------------------------------------------------------- start
"${PIN_LOAD[@]}" nginx -p "$TMP/fake" -c "$TMP/fake/nginx.conf" -e "$TMP/fake/error.log" \
  >"$TMP/fake/stdout.log" 2>&1 &
PID_FAKE=$!; PIDS+=("$PID_FAKE"); boost "$PID_FAKE"
TMPDIR="$TMP/cito" RUST_LOG=warn "${PIN_PROXY[@]}" "$PROXY_BIN" --config "$TMP/cito/config.toml" \
  >"$TMP/cito/stdout.log" 2>&1 &
PID_CITO=$!; PIDS+=("$PID_CITO"); boost "$PID_CITO"
# LITELLM_LOCAL_MODEL_COST_MAP: use the cost map shipped in the package, fetch nothing.
(cd "$TMP/litellm" && LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_MODE=PRODUCTION \
  exec "${PIN_PROXY[@]}" "$LITELLM_VENV/bin/litellm" --config "$TMP/litellm/config.yaml" \
  --host 127.0.0.1 --port "$PORT_LITELLM" --num_workers 1) >"$TMP/litellm/stdout.log" 2>&1 &
PID_LITELLM=$!; PIDS+=("$PID_LITELLM"); boost "$PID_LITELLM"

# Waits until a target answers the bench request with a chat.completion; saves the answer.
wait_chat() { # $1 = port, $2 = name, $3 = tries (0.2 s apart), $4 = its pid (optional)
  local i
  for i in $(seq 1 "$3"); do
    if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then break; fi
    if curl -s --max-time 5 -H 'content-type: application/json' --data-binary "@$TMP/body.json" \
      "http://127.0.0.1:$1/v1/chat/completions" >"$TMP/answer-$2.json" 2>/dev/null &&
      grep -q '"chat.completion"' "$TMP/answer-$2.json" && grep -q 'Hello there' "$TMP/answer-$2.json"; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 30 "$TMP"/*/error.log "$TMP"/*/stdout.log >&2 2>/dev/null || true
  die "$2 on port $1 gave no chat completion: $(head -c 300 "$TMP/answer-$2.json" 2>/dev/null)"
}
wait_chat "$PORT_FAKE" direct 50 "$PID_FAKE"
wait_chat "$PORT_CITO" citoroute 50 "$PID_CITO"
wait_chat "$PORT_LITELLM" litellm 900 "$PID_LITELLM"  # LiteLLM takes a while to import and start
log "provider :$PORT_FAKE (pid $PID_FAKE), citoroute :$PORT_CITO (pid $PID_CITO), litellm :$PORT_LITELLM (pid $PID_LITELLM)"

declare -A PORT=([direct]=$PORT_FAKE [citoroute]=$PORT_CITO [litellm]=$PORT_LITELLM)
declare -A PROC=([direct]="" [citoroute]=$PID_CITO [litellm]=$PID_LITELLM)

# ---------------------------------------------------------------- accounting helpers
CLK_TCK=$(getconf CLK_TCK)

# wrk POST run; prints "rps p50_us p99_us errors proxy_cpu_pct cpu0_pct cpu1_pct
# proxy_user_us_per_req proxy_sys_us_per_req".
run_wrk() { # $1 = target, $2 = seconds, $3 = raw file
  local u0 s0 u1 s1 a0 a1 b0 b1 at0 at1 bt0 bt1 rps n p50 p99 non2xx sockerr
  read -r u0 s0 < <(ticks "${PROC[$1]}"); read -r a0 at0 < <(cpu_jiffies "$LOADGEN_CPU"); read -r b0 bt0 < <(cpu_jiffies "$PROXY_CPU")
  "${PIN_LOAD[@]}" wrk -t 1 -c "$CONNS" -d "${2}s" --timeout 10s --latency -s "$TMP/post.lua" \
    "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" >"$3" 2>&1 &
  LOADGEN=$!; boost "$LOADGEN"; wait "$LOADGEN" || true; LOADGEN=
  read -r u1 s1 < <(ticks "${PROC[$1]}"); read -r a1 at1 < <(cpu_jiffies "$LOADGEN_CPU"); read -r b1 bt1 < <(cpu_jiffies "$PROXY_CPU")
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$3")
  n=$(awk '/requests in/ { print $1 }' "$3")
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$3")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$3")")
  non2xx=$(awk '/Non-2xx/ { print $NF }' "$3"); non2xx=${non2xx:-0}
  sockerr=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$3"); sockerr=${sockerr:-0}
  awk -v rps="${rps:-0}" -v p50="$p50" -v p99="$p99" -v err=$((non2xx + sockerr)) \
    -v pu=$((u1 - u0)) -v ps=$((s1 - s0)) -v hz="$CLK_TCK" -v s="$2" -v n="${n:-0}" \
    -v a=$((a1 - a0)) -v at=$((at1 - at0)) -v b=$((b1 - b0)) -v bt=$((bt1 - bt0)) \
    'BEGIN { printf "%s %s %s %d %.0f %.0f %.0f %.1f %.1f\n", rps, p50, p99, err, 100 * (pu + ps) / hz / s,
             (at > 0 ? 100 * a / at : 0), (bt > 0 ? 100 * b / bt : 0),
             (n > 0 ? pu / hz * 1e6 / n : 0), (n > 0 ? ps / hz * 1e6 / n : 0) }'
}

# h2load fixed-rate POST run; prints "achieved_rps p50_us p90_us p99_us p999_us max_us errors".
# RATE_PROCS processes with one connection each, started a few ms apart (see bench/run.sh).
run_rate() { # $1 = target, $2 = total rps, $3 = raw file prefix
  local per=$(( ($2 + RATE_PROCS - 1) / RATE_PROCS )) i pids=() pid
  [ "$per" -ge 1 ] || per=1
  for i in $(seq 1 "$RATE_PROCS"); do
    rm -f "$3.$i.log"
    "${PIN_LOAD[@]}" h2load --h1 -t 1 -c 1 --rps="$per" -D "$RATE_DURATION" --warm-up-time=1 \
      -d "$TMP/body.json" -H 'content-type: application/json' \
      --log-file="$3.$i.log" "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" >"$3.$i.txt" 2>&1 &
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
  cut -f3 "$3.log" | sort -n | awk -v n="$n" -v s="$RATE_DURATION" -v bad="$bad" '
    function at(q,  i) { i = int(q * n + 0.999999); if (i < 1) i = 1; if (i > n) i = n; return v[i] }
    { v[NR] = $1 }
    END { printf "%.0f %d %d %d %d %d %d\n", (s > 0 ? n / s : 0), at(0.50), at(0.90), at(0.99), at(0.999), v[n], bad }'
}

median_index() { sort -n | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }'; }

# ---------------------------------------------------------------- environment header
{
  echo "CitoRoute AI gateway vs LiteLLM — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  echo "pinning: $PINNING"
  echo "tools: $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $(h2load --version 2>&1 | head -1), python $(python3 -c 'import platform; print(platform.python_version())')"
  echo "citoroute: $("$PROXY_BIN" --version 2>/dev/null || echo unknown), worker_threads = 1, access_log = false, one LLM route, provider openai"
  echo "litellm: $LITELLM_VER (proxy, uvicorn, --num_workers 1, LITELLM_LOG=ERROR, no database)"
  echo "request: POST /v1/chat/completions, $(wc -c <"$TMP/body.json") bytes, non-streaming; provider answer $(printf '%s' "$ANSWER" | wc -c) bytes"
  echo "load: wrk -t 1 -c $CONNS -d ${DURATION}s --latency -s post.lua (x$REPEATS, median); $RATE_PROCS x h2load --h1 -c 1 --rps=R/$RATE_PROCS -D $RATE_DURATION --warm-up-time=1"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$TMP/header.txt"

# ---------------------------------------------------------------- 1. max throughput
TARGETS=(direct citoroute litellm)
for t in "${TARGETS[@]}"; do
  log "warm-up $t (${WARMUP}s)"
  run_wrk "$t" "$WARMUP" "$TMP/raw/warmup-$t.txt" >/dev/null
done
declare -A MAXRUN MAX
for r in $(seq 1 "$REPEATS"); do
  for t in "${TARGETS[@]}"; do
    MAXRUN[$t,$r]=$(run_wrk "$t" "$DURATION" "$TMP/raw/wrk-$t-$r.txt")
    log "max $t run $r: ${MAXRUN[$t,$r]}"
  done
done
for t in "${TARGETS[@]}"; do
  i=$(for r in $(seq 1 "$REPEATS"); do echo "${MAXRUN[$t,$r]%% *} $r"; done | median_index)
  MAX[$t]=${MAXRUN[$t,$i]}
  cp "$TMP/raw/wrk-$t-$i.txt" "$TMP/raw/wrk-$t-median.txt"
done

# ---------------------------------------------------------------- 2. fixed rates
RATE_L=$(( ${MAX[litellm]%% *} / 2 ))
[ "$RATE_L" -ge "$RATE_PROCS" ] || RATE_L=$RATE_PROCS
RATE_C=$(( ${MAX[citoroute]%% *} / 2 ))
declare -A RR
for t in direct citoroute litellm; do
  RR[$t,l]=$(run_rate "$t" "$RATE_L" "$TMP/raw/h2load-$t-at-half-litellm")
  log "rate $RATE_L on $t: ${RR[$t,l]}"
done
for t in direct citoroute; do
  RR[$t,c]=$(run_rate "$t" "$RATE_C" "$TMP/raw/h2load-$t-at-half-citoroute")
  log "rate $RATE_C on $t: ${RR[$t,c]}"
done
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TMP/header.txt"

# ---------------------------------------------------------------- report
f() { echo "$1" | awk -v i="$2" '{ print $i }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.1f", a / b }'; }
sub_() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan") print "n/a"; else printf "%d", a - b }'; }
report() {
  cat "$TMP/header.txt"
  echo
  echo "## Max throughput (keep-alive POST, $CONNS connections, median of $REPEATS x ${DURATION}s)"
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
  echo "## Fixed rate ($RATE_PROCS x h2load --h1 -c 1, ${RATE_DURATION}s; added = gateway - direct at the same rate)"
  printf '%-24s %9s %9s %8s %8s %8s %9s %9s %7s %12s %12s\n' run target_rps got_rps p50_us p90_us p99_us p99.9_us max_us errors added_p50_us added_p99_us
  for k in l c; do
    if [ "$k" = l ]; then R=$RATE_L; name=half-litellm; list=(direct citoroute litellm); else R=$RATE_C; name=half-citoroute; list=(direct citoroute); fi
    for t in "${list[@]}"; do
      x=${RR[$t,$k]}
      a50=-; a99=-
      if [ "$t" != direct ]; then
        a50=$(sub_ "$(f "$x" 2)" "$(f "${RR[direct,$k]}" 2)")
        a99=$(sub_ "$(f "$x" 4)" "$(f "${RR[direct,$k]}" 4)")
      fi
      printf '%-24s %9s %9s %8s %8s %8s %9s %9s %7s %12s %12s\n' "$t@$name" "$R" "$(f "$x" 1)" "$(f "$x" 2)" \
        "$(f "$x" 3)" "$(f "$x" 4)" "$(f "$x" 5)" "$(f "$x" 6)" "$(f "$x" 7)" "$a50" "$a99"
    done
  done
  echo
  c=${MAX[citoroute]}; l=${MAX[litellm]}
  echo "## Ratios and aims"
  echo "max throughput citoroute / litellm:        $(div "$(f "$c" 1)" "$(f "$l" 1)")x   (aim >= 10x)"
  echo "requests per gateway CPU-second, c / l:    $(div "$(awk -v r="$(f "$c" 1)" -v p="$(f "$c" 5)" 'BEGIN { print (p > 0 ? r / p : 0) }')" "$(awk -v r="$(f "$l" 1)" -v p="$(f "$l" 5)" 'BEGIN { print (p > 0 ? r / p : 0) }')")x"
  echo "gateway CPU per request:                   citoroute $(f "$c" 8) us user + $(f "$c" 9) us sys, litellm $(f "$l" 8) us user + $(f "$l" 9) us sys"
  echo "added p99 at $RATE_L req/s (half litellm max): citoroute $(sub_ "$(f "${RR[citoroute,l]}" 4)" "$(f "${RR[direct,l]}" 4)") us, litellm $(sub_ "$(f "${RR[litellm,l]}" 4)" "$(f "${RR[direct,l]}" 4)") us   (aim: citoroute <= 300 us)"
  echo "added p99 at $RATE_C req/s (half citoroute max): citoroute $(sub_ "$(f "${RR[citoroute,c]}" 4)" "$(f "${RR[direct,c]}" 4)") us"
}
rm -rf "$RESULTS/raw-ai"
mkdir -p "$RESULTS/raw-ai"
report | tee "$OUT"
cp "$TMP"/raw/wrk-*-median.txt "$TMP"/raw/h2load-*.txt "$TMP"/answer-*.json "$RESULTS/raw-ai/" 2>/dev/null || true
log "written $OUT"
