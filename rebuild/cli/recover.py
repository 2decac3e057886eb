"""`rebuild plan`, `up`, `verify`: the recover pipeline from the command line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from rebuild.cli import app
from rebuild.cli.app import EXIT_FAIL, EXIT_OK, Ctx

if TYPE_CHECKING:
    from rebuild.desired.helm import HelmPlan
    from rebuild.recover.converge import VerifyReport


def _verify_text(report: VerifyReport) -> list[str]:
    s = report.summary()
    lines = [
        f"verify: {s['verified']}/{s['objects']} objects verified "
        f"({s['missing']} missing, {s['drifted']} drifted, {s['unhealthy']} not healthy) "
        f"after {report.seconds:.1f}s"
    ]
    for v in report.failing:
        lines.extend(f"  {p}" for p in v.problems())
    return lines


def _changes_text(changes: dict[str, int]) -> str:
    shown = {k: v for k, v in changes.items() if v and k != "same"}
    same = changes.get("same", 0)
    parts = [f"{v} to {k}" for k, v in shown.items()] + ([f"{same} unchanged"] if same else [])
    return ", ".join(parts) or "no resources"


def _helm_text(helm: HelmPlan) -> list[str]:
    """Plan lines for the HelmReleases: one per release, then what keeps one from being installed."""
    if not helm.releases and not helm.problems:
        return []
    lines = [f"helm releases: {len(helm.releases)}"]
    lines += [f"  {r.describe()}" for r in helm.releases]
    lines += [f"  problem: {p}" for p in helm.problems]
    return lines


@app.main.command("plan")
@click.option("--revision", multiple=True, help="Commit to plan for: SHA (all sources) or SOURCE=SHA.")
@click.pass_obj
def plan_cmd(obj: Ctx, revision: tuple[str, ...]) -> None:
    """Show what `up` would do: stack previews, the desired objects by kind and namespace, the order. Changes nothing."""
    from rebuild.recover.plan import plan

    ctx = app._context(obj)
    res = plan(ctx, app._revisions(revision, ctx))

    def text() -> str:
        lines = ["sources:"]
        for source in res.desired.sources:
            lines += source.describe()
        lines.append("stacks:")
        for p in res.previews:
            where = f" ({p['source']}:{p['path']}, stack {p['pulumi_stack']})" if p.get("source") else ""
            lines.append(f"  {p['stack']}{where}: {p.get('note') or _changes_text(p['changes'])}")
            for step in p.get("replaced_or_deleted") or []:
                lines.append(f"    would {step.get('op', '?')}: {step.get('type', '')} {step.get('name', step.get('urn', ''))}")
        lines.append(f"objects: {len(res.desired.objects)}")
        for row in res.desired.inventory():
            lines.append(f"  {row['count']:4d}  {row['kind']:<28} {row['namespace']}")
        lines += _helm_text(res.helm)
        lines.append("apply order:")
        for row in res.order:
            lines.append(f"  {row['rank']:2d} {row['phase']:<20} {row['count']:4d}  {row['reason']}")
        return "\n".join(lines)

    obj.emit(res.to_dict(), text)


@app.main.command("up")
@click.option("--revision", multiple=True, help="Commit to rebuild: SHA (all sources) or SOURCE=SHA (default: branch head).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for convergence (default: verify.timeout).")
@click.pass_obj
def up_cmd(obj: Ctx, revision: tuple[str, ...], timeout: float | None) -> None:
    """Rebuild: cluster stack, your own stacks (DAG order), platform stack, reconciler bootstrap, verify; every phase timed."""
    from rebuild.core.errors import RebuildError
    from rebuild.core.model import Phases
    from rebuild.recover.up import UpResult, up

    ctx = app._context(obj, "cluster")
    res = UpResult(Phases())
    try:
        up(ctx, app._revisions(revision, ctx), verify_timeout=timeout, into=res)
    except RebuildError as err:
        # What ran before the failure (phases, stacks skipped because one they need failed) is
        # part of the answer: JSON on stdout, the phase table on stderr; the error line follows.
        res.error = str(err)
        if obj.json:
            obj.emit(res.to_dict(), str)
        elif any(p.name != "desired" for p in res.phases.items):  # bad input stops in `desired`: the error says it all
            click.echo(res.phases.table(), err=True)
        raise

    def text() -> str:
        lines = [f"rebuild up {ctx.config.cluster.name}: {'CONVERGED' if res.converged else 'NOT CONVERGED'}"]
        if res.nothing_changed and res.converged:
            lines.append("nothing changed: the cluster already matched git")
        lines.append(res.phases.table())
        if res.report:
            lines += _verify_text(res.report)
        if not res.converged:
            lines.append(f"next: rebuild verify --config {ctx.config.path}   (details per object)")
        return "\n".join(lines)

    obj.emit(res.to_dict(), text)
    sys.exit(EXIT_OK if res.converged else EXIT_FAIL)


@app.main.command("verify")
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait for convergence (default: verify.timeout; 0: check once)."
)
@click.option("--revision", multiple=True, help="Verify against this commit instead of the branch head.")
@click.pass_obj
def verify_cmd(obj: Ctx, timeout: float | None, revision: tuple[str, ...]) -> None:
    """Is the cluster exactly what git declares, and healthy? Exit 0 converged, 1 not."""
    from rebuild.drills.usecases import verify

    ctx = app._context(obj)
    res = verify(ctx, app._revisions(revision, ctx), timeout=timeout)
    obj.emit(res.to_dict(), lambda: "\n".join(_verify_text(res.report)))
    sys.exit(EXIT_OK if res.converged else EXIT_FAIL)
