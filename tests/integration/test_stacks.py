"""stacks/cluster and stacks/platform through the Automation API, against the real engine,
the real Python language host, the real Kubernetes provider and a real local cluster."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import process
from rebuild.adapters.kube import Kube
from rebuild.adapters.pulumi import Pulumi
from rebuild.clusters.local import LocalCluster
from rebuild.core.errors import ConfigError, ProgramError
from tests.conftest import REPO, unique

pytestmark = pytest.mark.integration

CLUSTER = REPO / "stacks" / "cluster"
PLATFORM = REPO / "stacks" / "platform"


def _cleanup_stack(p: Pulumi, project: Path, stack: str) -> None:
    try:
        p.destroy(project, stack)
    finally:
        p.remove(project, stack)
        (project / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)


def test_cluster_and_platform_up_read_back_and_destroy(state_dir: Path, toolchain: Any) -> None:
    p = Pulumi(root=state_dir)
    stack = unique("it")
    name = unique("pc")
    try:
        res = p.up(CLUSTER, stack, {"name": name, "nodes": 2, "stateDir": str(state_dir)})
        assert res.summary.get("create") == 2
        assert res.outputs["kubeconfig"] == "[secret]"  # never shown
        kubeconfig = p.output(CLUSTER, stack, "kubeconfig")
        assert yaml.safe_load(kubeconfig)["kind"] == "Config"
        cluster = LocalCluster(name, root=state_dir)
        assert cluster.status().state == "running"
        # recorded with their start time, so a pid reused later by another process is not mistaken for them
        procs = [process.ProcRecord(c.name, c.pid, process.start_ticks(c.pid), "") for c in cluster.status().components if c.pid]

        pres = p.up(
            PLATFORM,
            stack,
            {
                "clusterStack": f"organization/rebuild-cluster/{stack}",
                "namespaces": ["rebuild-system", "shop", "payments"],
                "clusterName": name,
            },
        )
        assert pres.summary.get("create") == 6  # stack, provider, 3 namespaces, configmap
        kube = Kube.from_kubeconfig(cluster.kubeconfig())
        for ns in ("rebuild-system", "shop", "payments"):
            got = kube.get("v1", "Namespace", ns)
            assert got is not None and got["status"]["phase"] == "Active"
        cm = kube.get("v1", "ConfigMap", "rebuild-platform", "rebuild-system")
        assert cm is not None
        assert cm["data"]["cluster"] == name
        assert cm["data"]["namespaces"] == "rebuild-system,shop,payments"

        # A second up changes nothing.
        again = p.up(PLATFORM, stack)
        assert set(again.summary) == {"same"}

        p.destroy(PLATFORM, stack)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and kube.get("v1", "Namespace", "shop") is not None:
            time.sleep(0.5)
        assert kube.get("v1", "Namespace", "shop") is None
        assert kube.get("v1", "ConfigMap", "rebuild-platform", "rebuild-system") is None

        p.destroy(CLUSTER, stack)
        assert cluster.status().state == "absent"
        assert procs
        for rec in procs:
            assert not process.alive(rec), f"{rec.name} (pid {rec.pid}) is still running"
    finally:
        for project in (PLATFORM, CLUSTER):
            try:
                _cleanup_stack(p, project, stack)
            except Exception:
                pass
        LocalCluster(name, root=state_dir).delete(purge=True)


def test_malformed_stack_config_is_a_config_error(state_dir: Path, toolchain: Any) -> None:
    p = Pulumi(root=state_dir)
    stack = unique("bad")
    try:
        with pytest.raises(ConfigError) as err:
            p.up(CLUSTER, stack, {"name": unique("x"), "nodes": "many", "stateDir": str(state_dir)})
        assert "nodes" in str(err.value) and err.value.fix and f"Pulumi.{stack}.yaml" in err.value.fix
        assert not list(state_dir.glob("clusters/*")), "a cluster was created"
    finally:
        p.remove(CLUSTER, stack)
        (CLUSTER / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)


def test_program_error_is_reported_with_the_reason(state_dir: Path, toolchain: Any) -> None:
    p = Pulumi(root=state_dir)
    stack = unique("noref")
    try:
        with pytest.raises(ProgramError) as err:
            p.up(PLATFORM, stack, {})  # neither clusterStack nor kubeconfig
        assert "clusterStack" in str(err.value)
    finally:
        p.remove(PLATFORM, stack)
        (PLATFORM / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)


def test_plain_pulumi_cli_runs_the_cluster_stack(state_dir: Path, toolchain: Any) -> None:
    """`pulumi up` in stacks/cluster with only the documented env/config lines (README)."""
    p = Pulumi(root=state_dir)
    p._ensure_backend()
    env = dict(os.environ)
    # As the README says: pulumi-kubernetes leaves a copy of its kubeconfig (client key included)
    # in TMPDIR each time a provider is configured; it went to /tmp, 8 files a suite run.
    tmp = state_dir / "pulumi-tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    env.update(
        PATH=f"{toolchain.bin_dir('pulumi')}:{env['PATH']}",  # type: ignore[attr-defined]
        PULUMI_HOME=str(toolchain.pulumi_home),  # type: ignore[attr-defined]
        PULUMI_BACKEND_URL=(state_dir / "pulumi").as_uri(),
        PULUMI_CONFIG_PASSPHRASE_FILE=str(p.passphrase_file),
        PULUMI_SKIP_UPDATE_CHECK="true",
        TMPDIR=str(tmp),
    )
    stack = unique("cli")
    name = unique("cli")

    def pulumi(*args: str, cwd: Path = CLUSTER) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pulumi", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

    try:
        assert pulumi("stack", "init", stack, "--non-interactive").returncode == 0
        assert pulumi("config", "set", "name", name, "--stack", stack).returncode == 0
        assert pulumi("config", "set", "stateDir", str(state_dir), "--stack", stack).returncode == 0
        up = pulumi("up", "--yes", "--non-interactive", "--stack", stack)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "warning" not in up.stdout.lower()
        assert LocalCluster(name, root=state_dir).status().state == "running"
        out = pulumi("stack", "output", "server", "--stack", stack)
        assert out.stdout.strip().startswith("https://127.0.0.1:")

        # stacks/platform with the one documented config line (the stack reference).
        assert pulumi("stack", "init", stack, "--non-interactive", cwd=PLATFORM).returncode == 0
        ref = f"organization/rebuild-cluster/{stack}"
        assert pulumi("config", "set", "clusterStack", ref, "--stack", stack, cwd=PLATFORM).returncode == 0
        pup = pulumi("up", "--yes", "--non-interactive", "--stack", stack, cwd=PLATFORM)
        assert pup.returncode == 0, pup.stdout + pup.stderr
        kube = Kube.from_kubeconfig(LocalCluster(name, root=state_dir).kubeconfig())
        assert kube.get("v1", "ConfigMap", "rebuild-platform", "rebuild-system") is not None
        pdown = pulumi("destroy", "--yes", "--non-interactive", "--stack", stack, cwd=PLATFORM)
        assert pdown.returncode == 0, pdown.stdout + pdown.stderr

        down = pulumi("destroy", "--yes", "--non-interactive", "--stack", stack)
        assert down.returncode == 0, down.stdout + down.stderr
        assert LocalCluster(name, root=state_dir).status().state == "absent"
    finally:
        pulumi("stack", "rm", stack, "--yes", "--force", "--non-interactive", cwd=PLATFORM)
        pulumi("stack", "rm", stack, "--yes", "--force", "--non-interactive")
        (CLUSTER / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)
        (PLATFORM / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)
        LocalCluster(name, root=state_dir).delete(purge=True)


def test_platform_stack_bootstraps_argocd_at_the_api_level(state_dir: Path, toolchain: Any) -> None:
    """Argo CD's real install manifests and Application objects, accepted by a real API server.

    (Argo CD's controller cannot be built here, so sync itself is not exercised; docs/reconcilers.md.)
    """
    p = Pulumi(root=state_dir)
    stack = unique("argo")
    name = unique("ac")
    try:
        p.up(CLUSTER, stack, {"name": name, "stateDir": str(state_dir)})
        p.up(
            PLATFORM,
            stack,
            {
                "clusterStack": f"organization/rebuild-cluster/{stack}",
                "reconciler": "argocd",
                "argocdInstallManifest": str(toolchain.argocd_install_manifest()),  # type: ignore[attr-defined]
                "sources": [{"name": "demo", "url": "http://127.0.0.1:1/demo.git", "branch": "main", "path": "clusters/demo"}],
            },
        )
        kube = Kube.from_kubeconfig(LocalCluster(name, root=state_dir).kubeconfig())
        for crd in ("applications.argoproj.io", "appprojects.argoproj.io"):
            got = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd)
            assert got is not None
            conds = {c["type"]: c["status"] for c in got["status"]["conditions"]}
            assert conds["Established"] == "True"
        app = kube.get("argoproj.io/v1alpha1", "Application", "demo", "argocd")
        assert app is not None
        assert app["spec"]["source"] == {
            "repoURL": "http://127.0.0.1:1/demo.git",
            "targetRevision": "main",
            "path": "clusters/demo",
        }
        assert kube.get("argoproj.io/v1alpha1", "AppProject", "rebuild", "argocd") is not None
        assert kube.get("apps/v1", "Deployment", "argocd-server", "argocd") is not None
    finally:
        for project in (PLATFORM, CLUSTER):
            try:
                _cleanup_stack(p, project, stack)
            except Exception:
                pass
        LocalCluster(name, root=state_dir).delete(purge=True)
