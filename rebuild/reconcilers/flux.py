"""Flux: the objects that point it at git, and the test of "ready at this revision".

Pure functions (values in, values out) so both the platform stack (which creates them
with Pulumi) and the ``up`` stage (which waits on them) share one definition. A
GitRepository per source pulls the repo; a Kustomization per source applies its path with
pruning. When the platform stack hands over a SOPS age key, every Kustomization decrypts
with it; that key is the one secret git cannot hold, so it travels out of band
(``sops_age_key_file`` in rebuild.yaml, or the ``sopsAgeKeyFile`` stack config).
"""

from __future__ import annotations

import re
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
    # The GitRepository's name (the bootstrap pair's in a `flux bootstrap` repo; else `name`).
    repo_name: str = ""
    namespace: str = NAMESPACE
    # Flux's targetNamespace (the source's `namespace` option).
    target_namespace: str = ""
    # Namespaced kinds of objects that name no namespace: told to land in `default`.
    default_namespace_kinds: tuple[str, ...] = ()
    # kustomize selectors of objects git declares that rebuild provides itself (its Flux install,
    # the bootstrap pair): left out of what this Kustomization applies.
    drop: tuple[tuple[tuple[str, str], ...], ...] = ()
    # The chart repository rebuild serves from the source's `charts` folder (empty: none).
    charts_repository: str = ""
    charts_url: str = ""

    @property
    def repository(self) -> str:
        return self.repo_name or self.name

    @property
    def auth_secret(self) -> str:
        return f"{self.repository}-git-auth"


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
        "metadata": {"name": src.repository, "namespace": src.namespace, "labels": {"app.kubernetes.io/managed-by": "rebuild"}},
        "spec": spec,
    }


def helm_repository(src: FluxSource) -> dict[str, Any]:
    """The HelmRepository of the charts rebuild serves from the source's ``charts`` folder.

    HelmReleases in git name it (``sourceRef: {kind: HelmRepository, name: <source>-charts,
    namespace: flux-system}``); its URL is the port of this machine's chart server, which is why
    rebuild makes it rather than git (as it makes the GitRepository of a local folder).
    """
    return {
        "apiVersion": SOURCE_API,
        "kind": "HelmRepository",
        "metadata": {
            "name": src.charts_repository,
            "namespace": src.namespace,
            "labels": {"app.kubernetes.io/managed-by": "rebuild"},
        },
        "spec": {"interval": src.interval, "url": src.charts_url, "timeout": "60s"},
    }


# Deletes whatever the target selects from the build (kustomize needs a kind and name in the
# patch; with a target they are not matched).
_DELETE = "$patch: delete\napiVersion: v1\nkind: Any\nmetadata:\n  name: any\n"


def _patches(src: FluxSource) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if src.default_namespace_kinds and not src.target_namespace:
        # kustomize matches `namespace: default` for objects that name none.
        kinds = "|".join(sorted(src.default_namespace_kinds))
        out.append(
            {
                "target": {"kind": f"^({kinds})$", "namespace": "default"},
                "patch": '[{"op": "add", "path": "/metadata/namespace", "value": "default"}]',
            }
        )
    for sel in src.drop:
        out.append({"target": dict(sel), "patch": _DELETE})
    return out


def kustomization(src: FluxSource) -> dict[str, Any]:
    path = "./" + src.path.strip("/") if src.path not in ("", ".", "./") else "./"
    spec: dict[str, Any] = {
        "interval": src.interval,
        "path": path,
        "prune": True,
        "sourceRef": {"kind": "GitRepository", "name": src.repository},
        "timeout": "5m",
        "wait": False,
        "retryInterval": "10s",
    }
    if src.target_namespace:
        spec["targetNamespace"] = src.target_namespace
    patches = _patches(src)
    if patches:
        spec["patches"] = patches
    if src.decrypt:
        spec["decryption"] = {"provider": "sops", "secretRef": {"name": SOPS_SECRET}}
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": src.name, "namespace": src.namespace, "labels": {"app.kubernetes.io/managed-by": "rebuild"}},
        "spec": spec,
    }


