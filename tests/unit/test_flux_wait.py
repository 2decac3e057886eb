"""The Flux wait loop against a fake client: what it asks Flux to do and when it stops waiting.

The loop takes its Kube client as a parameter (issue 11 item 4), so these cases run in
milliseconds; the same loop against real controllers is covered by tests/integration.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from rebuild.adapters.kube import Kube
from rebuild.core.errors import RebuildError
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.reconcilers import flux
from rebuild.reconcilers.flux_wait import Watched, _locate, wait_ready

SHA = "a" * 40


def _obj(kind: str, name: str, *, ready: bool, reason: str = "", message: str = "", suspend: bool = False) -> dict[str, Any]:
    api = flux.SOURCE_API if kind == "GitRepository" else flux.KUSTOMIZE_API
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message}]
    }
    if kind == "GitRepository":
        status["artifact"] = {"revision": f"main@sha1:{SHA}"}
    else:
        status["lastAppliedRevision"] = f"main@sha1:{SHA}" if ready else ""
        status["lastAttemptedRevision"] = f"main@sha1:{SHA}"
    body: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "flux-system"}}
    body["status"] = status
    if suspend:
        body["spec"] = {"suspend": True}
    return body


class FakeKube:
    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def get(self, api: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def patch(self, obj: dict[str, Any], patch: dict[str, Any], field_manager: str = "") -> dict[str, Any]:
        self.patches.append((f"{obj['kind']}/{obj['metadata']['name']}", patch))
        return obj


def _watched() -> list[Watched]:
    return [
        Watched(SHA, flux.SOURCE_API, "GitRepository", "apps", "flux-system"),
        Watched(SHA, flux.KUSTOMIZE_API, "Kustomization", "apps", "flux-system"),
    ]


def test_ready_objects_end_the_wait_without_asking_for_a_reconcile() -> None:
    kube = FakeKube(
        {
            ("GitRepository", "apps"): _obj("GitRepository", "apps", ready=True),
            ("Kustomization", "apps"): _obj("Kustomization", "apps", ready=True),
        }
    )
    did: dict[str, Any] = {}
    wait_ready(cast(Kube, kube), _watched(), [], did, progress=lambda _m: None, timeout=5)
    assert kube.patches == [] and did == {}


def test_a_suspended_kustomization_stops_the_wait_at_once() -> None:
    kube = FakeKube(
        {
            ("GitRepository", "apps"): _obj("GitRepository", "apps", ready=True),
            ("Kustomization", "apps"): _obj("Kustomization", "apps", ready=True, suspend=True),
        }
    )
    did: dict[str, Any] = {}
    with pytest.raises(RebuildError, match="suspended") as err:
        wait_ready(cast(Kube, kube), _watched(), [], did, progress=lambda _m: None, timeout=60)
    assert "flux resume kustomization apps -n flux-system" in (err.value.fix or "")
    assert did == {"requested_reconcile": ["Kustomization/apps"]}


def test_timeout_names_the_host_controllers_logs(tmp_path: Any) -> None:
    kube = FakeKube({("GitRepository", "apps"): _obj("GitRepository", "apps", ready=True)})
    with pytest.raises(RebuildError, match="did not become Ready") as err:
        wait_ready(cast(Kube, kube), _watched(), [], {}, progress=lambda _m: None, timeout=0, logs=tmp_path / "logs")
    assert str(tmp_path / "logs") in (err.value.fix or "")


def test_locate_names_the_declaring_line_of_the_object_in_a_message() -> None:
    cm = DesiredObject(ObjectRef("", "ConfigMap", "shop", "cart"), "v1", {}, Source("apps/cart.yaml", 3))
    assert _locate("ConfigMap/shop/cart dry-run failed: bad", [cm]) == "apps/cart.yaml:3"
    assert _locate("Deployment/shop/other failed", [cm]) == ""
