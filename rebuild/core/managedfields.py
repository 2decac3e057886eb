"""Who set which field of a live object, read from ``metadata.managedFields``.

Why this exists: rebuild must tell a person's ``kubectl edit`` from an HPA, a webhook or the
GitOps reconciler before it calls something drift, and say in the message who changed a
field and when. The API server already records that: every write is attributed to a *field
manager* and server-side apply keeps, per manager, the set of fields it owns. This module
turns that record into plain values keyed by :data:`rebuild.core.model.FieldPath` (the same paths
verify, drift and backport use) and classifies managers as human, controller or reconciler.

FieldsV1 encoding (k8s.io/apimachinery ``ManagedFieldsEntry.fieldsV1``, serialised by
sigs.k8s.io/structured-merge-diff ``fieldpath``): a tree of JSON objects whose keys are

- ``f:<name>``  a map field                          -> ``"name"``
- ``k:<json>``  a list item by its merge key(s),     -> ``("name", "app")``; several keys are
  e.g. ``k:{"containerPort":80,"protocol":"TCP"}``     rendered ``("containerPort,protocol", "80,TCP")``
                                                        (keys sorted, values joined, as rebuild.desired.render does)
- ``v:<json>``  an item of a set-list (finalizers)   -> ``("value", "<canonical json>")``
- ``i:<n>``     a list item by index                 -> ``n``
- ``.``         "the element itself": the map or list item exists and is owned.

A leaf ``{}`` owns that field and, for atomic maps/lists (``f:args: {}``), its whole value.

Manager names (confirmed in kubernetes/kubernetes ``staging/src/k8s.io/kubectl``): kubectl
passes ``fieldManager`` explicitly for ``edit`` (kubectl-edit), ``patch`` (kubectl-patch),
``label``, ``annotate``, ``set``, ``rollout``, ``create``, ``autoscale``; client-side
``apply`` uses kubectl-client-side-apply and ``apply --server-side`` uses kubectl (operation
Apply). ``kubectl scale`` passes none, so the API server takes the User-Agent up to the first
``/`` (``prefixFromUserAgent``): the entry reads ``kubectl`` / Update / subresource ``scale``.
The HPA runs inside kube-controller-manager with User-Agent
``kube-controller-manager/<v> .../horizontal-pod-autoscaler``, so HPA writes read
``kube-controller-manager`` / Update / ``scale``.

Not supported / known limits: ``fieldsType`` other than FieldsV1 is skipped; scaling a
*custom* resource through ``/scale`` does not update managedFields at all
(kubernetes#131892), so such a change has no owner here; managedFields names the client
program, never the person.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rebuild.core.model import FieldPath, PathSeg, render_path

ManagerClass = Literal["human", "controller", "reconciler"]

# Field managers that apply git (their writes are the desired state, not drift).
DEFAULT_RECONCILERS: tuple[str, ...] = (
    "kustomize-controller",  # Flux
    "helm-controller",  # Flux
    "argocd-controller",  # Argo CD server-side apply
    "argocd-application-controller",  # Argo CD client-side apply (User-Agent prefix)
    "rebuild",
    # pulumi-kubernetes: "pulumi-kubernetes" for client-side apply and
    # "pulumi-kubernetes-<random suffix>" for server-side apply (pulumi/pulumi-kubernetes#2271);
    # the provider binary's User-Agent prefix is pulumi-resource-kubernetes.
    "pulumi-kubernetes*",
    "pulumi-resource-kubernetes*",
)

# Field managers of cluster machinery: their writes are expected to differ from git.
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "kube-controller-manager",  # also the HPA (its User-Agent prefix)
    "kube-scheduler",
    "kubelet",
    "kube-apiserver",
    "cloud-controller-manager",
    "kwok*",
    "horizontal-pod-autoscaler",
    "cluster-autoscaler",
    "vpa-updater",
    "vpa-recommender",
    "vpa-admission-controller",
    "cert-manager*",
    "k3s",
    # Flux controllers' own writes to the objects they reconcile (finalizers, status): their
    # client names are gotk-<controller>; what they *apply* from git is kustomize-controller's.
    "gotk-*",
    # The same controllers run as host processes (the local provider) are named after their
    # binary: source-controller adds its finalizer to the GitRepository it reconciles.
    "source-controller",
    "notification-controller",
    "image-reflector-controller",
    "image-automation-controller",
)

# Nothing is "human" by pattern by default: every manager that is neither a reconciler nor
# a controller is treated as a person (kubectl-edit, kubectl-patch, kubectl, Mozilla, ...).
DEFAULT_HUMANS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Owner:
    """One managedFields entry that owns a field."""

    manager: str
    operation: str  # "Apply" | "Update"
    subresource: str = ""  # "" | "status" | "scale"
    time: str | None = None
    api_version: str = ""

    def describe(self) -> str:
        """``kubectl (Update, scale) at 2026-11-26T10:42:00Z``."""
        how = self.operation + (f", {self.subresource}" if self.subresource else "")
        return f"{self.manager} ({how})" + (f" at {self.time}" if self.time else "")

    def __str__(self) -> str:
        return self.describe()


def classify_manager(
    manager: str,
    operation: str = "Update",
    subresource: str = "",
    *,
    humans: Iterable[str] | None = None,
    controllers: Iterable[str] | None = None,
    reconcilers: Iterable[str] | None = None,
) -> ManagerClass:
    """Classify a field manager. Patterns are fnmatch globs (``pulumi-kubernetes*``).

    Order: a ``status`` subresource write is always "controller"; then an explicit human
    pattern wins (so config can say "helm is a person here"); then reconcilers; then
    controllers; everything else is "human".
    """
    if subresource == "status":
        return "controller"
    if _matches(manager, DEFAULT_HUMANS if humans is None else humans):
        return "human"
    if _matches(manager, DEFAULT_RECONCILERS if reconcilers is None else reconcilers):
        return "reconciler"
    if _matches(manager, DEFAULT_CONTROLLERS if controllers is None else controllers):
        return "controller"
    return "human"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class ManagerClassifier:
    """:func:`classify_manager` with fixed lists (from rebuild.yaml), callable on an Owner."""

    humans: tuple[str, ...] = DEFAULT_HUMANS
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    reconcilers: tuple[str, ...] = DEFAULT_RECONCILERS

    def __call__(self, owner: Owner) -> ManagerClass:
        return self.classify(owner.manager, owner.operation, owner.subresource)

    def classify(self, manager: str, operation: str = "Update", subresource: str = "") -> ManagerClass:
        """The class of a manager (what calling with an Owner gives): a cluster has few
        managers and capture asks about each of them once per object, so answers are kept."""
        return _classify(manager, operation, subresource, self.humans, self.controllers, self.reconcilers)


@functools.lru_cache(maxsize=4096)
def _classify(
    manager: str,
    operation: str,
    subresource: str,
    humans: tuple[str, ...],
    controllers: tuple[str, ...],
    reconcilers: tuple[str, ...],
) -> ManagerClass:
    return classify_manager(manager, operation, subresource, humans=humans, controllers=controllers, reconcilers=reconcilers)


DEFAULT_CLASSIFIER = ManagerClassifier()


# --------------------------------------------------------------------------- paths


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: how set items (``v:``) are rendered in a FieldPath."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _render_key_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return canonical_json(value)


def selector(keys: Mapping[str, Any]) -> tuple[str, str]:
    """The path segment of a list item with these merge-key values.

    ``{"name": "app"}`` -> ``("name", "app")``; several keys are sorted by name and joined with
    commas: ``{"protocol": "TCP", "containerPort": 80}`` -> ``("containerPort,protocol", "80,TCP")``.
    """
    names = sorted(keys)
    return (",".join(names), ",".join(_render_key_value(keys[k]) for k in names))


def set_item(value: Any) -> tuple[str, str]:
    """The path segment of an item of a set-list (``v:`` in FieldsV1)."""
    return ("value", canonical_json(value))


def parse_segment(key: str) -> PathSeg:
    """One FieldsV1 key to a path segment. Raises ValueError on a key it cannot read."""
    if key.startswith("f:"):
        return key[2:]
    if key.startswith("k:"):
        keys = json.loads(key[2:])
        if not isinstance(keys, dict) or not keys:
            raise ValueError(f"bad merge key {key!r}")
        return selector(keys)
    if key.startswith("v:"):
        return set_item(json.loads(key[2:]))
    if key.startswith("i:"):
        return int(key[2:])
    raise ValueError(f"unknown FieldsV1 key {key!r}")


def _is_item(seg: PathSeg) -> bool:
    return isinstance(seg, tuple | int)


# --------------------------------------------------------------------------- ownership


@dataclass(frozen=True)
class _Claim:
    owner: Owner
    leaf: bool  # True: an empty {} (owns the field and its whole value); False: via "."


@dataclass
class Ownership:
    """The parsed managedFields of one live object.

    ``owned`` holds the paths a manager owns (a leaf ``{}`` or a ``.`` marker); ``touched``
    every path that appears in a manager's tree, including intermediate ones (a manager that
    owns ``spec.replicas`` touches ``spec``).
    """

    claims: dict[FieldPath, list[_Claim]] = field(default_factory=dict)
    touched: dict[FieldPath, list[Owner]] = field(default_factory=dict)
    entries: list[Owner] = field(default_factory=list)

    @property
    def owned(self) -> dict[FieldPath, list[Owner]]:
        return {p: _unique(c.owner for c in cs) for p, cs in self.claims.items()}

    def exact(self, path: FieldPath) -> list[Owner]:
        """Managers that own exactly this path."""
        return _unique(c.owner for c in self.claims.get(path, ()))

    def of(self, path: FieldPath) -> list[Owner]:
        """Owners of ``path``, with server-side-apply semantics.

        The path's own owners if it is listed; else the owners of its nearest ancestor that is
        owned as a leaf (``f:args: {}`` or ``f:data: {}`` owns the whole value beneath it; an
        ancestor owned only via ``.`` owns its existence, not its fields); else, for a compound
        value whose parts are owned separately, the owners of its owned descendants.
        """
        hit = self.claims.get(path)
        if hit:
            return _unique(c.owner for c in hit)
        for n in range(len(path) - 1, 0, -1):
            leaves = [c.owner for c in self.claims.get(path[:n], ()) if c.leaf]
            if leaves:
                return _unique(leaves)
        return self.within(path)

    def within(self, path: FieldPath) -> list[Owner]:
        """Owners of ``path`` itself and everything below it."""
        n = len(path)
        return _unique(c.owner for p, cs in self.claims.items() if p[:n] == path for c in cs)

    def introduced(self, path: FieldPath) -> list[tuple[FieldPath, list[Owner]]]:
        """Where, at or below ``path``, a manager introduced a value of its own.

        A candidate is a leaf the manager owns, or a list item it owns via ``.`` (the whole
        item); a map owned only via ``.`` is not (its keys may belong to others). Only the
        shallowest candidates are returned, each with the owners of that candidate.
        """
        n = len(path)
        found: dict[FieldPath, list[Owner]] = {}
        for p, cs in self.claims.items():
            if p[:n] != path or not p:
                continue
            owners = [c.owner for c in cs if c.leaf or _is_item(p[-1])]
            if owners:
                found[p] = _unique(owners)
        shallow = {p: o for p, o in found.items() if not any(q != p and p[: len(q)] == q for q in found)}
        return sorted(shallow.items(), key=lambda kv: render_path(kv[0]))


def _unique(owners: Iterable[Owner]) -> list[Owner]:
    out: list[Owner] = []
    for o in owners:
        if o not in out:
            out.append(o)
    return out


def ownership(live: Mapping[str, Any]) -> Ownership:
    """Parse ``metadata.managedFields`` of a live object. Malformed entries are skipped."""
    result = Ownership()
    meta = live.get("metadata") if isinstance(live, Mapping) else None
    entries = meta.get("managedFields") if isinstance(meta, Mapping) else None
    if not isinstance(entries, Sequence):
        return result
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("fieldsType", "FieldsV1") != "FieldsV1":
            continue
        owner = Owner(
            manager=str(entry.get("manager") or ""),
            operation=str(entry.get("operation") or ""),
            subresource=str(entry.get("subresource") or ""),
            time=str(entry["time"]) if entry.get("time") else None,
            api_version=str(entry.get("apiVersion") or ""),
        )
        result.entries.append(owner)
        tree = entry.get("fieldsV1")
        if isinstance(tree, Mapping):
            _walk(tree, (), owner, result)
    return result


def _walk(node: Mapping[str, Any], prefix: FieldPath, owner: Owner, out: Ownership) -> None:
    for key, child in node.items():
        if key == ".":
            if prefix:
                out.claims.setdefault(prefix, []).append(_Claim(owner, leaf=False))
            continue
        try:
            seg = parse_segment(str(key))
        except (ValueError, json.JSONDecodeError):
            continue  # one unreadable key must not hide the rest of the tree
        path = (*prefix, seg)
        out.touched.setdefault(path, [])
        if owner not in out.touched[path]:
            out.touched[path].append(owner)
        if isinstance(child, Mapping) and child:
            _walk(child, path, owner, out)
        else:
            out.claims.setdefault(path, []).append(_Claim(owner, leaf=True))


def owners(live: Mapping[str, Any]) -> dict[FieldPath, list[Owner]]:
    """Every path in any manager's tree (leaves and intermediate entries) and who is on it.

    An intermediate path lists the managers that own something beneath it; use
    :func:`owner_of` for "who owns this field" with server-side-apply semantics.
    """
    return dict(ownership(live).touched)


def owner_of(live: Mapping[str, Any], path: FieldPath) -> list[Owner]:
    """Owners of the most specific owned ancestor-or-self of ``path`` (see :meth:`Ownership.of`)."""
    return ownership(live).of(path)


def latest(found: Iterable[Owner]) -> Owner | None:
    """The most recent owner (RFC 3339 times sort as strings; entries without a time first)."""
    ordered = sorted(found, key=lambda o: o.time or "")
    return ordered[-1] if ordered else None
