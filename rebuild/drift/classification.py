"""Manual changes in the live cluster, as findings a person can act on (the input of a backport).

Why this exists: the rebuild that hurts is the one that silently loses last month's hotfix made
with ``kubectl``. Before a reconciler's self-heal or a rebuild erases such a change, rebuild has
to find it, say who made it and when, tell it apart from the cluster's own machinery (an HPA
scaling, controllers writing status and defaults, the reconciler applying git), and point at the
line in git that must change. :mod:`rebuild.verify` already compares one object the way
server-side apply sees ownership; this module runs that over everything capture listed, adds the
objects git does not know and the ones that disappeared, classifies each finding by the field
manager behind it, and measures how much of the live cluster git can rebuild (DR coverage).

Kinds of finding
    ``changed``  a field git declares differs live (``live`` is None when the field is gone live;
                 managedFields does not record removals, so such a finding has no manager);
    ``added``    a field git does not declare, introduced live by a human field manager;
    ``created``  a live object git does not declare, created by a human field manager;
    ``deleted``  a desired object that is not in the cluster (no manager: deletions leave no
                 managedFields behind).

Classes (:func:`rebuild.managedfields.classify_manager`, lists from ``capture.humans``,
``capture.controllers`` and ``capture.reconcilers`` added to the defaults): a ``changed``/
``added`` finding is ``human`` when any owner of the live value is a person (the latest such
owner is "changed by"), ``reconciler`` when only reconcilers own it (the cluster runs another git
revision), ``controller`` when only controllers do. A field nobody owns (the /scale subresource of
a custom resource does not update managedFields, kubernetes#131892) and ``deleted`` objects are
``human`` with an unknown manager: rebuild cannot prove they are noise, so they are shown.
A ``created`` object is classified by its creating manager: the manager of its oldest
managedFields entry (a later server-side apply that takes over every field erases that entry;
then the oldest remaining one is named). Only ``human`` findings are reported; the others go to
``noise`` with a reason, and every live object left out of capture is counted in ``excluded`` by
reason, so nothing is dropped without a word. An ``added`` field whose value is the server's
default (:data:`SERVER_DEFAULTS`) is noise too: ``kubectl create`` owns every default of the
object it created, and once that object is in git those defaults are not manual changes.

Which live objects count (:data:`DEFAULT_EXCLUSIONS`, then ``capture.kinds``): a live object that
matches a desired object is always compared and always counts as rebuildable. Any other live
object is skipped when it lives outside the captured namespaces, is cluster-scoped (capture lists
cluster-scoped objects only when git declares them), has ``ownerReferences`` (a controller made
it and will make it again), matches a default exclusion (system objects every namespace gets), or
is managed only by controllers. ``capture.kinds`` entries are ``Kind`` or ``Kind.group`` globs
(``ConfigMap``, ``Deployment.apps``, ``*.demo.rebuild.dev``); entries without a prefix form an
include list (when there is one, only those kinds are captured, and naming a kind the defaults
exclude, e.g. ``Lease.coordination.k8s.io``, captures it again); entries prefixed with ``-``
exclude more kinds.

DR coverage: of the live objects left after those exclusions, the share that matches a desired
object, and the list of the others with the reason (created by a person, applied by a reconciler
from something the rendered sources do not declare, e.g. a HelmRelease's chart: rebuild does not
expand charts).

Secrets: :func:`rebuild.verify.compare` already replaces every Secret value in a difference by
``<redacted sha256:xxxxxxxx>``; a created Secret is stored here with each ``data``/``stringData``
value redacted the same way and without its last-applied annotation (which holds the values in
clear). No raw Secret value leaves this module.

Pure: values in, values out (no cluster, no git, no clock).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rebuild.config import CaptureSpec
from rebuild.managedfields import (
    DEFAULT_CONTROLLERS,
    DEFAULT_HUMANS,
    DEFAULT_RECONCILERS,
    ManagerClass,
    ManagerClassifier,
    Owner,
    canonical_json,
    latest,
    ownership,
)
from rebuild.model import DesiredObject, FieldPath, ObjectRef, Source, render_path
from rebuild.verify import LAST_APPLIED, FieldDiff, compare, redact

__all__ = [
    "DEFAULT_EXCLUSIONS",
    "SERVER_DEFAULTS",
    "Coverage",
    "DriftReport",
    "Excluded",
    "Exclusion",
    "Finding",
    "FindingKind",
    "Noise",
    "Uncovered",
    "classifier_for",
    "default_pull_policy",
    "find_drift",
    "is_secret",
    "is_server_default",
    "parse_image",
    "path_to_json",
    "strip_server_defaults",
]

FindingKind = Literal["changed", "added", "created", "deleted"]
KIND_ORDER: dict[str, int] = {"changed": 0, "added": 1, "deleted": 2, "created": 3}

# Metadata the API server writes; never part of a captured object (nor of its digest).
BOOKKEEPING_META = (
    "managedFields",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass(frozen=True)
class Exclusion:
    """A default exclusion: live objects of this group/kind (and name / Secret type) are system objects."""

    group: str
    kind: str
    reason: str
    name: str | None = None
    secret_type: str | None = None

    def matches(self, obj: Mapping[str, Any], ref: ObjectRef) -> bool:
        if ref.group != self.group or ref.kind != self.kind:
            return False
        if self.name is not None and ref.name != self.name:
            return False
        return self.secret_type is None or obj.get("type") == self.secret_type

    @property
    def by_kind_only(self) -> bool:
        return self.name is None and self.secret_type is None


# The default exclusion list. By kind: objects controllers create and re-create (an include in
# capture.kinds that names the kind lifts these). By name or type: what the cluster puts into
# every namespace (always excluded).
DEFAULT_EXCLUSIONS: tuple[Exclusion, ...] = (
    Exclusion("", "Pod", "Pods are created by workload controllers (or run ad hoc); not declarative state"),
    Exclusion("apps", "ReplicaSet", "ReplicaSets are created by Deployments"),
    Exclusion("apps", "ControllerRevision", "ControllerRevisions are history kept by StatefulSets and DaemonSets"),
    Exclusion("", "Endpoints", "Endpoints are maintained by the endpoints controller"),
    Exclusion("discovery.k8s.io", "EndpointSlice", "EndpointSlices are maintained by the endpointslice controller"),
    Exclusion("", "Event", "Events are a log, not state"),
    Exclusion("events.k8s.io", "Event", "Events are a log, not state"),
    Exclusion("coordination.k8s.io", "Lease", "Leases are leader-election and heartbeat records"),
    Exclusion("metrics.k8s.io", "PodMetrics", "metrics are measurements, not state"),
    Exclusion("", "ServiceAccount", "every namespace gets the default ServiceAccount", name="default"),
    Exclusion("", "ConfigMap", "kube-controller-manager publishes the cluster CA into every namespace", name="kube-root-ca.crt"),
    Exclusion("", "ConfigMap", "Istio injects its CA into every namespace", name="istio-ca-root-cert"),
    Exclusion("", "ConfigMap", "OpenShift injects the service CA into every namespace", name="openshift-service-ca.crt"),
    Exclusion(
        "",
        "Secret",
        "service-account token Secrets are filled in by the token controller",
        secret_type="kubernetes.io/service-account-token",
    ),
    Exclusion(
        "",
        "Secret",
        "Helm release records are Helm's bookkeeping (the release's objects are captured themselves)",
        secret_type="helm.sh/release.v1",
    ),
)


def is_secret(ref: ObjectRef) -> bool:
    return ref.group == "" and ref.kind == "Secret"


def classifier_for(spec: CaptureSpec) -> ManagerClassifier:
    """The defaults plus ``capture.humans`` / ``controllers`` / ``reconcilers``."""
    return ManagerClassifier(
        humans=(*DEFAULT_HUMANS, *spec.humans),
        controllers=(*DEFAULT_CONTROLLERS, *spec.controllers),
        reconcilers=(*DEFAULT_RECONCILERS, *spec.reconcilers),
    )


# --------------------------------------------------------------------------- server defaults

_ANY: Any = object()  # a row that matches whatever the value is (the server allocated it)

_POD_TEMPLATE = {
    "Deployment": "spec.template",
    "StatefulSet": "spec.template",
    "DaemonSet": "spec.template",
    "ReplicaSet": "spec.template",
    "Job": "spec.template",
    "CronJob": "spec.jobTemplate.spec.template",
}
_WORKLOADS = tuple(_POD_TEMPLATE)
_PODS = ("Pod", *_WORKLOADS)
_CONTAINERS = ("<pod>.containers[]", "<pod>.initContainers[]")
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_PROBE_DEFAULTS = (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3))

# What the API server fills in when a manifest leaves it out: (kinds, path, default).
#
# Used twice: a captured object drops every field equal to its default (a clean manifest), and an
# "added" field equal to its default is noise, not a manual change (``kubectl create`` owns the
# defaults of the object it created, so once that object is in git its defaults would otherwise
# come back as human additions). ``<pod>`` is the pod spec of the kind (spec for a Pod,
# spec.template.spec for workloads, spec.jobTemplate.spec.template.spec for a CronJob),
# ``<template>`` the pod template, ``x[]`` every item of the list ``x``; ``_ANY`` matches any value
# (allocated by the server). Rules that are code, not rows: a container's ``imagePullPolicy`` equal
# to the default for its image (Always for ``:latest`` or no tag, IfNotPresent otherwise), a Service
# port's ``targetPort`` equal to its ``port``, a Service's ``ipFamilies`` under a SingleStack
# policy; a headless Service's ``clusterIP: None`` is kept. ``spec.type: ClusterIP`` of a Service is
# kept on purpose: people write it.
SERVER_DEFAULTS: tuple[tuple[tuple[str, ...], str, Any], ...] = (
    (("Deployment",), "spec.progressDeadlineSeconds", 600),
    (("Deployment", "StatefulSet", "DaemonSet"), "spec.revisionHistoryLimit", 10),
    (("Deployment",), "spec.strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    (("Deployment",), "spec.strategy", {}),
    (("StatefulSet",), "spec.podManagementPolicy", "OrderedReady"),
    (("StatefulSet",), "spec.updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
    (("StatefulSet",), "spec.persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}),
    (("StatefulSet",), "spec.volumeClaimTemplates[].apiVersion", "v1"),
    (("StatefulSet",), "spec.volumeClaimTemplates[].kind", "PersistentVolumeClaim"),
    (("StatefulSet",), "spec.volumeClaimTemplates[].metadata.creationTimestamp", None),
    (("StatefulSet",), "spec.volumeClaimTemplates[].spec.volumeMode", "Filesystem"),
    (("StatefulSet",), "spec.volumeClaimTemplates[].status", _ANY),
    (("DaemonSet",), "spec.updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    (_WORKLOADS, "<template>.metadata.creationTimestamp", None),
    (_PODS, "<pod>.dnsPolicy", "ClusterFirst"),
    (_PODS, "<pod>.restartPolicy", "Always"),
    (_PODS, "<pod>.schedulerName", "default-scheduler"),
    (_PODS, "<pod>.securityContext", {}),
    (_PODS, "<pod>.terminationGracePeriodSeconds", 30),
    *((_PODS, f"{c}.terminationMessagePath", "/dev/termination-log") for c in _CONTAINERS),
    *((_PODS, f"{c}.terminationMessagePolicy", "File") for c in _CONTAINERS),
    *((_PODS, f"{c}.resources", {}) for c in _CONTAINERS),
    *((_PODS, f"{c}.ports[].protocol", "TCP") for c in _CONTAINERS),
    *((_PODS, f"{c}.env[].valueFrom.fieldRef.apiVersion", "v1") for c in _CONTAINERS),
    *((_PODS, f"{c}.{p}.{k}", v) for c in _CONTAINERS for p in _PROBES for k, v in _PROBE_DEFAULTS),
    *((_PODS, f"{c}.{p}.httpGet.scheme", "HTTP") for c in _CONTAINERS for p in _PROBES),
    *((_PODS, f"<pod>.volumes[].{v}.defaultMode", 420) for v in ("configMap", "secret", "projected", "downwardAPI")),
    (("Service",), "spec.clusterIP", _ANY),
    (("Service",), "spec.clusterIPs", _ANY),
    (("Service",), "spec.ipFamilyPolicy", "SingleStack"),
    (("Service",), "spec.internalTrafficPolicy", "Cluster"),
    (("Service",), "spec.externalTrafficPolicy", "Cluster"),
    (("Service",), "spec.sessionAffinity", "None"),
    (("Service",), "spec.allocateLoadBalancerNodePorts", True),
    (("Service",), "spec.ports[].protocol", "TCP"),
    (("Service",), "spec.ports[].nodePort", _ANY),  # allocated; pin it again by hand if it was pinned
    (("Service",), "spec.healthCheckNodePort", _ANY),
)


def _expand(pattern: str, kind: str) -> list[str] | None:
    template = _POD_TEMPLATE.get(kind)
    if "<template>" in pattern:
        if template is None:
            return None
        pattern = pattern.replace("<template>", template)
    if "<pod>" in pattern:
        if kind != "Pod" and template is None:
            return None
        pattern = pattern.replace("<pod>", "spec" if kind == "Pod" else f"{template}.spec")
    return pattern.split(".")


def _rows(kind: str) -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = []
    for kinds, pattern, default in SERVER_DEFAULTS:
        if kind in kinds:
            segs = _expand(pattern, kind)
            if segs is not None:
                out.append((segs, default))
    return out


def _same(value: Any, default: Any) -> bool:
    if default is _ANY:
        return True
    return type(value) is type(default) and bool(value == default)


def parse_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/app:1.2@sha256:ab`` -> ("registry:5000/app", "1.2", "sha256:ab")."""
    name, _, digest = image.partition("@")
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag or None, digest or None


