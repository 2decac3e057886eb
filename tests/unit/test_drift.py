"""Drift findings over the example repo and a synthetic live cluster with realistic managedFields.

The scenario (``scenario()``) is the acceptance scenario of issue 4, made offline: the live objects
are the rendered desired objects as Flux would have applied them (kustomize-controller owning what
git declares, server defaults nobody owns, status written by controllers), then changed the way
kubectl changes them (the field manager and subresource each kubectl verb records), plus what the
cluster itself creates. tests/unit/test_backport.py reuses it.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rebuild.capture.drift import (
    DEFAULT_EXCLUSIONS,
    Coverage,
    DriftReport,
    Finding,
    default_pull_policy,
    find_drift,
    is_server_default,
    parse_image,
    strip_server_defaults,
)
from rebuild.core.config import CaptureSpec
from rebuild.core.managedfields import ownership
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef, PathSeg
from rebuild.desired.render import render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gitops-repo"
DATA = Path(__file__).parent / "data" / "drift"
NAMESPACES = ("shop", "payments", "observability")
T0 = "2026-11-26T10:00:03Z"

needs_kustomize = pytest.mark.skipif(
    shutil.which("kubectl") is None and shutil.which("kustomize") is None,
    reason="rendering examples/gitops-repo needs kubectl (kustomize) on PATH",
)

CART: FieldPath = ("spec", "template", "spec", "containers", ("name", "cart"))
LEDGER: FieldPath = ("spec", "template", "spec", "containers", ("name", "ledger"))
API: FieldPath = ("spec", "template", "spec", "containers", ("name", "api"))

DEPLOY = ("apps", "Deployment")


def ref(group: str, kind: str, namespace: str, name: str) -> ObjectRef:
    return ObjectRef(group, kind, namespace, name)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# --------------------------------------------------------------------------- building live objects


def _list_keys(path: tuple[str, ...], items: list[Any]) -> tuple[str, ...] | None:
    name = path[-1] if path else ""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if name in ("containers", "initContainers", "env", "volumes"):
        return ("name",)
    if name == "volumeMounts":
        return ("mountPath",)
    if name == "ports" and all("containerPort" in i for i in items):
        return ("containerPort", "protocol")
    if name == "ports" and path == ("spec", "ports"):
        return ("port", "protocol")
    return None


def _k(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "k:" + json.dumps(
        {k: item.get(k, "TCP" if k == "protocol" else None) for k in keys}, separators=(",", ":"), sort_keys=True
    )


def fields_v1(value: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """The FieldsV1 tree a server-side apply of ``value`` records (keyed lists by merge key)."""
    if isinstance(value, dict):
        return {f"f:{k}": fields_v1(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        keys = _list_keys(path, value)
        if keys:
            return {_k(item, keys): {".": {}, **fields_v1(item, ())} for item in value}
    return {}


def seg_key(seg: PathSeg) -> str:
    if isinstance(seg, str):
        return "f:" + seg
    assert isinstance(seg, tuple)
    keys, values = seg[0].split(","), seg[1].split(",")
    return "k:" + json.dumps(
        {k: int(v) if v.isdigit() else v for k, v in zip(keys, values, strict=True)}, separators=(",", ":"), sort_keys=True
    )


def drop(tree: dict[str, Any], path: FieldPath) -> None:
    """Remove ``path`` from a FieldsV1 tree (and parents left empty): another manager took it over."""
    node = tree
    trail: list[tuple[dict[str, Any], str]] = []
    for seg in path:
        key = seg_key(seg)
        if not isinstance(node, dict) or key not in node:
            return
        trail.append((node, key))
        node = node[key]
    parent, key = trail[-1]
    del parent[key]
    for parent, key in reversed(trail[:-1]):
        if parent[key]:
            break
        del parent[key]


def entry(manager: str, time: str, *paths: FieldPath, subresource: str = "", api_version: str = "v1") -> dict[str, Any]:
    """A managedFields entry of an Update that set ``paths``."""
    tree: dict[str, Any] = {}
    for p in paths:
        node = tree
        for seg in p[:-1]:
            node = node.setdefault(seg_key(seg), {})
        node[seg_key(p[-1])] = {}
    out = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": tree,
    }
    if subresource:
        out["subresource"] = subresource
    return out


def set_path(obj: Any, path: FieldPath, value: Any) -> None:
    node = obj
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(seg, str):
            if last:
                node[seg] = value
            else:
                node = node.setdefault(seg, {})
        elif isinstance(seg, int):
            if last:
                node[seg] = value
            else:
                node = node[seg]
        else:
            keys, values = seg[0].split(","), seg[1].split(",")
            hit = [
                x
                for x in node
                if all(str(x.get(k, "TCP" if k == "protocol" else "")) == v for k, v in zip(keys, values, strict=True))
            ]
            assert len(hit) == 1, (path, seg)
            if last:
                node[node.index(hit[0])] = value
            else:
                node = hit[0]


def _deployment_defaults(body: dict[str, Any]) -> None:
    spec = body["spec"]
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    tmpl = spec["template"]
    tmpl.setdefault("metadata", {})["creationTimestamp"] = None
    pod = tmpl["spec"]
    for k, v in (
        ("dnsPolicy", "ClusterFirst"),
        ("restartPolicy", "Always"),
        ("schedulerName", "default-scheduler"),
        ("securityContext", {}),
        ("terminationGracePeriodSeconds", 30),
    ):
        pod.setdefault(k, v)
    for c in pod["containers"]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("imagePullPolicy", default_pull_policy(c["image"]))
        for p in c.get("ports", []):
            p.setdefault("protocol", "TCP")


def _service_defaults(body: dict[str, Any], n: int) -> None:
    spec = body["spec"]
    if spec.get("clusterIP") != "None":
        spec["clusterIP"] = spec.get("clusterIP") or f"10.96.0.{n}"
    spec["clusterIPs"] = [spec["clusterIP"]]
    spec.update(ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack", internalTrafficPolicy="Cluster", sessionAffinity="None")
    spec.setdefault("type", "ClusterIP")
    for p in spec["ports"]:
        p.setdefault("protocol", "TCP")


def applied(d: DesiredObject, n: int) -> dict[str, Any]:
    """``d`` as Flux's kustomize-controller applied it, with the server's defaults and status."""
    body = copy.deepcopy(d.body)
    meta = body["metadata"]
    meta.setdefault("labels", {}).update(
        {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
    )
    if d.ref.kind == "Secret" and "stringData" in body:  # Flux applies stringData as data
        body["data"] = {**body.get("data", {}), **{k: b64(str(v)) for k, v in body.pop("stringData").items()}}
    tree = fields_v1({k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
    managed = [
        {
            "manager": "kustomize-controller",
            "operation": "Apply",
            "apiVersion": d.api_version,
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": tree,
        }
    ]
    if d.ref.kind == "Deployment":
        _deployment_defaults(body)
        replicas = body["spec"].get("replicas", 1)
        body["status"] = {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1}
        managed.append(
            entry(
                "kube-controller-manager",
                "2026-11-26T10:00:31Z",
                ("status", "replicas"),
                ("status", "readyReplicas"),
                ("status", "observedGeneration"),
                subresource="status",
                api_version="apps/v1",
            )
        )
        annotations = meta.setdefault("annotations", {})
        annotations["deployment.kubernetes.io/revision"] = "1"
        managed.append(
            entry(
                "kube-controller-manager",
                "2026-11-26T10:00:04Z",
                ("metadata", "annotations", "deployment.kubernetes.io/revision"),
            )
        )
    if d.ref.kind == "Service":
        _service_defaults(body, n)
    meta.update(uid=f"00000000-0000-4000-8000-{n:012d}", resourceVersion=str(1000 + n), generation=1, creationTimestamp=T0)
    meta["managedFields"] = managed
    return body


@dataclass(frozen=True)
class Change:
    ref: ObjectRef
    path: FieldPath
    value: Any
    manager: str
    time: str
    subresource: str = ""


PRICING_LIVE = """# Evaluated top to bottom; the first match wins.
rules:
  - name: free-shipping
    when: "cart.total >= 40"
    then: {shipping: 0}
  - name: bulk-discount
    when: 'cart.items >= 10'
    then: {discountPercent: 5}