def auth_secret(src: FluxSource, username: str, password: str) -> dict[str, Any]:
    """Basic-auth Secret for a GitRepository (values only ever travel as Pulumi secrets)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": src.auth_secret, "namespace": src.namespace},
        "type": "Opaque",
        "stringData": {"username": username, "password": password},
    }


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def revision_matches(revision: str, expected: str) -> bool:
    """Does a Flux/Argo revision (``main@sha1:<sha>``, ``main/<sha>``, ``<sha>``) name ``expected``?

    A full SHA must be the revision's suffix; an abbreviated one (7+ hex digits) a prefix of its SHA.
    """
    if not revision or not expected:
        return False
    if revision.endswith(expected):
        return True
    sha = re.split(r"[@:/]", revision)[-1]
    return len(expected) >= 7 and sha.startswith(expected)


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


def is_ready(obj: dict[str, Any] | None) -> bool:
    cond = _condition(obj or {}, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_message(obj: dict[str, Any] | None) -> str:
    if obj is None:
        return "not found"
    cond = _condition(obj, "Ready")
    return str((cond or {}).get("message") or "no status yet")


@dataclass(frozen=True)
class Failure:
    """A Ready=False condition at the revision rebuild waits for."""

    reason: str
    message: str


def failure(obj: dict[str, Any], sha: str) -> Failure | None:
    """The failure ``obj`` reports for revision ``sha`` ("" = any), None if it is not failing."""
    cond = _condition(obj, "Ready")
    if cond is None or cond.get("status") != "False":
        return None
    status = obj.get("status") or {}
    attempted = str(status.get("lastAttemptedRevision") or ((status.get("artifact") or {}).get("revision")) or "")
    reason = str(cond.get("reason") or "")
    if sha and obj.get("kind") == "Kustomization" and not revision_matches(attempted, sha):
        return None  # still failing on an older revision: the new one has not been tried yet
    if reason in ("Progressing", "ProgressingWithRetry") or reason.endswith("InProgress"):
        return None
    return Failure(reason, str(cond.get("message") or ""))


# Reasons and messages that retrying the same revision cannot change (kustomize-controller and
# source-controller condition reasons; apply errors from the API server's dry run).
PERMANENT_REASONS = ("BuildFailed", "ArtifactFailed")
PERMANENT_MESSAGES = (
    "namespace not specified",
    "field not declared in schema",
    "unknown field",
    "strict decoding error",
    "is invalid",
    "admission webhook",
    "failed to find unique target for patch",
    "accumulating resources",
    "authentication required",
    "authorization failed",
    "couldn't find remote ref",
    "invalid path",
    "kustomization path not found",
    "not found in source",
)
TRANSIENT_MESSAGES = (
    "dependency",
    "connection refused",
    "i/o timeout",
    "too many requests",
    "context deadline exceeded",
    "etcdserver",
)


_VOLATILE = re.compile(r"/tmp/[\w.-]+|\d+")


def same_failure(a: str, b: str) -> bool:
    """The same error twice: equal once temporary paths and numbers (ports, pids) are ignored."""
    return bool(a) and _VOLATILE.sub("#", a) == _VOLATILE.sub("#", b)


def classify_failure(f: Failure, *, defined_kinds: set[str]) -> str:
    """ "permanent", "transient" or "unknown" (unknown: confirm with one more reconcile)."""
    msg = f.message.lower()
    if f.reason == "DependencyNotReady" or any(t in msg for t in TRANSIENT_MESSAGES):
        return "transient"
    m = re.search(r"no matches for kind \"?([A-Za-z0-9]+)", f.message)
    if m:
        # A CRD git declares may still be on its way (applied by another Kustomization).
        return "transient" if m.group(1) in defined_kinds else "permanent"
    if f.reason in PERMANENT_REASONS or any(p in msg for p in PERMANENT_MESSAGES):
        return "permanent"
    return "unknown"
