"""The runbook's stages (docs/runbooks.md): each stage name mapped to the use case behind the command of that name.

A runbook step ``stage: up`` runs what ``rebuild up`` runs, in-process, and records a JSON
output that later steps read (``from_step``): a drill's run result for the report step, a
cluster name for cluster-down. A step that ran the phases one by one (cluster, platform,
reconciler, verify) is turned into one run result by :func:`assemble_run`, so a runbook's
report has the same schema as a drill's. Also here: starting and resuming a runbook with these
stages, the two use cases behind ``rebuild runbook run|resume``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rebuild.core.errors import ConfigError, RebuildError
from rebuild.core.progress import Progress
from rebuild.core.results import Failure, ObjectCounts, RunPhase, RunResult, utc_stamp
from rebuild.drills import runbook as rb
from rebuild.drills.usecases import parse_revisions, stop_cluster, verify
from rebuild.recover.context import Context, open_context

Stage = Callable[[dict[str, Any]], dict[str, Any]]


def runbook_stages(config: Path | None, progress: Progress) -> dict[str, Stage]:
    """Runbook stage names -> the functions behind the commands; ``config``: the --config given to `rebuild runbook`."""

    def ctx_for(p: dict[str, Any]) -> Context:
        return open_context(Path(str(p["config"])) if p.get("config") else config, progress)

    def revisions(p: dict[str, Any], ctx: Context) -> dict[str, str]:
        rev = str(p.get("revision") or "")
        return parse_revisions((rev,) if rev else (), ctx)

    def seconds(p: dict[str, Any], key: str) -> float | None:
        from rebuild.core.config import parse_duration

        if p.get(key) in (None, ""):
            return None
        value = parse_duration(p[key])
        if value is None:
            raise ConfigError(f"stage parameter {key}={p[key]!r} is not a duration", fix="use e.g. 10m or 600")
        return value

    def output_of(p: dict[str, Any]) -> dict[str, Any]:
        step = str(p.get("from_step") or "")
        out: dict[str, Any] = p["_context"]["outputs"].get(step) or {}
        if step and not out:
            raise RebuildError(f"step {step!r} has no result to use", fix=f"check that step {step} ran and succeeded")
        return out

    def up_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.recover.up import up

        ctx = ctx_for(p)
        res = up(ctx, revisions(p, ctx), verify_timeout=seconds(p, "verify_timeout"))
        return {**res.to_dict(), "ok": res.converged}

    def phase_stage(name: str) -> Stage:
        def stage(p: dict[str, Any]) -> dict[str, Any]:
            from rebuild.recover import encrypted, helmpreflight
            from rebuild.recover.sources import load_desired
            from rebuild.recover.up import run_phase

            ctx = ctx_for(p)
            t0 = time.monotonic()
            desired = load_desired(ctx, revisions(p, ctx))
            encrypted.check(ctx.config, ctx.toolchain, desired)  # as `up`: a wrong key stops before anything is applied
            helmpreflight.check(desired, ctx.progress)  # as `up`: a chart version or values Helm refuses, too
            changes = run_phase(ctx, name, desired)
            return {
                "ok": True,
                "phase": name,
                "seconds": round(time.monotonic() - t0, 3),
                "changes": changes,
                "sources": [s.to_dict() for s in desired.sources],
                "cluster": ctx.config.cluster.name,
            }

        return stage

    def verify_stage(p: dict[str, Any]) -> dict[str, Any]:
        ctx = ctx_for(p)
        report = verify(ctx, revisions(p, ctx), timeout=seconds(p, "timeout")).report
        return {**report.to_dict(), "ok": report.converged, "message": "" if report.converged else "not converged"}

    def drill_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.drills.drill import run_drill

        ctx = ctx_for(p)
        res = run_drill(ctx, revisions=revisions(p, ctx), verify_timeout=seconds(p, "verify_timeout"))
        # ok: the drill ran (passed or not); the report step carries the verdict
        return {**res.to_dict(), "ok": True}

    def cluster_down_stage(p: dict[str, Any]) -> dict[str, Any]:
        name = str(p.get("name") or output_of(p).get("cluster") or "")
        if not name:
            return {"ok": True, "message": "no cluster named; nothing to stop"}
        gs = stop_cluster(str(p.get("provider") or "local"), name, purge=bool(p.get("purge")))
        return {"ok": True, "cluster": name, "gitserver": gs.to_dict()}

    def report_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.core.state import state_root
        from rebuild.drills import history
        from rebuild.drills.publish import publish

        result: RunResult | dict[str, Any] = (
            assemble_run(p["_context"]["outputs"], p["from_steps"]) if p.get("from_steps") else output_of(p)
        )
        out = Path(str(p.get("out") or Path(p["_context"]["run_dir"]) / "report"))
        hist = history.default_path(state_root()) if p.get("history") else None
        url = os.environ.get(str(p.get("notify_url_env") or ""), "") if p.get("notify_url_env") else ""
        done = publish(result, out, history_path=hist, notify_url=url, progress=progress)
        if done.notify_error is not None:
            raise done.notify_error
        verdict = result.passed if isinstance(result, RunResult) else result.get("passed", result.get("converged"))
        passed = verdict is not False
        return {
            "ok": passed,
            "message": "" if passed else f"the run reported in {done.reports['html']} did not pass",
            "reports": done.paths(),
        }

    def capture_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.capture.run import capture

        res = capture(ctx_for(p), dry_run=not p.get("open_pr"), include_deletions=bool(p.get("include_deletions")))
        return {**res.to_dict(), "ok": True}  # drift found is what capture is for, not a failed step

    return {
        "cluster": phase_stage("cluster"),
        "stacks": phase_stage("stacks"),
        "platform": phase_stage("platform"),
        "reconciler": phase_stage("reconciler"),
        "up": up_stage,
        "verify": verify_stage,
        "drill": drill_stage,
        "capture": capture_stage,
        "cluster-down": cluster_down_stage,
        "report": report_stage,
    }


def assemble_run(outputs: Mapping[str, Any], from_steps: list[Any]) -> RunResult:
    """A run result (kind up) from the outputs of phase-by-phase steps (cluster, platform, ..., verify)."""
    steps = [outputs.get(str(s)) or {} for s in from_steps]
    phases = [RunPhase(o["phase"], o["seconds"]) for o in steps if o.get("phase")]
    verify_out = next((o for o in steps if "summary" in o), {})
    if verify_out:
        phases.append(RunPhase("verify", verify_out.get("seconds", 0.0), "ok" if verify_out.get("converged") else "failed"))
    first = next((o for o in steps if o.get("sources")), {})
    now = utc_stamp()
    failures = [
        Failure(o["ref"], o.get("source") or "", m)
        for o in verify_out.get("objects", [])
        if not o.get("ok")
        for m in o.get("problems", [])
    ]
    return RunResult(
        kind="up",
        cluster=first.get("cluster", ""),
        started_at=now,
        finished_at=now,
        passed=bool(verify_out.get("converged")),
        rto_seconds=round(sum(ph.seconds for ph in phases), 3),
        sources=first.get("sources", []),
        phases=phases,
        objects=ObjectCounts.of(verify_out["summary"]) if verify_out else ObjectCounts(),
        failures=failures,
    )


def run_runbook(
    file: Path,
    *,
    config: Path | None,
    params: Mapping[str, str],
    yes: bool,
    dry_run: bool,
    interactive: bool,
    progress: Progress,
) -> rb.RunResult:
    """`rebuild runbook run`: load (and validate) the runbook, check the state dir, run it."""
    from rebuild.clusters.base import check_state_dir
    from rebuild.core.state import state_root

    stages = runbook_stages(config, progress)
    book = rb.load(file, stages=stages)
    if not dry_run:
        check_state_dir(state_root(), "cluster")
    return rb.run(
        book,
        state_dir=state_root(),
        stages=stages,
        yes=yes,
        dry_run=dry_run,
        interactive=interactive,
        progress=progress,
        params=params,
    )


def resume_runbook(
    run_id: str, *, config: Path | None, yes: bool, interactive: bool, allow_changed: bool, progress: Progress
) -> rb.RunResult:
    """`rebuild runbook resume`: continue a run at its first unfinished step."""
    from rebuild.clusters.base import check_state_dir
    from rebuild.core.state import state_root

    check_state_dir(state_root(), "cluster")
    return rb.resume(
        state_root(),
        run_id,
        stages=runbook_stages(config, progress),
        yes=yes,
        interactive=interactive,
        progress=progress,
        allow_changed=allow_changed,
    )
