"""The real Flux controllers (host processes) reconciling a local cluster from a real git server."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import process
from rebuild.adapters.gitserver import Credentials, GitServer, ensure_server, publish_dir, stop_server
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.reconcilers.flux_local import CONTROLLERS, FluxLocal, request_reconcile

pytestmark = pytest.mark.integration

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
NS = "flux-system"


def wait_for(pred: Callable[[], Any], timeout: float = 90, step: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what} not met in {timeout}s (last: {last!r})")


def write_manifests(src: Path, greeting: str, namespace: str = "demo", prefix: str = "") -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "namespace.yaml").write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n")
    (src / "configmap.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {prefix}settings\n  namespace: {namespace}\n"
        f"data:\n  greeting: {greeting}\n"
    )
    (src / "deployment.yaml").write_text(
        f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {prefix}web
  namespace: {namespace}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {prefix}web}}
  template:
    metadata:
      labels: {{app: {prefix}web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
"""
    )


def git_repository(name: str, url: str, secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"interval": "10s", "url": url, "ref": {"branch": "main"}, "timeout": "20s"}
    if secret:
        spec["secretRef"] = {"name": secret}
    return {"apiVersion": SOURCE_API, "kind": "GitRepository", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def kustomization(name: str) -> dict[str, Any]:
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "interval": "10s",
            "sourceRef": {"kind": "GitRepository", "name": name},
            "path": "./",
            "prune": True,
            "wait": False,
            "timeout": "60s",
        },
    }


def ready(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return dict(c)
    return None


def source_at(kube: Kube, name: str, sha: str) -> bool:
    repo = kube.get(SOURCE_API, "GitRepository", name, NS)
    cond = ready(repo)
    rev = (((repo or {}).get("status") or {}).get("artifact") or {}).get("revision")
    return bool(cond and cond["status"] == "True" and rev == f"main@sha1:{sha}")


def applied_at(kube: Kube, name: str, sha: str) -> bool:
    ks = kube.get(KUSTOMIZE_API, "Kustomization", name, NS)
    cond = ready(ks)
    rev = ((ks or {}).get("status") or {}).get("lastAppliedRevision")
    return bool(cond and cond["status"] == "True" and rev == f"main@sha1:{sha}")


def deployment_available(kube: Kube, name: str, namespace: str) -> bool:
    dep = kube.get("apps/v1", "Deployment", name, namespace) or {}
    status = dep.get("status") or {}
    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return conds.get("Available") == "True" and status.get("availableReplicas") == dep["spec"]["replicas"]


def test_flux_controllers_sync_a_local_cluster_from_git(cluster_factory: Any, tmp_path: Path, toolchain: Any) -> None:
    cluster: LocalCluster = cluster_factory("flux")
    cluster.create()
    # the open repo behind a detached server (as `rebuild up` publishes a local folder) ...
    git_state = tmp_path / "gitserver"
    open_git = ensure_server(git_state)
    src = tmp_path / "src"
    write_manifests(src, "hello")
    sha1 = publish_dir(src, open_git.repo_path("demo"), "first")

    creds = Credentials("flux", secrets.token_urlsafe(16))
    private_src = tmp_path / "private-src"
    write_manifests(private_src, "secret-hello", namespace="private", prefix="p-")
    private_repos = tmp_path / "private-repos"
    psha = publish_dir(private_src, private_repos / "private.git", "private first")
    # ... and a password-protected one behind an in-process server

    flux = FluxLocal(tmp_path / "flux", cluster.kubeconfig(), toolchain=toolchain)
    kube = Kube.from_kubeconfig(cluster.kubeconfig())
    auth_git = GitServer(private_repos, credentials=creds).start()
    pids: list[int] = []
    try:
        st = flux.start()
        assert st.state == "running", st
        pids = flux.pids()
        print(f"\nflux controllers: CRDs + namespace + both ready in {flux._load()['started_seconds']}s")
        assert len(pids) == len(CONTROLLERS) == 3 and all(c.alive for c in st.components)

        # -- first sync: GitRepository + Kustomization -> objects in the cluster
        t0 = time.monotonic()
        kube.apply(git_repository("demo", open_git.repo_url("demo")))
        kube.apply(kustomization("demo"))
        wait_for(lambda: kube.get("v1", "ConfigMap", "settings", "demo"), what="ConfigMap demo/settings")
        sync_seconds = time.monotonic() - t0
        print(f"\nflux sync: GitRepository+Kustomization applied -> ConfigMap present in {sync_seconds:.2f}s")
        wait_for(lambda: source_at(kube, "demo", sha1), what=f"GitRepository at {sha1}")
        wait_for(lambda: applied_at(kube, "demo", sha1), what=f"Kustomization applied {sha1}")
        cm = kube.get("v1", "ConfigMap", "settings", "demo")
        assert cm is not None and cm["data"] == {"greeting": "hello"}
        wait_for(lambda: deployment_available(kube, "web", "demo"), what="Deployment demo/web available")

        # -- a new commit, picked up at once by requesting a reconcile (no 10s interval wait)
        write_manifests(src, "hello-again")
        sha2 = publish_dir(src, open_git.repo_path("demo"), "second")
        assert sha2 != sha1
        t1 = time.monotonic()
        request_reconcile(kube, SOURCE_API, "GitRepository", "demo")
        wait_for(
            lambda: (kube.get("v1", "ConfigMap", "settings", "demo") or {}).get("data") == {"greeting": "hello-again"},
            what="ConfigMap updated",
        )
        print(f"flux resync after a push: {time.monotonic() - t1:.2f}s")
        wait_for(lambda: applied_at(kube, "demo", sha2), what=f"Kustomization applied {sha2}")

        # -- basic auth: a wrong password is refused, the right one syncs
        bad = {"username": creds.username, "password": "wrong"}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth", "namespace": NS}, "type": "Opaque"}
        kube.apply({**secret, "stringData": bad})
        kube.apply(git_repository("private", auth_git.repo_url("private.git"), secret="git-auth"))
        kube.apply(kustomization("private"))
        failed = wait_for(
            lambda: (c := ready(kube.get(SOURCE_API, "GitRepository", "private", NS))) and c["status"] == "False" and c,
            what="GitRepository private refused",
        )
        assert "auth" in failed["message"].lower() or "401" in failed["message"], failed
        assert creds.password not in failed["message"]
        kube.apply({**secret, "stringData": {"username": creds.username, "password": creds.password}})
        request_reconcile(kube, SOURCE_API, "GitRepository", "private")
        wait_for(lambda: source_at(kube, "private", psha), what="GitRepository private Ready")
        wait_for(lambda: applied_at(kube, "private", psha), what="Kustomization private applied")
        pcm = kube.get("v1", "ConfigMap", "p-settings", "private")
        assert pcm is not None and pcm["data"] == {"greeting": "secret-hello"}
    finally:
        records = flux._procs()
        flux.stop()
        stop_server(git_state)
        auth_git.stop()
        kube.close()
        cluster_records = cluster._procs()
        cluster.delete()
    assert flux.status().state == "stopped"
    assert not any(process.alive(r) for r in records), "a Flux controller is still running"
    assert not any(process.alive(r) for r in cluster_records), "a cluster process is still running"
    assert not open_git.alive(), "the git server is still running"
    assert {r.name for r in records} == set(CONTROLLERS)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or process.start_ticks(pid) not in {r.start_ticks for r in records}
