"""Running kustomize the way Flux's kustomize-controller runs it, with kustomize's own origin records.

Why a wrapper: rebuild must know, for every rendered object, the file that declared it and the
kustomizations whose transformers touched it. kustomize records exactly that when a build asks
for ``buildMetadata: [originAnnotations, transformerAnnotations]`` (``config.kubernetes.io/origin``
and ``alpha.config.kubernetes.io/transformations``), and the setting reaches every nested base
and component. The user's files are never changed to ask for it: the build runs a small
kustomization in a temporary folder that lists the target (a kustomize directory, or the files
and folders Flux's generator would list for a plain folder) and carries the Flux Kustomization's
own fields (``targetNamespace``, ``namePrefix``/``nameSuffix``, ``patches``, ``images``,
``components``, ``commonMetadata``) the way kustomize-controller adds them to the kustomization
it builds. Loads outside a kustomization's folder are allowed, as Flux allows them
(``LoadRestrictionsNone``); rebuild confines paths to the repository itself before this runs.

The only I/O here is the temporary folder and the ``kubectl kustomize`` (or ``kustomize build``)
process; everything it returns is plain text for :mod:`rebuild.desired.render`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.toolchain.kubectl import kustomize_binary

BUILD_TIMEOUT = 300.0


@dataclass
class Wrapper:
    """What the temporary kustomization holds (paths absolute; made relative when written)."""

    resources: list[Path]
    components: list[Path] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # namespace, namePrefix, patches, images, ...


@dataclass(frozen=True)
class BuildOutput:
    """kustomize's stdout, or its error; ``base`` is the folder origin paths are relative to."""

    text: str
    error: str
    base: Path

    def resolve(self, rel: str) -> Path:
        """An origin or configuredIn path of this build as an absolute path."""
        return Path(os.path.normpath(self.base / rel))


def build(wrapper: Wrapper, *, timeout: float = BUILD_TIMEOUT) -> BuildOutput:
    """Build ``wrapper`` with origin and transformer annotations; never raises for bad input."""
    exe = kustomize_binary()
    with tempfile.TemporaryDirectory(prefix="rebuild-kustomize-") as tmp:
        wdir = Path(tmp) / "build"
        wdir.mkdir()
        doc: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(p, wdir) for p in wrapper.resources],
        }
        if wrapper.components:
            doc["components"] = [os.path.relpath(p, wdir) for p in wrapper.components]
        doc.update(wrapper.fields)
        doc["buildMetadata"] = ["originAnnotations", "transformerAnnotations"]
        # JSON is YAML: no quoting surprises for values people write.
        (wdir / "kustomization.yaml").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        if exe.endswith("kubectl"):
            argv = [exe, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(wdir)]
        else:
            argv = [exe, "build", "--load-restrictor", "LoadRestrictionsNone", str(wdir)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return BuildOutput("", f"kustomize build did not finish in {timeout:.0f}s", wdir)
        err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("# Warning:"))
        if proc.returncode != 0:
            return BuildOutput("", err.strip() or f"kustomize exited {proc.returncode}", wdir)
        return BuildOutput(proc.stdout, "", wdir)