"""
SECRET_LIVE = "hunter2-live-value-5521"

# What people did with kubectl (manager and subresource as kubectl records them).
HUMAN_CHANGES: tuple[Change, ...] = (
    Change(ref(*DEPLOY, "shop", "cart"), ("spec", "replicas"), 5, "kubectl", "2026-11-26T10:42:00Z", "scale"),
    Change(ref(*DEPLOY, "shop", "cart"), (*CART, "image"), "ghcr.io/example/cart:1.8.4", "kubectl-edit", "2026-11-26T11:05:17Z"),
    Change(ref(*DEPLOY, "shop", "cart"), ("metadata", "labels", "team"), "checkout", "kubectl-label", "2026-11-26T11:10:40Z"),
    Change(
        ref(*DEPLOY, "payments", "ledger"),
        (*LEDGER, "image"),
        "ghcr.io/example/ledger:0.9.5",
        "kubectl-set",
        "2026-11-26T12:01:00Z",
    ),
    Change(
        ref(*DEPLOY, "payments", "ledger"),
        ("metadata", "labels", "oncall"),
        "payments-team",
        "kubectl-label",
        "2026-11-26T12:02:00Z",
    ),
    Change(
        ref(*DEPLOY, "payments", "payments-api"),
        (*API, "env", ("name", "PSP_ENDPOINT"), "value"),
        "https://psp.demo.example.com/v3",
        "kubectl-edit",
        "2026-11-26T12:30:00Z",
    ),
    Change(
        ref("", "ConfigMap", "shop", "cart-config"),
        ("data", "pricing-rules.yaml"),
        PRICING_LIVE,
        "kubectl-patch",
        "2026-11-26T13:14:15Z",
    ),
    Change(
        ref("", "ConfigMap", "shop", "frontend-nginx"),
        ("data", "cache-ttl-seconds"),
        "30",
        "kubectl-patch",
        "2026-11-26T13:20:00Z",
    ),
    Change(
        ref("", "Secret", "payments", "payments-db"),
        ("data", "DB_PASSWORD"),
        b64(SECRET_LIVE),
        "kubectl-edit",
        "2026-11-26T14:00:00Z",
    ),
)
# What the cluster's machinery did: an HPA scaling search.
CONTROLLER_CHANGES: tuple[Change, ...] = (
    Change(ref(*DEPLOY, "shop", "search"), ("spec", "replicas"), 4, "kube-controller-manager", "2026-11-26T12:30:00Z", "scale"),
)
DELETED = ref("", "Service", "shop", "frontend")
CREATED = (
    ref("", "ConfigMap", "shop", "promo-banner"),
    ref("", "Service", "shop", "promo"),
    ref("", "Secret", "shop", "promo-api-key"),
)
# Raw secret values present somewhere in the scenario; none may appear in any output.
SECRET_VALUES = (
    SECRET_LIVE,
    b64(SECRET_LIVE),
    "promo-key-raw-value-7731",
    b64("promo-key-raw-value-7731"),
    "token-value-that-must-not-leak",
)


@functools.cache
def _rendered() -> tuple[DesiredObject, ...]:
    r = render(EXAMPLE, "clusters/demo")
    assert not r.problems, r.problems
    return tuple(r.objects)


def desired_objects() -> list[DesiredObject]:
    return copy.deepcopy(list(_rendered()))


@dataclass
class Scenario:
    desired: list[DesiredObject]
    live: list[dict[str, Any]]
    spec: CaptureSpec = field(default_factory=lambda: CaptureSpec(namespaces=NAMESPACES, new_objects_dir="apps/captured"))

    @property
    def by_ref(self) -> dict[ObjectRef, DesiredObject]:
        return {d.ref: d for d in self.desired}

    def live_of(self, r: ObjectRef) -> dict[str, Any]:
        return next(o for o in self.live if ObjectRef.of(o) == r)

    def report(self, **kw: Any) -> DriftReport:
        return find_drift(
            self.desired,
            self.live,
            spec=kw.pop("spec", self.spec),
            managed_namespaces=kw.pop("namespaces", NAMESPACES),
            listed=kw.pop("listed", None),
            skipped=kw.pop("skipped", None),
        )


def apply_change(live: dict[str, Any], c: Change) -> None:
    set_path(live, c.path, c.value)
    for e in live["metadata"]["managedFields"]:
        if e["manager"] == "kustomize-controller":
            drop(e["fieldsV1"], c.path)
    api = "apps/v1" if c.ref.group == "apps" else "v1"
    live["metadata"]["managedFields"].append(entry(c.manager, c.time, c.path, subresource=c.subresource, api_version=api))


def scenario(changes: Iterable[Change] = HUMAN_CHANGES + CONTROLLER_CHANGES) -> Scenario:
    desired = desired_objects()
    live: dict[ObjectRef, dict[str, Any]] = {}
    for n, d in enumerate(desired, start=1):
        if d.ref != DELETED:
            live[d.ref] = applied(d, n)
    for c in changes:
        apply_change(live[c.ref], c)
    extra = json.loads((DATA / "live_extra.json").read_text())
    return Scenario(desired, [*live.values(), *extra])


def keyed(report: DriftReport) -> dict[tuple[str, str, str | None], Finding]:
    return {(f.kind, str(f.ref), f.rendered): f for f in report.findings}


# --------------------------------------------------------------------------- the acceptance scenario


@needs_kustomize
def test_exactly_the_manual_changes_are_reported() -> None:
    report = scenario().report()
    assert sorted(keyed(report)) == sorted(
        [
            ("changed", "Deployment/shop/cart", "spec.replicas"),
            ("changed", "Deployment/shop/cart", "spec.template.spec.containers[name=cart].image"),
            ("added", "Deployment/shop/cart", "metadata.labels.team"),
            ("changed", "Deployment/payments/ledger", "spec.template.spec.containers[name=ledger].image"),
            ("added", "Deployment/payments/ledger", "metadata.labels.oncall"),
            (
                "changed",
                "Deployment/payments/payments-api",
                "spec.template.spec.containers[name=api].env[name=PSP_ENDPOINT].value",
            ),
            ("changed", "ConfigMap/shop/cart-config", "data.pricing-rules.yaml"),
            ("changed", "ConfigMap/shop/frontend-nginx", "data.cache-ttl-seconds"),
            ("changed", "Secret/payments/payments-db", "stringData.DB_PASSWORD"),
            ("created", "ConfigMap/shop/promo-banner", None),
            ("created", "Service/shop/promo", None),
            ("created", "Secret/shop/promo-api-key", None),
            ("deleted", "Service/shop/frontend", None),
        ]
    )
    assert all(f.klass == "human" for f in report.findings)
    assert report.has_drift


@needs_kustomize
def test_findings_carry_manager_operation_subresource_time_and_source() -> None:
    found = keyed(scenario().report())
    scale = found[("changed", "Deployment/shop/cart", "spec.replicas")]
    assert (scale.git, scale.live) == (3, 5)
    assert (scale.manager, scale.operation, scale.subresource, scale.time) == (
        "kubectl",
        "Update",
        "scale",
        "2026-11-26T10:42:00Z",
    )
    assert str(scale.source) == "apps/overlays/demo/kustomization.yaml:25"  # the replicas: entry, not the base
    assert scale.api_version == "apps/v1" and scale.path == ("spec", "replicas")
    assert scale.message() == (
        "Deployment/shop/cart: field spec.replicas is 5 live, 3 in git (apps/overlays/demo/kustomization.yaml:25); "
        "changed by kubectl (Update, scale) at 2026-11-26T10:42:00Z"
    )

    image = found[("changed", "Deployment/shop/cart", "spec.template.spec.containers[name=cart].image")]
    assert (image.git, image.live, image.manager) == ("ghcr.io/example/cart:1.8.3", "ghcr.io/example/cart:1.8.4", "kubectl-edit")
    assert image.source is not None and image.source.file == "apps/overlays/demo/kustomization.yaml"

    ledger = found[("changed", "Deployment/payments/ledger", "spec.template.spec.containers[name=ledger].image")]
    assert ledger.source is not None and ledger.source.file == "apps/base/ledger/ledger.yaml"
    assert ledger.manager == "kubectl-set"

    label = found[("added", "Deployment/shop/cart", "metadata.labels.team")]
    assert (label.git, label.live, label.manager) == (None, "checkout", "kubectl-label")
    assert label.source is not None and label.source.file == "apps/overlays/demo/patches/cart-demo-mode.yaml"

    ttl = found[("changed", "ConfigMap/shop/frontend-nginx", "data.cache-ttl-seconds")]
    assert ttl.source is not None and ttl.source.file == "apps/overlays/demo/patches/frontend-nginx-cache.yaml"
    psp = found[
        ("changed", "Deployment/payments/payments-api", "spec.template.spec.containers[name=api].env[name=PSP_ENDPOINT].value")
    ]
    assert psp.source is not None and psp.source.file == "apps/overlays/demo/patches/payments-api-sandbox.json6902.yaml"

    created = found[("created", "Service/shop/promo", None)]
    assert (created.manager, created.operation, created.time, created.source) == (
        "kubectl-create",
        "Update",
        "2026-11-26T15:01:30Z",
        None,
    )
    assert created.path is None and created.git is None
    assert "managedFields" not in created.live["metadata"] and "status" not in created.live

    deleted = found[("deleted", "Service/shop/frontend", None)]
    assert deleted.manager is None and str(deleted.source) == "apps/base/frontend/service.yaml:1"
    assert deleted.message() == "Service/shop/frontend: declared in git (apps/base/frontend/service.yaml:1), not in the cluster"


@needs_kustomize
def test_controller_noise_status_defaults_and_reconciler_labels_are_not_findings() -> None:
    report = scenario().report()
    noise = {(n.finding.kind, str(n.finding.ref), n.finding.rendered): n for n in report.noise}
    hpa = noise[("changed", "Deployment/shop/search", "spec.replicas")]
    assert hpa.finding.klass == "controller" and "kube-controller-manager" in hpa.reason
    assert (hpa.finding.git, hpa.finding.live) == (2, 4)
    leftover = noise[("created", "ConfigMap/observability/dashboards-legacy", None)]
    assert leftover.finding.klass == "reconciler" and "kustomize-controller" in leftover.reason
    text = json.dumps(report.to_dict())
    assert "status" not in {seg for f in report.findings for seg in (f.path or ()) if isinstance(seg, str)}
    for default in ("progressDeadlineSeconds", "terminationMessagePath", "dnsPolicy", "clusterIP", "kustomize.toolkit.fluxcd.io"):
        assert default not in json.dumps([f.to_dict() for f in report.findings if f.kind != "created"]), default
    assert "deployment.kubernetes.io/revision" not in text


@needs_kustomize
def test_system_objects_are_excluded_by_reason_and_nothing_is_dropped_silently() -> None:
    report = scenario().report()
    reasons = {str(e.ref): e.reason for e in report.excluded}
    assert reasons["ServiceAccount/shop/default"].startswith("every namespace gets the default ServiceAccount")
    assert "cluster CA" in reasons["ConfigMap/payments/kube-root-ca.crt"]
    assert reasons["ReplicaSet/shop/cart-7d9c6b5f4"] == "owned by another object (ownerReferences)"
    assert reasons["Pod/shop/cart-7d9c6b5f4-x2x9k"] == "owned by another object (ownerReferences)"
    assert reasons["Pod/shop/debug-shell"].startswith("Pods are created by workload controllers")  # by kind, whoever made it
    assert reasons["Endpoints/shop/cart"].startswith("Endpoints")
    assert reasons["EndpointSlice/shop/cart-8xk2p"] == "owned by another object (ownerReferences)"
    assert reasons["Event/shop/cart.1879f2a5c3d1e0b7"] == "Events are a log, not state"
    assert reasons["Lease/payments/settlement-lock"].startswith("Leases")
    assert reasons["Secret/shop/cart-token-7xk2p"].startswith("service-account token Secrets")
    assert reasons["PersistentVolumeClaim/shop/data-redis-0"] == "created and managed only by controllers"
    assert reasons["ConfigMap/kube-system/coredns"] == "namespace kube-system is not captured"
    assert reasons["ClusterRole/system:aggregate-to-view"] == "cluster-scoped and not declared in git"
    assert len(report.excluded) == 3 * 2 + 11
    counts = report.to_dict()["excluded"]
    assert counts["owned by another object (ownerReferences)"] == 3 and sum(counts.values()) == len(report.excluded)
    assert [e.reason for e in DEFAULT_EXCLUSIONS if e.kind == "ServiceAccount"] and len(DEFAULT_EXCLUSIONS) >= 12


@needs_kustomize
def test_dr_coverage_counts_what_git_can_rebuild() -> None:
    s = scenario()
    report = s.report()
    present = len(s.desired) - 1  # the deleted Service
    assert report.coverage.rebuildable == present
    assert report.coverage.live == present + 4  # 3 created by people + 1 left behind by the reconciler
    assert [str(u.ref) for u in report.coverage.uncovered] == [
        "ConfigMap/observability/dashboards-legacy",
        "ConfigMap/shop/promo-banner",
        "Secret/shop/promo-api-key",
        "Service/shop/promo",
    ]
    u = {str(x.ref): x for x in report.coverage.uncovered}
    assert u["ConfigMap/shop/promo-banner"].reason == "created live by kubectl-create, not in git"
    assert u["ConfigMap/observability/dashboards-legacy"].klass == "reconciler"
    pct = round(100 * present / (present + 4), 1)
    assert report.coverage.percent == pct
    assert report.coverage.summary() == f"DR coverage: {present}/{present + 4} live objects ({pct:.1f}%) can be rebuilt from git"
    assert Coverage(0, 0).percent == 100.0


@needs_kustomize
def test_desired_objects_outside_the_captured_namespaces_are_unchecked_not_deleted() -> None:
    s = scenario()
    s.live = [o for o in s.live if (o["metadata"].get("namespace") or "") in ("", "shop")]
    report = s.report(namespaces=("shop",))
    assert {f.ref.namespace for f in report.findings} == {"shop"}
    unchecked = {str(e.ref) for e in report.unchecked}
    assert "Deployment/payments/ledger" in unchecked and "Secret/payments/payments-db" in unchecked
    assert not any(f.kind == "deleted" and f.ref.namespace == "payments" for f in report.findings)


def test_objects_of_a_kind_that_could_not_be_listed_are_unchecked_not_deleted() -> None:
    s = scenario()
    s.live = [o for o in s.live if o["kind"] != "Deployment"]  # e.g. the LIST was refused
    listed = {(d.ref.group, d.ref.kind) for d in s.desired} - {("apps", "Deployment")}
    report = s.report(listed=listed, skipped={("apps", "Deployment"): "listing Deployment was refused (HTTP 403)"})
    assert not any(f.ref.kind == "Deployment" and f.kind == "deleted" for f in report.findings)
    reasons = {str(e.ref): e.reason for e in report.unchecked}
    assert reasons["Deployment/payments/ledger"] == "not listed: listing Deployment was refused (HTTP 403)"
    # a kind the server does not serve at all (no reason recorded) is unchecked too
    report = s.report(listed=listed)
    assert reasons.keys() <= {str(e.ref) for e in report.unchecked}
    assert (
        "kind Deployment is not served by the API server"
        in {str(e.ref): e.reason for e in report.unchecked}["Deployment/payments/ledger"]
    )


# --------------------------------------------------------------------------- secrets


@needs_kustomize
def test_no_secret_value_in_findings_json_or_messages() -> None:
    report = scenario().report()
    blob = json.dumps(report.to_dict()) + repr(report) + "".join(f.message() for f in report.findings)
    for raw in SECRET_VALUES:
        assert raw not in blob
    found = keyed(report)
    secret = found[("changed", "Secret/payments/payments-db", "stringData.DB_PASSWORD")]
    assert str(secret.live).startswith("<redacted sha256:") and str(secret.git).startswith("<redacted sha256:")
    assert secret.secret_value and secret.manager == "kubectl-edit"
    created = found[("created", "Secret/shop/promo-api-key", None)]
    assert created.live["data"]["API_KEY"].startswith("<redacted sha256:")
    assert "annotations" not in created.live["metadata"]  # last-applied held the value in clear
    assert created.manager == "kubectl-client-side-apply"


# --------------------------------------------------------------------------- digest


@needs_kustomize
def test_digest_is_stable_and_changes_with_the_drift() -> None:
    s = scenario()
    first = s.report()
    again = scenario()
    again.live.reverse()
    assert again.report().digest() == first.digest()
    assert len(first.digest()) == 12 and first.to_dict()["digest"] == first.digest()
    # the same change re-made later by another client: same drift, same branch
    later = scenario()
    cart = later.live_of(ref(*DEPLOY, "shop", "cart"))
    for e in cart["metadata"]["managedFields"]:
        if e["manager"] == "kubectl":
            e["time"], e["manager"] = "2026-11-27T08:00:00Z", "k9s"
    assert later.report().digest() == first.digest()
    # one more manual change: another digest
    more = scenario(
        (*HUMAN_CHANGES, *CONTROLLER_CHANGES, Change(ref(*DEPLOY, "shop", "cart"), ("spec", "replicas"), 6, "kubectl", "x"))
    )
    assert more.report().digest() != first.digest()
    # a different secret value changes the digest without the value being in it
    other = scenario()
    other.live_of(ref("", "Secret", "payments", "payments-db"))["data"]["DB_PASSWORD"] = b64("another-value")
    assert other.report().digest() != first.digest()


@needs_kustomize
def test_to_dict_shape_and_order() -> None:
    d = scenario().report().to_dict()
    assert set(d) == {"digest", "summary", "coverage", "findings", "noise", "excluded", "unchecked"}
    assert d["summary"]["findings"] == 13
    assert d["summary"]["by_kind"] == {"changed": 7, "added": 2, "created": 3, "deleted": 1}
    assert d["summary"]["namespaces"] == ["payments", "shop"]
    f = next(x for x in d["findings"] if x["path"] == "spec.replicas")
    assert f["path_segments"] == ["spec", "replicas"]
    assert set(f) == {
        "kind", "object", "group", "object_kind", "namespace", "name", "api_version", "path", "path_segments",
        "git", "live", "manager", "operation", "subresource", "time", "source", "class", "owners", "message",
    }  # fmt: skip
    img = next(x for x in d["findings"] if x["path"] == "spec.template.spec.containers[name=cart].image")
    assert img["path_segments"][-2] == {"key": "name", "value": "cart"}
    objects = [(x["namespace"], x["object_kind"], x["name"]) for x in d["findings"]]
    assert objects == sorted(objects)  # as people scan a list: namespace, kind, name
    json.dumps(d)  # plain JSON


# --------------------------------------------------------------------------- classification settings


@needs_kustomize
def test_capture_manager_lists_extend_the_defaults() -> None:
    s = scenario()
    # this team treats kubectl-patch as their deploy tool (a reconciler), and the HPA as a person
    spec = CaptureSpec(namespaces=NAMESPACES, reconcilers=("kubectl-patch",), humans=("kube-controller-manager",))
    report = s.report(spec=spec)
    found = keyed(report)
    assert ("changed", "ConfigMap/shop/frontend-nginx", "data.cache-ttl-seconds") not in found
    assert ("changed", "Deployment/shop/search", "spec.replicas") in found
    n = next(n for n in report.noise if n.finding.rendered == "data.cache-ttl-seconds")
    assert n.finding.klass == "reconciler" and "another git revision" in n.reason


@needs_kustomize
def test_capture_kinds_include_and_exclude() -> None:
    s = scenario()
    only_services = s.report(spec=CaptureSpec(namespaces=NAMESPACES, kinds=("Service",)))
    assert {str(f.ref) for f in only_services.findings if f.kind == "created"} == {"Service/shop/promo"}
    assert "kind not in capture.kinds" in {e.reason for e in only_services.excluded}
    no_cm = s.report(spec=CaptureSpec(namespaces=NAMESPACES, kinds=("-ConfigMap",)))
    assert "ConfigMap/shop/promo-banner" not in {str(f.ref) for f in no_cm.findings}
    # naming a kind the defaults exclude captures it again (the Lease was made by an app, a "human" manager)
    leases = s.report(spec=CaptureSpec(namespaces=NAMESPACES, kinds=("Lease.coordination.k8s.io", "ConfigMap")))
    assert {str(f.ref) for f in leases.findings if f.kind == "created"} == {
        "Lease/payments/settlement-lock",
        "ConfigMap/shop/promo-banner",
    }
    # name-based exclusions stay (kube-root-ca.crt is a ConfigMap)
    assert not any(f.ref.name == "kube-root-ca.crt" for f in leases.findings)


# --------------------------------------------------------------------------- smaller cases


def _obj(kind: str = "ConfigMap", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "shop", **meta}, "data": {"a": "1"}}


def _desired(body: dict[str, Any]) -> DesiredObject:
    from rebuild.core.model import Source

    return DesiredObject(ObjectRef.of(body), str(body["apiVersion"]), copy.deepcopy(body), Source("apps/x.yaml", 1))


def test_a_change_nobody_owns_is_shown_with_an_unknown_manager() -> None:
    """The /scale of a custom resource records no managedFields (kubernetes#131892): not provably noise."""
    git = _obj()
    live = _obj(managedFields=[])
    live["data"]["a"] = "2"
    report = find_drift([_desired(git)], [live], spec=CaptureSpec(), managed_namespaces=["shop"])
    (f,) = report.findings
    assert (f.kind, f.klass, f.manager, f.live) == ("changed", "human", None, "2")
    assert f.changed_by() == "unknown" and f.message().endswith("; no field manager recorded")


def test_a_field_only_the_reconciler_owns_is_noise() -> None:
    git = _obj()
    live = _obj(managedFields=[entry("kustomize-controller", T0, ("data", "a"))])
    live["data"]["a"] = "2"
    report = find_drift([_desired(git)], [live], spec=CaptureSpec(), managed_namespaces=["shop"])
    assert not report.findings
    (n,) = report.noise
    assert n.finding.klass == "reconciler" and n.finding.manager == "kustomize-controller"


def test_a_field_gone_live_is_a_changed_finding_without_live_value() -> None:
    git = _obj()
    git["data"]["b"] = "x"
    live = _obj(managedFields=[entry("kubectl-edit", T0, ("data", "a"))])
    report = find_drift([_desired(git)], [live], spec=CaptureSpec(), managed_namespaces=["shop"])
    (f,) = report.findings
    assert (f.kind, f.rendered, f.git, f.live, f.manager) == ("changed", "data.b", "x", None, None)
    assert "is missing live" in f.message()


def test_objects_without_managed_fields_are_created_by_an_unknown_client() -> None:
    live = _obj(creationTimestamp=T0)
    report = find_drift([], [live], spec=CaptureSpec(), managed_namespaces=["shop"])
    (f,) = report.findings
    assert (f.kind, f.klass, f.manager, f.time) == ("created", "human", None, T0)
    assert report.coverage.uncovered[0].reason == "created live by an unknown client, not in git"


def test_creator_is_the_oldest_managed_fields_entry() -> None:
    live = _obj(
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[
            entry("kubectl-label", "2026-02-01T00:00:00Z", ("metadata", "labels", "x")),
            entry("kubectl-create", "2026-01-01T00:00:00Z", ("data", "a")),
        ],
    )
    (f,) = find_drift([], [live], spec=CaptureSpec(), managed_namespaces=["shop"]).findings
    assert f.manager == "kubectl-create" and f.time == "2026-01-01T00:00:00Z"


def test_empty_managed_namespaces_means_the_namespaces_of_git() -> None:
    live = _obj()
    live["metadata"]["name"] = "other"
    report = find_drift([_desired(_obj())], [live], spec=CaptureSpec(), managed_namespaces=())
    assert {(f.kind, f.ref.name) for f in report.findings} == {("created", "other"), ("deleted", "x")}


def test_an_added_server_default_is_noise() -> None:
    """kubectl create owns the defaults of what it created; once that object is in git they are not drift."""
    git: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "promo", "namespace": "shop"},
        "spec": {"type": "ClusterIP", "selector": {"app": "promo"}, "ports": [{"name": "http", "port": 80}]},
    }
    live = copy.deepcopy(git)
    live["spec"].update(sessionAffinity="None", clusterIP="10.96.1.1")
    live["spec"]["ports"][0].update(protocol="TCP", targetPort=80)
    port: PathSeg = ("port,protocol", "80,TCP")
    live["metadata"]["managedFields"] = [
        entry(
            "kubectl-create",
            T0,
            ("spec", "sessionAffinity"),
            ("spec", "ports", port, "protocol"),
            ("spec", "ports", port, "targetPort"),
            ("spec", "clusterIP"),
        )
    ]
    report = find_drift([_desired(git)], [live], spec=CaptureSpec(), managed_namespaces=["shop"])
    assert not report.findings
    assert {n.finding.rendered for n in report.noise} == {
        "spec.sessionAffinity",
        "spec.ports[port,protocol=80,TCP].protocol",
        "spec.ports[port,protocol=80,TCP].targetPort",
        "spec.clusterIP",
    }
    live["spec"]["sessionAffinity"] = "ClientIP"  # not the default: a person chose it
    report = find_drift([_desired(git)], [live], spec=CaptureSpec(), managed_namespaces=["shop"])
    assert [f.rendered for f in report.findings] == ["spec.sessionAffinity"]


