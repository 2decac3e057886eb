"""The finding types and their rendering: what capture reports, and how it reads.

Why this module exists: backport, capture's text and JSON output and the pull-request text read
these types, never how they were found. Kept apart from the comparison
(:mod:`rebuild.capture.drift.classification`), they are plain values that consumers and tests can build
by hand, and the JSON shape (:class:`DriftReport`) is defined in one place.

Kinds of finding
    ``changed``  a field git declares differs live (``live`` is None when the field is gone live;
                 managedFields does not record removals, so such a finding has no manager);
    ``added``    a field git does not declare, introduced live by a human field manager;
    ``created``  a live object git does not declare, created by a human field manager;
    ``deleted``  a desired object that is not in the cluster (no manager: deletions leave no
                 managedFields behind).

A finding on an object a Flux HelmRelease rendered (its desired state is Helm's record of the
release, not a file) carries a :class:`HelmOrigin`: the HelmRelease to blame, with its file:line,
and either the ``spec.values`` leaves the chart renders 1:1 into the drifted field (what a
backport edits) or why there are none (:mod:`rebuild.capture.helm` decides it).

Values arrive here with every Secret value already redacted; the digest holds sha256 of values,
never the values.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from rebuild.core.managedfields import ManagerClass, Owner, canonical_json
from rebuild.core.model import FieldPath, ObjectRef, Source, render_path

FindingKind = Literal["changed", "added", "created", "deleted"]
# Source.via of an object rendered by a HelmRelease (locator: the HelmRelease's namespace, name).
RENDERED_BY_HELM = "helm-release"
CHANGE_THE_CHART = "change the chart or its values"
KIND_ORDER: dict[str, int] = {"changed": 0, "added": 1, "deleted": 2, "created": 3}


def is_secret(ref: ObjectRef) -> bool:
    return ref.group == "" and ref.kind == "Secret"


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
class ValueEdit:
    """One leaf of a HelmRelease's ``spec.values`` to set so that the chart renders the live value.

    ``path`` is inside ``spec.values`` (``("image", "tag")``); ``source`` is where that leaf is
    written (the HelmRelease's document, or the overlay patch that sets it)."""

    path: tuple[str | int, ...]
    git: Any
    live: Any
    source: Source

    @property
    def field_path(self) -> FieldPath:
        return ("spec", "values", *self.path)

    @property
    def rendered(self) -> str:
        return render_path(("values", *self.path))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.rendered, "git": self.git, "live": self.live, "source": str(self.source)}


@dataclass(frozen=True)
class HelmOrigin:
    """The HelmRelease that rendered a drifted object, and how (or whether) its values map the field.

    ``edits`` are the ``spec.values`` leaves the chart renders 1:1 into the field (empty when there
    is no such leaf); ``reason`` says why not, when empty.
    """

    release: ObjectRef
    source: Source  # the HelmRelease's own file:line
    edits: tuple[ValueEdit, ...] = ()
    reason: str = ""

    @property
    def mapped(self) -> bool:
        return bool(self.edits)

    @property
    def name(self) -> str:
        return f"HelmRelease {self.release.namespace}/{self.release.name}"

    def where(self) -> str:
        """``HelmRelease flux-system/web, apps/web.yaml:3: values.replicas at apps/web.yaml:14``."""
        if self.mapped:
            leaves = ", ".join(f"{e.rendered} at {e.source}" for e in self.edits)
            return f"{self.name}, {self.source}: {leaves}"
        return f"{self.name}, {self.source}: {CHANGE_THE_CHART}"

    def listing(self) -> str:
        """Why a backport does not edit it, with the line to look at and what to do."""
        why = f": {self.reason}" if self.reason else ""
        return f"rendered by {self.name} ({self.source}){why}; {CHANGE_THE_CHART}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": f"{self.release.namespace}/{self.release.name}",
            "source": str(self.source),
            "values": [e.to_dict() for e in self.edits],
            "reason": self.reason,
        }


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
    helm: HelmOrigin | None = None  # the object was rendered by this HelmRelease

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
        in_git = "in git"
        if self.helm is not None:
            where, in_git = f" ({self.helm.where()})", "rendered from git"
        if self.kind == "created":
            text = f"{self.ref}: created live, not in git"
        elif self.kind == "deleted":
            text = f"{self.ref}: {'declared in' if self.helm is None else 'rendered from'} git{where}, not in the cluster"
        elif self.kind == "added":
            text = f"{self.ref}: field {self.rendered} is {self.values()[1]} live, not in git{where}"
        elif self.live is None:
            text = f"{self.ref}: field {self.rendered} is missing live, {self.values()[0]} {in_git}{where}"
        else:
            g, lv = self.values()
            text = f"{self.ref}: field {self.rendered} is {lv} live, {g} {in_git}{where}"
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
        out = self._dict()
        if self.helm is not None:  # only for objects a HelmRelease rendered
            out["helm"] = self.helm.to_dict()
        return out

    def _dict(self) -> dict[str, Any]:
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
    """A live object left out of capture, or one whose live state was not listed or not compared
    (``unchecked``: a desired object of a kind or namespace capture did not list, a live object a
    HelmRelease in git rendered whose release record could not be read)."""

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

    JSON shape of :meth:`to_dict` (keys always present, but a finding's ``helm``; lists sorted by
    namespace, kind and name of the object, then kind of finding, then path; every value of a
    Secret redacted)::

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
            "message": "Deployment/shop/cart: field spec.replicas is 5 live, 3 in git (...); changed by ...",
            "helm": {                            # only on objects a HelmRelease rendered (git and source are
                                                 # then the rendered value and the HelmRelease's file:line)
              "release": "flux-system/web", "source": "apps/web.yaml:3",
              "values": [{"path": "values.replicas", "git": 2, "live": 4, "source": "apps/web.yaml:14"}],
                                                 # the leaves the chart renders 1:1 into the field; [] when none
              "reason": ""                       # why not, when values is []
            }
          }],
          "noise": [{...same keys as a finding..., "reason": "owned only by controllers (kube-controller-manager)"}],
          "excluded": {"<reason>": <count>},     # live objects left out of capture
          "unchecked": [{"object": "...", "reason": "..."}]   # objects whose live state was not listed or compared
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
