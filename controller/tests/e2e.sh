#!/usr/bin/env bash
# End-to-end check of citoroute-controller against the project's local cluster (a real
# single-node Kubernetes, see conformance/cluster; needs root).
#
#   controller/tests/e2e.sh            up the cluster, run the controller locally, check, down
#   KEEP_CLUSTER=1 controller/tests/e2e.sh   leave the cluster running afterwards
#   NO_PROXY_IMAGE=1 ...               skip packaging the proxy image (no traffic check)
#
# Checks: GatewayClass Accepted; the proxy objects of a Gateway (ConfigMap with a gzip config,
# cert Secret, ServiceAccount, Role, RoleBinding, Deployment, Service) with owner references
# and the Gateway's infrastructure labels; Gateway Accepted/Programmed with the Service's
# ClusterIP as address; HTTPRoute Accepted/ResolvedRefs while another controller's parents
# entry survives; traffic through the proxy (if its image is packaged); a controller restart
# issues no write at all; an HTTPS listener (certificate copy, pods roll on the new port);
# propagation time of a new route; leader election between two replicas.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="$ROOT/conformance/cluster"
NS=citoroute-e2e
WORK="$(mktemp -d)"
CTRL_PID=""
LE1=""
METRICS=127.0.0.1:19090

log() { printf '[e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() {
  log "FAIL: $*"
  [ -s "$WORK/controller.log" ] && tail -40 "$WORK/controller.log" >&2
  exit 1
}
cleanup() {
  local p
  for p in "$CTRL_PID" "$LE1" "${FAKE_PID:-}"; do
    if [ -n "$p" ]; then
      kill "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then "$CLUSTER" down >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

kc() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }
# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then log "ok: $what"; return 0; fi
    sleep 0.5
  done
  fail "$what (after ${secs}s)"
}
jp() { kc get "$1" -n "$NS" "$2" -o jsonpath="$3"; }
cond_is() { # KIND NAME JSONPATH-TO-CONDITIONS TYPE STATUS
  [ "$(jp "$1" "$2" "{$3[?(@.type==\"$4\")].status}")" = "$5" ]
}
start_controller() { # [EXTRA CONTROLLER ARGS...]
  KUBECONFIG="$KUBECONFIG" RUST_LOG=info,kube=warn \
    "$ROOT/target/debug/citoroute-controller" --metrics-address "$METRICS" "$@" \
    >>"$WORK/controller.log" 2>&1 &
  CTRL_PID=$!
  wait_for 60 "controller reconciled" grep -q "stores ready" "$WORK/controller.log"
}

# apply_route NAME: an HTTPRoute NAME for host NAME.example on the http listener.
apply_route() {
  kc apply -f - >/dev/null <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: $1, namespace: $NS}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [$1.example]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
YAML
}
# serves_within NAME WHAT T0: wait for the first 200 of route NAME, log the time since T0 (ns).
serves_within() {
  wait_for 60 "$2" bash -c "curl -sf --max-time 2 -H 'Host: $1.example' http://$CLUSTER_IP/$1 >/dev/null"
  log "propagation of HTTPRoute $1 to its first 200: $((($(date +%s%N) - $3) / 1000000)) ms"
}

log "cluster up"
KUBECONFIG="$("$CLUSTER" up | tail -1)"
export KUBECONFIG

log "building the controller"
(cd "$ROOT" && cargo build -q -p citoroute-controller)

# Image names as the cluster script knows them (in a subshell: its helpers stay out of ours).
# shellcheck disable=SC1091,SC2016
ECHO_IMAGE="$(bash -c 'HERE="$1/conformance"; source "$HERE/lib/common.sh"; suite_image echo-basic' _ "$ROOT")"
# shellcheck disable=SC1091,SC2016
TOOLBOX_IMAGE="$(bash -c 'HERE="$1/conformance"; source "$HERE/lib/common.sh"; echo "$TOOLBOX_IMAGE"' _ "$ROOT")"
[ -n "$ECHO_IMAGE" ] || fail "no echo-basic image known"
# The proxy binary to package: PROXY_BIN, else the release build, else the debug build.
if [ -z "${PROXY_BIN:-}" ]; then
  for candidate in "$ROOT/target/release/citoroute-proxy" "$ROOT/target/debug/citoroute-proxy"; do
    if [ -x "$candidate" ]; then PROXY_BIN="$candidate"; break; fi
  done
fi
WITH_PROXY=0
if [ "${NO_PROXY_IMAGE:-0}" != 1 ] && [ -n "${PROXY_BIN:-}" ]; then
  log "packaging the proxy image from $(basename "$(dirname "$PROXY_BIN")")"
  "$CLUSTER" image localhost/citoroute/proxy:dev "$PROXY_BIN" >/dev/null
  WITH_PROXY=1
fi

kc delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kc delete gatewayclass citoroute --ignore-not-found >/dev/null
# Our CRDs (LLMBackend, LLMRoute, ...), as the chart installs them.
kc apply --server-side --force-conflicts -f "$ROOT/charts/citoroute/crds/" >/dev/null
start_controller

cat >"$WORK/objects.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: $NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: $ECHO_IMAGE
        imagePullPolicy: Never
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        ports: [{containerPort: 3000}]
        readinessProbe: {httpGet: {path: /health, port: 3000}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: $NS}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: citoroute}
spec: {controllerName: citoroute.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: $NS}
spec:
  gatewayClassName: citoroute
  infrastructure:
    labels: {e2e-label: "yes"}
    annotations: {e2e-annotation: "yes"}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: $NS}
