#!/usr/bin/env python3
"""Route propagation and scale on the local cluster (a measurement, not a test).

    sudo conformance/cluster install          # cluster + controller from charts/citoroute
    bench/k8s_scale.py [--routes 50] [--scale 1000]

1. One Gateway, one echo backend, one stable route under steady traffic (wrk, bounded).
2. `--routes` times: apply a new HTTPRoute and time until the first 200 through the gateway
   (polled every 2 ms from this host, which reaches ClusterIPs directly); p50/p99/max.
3. The steady traffic's errors while routes changed (wrk's non-2xx and socket errors).
4. `--scale` HTTPRoutes in total: time until the last one answers, the config size, and the
   RSS of the controller and of the Gateway's proxy.
5. A controller restart: writes issued by the new process (its writes counter).
Everything it creates lives in namespace `citoroute-scale`, deleted at the end.
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUBECTL = [os.path.join(ROOT, "conformance/.cache/bin/kubectl"),
           "--kubeconfig", os.path.join(ROOT, "conformance/.cache/kubeconfig")]
NS = "citoroute-scale"


def kc(*args, stdin=None, check=True):
    r = subprocess.run(KUBECTL + list(args), input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def echo_image():
    mod = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True,
                         cwd=os.path.join(ROOT, "conformance")).stdout.strip()
    base = os.path.join(mod, "sigs.k8s.io/gateway-api/conformance@v1.5.1/base/manifests.yaml")
    m = re.search(r"image:\s*(\S+/echo-basic:\S+)", open(base).read())
    if not m:
        sys.exit("no echo-basic image in the suite's manifests")
    return m.group(1)


def route(i, host):
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: {NS}}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /r{i}}}}}]
    backendRefs: [{{name: echo, port: 8080}}]
"""


def status(addr, host, path):
    try:
        c = http.client.HTTPConnection(addr, 80, timeout=1)
        c.request("GET", path, headers={"Host": host})
        s = c.getresponse().status
        c.close()
        return s
    except OSError:
        return 0


def wait_200(addr, host, path, limit):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if status(addr, host, path) == 200:
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


def rss_mib(binary, pod_prefix):
    """RSS of the processes running `binary` whose pod name starts with pod_prefix."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not os.readlink(f"/proc/{pid}/exe").endswith("/" + binary):
                continue
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            host = next((e[9:].decode() for e in env if e.startswith(b"HOSTNAME=")), "")
            if not host.startswith(pod_prefix):
                continue
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def controller_metric(name):
    ip = kc("-n", "citoroute-system", "get", "pod", "-l", "app.kubernetes.io/component=controller",
            "-o", "jsonpath={.items[0].status.podIP}")
    try:
        c = http.client.HTTPConnection(ip, 9090, timeout=3)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    except OSError:
        return None
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=50)
    ap.add_argument("--scale", type=int, default=1000)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    kc("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=120s")
    kc("apply", "-f", "-", stdin=f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - name: echo
        image: {echo_image()}
        imagePullPolicy: Never
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        ports: [{{containerPort: 3000}}]
        readinessProbe: {{httpGet: {{path: /health, port: 3000}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 8080, targetPort: 3000}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {NS}}}
spec:
  gatewayClassName: citoroute
  listeners: [{{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}]
""" + "---\n" + route("stable", "stable.example"))
    kc("-n", NS, "wait", "gateway/gw", "--for=condition=Programmed", "--timeout=120s")
    kc("-n", NS, "rollout", "status", "deployment/echo", "--timeout=120s")
    kc("-n", NS, "rollout", "status", "deployment/gw-citoroute", "--timeout=120s")
    addr = kc("-n", NS, "get", "gateway", "gw", "-o", "jsonpath={.status.addresses[0].value}")
    if wait_200(addr, "stable.example", "/rstable", 120) is None:
        sys.exit("the stable route never answered")
    print(f"gateway {addr} serves")

    # Steady traffic while routes change: bounded by duration and connections.
    dur = max(20, a.routes)
    wrk = subprocess.Popen(["wrk", "-t1", "-c4", f"-d{dur}s", "-H", "Host: stable.example",
                            f"http://{addr}/rstable"], stdout=subprocess.PIPE, text=True)
    times = []
    for i in range(a.routes):
        host = f"p{i}.example"
        kc("apply", "-f", "-", stdin=route(i, host))
        t = wait_200(addr, host, f"/r{i}", 60)
        if t is None:
            print(f"route {i}: no 200 within 60 s")
        else:
            times.append(t * 1000)
    out, _ = wrk.communicate(timeout=dur + 60)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    reqs = re.search(r"(\d+) requests in", out)
    print("propagation times (ms, in order): " + " ".join(f"{t:.0f}" for t in times))
    print(f"propagation over {len(times)} routes (ms): p50 {pct(times, 50):.0f}  "
          f"p99 {pct(times, 99):.0f}  max {max(times):.0f}  mean {statistics.mean(times):.0f}")
    print(f"steady traffic during the changes: {reqs.group(1) if reqs else '?'} requests, "
          f"non-2xx {non2xx.group(1) if non2xx else 0}, socket errors {sock.group(1) if sock else 'none'}")

    # Scale: the rest of the routes in one apply.
    if a.scale > a.routes:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            for i in range(a.routes, a.scale):
                f.write(route(i, f"p{i}.example") + "---\n")
        t0 = time.monotonic()
        kc("apply", "--server-side", "-f", f.name)
        applied = time.monotonic() - t0
        os.unlink(f.name)
        last = a.scale - 1
        t = wait_200(addr, f"p{last}.example", f"/r{last}", 300)
        # kubectl writes the routes one after the other: most of the time is its own.
        print(f"{a.scale} routes: kubectl apply took {applied:.1f} s; the last route served "
              f"{t:.2f} s after it returned" if t is not None
              else f"{a.scale} routes: the last one did not serve within 300 s")
        time.sleep(5)
        cms = json.loads(kc("-n", NS, "get", "configmap", "-l", "app.kubernetes.io/managed-by=citoroute-controller",
                            "-o", "json"))["items"]
        size = sum(len(v) for cm in cms for v in (cm.get("binaryData") or {}).values())
        print(f"config: {len(cms)} ConfigMap(s), {size / 1024:.0f} KiB of base64 gzip")
        print(f"RSS with {a.scale} routes: controller {rss_mib('citoroute-controller', 'citoroute-controller'):.0f} MiB, "
              f"proxy {rss_mib('citoroute-proxy', 'gw-citoroute'):.0f} MiB")

    # A controller restart issues no writes when nothing changed.
    kc("-n", "citoroute-system", "rollout", "restart", "deployment/citoroute-controller")
    kc("-n", "citoroute-system", "rollout", "status", "deployment/citoroute-controller", "--timeout=120s")
    time.sleep(15)
    w = controller_metric("citoroute_controller_writes_total")
    print(f"writes by the restarted controller in its first 15 s: {w if w is not None else 'unknown'}")

    if not a.keep:
        kc("delete", "namespace", NS, "--wait=false")


if __name__ == "__main__":
    main()