def default_pull_policy(image: str) -> str:
    """The imagePullPolicy the API server sets when a container leaves it out."""
    _, tag, digest = parse_image(image)
    return "Always" if digest is None and tag in (None, "latest") else "IfNotPresent"


def _pattern(path: FieldPath) -> list[str]:
    """spec.ports[port,protocol=80,TCP].protocol -> ["spec", "ports[]", "protocol"]."""
    out: list[str] = []
    for seg in path:
        if isinstance(seg, str):
            out.append(seg)
        elif out and not out[-1].endswith("[]"):
            out[-1] += "[]"
    return out


def _resolve(node: Any, path: FieldPath) -> Any:
    for seg in path:
        if isinstance(seg, str):
            node = node.get(seg) if isinstance(node, Mapping) else None
        elif isinstance(seg, int):
            node = node[seg] if isinstance(node, list) and 0 <= seg < len(node) else None
        else:
            keys, values = seg[0].split(","), seg[1].split(",")
            found = None
            for item in node if isinstance(node, list) else []:
                if isinstance(item, Mapping) and all(
                    str(item.get(k, "TCP" if k == "protocol" else "")) == v for k, v in zip(keys, values, strict=False)
                ):
                    found = item
                    break
            node = found
        if node is None:
            return None
    return node


def is_server_default(kind: str, path: FieldPath, value: Any, obj: Mapping[str, Any]) -> bool:
    """Is ``value`` at ``path`` of a live ``kind`` object what the API server would fill in?"""
    pat = _pattern(path)
    for segs, default in _rows(kind):
        n = len(segs)
        if pat == segs and _same(value, default):
            return not (default is _ANY and value in ("None", ["None"]))
        if len(pat) > n and pat[:n] == segs and isinstance(default, dict):
            sub: Any = default
            for key in pat[n:]:
                sub = sub.get(key, _MISSING) if isinstance(sub, dict) else _MISSING
            if sub is not _MISSING and _same(value, sub):
                return True
    if pat and pat[-1] == "imagePullPolicy" and len(pat) >= 2 and pat[-2] in ("containers[]", "initContainers[]"):
        container = _resolve(obj, path[:-1])
        return isinstance(container, Mapping) and value == default_pull_policy(str(container.get("image") or ""))
    if kind == "Service" and pat == ["spec", "ports[]", "targetPort"]:
        port = _resolve(obj, path[:-1])
        return isinstance(port, Mapping) and port.get("port") == value
    if kind == "Service" and pat == ["spec", "ipFamilies"]:
        spec = obj.get("spec")
        return isinstance(spec, Mapping) and spec.get("ipFamilyPolicy", "SingleStack") == "SingleStack"
    return False