spec:
  parentRefs: [{name: gw}]
  hostnames: [echo.example]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: echo, port: 8080}]
YAML
kc apply -f "$WORK/objects.yaml" >/dev/null

wait_for 30 "GatewayClass Accepted" \
  bash -c "[ \"\$(kubectl --kubeconfig '$KUBECONFIG' get gatewayclass citoroute -o jsonpath='{.status.conditions[?(@.type==\"Accepted\")].status}')\" = True ]"
for o in configmap/gw-citoroute secret/gw-citoroute-certs serviceaccount/gw-citoroute \
  role/gw-citoroute rolebinding/gw-citoroute deployment/gw-citoroute service/gw-citoroute; do
  wait_for 30 "$o exists" kc get -n "$NS" "$o"
  [ "$(jp "${o%%/*}" "${o#*/}" '{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')" = Gateway/gw ] ||
    fail "$o is not owned by the Gateway"
  [ "$(jp "${o%%/*}" "${o#*/}" '{.metadata.labels.e2e-label}')" = yes ] || fail "$o lacks the infrastructure label"
  [ "$(jp "${o%%/*}" "${o#*/}" '{.metadata.annotations.e2e-annotation}')" = yes ] || fail "$o lacks the infrastructure annotation"
done
jp configmap gw-citoroute '{.binaryData.config\.toml\.gz}' | base64 -d | gzip -dc >"$WORK/config.toml"
grep -q 'port = 80' "$WORK/config.toml" || fail "config lacks the listener"
grep -q 'citoroute-e2e/echo' "$WORK/config.toml" || fail "config lacks the echo backend"
if [ -n "${PROXY_BIN:-}" ]; then
  "$PROXY_BIN" check "$WORK/config.toml" >/dev/null || fail "the proxy refuses the config"
  log "ok: the proxy accepts the generated config"
fi
[ "$(jp service gw-citoroute '{.spec.ports[*].port}')" = 80 ] || fail "Service ports"
[ "$(jp role gw-citoroute '{.rules[*].resourceNames[*]}')" = "gw-citoroute gw-citoroute-certs" ] || fail "Role resourceNames"
[ "$(jp deployment gw-citoroute '{.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem}')" = true ] || fail "readOnlyRootFilesystem"
log "ok: proxy objects, owner references, infrastructure labels/annotations, Role scope"
wait_for 10 "an Event on the Gateway says its config was written" bash -c \
  "kubectl --kubeconfig '$KUBECONFIG' get events.events.k8s.io -n $NS --field-selector regarding.name=gw,reason=ConfigWritten -o name | grep -q ."


CLUSTER_IP="$(jp service gw-citoroute '{.spec.clusterIP}')"
wait_for 30 "Gateway Accepted" cond_is gateway gw .status.conditions Accepted True
wait_for 30 "Gateway Programmed" cond_is gateway gw .status.conditions Programmed True
wait_for 30 "Gateway address is the Service ClusterIP $CLUSTER_IP" \
  bash -c "[ \"\$(kubectl --kubeconfig '$KUBECONFIG' get gateway -n $NS gw -o jsonpath='{.status.addresses[0].value}')\" = '$CLUSTER_IP' ]"
[ "$(jp gateway gw '{.status.listeners[0].attachedRoutes}')" = 1 ] || fail "attachedRoutes"
wait_for 30 "HTTPRoute Accepted" cond_is httproute echo '.status.parents[0].conditions' Accepted True
wait_for 30 "HTTPRoute ResolvedRefs" cond_is httproute echo '.status.parents[0].conditions' ResolvedRefs True
[ "$(jp httproute echo '{.status.parents[0].controllerName}')" = citoroute.io/gateway-controller ] || fail "controllerName"

