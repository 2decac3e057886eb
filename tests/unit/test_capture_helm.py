"""Capture of objects a Flux HelmRelease rendered (issue 13 point 4), offline.

The pure parts, values in and values out: Helm's release record becomes desired objects whose
source is the HelmRelease's file:line; the 1:1 rule (rebuild/capture/helm/values.py) maps a
drifted field to one leaf of ``spec.values`` or says why not; drift counts rendered objects as
covered by git and attributes kubectl's changes to them; the backport edits ``values:`` in place
(the HelmRelease's own file, or the overlay patch that sets the value) and lists the rest with
the HelmRelease's file:line. The repository is the one tests/integration/test_capture_helm.py
runs against the real helm-controller (``write_repo``), written the way people write YAML.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters.helmstore import ReleaseDecodeError
from rebuild.capture.backport import plan_backport
from rebuild.capture.drift import RENDERED_BY_HELM, DriftReport, Finding, FindingKind, ValueEdit, find_drift
from rebuild.capture.helm import (
    RenderedRelease,
    attribute,
    decode_manifest,
    origin,
    read_rendered,
    rendered_objects,
    stale_values,
)
from rebuild.capture.helm.values import Field, Target, context_of, fields, leaves, map_field
from rebuild.core.config import CaptureSpec
from rebuild.core.errors import KubeError
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef, Source
from rebuild.desired.helm import values_digest
from rebuild.desired.render import render
from tests.unit.test_drift import drop, entry, fields_v1, needs_kustomize, set_path

HR_NS = "flux-system"
T_HELM = "2026-12-01T09:00:00Z"

# --------------------------------------------------------------------------- the repository

KUSTOMIZATION_BASE = """\
# Platform charts, installed by Flux's helm-controller.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- charts.yaml
- web.yaml
- shop.yaml
"""
CHARTS = """\
---
# the chart repository rebuild serves on 127.0.0.1 (a drill needs no internet)
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
    name: local-charts
spec:
    interval: 10m
    url: {url}
    timeout: 20s
"""
# Four-space indentation, comments, no namespace (the overlay's kustomization sets it).
WEB = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
    name: web
spec:
    interval: 10m
    releaseName: web
    targetNamespace: apps
    install:
        createNamespace: true
    chart:
        spec:
            chart: tiny
            version: "0.1.0"
            sourceRef:
                kind: HelmRepository
                name: local-charts
    values:
        # two web pods are enough for the demo
        replicas: 2
        greeting: from-git   # shown on the index page
        image:
            tag: "1.27"
"""
WEB_LINE = 1
WEB_REPLICAS_LINE = 20
WEB_GREETING_LINE = 21
# Flow style for the values; the demo overlay bumps the image tag with a patch.
SHOP = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: shop
spec:
  interval: 10m
  releaseName: shop
  targetNamespace: shop
  install: {createNamespace: true}
  chart:
    spec:
      chart: tiny
      version: 0.1.0
      sourceRef: {kind: HelmRepository, name: local-charts}
  values: {replicas: 1, image: {repository: nginx, tag: "1.26"}}
"""
KUSTOMIZATION_DEMO = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: flux-system
resources:
  - ../base
patches:
  - path: shop-values.yaml
"""
SHOP_PATCH = """\
# the demo cluster runs the newer shop image
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: shop
spec:
  values:
    image:
      tag: "1.27"      # bumped for the demo
"""
SHOP_PATCH_TAG_LINE = 9
PATH = "apps/demo"


def write_repo(root: Path, url: str = "http://127.0.0.1:1/charts") -> None:
    """The repository: a HelmRepository and two HelmReleases of the `tiny` chart
    (tests/integration/test_helm_local.py write_chart), one with a per-cluster values patch."""
    (root / "apps" / "base").mkdir(parents=True, exist_ok=True)
    (root / "apps" / "demo").mkdir(parents=True, exist_ok=True)
    (root / "apps/base/kustomization.yaml").write_text(KUSTOMIZATION_BASE)
    (root / "apps/base/charts.yaml").write_text(CHARTS.format(url=url))
    (root / "apps/base/web.yaml").write_text(WEB)
    (root / "apps/base/shop.yaml").write_text(SHOP)
    (root / "apps/demo/kustomization.yaml").write_text(KUSTOMIZATION_DEMO)
    (root / "apps/demo/shop-values.yaml").write_text(SHOP_PATCH)


def repo_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.yaml"))}


