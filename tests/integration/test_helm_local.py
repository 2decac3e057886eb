"""Helm with Flux on a local cluster, for real (issue 13): the three Flux controllers as host
processes (helm-controller beside source- and kustomize-controller), a tiny chart served by
rebuild's own chart repository (rebuild/adapters/helmrepo.py) and the same chart from a git
source; each HelmRelease becomes Ready and its rendered objects appear with the values given.
Nothing is left running afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import helmrepo, process
from rebuild.adapters.gitserver import ensure_server, publish_dir, stop_server
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.reconcilers.flux_local import CONTROLLERS, FluxLocal
from rebuild.recover.helmverify import latest_snapshot
from tests.integration.test_flux_local import deployment_available, git_repository, ready, wait_for
from tests.procs import processes_naming

pytestmark = pytest.mark.integration

SOURCE_API = "source.toolkit.fluxcd.io/v1"
HELM_API = "helm.toolkit.fluxcd.io/v2"
NS = "flux-system"

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels: {app: {{ .Release.Name }}-web}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-web}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-web}
    spec:
      containers:
        - name: web
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"""
CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
"""


def write_chart(folder: Path, version: str = "0.1.0") -> None:
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    (folder / "Chart.yaml").write_text(f'apiVersion: v2\nname: tiny\nversion: "{version}"\nappVersion: "1.27"\n')
    (folder / "values.yaml").write_text("replicas: 1\ngreeting: hello\nimage: {repository: nginx, tag: '1.27'}\n")
    (folder / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    (folder / "templates" / "configmap.yaml").write_text(CONFIGMAP)


def helm_release(name: str, chart: dict[str, Any], values: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": HELM_API,
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "interval": "10m",
            "releaseName": name,
            "targetNamespace": namespace,
            "install": {"createNamespace": True},
            "chart": {"spec": {**chart, "interval": "10m"}},
            "values": values,
        },
    }


def release_ready(kube: Kube, name: str) -> dict[str, Any] | None:
    """The HelmRelease once Ready=True *and* its release is in ``status.history``.

    CI once read a HelmRelease with Ready=True and no ``status.history`` key (4 s after it was
    applied), so Ready alone is not "installed". `verify` treats that state as progressing too
    (helmverify.release_health), and so does this wait.
    """
    hr = kube.get(HELM_API, "HelmRelease", name, NS)
    cond = ready(hr)
    if not (hr and cond and cond["status"] == "True"):
        return None
    return hr if latest_snapshot(hr.get("status") or {}) is not None else None


def test_helm_releases_from_the_served_repository_and_from_git(cluster_factory: Any, tmp_path: Path, toolchain: Any) -> None:
    cluster: LocalCluster = cluster_factory("helm")
    cluster.create()
    charts = tmp_path / "src" / "charts"
    write_chart(charts / "tiny")
    repo_state = tmp_path / "helmrepo"
    git_state = tmp_path / "gitserver"
    flux = FluxLocal(tmp_path / "flux", cluster.kubeconfig(), toolchain=toolchain)
    kube = Kube.from_kubeconfig(cluster.kubeconfig())
    records: list[process.ProcRecord] = []
    try:
        st = flux.start()
        records = flux._procs()
        assert st.state == "running" and {c.name for c in st.components} == set(CONTROLLERS), st
        assert "helm-controller" in CONTROLLERS and all(c.alive for c in st.components)
        assert kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "helmreleases.helm.toolkit.fluxcd.io")

        # -- a HelmRepository on rebuild's served chart repository (127.0.0.1, no internet)
        served = helmrepo.ensure_repo(repo_state, charts)
        t0 = time.monotonic()
        kube.apply(
            {
                "apiVersion": SOURCE_API,
                "kind": "HelmRepository",
                "metadata": {"name": "local-charts", "namespace": NS},
                "spec": {"interval": "10m", "url": served.url, "timeout": "20s"},
            }
        )
        chart = {"chart": "tiny", "version": "0.1.0", "sourceRef": {"kind": "HelmRepository", "name": "local-charts"}}
        values = {"replicas": 3, "greeting": "from-values", "image": {"tag": "1.28"}}
        kube.apply(helm_release("web", chart, values, "apps"))
        hr = wait_for(lambda: release_ready(kube, "web"), timeout=120, what="HelmRelease web Ready")
        print(f"\nHelmRelease from the served HelmRepository Ready in {time.monotonic() - t0:.2f}s")
        assert (latest_snapshot(hr["status"]) or {}).get("chartVersion") == "0.1.0", hr["status"]
        cm = kube.get("v1", "ConfigMap", "web-settings", "apps")
        assert cm is not None and cm["data"] == {"greeting": "from-values"}
        dep = kube.get("apps/v1", "Deployment", "web-web", "apps")
        assert dep is not None and dep["spec"]["replicas"] == 3
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
        assert (dep["metadata"].get("labels") or {}).get("helm.toolkit.fluxcd.io/name") == "web"
        wait_for(lambda: deployment_available(kube, "web-web", "apps"), what="Deployment apps/web-web available")
        repo_obj = kube.get(SOURCE_API, "HelmRepository", "local-charts", NS)
        assert (ready(repo_obj) or {}).get("status") == "True", repo_obj

        # -- the same chart folder from git (HelmRelease -> GitRepository)
        open_git = ensure_server(git_state)
        sha = publish_dir(tmp_path / "src", open_git.repo_path("charts"), "charts")
        t1 = time.monotonic()
        kube.apply(git_repository("charts", open_git.repo_url("charts")))
        chart = {
            "chart": "./charts/tiny",
            "sourceRef": {"kind": "GitRepository", "name": "charts"},
            "reconcileStrategy": "Revision",
        }
        kube.apply(helm_release("git-web", chart, {"greeting": "from-git"}, "git-apps"))
        hr = wait_for(lambda: release_ready(kube, "git-web"), timeout=120, what="HelmRelease git-web Ready")
        print(f"HelmRelease from a GitRepository Ready in {time.monotonic() - t1:.2f}s")
        assert (latest_snapshot(hr["status"]) or {}).get("chartVersion") == f"0.1.0+{sha[:12]}", hr["status"]["history"]
        cm = kube.get("v1", "ConfigMap", "git-web-settings", "git-apps")
        assert cm is not None and cm["data"] == {"greeting": "from-git"}
        dep = kube.get("apps/v1", "Deployment", "git-web-web", "git-apps")
        assert dep is not None and dep["spec"]["replicas"] == 1  # the chart's default
        for name in CONTROLLERS:
            log = (tmp_path / "flux" / "logs" / f"{name}.log").read_text()
            assert "panic" not in log, name
    finally:
        flux.stop()
        helmrepo.stop_repo(repo_state)
        stop_server(git_state)
        kube.close()
        cluster_records = cluster._procs()
        cluster.delete()
    assert flux.status().state == "stopped"
    assert {r.name for r in records} == set(CONTROLLERS)
    assert not any(process.alive(r) for r in [*records, *cluster_records]), "a controller or cluster process is still running"
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
