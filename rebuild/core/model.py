"""Plain values shared by stages and renderers: no I/O, no behaviour beyond (de)serialising."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rebuild.core.errors import Interrupted

PhaseStatus = Literal["ok", "failed", "skipped", "interrupted"]


@dataclass
class PhaseTiming:
    """One timed phase of a run (the unit of the recovery-time report)."""

    name: str
    seconds: float = 0.0
    status: PhaseStatus = "ok"
    detail: str = ""
    # time.monotonic() at its start: phases may overlap (independent stacks run at once), so
    # a run's wall time is the union of these intervals, not the sum of the seconds.
    start: float = field(default=0.0, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("start")
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class Phases:
    """An ordered list of phase timings with a context manager that records each one."""

    items: list[PhaseTiming] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseTiming]:
        t0 = time.monotonic()
        p = PhaseTiming(name, start=t0)
        self.items.append(p)
        try:
            yield p
        except BaseException as exc:
            p.status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
            if not p.detail:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                p.detail = first[:300]
            raise
        finally:
            p.seconds = time.monotonic() - t0

    def skip(self, name: str, why: str) -> None:
        self.items.append(PhaseTiming(name, 0.0, "skipped", why))

    @property
    def total(self) -> float:
        """Wall time of all phases (overlapping phases count once)."""
        return self.wall()

    def wall(self, exclude: tuple[str, ...] = ()) -> float:
        """Wall time of the phases not named in ``exclude``: the union of their intervals."""
        spans = sorted((p.start, p.start + p.seconds) for p in self.items if p.name not in exclude and p.seconds > 0)
        total, end = 0.0, float("-inf")
        for a, b in spans:
            if b <= end:
                continue
            total += b - max(a, end)
            end = b
        return total

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.items]

    def table(self) -> str:
        width = max((len(p.name) for p in self.items), default=5)
        rows = [f"  {p.name:<{width}}  {p.seconds:8.2f}s  {p.status}{'  ' + p.detail if p.detail else ''}" for p in self.items]
        rows.append(f"  {'total':<{width}}  {self.total:8.2f}s")
        return "\n".join(rows)


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True, order=True)
class ObjectRef:
    """The identity of a Kubernetes object: group (not version), kind, namespace, name."""

    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any], default_namespace: str = "") -> ObjectRef:
        api_version = str(obj.get("apiVersion") or "")
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        meta = obj.get("metadata") or {}
        return cls(
            group, str(obj.get("kind") or ""), str(meta.get("namespace") or default_namespace), str(meta.get("name") or "")
        )

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Source:
    """Where something was declared: a file relative to the repo root and a 1-based line.

    ``via`` says how the value got from that line into the object, so a backport knows how to
    edit it (and when it cannot): ``""`` the object's own manifest or a patch file; ``"inline-patch"``
    a patch inside a kustomization's block scalar (``locator`` = the scalar's path in the
    kustomization document, then the document index inside the patch text); ``"image"`` /
    ``"replicas"`` an entry of a kustomization (``locator`` = the entry's path); ``"literal"``,
    ``"env"``, ``"file"`` a ConfigMap/Secret generator input; ``"transformer"`` a kustomize or
    Flux transformer (namespace, prefix, labels...), ``"replacement"``, ``"substitute"`` (a Flux
    postBuild variable) and ``"remote"``: values that are not written where they land.
    """

    file: str
    line: int
    via: str = ""
    locator: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def editable_in_place(self) -> bool:
        return self.via not in ("transformer", "replacement", "substitute", "remote")


# A field path: string keys, int indexes, or a merge-key selector for list items
# (("name", "app") means "the item whose name is app"). Rendered as
# spec.template.spec.containers[name=app].image.
PathSeg = str | int | tuple[str, str]

# Lists Kubernetes merges by key (x-kubernetes-list-map-keys of the core types), by field
# name: their items are addressed by key, not index, in field paths, and compared by key.
LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "resourceClaims": ("name",),
    "ownerReferences": ("uid",),
}
# `ports` is keyed differently in a container (containerPort) and in a Service (port).
CONTAINER_PORT_KEYS = ("containerPort", "protocol")
SERVICE_PORT_KEYS = ("port", "protocol")
FieldPath = tuple[PathSeg, ...]


def render_path(path: FieldPath) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, tuple):
            out += f"[{seg[0]}={seg[1]}]"
        elif isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + seg
    return out


@dataclass(frozen=True)
class Declared:
    """Where an object's own document is and how it is written there (before any transformer).

    ``doc`` is the index of the YAML document in ``file``; ``prefix`` the path of the object inside
    that document (``("items", 2)`` for an item of a ``kind: List``, else empty); ``name`` and
    ``namespace`` as written in the file (a namePrefix or a namespace transformer changes the live
    identity, not the file).
    """

    file: str
    doc: int
    prefix: tuple[str | int, ...] = ()
    name: str = ""
    namespace: str = ""


@dataclass
class DesiredObject:
    """An object git declares, with where it came from.

    ``body`` is the object as it will be applied (after kustomize). ``source`` is the file and
    line of the document that declares it; ``field_sources`` maps field paths to the file and
    line that set them (the overlay patch when a patch set it, else the base manifest).
    ``declared`` locates the object's own document (None for generated objects); ``applied_by``
    names the Flux Kustomization (``namespace/name``) that applies it, "" for the source's root.
    """

    ref: ObjectRef
    api_version: str
    body: dict[str, Any]
    source: Source
    field_sources: dict[FieldPath, Source] = field(default_factory=dict)
    declared: Declared | None = None
    applied_by: str = ""

    @classmethod
    def with_raw_sources(
        cls,
        ref: ObjectRef,
        api_version: str,
        body: dict[str, Any],
        source: Source,
        raw_field_sources: Sequence[tuple[FieldPath, tuple[Any, ...]]],
        declared: Declared | None = None,
        applied_by: str = "",
    ) -> DesiredObject:
        """An object whose ``field_sources`` are built from ``(path, (file, line, via, locator))``
        pairs the first time they are read. A render read back from the cache holds about 14 field
        sources per object, and a capture reads them only for the objects that drifted: building
        them all up front was a third of reading back 10,000 objects (docs/measurements.md)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(
            ref=ref,
            api_version=api_version,
            body=body,
            source=source,
            declared=declared,
            applied_by=applied_by,
            _raw_field_sources=raw_field_sources,
        )
        return obj

    if not TYPE_CHECKING:  # at run time only: to mypy, field_sources stays a plain attribute

        def __getattr__(self, name: str) -> Any:
            # Called only when ``field_sources`` is not built yet (an object from with_raw_sources).
            raw = self.__dict__.get("_raw_field_sources") if name == "field_sources" else None
            if raw is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            built = self.__dict__.setdefault("field_sources", {path: Source(*s) for path, s in raw})
            self.__dict__.pop("_raw_field_sources", None)
            return built

    def field_source_files(self) -> set[tuple[str, str]]:
        """The distinct ``(file, via)`` of the field sources, without building the sources not read yet."""
        raw = self.__dict__.get("_raw_field_sources")
        if raw is not None and "field_sources" not in self.__dict__:
            return {(s[0], s[2]) for _, s in raw}
        return {(s.file, s.via) for s in self.field_sources.values()}

    def source_of(self, path: FieldPath) -> Source:
        """The most specific known source of a field: the path itself or its nearest ancestor."""
        for n in range(len(path), -1, -1):
            hit = self.field_sources.get(path[:n])
            if hit is not None:
                return hit
        return self.source