def tiny_manifest(release: str, hr: str, replicas: int | None, image: str, greeting: str) -> str:
    """What Helm stores for the `tiny` chart: its templates rendered, then helm-controller's origin labels."""
    origin_labels = f"    helm.toolkit.fluxcd.io/name: {hr}\n    helm.toolkit.fluxcd.io/namespace: {HR_NS}\n"
    replicas_line = f"  replicas: {replicas}\n" if replicas is not None else ""
    return (
        "---\n# Source: tiny/templates/configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n"
        f"{origin_labels}  name: {release}-settings\ndata:\n  greeting: {json.dumps(greeting)}\n"
        "---\n# Source: tiny/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels:\n"
        f"    app: {release}-web\n{origin_labels}  name: {release}-web\nspec:\n{replicas_line}"
        f"  selector:\n    matchLabels:\n      app: {release}-web\n  template:\n    metadata:\n      labels:\n"
        f"        app: {release}-web\n    spec:\n      containers:\n      - image: {json.dumps(image)}\n        name: web\n"
    )


def release_secret(name: str, namespace: str, revision: int, manifest: str, config: dict[str, Any]) -> dict[str, Any]:
    """Helm's storage Secret as the API returns it: base64 (API) of base64 of gzip of the release JSON."""
    rel = {
        "name": name,
        "namespace": namespace,
        "version": revision,
        "info": {"status": "deployed"},
        "chart": {"metadata": {"name": "tiny", "version": "0.1.0"}},
        "config": config,
        "manifest": manifest,
    }
    helm = base64.b64encode(gzip.compress(json.dumps(rel).encode()))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {"name": f"sh.helm.release.v1.{name}.v{revision}", "namespace": HR_NS},
        "data": {"release": base64.b64encode(helm).decode()},
    }


def namespaced(_api_version: str, kind: str) -> bool:
    return kind not in ("ClusterRole", "Namespace")


# --------------------------------------------------------------------------- the release record


def test_the_release_record_becomes_desired_objects_of_the_helm_release() -> None:
    hr = DesiredObject(
        ObjectRef("helm.toolkit.fluxcd.io", "HelmRelease", HR_NS, "web"),
        "helm.toolkit.fluxcd.io/v2",
        {},
        Source("apps/base/web.yaml", 1),
    )
    manifest = tiny_manifest("web", "web", 2, "nginx:1.27", "from-git") + (
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: web-reader\nrules: []\n"
    )
    secret = release_secret("web", "apps", 3, manifest, {"replicas": 2, "dbPassword": "hunter2-in-values"})
    record = decode_manifest(secret)
    assert (record.name, record.namespace, record.revision, record.manifest) == ("web", "apps", 3, manifest)
    assert "hunter2" not in repr(record)  # the values stay in the Secret
    objects = rendered_objects(hr, record.manifest, record.namespace, namespaced)
    assert [str(o.ref) for o in objects] == ["ConfigMap/apps/web-settings", "Deployment/apps/web-web", "ClusterRole/web-reader"]
    assert {o.source for o in objects} == {Source("apps/base/web.yaml", 1, RENDERED_BY_HELM, (HR_NS, "web"))}
    dep = objects[1]
    assert dep.body["spec"]["replicas"] == 2 and dep.body["metadata"]["namespace"] == "apps"
    assert dep.source_of(("spec", "replicas")) == dep.source  # the HelmRelease's line, never a chart template's


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ({"type": "Opaque", "data": {"release": "eA=="}}, "has type Opaque"),
        ({"type": "helm.sh/release.v1", "data": {}}, "has no data.release"),
        ({"type": "helm.sh/release.v1", "data": {"release": "not base64!"}}, "data.release is not base64"),
    ],
)
def test_a_secret_that_is_not_a_release_record_is_an_error_that_quotes_nothing(secret: dict[str, Any], why: str) -> None:
    with pytest.raises(ReleaseDecodeError, match=why):
        decode_manifest({"metadata": {"namespace": HR_NS, "name": "x"}, **secret})


def test_a_manifest_that_is_not_yaml_is_an_error() -> None:
    hr = DesiredObject(
        ObjectRef("helm.toolkit.fluxcd.io", "HelmRelease", HR_NS, "web"), "helm.toolkit.fluxcd.io/v2", {}, Source("a.yaml", 1)
    )
    with pytest.raises(ReleaseDecodeError, match="not YAML"):
        rendered_objects(hr, "kind: [unclosed", "apps", namespaced)


# --------------------------------------------------------------------------- the 1:1 rule, pure


def deployment(name: str, replicas: int | None = 2, images: dict[str, str] | None = None, ns: str = "apps") -> DesiredObject:
    containers = [{"name": c, "image": i} for c, i in (images or {"web": "nginx:1.27"}).items()]
    spec: dict[str, Any] = {"template": {"spec": {"containers": containers}}}
    if replicas is not None:
        spec["replicas"] = replicas
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    return DesiredObject(ObjectRef.of(body), "apps/v1", body, Source("hr.yaml", 1, RENDERED_BY_HELM, (HR_NS, "rel")))


