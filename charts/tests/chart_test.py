#!/usr/bin/env python3
"""Lints and renders charts/citoroute and checks what the rendered objects promise.

    charts/tests/chart_test.py [--helm PATH] [--kubeconfig FILE]

With --kubeconfig, the rendered objects are also validated by a real API server
(`kubectl apply --dry-run=server`). Exit status non-zero on the first failed check.
"""
import argparse
import os
import subprocess
import sys

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "citoroute")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def render(helm, *sets):
    args = [helm, "template", "citoroute", CHART, "--namespace", "citoroute-system", "--include-crds", "--kube-version", "1.34.0"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return out, [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", default="helm")
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--kubeconfig")
    a = ap.parse_args()

    lint = subprocess.run([a.helm, "lint", "--strict", CHART], capture_output=True, text=True)
    check(lint.returncode == 0, "helm lint --strict: " + (lint.stdout + lint.stderr).strip().splitlines()[-1])

    text, docs = render(a.helm)
    dep = by_kind(docs, "Deployment")
    check(len(dep) == 1, "one controller Deployment")
    pod = dep[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(pod["securityContext"].get("runAsNonRoot") is True, "controller runs as non-root")
    check(c["securityContext"].get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    check(c["securityContext"].get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")
    check("readinessProbe" in c and "livenessProbe" in c, "probes set")
    check("limits" in c.get("resources", {}), "resource limits set")
    check("--leader-elect" not in c["args"], "one replica: no leader election")
    check(any(x.startswith("--proxy-image=localhost/citoroute/proxy:") for x in c["args"]), "proxy image passed")

    gcs = by_kind(docs, "GatewayClass")
    check(len(gcs) == 1 and gcs[0]["spec"]["controllerName"] == "citoroute.io/gateway-controller",
          "GatewayClass citoroute with our controllerName")

    rules = [r for cr in by_kind(docs, "ClusterRole") for r in cr["rules"]]
    check(all("*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r.get("apiGroups", [])
              for r in rules), "no wildcard in the ClusterRole")
    gw_write = [r for r in rules if "gateway.networking.k8s.io" in r["apiGroups"]
                and set(r["verbs"]) & {"create", "patch", "update", "delete"}]
    check(all(res.endswith("/status") for r in gw_write for res in r["resources"]),
          "Gateway API objects: only their status is writable")
    check(not any("nodes" in r["resources"] or "pods" in r["resources"] for r in rules),
          "no access to nodes or pods")
    leases = [r for role in by_kind(docs, "Role") for r in role["rules"] if "leases" in r["resources"]]
    check(len(leases) == 1 and not any("leases" in r["resources"] for r in rules),
          "leases only in the release namespace")

    crds = by_kind(docs, "CustomResourceDefinition")
    names = sorted(d["spec"]["names"]["kind"] for d in crds)
    check(names == ["Consumer", "JWTValidationPolicy", "LLMBackend", "LLMRoute"], f"our CRDs rendered: {names}")
    crd_res = {d["spec"]["names"]["plural"] for d in crds}
    granted = {res for r in rules if "citoroute.io" in r["apiGroups"] for res in r["resources"]}
    check(crd_res <= granted, "the controller may read every CRD of ours")

    _, docs2 = render(a.helm, "controller.replicas=2", "gatewayClass.create=false")
    c2 = by_kind(docs2, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    check("--leader-elect" in c2["args"], "two replicas: leader election on")
    check(not by_kind(docs2, "GatewayClass"), "gatewayClass.create=false renders none")

    if a.kubeconfig:
        kc = [a.kubectl, "--kubeconfig", a.kubeconfig]
        subprocess.run(kc + ["create", "namespace", "citoroute-system"], capture_output=True)
        r = subprocess.run(kc + ["apply", "--dry-run=server", "-f", "-"],
                           input=text, capture_output=True, text=True)
        check(r.returncode == 0, "API server accepts every rendered object (dry run)" +
              ("" if r.returncode == 0 else ": " + r.stderr.strip()))

    print(f"chart: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