# Another controller's parents entry must survive our writes.
kc patch httproute echo -n "$NS" --subresource=status --type=json -p '[{"op":"add","path":"/status/parents/-","value":{"parentRef":{"name":"other-gw"},"controllerName":"example.com/other","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","observedGeneration":1,"lastTransitionTime":"2026-01-01T00:00:00Z"}]}}]' >/dev/null
TPL_HASH="$(jp deployment gw-citoroute '{.spec.template.metadata.annotations.citoroute\.io/listener-ports-hash}')"
CM_RV0="$(jp configmap gw-citoroute '{.metadata.resourceVersion}')"
LTT="$(jp httproute echo '{.status.parents[0].conditions[?(@.type=="Accepted")].lastTransitionTime}')"
kc patch httproute echo -n "$NS" --type=merge -p '{"spec":{"hostnames":["echo.example","echo2.example"]}}' >/dev/null
wait_for 30 "HTTPRoute observedGeneration 2 written" bash -c \
  "kubectl --kubeconfig '$KUBECONFIG' get httproute -n $NS echo -o jsonpath='{.status.parents[?(@.controllerName==\"citoroute.io/gateway-controller\")].conditions[0].observedGeneration}' | grep -qx 2"
[ "$(jp httproute echo '{.status.parents[?(@.controllerName=="example.com/other")].parentRef.name}')" = other-gw ] ||
  fail "the other controller's parents entry was lost"
[ "$(jp httproute echo '{.status.parents[?(@.controllerName=="citoroute.io/gateway-controller")].conditions[?(@.type=="Accepted")].lastTransitionTime}')" = "$LTT" ] ||
  fail "lastTransitionTime changed although Accepted did not"
log "ok: other controller's entry kept; lastTransitionTime kept"
[ "$(jp configmap gw-citoroute '{.metadata.resourceVersion}')" != "$CM_RV0" ] || fail "the route change did not rewrite the config"
[ "$(jp deployment gw-citoroute '{.spec.template.metadata.annotations.citoroute\.io/listener-ports-hash}')" = "$TPL_HASH" ] ||
  fail "a config-only change touched the pod template"
log "ok: a route change rewrote the ConfigMap and left the pod template alone"

if [ "$WITH_PROXY" = 1 ]; then
  wait_for 90 "proxy Deployment available" bash -c \
    "[ \"\$(kubectl --kubeconfig '$KUBECONFIG' get deployment -n $NS gw-citoroute -o jsonpath='{.status.availableReplicas}')\" = 1 ]"
  kc run client -n "$NS" --image "$TOOLBOX_IMAGE" --image-pull-policy=Never --restart=Never \
    --command -- /bin/sleep 600 >/dev/null
  wait_for 60 "client pod ready" kc wait -n "$NS" --for=condition=Ready pod/client --timeout=2s
  wait_for 30 "traffic through the proxy reaches echo" bash -c \
    "kubectl --kubeconfig '$KUBECONFIG' exec -n $NS client -- wget -q -O - --header 'Host: echo.example' http://$CLUSTER_IP/hello | grep -q '\"namespace\": *\"$NS\"'"
fi

# Restart: no write of any kind.
kill "$CTRL_PID"; wait "$CTRL_PID" 2>/dev/null || true; CTRL_PID=""
grep -q "reconcile loop stopped" "$WORK/controller.log" || fail "no graceful shutdown on SIGTERM"
log "ok: graceful shutdown on SIGTERM"
CM_RV="$(jp configmap gw-citoroute '{.metadata.resourceVersion}')"
GW_RV="$(jp gateway gw '{.metadata.resourceVersion}')"
RT_RV="$(jp httproute echo '{.metadata.resourceVersion}')"
start_controller
sleep 3
[ "$(jp configmap gw-citoroute '{.metadata.resourceVersion}')" = "$CM_RV" ] || fail "restart rewrote the ConfigMap"
[ "$(jp gateway gw '{.metadata.resourceVersion}')" = "$GW_RV" ] || fail "restart rewrote the Gateway status"
[ "$(jp httproute echo '{.metadata.resourceVersion}')" = "$RT_RV" ] || fail "restart rewrote the HTTPRoute status"
WRITES="$(wget -q -O - "http://$METRICS/metrics" | grep '^citoroute_controller_writes_total' | tr '\n' ' ' || true)"
[ -z "$WRITES" ] || fail "restart issued writes: $WRITES"
log "ok: a restart issues no write at all"
# An HTTPS listener: certificate copied into the proxy's Secret, the new port rolls the pods.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=echo.example -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
kc create secret tls -n "$NS" echo-tls --cert "$WORK/tls.crt" --key "$WORK/tls.key" >/dev/null
kc patch gateway gw -n "$NS" --type=json -p '[{"op":"add","path":"/spec/listeners/-","value":{"name":"https","port":443,"protocol":"HTTPS","tls":{"mode":"Terminate","certificateRefs":[{"name":"echo-tls"}]}}}]' >/dev/null
wait_for 30 "listener certificate copied into the proxy Secret" bash -c \
  "kubectl --kubeconfig '$KUBECONFIG' get secret -n $NS gw-citoroute-certs -o jsonpath='{.data.${NS}_echo-tls\.crt}' | base64 -d | grep -q 'BEGIN CERTIFICATE'"