def image_path(container: str = "web") -> FieldPath:
    return ("spec", "template", "spec", "containers", ("name", container), "image")


REPLICAS: FieldPath = ("spec", "replicas")


def decide(
    values: dict[str, Any],
    rendered: list[DesiredObject],
    obj: DesiredObject,
    path: FieldPath,
    live: Any,
    also: dict[tuple[ObjectRef, FieldPath], Any] | None = None,
) -> tuple[ValueEdit, ...] | str:
    fs = [f for o in rendered for f in fields(o)]
    git = next(f.value for f in fs if f.ref == obj.ref and f.path == path)
    target = Target(Field(obj.ref, path, git, context_of(obj.ref, path)), live)
    drifted = {(obj.ref, path): live, **(also or {})}
    return map_field(target, leaves(values), fs, drifted, lambda p: Source("hr.yaml", 20 + len(p)))


def edits(got: tuple[ValueEdit, ...] | str) -> list[tuple[tuple[str | int, ...], Any, Any]]:
    assert not isinstance(got, str), got
    return [(e.path, e.git, e.live) for e in got]


def test_replicas_map_to_the_one_replicas_value() -> None:
    web = deployment("web-web", 2)
    assert edits(decide({"replicas": 2, "greeting": "hi"}, [web], web, REPLICAS, 4)) == [(("replicas",), 2, 4)]
    assert edits(decide({"replicaCount": "2"}, [web], web, REPLICAS, 4)) == [(("replicaCount",), "2", "4")]  # stays a string
    assert edits(
        decide(
            {"controller": {"replica_count": 2}},
            [deployment("ingress-controller")],
            deployment("ingress-controller"),
            REPLICAS,
            3,
        )
    ) == [(("controller", "replica_count"), 2, 3)]


def test_an_image_tag_maps_to_its_tag_value_and_is_written_as_text() -> None:
    web = deployment("web-web", images={"web": "nginx:1.27"})
    assert edits(decide({"image": {"repository": "nginx", "tag": "1.27"}}, [web], web, image_path(), "nginx:1.28")) == [
        (("image", "tag"), "1.27", "1.28")
    ]
    # `tag: 1.27` unquoted is a number in YAML; the template renders it as 1.27; written back as text.
    assert edits(decide({"image": {"tag": 1.27}}, [web], web, image_path(), "nginx:1.28")) == [(("image", "tag"), 1.27, "1.28")]
    # repository and tag changed: both values
    assert edits(
        decide({"image": {"repository": "nginx", "tag": "1.27"}}, [web], web, image_path(), "mirror.example/nginx:1.28")
    ) == [
        (("image", "repository"), "nginx", "mirror.example/nginx"),
        (("image", "tag"), "1.27", "1.28"),
    ]
    # one `image:` value holding the whole reference
    assert edits(decide({"image": "nginx:1.27"}, [web], web, image_path(), "nginx:1.28")) == [
        (("image",), "nginx:1.27", "nginx:1.28")
    ]


def test_an_image_by_digest_or_a_repository_values_do_not_hold_never_maps() -> None:
    web = deployment("web-web", images={"web": "nginx:1.27"})
    by_digest = decide({"image": {"tag": "1.27"}}, [web], web, image_path(), "nginx@sha256:" + "a" * 64)
    assert isinstance(by_digest, str) and "not a plain value" in by_digest
    registry = deployment("web-web", images={"web": "docker.io/library/nginx:1.27"})
    moved = decide(
        {"image": {"registry": "docker.io", "repository": "library/nginx", "tag": "1.27"}},
        [registry],
        registry,
        image_path(),
        "ghcr.io/x/nginx:1.27",
    )
    assert (
        isinstance(moved, str) and "no key of spec.values named for the image repository holds docker.io/library/nginx" in moved
    )


def test_several_candidates_are_told_apart_by_the_component_they_name() -> None:
    api, worker = deployment("rel-api", 2), deployment("rel-worker", 2)
    values = {"api": {"replicaCount": 2}, "worker": {"replicaCount": 2}}
    assert edits(decide(values, [api, worker], worker, REPLICAS, 5)) == [(("worker", "replicaCount"), 2, 5)]
    batch = deployment("rel-batch", 2)
    why = decide(values, [api, worker, batch], batch, REPLICAS, 5)
    assert isinstance(why, str) and "2 values hold 2 (values.api.replicaCount, values.worker.replicaCount)" in why


def test_a_value_of_another_component_is_never_taken() -> None:
    api = deployment("rel-api", 2)
    why = decide({"worker": {"replicaCount": 2}}, [api], api, REPLICAS, 5)
    assert isinstance(why, str) and "values.worker.replicaCount holds 2, but worker does not name Deployment/apps/rel-api" in why


