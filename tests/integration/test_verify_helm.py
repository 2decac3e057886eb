"""verify and HelmReleases against the real helm-controller on a real local cluster (issue 13 point 3).

A HelmRelease rendered from files in a repo (so every message has a real file:line) installs a
chart from rebuild's served chart repository; verify passes with the rendered objects counted
apart, fails naming the HelmRelease's file:line when a rendered Deployment is deleted, fails
naming both versions (and both values digests) when git moves on before the cluster does, and
shows helm-controller's own message with the line to change for a chart version the repository
does not have. Nothing is left running afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import helmrepo
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.core.config import IgnoreRule, VerifySpec
from rebuild.core.model import DesiredObject
from rebuild.desired.render import render
from rebuild.reconcilers.flux_local import FluxLocal
from rebuild.recover.converge import VerifyReport, check, wait_converged
from tests.integration.test_flux_local import wait_for
from tests.integration.test_helm_local import HELM_API, NS, release_ready, write_chart
from tests.procs import processes_naming

pytestmark = pytest.mark.integration

HR_FILE = "apps/web.yaml"
HR_YAML = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: web
  namespace: flux-system
spec:
  interval: 10m
  releaseName: web
  targetNamespace: apps
  install:
    createNamespace: true
  chart:
    spec:
      chart: tiny
      version: "{version}"
      sourceRef:
        kind: HelmRepository
        name: local-charts
  values:
    replicas: {replicas}
    greeting: from-git
"""
VERSION_LINE = 15
VALUES_LINE = 19


def write_repo(root: Path, url: str, version: str = "0.1.0", replicas: int = 2) -> list[DesiredObject]:
    (root / "apps").mkdir(parents=True, exist_ok=True)
    (root / "apps" / "repo.yaml").write_text(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: local-charts\n"
        f"  namespace: flux-system\nspec:\n  interval: 10m\n  url: {url}\n  timeout: 20s\n"
    )
    (root / HR_FILE).write_text(HR_YAML.format(version=version, replicas=replicas))
    (root / "apps" / "kustomization.yaml").write_text("resources:\n  - repo.yaml\n  - web.yaml\n")
    got = render(root, "apps")
    assert not got.problems, got.problems
    return got.objects


def problems(report: VerifyReport) -> list[str]:
    return [p for v in report.failing for p in v.problems()]


def test_verify_checks_helm_releases_and_the_objects_they_rendered(cluster_factory: Any, tmp_path: Path, toolchain: Any) -> None:
    cluster: LocalCluster = cluster_factory("vhelm")
    cluster.create()
    charts = tmp_path / "charts"
    write_chart(charts / "tiny")
    repo_state = tmp_path / "helmrepo"
    flux = FluxLocal(tmp_path / "flux", cluster.kubeconfig(), toolchain=toolchain)
    kube = Kube.from_kubeconfig(cluster.kubeconfig())
    # source-controller run as a host process writes its finalizer as field manager
    # "source-controller", not "gotk-source-controller" (core/managedfields.DEFAULT_CONTROLLERS),
    # so plain verify reads it as a person's addition to the HelmRepository: a gap outside
    # HelmRelease verify, ignored here by name so this test checks what it is about.
    spec = VerifySpec(timeout=180, ignore=(IgnoreRule(kind="HelmRepository", path="metadata.finalizers"),))
    try:
        flux.start()
        served = helmrepo.ensure_repo(repo_state, charts)
        repo = tmp_path / "repo"
        desired = write_repo(repo, served.url)
        for o in desired:
            kube.apply(o.body)

        # -- healthy: the release at the version and values git declares, its objects healthy
        t0 = time.monotonic()
        report = wait_converged(kube, desired, spec)
        print(f"\nverify converged with the HelmRelease in {time.monotonic() - t0:.2f}s")
        assert report.converged, problems(report)
        s = report.summary()
        assert (s["objects"], s["verified"], s["rendered"], s["rendered_verified"]) == (2, 2, 2, 2), s
        hr = next(v for v in report.verdicts if v.desired.ref.kind == "HelmRelease")
        assert "release apps/web v1 deployed, chart tiny 0.1.0" in hr.health.message, hr.health
        assert sorted(str(r.ref) for r in hr.rendered) == ["ConfigMap/apps/web-settings", "Deployment/apps/web-web"]
        text = json.dumps(report.to_dict())
        assert "from-git" not in text  # values stay in Helm's Secret, never in the report

        # -- a rendered Deployment deleted (helm-controller v1.4.3 leaves drift alone by default)
        assert kube.delete("apps/v1", "Deployment", "web-web", "apps")
        wait_for(lambda: kube.get("apps/v1", "Deployment", "web-web", "apps") is None, what="Deployment deleted")
        # helm-controller may be in one of its periodic reconciles (Ready=Unknown, "Fulfilling
        # prerequisites") at this moment: judge the HelmRelease once it is Ready again
        wait_for(lambda: release_ready(kube, "web"), timeout=120, what="HelmRelease web Ready again")
        report = check(kube, desired, spec)
        assert not report.converged
        assert problems(report) == [
            f"Deployment/apps/web-web: missing from the cluster (rendered by HelmRelease flux-system/web at {HR_FILE}:1)"
        ], problems(report)
        s = report.summary()
        assert (s["objects"], s["verified"], s["unhealthy"], s["rendered"], s["rendered_verified"]) == (2, 1, 1, 2, 1), s

        # -- git moves on before the cluster does: another chart version, then other values
        moved = write_repo(repo, served.url, version="0.2.0")
        lines = problems(check(kube, moved, spec))
        assert any(
            f"helm-controller installed chart tiny 0.1.0; git declares version 0.2.0 at {HR_FILE}:{VERSION_LINE}" in p
            for p in lines
        ), lines
        moved = write_repo(repo, served.url, replicas=3)
        lines = problems(check(kube, moved, spec))
        assert any(
            "helm-controller installed values with digest sha256:" in p and f"(spec.values at {HR_FILE}:{VALUES_LINE})" in p
            for p in lines
        ), lines

        # -- a chart version the repository does not have, applied: helm-controller's message and the line
        bad = write_repo(repo, served.url, version="9.9.9")
        kube.apply(next(o for o in bad if o.ref.kind == "HelmRelease").body)

        def says_no_version() -> list[str]:
            found = [p for p in problems(check(kube, bad, spec)) if "9.9.9" in p and "not ready" in p]
            return found

        t1 = time.monotonic()
        lines = wait_for(says_no_version, timeout=90, what="verify reports the missing chart version")
        print(f"missing chart version reported by verify after {time.monotonic() - t1:.2f}s: {lines[0]}")
        assert f"change spec.chart.spec.version at {HR_FILE}:{VERSION_LINE}" in lines[0], lines
        live = kube.get(HELM_API, "HelmRelease", "web", NS)
        assert live is not None
    finally:
        flux.stop()
        helmrepo.stop_repo(repo_state)
        kube.close()
        cluster.delete()
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
