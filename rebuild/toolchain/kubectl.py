"""Which kustomize rebuild runs: kubectl's built-in one, else a standalone kustomize.

kubectl is a prerequisite of the toolchain, not built by it (README); the Flux install
manifests (rendered from the controllers' config) and every source render use the same binary,
so it is found in one place.
"""

from __future__ import annotations

import shutil


class KustomizeMissing(FileNotFoundError):
    """Neither kubectl (with its built-in kustomize) nor kustomize is on PATH."""


def kustomize_binary() -> str:
    exe = shutil.which("kubectl") or shutil.which("kustomize")
    if exe is None:
        raise KustomizeMissing("kubectl (with kustomize) is not on PATH")
    return exe