def test_a_value_two_objects_render_maps_only_when_both_changed_alike() -> None:
    a, b = deployment("rel-a", 2), deployment("rel-b", 2)
    why = decide({"replicaCount": 2}, [a, b], a, REPLICAS, 4)
    assert isinstance(why, str) and "values.replicaCount also renders Deployment/apps/rel-b spec.replicas" in why
    assert edits(decide({"replicaCount": 2}, [a, b], a, REPLICAS, 4, also={(b.ref, REPLICAS): 4})) == [(("replicaCount",), 2, 4)]
    other = decide({"replicaCount": 2}, [a, b], a, REPLICAS, 4, also={(b.ref, REPLICAS): 3})
    assert isinstance(other, str) and "also renders" in other


def test_a_chart_default_has_no_value_to_edit() -> None:
    web = deployment("web-web", 1)
    why = decide({"greeting": "hi"}, [web], web, REPLICAS, 3)
    assert why == "no key of spec.values named for the replicas holds 1"


def test_any_other_single_value_maps_by_its_own_key() -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-settings", "namespace": "apps"},
        "data": {"greeting": "from-git", "debug": "true"},
    }
    cm = DesiredObject(ObjectRef.of(body), "v1", body, Source("hr.yaml", 1, RENDERED_BY_HELM, (HR_NS, "web")))
    values = {"greeting": "from-git", "debug": True, "other": "from-git"}
    assert edits(decide(values, [cm], cm, ("data", "greeting"), "hello")) == [(("greeting",), "from-git", "hello")]
    assert isinstance(decide(values, [cm], cm, ("data", "debug"), "false"), str)  # booleans are everywhere: never mapped


def finding(obj: DesiredObject, path: FieldPath | None, git: Any, live: Any, kind: FindingKind = "changed") -> Finding:
    return Finding(kind, obj.ref, obj.api_version, path, git, live, "kubectl", "Update", None, None, obj.source, "human")


def helm_release(values: dict[str, Any], **spec: Any) -> DesiredObject:
    body = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "rel", "namespace": HR_NS},
        "spec": {
            "chart": {"spec": {"chart": "tiny", "version": "0.1.0", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
            "values": values,
            **spec,
        },
    }
    return DesiredObject(
        ObjectRef.of(body), body["apiVersion"], body, Source("hr.yaml", 1), {("spec", "values", "replicas"): Source("hr.yaml", 9)}
    )


def test_what_never_maps_keeps_the_helm_release_line_and_says_why() -> None:
    web = deployment("rel-web", 2)
    rel = RenderedRelease(helm_release({"replicas": 2}), (web,))
    mapped = origin(finding(web, REPLICAS, 2, 4), rel, {})
    assert mapped.edits == (ValueEdit(("replicas",), 2, 4, Source("hr.yaml", 9)),) and mapped.reason == ""
    cases = {
        "added": (finding(web, ("metadata", "labels", "team"), None, "x", "added"), rel, "the chart does not render this field"),
        "deleted": (finding(web, None, None, None, "deleted"), rel, "flux reconcile helmrelease -n flux-system rel --force"),
        "gone": (finding(web, REPLICAS, 2, None), rel, "the field is gone live"),
        "stale": (
            finding(web, REPLICAS, 2, 4),
            RenderedRelease(rel.release, (web,), stale="installed from other values"),
            "installed from other values",
        ),
        "post": (
            finding(web, REPLICAS, 2, 4),
            RenderedRelease(helm_release({"replicas": 2}, postRenderers=[{"kustomize": {"patches": []}}]), (web,)),
            "spec.postRenderers",
        ),
    }
    for name, (f, r, why) in cases.items():
        o = origin(f, r, {})
        assert not o.edits and why in o.reason, name
        assert o.listing().startswith("rendered by HelmRelease flux-system/rel (hr.yaml:1): ") and o.listing().endswith(
            "; change the chart or its values"
        ), name
    secret_body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "apps"}, "data": {"k": "dg=="}}
    secret = DesiredObject(ObjectRef.of(secret_body), "v1", secret_body, web.source)
    assert "never written" in origin(finding(secret, ("data", "k"), "<redacted>", "<redacted>"), rel, {}).reason


# --------------------------------------------------------------------------- drift and backport over the repository


