"""What the CLI and the runbook's stages share beyond one call into recover/ or capture/.

From what a person typed to what a pipeline step takes (a config path to a :class:`Context`,
``--revision`` values to a revision per source), ``verify`` of the live cluster as one use
case with a typed result, and stopping a cluster with the git server it no longer needs. The
CLI's commands and the runbook's stages (stages.py) both call these, so a command and the
stage of the same name cannot drift apart.

These belong to recover/ (context.py, a verify use case beside plan.py and up.py); they live
here until that package's split settles, and drills/ is the lowest layer both callers reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rebuild.clusters import GitServerRelease
from rebuild.core.errors import ConfigError
from rebuild.recover.context import Context
from rebuild.recover.converge import VerifyReport
from rebuild.recover.sources import SourceState


def parse_revisions(values: tuple[str, ...], ctx: Context) -> dict[str, str]:
    """--revision SHA (every source) or --revision NAME=SHA."""
    out: dict[str, str] = {}
    names = [s.name for s in ctx.config.sources]
    for v in values:
        name, sep, sha = v.partition("=")
        if not sep:
            name, sha = "", v
        if name and name not in names:
            raise ConfigError(f"--revision names source {name!r}, which rebuild.yaml does not have", fix=f"use one of {names}")
        for n in [name] if name else names:
            out[n] = sha
    return out


def stop_cluster(provider: str, name: str, *, context: str | None = None, purge: bool = False) -> GitServerRelease:
    """`rebuild cluster down` and the cluster-down stage: stop (or purge) a cluster, then the git
    server of the state dir unless another running cluster still uses it. Purging a drill cluster
    kept with ``drill --keep`` also removes that drill's own Pulumi backend."""
    import shutil

    from rebuild.clusters import get_cluster, release_gitserver
    from rebuild.core.state import StateLayout

    get_cluster(provider, name, context=context).delete(purge=purge)
    if purge:
        # a drill kept with --keep: its own Pulumi backend goes with its data (production's is
        # never under drills/)
        shutil.rmtree(StateLayout.default().drill_backend(name), ignore_errors=True)
    return release_gitserver()


@dataclass
class VerifyResult:
    """`rebuild verify`: the sources read and the verdict of every object."""

    sources: list[SourceState]
    report: VerifyReport

    @property
    def converged(self) -> bool:
        return self.report.converged

    def to_dict(self) -> dict[str, Any]:
        return {"sources": [s.to_dict() for s in self.sources], **self.report.to_dict()}


def verify(ctx: Context, revisions: dict[str, str], *, timeout: float | None) -> VerifyResult:
    """Is the cluster of rebuild.yaml exactly what git declares, and healthy (waiting up to ``timeout``)?"""
    from rebuild.recover import encrypted, helmpreflight
    from rebuild.recover.context import live_kube
    from rebuild.recover.converge import wait_converged
    from rebuild.recover.sources import load_desired

    desired = load_desired(ctx, revisions)
    # SOPS-encrypted documents decrypted in memory for the comparison only; a missing or wrong
    # key stops here (exit 2, naming the file:line and the key file) before the cluster is asked
    plain = encrypted.decrypted(ctx.config, ctx.toolchain, desired)
    charts_in_git = helmpreflight.check(desired, ctx.progress)  # a chart version or values Helm refuses: exit 2 here too
    kube = live_kube(ctx)
    try:
        report = wait_converged(
            kube,
            desired.objects,
            ctx.config.verify,
            timeout=timeout,
            progress=ctx.progress,
            decrypted=plain,
            charts_in_git=charts_in_git,
        )
    finally:
        kube.close()
    return VerifyResult(list(desired.sources), report)
