"""Capture's LISTs for an identity that may read only some namespaces, on a real API server.

capture lists every kind cluster-wide while git is still being fetched (``early_listing``),
then narrows to git's namespaces (``complete_listing``). A ServiceAccount allowed to list
ConfigMaps in two namespaces only is refused the cluster-wide LIST (403): the ConfigMaps must
then be listed namespace by namespace, and the kinds it may not read at all reported as
skipped, exactly as the one-step ``list_cluster`` does.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.kube import Kube
from rebuild.capture.listing import complete_listing, early_listing, list_cluster

pytestmark = pytest.mark.integration

NAMESPACES = ("team-a", "team-b", "other")


def _token_kubeconfig(admin_path: Path, kube: Kube, folder: Path) -> Path:
    """A kubeconfig for ServiceAccount default/reader, with a short-lived token from the TokenRequest API."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    resp = kube.request(
        "POST", "/api/v1/namespaces/default/serviceaccounts/reader/token", body=json.dumps(body).encode(), what="token"
    )
    token = resp.json()["status"]["token"]
    admin = yaml.safe_load(admin_path.read_text())
    cluster = admin["clusters"][0]["cluster"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster["server"], "certificate-authority": "ca.crt"}}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": "reader", "context": {"cluster": "c", "user": "reader"}}],
        "current-context": "reader",
    }
    path = folder / "config"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def _names(objects: list[dict[str, Any]], kind: str) -> set[tuple[str, str]]:
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects if o.get("kind") == kind}


def test_namespace_restricted_identity_lists_per_namespace_and_reports_the_rest(cluster_factory: Any, tmp_path: Path) -> None:
    c = cluster_factory("rbac")
    c.create()
    admin = Kube.from_kubeconfig(c.kubeconfig())
    try:
        for ns in NAMESPACES:
            admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            admin.apply(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{ns}", "namespace": ns}, "data": {"k": ns}}
            )
        admin.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "default"}})
        for ns in ("team-a", "team-b"):
            admin.apply(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "list-configmaps", "namespace": ns},
                    "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
                }
            )
            admin.apply(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "reader", "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-configmaps"},
                    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}],
                }
            )
        reader = Kube.from_kubeconfig(_token_kubeconfig(c.kubeconfig(), admin, tmp_path / "reader"))
    finally:
        admin.close()
    try:
        wanted = ["team-a", "team-b"]
        early = early_listing(reader)
        # Refused cluster-wide: nothing listed yet, and ConfigMaps kept for the per-namespace pass.
        assert not _names(early.objects, "ConfigMap")
        assert any(i.kind == "ConfigMap" for i in early.per_namespace)
        done = complete_listing(reader, early, wanted, {("", "Namespace")})
        one_step = list_cluster(reader, wanted, {("", "Namespace")})

        assert _names(done.objects, "ConfigMap") >= {("team-a", "cm-team-a"), ("team-b", "cm-team-b")}
        assert ("other", "cm-other") not in _names(done.objects, "ConfigMap")
        assert ("", "ConfigMap") in done.listed
        # Kinds it may not read anywhere are skipped with the reason, never listed as empty.
        assert re.fullmatch(r"listing Deployment in team-[ab] was refused \(HTTP 403\)", done.skipped[("apps", "Deployment")])
        assert done.skipped[("", "Namespace")] == "listing Namespace was refused (HTTP 403)"
        assert ("apps", "Deployment") not in done.listed

        key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
        assert sorted(map(key, done.objects)) == sorted(map(key, one_step.objects))
        assert done.listed == one_step.listed
        assert set(done.skipped) == set(one_step.skipped)
    finally:
        reader.close()
