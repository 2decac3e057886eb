"""Which kinds exist and whether they are namespaced: Kubernetes' own, CRDs in git, the cluster's.

Separate from rendering because recovery asks it again after rendering (with the reconciler's and
the cluster's kinds), to report unknown kinds and to put namespaced objects in ``default``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from rebuild.core.model import DesiredObject, ObjectRef
from rebuild.desired.render.results import Problem


@dataclass(frozen=True)
class KindInfo:
    namespaced: bool
    source: str  # "builtin", "crd:<file:line>", "cluster"


def builtin_kinds() -> dict[tuple[str, str], KindInfo]:
    data = json.loads(resources.files("rebuild").joinpath("data", "builtin_kinds.json").read_text(encoding="utf-8"))
    out: dict[tuple[str, str], KindInfo] = {}
    for key, info in data["kinds"].items():
        group, _, kind = key.rpartition("/")
        out[(group, kind)] = KindInfo(bool(info["namespaced"]), "builtin")
    return out


def crd_kinds(objects: Iterable[DesiredObject]) -> dict[tuple[str, str], KindInfo]:
    out: dict[tuple[str, str], KindInfo] = {}
    for o in objects:
        if o.ref.kind == "CustomResourceDefinition" and o.ref.group == "apiextensions.k8s.io":
            spec = o.body.get("spec") or {}
            names = spec.get("names") or {}
            if spec.get("group") and names.get("kind"):
                out[(str(spec["group"]), str(names["kind"]))] = KindInfo(spec.get("scope") != "Cluster", f"crd:{o.source}")
    return out


# --------------------------------------------------------------------------- files


def check_kinds(objects: list[DesiredObject], known: dict[tuple[str, str], KindInfo]) -> list[Problem]:
    """Objects whose kind neither Kubernetes, a CRD in git, the reconciler nor the cluster defines."""
    allk = {**known, **crd_kinds(objects)}
    problems: list[Problem] = []
    for o in objects:
        if (o.ref.group, o.ref.kind) not in allk:
            problems.append(
                Problem(
                    o.source.file,
                    o.source.line,
                    f"{o.ref}: kind {o.ref.kind} ({o.api_version}) is not defined by "
                    "Kubernetes, by a CustomResourceDefinition in git or by the cluster",
                )
            )
    return problems


def fill_namespaces(objects: list[DesiredObject], known: dict[tuple[str, str], KindInfo]) -> None:
    """Namespaced objects without a namespace land in `default`, as kubectl and Flux apply them."""
    allk = {**known, **crd_kinds(objects)}
    for o in objects:
        info = allk.get((o.ref.group, o.ref.kind))
        if info and info.namespaced and not o.ref.namespace:
            o.body.setdefault("metadata", {})["namespace"] = "default"
            o.ref = ObjectRef(o.ref.group, o.ref.kind, "default", o.ref.name)
        elif info and not info.namespaced and o.ref.namespace:
            o.ref = ObjectRef(o.ref.group, o.ref.kind, "", o.ref.name)
