"""Issue 3 end to end: `rebuild up` from git to a verified cluster, with the real local
control plane, rebuild's git server, the real Flux controllers and the real Pulumi engine."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import process
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from tests.conftest import EXAMPLE_OBJECTS, REPO, assert_example_phases
from tests.kubectl import kubectl, sed_editor, suspend_flux
from tests.procs import stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"


def rebuild(args: list[str], state: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


# What the example's HelmReleases render (charts/status-page from the served chart repository with
# the demo overlay's values patch, charts/queue-worker from git) and its SOPS-encrypted Secrets.
HELM_RENDERED = {
    "HelmRelease shop/status-page": {
        "ConfigMap/shop/status-page-content",
        "Service/shop/status-page",
        "Deployment/shop/status-page",
    },
    "HelmRelease payments/queue-worker": {"ConfigMap/payments/queue-worker-settings", "Deployment/payments/queue-worker"},
}
SOPS_SECRETS = {
    ("payments", "queue-broker"): "apps/base/queue-worker/broker-credentials.sops.yaml",
    ("observability", "grafana-admin"): "apps/base/grafana/admin-credentials.sops.yaml",
}


def assert_helm_and_sops_rebuilt(config: Path, state: Path, res: dict[str, Any], toolchain: Any) -> None:
    """Issue 13: both HelmReleases Ready and every object they rendered verified; the SOPS Secrets
    Flux decrypted equal the plaintext `sops -d` gives with the example's key."""
    objects = {f"{o['kind']} {o['namespace']}/{o['name']}": o for o in res["verify"]["objects"]}
    for release, rendered in HELM_RENDERED.items():
        hr = objects[release]
        assert hr["ok"] and hr["health"]["status"] == "healthy" and "deployed" in hr["health"]["message"], hr
        assert {r["ref"] for r in hr["rendered"]} == rendered and all(r["ok"] and r["present"] for r in hr["rendered"]), hr
    summary = res["verify"]["summary"]
    assert summary["rendered"] == summary["rendered_verified"] == sum(len(r) for r in HELM_RENDERED.values())
    kubeconfig = state / "clusters" / "demo" / "kubeconfig"
    shop = json.loads(kubectl(kubeconfig, "-n", "shop", "get", "deployment/status-page", "-o", "json"))
    assert shop["spec"]["replicas"] == 2  # the demo overlay's values patch, not the HelmRelease's 1
    env = dict(os.environ, SOPS_AGE_KEY_FILE=str(config.parent / "demo-sops.agekey"))
    sops = str(toolchain.binary("sops"))
    for (ns, name), file in SOPS_SECRETS.items():
        plain = yaml.safe_load(
            subprocess.run([sops, "-d", str(config.parent / file)], env=env, capture_output=True, text=True, check=True).stdout
        )["stringData"]
        live = json.loads(kubectl(kubeconfig, "-n", ns, "get", f"secret/{name}", "-o", "json"))["data"]
        assert {k: base64.b64decode(v).decode() for k, v in live.items()} == plain, f"Secret {ns}/{name}"
        assert not any(v.startswith("ENC[") for v in plain.values())


def test_up_converges_then_drift_is_reported_and_reverted(example: tuple[Path, Path], toolchain: Any) -> None:
    config, state = example
    r = rebuild(["-o", "json", "--config", str(config), "up"], state)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["converged"] is True
    assert_example_phases([p["name"] for p in res["phases"]])
    assert all(p["status"] == "ok" and p["seconds"] > 0 for p in res["phases"])
    objects = res["verify"]["objects"]
    assert len(objects) == EXAMPLE_OBJECTS
    assert all(o["ok"] and o["present"] and o["health"]["status"] == "healthy" for o in objects)
    assert res["sources"][0]["revision"] and res["sources"][0]["url"].startswith("http://127.0.0.1:")
    assert_helm_and_sops_rebuilt(config, state, res, toolchain)

    again = rebuild(["-o", "json", "--config", str(config), "up"], state)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["nothing_changed"] is True

    kubeconfig = state / "clusters" / "demo" / "kubeconfig"
    suspend_flux(kubeconfig)
    # A real `kubectl scale`: the API server records it on the /scale subresource under "kubectl".
    kubectl(kubeconfig, "-n", "shop", "scale", "deployment/cart", "--replicas=5")
    v = rebuild(["--config", str(config), "verify", "--timeout", "2"], state)
    assert v.returncode == 1, v.stdout + v.stderr
    assert (
        "Deployment/shop/cart: field spec.replicas is 5 live, 3 in git "
        "(apps/overlays/demo/kustomization.yaml:25); changed by kubectl (Update, scale)"
    ) in v.stdout
    vj = json.loads(rebuild(["-o", "json", "--config", str(config), "verify", "--timeout", "0"], state).stdout)
    cart = next(o for o in vj["objects"] if o["ref"] == "Deployment/shop/cart")
    assert cart["diffs"][0]["path"] == "spec.replicas" and cart["diffs"][0]["git"] == 3 and cart["diffs"][0]["live"] == 5

    # `up` against a suspended Kustomization says so at once instead of waiting for a timeout.
    paused = rebuild(["--config", str(config), "up"], state)
    assert paused.returncode == 2, paused.stderr[-2000:]
    assert "Flux Kustomization(s) demo in flux-system are suspended" in paused.stderr
    assert "flux resume kustomization demo -n flux-system" in paused.stderr

    # What `flux resume` does, with kubectl: unsuspend and ask for a reconcile now.
    resume = {"spec": {"suspend": False}, "metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": str(time.time())}}}
    kubectl(
        kubeconfig,
        "-n",
        "flux-system",
        "patch",
        "kustomizations.kustomize.toolkit.fluxcd.io",
        "demo",
        "--type=merge",
        "-p",
        json.dumps(resume),
    )
    ok = rebuild(["--config", str(config), "verify", "--timeout", "90"], state)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{EXAMPLE_OBJECTS}/{EXAMPLE_OBJECTS} objects verified" in ok.stdout


