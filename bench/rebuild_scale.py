"""`rebuild up` at scale against a floor measured in the same run on the same cluster.

Usage: .venv/bin/python -m bench.rebuild_scale --objects 200 1000

For each size N it generates a git repo of N objects (Namespaces, ConfigMaps, Services
and 1-replica Deployments, spread over namespaces), then on one fresh local cluster:

1. floor: the same objects (in parallel "floor-" namespaces) applied by one process with
   concurrent server-side apply (Namespaces first, then 16 workers), then waited on with
   the same convergence check `up` uses (present, as declared, healthy);
2. `rebuild up` of the repo: every phase timed; the reconciler is asked to sync at once
   (rebuild annotates the Flux objects), so its poll interval is not what is measured.

Printed: phase times, "bootstrap to verified" (reconciler + verify phases), the same plus
the platform phase (which creates the Flux objects through Pulumi), and their ratios to
the floor. Target (issue 3): at 1,000 objects, bootstrap-to-verified <= 2.0x the floor.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from rebuild import config as cfgmod
from rebuild.adapters import gitserver
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.config import VerifySpec
from rebuild.converge import wait_converged
from rebuild.model import DesiredObject, ObjectRef, Source
from rebuild.recovery import Context, up


def generate(n: int, ns_prefix: str = "bench", replicas: int = 1) -> list[dict[str, Any]]:
    """n objects: per namespace 1 Namespace + groups of (ConfigMap, Service, Deployment)."""
    per_ns = 60
    objs: list[dict[str, Any]] = []
    i = 0
    ns_index = 0
    while len(objs) < n:
        ns = f"{ns_prefix}-{ns_index}"
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for _ in range(per_ns // 3):
            if len(objs) >= n:
                break
            name = f"app-{i}"
            labels = {"app": name}
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns},
                    "data": {"app.yaml": f"name: {name}\nreplicas: 1\n", "LOG_LEVEL": "info"},
                }
            )
            if len(objs) < n:
                objs.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                    }
                )
            if len(objs) < n:
                objs.append(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {
                            "replicas": replicas,
                            "selector": {"matchLabels": labels},
                            "template": {
                                "metadata": {"labels": labels},
                                "spec": {
                                    "containers": [{"name": "app", "image": "nginx:1.27.3", "ports": [{"containerPort": 8080}]}]
                                },
                            },
                        },
                    }
                )
            i += 1
        ns_index += 1
    return objs[:n]


def write_repo(root: Path, objs: list[dict[str, Any]], *, per_app: bool = False) -> Path:
    """One file per namespace (60 documents each), or with ``per_app`` one file per app (its
    ConfigMap, Service and Deployment), the way repos like examples/gitops-repo are laid out."""
    by_file: dict[Path, list[dict[str, Any]]] = {}
    for o in objs:
        ns = o["metadata"].get("namespace") or o["metadata"]["name"]
        name = o["metadata"]["name"] if per_app and o["kind"] != "Namespace" else "objects"
        by_file.setdefault(root / "apps" / ns / f"{name}.yaml", []).append(o)
    for path, items in by_file.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(items, sort_keys=False))
    cfg = {
        "sources": [{"name": "bench", "url": ".", "branch": "main", "path": "apps"}],
        "cluster": {"provider": "local", "name": "bench", "nodes": 4},
        "reconciler": {"kind": "flux", "interval": "1m"},
        "verify": {"timeout": "10m"},
    }
    (root / "rebuild.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "rebuild.yaml"


def floor(kube: Kube, objs: list[dict[str, Any]]) -> float:
    """One process, concurrent server-side apply, then the same convergence wait."""
    renamed = json.loads(json.dumps(objs).replace('"bench-', '"floor-'))
    desired = [DesiredObject(ObjectRef.of(o), o["apiVersion"], o, Source("floor", 0)) for o in renamed]
    t0 = time.monotonic()
    namespaces = [o for o in renamed if o["kind"] == "Namespace"]
    rest = [o for o in renamed if o["kind"] != "Namespace"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(kube.apply, namespaces))
        list(pool.map(kube.apply, rest))
    report = wait_converged(kube, desired, VerifySpec(timeout=600), interval=0.5)
    assert report.converged, report.summary()
    return time.monotonic() - t0


def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"rebuild-scale-{n}-") as tmp:
        base = Path(tmp)
        objs = generate(n)
        config_path = write_repo(base / "repo", objs)
        state = base / "state"
        cluster = LocalCluster("bench", nodes=4, root=state, unsafe_fast_storage=True)
        try:
            cluster.create()  # created first so the floor and `up` share it (up then finds it running)
            kube = Kube.from_kubeconfig(cluster.kubeconfig())
            floor_s = floor(kube, objs)
            ctx = Context(cfgmod.load(config_path), state)
            res = up(ctx, verify_timeout=600)
            assert res.converged, res.report.summary() if res.report else res.error
            phases = {p.name: round(p.seconds, 2) for p in res.phases.items}
            bootstrap = phases["reconciler"] + phases["verify"]
            with_platform = bootstrap + phases["platform"]
            return {
                "objects": n,
                "floor_seconds": round(floor_s, 2),
                "phases": phases,
                "bootstrap_to_verified_seconds": round(bootstrap, 2),
                "ratio": round(bootstrap / floor_s, 2),
                "platform_to_verified_seconds": round(with_platform, 2),
                "ratio_with_platform": round(with_platform / floor_s, 2),
            }
        finally:
            cluster.delete(purge=True)
            gitserver.stop_server(state / "gitserver")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n) for n in args.objects]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['objects']} objects: floor (concurrent SSA + same verify) {r['floor_seconds']:.2f}s")
        print("  up phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items()))
        print(f"  bootstrap-to-verified (reconciler+verify) {r['bootstrap_to_verified_seconds']:.2f}s = {r['ratio']:.2f}x floor")
        print(f"  including the platform phase {r['platform_to_verified_seconds']:.2f}s = {r['ratio_with_platform']:.2f}x floor")


if __name__ == "__main__":
    main()