def installed(d: DesiredObject) -> dict[str, Any]:
    """``d`` as helm-controller created it: Helm's client creates each object (an Update by field
    manager helm-controller owning every field of the manifest); then the server's defaults."""
    body = copy.deepcopy(d.body)
    managed = [
        {
            "manager": "helm-controller",
            "operation": "Update",
            "apiVersion": d.api_version,
            "time": T_HELM,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1({k: v for k, v in body.items() if k not in ("apiVersion", "kind")}),
        }
    ]
    meta = body["metadata"]
    meta.setdefault("annotations", {}).update({"meta.helm.sh/release-name": d.ref.name.rsplit("-", 1)[0]})
    managed[0]["fieldsV1"].setdefault("f:metadata", {}).setdefault("f:annotations", {})["f:meta.helm.sh/release-name"] = {}
    if d.ref.kind == "Deployment":
        body["spec"].setdefault("replicas", 1)
        body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
        body["status"] = {"replicas": body["spec"]["replicas"]}
        managed.append(
            entry("kube-controller-manager", T_HELM, ("status", "replicas"), subresource="status", api_version="apps/v1")
        )
    meta.update(uid=f"uid-{d.ref.name}", resourceVersion="7", creationTimestamp=T_HELM, managedFields=managed)
    return body


def by_kubectl(live: dict[str, Any], path: FieldPath, value: Any, manager: str, time: str | None, subresource: str = "") -> None:
    """A change as kubectl records it: the field takes the value, the manager takes it over."""
    set_path(live, path, value)
    for e in live["metadata"]["managedFields"]:
        drop(e["fieldsV1"], path)
    added = entry(manager, time or "", path, subresource=subresource, api_version="apps/v1")
    if time is None:  # kubectl scale of a field another manager owned: no timestamp recorded
        added.pop("time")
    live["metadata"]["managedFields"].append(added)