def test_is_server_default_rules() -> None:
    dep = {
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx:1.27"}]}}}
    }
    c = ("spec", "template", "spec", "containers")
    assert is_server_default("Deployment", (*c, ("name", "a"), "imagePullPolicy"), "Always", dep)
    assert not is_server_default("Deployment", (*c, ("name", "a"), "imagePullPolicy"), "IfNotPresent", dep)
    assert is_server_default("Deployment", (*c, ("name", "b"), "imagePullPolicy"), "IfNotPresent", dep)
    assert is_server_default("Deployment", ("spec", "strategy", "rollingUpdate", "maxSurge"), "25%", dep)
    assert not is_server_default("Deployment", ("spec", "strategy", "rollingUpdate", "maxSurge"), "50%", dep)
    assert is_server_default("Deployment", (*c, ("name", "a"), "readinessProbe", "timeoutSeconds"), 1, dep)
    assert is_server_default("CronJob", ("spec", "jobTemplate", "spec", "template", "spec", "dnsPolicy"), "ClusterFirst", {})
    assert not is_server_default("ConfigMap", ("data", "dnsPolicy"), "ClusterFirst", {})
    assert not is_server_default("Service", ("spec", "clusterIP"), "None", {})
    assert not is_server_default("Deployment", ("spec", "replicas"), 1, dep)