_MISSING: Any = object()


def _drop(node: Any, segs: list[str], default: Any) -> None:
    if not segs or not isinstance(node, dict):
        return
    head, rest = segs[0], segs[1:]
    many = head.endswith("[]")
    key = head[:-2] if many else head
    if key not in node:
        return
    if many:
        for item in node[key] if isinstance(node[key], list) else []:
            _drop(item, rest, default)
    elif rest:
        _drop(node[key], rest, default)
    elif _same(node[key], default) and not (default is _ANY and node[key] in ("None", ["None"])):
        del node[key]


def strip_server_defaults(body: dict[str, Any]) -> None:
    """Remove, in place, every field of ``body`` equal to its server default (:data:`SERVER_DEFAULTS`)."""
    kind = str(body.get("kind") or "")
    spec = body.get("spec")
    if kind == "Service" and isinstance(spec, dict):
        if spec.get("ipFamilyPolicy", "SingleStack") == "SingleStack":
            spec.pop("ipFamilies", None)
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and "targetPort" in port and port.get("targetPort") == port.get("port"):
                del port["targetPort"]
    for segs, default in _rows(kind):
        _drop(body, segs, default)
    pod = _expand("<pod>", kind)
    node: Any = body
    for seg in pod or []:
        node = node.get(seg) if isinstance(node, dict) else None
    if pod and isinstance(node, dict):
        for list_key in ("containers", "initContainers"):
            for c in node.get(list_key) or []:
                if isinstance(c, dict) and c.get("imagePullPolicy") == default_pull_policy(str(c.get("image") or "")):
                    del c["imagePullPolicy"]


