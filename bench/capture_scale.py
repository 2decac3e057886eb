"""`rebuild capture` over 1,000 and 10,000 live objects, against the bare LISTs and `kubectl diff`.

Usage: .venv/bin/python -m bench.capture_scale --objects 1000 10000

For each size N: a generated repo of N objects (Namespaces, ConfigMaps, Services,
Deployments; one file per app, as in examples/gitops-repo) is applied to a fresh local
cluster by one process with server-side apply as field manager kustomize-controller (what
Flux would have done); five manual changes are made with kubectl's field managers. Then, in the same run:

- floor: the bare paginated LIST calls of the same kinds capture lists (every listable
  namespaced kind, cluster-wide, 16 at a time), nothing else;
- capture: LIST + drift findings (ownership, attribution, noise, coverage) + the backport
  plan (file edits, PR text) from the rendered repo;
- kubectl diff: `kubectl diff --server-side --force-conflicts -f` over the same manifests.

Printed: seconds and ratios. Targets (issue 4): capture <= 2x the floor and >= 10x faster
than kubectl diff.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.rebuild_scale import generate, write_repo
from rebuild.adapters.kube import Kube
from rebuild.backport import plan_backport
from rebuild.capture import _repo_files, list_live, listed_kinds
from rebuild.clusters.local import LocalCluster
from rebuild.config import CaptureSpec
from rebuild.desired import builtin_kinds, fill_namespaces, render
from rebuild.drift import find_drift


def _settle(kube: Kube, n: int, timeout: float = 300) -> None:
    """Wait until the controllers have processed every Deployment (so LISTs compete with nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deps = kube.list("apps/v1", "Deployment")
        if all((d.get("status") or {}).get("observedGeneration") == d["metadata"].get("generation") for d in deps):
            time.sleep(2)
            return
        time.sleep(1)


def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"rebuild-capture-{n}-") as tmp:
        base = Path(tmp)
        objs = generate(n, replicas=0)  # no Pods: keep the controllers quiet while measuring
        write_repo(base / "repo", objs, per_app=True)
        cluster = LocalCluster("capbench", nodes=8, root=base / "state", unsafe_fast_storage=True)
        try:
            cluster.create()
            kube = Kube.from_kubeconfig(cluster.kubeconfig())
            namespaces = [o for o in objs if o["kind"] == "Namespace"]
            rest = [o for o in objs if o["kind"] != "Namespace"]
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda o: kube.apply(o, field_manager="kustomize-controller"), namespaces))
                list(pool.map(lambda o: kube.apply(o, field_manager="kustomize-controller"), rest))
            deployments = [o for o in rest if o["kind"] == "Deployment"][:3]
            ref = deployments[0]
            kube.patch(ref, {"spec": {"replicas": 3}}, field_manager="kubectl", subresource="scale")
            kube.patch(deployments[1], {"metadata": {"labels": {"team": "x"}}}, field_manager="kubectl-label")
            cm = next(o for o in rest if o["kind"] == "ConfigMap")
            kube.patch(cm, {"data": {"LOG_LEVEL": "debug"}}, field_manager="kubectl-patch")
            ns0 = namespaces[0]["metadata"]["name"]
            kube.create(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hotfix", "namespace": ns0}, "data": {"k": "v"}},
                field_manager="kubectl-create",
            )
            kube.delete("v1", "Service", rest[1]["metadata"]["name"], rest[1]["metadata"]["namespace"])

            rendered = render(base / "repo", "apps")
            assert not rendered.problems, rendered.problems[:3]
            desired = rendered.objects
            fill_namespaces(desired, builtin_kinds())
            ns_names = sorted({o.ref.namespace for o in desired if o.ref.namespace})
            files = _repo_files(base / "repo")

            cluster_kinds = {(o.ref.group, o.ref.kind) for o in desired if not o.ref.namespace}
            _settle(kube, len(objs))
            floors, captures, parts = [], [], []
            kinds = [(i.api_version, i.kind) for i in listed_kinds(kube, cluster_kinds)]  # the same kinds
            for _ in range(3):  # alternate, best of 3: neither side benefits from a warmer cache
                t0 = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(16) as pool:  # the bare LISTs of the same kinds
                    live_floor = [o for items in pool.map(lambda k: kube.list(*k), kinds) for o in items]
                floors.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                live = list_live(kube, ns_names, cluster_kinds)
                t1 = time.perf_counter()
                report = find_drift(desired, live, spec=CaptureSpec(), managed_namespaces=ns_names)
                t2 = time.perf_counter()
                bp = plan_backport(
                    report, {o.ref: o for o in desired}, files, new_objects_dir="captured", include_deletions=False
                )
                t3 = time.perf_counter()
                captures.append(t3 - t0)
                parts.append((t1 - t0, t2 - t1, t3 - t2))
            floor, capture_s = min(floors), min(captures)
            best = parts[captures.index(capture_s)]

            manifests = base / "all.yaml"
            manifests.write_text(yaml.safe_dump_all(objs, sort_keys=False))
            env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig()))
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["kubectl", "diff", "--server-side", "--force-conflicts", "-f", str(manifests)],
                capture_output=True,
                text=True,
                env=env,
                timeout=3600,
            )
            kdiff = time.perf_counter() - t0
            assert proc.returncode in (0, 1), proc.stderr[-500:]
            return {
                "objects": n,
                "live_objects_listed": len(live_floor),
                "floor_seconds": round(floor, 3),
                "capture_seconds": round(capture_s, 3),
                "kubectl_diff_seconds": round(kdiff, 2),
                "capture_vs_floor": round(capture_s / floor, 2),
                "kubectl_diff_vs_capture": round(kdiff / capture_s, 1),
                "findings": len(report.findings),
                "capture_parts_seconds": {"list": round(best[0], 3), "drift": round(best[1], 3), "backport": round(best[2], 3)},
                "files_edited": len(bp.edits) + len(bp.new_files),
            }
        finally:
            cluster.delete(purge=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n) for n in args.objects]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['objects']} objects ({r['live_objects_listed']} live objects listed, {r['findings']} findings):")
        parts = r["capture_parts_seconds"]
        print(
            f"  floor (bare LISTs) {r['floor_seconds']:.3f}s; capture {r['capture_seconds']:.3f}s "
            f"= {r['capture_vs_floor']:.2f}x floor (list {parts['list']}s, drift {parts['drift']}s, "
            f"backport {parts['backport']}s)"
        )
        print(f"  kubectl diff {r['kubectl_diff_seconds']:.2f}s = capture is {r['kubectl_diff_vs_capture']:.1f}x faster")


if __name__ == "__main__":
    main()
