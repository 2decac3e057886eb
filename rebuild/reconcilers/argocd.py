"""Argo CD: an AppProject and one Application per source, pointing at git.

The Argo CD application controller cannot be built on the machines rebuild is developed
on (its gitops-engine module does not resolve through the Go module proxy), so this path
is verified at the API level only: the install manifests (taken from the argo-cd module's
``manifests/install.yaml``) and these objects are accepted by a real API server and the
CRDs are Established; sync and health are Argo CD's own and are not exercised here.
``rebuild toolchain doctor`` and docs/reconcilers.md say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMESPACE = "argocd"
PROJECT = "rebuild"
API = "argoproj.io/v1alpha1"


@dataclass(frozen=True)
class ArgoSource:
    name: str
    url: str
    branch: str
    path: str
    revision: str = ""


def app_project() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AppProject",
        "metadata": {"name": PROJECT, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "rebuild"}},
        "spec": {
            "description": "Applications rebuilt by rebuild",
            "sourceRepos": ["*"],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }


def application(src: ArgoSource) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Application",
        "metadata": {"name": src.name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "rebuild"}},
        "spec": {
            "project": PROJECT,
            "source": {"repoURL": src.url, "targetRevision": src.revision or src.branch, "path": src.path or "."},
            "destination": {"server": "https://kubernetes.default.svc"},
            "syncPolicy": {
                # Automated sync with pruning, like the Flux path; selfHeal off so a drill can
                # observe drift before it is reverted (and capture can backport it).
                "automated": {"prune": True, "selfHeal": False},
                "syncOptions": ["ServerSideApply=true", "CreateNamespace=false"],
            },
        },
    }


def application_synced(app: dict[str, Any] | None, sha: str) -> tuple[bool, str]:
    if app is None:
        return False, "Application not found"
    status = app.get("status") or {}
    sync = (status.get("sync") or {}).get("status", "Unknown")
    health = (status.get("health") or {}).get("status", "Unknown")
    rev = str((status.get("sync") or {}).get("revision") or "")
    ok = sync == "Synced" and health == "Healthy" and (not sha or rev.startswith(sha))
    return ok, f"Application sync={sync} health={health} revision={rev[:12] or 'none'}"