# --------------------------------------------------------------------------- values


def path_to_json(path: FieldPath) -> list[Any]:
    """A FieldPath as JSON: keys as strings, indexes as ints, selectors as {"key", "value"}."""
    return [_seg_json(s) for s in path]


def _seg_json(seg: Any) -> Any:
    if isinstance(seg, tuple):
        return {"key": seg[0], "value": seg[1]}
    return seg


def _fingerprint(value: Any) -> str:
    """sha256 of a value's canonical JSON: what the digest holds instead of the value."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


@dataclass(frozen=True)
class Finding:
    """One manual change. ``path`` is None for whole-object findings (created, deleted).

    ``git``/``live`` hold the values (None when that side lacks the field); for ``created`` the
    live value is the object without status and server bookkeeping. Secret values are redacted.
    """

    kind: FindingKind
    ref: ObjectRef
    api_version: str
    path: FieldPath | None
    git: Any
    live: Any
    manager: str | None
    operation: str | None
    subresource: str | None
    time: str | None
    source: Source | None
    klass: ManagerClass
    owners: tuple[Owner, ...] = ()

    @property
    def rendered(self) -> str | None:
        return render_path(self.path) if self.path is not None else None

    @property
    def secret(self) -> bool:
        return is_secret(self.ref)

    @property
    def secret_value(self) -> bool:
        """A finding about a Secret's values (data / stringData), whose values are never written."""
        if not self.secret:
            return False
        return self.path is None or (bool(self.path) and self.path[0] in ("data", "stringData"))

    def changed_by(self) -> str:
        """``kubectl-edit (Update)`` / ``kubectl (Update, scale)`` / ``unknown``."""
        if not self.manager:
            return "unknown"
        how = (self.operation or "") + (f", {self.subresource}" if self.subresource else "")
        return f"{self.manager} ({how})" if how else self.manager

    def message(self) -> str:
        """One line: ``Deployment/shop/cart: field spec.replicas is 5 live, 3 in git (file:line); changed by ...``."""
        where = f" ({self.source})" if self.source else ""
        if self.kind == "created":
            text = f"{self.ref}: created live, not in git"
        elif self.kind == "deleted":
            text = f"{self.ref}: declared in git{where}, not in the cluster"
        elif self.kind == "added":
            text = f"{self.ref}: field {self.rendered} is {self.values()[1]} live, not in git{where}"
        elif self.live is None:
            text = f"{self.ref}: field {self.rendered} is missing live, {self.values()[0]} in git{where}"
        else:
            g, lv = self.values()
            text = f"{self.ref}: field {self.rendered} is {lv} live, {g} in git{where}"
        if self.manager:
            text += f"; {'created' if self.kind == 'created' else 'changed'} by {self.changed_by()}"
            if self.time:
                text += f" at {self.time}"
        elif self.kind == "added" and self.path == ("spec", "replicas"):
            text += "; set through the scale subresource (the API server recorded no field manager for it)"
        elif self.kind != "deleted":
            text += "; no field manager recorded"
        return text

    def canonical(self) -> list[Any]:
        """What identifies this change in the digest: values as sha256, never as text."""
        return [
            self.kind,
            self.ref.group,
            self.ref.kind,
            self.ref.namespace,
            self.ref.name,
            self.rendered or "",
            _fingerprint(self.git),
            _fingerprint(self.live),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "object": str(self.ref),
            "group": self.ref.group,
            "object_kind": self.ref.kind,
            "namespace": self.ref.namespace,
            "name": self.ref.name,
            "api_version": self.api_version,
            "path": self.rendered,
            "path_segments": path_to_json(self.path) if self.path is not None else None,
            "git": self.git,
            "live": self.live,
            "manager": self.manager,
            "operation": self.operation,
            "subresource": self.subresource,
            "time": self.time,
            "source": str(self.source) if self.source else None,
            "class": self.klass,
            "owners": [
                {"manager": o.manager, "operation": o.operation, "subresource": o.subresource, "time": o.time}
                for o in self.owners
            ],
            "message": self.message(),
        }

    def sort_key(self) -> tuple[Any, ...]:
        """Namespace, kind, name (as people scan a list), then kind of finding and path."""
        r = self.ref
        return (r.namespace, r.kind, r.name, r.group, KIND_ORDER[self.kind], self.rendered or "")

    def values(self, limit: int = 60) -> tuple[str, str]:
        """(git, live) as short one-line texts; for multi-line strings, the first line that differs.

        ``(absent)`` stands for a side without the field.
        """
        g, lv = self.git, self.live
        if isinstance(g, str) and isinstance(lv, str) and ("\n" in g or "\n" in lv):
            gl, ll = g.splitlines(), lv.splitlines()
            for n in range(max(len(gl), len(ll))):
                a = gl[n] if n < len(gl) else ""
                b = ll[n] if n < len(ll) else ""
                if a != b:
                    return f"line {n + 1}: {_short(a.strip(), limit)}", f"line {n + 1}: {_short(b.strip(), limit)}"
        return _short(g, limit), _short(lv, limit)


