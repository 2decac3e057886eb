"""The generated bench repo written the way kustomize users write it (issue 10's benchmark variant).

Same apps as :func:`bench.rebuild_scale.generate` (per app: a ConfigMap, a Service, a
Deployment), but every app is its own kustomize folder, listed by one root kustomization:

    apps/kustomization.yaml            resources: [namespaces.yaml, bench-0/app-0, bench-0/app-1, ...]
    apps/namespaces.yaml               every Namespace
    apps/bench-0/app-0/kustomization.yaml
        namespace: bench-0             (the manifests carry none)
        namePrefix: shop-
        commonLabels: {app.kubernetes.io/part-of: bench, tier: backend}
        configMapGenerator: [{name: app-0, literals: [LOG_LEVEL=info, REPLICAS=1]}]   (hash-suffixed)
        resources: [service.yaml, deployment.yaml]
    apps/bench-0/app-0/{service,deployment}.yaml   the Deployment reads the generated ConfigMap by its short name

So every object's name, namespace, labels (selectors included) and, for the ConfigMaps, its
very existence come from a transformer or a generator: rebuild has to trace each live field
through kustomize's origin and transformer records to the line that sets it.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

PREFIX = "shop-"
COMMON_LABELS = {"app.kubernetes.io/part-of": "bench", "tier": "backend"}


def _dump(items: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(items, sort_keys=False)


def write_kustomized_repo(root: Path, objs: list[dict[str, Any]]) -> Path:
    """Write ``objs`` (from :func:`bench.rebuild_scale.generate`) as one kustomization per app under
    ``root/apps``; return the root kustomize folder. The ConfigMaps become generators."""
    apps = root / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    (apps / "namespaces.yaml").write_text(_dump(namespaces))
    by_app: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in objs:
        if o["kind"] != "Namespace":
            by_app.setdefault((o["metadata"]["namespace"], o["metadata"]["name"]), []).append(o)
    resources = ["namespaces.yaml"]
    for (ns, name), items in by_app.items():
        folder = apps / ns / name
        folder.mkdir(parents=True, exist_ok=True)
        kust: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": ns,
            "namePrefix": PREFIX,
            "commonLabels": dict(COMMON_LABELS),
            "resources": [],
        }
        has_config = any(o["kind"] == "ConfigMap" for o in items)
        for o in items:
            doc = {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "namespace"}}
            if o["kind"] == "ConfigMap":
                kust["configMapGenerator"] = [
                    {
                        "name": name,
                        "literals": [f"{k}={v}" for k, v in sorted(o["data"].items()) if "\n" not in v] + ["REPLICAS=1"],
                    }
                ]
                continue
            if o["kind"] == "Deployment" and has_config:
                container = doc["spec"]["template"]["spec"]["containers"][0]
                doc["spec"]["template"]["spec"]["containers"][0] = {**container, "envFrom": [{"configMapRef": {"name": name}}]}
            fname = f"{o['kind'].lower()}.yaml"
            (folder / fname).write_text(_dump([doc]))
            kust["resources"].append(fname)
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kust, sort_keys=False))
        resources.append(f"{ns}/{name}")
    (apps / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}, sort_keys=False
        )
    )
    return apps


def build(folder: Path, per_build: int = 130) -> list[dict[str, Any]]:
    """What Flux's kustomize-controller would apply (setup, never timed): the root kustomization's
    entries built with `kubectl kustomize` in groups of ``per_build`` (the root lists them and
    nothing else, so the union is the same; one build of everything takes minutes at 10,000
    objects because kustomize's time grows with the square of the objects in one build)."""
    root = yaml.safe_load((folder / "kustomization.yaml").read_text())
    entries = [str(e) for e in root["resources"]]
    groups = [entries[i : i + per_build] for i in range(0, len(entries), per_build)]

    def one(group: list[str]) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="bench-kbuild-") as tmp:
            k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
            k["resources"] = [os.path.relpath(folder / e, tmp) for e in group]  # type: ignore[assignment]
            (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(k))
            out = subprocess.run(
                ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", tmp],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
        return [d for d in yaml.load_all(out.stdout, Loader=yaml.CSafeLoader) if d]

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return [d for docs in pool.map(one, groups) for d in docs]