kc get configmap -n "$NS" gw-citoroute -o jsonpath='{.data}' | grep -q PRIVATE && fail "key material in the ConfigMap"
wait_for 30 "Service carries port 443" bash -c \
  "kubectl --kubeconfig '$KUBECONFIG' get service -n $NS gw-citoroute -o jsonpath='{.spec.ports[*].port}' | grep -qx '80 443'"
[ "$(jp deployment gw-citoroute '{.spec.template.metadata.annotations.citoroute\.io/listener-ports-hash}')" != "$TPL_HASH" ] ||
  fail "a new listener port did not roll the pods"
wait_for 30 "Gateway listener https Programmed" cond_is gateway gw '.status.listeners[?(@.name=="https")].conditions' Programmed True
if [ "$WITH_PROXY" = 1 ]; then
  wait_for 90 "rolled proxy available" bash -c \
    "kubectl --kubeconfig '$KUBECONFIG' rollout status -n $NS deployment/gw-citoroute --timeout=2s"
  wait_for 30 "traffic on :80 after the rollout" bash -c \
    "kubectl --kubeconfig '$KUBECONFIG' exec -n $NS client -- wget -q -O - --header 'Host: echo.example' http://$CLUSTER_IP/hello | grep -q '\"namespace\": *\"$NS\"'"
  # From the node (ClusterIPs route there); busybox's TLS client is too old for rustls.
  wait_for 30 "HTTPS on :443 verified with the listener certificate reaches echo" bash -c \
    "curl -sf --max-time 3 --cacert '$WORK/tls.crt' --resolve echo.example:443:$CLUSTER_IP https://echo.example/tls | grep -q '\"namespace\": *\"$NS\"'"
fi
# Propagation of a new route: controller debounce, apply, and the proxy's watch on its own
# ConfigMap through the API (bench/k8s_scale.py measures p50/p99 over many routes).
if [ "$WITH_PROXY" = 1 ]; then
  apply_route late
  serves_within late "new route serves through the proxy" "$(date +%s%N)"
fi