def test_strip_server_defaults_keeps_what_people_write() -> None:
    svc = {
        "kind": "Service",
        "spec": {
            "clusterIP": "None",
            "clusterIPs": ["None"],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "type": "ClusterIP",
            "ports": [{"port": 80, "targetPort": 80, "protocol": "UDP"}, {"port": 81, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    strip_server_defaults(svc)
    assert svc["spec"] == {
        "clusterIP": "None",
        "clusterIPs": ["None"],
        "type": "ClusterIP",
        "ports": [{"port": 80, "protocol": "UDP"}, {"port": 81, "targetPort": "http"}],
    }


def test_parse_image() -> None:
    assert parse_image("nginx") == ("nginx", None, None)
    assert parse_image("registry:5000/team/app:1.2") == ("registry:5000/team/app", "1.2", None)
    assert parse_image("ghcr.io/x/y@sha256:abc") == ("ghcr.io/x/y", None, "sha256:abc")
    assert parse_image("ghcr.io/x/y:1.0@sha256:abc") == ("ghcr.io/x/y", "1.0", "sha256:abc")
    assert default_pull_policy("nginx") == "Always" and default_pull_policy("nginx:latest") == "Always"
    assert default_pull_policy("nginx:1.27") == "IfNotPresent" and default_pull_policy("nginx@sha256:ab") == "IfNotPresent"


def test_kustomize_controller_tree_helper_round_trips() -> None:
    """The test helper builds trees managedfields parses back to the same paths."""
    body = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}}}}
    tree = fields_v1(body)
    own = ownership({"metadata": {"managedFields": [{"manager": "m", "operation": "Apply", "fieldsV1": tree}]}})
    assert (
        *("spec", "template", "spec", "containers"),
        ("name", "c"),
        "ports",
        ("containerPort,protocol", "80,TCP"),
    ) in own.claims
    drop(tree, ("spec", "template", "spec", "containers", ("name", "c"), "image"))
    assert "f:image" not in tree["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"c"}']
