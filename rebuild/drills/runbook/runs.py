"""The entry points: start a run (or a dry run) and resume one after an interruption.

Why a module of its own: everything that must hold before an executor session starts lives
here (parameters given and required, stages available, destructive steps confirmable, the
runbook unchanged since the run began, a new run's folder and initial state), so the
executor only executes.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rebuild.adapters.fs import atomic_write
from rebuild.core.errors import ConfigError
from rebuild.core.progress import Progress
from rebuild.drills.runbook.executor import Executor
from rebuild.drills.runbook.model import ConfirmationRequired, Prompt, Runbook, RunbookError, RunStateError, Stage, Step, resolve
from rebuild.drills.runbook.parse import load
from rebuild.drills.runbook.render import dry_run_plan
from rebuild.drills.runbook.state import STATE_VERSION, RunResult, find_run, git_revision, runs_dir, utc_now


def _param_values(rb: Runbook, given: Mapping[str, str]) -> dict[str, str]:
    declared = {p.name: p for p in rb.params}
    unknown = sorted(set(given) - set(declared))
    problems = [f"unknown parameter {u!r}" for u in unknown]
    values: dict[str, str] = {}
    for p in rb.params:
        if p.name in given:
            values[p.name] = str(given[p.name])
        elif p.default is not None:
            values[p.name] = p.default
        else:
            problems.append(f"parameter {p.name!r} is required ({p.description or 'no description'})")
    if problems:
        names = ", ".join(declared) or "none"
        raise ConfigError(f"runbook {rb.name}: " + "; ".join(problems), fix=f"pass --param NAME=VALUE (parameters: {names})")
    return values


def _tty_prompt(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _check_stages(rb: Runbook, stages: Mapping[str, Stage], steps: Iterable[Step]) -> None:
    missing = [f"{rb.path}:{s.line}: step {s.id} uses stage {s.stage!r}" for s in steps if s.stage and s.stage not in stages]
    if missing:
        raise RunbookError(
            "\n".join(missing) + f"\nstages available: {', '.join(sorted(stages)) or 'none'}",
            fix="use one of the available stages",
        )


def _preflight_confirm(rb: Runbook, steps: Iterable[Step], yes: bool, can_prompt: bool) -> None:
    """Stop before anything runs when a destructive step could never be confirmed (no --yes, no terminal)."""
    if yes or can_prompt:
        return
    gated = [s for s in steps if s.confirm]
    if gated:
        names = ", ".join(f"{s.id} ({rb.path.name}:{s.line})" for s in gated)
        raise ConfirmationRequired(
            f"runbook {rb.name} has destructive step(s) that need confirmation: {names}; "
            "there is no terminal to ask on, so nothing was run",
            fix="re-run with --yes to approve them, or run from a terminal",
        )


def run(
    runbook: Runbook,
    *,
    state_dir: Path,
    stages: Mapping[str, Stage],
    yes: bool = False,
    dry_run: bool = False,
    interactive: bool = False,
    progress: Progress | None = None,
    params: Mapping[str, str] | None = None,
    prompt: Prompt | None = None,
    cwd: Path | None = None,
) -> RunResult:
    """Start a new run of ``runbook`` (or show it, with ``dry_run``).

    ``interactive``: whether a person can answer prompts (the CLI passes stdin.isatty());
    ``prompt`` replaces the y/N question on stdin (tests, other front ends).
    """
    say = progress or (lambda _m: None)
    state_dir = state_dir.resolve()
    can_prompt = interactive and (prompt is not None or sys.stdin.isatty())
    _check_stages(runbook, stages, runbook.steps)
    run_id = f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{runbook.name}-{uuid.uuid4().hex[:6]}"
    values = _param_values(runbook, params or {})
    builtins = {"run_id": "<run-id>" if dry_run else run_id, "state_dir": str(state_dir), "runbook_dir": str(runbook.path.parent)}
    if dry_run:
        plan = dry_run_plan(runbook, {**values, **builtins}, yes=yes, can_prompt=can_prompt, cwd=cwd)
        return RunResult("", runbook.name, str(runbook.path), "dry-run", plan=plan)
    _preflight_confirm(runbook, runbook.steps, yes, can_prompt)
    run_dir = runs_dir(state_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    atomic_write(run_dir / "runbook.yaml", runbook.path.read_bytes())  # what exactly was run, for the audit
    values_all = {**values, **builtins}
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "run_id": run_id,
        "runbook": {"name": runbook.name, "path": str(runbook.path), "sha256": runbook.sha256, **git_revision(runbook.path)},
        "params": values,
        "cwd": str((cwd or Path.cwd()).resolve()),
        "created_at": utc_now(),
        "status": "pending",
        "sessions": [],
        "steps": [
            {
                "id": s.id,
                "title": s.title,
                "kind": s.kind,
                "action": s.action() if s.stage else shlex.join(str(a) for a in resolve(list(s.argv), values_all)),
                "status": "pending",
                "attempts": 0,
                "seconds": 0.0,
                "error": "",
            }
            for s in runbook.steps
        ],
    }
    ex = Executor(
        runbook,
        state,
        run_dir,
        state_dir,
        stages=stages,
        yes=yes,
        can_prompt=can_prompt,
        prompt=prompt or _tty_prompt,
        progress=say,
    )
    ex.save()
    say(f"run {run_id}: {len(runbook.steps)} steps; state {ex.state_path}")
    return ex.execute(resumed=False)


def resume(
    state_dir: Path,
    run_id: str = "latest",
    *,
    stages: Mapping[str, Stage],
    yes: bool = False,
    interactive: bool = False,
    progress: Progress | None = None,
    prompt: Prompt | None = None,
    allow_changed: bool = False,
) -> RunResult:
    """Continue a run at its first unfinished step; completed steps are not redone.

    The runbook is read again from its recorded path and must have the same sha256 as when
    the run started (``allow_changed`` accepts an edited runbook: steps are matched by id).
    """
    say = progress or (lambda _m: None)
    state_dir = state_dir.resolve()
    run_dir = find_run(state_dir, run_id)
    try:
        state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunStateError(f"the state of run {run_dir.name} cannot be read: {exc}", fix="start a new run") from exc
    if state.get("version") != STATE_VERSION:
        raise RunStateError(f"run {run_dir.name} was recorded by another rebuild version", fix="start a new run")
    rb_path = Path(state["runbook"]["path"])
    rb = load(rb_path, stages=None)
    if rb.sha256 != state["runbook"]["sha256"]:
        if not allow_changed:
            raise RunStateError(
                f"runbook {rb_path} changed since run {state['run_id']} started "
                f"(sha256 {state['runbook']['sha256'][:12]} -> {rb.sha256[:12]})",
                fix="start a new run, or pass --allow-changed if the completed steps are unchanged "
                f"(the original is kept in {run_dir / 'runbook.yaml'})",
            )
        by_id = {s["id"]: s for s in state["steps"]}
        state["steps"] = [
            by_id.get(s.id)
            or {
                "id": s.id,
                "title": s.title,
                "kind": s.kind,
                "action": s.action(),
                "status": "pending",
                "attempts": 0,
                "seconds": 0.0,
                "error": "",
            }
            for s in rb.steps
        ]
        state["runbook"]["sha256"] = rb.sha256
    can_prompt = interactive and (prompt is not None or sys.stdin.isatty())
    ex = Executor(
        rb, state, run_dir, state_dir, stages=stages, yes=yes, can_prompt=can_prompt, prompt=prompt or _tty_prompt, progress=say
    )
    if state.get("status") == "succeeded":
        say(f"run {state['run_id']} already succeeded; nothing to resume")
        ex.session -= 1
        return ex.result()
    remaining = [s for s, st in zip(rb.steps, state["steps"], strict=True) if st["status"] != "succeeded"]
    _check_stages(rb, stages, remaining)
    _preflight_confirm(rb, remaining, yes, can_prompt)
    return ex.execute(resumed=True)