def _short(v: Any, limit: int = 60) -> str:
    if v is None:
        return "(absent)"
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)
    text = text.replace("\r", "").replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Noise:
    """A finding that is not reported (not made by a person), and why."""

    finding: Finding
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "reason": self.reason}


@dataclass(frozen=True)
class Excluded:
    """A live object left out of capture (or a desired object whose live state was not listed)."""

    ref: ObjectRef
    reason: str


@dataclass(frozen=True)
class Uncovered:
    """A live object git cannot rebuild, with why it exists."""

    ref: ObjectRef
    reason: str
    manager: str | None
    klass: ManagerClass | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": str(self.ref),
            "group": self.ref.group,
            "reason": self.reason,
            "manager": self.manager,
            "class": self.klass,
        }


@dataclass(frozen=True)
class Coverage:
    """DR coverage: how many of the captured live objects git can rebuild."""

    live: int
    rebuildable: int
    uncovered: tuple[Uncovered, ...] = ()

    @property
    def percent(self) -> float:
        return 100.0 if self.live == 0 else round(100.0 * self.rebuildable / self.live, 1)

    def summary(self) -> str:
        """``DR coverage: 57/59 live objects (96.6%) can be rebuilt from git``."""
        return f"DR coverage: {self.rebuildable}/{self.live} live objects ({self.percent:.1f}%) can be rebuilt from git"

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "rebuildable": self.rebuildable,
            "percent": self.percent,
            "uncovered": [u.to_dict() for u in self.uncovered],
        }


