"""The kustomization tree under a source path, and what Flux generates for folders without one.

The index records every kustomization (with its lines), who includes it, the resource files it
lists and its remote bases: the build's errors and the objects' origins are resolved against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rebuild.core.model import Source
from rebuild.desired.kustsource import KUSTOMIZATION_FILES, KNode, index_node
from rebuild.desired.render.repo import Repo, kustomization_file
from rebuild.desired.render.results import Problem


@dataclass
class Index:
    nodes: dict[str, KNode] = field(default_factory=dict)  # by repo-relative kustomization file
    parents: dict[str, list[str]] = field(default_factory=dict)  # kustomization file -> files including it
    files: list[str] = field(default_factory=list)  # resource files listed, in order
    remote: list[tuple[Source, str]] = field(default_factory=list)  # remote bases and where they are listed


def index_tree(repo: Repo, kdir: Path, index: Index, parent: str | None = None) -> None:
    kfile = kustomization_file(kdir)
    if kfile is None:
        return
    krel = repo.rel(kfile)
    if parent is not None:
        index.parents.setdefault(krel, []).append(parent)
    if krel in index.nodes:
        return
    docs = repo.load(kfile)
    if not docs or not isinstance(docs[0].data, dict):
        index.nodes[krel] = KNode(krel)
        return
    k, doc = docs[0].data, docs[0]
    index.nodes[krel] = index_node(krel, doc, read=repo.reader(kdir, krel))

    def line(*p: str | int) -> int:
        return doc.lines.get(p, doc.line)

    if k.get("helmCharts"):
        repo.problems.append(
            Problem(
                krel,
                line("helmCharts"),
                "helmCharts needs `kustomize build --enable-helm`, which Flux's kustomize-controller does not run: "
                "install the chart with a HelmRelease instead",
            )
        )
    for key in ("resources", "bases", "components"):
        for i, entry in enumerate(k.get(key) or []):
            if not isinstance(entry, str):
                repo.problems.append(Problem(krel, line(key, i), f"{key} entries must be paths or URLs, not {entry!r}"))
                continue
            if "://" in entry or entry.startswith("git@") or entry.startswith("github.com/"):
                # A remote base: kustomize fetches it (as Flux does); its objects are rendered and
                # verified, and their fields point at this line (they cannot be edited here).
                index.remote.append((Source(krel, line(key, i), "remote", (entry,)), entry))
                continue
            target = kdir / entry
            if not repo.inside(target, krel, line(key, i)):
                continue
            if target.is_dir():
                index_tree(repo, target, index, krel)
            elif target.is_file():
                index.files.append(repo.rel(target))


def flux_generated(repo: Repo, target: Path, reconciler: str) -> tuple[list[Path], list[Path]]:
    """The files and kustomize folders Flux's generator lists for a folder without a kustomization.

    Like kustomize-controller: every ``.yaml``/``.yml`` file below ``target`` in lexical order, a
    sub-folder holding a kustomization is one entry and is not descended into. Hidden folders are
    skipped (source-controller leaves ``.git``, ``.github`` ... out of the artifact). Argo CD's
    directory sources also read ``.json``; Flux does not, so with Flux those are warnings.
    """
    files: list[Path] = []
    dirs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(target):
        here = Path(dirpath)
        keep = []
        for n in sorted(dirnames):
            if n.startswith("."):
                continue
            sub = here / n
            if kustomization_file(sub) is not None:
                dirs.append(sub)
            else:
                keep.append(n)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            if f.endswith((".yaml", ".yml")) and f not in KUSTOMIZATION_FILES:
                files.append(p)
            elif f.endswith(".json"):
                if reconciler == "argocd":
                    files.append(p)
                else:
                    repo.warnings.append(
                        Problem(
                            repo.rel(p),
                            0,
                            "not applied: Flux's generated kustomization includes only .yaml/.yml files; "
                            "rename it or list it in a kustomization.yaml",
                        )
                    )
    # Walk order is per folder; Flux walks the whole tree lexically (files and folders mixed).
    file_set = set(files)
    entries = sorted([*files, *dirs], key=str)
    return [p for p in entries if p in file_set], [p for p in entries if p not in file_set]