def test_broken_revision_is_refused_before_touching_a_cluster(example: tuple[Path, Path]) -> None:
    config, state = example
    repo = config.parent
    (repo / "apps/base/cart/broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n")
    (repo / "apps/base/cart/widget.yaml").write_text(
        "apiVersion: widgets.example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\n"
    )
    (repo / "apps/base/cart/dup.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: cart\n  namespace: shop\n"
    )
    kust = repo / "apps/base/cart/kustomization.yaml"
    kust.write_text(kust.read_text() + "  - broken.yaml\n  - widget.yaml\n  - dup.yaml\n")
    for cmd in (["plan"], ["up"]):
        r = rebuild(["--config", str(config), *cmd], state)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        assert (
            "apps/base/cart/broken.yaml:5: invalid YAML: did not find expected ',' or ']' "
            "(while parsing a flow sequence at line 4)"
        ) in r.stderr
        assert "apps/base/cart/widget.yaml:1: Widget/shop/w: kind Widget (widgets.example.com/v1) is not defined" in r.stderr
        assert "apps/base/cart/dup.yaml:1: ServiceAccount/shop/cart is declared twice (first at " in r.stderr
    assert not (state / "clusters" / "demo").exists()  # nothing was created


def test_apiserver_killed_during_up_then_second_up_completes(example: tuple[Path, Path]) -> None:
    config, state = example
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rebuild.cli", "--config", str(config), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    platform_started = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("· platform:"):
                platform_started.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert platform_started.wait(180), "".join(lines[-20:])
    cluster = LocalCluster("demo", root=state)
    api = next(c for c in cluster.status().components if c.name == "kube-apiserver")
    assert api.pid
    os.kill(api.pid, signal.SIGKILL)
    proc.wait(300)
    t.join(5)
    assert proc.returncode == 2, "".join(lines[-20:])  # 2: an unreachable service
    # rebuild's own report is one error line and a fix, not a traceback (the Pulumi programs'
    # output, relayed as `· rebuild-...` or `· <project>:` progress lines, may show the program's own).
    own = [ln for ln in lines if not ln.startswith(("· rebuild-", "· cluster-classes:", "· cluster-facts:"))]
    assert "Traceback" not in "".join(own)
    # One error: rebuild's, naming the stack (Pulumi's own `error:` lines are quoted under it), and one fix.
    errors = [ln for ln in own if ln.startswith("error: stack ")]
    assert len(errors) == 1 and errors[0].startswith("error: stack rebuild-platform/demo: "), "".join(own[-20:])
    fixes = [ln for ln in own if ln.strip().startswith("fix: ")]
    assert len(fixes) == 1, "".join(own[-20:])

    # Restart the API server (the provider restarts a degraded cluster on its etcd data) and rerun.
    assert cluster.status().state == "degraded"
    cluster.create()
    r = rebuild(["-o", "json", "--config", str(config), "up"], state)
    assert r.returncode == 0, r.stderr[-3000:]
    rerun = json.loads(r.stdout)
    assert rerun["converged"] is True
    objects = rerun["verify"]["objects"]
    assert len(objects) == EXAMPLE_OBJECTS
    assert all(o["ok"] and o["present"] and o["health"]["status"] == "healthy" for o in objects)
    # Nothing duplicated: one object per desired identity, one of each Flux controller, one Pulumi resource per URN.
    kube = Kube.from_kubeconfig(cluster.kubeconfig())
    names = [d["metadata"]["name"] for d in kube.list("apps/v1", "Deployment", "shop")]
    assert sorted(names) == ["cart", "frontend", "search", "status-page"]  # status-page: the HelmRelease's
    flux = json.loads((state / "clusters/demo/flux/flux.json").read_text())
    alive = [p for p in flux["processes"] if process.alive(process.ProcRecord.from_dict(p))]
    assert sorted(p["name"] for p in alive) == ["helm-controller", "kustomize-controller", "source-controller"]
    for project in ("rebuild-cluster", "rebuild-platform"):
        stack_file = state / "pulumi" / ".pulumi" / "stacks" / project / "demo.json"
        urns = [res["urn"] for res in json.loads(stack_file.read_text())["checkpoint"]["latest"]["resources"]]
        assert len(urns) == len(set(urns)), project


