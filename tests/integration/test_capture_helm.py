"""capture and HelmReleases against the real helm-controller on a real local cluster (issue 13 point 4).

Two HelmReleases of a tiny chart served by rebuild's chart repository, from a repository written
the way people write it (tests/unit/test_capture_helm.py ``write_repo``: no namespaces, an
overlay that sets one release's image tag with a patch, four-space indentation, flow style,
comments). helm-controller installs them. Then `rebuild capture --dry-run` (the real CLI):

- with no manual change: no drift, and every object the charts made is covered by git;
- after `kubectl scale`, `kubectl set image`, `kubectl patch` and `kubectl label` on what the
  charts rendered: each change is a finding whose source is the HelmRelease's file:line; the
  three the chart maps 1:1 are edited in ``values:`` (the HelmRelease's own file, and the
  overlay's patch for the tag it sets), the label is listed with the HelmRelease's file:line
  and "change the chart or its values";
- the diff applied to git and reconciled by helm-controller (a new release revision): the
  changes hold in the cluster and capture finds only the label left;
- the merged git rebuilt into a brand-new cluster (its own Flux; Helm installs revision 1 from
  git alone): the replicas, image tag and greeting changed by hand are there, the label is not.
Nothing is left running afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import gitserver, helmrepo
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.desired.helm import values_digest
from rebuild.desired.render import render
from rebuild.reconcilers.flux_local import FluxLocal
from rebuild.recover.helmverify import latest_snapshot
from tests.conftest import cli_env
from tests.integration.test_flux_local import wait_for
from tests.integration.test_helm_local import HELM_API, NS, release_ready, write_chart
from tests.kubectl import kubectl
from tests.procs import processes_naming
from tests.unit.test_capture_helm import (
    PATH,
    SHOP_PATCH,
    SHOP_PATCH_TAG_LINE,
    WEB,
    WEB_GREETING_LINE,
    WEB_LINE,
    WEB_REPLICAS_LINE,
    write_repo,
)

pytestmark = pytest.mark.integration

CONFIG = """\
sources:
  - name: demo
    url: repo
    path: {path}
cluster:
  provider: local
  name: {name}
capture:
  new_objects_dir: apps/captured
