# shellcheck shell=bash
# Shared by conformance/cluster and conformance/run. Sourced, not executed.

# ---------------------------------------------------------------------------------------
# Versions and addresses (one place).
K8S_VERSION=v1.34.4            # also pinned in build/k8s/go.mod
COREDNS_VERSION=v1.12.2        # also pinned in build/coredns/go.mod; the suite's infra DNS uses this tag
GATEWAY_API_VERSION=v1.5.1     # CRDs, echo-basic and the suite
NODE_NAME=citoroute-node
BRIDGE=citobr0
NODE_IP=10.244.0.1             # the bridge's address: node IP, API server address, pod gateway
POD_SUBNET=10.244.0.0/24       # this node's pod range (inside CLUSTER_CIDR)
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
API_PORT=6443
ETCD_CLIENT=127.0.0.1:23790
ETCD_PEER=127.0.0.1:23800
# Local-only image names for images nobody else references.
PAUSE_IMAGE=localhost/citoroute/pause:3.10
COREDNS_IMAGE=localhost/citoroute/coredns:$COREDNS_VERSION
TOOLBOX_IMAGE=localhost/citoroute/toolbox:1

# ---------------------------------------------------------------------------------------
# Directories. Build outputs are cached in the repo (gitignored); runtime state lives in
# system directories of its own so that no mount ever appears inside the work tree.
CONF_DIR="${HERE:?}"
CACHE="$CONF_DIR/.cache"
BIN="$CACHE/bin"
IMAGES="$CACHE/images"
PKI="$CACHE/pki"
LOGS="$CACHE/logs"
PIDS="$CACHE/pids"
CFG="$CACHE/config"
STAMPS="$CACHE/stamps"
STATE="${CITOROUTE_CLUSTER_STATE:-/var/lib/citoroute-cluster}"
RUNDIR="${CITOROUTE_CLUSTER_RUN:-/run/citoroute-cluster}"
CONTAINERD_SOCK="$RUNDIR/containerd/containerd.sock"
KUBECONFIG_ADMIN="$CACHE/kubeconfig"
export KUBECONFIG="$KUBECONFIG_ADMIN"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=30s "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll once a second, bounded.
wait_for() {
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "timed out after ${limit}s waiting for $what"
  return 1
}

# write_if_changed FILE < content: leave FILE (and its mtime) alone when the content is the
# same; kube-proxy exits when its configuration file changes under it.
write_if_changed() {
  local tmp
  tmp="$(mktemp "$1.XXXXXX")"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts containerd, kubelet and changes iptables)"; }

preflight() {
  need_root
  local missing=() c
  for c in go openssl containerd containerd-shim-runc-v2 ctr runc iptables ip6tables conntrack ip busybox curl; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge (containernetworking-plugins)")
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]}. Install: apt-get install -y --no-install-recommends containerd runc containernetworking-plugins iptables conntrack busybox-static curl openssl"
  [ -e /sys/fs/cgroup/memory ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup hierarchy found under /sys/fs/cgroup"
}

# ---------------------------------------------------------------------------------------
# Building (cached). A stamp records the hash of each output's inputs.

