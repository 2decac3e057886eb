"""LIST speed of the Kubernetes client candidates over thousands of objects, same cluster, same run.

Usage: .venv/bin/pip install -e '.[bench]' && .venv/bin/python -m bench.list_clients [--objects 5000]

Creates N ConfigMaps (each with a few keys, like real config) in a fresh local cluster,
then times a full LIST of them (paginated by 500 where the client supports it) with:
rebuild's raw adapter (lightkube transport), lightkube typed, kr8s, and the official client.
Each is run 3 times; the best is reported with the ratio to the fastest.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster

NS = "bench-list"


def seed(kube: Kube, n: int) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})

    def one(i: int) -> None:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:05d}", "namespace": NS, "labels": {"app": f"a{i % 17}", "tier": "bench"}},
                "data": {"config.yaml": f"key: {i}\nother: value-{i}\n" * 4, "mode": "fast", "replicas": str(i % 5)},
            }
        )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def timed(fn: Callable[[], int], runs: int = 3) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(runs):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rebuild-bench-") as tmp:
        c = LocalCluster("bench-list", root=Path(tmp), unsafe_fast_storage=True)
        try:
            c.create()
            kc = str(c.kubeconfig())
            kube = Kube.from_kubeconfig(kc)
            seed(kube, args.objects)

            # Every variant must hand the caller each object's content (here: the data keys),
            # so lazy decoders pay the same decoding cost as eager ones.
            def ours() -> int:
                return sum(len(o["data"]) for o in kube.list("v1", "ConfigMap", NS, limit=500))

            import lightkube
            from lightkube.config.kubeconfig import KubeConfig
            from lightkube.resources.core_v1 import ConfigMap

            lk = lightkube.Client(KubeConfig.from_file(kc))

            def lightkube_typed() -> int:
                return sum(len(o.data or {}) for o in lk.list(ConfigMap, namespace=NS, chunk_size=500))

            import kr8s

            api = kr8s.api(kubeconfig=kc)

            def kr8s_sync() -> int:
                return sum(len(o.raw.get("data") or {}) for o in kr8s.get("configmaps", namespace=NS, api=api))

            import kubernetes

            kcli = kubernetes.config.new_client_from_config(config_file=kc)
            core = kubernetes.client.CoreV1Api(kcli)

            def official() -> int:
                n, cont = 0, None
                while True:
                    r = core.list_namespaced_config_map(NS, limit=500, _continue=cont)
                    n += sum(len(i.data or {}) for i in r.items)
                    cont = r.metadata._continue
                    if not cont:
                        return n

            rows = []
            for name, fn in [
                ("rebuild raw (lightkube transport)", ours),
                ("lightkube typed", lightkube_typed),
                ("kr8s", kr8s_sync),
                ("kubernetes (official)", official),
            ]:
                secs, count = timed(fn)
                rows.append((name, secs, count // 3))  # 3 data keys per ConfigMap (kube-root-ca.crt has 1)
            fastest = min(r[1] for r in rows)
            print(f"LIST of {args.objects} ConfigMaps (best of 3):")
            for name, secs, count in rows:
                print(f"  {name:<36} {secs:7.3f}s  {count} objects  {secs / fastest:5.2f}x")
        finally:
            c.delete(purge=True)


if __name__ == "__main__":
    main()
