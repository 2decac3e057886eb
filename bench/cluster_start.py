"""Local cluster start time and Deployment-to-Available time, measured on this machine.

Usage: .venv/bin/python -m bench.cluster_start [--runs 5] [--nodes 1]

Each run creates a fresh local cluster (new PKI, empty etcd), times `create()` until the
API is ready, nodes are registered and the default ServiceAccount exists, then applies a
3-replica Deployment and times until status.availableReplicas == 3 (Pods Running on kwok
nodes). Prints every run and the medians; writes JSON to stdout with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.drill import smoke_objects


def one_run(root: Path, i: int, nodes: int) -> dict[str, float]:
    c = LocalCluster(f"bench-{i}", nodes=nodes, root=root, unsafe_fast_storage=True)
    try:
        t0 = time.monotonic()
        c.create()
        start = time.monotonic() - t0
        kube = Kube.from_kubeconfig(c.kubeconfig())
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        t1 = time.monotonic()
        for obj in smoke_objects("bench"):
            kube.apply(obj)
        while (kube.get("apps/v1", "Deployment", "smoke", "bench") or {}).get("status", {}).get("availableReplicas") != 3:
            time.sleep(0.05)
        available = time.monotonic() - t1
        kube.close()
        return {"start_seconds": round(start, 3), "deployment_available_seconds": round(available, 3)}
    finally:
        c.delete(purge=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rebuild-bench-") as tmp:
        runs = [one_run(Path(tmp), i, args.nodes) for i in range(args.runs)]
    result = {
        "runs": runs,
        "median_start_seconds": statistics.median(r["start_seconds"] for r in runs),
        "median_deployment_available_seconds": statistics.median(r["deployment_available_seconds"] for r in runs),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for i, r in enumerate(runs):
        print(
            f"run {i}: cluster ready {r['start_seconds']:.2f}s, Deployment(3) available {r['deployment_available_seconds']:.2f}s"
        )
    print(f"median cluster start: {result['median_start_seconds']:.2f}s")
    print(f"median Deployment-to-Available: {result['median_deployment_available_seconds']:.2f}s")


if __name__ == "__main__":
    main()
