"""Local cluster start time and Deployment-to-Available time, through `rebuild cluster up`.

Usage: .venv/bin/python -m bench.cluster_start [--runs 5] [--nodes 1] [--json]

Each run creates a fresh local cluster (new PKI, empty etcd) the way a user does:
``rebuild cluster up --name bench-I --nodes N --unsafe-fast-storage -o json`` as a subprocess
with ``REBUILD_STATE_DIR`` set to a fresh folder, timed from spawn to exit (interpreter start
included; the command returns once the API is ready, nodes are registered and the default
ServiceAccount exists). Then a 3-replica Deployment is applied and timed until
status.availableReplicas == 3 (Pods Running on kwok nodes), and the cluster is removed with
``rebuild cluster down --purge``. Prints every run and the medians. No target is set for
these (docs/measurements.md states none): they are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import cli_env, emit, load, run_cli
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster

SMOKE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "smoke", "namespace": "bench"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "smoke"}},
        "template": {"metadata": {"labels": {"app": "smoke"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}},
    },
}


def one_run(root: Path, i: int, nodes: int) -> dict[str, float]:
    name = f"bench-{i}"
    state = root / f"state-{i}"
    env = cli_env(state)
    try:
        up = run_cli(
            ["cluster", "up", "--name", name, "--nodes", str(nodes), "--unsafe-fast-storage", "-o", "json"], env=env, cwd=root
        )
        kube = Kube.from_kubeconfig(up.data["kubeconfig"])
        try:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
            t1 = time.monotonic()
            kube.apply(SMOKE)
            while (kube.get("apps/v1", "Deployment", "smoke", "bench") or {}).get("status", {}).get("availableReplicas") != 3:
                time.sleep(0.05)
            available = time.monotonic() - t1
        finally:
            kube.close()
        return {"start_seconds": round(up.seconds, 3), "deployment_available_seconds": round(available, 3)}
    finally:
        run_cli(["cluster", "down", "--name", name, "--purge", "-o", "json"], env=env, cwd=root, ok=(0, 1, 2))
        LocalCluster(name, root=state).delete(purge=True)  # in case `cluster down` failed: nothing left running


def run(runs: int, nodes: int) -> dict[str, Any]:
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="rebuild-bench-") as tmp:
        results = [one_run(Path(tmp), i, nodes) for i in range(runs)]
    return {
        "bench": "cluster_start",
        "nodes": nodes,
        "runs": results,
        "median_start_seconds": statistics.median(r["start_seconds"] for r in results),
        "median_deployment_available_seconds": statistics.median(r["deployment_available_seconds"] for r in results),
        "load_average": {"before": load_before, "after": load()},
        "command": f"REBUILD_STATE_DIR=<new dir> rebuild cluster up --name bench-I --nodes {nodes} --unsafe-fast-storage -o json",
        "targets": [],  # docs/measurements.md states no target for these
    }


def text(result: dict[str, Any]) -> str:
    lines = [
        f"run {i}: `rebuild cluster up` {r['start_seconds']:.2f}s, "
        f"Deployment(3) available {r['deployment_available_seconds']:.2f}s"
        for i, r in enumerate(result["runs"])
    ]
    lines.append(f"median cluster start: {result['median_start_seconds']:.2f}s")
    lines.append(f"median Deployment-to-Available: {result['median_deployment_available_seconds']:.2f}s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.runs, args.nodes)
    emit([result], args.json, text(result))


if __name__ == "__main__":
    main()
