"""A recovery drill: build a throwaway cluster from the stacks, prove it works, tear it down.

This is the main job of the bundled example (``make demo``). Every phase is timed, the
teardown always runs (failure and Ctrl-C included), and the result is a value that the
CLI renders as text or JSON. Later stages (git desired state, reconciler, verify,
reports) plug in as further phases.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rebuild.adapters.kube import Kube
from rebuild.adapters.pulumi import STACKS_DIR, Pulumi
from rebuild.clusters.base import validate_name
from rebuild.errors import RebuildError
from rebuild.model import Phases

Progress = Callable[[str], None]

SMOKE_NAMESPACE = "rebuild-smoke"


@dataclass
class DrillResult:
    cluster: str
    stack: str
    passed: bool
    phases: Phases
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "stack": self.stack,
            "passed": self.passed,
            "rto_seconds": round(self.phases.total, 3),
            "phases": self.phases.to_list(),
            "checks": self.checks,
            "error": self.error,
        }


def smoke_objects(namespace: str) -> list[dict[str, Any]]:
    labels = {"app": "smoke"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "smoke", "namespace": namespace},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}},
            },
        }
    ]


def smoke_check(kube: Kube, namespace: str, timeout: float = 120) -> list[dict[str, Any]]:
    """A Deployment of 3 replicas must become Available with its Pods Running on the cluster's nodes."""
    for obj in smoke_objects(namespace):
        kube.apply(obj)
    deadline = time.monotonic() + timeout
    while True:
        dep = kube.get("apps/v1", "Deployment", "smoke", namespace) or {}
        available = (dep.get("status") or {}).get("availableReplicas", 0)
        if available == 3:
            break
        if time.monotonic() > deadline:
            raise RebuildError(
                f"Deployment {namespace}/smoke: {available}/3 replicas available after {timeout:.0f}s",
                fix="check the cluster's kube-controller-manager, kube-scheduler and kwok logs",
            )
        time.sleep(0.2)
    pods = kube.list("v1", "Pod", namespace, label_selector="app=smoke")
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    return [
        {"check": "deployment-available", "object": f"Deployment/{namespace}/smoke", "ok": True, "detail": "3/3 available"},
        {"check": "pods-running", "object": f"Pod/{namespace}/smoke-*", "ok": len(running) == 3, "detail": f"{len(running)}/3"},
    ]


def run_drill(
    *,
    root: Path,
    nodes: int = 1,
    name: str | None = None,
    keep: bool = False,
    progress: Progress | None = None,
    stacks_dir: Path = STACKS_DIR,
) -> DrillResult:
    say = progress or (lambda _m: None)
    name = validate_name(name or f"drill-{uuid.uuid4().hex[:6]}")
    stack = name
    pulumi = Pulumi(root=root)
    phases = Phases()
    result = DrillResult(cluster=name, stack=stack, passed=False, phases=phases)
    cluster_dir, platform_dir = stacks_dir / "cluster", stacks_dir / "platform"
    created: list[Path] = []
    try:
        with phases.phase("cluster"):
            say(f"cluster: pulumi up stacks/cluster (stack {stack}, local provider, {nodes} node(s))")
            created.append(cluster_dir)
            pulumi.up(cluster_dir, stack, {"name": name, "nodes": nodes, "provider": "local", "stateDir": str(root)}, say)
        with phases.phase("platform"):
            say("platform: pulumi up stacks/platform")
            created.append(platform_dir)
            pulumi.up(
                platform_dir,
                stack,
                {
                    "clusterStack": f"organization/rebuild-cluster/{stack}",
                    "namespaces": ["rebuild-system", SMOKE_NAMESPACE],
                    "clusterName": name,
                },
                say,
            )
        with phases.phase("smoke"):
            kubeconfig = pulumi.output(cluster_dir, stack, "kubeconfig")
            kube = _kube_from_text(kubeconfig, root / "clusters" / name / "drill-kubeconfig")
            try:
                result.checks = smoke_check(kube, SMOKE_NAMESPACE)
            finally:
                kube.close()
        result.passed = all(c["ok"] for c in result.checks)
    except RebuildError as err:
        result.error = str(err)
    finally:
        if keep:
            phases.skip("teardown", "--keep: cluster left running")
        else:
            with phases.phase("teardown"):
                say("teardown: pulumi destroy (platform, then cluster)")
                _teardown(pulumi, created, stack, name, root, result)
    return result


def _teardown(pulumi: Pulumi, created: list[Path], stack: str, name: str, root: Path, result: DrillResult) -> None:
    """Destroy every stack that was started, then make sure no cluster process survives."""
    from rebuild.clusters.local import LocalCluster

    problems: list[str] = []
    for project in reversed(created):
        try:
            pulumi.destroy(project, stack)
            pulumi.remove(project, stack)
        except RebuildError as err:
            problems.append(str(err))
        finally:
            (project / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)
    LocalCluster(name, root=root).delete(purge=True)  # belt and braces: nothing left running
    if problems:
        result.passed = False
        result.error = (result.error + "\n" if result.error else "") + "teardown: " + "; ".join(problems)
        raise RebuildError("teardown did not finish cleanly: " + "; ".join(problems))


def _kube_from_text(kubeconfig: str, path: Path) -> Kube:
    from rebuild.clusters.pki import write_private

    yaml.safe_load(kubeconfig)  # fail early on garbage
    write_private(path, kubeconfig.encode())
    return Kube.from_kubeconfig(path)