go_mod_dir() { (cd "$CONF_DIR/build/tools" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'); }

# stale NAME FILE...: true when the hash of FILEs differs from the stamp of NAME.
stale() {
  local name=$1
  shift
  local want
  want="$(cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  [ "$(cat "$STAMPS/$name" 2>/dev/null)" != "$want" ]
}
stamp() {
  local name=$1
  shift
  cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1 >"$STAMPS/$name"
}

gobuild() { CGO_ENABLED=0 nice -n 19 go build -trimpath "$@"; }

build_binaries() {
  mkdir -p "$BIN" "$STAMPS" "$LOGS" "$CACHE/src"
  local t0 ldflags p
  if stale k8s "$CONF_DIR/build/k8s/go.mod" "$CONF_DIR/build/k8s/go.sum" "$CONF_DIR/build/k8s/etcd/main.go" || [ ! -x "$BIN/kubelet" ]; then
    t0=$SECONDS
    log "building etcd and Kubernetes $K8S_VERSION components from their Go modules (cold: tens of minutes on 2 cores)"
    ldflags="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
      ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    (cd "$CONF_DIR/build/k8s" && gobuild -ldflags "$ldflags" -o "$BIN/" tool ./etcd) >"$LOGS/build-k8s.log" 2>&1 ||
      die "Kubernetes build failed, see $LOGS/build-k8s.log"
    stamp k8s "$CONF_DIR/build/k8s/go.mod" "$CONF_DIR/build/k8s/go.sum" "$CONF_DIR/build/k8s/etcd/main.go"
    log "Kubernetes components built in $((SECONDS - t0))s"
  fi
  if stale crireset "$CONF_DIR/build/k8s/go.sum" "$CONF_DIR/build/k8s/crireset/main.go" || [ ! -x "$BIN/crireset" ]; then
    (cd "$CONF_DIR/build/k8s" && gobuild -ldflags "-s -w" -o "$BIN/crireset" ./crireset) >"$LOGS/build-crireset.log" 2>&1 ||
      die "crireset build failed, see $LOGS/build-crireset.log"
    stamp crireset "$CONF_DIR/build/k8s/go.sum" "$CONF_DIR/build/k8s/crireset/main.go"
  fi
  if stale coredns "$CONF_DIR/build/coredns/go.mod" "$CONF_DIR/build/coredns/go.sum" "$CONF_DIR/build/coredns/main.go" || [ ! -x "$BIN/coredns" ]; then
    t0=$SECONDS
    log "building CoreDNS $COREDNS_VERSION"
    (cd "$CONF_DIR/build/coredns" && gobuild -ldflags "-s -w" -o "$BIN/coredns" .) >"$LOGS/build-coredns.log" 2>&1 ||
      die "CoreDNS build failed, see $LOGS/build-coredns.log"
    stamp coredns "$CONF_DIR/build/coredns/go.mod" "$CONF_DIR/build/coredns/go.sum" "$CONF_DIR/build/coredns/main.go"
    log "CoreDNS built in $((SECONDS - t0))s"
  fi
  if stale tools "$CONF_DIR"/build/tools/go.mod "$CONF_DIR"/build/tools/*/main.go || [ ! -x "$BIN/mkimage" ] || [ ! -x "$BIN/pause" ]; then
    (cd "$CONF_DIR/build/tools" && gobuild -ldflags "-s -w" -o "$BIN/" ./mkimage ./pause) >"$LOGS/build-tools.log" 2>&1 ||
      die "tools build failed, see $LOGS/build-tools.log"
    stamp tools "$CONF_DIR"/build/tools/go.mod "$CONF_DIR"/build/tools/*/main.go
  fi
  if echo_advanced_enabled; then build_echo_advanced; fi
  if [ ! -x "$BIN/echo-basic" ]; then
    t0=$SECONDS
    log "building echo-basic from sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION"
    local src
    src="$(go_mod_dir "sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION")"
    [ -d "$src/echo-basic" ] || die "gateway-api conformance module not found"
    rm -rf "$CACHE/src/echo-basic"
    cp -r "$src/echo-basic" "$CACHE/src/echo-basic"
    chmod -R u+w "$CACHE/src/echo-basic"
    # The module ships its go.mod/go.sum as dotfiles so that they do not split the parent module.
    mv "$CACHE/src/echo-basic/.go.mod" "$CACHE/src/echo-basic/go.mod"
    mv "$CACHE/src/echo-basic/.go.sum" "$CACHE/src/echo-basic/go.sum"
    (cd "$CACHE/src/echo-basic" && gobuild -ldflags "-s -w" -o "$BIN/echo-basic" .) >"$LOGS/build-echo-basic.log" 2>&1 ||
      die "echo-basic build failed, see $LOGS/build-echo-basic.log"
    log "echo-basic built in $((SECONDS - t0))s"
  fi
}

# echo-advanced (Istio's echo server and client) is needed only by the suite's MESH-HTTP
# tests; CITOROUTE_ECHO_ADVANCED=0 skips building and importing it.
echo_advanced_enabled() { [ "${CITOROUTE_ECHO_ADVANCED:-1}" != 0 ]; }

# build_echo_advanced: Istio's echo server and client from the module pinned in
# build/echo-advanced, plus the files the image needs from that module (the test certificate
# the mesh manifests name as /cert.crt and /cert.key).
build_echo_advanced() {
  local dir="$CONF_DIR/build/echo-advanced" out="$BIN/echo-advanced" src="$CACHE/src/echo-advanced" istio t0
  if ! stale echo-advanced "$dir/go.mod" "$dir/go.sum" && [ -x "$out/server" ] && [ -x "$out/client" ] &&
    [ -s "$src/cert.crt" ]; then
    return 0
  fi
  t0=$SECONDS
  log "building echo-advanced (Istio's echo server and client; cold: about 2 minutes on 2 cores)"
  mkdir -p "$out" "$src"
  (cd "$dir" && gobuild -ldflags "-s -w" -o "$out/" tool) >"$LOGS/build-echo-advanced.log" 2>&1 ||
    die "echo-advanced build failed, see $LOGS/build-echo-advanced.log (it needs Go 1.26 or newer; CITOROUTE_ECHO_ADVANCED=0 skips it)"
  istio="$(cd "$dir" && go list -m -f '{{.Dir}}' istio.io/istio)"
  [ -s "$istio/tests/testdata/certs/dns/cert-chain.pem" ] || die "Istio's test certificate not found under $istio"
  cp "$istio/tests/testdata/certs/dns/cert-chain.pem" "$src/cert.crt"
  cp "$istio/tests/testdata/certs/dns/key.pem" "$src/cert.key"
  stamp echo-advanced "$dir/go.mod" "$dir/go.sum"
  log "echo-advanced built in $((SECONDS - t0))s"
}

# suite_image NAME: the exact image reference the suite's manifests use for NAME.
suite_image() {
  local src
  src="$(go_mod_dir "sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION")"
  grep -rhoE "image: *[^ ]*/$1:[^ \"]+" "$src/base" "$src/mesh" "$src/tests" 2>/dev/null | head -1 | sed 's/image: *//'
}

build_images() {
  mkdir -p "$IMAGES"
  local echo_image coredns_suite_image links="" a
  echo_image="$(suite_image echo-basic)"
  coredns_suite_image="$(suite_image coredns)"
  [ -n "$echo_image" ] && [ -n "$coredns_suite_image" ] || die "could not read image names from the suite's manifests"
  if [ ! -s "$IMAGES/pause.tar" ] || [ "$BIN/pause" -nt "$IMAGES/pause.tar" ]; then
    "$BIN/mkimage" -o "$IMAGES/pause.tar" -name "$PAUSE_IMAGE" -entrypoint '["/pause"]' -add "$BIN/pause:pause" >/dev/null
  fi
  if [ ! -s "$IMAGES/coredns.tar" ] || [ "$BIN/coredns" -nt "$IMAGES/coredns.tar" ]; then
    "$BIN/mkimage" -o "$IMAGES/coredns.tar" -name "$COREDNS_IMAGE" -name "$coredns_suite_image" \
      -entrypoint '["/coredns"]' -add "$BIN/coredns:coredns" >/dev/null
  fi
  if [ ! -s "$IMAGES/echo-basic.tar" ] || [ "$BIN/echo-basic" -nt "$IMAGES/echo-basic.tar" ]; then
    "$BIN/mkimage" -o "$IMAGES/echo-basic.tar" -name "$echo_image" -user 65532:65532 \
      -entrypoint '["/echo-basic"]' -add "$BIN/echo-basic:echo-basic" >/dev/null
  fi
  if echo_advanced_enabled; then image_echo_advanced; fi
  if [ ! -s "$IMAGES/toolbox.tar" ] || [ "$BIN/mkimage" -nt "$IMAGES/toolbox.tar" ]; then
    for a in sh ls cat echo wget nslookup sleep ps nc id hostname ip env grep tar date head tail; do
      links+=" -link bin/$a:busybox"
    done
    # shellcheck disable=SC2086
    "$BIN/mkimage" -o "$IMAGES/toolbox.tar" -name "$TOOLBOX_IMAGE" -entrypoint '["/bin/sh"]' \
      -add "$(command -v busybox):bin/busybox" $links >/dev/null
  fi
}

# image_echo_advanced: laid out like Istio's app image, which the suite's image is: server as
# entrypoint, both binaries in /usr/local/bin (the suite execs `client` by name), the
# certificate at the root, uid 1338.
image_echo_advanced() {
  local out="$IMAGES/echo-advanced.tar" bin="$BIN/echo-advanced" src="$CACHE/src/echo-advanced" name
  if [ -s "$out" ] && [ "$out" -nt "$bin/server" ] && [ "$out" -nt "$bin/client" ] && [ "$out" -nt "$BIN/mkimage" ]; then
    return 0
  fi
  name="$(suite_image echo-advanced)"
  [ -n "$name" ] || die "could not read the echo-advanced image name from the suite's mesh manifests"
  printf 'root:x:0:0:root:/root:/sbin/nologin\napplication:x:1338:1338::/tmp:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$src/passwd"
  printf 'root:x:0:\napplication:x:1338:\nnobody:x:65534:\n' >"$src/group"
  "$BIN/mkimage" -o "$out" -name "$name" -user 1338:1338 -env HOME=/tmp \
    -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    -entrypoint '["/usr/local/bin/server"]' \
    -add "$bin/server:usr/local/bin/server" -add "$bin/client:usr/local/bin/client" \
    -add "$src/cert.crt:cert.crt:0644" -add "$src/cert.key:cert.key:0644" \
    -add "$src/passwd:etc/passwd:0644" -add "$src/group:etc/group:0644" \
    -add "/etc/ssl/certs/ca-certificates.crt:etc/ssl/certs/ca-certificates.crt:0644" >/dev/null
}

build_all() {
  preflight
  build_binaries
  build_images
}

# image_from_binary NAME:TAG BINARY [FILE...]: a one-binary image (e.g. our Rust binaries),
# with the shared libraries a dynamically linked binary needs and the CA bundle; imported
# into the node when the cluster runs. The binary is the entrypoint, at /<basename>.
image_from_binary() {
  local ref=$1 bin=$2 out lib adds=() f
  shift 2
  [ -x "$bin" ] || die "not an executable: $bin"
  mkdir -p "$IMAGES"
  adds+=(-add "$bin:$(basename "$bin")")
  for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | sort -u); do
    adds+=(-add "$(readlink -f "$lib"):${lib#/}:0755")
  done
  [ -s /etc/ssl/certs/ca-certificates.crt ] && adds+=(-add "/etc/ssl/certs/ca-certificates.crt:etc/ssl/certs/ca-certificates.crt:0644")
  for f in "$@"; do adds+=(-add "$f:$(basename "$f"):0644"); done
  out="$IMAGES/$(echo "$ref" | tr '/:' '__').tar"
  "$BIN/mkimage" -o "$out" -name "$ref" -user 65532:65532 -entrypoint "[\"/$(basename "$bin")\"]" "${adds[@]}" >/dev/null
  if pid_alive containerd; then load_images "$out"; fi
  echo "$out"
}

# ---------------------------------------------------------------------------------------
# PKI (openssl): one CA, serving and client certificates, service-account keys.

pki_cert() { # name subject ext
  local name=$1 subj=$2 ext=$3
  [ -s "$PKI/$name.crt" ] && return 0
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  printf '%b' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

kubeconfig_file() { # path user cert
  local path=$1 user=$2 cert=$3
  write_if_changed "$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: citoroute-local
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: citoroute-local
  context:
    cluster: citoroute-local
    user: $user
current-context: citoroute-local
EOF
  chmod 600 "$path"
}

make_pki() {
  mkdir -p "$PKI" "$CFG"
  chmod 700 "$PKI"
  if [ ! -s "$PKI/ca.crt" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -sha256 \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=citoroute-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  fi
  local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  pki_cert apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
  pki_cert kubelet-serving "/CN=$NODE_NAME" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME\n"
  pki_cert admin "/O=system:masters/CN=citoroute-admin" "$client"
  pki_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  pki_cert controller-manager "/CN=system:kube-controller-manager" "$client"
  pki_cert scheduler "/CN=system:kube-scheduler" "$client"
  pki_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  pki_cert kube-proxy "/CN=system:kube-proxy" "$client"
  if [ ! -s "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  kubeconfig_file "$KUBECONFIG_ADMIN" citoroute-admin admin
  kubeconfig_file "$CFG/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  kubeconfig_file "$CFG/scheduler.kubeconfig" system:kube-scheduler scheduler
  kubeconfig_file "$CFG/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet
  kubeconfig_file "$CFG/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
}

# ---------------------------------------------------------------------------------------
# Processes: started in their own session, tracked by pid file, stopped by pid only.

pid_alive() { # name
  local pid
  pid="$(cat "$PIDS/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(cat "$PIDS/$1.cmd" 2>/dev/null)"
}

start_proc() { # name binary args...
  local name=$1
  shift
  mkdir -p "$PIDS" "$LOGS"
  if pid_alive "$name"; then return 0; fi
  printf '%s' "$1" >"$PIDS/$name.cmd"
  # 9>&-: the up/down lock must not be inherited by long-lived processes.
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
}

stop_proc() { # name [seconds]
  local name=$1 limit=${2:-20} pid i
  pid="$(cat "$PIDS/$name.pid" 2>/dev/null)" || return 0
  if pid_alive "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDS/$name.pid" "$PIDS/$name.cmd"
}

# ---------------------------------------------------------------------------------------
# Node networking: our bridge, routes that keep both CIDRs on it, and an egress guard.

# Kernel settings that we, the kubelet or kube-proxy change; saved once, restored by down.
SYSCTLS=(net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)

save_sysctls() {
  [ -s "$CACHE/sysctl.saved" ] && return 0
  local k
  for k in "${SYSCTLS[@]}"; do
    echo "$k=$(sysctl -n "$k" 2>/dev/null)"
  done >"$CACHE/sysctl.saved"
}

restore_sysctls() {
  [ -s "$CACHE/sysctl.saved" ] || return 0
  local line
  while IFS= read -r line; do
    [ -n "${line#*=}" ] && sysctl -qw "$line" 2>/dev/null || true
  done <"$CACHE/sysctl.saved"
  rm -f "$CACHE/sysctl.saved"
}

setup_network() {
  save_sysctls
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  ip route replace "$CLUSTER_CIDR" dev "$BRIDGE" src "$NODE_IP"
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1" 2>/dev/null || true
  # Egress guard: nothing that enters from the pod bridge may leave through another interface,
  # whatever kube-proxy or the CNI plugins add later (mangle runs before their filter rules).
  local t
  for t in iptables ip6tables; do
    $t -w -t mangle -C FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment citoroute-egress-guard -j DROP 2>/dev/null ||
      $t -w -t mangle -I FORWARD 1 -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment citoroute-egress-guard -j DROP
  done
}

teardown_network() {
  local t
  for t in iptables ip6tables; do
    while $t -w -t mangle -D FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment citoroute-egress-guard -j DROP 2>/dev/null; do :; done
  done
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip route del "$CLUSTER_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------
# Components.

start_etcd() {
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  start_proc etcd "$BIN/etcd" --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
    --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
    --initial-cluster "$NODE_NAME=http://$ETCD_PEER" --listen-metrics-urls "http://127.0.0.1:23810" \
    --quota-backend-bytes 2147483648 --snapshot-count 10000 --log-level warn
  wait_for 60 etcd curl -fsS "http://$ETCD_CLIENT/health" || die "etcd did not become healthy, see $LOGS/etcd.log"
}

start_apiserver() {
  start_proc kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://$ETCD_CLIENT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl 1h --v=1
  wait_for 120 apiserver curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$NODE_IP:$API_PORT/readyz" || die "kube-apiserver not ready, see $LOGS/kube-apiserver.log"
}

start_controllers() {
  start_proc kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$CFG/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CFG/controller-manager.kubeconfig" --authorization-kubeconfig "$CFG/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" --controllers '*,-cloud-node-lifecycle' --v=1
  start_proc kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$CFG/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CFG/scheduler.kubeconfig" --authorization-kubeconfig "$CFG/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --v=1
}

write_containerd_config() {
  mkdir -p "$CFG/certs.d" "$STATE/cni/net.d" "$STATE/cni/networks"
  write_if_changed "$CFG/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUNDIR/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUNDIR/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # This VM lacks CAP_SYS_RESOURCE: negative oom_score_adj values cannot be written.
    restrict_oom_score_adj = true
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$STATE/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".registry]
      # Every registry host resolves to a closed loopback port: a missing image fails fast
      # instead of being pulled.
      config_path = "$CFG/certs.d"
EOF
  write_if_changed "$STATE/cni/net.d/10-citoroute.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "citoroute",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/networks"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# Point every registry host that an image we use names (plus the default one) at a closed port.
block_registries() {
  local h
  for h in _default docker.io "$@"; do
    mkdir -p "$CFG/certs.d/$h"
    printf 'server = "http://127.0.0.1:9"\n\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n' >"$CFG/certs.d/$h/hosts.toml"
  done
}

ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

start_containerd() {
  write_containerd_config
  mkdir -p "$RUNDIR/containerd" "$STATE/containerd"
  start_proc containerd containerd --config "$CFG/containerd.toml"
  wait_for 60 containerd ctr --address "$CONTAINERD_SOCK" version || die "containerd did not start, see $LOGS/containerd.log"
}

# load_images TAR...: import OCI archives (only when their content changed since the last import).
load_images() {
  mkdir -p "$RUNDIR/imported"
  local tar sum key
  for tar in "$@"; do
    [ -s "$tar" ] || die "no such image archive: $tar"
    sum="$(sha256sum "$tar" | cut -d' ' -f1)"
    key="$RUNDIR/imported/$(basename "$tar")"
    if [ "$(cat "$key" 2>/dev/null)" != "$sum" ]; then
      ctr_ images import --snapshotter overlayfs "$tar" >>"$LOGS/images.log" 2>&1 || die "import of $tar failed, see $LOGS/images.log"
      echo "$sum" >"$key"
    fi
  done
}

registry_hosts_of_images() {
  local tar
  for tar in "$IMAGES"/*.tar; do
    tar -xOf "$tar" index.json | grep -o '"io.containerd.image.name":"[^"]*"' | cut -d'"' -f4
  done | sed -n 's#^\([^/]*\.[^/]*\)/.*#\1#p' | sort -u
}

start_kubelet() {
  mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
  echo "nameserver $NODE_IP" | write_if_changed "$CFG/resolv.conf"
  write_if_changed "$CFG/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
resolvConf: $CFG/resolv.conf
podLogsDirectory: $STATE/pod-logs
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
# Images cannot be pulled here: never garbage-collect them, never evict for disk pressure.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
maxPods: 200
serializeImagePulls: false
protectKernelDefaults: false
makeIPTablesUtilChains: true
EOF
  start_proc kubelet "$BIN/kubelet" --config "$CFG/kubelet.yaml" --kubeconfig "$CFG/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$STATE/kubelet" --v=1
}

start_kube_proxy() {
  write_if_changed "$CFG/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CFG/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start_proc kube-proxy "$BIN/kube-proxy" --config "$CFG/kube-proxy.yaml" --v=1
}

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

install_addons() {
  local crd_dir f
  sed -e "s#@DNS_SERVICE_IP@#$DNS_SERVICE_IP#g" -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#g" \
    "$CONF_DIR/manifests/coredns.yaml" | kc apply -f - >/dev/null
  crd_dir="$(go_mod_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")/config/crd/experimental"
  [ -d "$crd_dir" ] || die "Gateway API CRDs not found in the module download"
  for f in "$crd_dir"/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    kc apply --server-side --force-conflicts --field-manager citoroute-cluster -f "$f" >/dev/null ||
      die "applying $(basename "$f") failed"
  done
  kc wait --for condition=Established --timeout 60s crd -l gateway.networking.k8s.io/policy >/dev/null 2>&1 || true
  kc wait --for condition=Established --timeout 60s crd gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io >/dev/null
}

# One up/down at a time (bounded wait); released when the function returns.
lock_cluster() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  if ! flock -n 9; then
    log "waiting for another cluster up/down to finish (lock $CACHE/.lock)"
    flock -w 1800 9 || die "another cluster up/down holds $CACHE/.lock"
  fi
}
unlock_cluster() { exec 9>&-; }

cluster_up() {
  local t0=$SECONDS
  preflight
  lock_cluster
  build_binaries
  build_images
  make_pki
  mkdir -p "$STATE" "$RUNDIR"
  setup_network
  start_etcd
  start_apiserver
  start_controllers
  local hosts
  mapfile -t hosts < <(registry_hosts_of_images)
  block_registries "${hosts[@]}"
  start_containerd
  load_images "$IMAGES"/pause.tar "$IMAGES"/coredns.tar "$IMAGES"/echo-basic.tar "$IMAGES"/toolbox.tar
  [ -s "$IMAGES/conformance.tar" ] && load_images "$IMAGES/conformance.tar"
  if echo_advanced_enabled; then load_images "$IMAGES/echo-advanced.tar"; fi
  start_kubelet
  start_kube_proxy
  wait_for 120 node node_ready || die "node $NODE_NAME not Ready, see $LOGS/kubelet.log"
  install_addons
  kc -n kube-system rollout status deploy/coredns --timeout 120s >/dev/null ||
    die "CoreDNS not ready, see: $0 kubectl -n kube-system describe pod -l k8s-app=kube-dns"
  unlock_cluster
  log "cluster up in $((SECONDS - t0))s"
  echo "$KUBECONFIG_ADMIN"
}

# Sum of the resident memory of everything the cluster runs, in MiB.
cluster_rss_mib() {
  local pids=() f p kb=0
  for f in "$PIDS"/*.pid; do [ -s "$f" ] && pids+=("$(cat "$f")"); done
  for f in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' 2>/dev/null <"$f" | grep -q -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK"; then
      p="${f#/proc/}"
      pids+=("${p%/cmdline}")
    fi
  done
  for f in /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$f" ] && mapfile -t -O "${#pids[@]}" pids < <(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null)
  done
  for p in $(printf '%s\n' "${pids[@]}" | sort -u); do
    kb=$((kb + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $((kb / 1024))
}

cluster_status() {
  local c rc=0
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if pid_alive "$c"; then
      printf '%-24s running (pid %s)\n' "$c" "$(cat "$PIDS/$c.pid")"
    else
      printf '%-24s stopped\n' "$c"
      rc=1
    fi
  done
  if [ $rc = 0 ]; then
    echo "memory (sum of RSS: components, shims, containers): $(cluster_rss_mib) MiB"
    kc get nodes -o wide 2>&1 | sed 's/^/  /' || true
    kc get pods -A 2>&1 | sed 's/^/  /' || true
  fi
  echo "$KUBECONFIG_ADMIN"
  return $rc
}

# Remove every pod sandbox through CRI so that CNI releases addresses, netns and iptables rules.
remove_sandboxes() {
  if [ -S "$CONTAINERD_SOCK" ] && pid_alive containerd && [ -x "$BIN/crireset" ]; then
    timeout 120 "$BIN/crireset" -endpoint "$CONTAINERD_SOCK" >>"$LOGS/crireset.log" 2>&1 ||
      log "crireset reported errors, see $LOGS/crireset.log"
  fi
}

# Shims outlive containerd; stop those that belong to our containerd (matched by its socket path).
stop_shims() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"
    pid="${pid%/cmdline}"
    if tr '\0' ' ' 2>/dev/null <"$f" | grep -q -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK\( \|$\)"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

unmount_under() { # dir: unmount everything below it, deepest first
  local m
  [ -d "$1" ] || return 0
  for m in $(awk -v d="$1" '$2 ~ "^"d"(/|$)" {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

remove_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
    [ -d "$h" ] || continue
    find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

cluster_down() {
  need_root
  lock_cluster
  local c
  stop_proc kube-proxy
  stop_proc kubelet
  remove_sandboxes
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >>"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_proc "$c"; done
  stop_proc containerd
  stop_shims
  unmount_under "$STATE"
  unmount_under "$RUNDIR"
  remove_cgroups
  teardown_network
  restore_sysctls
  # Chains that the kubelet creates for itself (kube-proxy --cleanup removed its own).
  local t tbl i
  for t in iptables ip6tables; do
    for c in INPUT OUTPUT; do
      for ((i = 0; i < 10; i++)); do $t -w -t filter -D "$c" -j KUBE-FIREWALL 2>/dev/null || break; done
    done
    for tbl in filter nat mangle; do
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        $t -w -t "$tbl" -F "$c" 2>/dev/null && $t -w -t "$tbl" -X "$c" 2>/dev/null || true
      done
    done
  done
  rm -rf "$STATE" "$RUNDIR" "$PIDS"
  # libcni's result cache and containerd's netns directory, if they are empty now.
  rmdir /var/lib/cni/results /var/lib/cni /run/netns 2>/dev/null || true
  unlock_cluster
  log "cluster down"
  echo "$KUBECONFIG_ADMIN"
}

# ---------------------------------------------------------------------------------------
# Smoke test of the bare cluster.

cluster_smoke() {
  local t0=$SECONDS ns=citoroute-smoke ip out pod newpod
  fail() {
    echo "SMOKE FAILED: $*" >&2
    kc -n "$ns" get pods -o wide >&2 2>&1 || true
    exit 1
  }
  kc delete namespace "$ns" --wait=true --timeout 60s >/dev/null 2>&1 || true
  sed -e "s#@ECHO_IMAGE@#$(suite_image echo-basic)#g" -e "s#@TOOLBOX_IMAGE@#$TOOLBOX_IMAGE#g" \
    "$CONF_DIR/manifests/smoke.yaml" | kc apply -f - >/dev/null || fail "could not apply manifests/smoke.yaml"
  kc -n "$ns" rollout status deploy/echo --timeout 120s >/dev/null || fail "echo-basic Deployment did not become Ready in 120s"
  echo "ok  echo-basic Deployment Ready"
  kc -n "$ns" wait --for condition=Ready pod/client --timeout 60s >/dev/null || fail "client pod not Ready in 60s"
  ip="$(kc -n "$ns" get svc echo -o jsonpath='{.spec.clusterIP}')"
  out="$(kc -n "$ns" exec client -- wget -q -O - "http://$ip/smoke" 2>&1)" || fail "ClusterIP $ip did not answer from the client pod: $out"
  echo "$out" | grep -q '"namespace": *"citoroute-smoke"' || fail "unexpected answer from ClusterIP $ip: $out"
  echo "ok  ClusterIP $ip answers from another pod (kubectl exec works)"
  out="$(kc -n "$ns" exec client -- nslookup echo.citoroute-smoke.svc.cluster.local "$DNS_SERVICE_IP" 2>&1)" || fail "DNS lookup failed: $out"
  echo "$out" | grep -q "$ip" || fail "CoreDNS answered without the ClusterIP $ip: $out"
  out="$(kc -n "$ns" exec client -- wget -q -O - http://echo/by-name 2>&1)" || fail "service name did not resolve through the pod's resolv.conf: $out"
  echo "ok  CoreDNS resolves echo.citoroute-smoke.svc.cluster.local to $ip"
  pod="$(kc -n "$ns" get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')"
  kc -n "$ns" logs "$pod" 2>&1 | grep -q "/smoke\|/by-name\|Echoing back" || fail "kubectl logs $pod did not show the request"
  echo "ok  kubectl logs shows the echoed requests"
  kc -n "$ns" delete pod "$pod" --wait=true --timeout 60s >/dev/null || fail "could not delete pod $pod"
  kc -n "$ns" rollout status deploy/echo --timeout 120s >/dev/null || fail "replacement echo pod not Ready in 120s"
  newpod="$(kc -n "$ns" get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')"
  [ -n "$newpod" ] && [ "$newpod" != "$pod" ] || fail "no replacement pod after deleting $pod"
  # kube-proxy programs the new endpoint asynchronously (EndpointSlice, then its sync): retry
  # for a bounded time before calling it a failure.
  ok=""
  for _ in $(seq 1 40); do
    if out="$(kc -n "$ns" exec client -- wget -q -O - "http://$ip/after-restart" 2>&1)"; then
      ok=1
      break
    fi
    sleep 0.5
  done
  [ -n "$ok" ] || fail "ClusterIP did not answer within 20s after the pod restart: $out"
  echo "ok  deleted $pod, replacement $newpod Ready and serving"
  kc delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  echo "smoke test passed in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------------------------------
# CitoRoute on the cluster: our binaries as images, and the Helm chart.

HELM_VERSION=v3.22.0

# helm_bin: a helm binary (the one on PATH, else built once from its Go module).
helm_bin() {
  local h
  h="$(command -v helm || true)"
  if [ -z "$h" ]; then
    h="$BIN/helm"
    if [ ! -x "$h" ]; then
      log "building helm $HELM_VERSION from its Go module"
      mkdir -p "$BIN" "$LOGS"
      GOBIN="$BIN" CGO_ENABLED=0 nice -n 19 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
        >"$LOGS/build-helm.log" 2>&1 || die "helm build failed, see $LOGS/build-helm.log"
    fi
  fi
  echo "$h"
}

# install_citoroute: builds citoroute-controller and citoroute-proxy (cargo profile
# $CARGO_PROFILE, default dev), packages each as a one-binary image, imports them and installs
# or upgrades charts/citoroute into citoroute-system. The binaries' hashes become pod
# annotations, so a rebuilt binary rolls the controller although the image tag stays `dev`.
install_citoroute() {
  local root profile outdir target ctrl_bin proxy_bin helm
  root="$(cd "$CONF_DIR/.." && pwd)"
  profile="${CARGO_PROFILE:-dev}"
  outdir=debug
  [ "$profile" = dev ] || outdir="$profile"
  log "building citoroute-controller and citoroute-proxy (profile $profile)"
  (cd "$root" && nice -n 10 cargo build -q --locked --profile "$profile" -p citoroute-controller -p citoroute-proxy) ||
    die "cargo build failed"
  target="${CARGO_TARGET_DIR:-$root/target}"
  ctrl_bin="$target/$outdir/citoroute-controller"
  proxy_bin="$target/$outdir/citoroute-proxy"
  image_from_binary localhost/citoroute/controller:dev "$ctrl_bin" >/dev/null
  image_from_binary localhost/citoroute/proxy:dev "$proxy_bin" >/dev/null
  helm="$(helm_bin)"
  # A GatewayClass `citoroute` made by hand (e.g. by the controller's end-to-end test) would
  # block the chart from owning it.
  if [ "$(kc get gatewayclass citoroute -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}' 2>/dev/null)" = "" ]; then
    kc delete gatewayclass citoroute --ignore-not-found >/dev/null
  fi
  # Helm installs a chart's crds/ only once and never upgrades them: apply ours every time.
  kc apply --server-side --force-conflicts --field-manager=helm -f "$root/charts/citoroute/crds/" >/dev/null ||
    die "applying CitoRoute's CRDs failed"
  log "installing CitoRoute from charts/citoroute"
  "$helm" --kubeconfig "$KUBECONFIG_ADMIN" upgrade --install citoroute "$root/charts/citoroute" \
    --namespace citoroute-system --create-namespace --wait --timeout 5m \
    --set-string "controller.podAnnotations.citoroute\.io/controller-sha=$(sha256sum "$ctrl_bin" | cut -c1-16)" \
    --set-string "controller.podAnnotations.citoroute\.io/proxy-sha=$(sha256sum "$proxy_bin" | cut -c1-16)" >/dev/null ||
    die "helm install failed"
}
