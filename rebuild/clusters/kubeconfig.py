"""The ``kubeconfig`` provider: a cluster that already exists, named by a context.

rebuild never creates or deletes such a cluster; ``create`` only checks that the API
answers, ``delete`` refuses politely. The context is flattened into a private kubeconfig
(0600, certificates embedded) so later stages and Pulumi see exactly one cluster.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rebuild.adapters.fs import atomic_write
from rebuild.clusters.base import ClusterStatus, validate_name
from rebuild.core.errors import ClusterError, ConfigError
from rebuild.core.progress import Progress
from rebuild.core.state import StateLayout, state_root

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _default_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG")
    return Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"


def in_cluster_kubeconfig() -> dict[str, Any] | None:
    """Inside a Pod (e.g. the scheduled-capture CronJob): the ServiceAccount's token *file*
    and CA, so the token rotates without rebuild ever copying it."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (SA_DIR / "token").exists():
        return None
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {"server": server, "certificate-authority": str(SA_DIR / "ca.crt")}}],
        "users": [{"name": "in-cluster", "user": {"tokenFile": str(SA_DIR / "token")}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "in-cluster"}}],
        "current-context": "in-cluster",
    }


def flatten(source: dict[str, Any], context: str | None, base_dir: Path) -> dict[str, Any]:
    """One context of a kubeconfig with file references turned into embedded data."""
    ctx_name = context or source.get("current-context")
    contexts = {c["name"]: c["context"] for c in source.get("contexts") or []}
    if ctx_name not in contexts:
        raise ConfigError(
            f"context {ctx_name!r} is not in the kubeconfig (contexts: {', '.join(sorted(contexts)) or 'none'})",
            fix="set cluster.context in rebuild.yaml (or --context) to one of those names",
        )
    ctx = contexts[ctx_name]
    cluster = next((c["cluster"] for c in source.get("clusters") or [] if c["name"] == ctx.get("cluster")), None)
    if cluster is None:
        raise ConfigError(
            f"context {ctx_name!r} names cluster {ctx.get('cluster')!r}, which the kubeconfig does not define",
            fix="add that cluster to the kubeconfig's clusters, or fix the context",
        )
    user: dict[str, Any] = next((u["user"] for u in source.get("users") or [] if u["name"] == ctx.get("user")), {})

    def embed(d: dict[str, Any], key: str) -> None:
        if key in d:
            path = Path(d.pop(key))
            path = path if path.is_absolute() else base_dir / path
            d[key + "-data"] = base64.b64encode(path.read_bytes()).decode()

    cluster, user = dict(cluster), dict(user)
    embed(cluster, "certificate-authority")
    embed(user, "client-certificate")
    embed(user, "client-key")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": ctx["cluster"], "cluster": cluster}],
        "users": [{"name": ctx.get("user", "user"), "user": user}],
        "contexts": [{"name": ctx_name, "context": ctx}],
        "current-context": ctx_name,
    }


@dataclass
class KubeconfigCluster:
    name: str
    context: str | None = None
    source: Path = field(default_factory=_default_kubeconfig)
    root: Path = field(default_factory=state_root)
    provider: str = "kubeconfig"

    def __post_init__(self) -> None:
        validate_name(self.name)

    def kubeconfig(self) -> Path:
        out = StateLayout(self.root).cluster_kubeconfig(self.name)
        if self.context == "in-cluster" or (not self.source.exists() and in_cluster_kubeconfig()):
            incluster = in_cluster_kubeconfig()
            if incluster is None:
                raise ConfigError(
                    "context in-cluster: not running in a Pod with a ServiceAccount token",
                    fix="run inside the cluster, or name a kubeconfig context",
                )
            atomic_write(out, yaml.safe_dump(incluster, sort_keys=False).encode())
            return out
        try:
            src = yaml.safe_load(self.source.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(
                f"cannot read kubeconfig {self.source}: {exc.strerror}",
                fix="set KUBECONFIG to the kubeconfig file that holds the cluster's context (default ~/.kube/config)",
            ) from exc
        flat = flatten(src, self.context, self.source.parent)
        atomic_write(out, yaml.safe_dump(flat, sort_keys=False).encode())
        return out

    def _server(self, flat: dict[str, Any]) -> str:
        return str(flat["clusters"][0]["cluster"]["server"])

    def status(self) -> ClusterStatus:
        path = self.kubeconfig()
        flat = yaml.safe_load(path.read_text(encoding="utf-8"))
        server = self._server(flat)
        cluster = flat["clusters"][0]["cluster"]
        user = flat["users"][0]["user"]
        ctx = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif "certificate-authority-data" in cluster:
            ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        headers = {}
        if "token" in user:
            headers["Authorization"] = f"Bearer {user['token']}"
        if "client-certificate-data" in user:
            with tempfile.TemporaryDirectory() as tmp:
                crt, key = Path(tmp) / "c", Path(tmp) / "k"
                atomic_write(crt, base64.b64decode(user["client-certificate-data"]))
                atomic_write(key, base64.b64decode(user["client-key-data"]))
                ctx.load_cert_chain(str(crt), str(key))
        try:
            req = urllib.request.Request(server + "/readyz", headers=headers)
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        return ClusterStatus(self.name, self.provider, "running" if ok else "degraded", server=server, kubeconfig=str(path))

    def create(self, progress: Progress | None = None) -> ClusterStatus:
        st = self.status()
        if st.state != "running":
            raise ClusterError(
                f"the cluster of context {self.context or '(current)'} at {st.server} does not answer /readyz",
                fix="check the kubeconfig and that the cluster is up",
            )
        return st

    def delete(self, purge: bool = False) -> None:
        raise ClusterError(
            f"cluster {self.name} is an existing cluster (provider kubeconfig); rebuild does not delete it",
            fix="delete it with the tool that created it",
        )