class Cluster:
    """The repository rendered, the two releases installed as Helm would, and kubectl's changes."""

    def __init__(self, root: Path) -> None:
        write_repo(root)
        got = render(root, PATH)
        assert not got.problems, got.problems
        self.root = root
        self.desired = got.objects
        self.hrs = {o.ref.name: o for o in self.desired if o.ref.kind == "HelmRelease"}
        self.releases = [
            RenderedRelease(
                self.hrs["web"],
                rendered_objects(self.hrs["web"], tiny_manifest("web", "web", 2, "nginx:1.27", "from-git"), "apps", namespaced),
                1,
            ),
            RenderedRelease(
                self.hrs["shop"],
                rendered_objects(self.hrs["shop"], tiny_manifest("shop", "shop", 1, "nginx:1.27", "hello"), "shop", namespaced),
                1,
            ),
        ]
        self.rendered = [o for r in self.releases for o in r.objects]
        self.live = [installed(o) for o in self.rendered] + [installed(o) for o in self.desired]

    def obj(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        return next(
            o for o in self.live if o["kind"] == kind and o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name
        )

    def drift(self, *, with_rendered: bool = True, problems: dict[ObjectRef, str] | None = None) -> DriftReport:
        desired = [*self.rendered, *self.desired] if with_rendered else list(self.desired)
        report = find_drift(
            desired, self.live, spec=CaptureSpec(), managed_namespaces=[HR_NS, "apps", "shop"], helm_problems=problems
        )
        attribute(report, self.releases if with_rendered else [])
        return report

    def kubectl_changes(self) -> None:
        web, shop = self.obj("Deployment", "apps", "web-web"), self.obj("Deployment", "shop", "shop-web")
        by_kubectl(web, REPLICAS, 4, "kubectl", None, "scale")
        by_kubectl(shop, image_path(), "nginx:1.27.3", "kubectl-set", "2026-12-01T10:05:00Z")
        by_kubectl(web, ("metadata", "labels", "team"), "storefront", "kubectl-label", "2026-12-01T10:06:00Z")
        by_kubectl(
            self.obj("ConfigMap", "apps", "web-settings"),
            ("data", "greeting"),
            "hello from a hotfix",
            "kubectl-patch",
            "2026-12-01T10:07:00Z",
        )


@needs_kustomize
def test_rendered_objects_are_covered_by_git_and_their_drift_is_attributed(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    # helm-controller's origin labels alone: covered by git, but listed as not compared
    labels_only = c.drift(with_rendered=False)
    assert labels_only.coverage.uncovered == () and labels_only.coverage.rebuildable == len(c.live)
    assert {str(e.ref) for e in labels_only.unchecked} == {str(o.ref) for o in c.rendered}
    # with Helm's record: covered, compared, and (unchanged) nothing to report
    clean = c.drift()
    assert clean.coverage.uncovered == () and clean.coverage.rebuildable == clean.coverage.live == len(c.live)
    assert clean.findings == [], [f.message() for f in clean.findings]

    c.kubectl_changes()
    report = c.drift()
    got = {(str(f.ref), f.rendered): f for f in report.findings}
    assert set(got) == {
        ("Deployment/apps/web-web", "spec.replicas"),
        ("Deployment/apps/web-web", "metadata.labels.team"),
        ("Deployment/shop/shop-web", "spec.template.spec.containers[name=web].image"),
        ("ConfigMap/apps/web-settings", "data.greeting"),
    }
    scaled = got[("Deployment/apps/web-web", "spec.replicas")]
    assert (scaled.git, scaled.live, scaled.manager, scaled.subresource, scaled.klass) == (2, 4, "kubectl", "scale", "human")
    assert str(scaled.source) == f"apps/base/web.yaml:{WEB_LINE}"  # the HelmRelease, not a chart template
    assert scaled.helm is not None and [(e.rendered, e.git, e.live, str(e.source)) for e in scaled.helm.edits] == [
        ("values.replicas", 2, 4, f"apps/base/web.yaml:{WEB_REPLICAS_LINE}")
    ]
    assert scaled.message() == (
        "Deployment/apps/web-web: field spec.replicas is 4 live, 2 rendered from git (HelmRelease flux-system/web, "
        f"apps/base/web.yaml:{WEB_LINE}: values.replicas at apps/base/web.yaml:{WEB_REPLICAS_LINE}); "
        "changed by kubectl (Update, scale)"
    )
    image = got[("Deployment/shop/shop-web", "spec.template.spec.containers[name=web].image")]
    assert image.helm is not None and [(e.rendered, e.git, e.live, str(e.source)) for e in image.helm.edits] == [
        ("values.image.tag", "1.27", "1.27.3", f"apps/demo/shop-values.yaml:{SHOP_PATCH_TAG_LINE}")  # the overlay's patch sets it
    ]
    label = got[("Deployment/apps/web-web", "metadata.labels.team")]
    assert label.helm is not None and not label.helm.edits and "does not render this field" in label.helm.reason
    assert str(label.source) == f"apps/base/web.yaml:{WEB_LINE}"
    data = report.to_dict()
    row = next(f for f in data["findings"] if f["path"] == "spec.replicas")
    assert row["helm"] == {
        "release": "flux-system/web",
        "source": f"apps/base/web.yaml:{WEB_LINE}",
        "values": [{"path": "values.replicas", "git": 2, "live": 4, "source": f"apps/base/web.yaml:{WEB_REPLICAS_LINE}"}],
        "reason": "",
    }
    assert report.coverage.uncovered == ()


@needs_kustomize
def test_objects_labelled_for_a_helm_release_whose_record_is_unreadable_are_covered_and_listed_unchecked(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.releases = [
        RenderedRelease(
            c.hrs["web"], problem="Helm's record of release web v1 (Secret flux-system/sh.helm.release.v1.web.v1) is missing"
        ),
        c.releases[1],
    ]
    c.rendered = [o for r in c.releases for o in r.objects]
    report = c.drift(problems={c.hrs["web"].ref: c.releases[0].problem})
    assert report.coverage.uncovered == () and report.coverage.rebuildable == len(c.live)
    unchecked = {str(e.ref): e.reason for e in report.unchecked}
    assert unchecked["Deployment/apps/web-web"] == (
        f"rendered by HelmRelease flux-system/web (apps/base/web.yaml:{WEB_LINE}), not compared: "
        "Helm's record of release web v1 (Secret flux-system/sh.helm.release.v1.web.v1) is missing"
    )
    # the HelmChart helm-controller applies from spec.chart carries the same labels (fluxcd/pkg ssa owner labels)
    chart = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmChart",
        "metadata": {
            "name": "flux-system-web",
            "namespace": HR_NS,
            "labels": {"helm.toolkit.fluxcd.io/name": "web", "helm.toolkit.fluxcd.io/namespace": HR_NS},
            "managedFields": [entry("helm-controller", T_HELM, ("spec", "chart"))],
        },
        "spec": {"chart": "tiny"},
    }
    c.live.append(chart)
    report = c.drift(problems={c.hrs["web"].ref: c.releases[0].problem})
    assert report.coverage.uncovered == () and report.coverage.rebuildable == len(c.live)
    assert {str(e.ref): e.reason for e in report.unchecked}["HelmChart/flux-system/flux-system-web"] == (
        f"made by helm-controller from spec.chart of HelmRelease flux-system/web (apps/base/web.yaml:{WEB_LINE}), "
        "applied again on every reconcile"
    )
    # an object with a label naming a HelmRelease git does not declare is not covered
    stray = installed(c.rendered[0])
    stray["metadata"].update(
        name="stray", labels={"helm.toolkit.fluxcd.io/name": "other", "helm.toolkit.fluxcd.io/namespace": HR_NS}
    )
    c.live.append(stray)
    assert "ConfigMap/shop/stray" in {str(u.ref) for u in c.drift().coverage.uncovered}


@needs_kustomize
def test_the_backport_edits_values_in_place_and_lists_the_rest_with_the_helm_release_line(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.kubectl_changes()
    report = c.drift()
    files = repo_files(tmp_path)
    desired = {**{o.ref: o for o in c.rendered}, **{o.ref: o for o in c.desired}}
    bp = plan_backport(report, desired, files, new_objects_dir="apps/captured", include_deletions=False)
    assert sorted(bp.edits) == ["apps/base/web.yaml", "apps/demo/shop-values.yaml"]
    # only the values lines change; comments, indentation and quoting stay
    assert bp.edits["apps/base/web.yaml"] == WEB.replace("        replicas: 2\n", "        replicas: 4\n").replace(
        "greeting: from-git   # shown", "greeting: hello from a hotfix   # shown"
    )
    assert bp.edits["apps/demo/shop-values.yaml"] == SHOP_PATCH.replace('tag: "1.27"      #', 'tag: "1.27.3"      #')
    assert bp.listed == [
        "Deployment/apps/web-web metadata.labels.team: not edited: rendered by HelmRelease flux-system/web "
        f"(apps/base/web.yaml:{WEB_LINE}): the chart does not render this field, so no value of the HelmRelease sets it "
        "today; change the chart or its values"
    ]
    body = bp.body
    row = "| Deployment/apps/web-web | `spec.replicas` | `2` → `4` | kubectl (Update, scale) |  | "
    assert f"{row}`apps/base/web.yaml:{WEB_REPLICAS_LINE}` (`values.replicas` of HelmRelease flux-system/web) |" in body
    assert f"`apps/demo/shop-values.yaml:{SHOP_PATCH_TAG_LINE}` (`values.image.tag` of HelmRelease flux-system/shop)" in body
    assert f"`apps/base/web.yaml:{WEB_LINE}` (not edited, see below)" in body
    assert f"`apps/base/web.yaml:{WEB_GREETING_LINE}` (`values.greeting` of HelmRelease flux-system/web)" in body


@needs_kustomize
def test_a_deleted_rendered_object_is_listed_never_removed_from_the_helm_release_file(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.live = [o for o in c.live if o["metadata"]["name"] != "shop-settings"]
    report = c.drift()
    [gone] = report.findings
    assert gone.kind == "deleted" and str(gone.ref) == "ConfigMap/shop/shop-settings"
    assert gone.message().startswith(
        "ConfigMap/shop/shop-settings: rendered from git (HelmRelease flux-system/shop, apps/base/shop.yaml:1"
    )
    files = repo_files(tmp_path)
    desired = {**{o.ref: o for o in c.rendered}, **{o.ref: o for o in c.desired}}
    bp = plan_backport(report, desired, files, new_objects_dir="apps/captured", include_deletions=True)
    assert bp.edits == {} and bp.deleted_files == []
    assert (
        len(bp.listed) == 1 and "rendered by HelmRelease flux-system/shop (apps/base/shop.yaml:1): deleted live" in bp.listed[0]
    )


# --------------------------------------------------------------------------- reading the records (a faked API)


class FakeKube:
    """The two calls read_rendered makes (GET, discovery), over a dict of objects; Secrets of
    ``forbidden`` namespaces answer 403 as an API server does for an identity without `get`."""

    def __init__(self, objects: list[dict[str, Any]], forbidden: tuple[str, ...] = ()) -> None:
        self.objects = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
        self.forbidden = forbidden
        self.gets: list[tuple[str, str, str]] = []

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.gets.append((kind, namespace or "", name))
        if kind == "Secret" and namespace in self.forbidden:
            raise KubeError(f"secrets {name} is forbidden", status=403)
        found = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(found) if found is not None else None

    def info(self, api_version: str, kind: str) -> Any:
        return type("Info", (), {"namespaced": namespaced(api_version, kind)})()


def live_release(hr: DesiredObject, digest: str, storage: str = HR_NS, history: bool = True) -> dict[str, Any]:
    live = copy.deepcopy(hr.body)
    snap = {
        "name": "rel",
        "namespace": "apps",
        "version": 2,
        "status": "deployed",
        "chartVersion": "0.1.0",
        "configDigest": digest,
    }
    live["status"] = {"storageNamespace": storage, "history": [snap] if history else []}
    return live


def test_read_rendered_reads_each_release_record_and_says_why_when_it_cannot() -> None:
    hr = helm_release({"replicas": 2})
    manifest = tiny_manifest("rel", "rel", 2, "nginx:1.27", "hi")
    record = release_secret("rel", "apps", 2, manifest, {"replicas": 2})
    good = values_digest({"replicas": 2})

    [got] = read_rendered(FakeKube([record]), [hr], [live_release(hr, good)])  # type: ignore[arg-type]
    assert (got.problem, got.stale, got.revision) == ("", "", 2)
    assert [str(o.ref) for o in got.objects] == ["ConfigMap/apps/rel-settings", "Deployment/apps/rel-web"]

    [stale] = read_rendered(FakeKube([record]), [hr], [live_release(hr, values_digest({"replicas": 3}))])  # type: ignore[arg-type]
    assert stale.objects and "installed from other values than git declares" in stale.stale and "hr.yaml:1" in stale.stale

    [missing] = read_rendered(FakeKube([]), [hr], [live_release(hr, good)])  # type: ignore[arg-type]
    assert missing.objects == () and missing.problem == (
        "Helm's record of release rel v2 (Secret flux-system/sh.helm.release.v1.rel.v2) is missing"
    )
    [forbidden] = read_rendered(FakeKube([record], forbidden=(HR_NS,)), [hr], [live_release(hr, good)])  # type: ignore[arg-type]
    assert "is forbidden: allow get on secrets in flux-system" in forbidden.problem

    [fresh] = read_rendered(FakeKube([record]), [hr], [live_release(hr, good, history=False)])  # type: ignore[arg-type]
    assert "no release for it yet" in fresh.problem

    # not listed (its namespace is not captured): asked for with one GET
    kube = FakeKube([record, live_release(hr, good)])
    [asked] = read_rendered(kube, [hr], [])  # type: ignore[arg-type]
    assert asked.objects and ("HelmRelease", HR_NS, "rel") in kube.gets
    [gone] = read_rendered(FakeKube([record]), [hr], [])  # type: ignore[arg-type]
    assert gone.problem == "the HelmRelease is not in the cluster"


def test_a_rendered_secret_changed_live_names_the_helm_release_and_never_its_value() -> None:
    hr = helm_release({"password": "from-values"})
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rel-db", "namespace": "apps"}, "type": "Opaque"}
    body["data"] = {"password": base64.b64encode(b"from-values").decode()}
    [secret] = rendered_objects(hr, json.dumps(body), "apps", namespaced)
    live = installed(secret)
    new_value = "rotated-by-hand-8812"
    by_kubectl(live, ("data", "password"), base64.b64encode(new_value.encode()).decode(), "kubectl-edit", "2026-12-01T11:00:00Z")
    rel = RenderedRelease(hr, (secret,), 1)
    report = find_drift([secret, hr], [live], spec=CaptureSpec(), managed_namespaces=["apps"])
    attribute(report, [rel])
    [f] = report.findings
    assert f.helm is not None and not f.helm.edits and f.helm.reason == "a Secret's values are never written to git"
    bp = plan_backport(
        report, {secret.ref: secret, hr.ref: hr}, {"hr.yaml": "kind: HelmRelease\n"}, new_objects_dir="x", include_deletions=False
    )
    assert bp.edits == {}
    assert bp.listed == [
        "Secret/apps/rel-db: the value of key password differs live (changed by kubectl-edit (Update)); values are not copied; "
        "rendered by HelmRelease flux-system/rel (hr.yaml:1): a Secret's values are never written to git; "
        "change the chart or its values"
    ]
    everything = json.dumps(report.to_dict()) + bp.body + bp.commit_message + "".join(bp.listed)
    assert new_value not in everything and base64.b64encode(new_value.encode()).decode() not in everything
    assert "from-values" not in everything and body["data"]["password"] not in everything


def test_a_release_with_values_from_is_stale_when_installed_from_other_values_than_git_composes() -> None:
    hr = helm_release({"replicas": 2}, valuesFrom=[{"kind": "ConfigMap", "name": "rel-values"}])
    declared = {("ConfigMap", HR_NS, "rel-values"): {"data": {"values.yaml": "greeting: from-git\nreplicas: 1\n"}}}
    from_git = values_digest({"greeting": "from-git", "replicas": 2})  # the inline replicas win

    def lookup(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return declared.get((kind, namespace, name))

    assert stale_values(hr, {"configDigest": from_git}, lookup) == ""
    by_hand = stale_values(hr, {"configDigest": values_digest({"greeting": "edited", "replicas": 2})}, lookup)
    assert "installed from other values than git declares" in by_hand and "spec.valuesFrom at hr.yaml:1" in by_hand
    # without the lookup, or with a ConfigMap git does not declare, it cannot be told: not stale
    assert stale_values(hr, {"configDigest": values_digest({"greeting": "edited"})}) == ""
    assert stale_values(hr, {"configDigest": values_digest({"greeting": "edited"})}, lambda *_: None) == ""
