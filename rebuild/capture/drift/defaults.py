"""What the cluster makes by itself, so that capture does not report it as a manual change.

Why this module exists: two lists that grow with every cluster rebuild meets in the wild, kept
apart from the comparison that uses them so that adding a row never means reading the
attribution logic (:mod:`rebuild.capture.drift.classification`), and so that backport can strip
defaults from a manifest without importing the comparison.

Default exclusions (:data:`DEFAULT_EXCLUSIONS`, then ``capture.kinds``): live objects that are
not declarative state (Pods, ReplicaSets, Events, Leases ...; by kind) and what the cluster puts
into every namespace (the default ServiceAccount, CA ConfigMaps, token Secrets; by name or
type). ``capture.kinds`` entries are ``Kind`` or ``Kind.group`` globs (``ConfigMap``,
``Deployment.apps``, ``*.demo.rebuild.dev``); entries without a prefix form an include list
(when there is one, only those kinds are captured, and naming a kind the defaults exclude, e.g.
``Lease.coordination.k8s.io``, captures it again); entries prefixed with ``-`` exclude more
kinds (:class:`KindFilter`, :func:`exclusion_reason`).

Server defaults (:data:`SERVER_DEFAULTS`): the fields the API server fills in when a manifest
leaves them out. A captured object drops them (:func:`strip_server_defaults`, a clean manifest),
and an ``added`` field equal to its default is noise (:func:`is_server_default`): ``kubectl
create`` owns every default of the object it created, and once that object is in git those
defaults are not manual changes.

Pure: values in, values out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rebuild.core.model import FieldPath, ObjectRef

# --------------------------------------------------------------------------- default exclusions


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


# --------------------------------------------------------------------------- capture.kinds


@dataclass(frozen=True)
class KindFilter:
    """``capture.kinds``: ``Kind`` / ``Kind.group`` globs to include, and those prefixed with ``-`` to exclude."""

    includes: tuple[str, ...]
    excludes: tuple[str, ...]

    @classmethod
    def of(cls, kinds: Iterable[str]) -> KindFilter:
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


def exclusion_reason(obj: Mapping[str, Any], ref: ObjectRef, kinds: KindFilter) -> str | None:
    """Why a live object git does not declare is left out: a default exclusion, or ``capture.kinds``; None if kept."""
    for ex in DEFAULT_EXCLUSIONS:
        if ex.matches(obj, ref) and not (ex.by_kind_only and kinds.named_explicitly(ref)):
            return ex.reason
    return kinds.why_not(ref)
