"""Flux: the objects that point it at git, and the test of "ready at this revision".

Pure functions (values in, values out) so both the platform stack (which creates them
with Pulumi) and the ``up`` stage (which waits on them) share one definition. A
GitRepository per source pulls the repo; a Kustomization per source applies its path with
pruning. When the platform stack hands over a SOPS age key, every Kustomization decrypts
with it; that key is the one secret git cannot hold, so it travels out of band
(``sops_age_key_file`` in rebuild.yaml, or the ``sopsAgeKeyFile`` stack config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMESPACE = "flux-system"
SOPS_SECRET = "sops-age"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


@dataclass(frozen=True)
class FluxSource:
    """What Flux needs to know about one git source (resolved URL, no secrets)."""

    name: str
    url: str
    branch: str
    path: str
    revision: str = ""  # pin: a commit SHA
    interval: str = "1m"
    has_credentials: bool = False
    decrypt: bool = False

    @property
    def auth_secret(self) -> str:
        return f"{self.name}-git-auth"


def git_repository(src: FluxSource) -> dict[str, Any]:
    ref: dict[str, str] = {"branch": src.branch}
    if src.revision:
        ref["commit"] = src.revision
    spec: dict[str, Any] = {"interval": src.interval, "url": src.url, "ref": ref, "timeout": "60s"}
    if src.has_credentials:
        spec["secretRef"] = {"name": src.auth_secret}
    return {
        "apiVersion": SOURCE_API,
        "kind": "GitRepository",
        "metadata": {"name": src.name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "rebuild"}},
        "spec": spec,
    }


def kustomization(src: FluxSource) -> dict[str, Any]:
    path = "./" + src.path.strip("/") if src.path not in ("", ".", "./") else "./"
    spec: dict[str, Any] = {
        "interval": src.interval,
        "path": path,
        "prune": True,
        "sourceRef": {"kind": "GitRepository", "name": src.name},
        "timeout": "5m",
        "wait": False,
        "retryInterval": "10s",
    }
    if src.decrypt:
        spec["decryption"] = {"provider": "sops", "secretRef": {"name": SOPS_SECRET}}
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": src.name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "rebuild"}},
        "spec": spec,
    }


def auth_secret(src: FluxSource, username: str, password: str) -> dict[str, Any]:
    """Basic-auth Secret for a GitRepository (values only ever travel as Pulumi secrets)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": src.auth_secret, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"username": username, "password": password},
    }


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def revision_matches(flux_revision: str, sha: str) -> bool:
    """Flux revisions look like ``main@sha1:<40 hex>`` (older: ``main/<sha>``)."""
    return bool(sha) and (flux_revision.endswith(sha) or flux_revision.endswith(f"sha1:{sha}"))


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str
    revision: str = ""


def source_ready(repo: dict[str, Any] | None, sha: str) -> Readiness:
    if repo is None:
        return Readiness(False, "GitRepository not found")
    cond = _condition(repo, "Ready")
    rev = str(((repo.get("status") or {}).get("artifact") or {}).get("revision") or "")
    if cond is None or cond.get("status") != "True":
        return Readiness(False, f"GitRepository not Ready: {(cond or {}).get('message', 'no status yet')}", rev)
    if not revision_matches(rev, sha):
        return Readiness(False, f"GitRepository at {rev or 'no revision'}, waiting for {sha[:12]}", rev)
    return Readiness(True, f"GitRepository Ready at {rev}", rev)


def kustomization_ready(ks: dict[str, Any] | None, sha: str) -> Readiness:
    if ks is None:
        return Readiness(False, "Kustomization not found")
    status = ks.get("status") or {}
    rev = str(status.get("lastAppliedRevision") or "")
    cond = _condition(ks, "Ready")
    if (ks.get("spec") or {}).get("suspend"):
        return Readiness(False, "Kustomization is suspended", rev)
    if cond is None or cond.get("status") != "True":
        msg = (cond or {}).get("message", "no status yet")
        return Readiness(False, f"Kustomization not Ready: {msg}", rev)
    if not revision_matches(rev, sha):
        return Readiness(False, f"Kustomization applied {rev or 'nothing'}, waiting for {sha[:12]}", rev)
    return Readiness(True, f"Kustomization Ready, applied {rev}", rev)
