from __future__ import annotations

from typing import Any

from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.recover.ordering import apply_order, table, teardown_order


def obj(api_version: str, kind: str, name: str, ns: str = "", body: dict[str, Any] | None = None) -> DesiredObject:
    b = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, **({"namespace": ns} if ns else {})}, **(body or {})}
    return DesiredObject(ObjectRef.of(b), api_version, b, Source("f.yaml", 1))


def test_crds_namespaces_first_custom_resources_after_builtin_webhooks_last() -> None:
    crd = obj(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "widgets.demo.dev",
        body={"spec": {"group": "demo.dev", "names": {"kind": "Widget"}, "scope": "Namespaced"}},
    )
    objects = [
        obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "hook"),
        obj("demo.dev/v1", "Widget", "w1", "shop"),
        obj("apps/v1", "Deployment", "cart", "shop"),
        obj("v1", "ServiceAccount", "cart", "shop"),
        obj("v1", "Service", "cart", "shop"),
        obj("v1", "Namespace", "shop"),
        crd,
        obj("v1", "ConfigMap", "cfg", "shop"),
    ]
    order = [(r.name, [o.ref.kind for o in objs]) for r, objs in apply_order(objects)]
    assert order == [
        ("crds", ["CustomResourceDefinition"]),
        ("namespaces", ["Namespace"]),
        ("identity-and-config", ["ConfigMap", "ServiceAccount"]),
        ("services", ["Service"]),
        ("workloads", ["Deployment"]),
        ("custom-resources", ["Widget"]),
        ("webhooks", ["ValidatingWebhookConfiguration"]),
    ]
    assert teardown_order(objects)[0][0].name == "webhooks"
    rows = table(apply_order(objects))
    assert all(row["reason"] for row in rows)
    assert rows[0]["wait"] == "every CRD Established"


def test_unknown_builtin_kinds_go_to_other() -> None:
    ((rank, objs),) = apply_order([obj("coordination.k8s.io/v1", "Lease", "l", "default")])
    assert rank.name == "other" and objs[0].ref.kind == "Lease"
