"""The types every step of rendering shares: what a render returns and what a Flux Kustomization adds.

They live apart from the steps (files, tree, build, origins) so each step imports them without
importing another step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.kustsource import KNode


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class Rendered:
    objects: list[DesiredObject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def by_ref(self) -> dict[ObjectRef, DesiredObject]:
        return {o.ref: o for o in self.objects}


@dataclass
class FluxLayer:
    """A Flux Kustomization's own build fields, applied the way kustomize-controller applies them.

    ``node`` indexes them with their lines (in the Kustomization's file); ``fields`` are the
    kustomize fields to add (namespace from targetNamespace, namePrefix, nameSuffix, patches,
    images, labels/commonAnnotations from commonMetadata); ``components`` are relative to the
    Kustomization's path; ``variables`` are the postBuild variables (None: no substitution) and
    ``variable_sources`` where each is defined.
    """

    node: KNode | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    components: list[str] = field(default_factory=list)
    variables: dict[str, str] | None = None
    variable_sources: dict[str, Source] = field(default_factory=dict)
