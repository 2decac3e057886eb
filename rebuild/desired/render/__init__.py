"""A git checkout turned into the desired objects, each knowing the file and line it came from.

The package's public API; :mod:`.build` holds it while the module is split along its seams.
"""

from rebuild.desired.render.build import (
    KUSTOMIZATION_FILES,
    LIST_KEYS,
    FluxLayer,
    KindInfo,
    Problem,
    Rendered,
    builtin_kinds,
    check_kinds,
    crd_kinds,
    fill_namespaces,
    kustomize_binary,
    render,
    selector_path,
)

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
