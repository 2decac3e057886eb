"""DR runbooks as data: validated, rendered for humans, executed resumably with an audit trail.

Why: during an incident people follow a wiki page, skip a step under stress and cannot say
afterwards what ran when. A runbook here is a YAML file in git (reviewed like code) whose
steps are rebuild stages or argv commands; the same file renders as Markdown for humans
(``rebuild runbook show``) and executes (``rebuild runbook run``).

Decisions:
- Commands are argv lists, never shell strings: nothing is re-parsed by a shell, so a
  parameter value cannot inject a command. ``[sh, -c, ...]`` is refused too.
- Every problem in a runbook is reported at once with its file:line, before anything runs
  (the style of rebuild.yaml validation): a runbook must not fail at step 5 on a typo.
- The executor keeps a state file per run (``<state>/runbooks/runs/<id>/state.json``),
  written atomically before and after each step. After a crash, even ``kill -9``,
  ``resume`` continues at the first step that did not succeed; completed steps are never
  redone. A step that was running when the process died is run again, so steps must be
  idempotent (rebuild's stages are; argv steps get REBUILD_RUNBOOK_RUN_ID/STEP/ATTEMPT in
  their environment to help). A command left running by the killed executor is stopped
  before its step is re-run, so two copies never run at once.
- An append-only JSON-lines audit log (``<state>/runbooks/audit.jsonl``) records who, where,
  which runbook (sha256 of its bytes, git revision when it lives in a work tree), which step,
  start/end, result, duration and error, fsync'ed before and after every step.
- Destructive steps (``confirm: true``) need ``--yes`` or a y/N answer on a terminal; with
  neither, the run stops at once with ConfirmationRequired instead of hanging on a prompt
  nobody can answer (CI, cron).
- Stages are injected as ``name -> callable(dict) -> dict``: this package never imports the
  cluster or git machinery, so it is tested with plain callables and real processes.

The package, by the seams the code already had (the public API is re-exported here, so
``from rebuild.drills.runbook import X`` keeps working):
- ``model``: the dataclasses (Runbook, Step, Param, Precondition, Retry), shared constants,
  the errors, ${param} substitution.
- ``parse``: YAML to a validated Runbook, every problem at once with file:line.
- ``render``: the Markdown document and the dry-run plan.
- ``state``: the run folders and audit log under the state dir, finding a run, the results.
- ``executor``: one session of a run (lock, state file, audit, confirm, preconditions,
  retries, processes).
- ``runs``: the entry points ``run`` and ``resume``: everything checked before a session.
"""

from rebuild.core.progress import Progress
from rebuild.drills.runbook.executor import PRECONDITION_TIMEOUT
from rebuild.drills.runbook.model import (
    BUILTIN_PARAMS,
    DEFAULT_ARGV_TIMEOUT,
    STAGE_NAMES,
    ConfirmationDeclined,
    ConfirmationRequired,
    Param,
    Precondition,
    Prompt,
    Retry,
    Runbook,
    RunbookError,
    RunStateError,
    Stage,
    Step,
    show_argv,
)
from rebuild.drills.runbook.parse import NAME_RE, PARAM_RE, SHELLS, STEP_ID_RE, load, parse
from rebuild.drills.runbook.render import dry_run_plan, render_markdown
from rebuild.drills.runbook.runs import resume, run
from rebuild.drills.runbook.state import STATE_VERSION, RunResult, StepResult, audit_path, find_run, list_runs, runs_dir

__all__ = [
    "BUILTIN_PARAMS",
    "DEFAULT_ARGV_TIMEOUT",
    "NAME_RE",
    "PARAM_RE",
    "PRECONDITION_TIMEOUT",
    "SHELLS",
    "STAGE_NAMES",
    "STATE_VERSION",
    "STEP_ID_RE",
    "ConfirmationDeclined",
    "ConfirmationRequired",
    "Param",
    "Precondition",
    "Progress",
    "Prompt",
    "Retry",
    "RunResult",
    "RunStateError",
    "Runbook",
    "RunbookError",
    "Stage",
    "Step",
    "StepResult",
    "audit_path",
    "dry_run_plan",
    "find_run",
    "list_runs",
    "load",
    "parse",
    "render_markdown",
    "resume",
    "run",
    "runs_dir",
    "show_argv",
]
