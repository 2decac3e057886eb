"""The ``kind`` provider: Kubernetes in Docker, for users who have a container engine.

It wraps the kind CLI (create with a generated config file, delete, export kubeconfig).
Command construction is a pure function so it is unit-tested everywhere; running it
needs Docker (or podman) and the kindest/node image, which the machines rebuild is
developed on do not have, so its integration test skips with that reason.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rebuild.adapters.fs import atomic_write
from rebuild.clusters.base import ClusterStatus, validate_name
from rebuild.core.errors import ClusterError, ToolchainError
from rebuild.core.progress import Progress
from rebuild.core.state import StateLayout, state_root


def kind_config(nodes: int, api_port: int | None = None) -> dict[str, object]:
    """A kind Cluster config: one control plane, ``nodes - 1`` workers, API on 127.0.0.1."""
    networking: dict[str, object] = {"apiServerAddress": "127.0.0.1"}
    if api_port is not None:
        networking["apiServerPort"] = api_port
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": networking,
        "nodes": [{"role": "control-plane"}] + [{"role": "worker"}] * max(0, nodes - 1),
    }


def create_argv(kind: str, name: str, config: Path, kubeconfig: Path, image: str | None = None) -> list[str]:
    argv = [kind, "create", "cluster", "--name", name, "--config", str(config), "--kubeconfig", str(kubeconfig), "--wait", "120s"]
    if image:
        argv += ["--image", image]
    return argv


def delete_argv(kind: str, name: str, kubeconfig: Path) -> list[str]:
    return [kind, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)]


def kubeconfig_argv(kind: str, name: str) -> list[str]:
    return [kind, "get", "kubeconfig", "--name", name]


def list_argv(kind: str) -> list[str]:
    return [kind, "get", "clusters"]


def container_engine() -> str | None:
    """The first usable container engine, or None. ``docker --version`` alone proves nothing: ask the daemon."""
    for engine in ("docker", "podman"):
        exe = shutil.which(engine)
        if not exe:
            continue
        try:
            proc = subprocess.run([exe, "info", "--format", "{{.ID}}"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0:
            return engine
    return None


@dataclass
class KindCluster:
    name: str
    nodes: int = 1
    api_port: int | None = None
    image: str | None = None
    root: Path = field(default_factory=state_root)
    provider: str = "kind"

    def __post_init__(self) -> None:
        validate_name(self.name)

    @property
    def dir(self) -> Path:
        return StateLayout(self.root).cluster_dir(self.name)

    def kubeconfig(self) -> Path:
        return StateLayout(self.root).cluster_kubeconfig(self.name)

    def _kind(self) -> str:
        exe = shutil.which("kind")
        if not exe:
            raise ToolchainError("the kind CLI is not on PATH", fix="go install sigs.k8s.io/kind@v0.33.0")
        if container_engine() is None:
            raise ClusterError(
                "the kind provider needs a running container engine (docker or podman) and none answers here",
                fix="start Docker, or use --provider local",
            )
        return exe

    def _run(self, argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"`{' '.join(argv[:4])}` failed: {proc.stderr.strip()[-800:]}", fix="read the kind output above")
        return proc.stdout

    def create(self, progress: Progress | None = None) -> ClusterStatus:
        kind = self._kind()
        if self.status().state == "running":
            return self.status()
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "kind.yaml"
        cfg.write_text(yaml.safe_dump(kind_config(self.nodes, self.api_port)), encoding="utf-8")
        if progress:
            progress(f"kind create cluster {self.name}")
        self._run(create_argv(kind, self.name, cfg, self.kubeconfig(), self.image))
        atomic_write(self.kubeconfig(), self._run(kubeconfig_argv(kind, self.name)).encode())
        return self.status()

    def delete(self, purge: bool = False) -> None:
        kind = self._kind()
        self._run(delete_argv(kind, self.name, self.kubeconfig()))
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> ClusterStatus:
        if shutil.which("kind") is None or container_engine() is None:
            return ClusterStatus(self.name, self.provider, "absent", message="kind or a container engine is missing")
        names = self._run(list_argv(self._kind())).split()
        if self.name not in names:
            return ClusterStatus(self.name, self.provider, "absent")
        return ClusterStatus(self.name, self.provider, "running", kubeconfig=str(self.kubeconfig()))