@dataclass
class DriftReport:
    """Everything capture found. ``findings`` are reported; ``noise`` is kept with reasons.

    JSON shape of :meth:`to_dict` (keys always present; lists sorted by namespace, kind and
    name of the object, then kind of finding, then path; every value of a Secret redacted)::

        {
          "digest": "3f9a0c12b4de",             # DriftReport.digest(): same drift, same digest
          "summary": {
            "findings": 5,                       # reported (human) findings
            "by_kind": {"changed": 3, "added": 1, "created": 1, "deleted": 0},
            "namespaces": ["payments", "shop"],  # "" never appears; cluster-scoped -> "(cluster)"
            "noise": 2
          },
          "coverage": {
            "live": 59, "rebuildable": 57, "percent": 96.6,
            "uncovered": [{"object": "ConfigMap/shop/promo", "group": "", "reason": "created live by
                           kubectl-create, not in git", "manager": "kubectl-create", "class": "human"}]
          },
          "findings": [{
            "kind": "changed" | "added" | "created" | "deleted",
            "object": "Deployment/shop/cart", "group": "apps", "object_kind": "Deployment",
            "namespace": "shop", "name": "cart", "api_version": "apps/v1",
            "path": "spec.replicas" | null,
            "path_segments": ["spec", "replicas"] | null,   # selector -> {"key": "name", "value": "cart"}
            "git": 3, "live": 5,                 # JSON values; null when that side lacks it; for
                                                 # created: live is the object without status and
                                                 # server metadata (a Secret's values redacted)
            "manager": "kubectl" | null, "operation": "Update" | null, "subresource": "scale" | null,
            "time": "2026-11-26T10:42:00Z" | null,
            "source": "apps/overlays/demo/kustomization.yaml:23" | null,
            "class": "human" | "controller" | "reconciler",
            "owners": [{"manager": "kubectl", "operation": "Update", "subresource": "scale", "time": "..."}],
                                                 # every managedFields entry owning the live value
                                                 # (for created: every entry of the object)
            "message": "Deployment/shop/cart: field spec.replicas is 5 live, 3 in git (...); changed by ..."
          }],
          "noise": [{...same keys as a finding..., "reason": "owned only by controllers (kube-controller-manager)"}],
          "excluded": {"<reason>": <count>},     # live objects left out of capture
          "unchecked": [{"object": "...", "reason": "..."}]   # desired objects whose live state was not listed
        }
    """

    findings: list[Finding] = field(default_factory=list)
    noise: list[Noise] = field(default_factory=list)
    coverage: Coverage = field(default_factory=lambda: Coverage(0, 0))
    excluded: list[Excluded] = field(default_factory=list)
    unchecked: list[Excluded] = field(default_factory=list)

    @property
    def has_drift(self) -> bool:
        return bool(self.findings)

    def namespaces(self) -> list[str]:
        return sorted({f.ref.namespace or "(cluster)" for f in self.findings})

    def by_kind(self) -> dict[str, int]:
        counts = Counter(f.kind for f in self.findings)
        return {k: counts.get(k, 0) for k in ("changed", "added", "created", "deleted")}

    def digest(self) -> str:
        """12 hex digits of the sha256 of the reported findings (values hashed, never raw).

        Managers and times are left out on purpose: the same change seen twice, or re-made by
        another client with the same result, is the same drift and must name the same branch.
        """
        canon = [f.canonical() for f in sorted(self.findings, key=Finding.sort_key)]
        return hashlib.sha256(canonical_json(canon).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        excluded = Counter(e.reason for e in self.excluded)
        return {
            "digest": self.digest(),
            "summary": {
                "findings": len(self.findings),
                "by_kind": self.by_kind(),
                "namespaces": self.namespaces(),
                "noise": len(self.noise),
            },
            "coverage": self.coverage.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "noise": [n.to_dict() for n in self.noise],
            "excluded": dict(sorted(excluded.items())),
            "unchecked": [{"object": str(e.ref), "reason": e.reason} for e in self.unchecked],
        }


# --------------------------------------------------------------------------- scope


@dataclass(frozen=True)
class _KindFilter:
    includes: tuple[str, ...]
    excludes: tuple[str, ...]

    @classmethod
    def of(cls, kinds: Iterable[str]) -> _KindFilter:
        inc = tuple(k.strip() for k in kinds if k.strip() and not k.strip().startswith("-"))
        exc = tuple(k.strip()[1:].strip() for k in kinds if k.strip().startswith("-"))
        return cls(inc, exc)

    @staticmethod
    def _match(pattern: str, ref: ObjectRef) -> bool:
        kind, _, group = pattern.partition(".")
        if not fnmatch.fnmatchcase(ref.kind, kind):
            return False
        return not group or fnmatch.fnmatchcase(ref.group, group)

    def named_explicitly(self, ref: ObjectRef) -> bool:
        """An include that names this kind without wildcards (lifts a default by-kind exclusion)."""
        for p in self.includes:
            kind, _, group = p.partition(".")
            if kind == ref.kind and (not group or group == ref.group):
                return True
        return False

    def why_not(self, ref: ObjectRef) -> str | None:
        if self.includes and not any(self._match(p, ref) for p in self.includes):
            return "kind not in capture.kinds"
        for p in self.excludes:
            if self._match(p, ref):
                return f"excluded by capture.kinds (-{p})"
        return None


def _exclusion(obj: Mapping[str, Any], ref: ObjectRef, kinds: _KindFilter) -> str | None:
    for ex in DEFAULT_EXCLUSIONS:
        if ex.matches(obj, ref) and not (ex.by_kind_only and kinds.named_explicitly(ref)):
            return ex.reason
    return kinds.why_not(ref)


def _owner_refs(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    if not isinstance(refs, list) or not refs:
        return None
    first = refs[0] if isinstance(refs[0], Mapping) else {}
    return f"{first.get('kind', '?')}/{first.get('name', '?')}"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _captured_body(obj: Mapping[str, Any], ref: ObjectRef) -> dict[str, Any]:
    """The live object without status and server bookkeeping; a Secret's values redacted."""
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for key in BOOKKEEPING_META:
            meta.pop(key, None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            ann.pop(LAST_APPLIED, None)
            if not ann:
                meta.pop("annotations")
    if is_secret(ref):
        for key in ("data", "stringData"):
            values = body.get(key)
            if isinstance(values, dict):
                body[key] = {k: redact(str(v)) for k, v in values.items()}
    return body


# --------------------------------------------------------------------------- main


def find_drift(
    desired: Sequence[DesiredObject],
    live: Sequence[dict[str, Any]],
    *,
    spec: CaptureSpec,
    managed_namespaces: Collection[str],
    listed: Collection[tuple[str, str]] | None = None,
    skipped: Mapping[tuple[str, str], str] | None = None,
) -> DriftReport:
    """Compare what git declares with everything capture listed; see the module docstring.

    ``live`` holds every object listed in ``managed_namespaces`` plus the cluster-scoped objects
    git declares. An empty ``managed_namespaces`` means the namespaces of the desired objects.
    Desired objects in other namespaces are ``unchecked`` (their live state was not listed), and
    so are those of a (group, kind) not in ``listed`` (when given; ``skipped`` says why): a
    kind that could not be listed says nothing about whether its objects were deleted.
    """
    classifier = classifier_for(spec)
    kinds = _KindFilter.of(spec.kinds)
    namespaces = set(managed_namespaces) or {d.ref.namespace for d in desired if d.ref.namespace}
    report = DriftReport()
    by_ref: dict[ObjectRef, DesiredObject] = {d.ref: d for d in desired}
    seen: set[ObjectRef] = set()
    live_count = rebuildable = 0
    uncovered: list[Uncovered] = []

    scalers = _autoscaled(desired)
    for obj in live:
        ref = ObjectRef.of(obj)
        if ref in seen:
            continue  # listed twice (e.g. two API versions of one kind): compare it once
        seen.add(ref)
        want = by_ref.get(ref)
        if want is not None:
            if ref.namespace and ref.namespace not in namespaces:
                report.unchecked.append(Excluded(ref, f"namespace {ref.namespace} is not captured (capture.namespaces)"))
                continue
            live_count += 1
            rebuildable += 1
            _compare_one(want, obj, classifier, report, scalers.get(ref))
            continue
        if not ref.namespace:
            report.excluded.append(Excluded(ref, "cluster-scoped and not declared in git"))
            continue
        if ref.namespace not in namespaces:
            report.excluded.append(Excluded(ref, f"namespace {ref.namespace} is not captured"))
            continue
        owner = _owner_refs(obj)
        if owner is not None:
            report.excluded.append(Excluded(ref, "owned by another object (ownerReferences)"))
            continue
        if (_meta(obj).get("labels") or {}).get("app.kubernetes.io/managed-by") == "rebuild":
            report.excluded.append(Excluded(ref, "made by rebuild's platform stack from rebuild.yaml (rebuilt with it)"))
            continue
        why = _exclusion(obj, ref, kinds)
        if why is not None:
            report.excluded.append(Excluded(ref, why))
            continue
        entries = ownership(obj).entries
        classes = {classifier(o) for o in entries}
        if entries and classes == {"controller"}:
            report.excluded.append(Excluded(ref, "created and managed only by controllers"))
            continue
        live_count += 1
        finding = _created(obj, ref, entries, classifier)
        if finding.klass == "human":
            who = finding.manager or "an unknown client"
            uncovered.append(Uncovered(ref, f"created live by {who}, not in git", finding.manager, finding.klass))
            report.findings.append(finding)
        else:
            reason = f"applied by {finding.manager} ({finding.klass}) but not declared in the rendered sources"
            uncovered.append(Uncovered(ref, reason, finding.manager, finding.klass))
            report.noise.append(Noise(finding, reason))

    for d in desired:
        if d.ref in seen:
            continue
        if d.ref.namespace and d.ref.namespace not in namespaces:
            report.unchecked.append(Excluded(d.ref, f"namespace {d.ref.namespace} is not captured (capture.namespaces)"))
            continue
        if listed is not None and (d.ref.group, d.ref.kind) not in listed:
            why = (skipped or {}).get((d.ref.group, d.ref.kind)) or f"kind {d.ref.kind} is not served by the API server"
            report.unchecked.append(Excluded(d.ref, f"not listed: {why}"))
            continue
        report.findings.append(
            Finding("deleted", d.ref, d.api_version, None, None, None, None, None, None, None, d.source, "human")
        )

    report.findings.sort(key=Finding.sort_key)
    report.noise.sort(key=lambda n: n.finding.sort_key())
    report.excluded.sort(key=lambda e: _ref_key(e.ref))
    report.unchecked.sort(key=lambda e: _ref_key(e.ref))
    report.coverage = Coverage(live_count, rebuildable, tuple(sorted(uncovered, key=lambda u: _ref_key(u.ref))))
    return report


def _ref_key(r: ObjectRef) -> tuple[str, str, str, str]:
    return (r.namespace, r.kind, r.name, r.group)


def _created(obj: Mapping[str, Any], ref: ObjectRef, entries: list[Owner], classifier: ManagerClassifier) -> Finding:
    meta = _meta(obj)
    creator = min(entries, key=lambda o: o.time or "") if entries else None
    klass: ManagerClass = classifier(creator) if creator is not None else "human"
    created_at = meta.get("creationTimestamp")
    return Finding(
        "created",
        ref,
        str(obj.get("apiVersion") or ""),
        None,
        None,
        _captured_body(obj, ref),
        creator.manager if creator else None,
        creator.operation if creator else None,
        creator.subresource if creator else None,
        str(created_at) if created_at else (creator.time if creator else None),
        None,
        klass,
        tuple(entries),
    )


_SCALED_KINDS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
# Fields a person sets to operate the reconciler, not to change what the cluster should be:
# `flux suspend` (spec.suspend) and `flux reconcile` (the requestedAt annotation). A pull request
# that suspends a Kustomization in git would stop the rebuilt cluster from ever reconciling.
_FLUX_OPERATIONS: tuple[tuple[FieldPath, str], ...] = (
    (("spec", "suspend"), "suspending reconciliation is an operation (flux suspend/resume), not desired state"),
    (("metadata", "annotations", "reconcile.fluxcd.io/requestedAt"), "a reconcile request (flux reconcile), not desired state"),
)


def _operational(ref: ObjectRef, path: FieldPath) -> str | None:
    if not ref.group.endswith(".toolkit.fluxcd.io"):
        return None
    return next((why for p, why in _FLUX_OPERATIONS if path == p), None)


def _autoscaled(desired: Sequence[DesiredObject]) -> dict[ObjectRef, DesiredObject]:
    """Workloads whose replicas an autoscaler git declares owns (HorizontalPodAutoscaler's scaleTargetRef)."""
    out: dict[ObjectRef, DesiredObject] = {}
    for d in desired:
        if d.ref.kind != "HorizontalPodAutoscaler" or d.ref.group != "autoscaling":
            continue
        target = (d.body.get("spec") or {}).get("scaleTargetRef") or {}
        kind, name = str(target.get("kind") or ""), str(target.get("name") or "")
        api = str(target.get("apiVersion") or "")
        group = api.rsplit("/", 1)[0] if "/" in api else ""
        if kind in _SCALED_KINDS and name:
            out[ObjectRef(group, kind, d.ref.namespace, name)] = d
    return out


def _scaled_without_owner(want: DesiredObject, obj: Mapping[str, Any], result: Any) -> FieldDiff | None:
    """``kubectl scale`` of a workload whose manifest has no replicas, when managedFields kept no
    entry for it (the API server records none for a /scale write to a field nobody owned). The
    server's default is 1; any other value git does not declare was set by someone."""
    path: FieldPath = ("spec", "replicas")
    if want.ref.kind not in _SCALED_KINDS or "replicas" in (want.body.get("spec") or {}):
        return None
    live = (obj.get("spec") or {}).get("replicas") if isinstance(obj.get("spec"), Mapping) else None
    if not isinstance(live, int) or isinstance(live, bool) or live == 1:
        return None
    if any(d.path == path for d in result.diffs) or any(s.diff.path == path for s in result.suppressed):
        return None
    return FieldDiff(path, None, live, want.source_of(path), ownership(obj).of(path), "added")


def _compare_one(
    want: DesiredObject,
    obj: dict[str, Any],
    classifier: ManagerClassifier,
    report: DriftReport,
    scaler: DesiredObject | None = None,
) -> None:
    result = compare(want, obj, classifier=classifier)
    scaled = _scaled_without_owner(want, obj, result)
    if scaled is not None:
        result.diffs.append(scaled)
    for s in result.suppressed:
        f = _from_diff(want, s.diff, classifier)
        report.noise.append(Noise(f, s.reason))
    for d in result.diffs:
        f = _from_diff(want, d, classifier)
        operational = _operational(want.ref, d.path)
        if operational is not None:
            report.noise.append(Noise(f, operational))
        elif scaler is not None and d.path == ("spec", "replicas"):
            # The autoscaler decides replicas; whatever a person set is overwritten on its next sync.
            report.noise.append(Noise(f, f"spec.replicas is owned by {scaler.ref} ({scaler.source}) in git"))
        elif f.klass == "human" and f.kind == "added" and is_server_default(want.ref.kind, d.path, d.live, obj):
            report.noise.append(Noise(f, "the value the API server fills in by default (see drift.SERVER_DEFAULTS)"))
        elif f.klass == "human":
            report.findings.append(f)
        else:
            who = ", ".join(sorted({o.manager for o in d.owners}))
            reason = (
                f"owned only by reconcilers ({who}): the cluster runs another git revision, not a manual change"
                if f.klass == "reconciler"
                else f"owned only by controllers ({who})"
            )
            report.noise.append(Noise(f, reason))


def _from_diff(want: DesiredObject, d: FieldDiff, classifier: ManagerClassifier) -> Finding:
    classes = {o: classifier(o) for o in d.owners}
    humans = [o for o, c in classes.items() if c == "human"]
    if humans:
        klass: ManagerClass = "human"
        who = latest(humans)
    elif not d.owners:
        klass, who = "human", None
    elif "reconciler" in classes.values():
        klass, who = "reconciler", latest(o for o, c in classes.items() if c == "reconciler")
    else:
        klass, who = "controller", latest(d.owners)
    kind: FindingKind = "added" if d.change == "added" else "changed"
    return Finding(
        kind,
        want.ref,
        want.api_version,
        d.path,
        d.git,
        d.live,
        who.manager if who else None,
        who.operation if who else None,
        who.subresource if who else None,
        who.time if who else None,
        d.source,
        klass,
        tuple(d.owners),
    )