def test_two_sources_each_bootstrapped_as_its_own_reconciler_source(tmp_path: Path, toolchain: Any) -> None:
    """A platform repo and an apps repo: one GitRepository + Kustomization each, one verified cluster."""
    platform, apps = tmp_path / "platform-repo", tmp_path / "apps-repo"
    shutil.copytree(EXAMPLE / "infrastructure", platform / "infrastructure")
    shutil.copytree(EXAMPLE / "infra", platform / "infra")  # the shop's priority class comes from a stack
    shutil.copytree(EXAMPLE / "apps", apps / "apps")
    # the apps repo holds the charts too, served as HelmRepository flux-system/apps-charts; its
    # HelmReleases name this repo's sources (the example's name theirs after source `demo`)
    shutil.copytree(EXAMPLE / "charts", apps / "charts")
    for release, old, new in (
        ("status-page", "name: demo-charts", "name: apps-charts"),
        ("queue-worker", "name: demo, namespace", "name: apps, namespace"),
    ):
        f = apps / "apps" / "base" / release / "helmrelease.yaml"
        assert old in f.read_text()
        f.write_text(f.read_text().replace(old, new))
    state = tmp_path / "state"
    config = tmp_path / "rebuild.yaml"
    config.write_text(
        "sources:\n"
        f"  - {{name: platform, url: {platform}, branch: main, path: infrastructure}}\n"
        f"  - {{name: apps, url: {apps}, branch: main, path: apps/overlays/demo, charts: charts}}\n"
        "cluster: {provider: local, name: multi, nodes: 2}\n"
        "stacks:\n"
        "  - cluster\n"
        "  - {name: cluster-classes, source: platform, path: infra/cluster-classes,"
        " config_from: {'kubernetes:kubeconfig': cluster.kubeconfig}}\n"
        "  - platform\n"
        f"reconciler: {{kind: flux, interval: 1m, sops_age_key_file: {EXAMPLE / 'demo-sops.agekey'}}}\n"
        "verify: {timeout: 3m}\n"
    )
    try:
        r = rebuild(["-o", "json", "--config", str(config), "up"], state)
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads(r.stdout)
        assert res["converged"] is True
        assert sorted(s["name"] for s in res["sources"]) == ["apps", "platform"]
        assert len(res["verify"]["objects"]) == EXAMPLE_OBJECTS
        # every object's source names the repo it came from
        sources = {o["ref"]: o["source"] for o in res["verify"]["objects"]}
        assert sources["Namespace/shop"].startswith("platform:infrastructure/")
        assert sources["Deployment/shop/cart"].startswith("apps:apps/base/cart/")
        kube = Kube.from_kubeconfig(state / "clusters" / "multi" / "kubeconfig")
        for name in ("platform", "apps"):
            assert kube.get("source.toolkit.fluxcd.io/v1", "GitRepository", name, "flux-system") is not None
            assert kube.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, "flux-system") is not None

        # capture with two sources edits the apps repo's own file (no `apps:` label in the path)
        kubeconfig = state / "clusters" / "multi" / "kubeconfig"
        kubectl(kubeconfig, "-n", "shop", "scale", "deployment/cart", "--replicas=7")
        with config.open("a") as f:
            f.write("capture: {source: apps, namespaces: [shop, payments]}\n")
        r = rebuild(["-o", "json", "--config", str(config), "capture", "--dry-run"], state)
        assert r.returncode == 1, r.stderr[-3000:]
        cap = json.loads(r.stdout)
        assert cap["files"] == ["apps/overlays/demo/kustomization.yaml"], (cap["listed"], cap["report"]["findings"])
        assert "+    count: 7" in cap["diff"]

        # Only a Secret's value drifted: nothing can be written to git, so no commit and no PR (exit 1: drift).
        kubectl(kubeconfig, "-n", "shop", "scale", "deployment/cart", "--replicas=3")
        value = "hand-rotated-4411"
        # `kubectl edit` with an EDITOR script that adds the key (the value comes through the environment).
        editor = sed_editor(tmp_path, "secret", r"s/^data:\$/data:\n  password: $NEW_B64/")
        b64 = base64.b64encode(value.encode()).decode()
        kubectl(kubeconfig, "-n", "payments", "edit", "secret/payments-db", env_extra={"NEW_B64": b64, **editor})
        r = rebuild(["-o", "json", "--config", str(config), "capture"], state)
        assert r.returncode == 1, r.stderr[-3000:]
        cap = json.loads(r.stdout)
        assert cap["action"] == "nothing-to-write" and cap["files"] == [] and cap["pull_request"] is None, cap
        assert value not in r.stdout + r.stderr
    finally:
        LocalCluster("multi", root=state).delete(purge=True)
        stop_servers(state)
