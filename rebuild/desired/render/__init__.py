"""A git checkout turned into the desired objects, each knowing the file and line it came from.

The package's public API. The steps, each in its own module: :mod:`.repo` (file access confined
to the checkout), :mod:`.tree` (the kustomization index, Flux's generated kustomizations),
:mod:`.build` (:func:`render`: checks, chunked kustomize builds), :mod:`.origins` (kustomize's
output back to file:line, post-build substitution), :mod:`.kinds` (known kinds, namespaces).
"""

from rebuild.core.model import LIST_KEYS
from rebuild.desired.kustsource import KUSTOMIZATION_FILES, selector_path
from rebuild.desired.render.build import render
from rebuild.desired.render.kinds import KindInfo, builtin_kinds, check_kinds, crd_kinds, fill_namespaces
from rebuild.desired.render.results import FluxLayer, Problem, Rendered
from rebuild.toolchain.kubectl import kustomize_binary

__all__ = [
    "KUSTOMIZATION_FILES",
    "LIST_KEYS",
    "FluxLayer",
    "KindInfo",
    "Problem",
    "Rendered",
    "builtin_kinds",
    "check_kinds",
    "crd_kinds",
    "fill_namespaces",
    "kustomize_binary",
    "render",
    "selector_path",
]