"""
SCALED = ("Deployment/apps/web-web", "spec.replicas")
IMAGE = ("Deployment/shop/shop-web", "spec.template.spec.containers[name=web].image")
GREETING = ("ConfigMap/apps/web-settings", "data.greeting")
LABEL = ("Deployment/apps/web-web", "metadata.labels.team")


def apply_repo(kube: Kube, repo: Path) -> None:
    got = render(repo, PATH)
    assert not got.problems, got.problems
    for o in got.objects:
        kube.apply(o.body)


def capture(config: Path, state: Path) -> tuple[int, dict[str, Any]]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "rebuild.cli", "-o", "json", "--config", str(config), "capture", "--dry-run"],
        env=cli_env(state),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 1), r.stderr[-3000:]
    print(f"capture --dry-run: exit {r.returncode} in {time.monotonic() - t0:.2f}s")
    return r.returncode, json.loads(r.stdout)


def revision(kube: Kube, name: str) -> int:
    hr = kube.get(HELM_API, "HelmRelease", name, NS) or {}
    snap = latest_snapshot(hr.get("status") or {})
    return int(snap["version"]) if snap and snap.get("status") == "deployed" else 0


def rebuilt_in_fresh_cluster(cluster_factory: Any, toolchain: Any, repo: Path, flux_dir: Path) -> None:
    """Apply ``repo`` to a new cluster with its own Flux; the backported values hold there."""
    fresh: LocalCluster = cluster_factory("chelm-fresh")
    fresh.create()
    kube = Kube.from_kubeconfig(fresh.kubeconfig())
    flux = FluxLocal(flux_dir, fresh.kubeconfig(), toolchain=toolchain)
    try:
        flux.start()
        t0 = time.monotonic()
        apply_repo(kube, repo)
        for name in ("web", "shop"):
            wait_for(lambda n=name: revision(kube, n) == 1 and release_ready(kube, n), timeout=180, what=f"{name} installed")
        print(f"fresh cluster: both releases installed from the merged git in {time.monotonic() - t0:.2f}s")
        web = kube.get("apps/v1", "Deployment", "web-web", "apps") or {}
        shop = kube.get("apps/v1", "Deployment", "shop-web", "shop") or {}
        settings = kube.get("v1", "ConfigMap", "web-settings", "apps") or {}
        assert web["spec"]["replicas"] == 4
        assert shop["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27.3"
        assert settings["data"]["greeting"] == "hello from a hotfix"
        # the label was never backported (the chart does not render it), so it is not there
        assert "team" not in (web["metadata"].get("labels") or {})
    finally:
        flux.stop()
        kube.close()
        fresh.delete()


def test_capture_of_objects_helm_releases_rendered(cluster_factory: Any, state_dir: Path, tmp_path: Path, toolchain: Any) -> None:
    cluster: LocalCluster = cluster_factory("chelm")
    cluster.create()
    kubeconfig = cluster.kubeconfig()
    charts = tmp_path / "charts"
    write_chart(charts / "tiny")
    repo_state = tmp_path / "helmrepo"
    flux = FluxLocal(tmp_path / "flux", kubeconfig, toolchain=toolchain)
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        flux.start()
        served = helmrepo.ensure_repo(repo_state, charts)
        repo = tmp_path / "repo"
        write_repo(repo, served.url)
        config = tmp_path / "rebuild.yaml"
        config.write_text(CONFIG.format(path=PATH, name=cluster.name))
        t0 = time.monotonic()
        apply_repo(kube, repo)
        for name in ("web", "shop"):
            wait_for(lambda n=name: release_ready(kube, n), timeout=180, what=f"HelmRelease {name} Ready")
        print(f"\nboth HelmReleases Ready in {time.monotonic() - t0:.2f}s")
        web = kube.get("apps/v1", "Deployment", "web-web", "apps")
        shop = kube.get("apps/v1", "Deployment", "shop-web", "shop")
        assert web is not None and shop is not None
        # What helm-controller really records on what it rendered (not what rebuild assumes).
        assert web["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
        assert web["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"] == NS
        assert {m["manager"] for m in web["metadata"]["managedFields"]} >= {"helm-controller"}
        assert web["spec"]["replicas"] == 2
        assert shop["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"  # the overlay's tag

        # -- no manual change: covered by git, compared, nothing to report
        rc, res = capture(config, state_dir)
        report = res["report"]
        assert rc == 0 and res["drift"] is False, report["findings"]
        assert report["coverage"]["uncovered"] == [], report["coverage"]
        assert report["coverage"]["live"] == report["coverage"]["rebuildable"] >= 7
        unchecked = {u["object"] for u in report["unchecked"]}
        for obj in (
            "Deployment/apps/web-web",
            "ConfigMap/apps/web-settings",
            "Deployment/shop/shop-web",
            "ConfigMap/shop/shop-settings",
        ):
            assert obj not in unchecked, report["unchecked"]  # compared with Helm's record, not just counted
        assert "HelmChart/flux-system/flux-system-web" in unchecked  # helm-controller's own, covered

        # -- manual changes, with real kubectl
        kubectl(kubeconfig, "-n", "apps", "scale", "deployment/web-web", "--replicas=4")
        kubectl(kubeconfig, "-n", "shop", "set", "image", "deployment/shop-web", "web=nginx:1.27.3")
        kubectl(kubeconfig, "-n", "apps", "patch", "configmap/web-settings", "-p", '{"data":{"greeting":"hello from a hotfix"}}')
        kubectl(kubeconfig, "-n", "apps", "label", "deployment/web-web", "team=storefront")

        rc, res = capture(config, state_dir)
        assert rc == 1 and res["action"] == "dry-run"
        print("\n".join(f["message"] for f in res["report"]["findings"]))
        findings = {(f["object"], f["path"]): f for f in res["report"]["findings"]}
        assert set(findings) == {SCALED, IMAGE, GREETING, LABEL}, [f["message"] for f in res["report"]["findings"]]
        for f in findings.values():
            assert f["class"] == "human" and f["helm"]["release"] == f"{NS}/{'shop' if 'shop' in f['object'] else 'web'}"
        scaled = findings[SCALED]
        assert (scaled["git"], scaled["live"], scaled["manager"], scaled["subresource"]) == (2, 4, "kubectl", "scale")
        assert scaled["source"] == f"apps/base/web.yaml:{WEB_LINE}"
        assert scaled["helm"]["values"] == [
            {"path": "values.replicas", "git": 2, "live": 4, "source": f"apps/base/web.yaml:{WEB_REPLICAS_LINE}"}
        ]
        image = findings[IMAGE]
        assert (image["git"], image["live"], image["manager"]) == ("nginx:1.27", "nginx:1.27.3", "kubectl-set")
        assert image["source"] == "apps/base/shop.yaml:1"
        assert image["helm"]["values"] == [
            {
                "path": "values.image.tag",
                "git": "1.27",
                "live": "1.27.3",
                "source": f"apps/demo/shop-values.yaml:{SHOP_PATCH_TAG_LINE}",
            }
        ]
        assert findings[GREETING]["helm"]["values"][0]["path"] == "values.greeting"
        label = findings[LABEL]
        assert label["manager"] == "kubectl-label" and label["source"] == f"apps/base/web.yaml:{WEB_LINE}"
        assert label["helm"]["values"] == [] and "does not render this field" in label["helm"]["reason"]
        assert f"(HelmRelease flux-system/web, apps/base/web.yaml:{WEB_LINE}: change the chart or its values)" in label["message"]

        # the backport: values edited in place, nothing else
        assert res["files"] == ["apps/base/web.yaml", "apps/demo/shop-values.yaml"]
        changed = [ln for ln in res["diff"].splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert sorted(changed) == sorted(
            [
                "-        replicas: 2",
                "+        replicas: 4",
                "-        greeting: from-git   # shown on the index page",
                "+        greeting: hello from a hotfix   # shown on the index page",
                '-      tag: "1.27"      # bumped for the demo',
                '+      tag: "1.27.3"      # bumped for the demo',
            ]
        ), res["diff"]
        assert res["listed"] == [
            "Deployment/apps/web-web metadata.labels.team: not edited: rendered by HelmRelease flux-system/web "
            f"(apps/base/web.yaml:{WEB_LINE}): the chart does not render this field, so no value of the HelmRelease sets "
            "it today; change the chart or its values"
        ]
        body = res["body"]
        assert f"`apps/base/web.yaml:{WEB_REPLICAS_LINE}` (`values.replicas` of HelmRelease flux-system/web)" in body
        assert f"`apps/demo/shop-values.yaml:{SHOP_PATCH_TAG_LINE}` (`values.image.tag` of HelmRelease flux-system/shop)" in body
        assert f"`apps/base/web.yaml:{WEB_GREETING_LINE}` (`values.greeting` of HelmRelease flux-system/web)" in body

        # -- merged: the diff applied to git, helm-controller upgrades both releases, the changes hold
        subprocess.run(["git", "apply", "-p1", "-"], input=res["diff"], cwd=repo, text=True, check=True, capture_output=True)
        assert (repo / "apps/base/web.yaml").read_text() == WEB.replace("replicas: 2\n", "replicas: 4\n").replace(
            "greeting: from-git ", "greeting: hello from a hotfix "
        )
        assert (repo / "apps/demo/shop-values.yaml").read_text() == SHOP_PATCH.replace('"1.27"', '"1.27.3"')
        t1 = time.monotonic()
        apply_repo(kube, repo)
        for name in ("web", "shop"):
            wait_for(lambda n=name: revision(kube, n) == 2 and release_ready(kube, n), timeout=180, what=f"{name} upgraded")
        print(f"both releases upgraded to the backported values in {time.monotonic() - t1:.2f}s")
        # helm-controller installed exactly the backported values (its config digest of them)
        for name, values in (
            ("web", {"replicas": 4, "greeting": "hello from a hotfix", "image": {"tag": "1.27"}}),
            ("shop", {"replicas": 1, "image": {"repository": "nginx", "tag": "1.27.3"}}),
        ):
            snap = latest_snapshot((kube.get(HELM_API, "HelmRelease", name, NS) or {}).get("status") or {})
            assert snap is not None and snap["configDigest"] == values_digest(values), (name, snap)
        web = kube.get("apps/v1", "Deployment", "web-web", "apps") or {}
        shop = kube.get("apps/v1", "Deployment", "shop-web", "shop") or {}
        settings = kube.get("v1", "ConfigMap", "web-settings", "apps") or {}
        assert web["spec"]["replicas"] == 4
        assert shop["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27.3"
        assert settings["data"]["greeting"] == "hello from a hotfix"
        rc, res = capture(config, state_dir)
        left = [(f["object"], f["path"]) for f in res["report"]["findings"]]
        assert rc == 1 and left == [LABEL], [f["message"] for f in res["report"]["findings"]]
        assert res["files"] == []

        # -- rebuilt: the merged git into a brand-new cluster (a disaster after the merge); Helm
        # installs revision 1 from git's values alone, and the hand-made changes are there.
        rebuilt_in_fresh_cluster(cluster_factory, toolchain, repo, tmp_path / "flux-fresh")
    finally:
        flux.stop()
        helmrepo.stop_repo(repo_state)
        gitserver.stop_server(state_dir / "gitserver")
        kube.close()
        cluster.delete()
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
