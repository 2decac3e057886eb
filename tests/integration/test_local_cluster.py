"""The local provider against the real binaries: etcd, kube-apiserver, controllers, kwok."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import process
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from tests.conftest import cli_env, unique
from tests.kubectl import kubectl

pytestmark = pytest.mark.integration


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def wait_for(pred: Any, timeout: float = 60, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"condition not met in {timeout}s")


def listeners_of(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    return [ln for ln in out.splitlines() if any(f"pid={p}," in ln for p in pids)]


def test_deployment_becomes_available_with_pods_running_on_kwok_nodes(cluster_factory: Any) -> None:
    c: LocalCluster = cluster_factory("dep", nodes=2)
    st = c.create()
    assert st.state == "running" and st.nodes == 2
    kube = Kube.from_kubeconfig(c.kubeconfig())
    kube.apply(deployment("web", 3))

    def available() -> bool:
        d = kube.get("apps/v1", "Deployment", "web", "default") or {}
        return (d.get("status") or {}).get("availableReplicas") == 3

    wait_for(available, timeout=90)
    pods = kube.list("v1", "Pod", "default", label_selector="app=web")
    assert len(pods) == 3
    nodes = {n["metadata"]["name"] for n in kube.list("v1", "Node")}
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in nodes
    for n in kube.list("v1", "Node"):
        assert n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"

    # After a control-plane outage longer than the node monitor grace period, the node
    # controller sets every pod's Ready condition to False, exactly as this patch does; a
    # kubelet (here kwok, with rebuild's resync stage) reports the pod ready again.
    victim = pods[0]["metadata"]["name"]
    patched = kubectl(
        c.kubeconfig(), "patch", "pod", victim, "-n", "default", "--subresource=status", "-o", "json",
        "-p", '{"status":{"conditions":[{"type":"Ready","status":"False","reason":"NodeNotReady"}]}}',
    )  # fmt: skip
    assert ready_status(json.loads(patched)) == "False"

    def ready_again() -> bool:
        return ready_status(kube.get("v1", "Pod", victim, "default") or {}) == "True" and available()

    wait_for(ready_again, timeout=30)


def ready_status(pod: dict[str, Any]) -> str | None:
    return next((c["status"] for c in (pod.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None)


def test_down_leaves_no_process_and_up_keeps_data(cluster_factory: Any) -> None:
    c: LocalCluster = cluster_factory("keep")
    c.create()
    kube = Kube.from_kubeconfig(c.kubeconfig())
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "default"}, "data": {"k": "v"}}
    )
    pids = {comp.pid for comp in c.status().components if comp.pid}
    assert len(pids) == 5
    c.delete()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    assert listeners_of(pids) == []
    assert c.status().state == "stopped"
    c.create()
    kube = Kube.from_kubeconfig(c.kubeconfig())
    cm = kube.get("v1", "ConfigMap", "kept", "default")
    assert cm is not None and cm["data"] == {"k": "v"}


def test_two_clusters_at_once_via_the_cli(state_dir: Path, toolchain: Any) -> None:
    names = [unique("a"), unique("b")]
    env = cli_env(state_dir)
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def up(n: str) -> None:
        results[n] = subprocess.run(
            [sys.executable, "-m", "rebuild.cli", "cluster", "up", "--name", n, "--unsafe-fast-storage"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    threads = [threading.Thread(target=up, args=(n,)) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in names:
            assert results[n].returncode == 0, results[n].stderr
            assert LocalCluster(n, root=state_dir).status().state == "running"
        pids = {comp.pid for n in names for comp in LocalCluster(n, root=state_dir).status().components if comp.pid}
        assert len(pids) == 10
    finally:
        for n in names:
            r = subprocess.run(
                [sys.executable, "-m", "rebuild.cli", "cluster", "down", "--name", n, "--purge"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert r.returncode == 0, r.stderr
    for pid in pids:
        assert not any(
            rec
            for rec in [pid]
            if Path(f"/proc/{pid}/cmdline").exists() and str(state_dir) in Path(f"/proc/{pid}/cmdline").read_text()
        )
    assert listeners_of(pids) == []
    assert process.children_of(1) is not None  # sanity: /proc readable


def test_requested_port_in_use_is_exit_2_and_leaves_nothing(state_dir: Path, toolchain: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        name = unique("busy")
        r = subprocess.run(
            [sys.executable, "-m", "rebuild.cli", "cluster", "up", "--name", name, "--api-port", str(port)],
            capture_output=True,
            text=True,
            env=cli_env(state_dir),
            timeout=60,
        )
    assert r.returncode == 2
    assert f"port {port}" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr
    assert not (state_dir / "clusters" / name).exists()


def test_unwritable_state_dir_is_exit_2(tmp_path: Path, toolchain: Any) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = cli_env(blocker / "state")
    r = subprocess.run(
        [sys.executable, "-m", "rebuild.cli", "cluster", "up", "--name", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (r.returncode == 2 and "not writable" in r.stderr) or "cannot create" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_binary_is_exit_2(tmp_path: Path, state_dir: Path) -> None:
    env = cli_env(state_dir)
    env["REBUILD_CACHE"] = str(tmp_path / "empty-cache")
    r = subprocess.run(
        [sys.executable, "-m", "rebuild.cli", "cluster", "up", "--name", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2
    assert "is not installed" in r.stderr and "rebuild toolchain install" in r.stderr
    assert not (state_dir / "clusters" / "x").exists()


def test_scheduled_capture_example_is_accepted_by_the_api(cluster_factory: Any) -> None:
    """examples/scheduled-capture: every manifest passes a server-side dry run on a real API server."""
    import yaml

    from tests.conftest import REPO

    c: LocalCluster = cluster_factory("cron")
    c.create()
    kube = Kube.from_kubeconfig(c.kubeconfig())
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rebuild-system"}})
    folder = REPO / "examples" / "scheduled-capture"
    docs = [d for f in ("rbac.yaml", "config.yaml", "cronjob.yaml") for d in yaml.safe_load_all((folder / f).read_text()) if d]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "CronJob"}
    for d in docs:
        kube.apply(d, dry_run=True)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in role["rules"])  # read-only
    drill_docs = [d for d in yaml.safe_load_all((REPO / "examples/scheduled-drill/cronjob.yaml").read_text()) if d]
    for d in drill_docs:
        kube.apply(d, dry_run=True)


def test_aggregated_discovery_equals_the_per_group_documents(cluster_factory: Any) -> None:
    """Kube.discovery asks /api and /apis for aggregated discovery (2 requests, not one per group
    version) and must find exactly what the per-group documents say, in the same (preferred first)
    order, custom resources included."""
    c: LocalCluster = cluster_factory("disc")
    c.create()
    kube = Kube.from_kubeconfig(c.kubeconfig())
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {"name": v, "served": True, "storage": v == "v1", "schema": {"openAPIV3Schema": {"type": "object"}}}
                for v in ("v1", "v1beta1")
            ],
        },
    }
    kube.apply(crd)

    def both_served() -> bool:
        got = kube._legacy_discovery()
        return ("example.com/v1", "Widget") in got and ("example.com/v1beta1", "Widget") in got

    wait_for(both_served, timeout=30)
    legacy = kube._legacy_discovery()
    aggregated = kube._aggregated_discovery()
    assert aggregated is not None, "this kube-apiserver did not answer with aggregated discovery"
    for _ in range(60):  # the aggregated document may lag the per-group ones by a moment
        if aggregated == legacy:
            break
        time.sleep(0.5)
        aggregated, legacy = kube._aggregated_discovery(), kube._legacy_discovery()
        assert aggregated is not None
    assert len(legacy) > 50
    assert aggregated == legacy
    assert list(aggregated) == list(legacy)  # the same order: listed_kinds keeps the first version of a kind
    widget = aggregated[("example.com/v1", "Widget")]
    assert (widget.plural, widget.namespaced, "list" in widget.verbs) == ("widgets", False, True)
    assert kube.discovery(refresh=True) == legacy