# Certificate rotation: the proxy follows its Secret through the API (a mounted Secret changes
# only on the kubelet's next sync of the pod, a minute or more).
if [ "$WITH_PROXY" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=echo.example -addext subjectAltName=DNS:echo.example \
    -keyout "$WORK/tls2.key" -out "$WORK/tls2.crt" 2>/dev/null
  kc create secret tls -n "$NS" echo-tls --cert "$WORK/tls2.crt" --key "$WORK/tls2.key" \
    --dry-run=client -o yaml | kc replace -f - >/dev/null
  T0=$(date +%s%N)
  wait_for 20 "the rotated certificate serves HTTPS" bash -c \
    "curl -sf --max-time 2 --cacert '$WORK/tls2.crt' --resolve echo.example:443:$CLUSTER_IP https://echo.example/rotated >/dev/null"
  log "certificate rotation to the first handshake with the new certificate: $((($(date +%s%N) - T0) / 1000000)) ms"
fi

# A config split over several ConfigMaps (forced by a tiny part size): the main ConfigMap
# announces its parts, the Role names exactly them, and a new route still propagates.
kill "$CTRL_PID"; wait "$CTRL_PID" 2>/dev/null || true; CTRL_PID=""
start_controller --config-part-bytes 512
T0=$(date +%s%N)
apply_route split
wait_for 30 "a new route's config is split into parts" bash -c \
  "[ \"\$(kubectl --kubeconfig '$KUBECONFIG' get configmap -n $NS gw-citoroute -o jsonpath='{.metadata.annotations.citoroute\\.io/config-parts}')\" -ge 2 ]"
if [ "$WITH_PROXY" = 1 ]; then
  serves_within split "the new route serves from the split config" "$T0"
fi
PARTS="$(jp configmap gw-citoroute '{.metadata.annotations.citoroute\.io/config-parts}')"
: >"$WORK/joined.gz"
for ((i = 0; i < PARTS; i++)); do
  jp configmap "gw-citoroute-part-$i" '{.binaryData.config\.toml\.gz\.part}' | base64 -d >>"$WORK/joined.gz"
done
gzip -dc "$WORK/joined.gz" | grep -q 'split.example' || fail "the parts do not join into the config"
[ -z "$(jp configmap gw-citoroute '{.binaryData}')" ] || fail "the main ConfigMap still holds a whole config"
jp role gw-citoroute '{.rules[*].resourceNames[*]}' | grep -q "gw-citoroute-part-$((PARTS - 1))" || fail "the Role does not name the parts"
log "ok: config in $PARTS parts that join, Role names them"

# The AI gateway: an LLMRoute to an LLMBackend (a fake OpenAI server on the node, which pods
# reach on the bridge address), called through the gateway with the official OpenAI SDK; the
# key comes from the backend's Secret, the model from the LLMBackend.
if [ "$WITH_PROXY" = 1 ] && python3 -c "import openai" 2>/dev/null; then
  NODE_IP=10.244.0.1
  FAKE_PORT=18931
  python3 "$ROOT/controller/tests/llm_e2e.py" serve "$NODE_IP" "$FAKE_PORT" "$WORK/llm.log" &
  FAKE_PID=$!
  kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata: {name: openai-key, namespace: $NS}
stringData: {apiKey: sk-e2e}
---
apiVersion: citoroute.io/v1alpha1
kind: LLMBackend
metadata: {name: fake-openai, namespace: $NS}
spec:
  provider: openai
  model: gpt-e2e
  endpoint: http://$NODE_IP:$FAKE_PORT
  credentialsRef: {name: openai-key}
---
apiVersion: citoroute.io/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: $NS}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  backendRefs: [{name: fake-openai}]
YAML
  wait_for 30 "LLMRoute Accepted" cond_is llmroute chat '.status.conditions' Accepted True
  wait_for 30 "the OpenAI SDK through the gateway, streaming and not, key and model from the LLMBackend" \
    python3 "$ROOT/controller/tests/llm_e2e.py" client "http://$CLUSTER_IP" "$WORK/llm.log"
  kill "$FAKE_PID" 2>/dev/null || true
  wait "$FAKE_PID" 2>/dev/null || true
fi
log "errors: $(wget -q -O - "http://$METRICS/metrics" | grep '^citoroute_controller_errors_total' | tr '\n' ' ')"

# Leader election: two replicas, one reconciles; when it stops, the other takes over.
kill "$CTRL_PID"; wait "$CTRL_PID" 2>/dev/null || true; CTRL_PID=""
reconciles() { wget -q -O - "http://$1/metrics" | awk '/^citoroute_controller_reconciles_total/ {print $2}'; }
LE=(--leader-elect --leader-election-namespace "$NS")
KUBECONFIG="$KUBECONFIG" "$ROOT/target/debug/citoroute-controller" "${LE[@]}" --metrics-address 127.0.0.1:19091 >>"$WORK/le1.log" 2>&1 &
LE1=$!
wait_for 30 "first replica leads" grep -q "became leader" "$WORK/le1.log"
KUBECONFIG="$KUBECONFIG" "$ROOT/target/debug/citoroute-controller" "${LE[@]}" --metrics-address 127.0.0.1:19092 >>"$WORK/le2.log" 2>&1 &
CTRL_PID=$!
sleep 4
[ "$(reconciles 127.0.0.1:19092)" = 0 ] || fail "the follower reconciled"
kill "$LE1"; wait "$LE1" 2>/dev/null || true; LE1=""
wait_for 30 "second replica takes over" grep -q "became leader" "$WORK/le2.log"
wait_for 10 "the new leader reconciles" bash -c "[ \"\$(wget -q -O - http://127.0.0.1:19092/metrics | awk '/^citoroute_controller_reconciles_total/ {print \$2}')\" -ge 1 ]"
# The replicas run with the default part size: the next config is whole, its parts deleted.
kc delete httproute -n "$NS" split >/dev/null
wait_for 30 "the next config is whole and the parts are deleted" bash -c \
  "! kubectl --kubeconfig '$KUBECONFIG' get configmap -n $NS gw-citoroute-part-0"
jp configmap gw-citoroute '{.binaryData.config\.toml\.gz}' | base64 -d | gzip -dc | grep -q 'echo.example' ||
  fail "the whole config is not readable"
if [ "$WITH_PROXY" = 1 ]; then
  wait_for 30 "the removed route is gone from the proxy" bash -c \
    "[ \"\$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H 'Host: split.example' http://$CLUSTER_IP/split)\" = 404 ]"
fi
log "PASS"
