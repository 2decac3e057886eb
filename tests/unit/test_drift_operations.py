"""Operating the reconciler is not drift: `flux suspend` and `flux reconcile` on a Kustomization git
declares are noise, with the reason; a replicas change of a workload an HPA in git targets is noise
naming the HPA; a `kubectl scale` of a Deployment whose manifest has no replicas is a finding."""

from __future__ import annotations

from typing import Any

from rebuild.capture.drift import find_drift
from rebuild.core.config import CaptureSpec
from rebuild.core.model import DesiredObject, ObjectRef, Source


def _desired(api: str, kind: str, ns: str, name: str, spec: dict[str, Any]) -> DesiredObject:
    body = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}
    group = api.rsplit("/", 1)[0] if "/" in api else ""
    return DesiredObject(ObjectRef(group, kind, ns, name), api, body, Source("apps.yaml", 1))


def _live(
    d: DesiredObject, spec: dict[str, Any], entries: list[dict[str, Any]], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": d.ref.name, "namespace": d.ref.namespace, "managedFields": entries}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": d.api_version, "kind": d.ref.kind, "metadata": meta, "spec": spec}


def _entry(manager: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    e = {"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": fields, "time": "2026-11-30T10:00:00Z"}
    if subresource:
        e["subresource"] = subresource
    return e


def test_flux_suspend_and_reconcile_requests_are_noise() -> None:
    spec = {"interval": "10m", "path": "./apps", "prune": True}
    ks = _desired("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "apps", spec)
    live = _live(
        ks,
        {**spec, "suspend": True},
        [
            _entry("kustomize-controller", {"f:spec": {"f:interval": {}, "f:path": {}, "f:prune": {}}}),
            _entry(
                "flux", {"f:spec": {"f:suspend": {}}, "f:metadata": {"f:annotations": {"f:reconcile.fluxcd.io/requestedAt": {}}}}
            ),
        ],
        {"reconcile.fluxcd.io/requestedAt": "2026-11-30T10:00:00Z"},
    )
    report = find_drift([ks], [live], spec=CaptureSpec(), managed_namespaces=["flux-system"])
    assert report.findings == []
    reasons = sorted(n.reason for n in report.noise)
    assert reasons == [
        "a reconcile request (flux reconcile), not desired state",
        "suspending reconciliation is an operation (flux suspend/resume), not desired state",
    ]


def test_scale_of_a_deployment_without_replicas_in_git_is_a_finding_unless_an_hpa_owns_it() -> None:
    spec = {"selector": {"matchLabels": {"app": "a"}}}
    dep = _desired("apps/v1", "Deployment", "web", "a", spec)
    scaled = _live(
        dep,
        {**spec, "replicas": 3},
        [
            _entry("kustomize-controller", {"f:spec": {"f:selector": {}}}),
            _entry("kubectl", {"f:spec": {"f:replicas": {}}}, subresource="scale"),
        ],
    )
    report = find_drift([dep], [scaled], spec=CaptureSpec(), managed_namespaces=["web"])
    assert [(f.kind, f.rendered, f.manager, f.subresource, f.live) for f in report.findings] == [
        ("added", "spec.replicas", "kubectl", "scale", 3)
    ]
    hpa = _desired(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "web",
        "a",
        {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}},
    )
    hpa_live = _live(hpa, hpa.body["spec"], [_entry("kustomize-controller", {"f:spec": {"f:scaleTargetRef": {}}})])
    report = find_drift([dep, hpa], [scaled, hpa_live], spec=CaptureSpec(), managed_namespaces=["web"])
    assert report.findings == []
    assert [n.reason for n in report.noise] == ["spec.replicas is owned by HorizontalPodAutoscaler/web/a (apps.yaml:1) in git"]
