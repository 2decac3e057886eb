"""The `kubeconfig` provider: an existing cluster, given by a kubeconfig file and a context.

This is how every user of a cloud cluster runs rebuild, so it is tested through the CLI
against a real API server: a local cluster (the project's own LocalCluster, started outside
rebuild's state dir, like a cluster some other tool made) is described by a user-style
kubeconfig (KUBECONFIG) with two contexts: the current one points at nothing, so only a
correctly chosen `cluster.context` can work; the CA and client certificate are files next to
the kubeconfig, referenced relatively, as kubeadm and many installers write them.

What runs where: on this provider the platform stack installs the Flux controllers in-cluster
as Deployments (docs/reconcilers.md). This cluster's nodes are kwok fakes, so those Pods are
reported Running but never execute: alone, `up` would wait for Flux and fail after 300 s
("Flux did not become Ready at the expected revision"). The test therefore runs the same
controller binaries as host processes against the cluster (FluxLocal, exactly what the local
provider does), started before `up`: they play the Pods a real cluster would run. Everything
else is rebuild as a user runs it: `cluster status`, `up`, `verify`, real `kubectl` drift,
`capture --dry-run`, and a `drill`, which must refuse (exit 2) to create or tear down a cluster
it did not create, as `cluster down` must refuse to stop it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.reconcilers.flux_local import FluxLocal
from tests.conftest import EXAMPLE_OBJECTS, REPO, assert_example_phases
from tests.procs import stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"
CONTEXT = "team-prod"


def write_user_kubeconfig(admin: Path, folder: Path) -> Path:
    """A kubeconfig like a user has: files beside it, a named context, another one current."""
    src = yaml.safe_load(admin.read_text())
    cluster, user = src["clusters"][0]["cluster"], src["users"][0]["user"]
    folder.mkdir(parents=True)
    for key, name in (("certificate-authority-data", "ca.crt"),):
        (folder / name).write_bytes(base64.b64decode(cluster[key]))
    for key, name in (("client-certificate-data", "admin.crt"), ("client-key-data", "admin.key")):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64decode(user[key]))
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kwok-prod", "cluster": {"server": cluster["server"], "certificate-authority": "ca.crt"}},
            {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}},
        ],
        "users": [{"name": "prod-admin", "user": {"client-certificate": "admin.crt", "client-key": "admin.key"}}],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": "kwok-prod", "user": "prod-admin"}},
            {"name": "decoy", "context": {"cluster": "nowhere", "user": "prod-admin"}},
        ],
        "current-context": "decoy",
    }
    path = folder / "config"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return path


def run(argv: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def test_up_verify_capture_on_an_existing_cluster_and_drill_refuses_it(
    cluster_factory: Any, tmp_path: Path, toolchain: Any
) -> None:
    existing: LocalCluster = cluster_factory("ext", nodes=2)
    existing.create()
    kubeconfig = write_user_kubeconfig(existing.kubeconfig(), tmp_path / "kube")
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    cfg = yaml.safe_load((repo / "rebuild.yaml").read_text())
    cfg["cluster"] = {"provider": "kubeconfig", "name": "prod", "context": CONTEXT}
    config = repo / "rebuild.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    state = tmp_path / "rebuild-state"  # rebuild's own state dir: the cluster is not in it
    env = dict(os.environ, REBUILD_STATE_DIR=str(state), KUBECONFIG=str(kubeconfig))
    env.pop("CI", None)
    flux = FluxLocal(tmp_path / "host-flux", existing.kubeconfig(), toolchain=toolchain)

    def rebuild(*args: str) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "rebuild.cli", *args], env)

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        r = run(["kubectl", "--context", CONTEXT, *args], env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r

    kube = Kube.from_kubeconfig(existing.kubeconfig())
    try:
        # the context is what decides: the current one (decoy) does not answer, the named one does
        st = rebuild("cluster", "status", "--provider", "kubeconfig", "--name", "prod", "--context", CONTEXT, "-o", "json")
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["state"] == "running"
        assert json.loads(st.stdout)["server"] == existing.status().server
        decoy = rebuild("cluster", "status", "--provider", "kubeconfig", "--name", "prod", "-o", "json")
        assert decoy.returncode == 1 and json.loads(decoy.stdout)["server"] == "https://127.0.0.1:1"

        flux.start()  # stands in for the in-cluster Pods kwok cannot run (see the module docstring)

        t0 = time.monotonic()
        up = rebuild("--config", str(config), "up", "-o", "json")
        up_seconds = time.monotonic() - t0
        assert up.returncode == 0, up.stderr[-4000:]
        res = json.loads(up.stdout)
        assert res["converged"] is True
        assert_example_phases([p["name"] for p in res["phases"]])
        assert res["verify"]["summary"]["verified"] == res["verify"]["summary"]["objects"] == EXAMPLE_OBJECTS
        # rebuild made no cluster: its state dir holds only the flattened kubeconfigs for "prod"
        assert sorted(p.name for p in (state / "clusters").iterdir()) == ["prod"]
        assert not (state / "clusters" / "prod" / "cluster.json").exists()
        flat = yaml.safe_load((state / "clusters" / "prod" / "kubeconfig").read_text())
        assert flat["current-context"] == CONTEXT and "certificate-authority-data" in flat["clusters"][0]["cluster"]
        assert oct((state / "clusters" / "prod" / "kubeconfig").stat().st_mode & 0o777) == "0o600"
        # on this provider the platform stack installed Flux in-cluster (Deployments), as documented
        for name in ("source-controller", "kustomize-controller"):
            assert kube.get("apps/v1", "Deployment", name, "flux-system") is not None, name
        print(f"\nup on the kubeconfig provider: {up_seconds:.1f}s")

        v = rebuild("--config", str(config), "verify", "--timeout", "0")
        assert v.returncode == 0, v.stdout + v.stderr
        assert f"{EXAMPLE_OBJECTS}/{EXAMPLE_OBJECTS} objects verified" in v.stdout

        # drift made with kubectl through the same context
        kubectl("-n", "flux-system", "patch", "kustomization", "demo", "--type", "merge", "-p", '{"spec":{"suspend":true}}')
        kubectl("-n", "shop", "scale", "deployment", "cart", "--replicas", "5")
        v2 = rebuild("--config", str(config), "verify", "--timeout", "0")
        assert v2.returncode == 1, v2.stdout + v2.stderr
        assert (
            "Deployment/shop/cart: field spec.replicas is 5 live, 3 in git "
            "(apps/overlays/demo/kustomization.yaml:25); changed by kubectl"
        ) in v2.stdout

        cap = rebuild("--config", str(config), "capture", "--dry-run", "-o", "json")
        assert cap.returncode == 1, cap.stderr[-3000:]
        cj = json.loads(cap.stdout)
        assert cj["action"] == "dry-run" and cj["drift"] is True
        cart = [f for f in cj["report"]["findings"] if f["object"] == "Deployment/shop/cart"]
        assert cart and cart[0]["path"] == "spec.replicas" and str(cart[0]["live"]) == "5", cj["report"]["findings"]
        assert cart[0]["manager"].startswith("kubectl")
        assert "apps/overlays/demo/kustomization.yaml" in cj["files"]
        assert "-    count: 3\n+    count: 5" in cj["diff"], cj["diff"]

        # a drill refuses: it would create a cluster and tear it down, and this one is not rebuild's
        before = sorted(p.relative_to(state).as_posix() for p in state.rglob("*"))
        t1 = time.monotonic()
        drill = rebuild("--config", str(config), "drill", "-o", "json")
        assert drill.returncode == 2, drill.stdout + drill.stderr
        assert "error: rebuild drill refuses cluster prod (provider kubeconfig, context team-prod)" in drill.stderr
        assert "nothing was created or deleted" in drill.stderr
        assert "fix: run drills with cluster.provider local" in drill.stderr
        assert "Traceback" not in drill.stderr and drill.stdout == ""
        assert time.monotonic() - t1 < 30
        drill_live = rebuild("--config", str(config), "drill", "--live", "--keep")
        assert drill_live.returncode == 2 and "rebuild drill refuses cluster prod" in drill_live.stderr
        after = sorted(p.relative_to(state).as_posix() for p in state.rglob("*"))
        assert after == before, sorted(set(after) ^ set(before))
        # checked, not assumed: the cluster runs on, with the manual change still there
        assert existing.status().state == "running"
        live_cart = kube.get("apps/v1", "Deployment", "cart", "shop")
        assert live_cart is not None and live_cart["spec"]["replicas"] == 5

        down = rebuild("cluster", "down", "--provider", "kubeconfig", "--name", "prod", "--context", CONTEXT)
        assert down.returncode == 2, down.stdout + down.stderr
        assert "rebuild does not delete it" in down.stderr and "fix:" in down.stderr
        assert existing.status().state == "running"
    finally:
        kube.close()
        flux.stop()
        stop_servers(state)
