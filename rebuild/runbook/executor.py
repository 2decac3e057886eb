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
- Stages are injected as ``name -> callable(dict) -> dict``: this module never imports the
  cluster or git machinery, so it is tested with plain callables and real processes.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import string
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.adapters.process import ProcRecord, alive, start_ticks, tail
from rebuild.config import _Checker, parse_duration
from rebuild.errors import ConfigError, Interrupted, RebuildError
from rebuild.history import append_jsonl
from rebuild.report import atomic_write
from rebuild.yamlload import YamlLoadError, load_all

Progress = Callable[[str], None]
Stage = Callable[[dict[str, Any]], dict[str, Any]]
Prompt = Callable[[str], bool]

# The stage names the shipped runbooks use; the CLI maps each to a real function.
STAGE_NAMES = ("cluster", "platform", "reconciler", "up", "verify", "drill", "capture", "cluster-down", "report")
# Values every runbook may reference without declaring them.
BUILTIN_PARAMS = ("run_id", "state_dir", "runbook_dir")
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox", "pwsh", "cmd"})
DEFAULT_ARGV_TIMEOUT = 3600.0
PRECONDITION_TIMEOUT = 60.0
STATE_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?$")
STEP_ID_RE = re.compile(r"^[a-z0-9]([-_a-z0-9]{0,62}[a-z0-9])?$")
PARAM_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RunbookError(ConfigError):
    """The runbook file is invalid; the message lists every problem with file:line."""


class ConfirmationRequired(RebuildError):
    """A destructive step needs --yes or a terminal to ask on, and has neither."""


class ConfirmationDeclined(RebuildError):
    """The person at the terminal answered no; the run stops and can be resumed later."""


class RunStateError(RebuildError):
    """A run cannot be found, is being executed elsewhere, or no longer matches its runbook."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Param:
    name: str
    description: str = ""
    default: str | None = None

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Precondition:
    """One check before a step: a command that must exit 0, a file that must exist, a variable that must be set."""

    kind: str  # argv | file_exists | env
    argv: tuple[str, ...] = ()
    value: str = ""
    line: int = 0

    def describe(self, values: Mapping[str, str] | None = None) -> str:
        if self.kind == "argv":
            argv = [str(a) for a in _resolve(list(self.argv), values)] if values else list(self.argv)
            return f"`{show_argv(argv)}` exits 0"
        if self.kind == "file_exists":
            return f"file `{_resolve(self.value, values) if values else self.value}` exists"
        return f"environment variable `{self.value}` is set"


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    line: int
    stage: str = ""
    with_: dict[str, Any] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    description: str = ""
    preconditions: tuple[Precondition, ...] = ()
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    confirm: bool = False

    @property
    def kind(self) -> str:
        return "stage" if self.stage else "argv"

    def action(self) -> str:
        if self.stage:
            args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in self.with_.items())
            return f"stage {self.stage}" + (f" with {args}" if args else "")
        return show_argv(self.argv)


def show_argv(argv: Iterable[str]) -> str:
    """argv for people: quoted like a shell would need, but ${param} references left readable."""
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./${}-]+", a) else shlex.quote(a) for a in argv)


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Runbook:
    path: Path
    name: str
    description: str
    params: tuple[Param, ...]
    steps: tuple[Step, ...]
    sha256: str

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "description": self.description,
            "params": [{"name": p.name, "description": p.description, "default": p.default} for p in self.params],
            "steps": [
                {
                    "id": s.id,
                    "title": s.title,
                    "line": s.line,
                    "kind": s.kind,
                    "stage": s.stage or None,
                    "with": s.with_ if s.stage else None,
                    "argv": list(s.argv) if s.argv else None,
                    "preconditions": [pre.describe() for pre in s.preconditions],
                    "timeout_seconds": s.timeout,
                    "retry": {"attempts": s.retry.attempts, "delay_seconds": s.retry.delay},
                    "confirm": s.confirm,
                }
                for s in self.steps
            ],
        }


# --------------------------------------------------------------------------- parsing


def load(path: Path | str, *, stages: Iterable[str] | None = STAGE_NAMES) -> Runbook:
    """Read and validate a runbook file; RunbookError lists every problem with file:line."""
    p = Path(path).resolve()
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise RunbookError(
            f"runbook {p} does not exist", fix="pass the path of a runbook YAML file, e.g. runbooks/drill.yaml"
        ) from exc
    except OSError as exc:
        raise RunbookError(f"runbook {p} cannot be read ({exc.strerror})", fix="check the file's permissions") from exc
    return parse(raw, p, stages=stages)


def _identifiers(value: Any) -> Iterable[tuple[str, bool]]:
    """Every ${name} a string (or nested value) references, and whether its $ syntax is valid."""
    if isinstance(value, str):
        t = string.Template(value)
        yield from ((name, True) for name in t.get_identifiers())
        if not t.is_valid():
            yield ("", False)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _identifiers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _identifiers(v)


def parse(raw: bytes | str, path: Path, *, stages: Iterable[str] | None = STAGE_NAMES) -> Runbook:
    """Validate a runbook's text. ``stages``: the stage names that exist (None: accept any name)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    try:
        docs = load_all(data)
    except YamlLoadError as exc:
        lines = [f"{path}:{pr.line}: {pr.message}" for pr in exc.problems]
        raise RunbookError("\n".join(lines), fix="fix the YAML syntax at the line shown") from exc
    if len(docs) != 1:
        raise RunbookError(f"{path}: expected one YAML document, found {len(docs)}", fix="keep one runbook per file")
    known = None if stages is None else tuple(stages)
    c = _Checker(path, docs[0])
    top = c.mapping(docs[0].data, (), {"name": "", "description": "", "params": "", "steps": ""})
    name = c.string(top, "name", (), required=True)
    if name and not NAME_RE.match(name):
        c.problem(("name",), f"{name!r} is not a valid runbook name", "use lowercase letters, digits and '-'")
    params: list[Param] = []
    declared = top.get("params")
    raw_params = c.mapping(declared, ("params",), {str(k): "" for k in declared} if isinstance(declared, dict) else {})
    for pname, spec in raw_params.items():
        pp: tuple[str | int, ...] = ("params", pname)
        if not PARAM_RE.match(pname):
            c.problem(
                pp, f"{pname!r} is not a valid parameter name", "use lowercase letters, digits and '_' (it is written ${name})"
            )
        if pname in BUILTIN_PARAMS:
            c.problem(pp, f"{pname!r} is built in", f"pick another name; built-ins are {', '.join(BUILTIN_PARAMS)}")
        m = c.mapping(spec, pp, {"description": "", "default": ""})
        default = c.string(m, "default", pp) if "default" in m else None
        params.append(Param(pname, c.string(m, "description", pp), default))
    defined = {p.name for p in params} | set(BUILTIN_PARAMS)
    steps: list[Step] = []
    raw_steps = top.get("steps")
    if raw_steps is None:
        if isinstance(docs[0].data, dict):
            c.problem((), "steps is required", "add `steps:` with at least one `- id: ...` item")
    elif not isinstance(raw_steps, list) or not raw_steps:
        c.problem(("steps",), "must be a non-empty list", "add `- id: ...` items")
    else:
        seen: dict[str, int] = {}
        for i, item in enumerate(raw_steps):
            step = _step(c, item, ("steps", i), known, defined)
            if step is None:
                continue
            if step.id in seen:
                c.problem(
                    ("steps", i, "id"),
                    f"step id {step.id!r} is used twice (first at line {seen[step.id]})",
                    "give each step its own id",
                )
            seen.setdefault(step.id, step.line)
            steps.append(step)
    if c.problems:
        prefix = f"{path}:"
        ordered = sorted(c.problems, key=lambda m: int(m[len(prefix) :].split(":", 1)[0] or 0) if m.startswith(prefix) else 0)
        raise RunbookError("\n".join(ordered), fix=f"correct {path.name} at the lines shown")
    return Runbook(path, name, c.string(top, "description", ()), tuple(params), tuple(steps), hashlib.sha256(data).hexdigest())


def _argv(c: _Checker, value: Any, p: tuple[str | int, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        c.problem(
            p,
            "argv must be a list, not a string: a shell command line is never run",
            f"write it as a list: argv: {json.dumps(shlex.split(value) if value else ['program'])}",
        )
        return ()
    if not isinstance(value, list) or not value:
        c.problem(p, "argv must be a non-empty list of strings", "e.g. argv: [kubectl, get, nodes]")
        return ()
    out: list[str] = []
    for j, a in enumerate(value):
        if isinstance(a, bool) or not isinstance(a, (str, int, float)):
            c.problem((*p, j), f"argv items must be strings, not {type(a).__name__}", "quote the value")
            continue
        out.append(str(a))
    for j, a in enumerate(out):
        if os.path.basename(a) in SHELLS and any(re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", b) for b in out[j + 1 :]):
            c.problem(
                p,
                f"argv runs a shell command line ({a} -c): not allowed",
                "call the program directly with its arguments as a list",
            )
            break
    return tuple(out)


def _check_refs(c: _Checker, value: Any, p: tuple[str | int, ...], defined: set[str]) -> None:
    for ident, valid in _identifiers(value):
        if not valid:
            c.problem(p, "invalid $ placeholder", "write ${name} for a parameter and $$ for a literal $")
        elif ident not in defined:
            c.problem(
                p,
                f"${{{ident}}} is not a parameter of this runbook",
                f"declare it under params, or write $${{{ident}}} for a literal ${{{ident}}}",
            )


def _step(c: _Checker, item: Any, p: tuple[str | int, ...], known: tuple[str, ...] | None, defined: set[str]) -> Step | None:
    allowed = {k: "" for k in ("id", "title", "description", "run", "preconditions", "timeout", "retry", "confirm")}
    if not isinstance(item, dict):
        c.problem(p, "a step must be a mapping", "write `- id: ...` with title and run")
        return None
    m = c.mapping(item, p, allowed)
    line = c.line(p)
    sid = c.string(m, "id", p, required=True)
    if sid and not STEP_ID_RE.match(sid):
        c.problem((*p, "id"), f"{sid!r} is not a valid step id", "use lowercase letters, digits, '-' and '_'")
    title = c.string(m, "title", p, required=True)
    run = c.mapping(m.get("run"), (*p, "run"), {"stage": "", "with": "", "argv": ""})
    stage, with_ = "", {}
    argv: tuple[str, ...] = ()
    if "run" not in m:
        c.problem(p, "run is required", "add `run: {stage: up}` or `run: {argv: [program, arg]}`")
    elif ("stage" in run) == ("argv" in run):
        c.problem(
            (*p, "run"),
            "run needs exactly one of stage or argv",
            "e.g. `run: {stage: verify}` or `run: {argv: [kubectl, get, nodes]}`",
        )
    elif "stage" in run:
        stage = c.string(run, "stage", (*p, "run"))
        if stage and known is not None and stage not in known:
            c.problem((*p, "run", "stage"), f"unknown stage {stage!r}", f"use one of {', '.join(known)}")
        w = run.get("with")
        if w is not None and not isinstance(w, dict):
            c.problem((*p, "run", "with"), "with must be a mapping of stage parameters", "e.g. `with: {timeout: 10m}`")
        else:
            with_ = dict(w or {})
            _check_refs(c, with_, (*p, "run", "with"), defined)
    else:
        if "with" in run:
            c.problem((*p, "run", "with"), "with is for stages; an argv step takes its arguments in argv", "move them into argv")
        argv = _argv(c, run.get("argv"), (*p, "run", "argv"))
        _check_refs(c, list(argv), (*p, "run", "argv"), defined)
    pres: list[Precondition] = []
    raw_pre = m.get("preconditions")
    if raw_pre is not None and not isinstance(raw_pre, list):
        c.problem((*p, "preconditions"), "must be a list", "e.g. `preconditions: [{env: KUBECONFIG}]`")
    for j, pre in enumerate(raw_pre if isinstance(raw_pre, list) else []):
        pp = (*p, "preconditions", j)
        pm = c.mapping(pre, pp, {"argv": "", "file_exists": "", "env": ""})
        if len(pm) != 1:
            c.problem(pp, "a precondition needs exactly one of argv, file_exists, env", "e.g. `- {file_exists: rebuild.yaml}`")
            continue
        kind = next(iter(pm))
        if kind == "argv":
            pargv = _argv(c, pm["argv"], (*pp, "argv"))
            _check_refs(c, list(pargv), (*pp, "argv"), defined)
            pres.append(Precondition("argv", argv=pargv, line=c.line(pp)))
        else:
            value = c.string(pm, kind, pp, required=True)
            if kind == "env" and value and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
                c.problem((*pp, kind), f"{value!r} is not an environment variable name", "e.g. `env: KUBECONFIG`")
            _check_refs(c, value, (*pp, kind), defined)
            pres.append(Precondition(kind, value=value, line=c.line(pp)))
    timeout: float | None = None
    if "timeout" in m:
        timeout = parse_duration(m["timeout"])
        if timeout is None or timeout <= 0:
            c.problem((*p, "timeout"), f"{m['timeout']!r} is not a duration", "use e.g. 30s, 10m, 1h")
            timeout = None
    rm = c.mapping(m.get("retry"), (*p, "retry"), {"attempts": "", "delay": ""})
    delay = 0.0
    if "delay" in rm:
        d = parse_duration(rm["delay"])
        if d is None:
            c.problem((*p, "retry", "delay"), f"{rm['delay']!r} is not a duration", "use e.g. 10s or 1m")
        else:
            delay = d
    retry = Retry(c.integer(rm, "attempts", (*p, "retry"), 1, 1, 20), delay)
    confirm = m.get("confirm", False)
    if not isinstance(confirm, bool):
        c.problem((*p, "confirm"), f"must be true or false, not {confirm!r}", "write `confirm: true` on destructive steps")
        confirm = False
    return Step(
        id=sid,
        title=title,
        line=line,
        stage=stage,
        with_=with_,
        argv=argv,
        description=c.string(m, "description", p),
        preconditions=tuple(pres),
        timeout=timeout,
        retry=retry,
        confirm=confirm,
    )


# --------------------------------------------------------------------------- rendering


def _dur(s: float | None) -> str:
    if s is None:
        return "none"
    if s >= 3600 and s % 3600 == 0:
        return f"{int(s // 3600)}h"
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{s:g}s"


def _mdcell(s: str) -> str:
    return " ".join(s.replace("|", "\\|").split())


def render_markdown(runbook: Runbook) -> str:
    """The runbook as a document a person can follow by hand if the executor is unavailable."""
    rb = runbook
    out = [f"# Runbook: {rb.name}", ""]
    if rb.description:
        out += [rb.description.strip(), ""]
    out += [f"Source: `{_display_path(rb.path)}` (sha256 `{rb.sha256[:16]}`)", ""]
    gated = [s.id for s in rb.steps if s.confirm]
    if gated:
        out += [f"**Destructive steps that ask for confirmation:** {', '.join(f'`{g}`' for g in gated)}", ""]
    if rb.params:
        out += ["## Parameters", "", "| name | default | description |", "|---|---|---|"]
        for p in rb.params:
            default = "*(required)*" if p.required else f"`{_mdcell(p.default or '')}`" if p.default else '`""`'
            out.append(f"| `{p.name}` | {default} | {_mdcell(p.description)} |")
        out.append("")
    out += ["## Steps", ""]
    for i, s in enumerate(rb.steps, start=1):
        out.append(f"### {i}. {s.title}")
        out.append("")
        out.append(f"Step id `{s.id}` · line {s.line}" + (" · **DESTRUCTIVE: asks for confirmation**" if s.confirm else ""))
        out.append("")
        if s.description:
            out += [s.description.strip(), ""]
        if s.stage:
            out.append(f"- **Runs:** rebuild stage `{s.stage}`")
            for k, v in s.with_.items():
                out.append(f"  - `{k}`: `{json.dumps(v, ensure_ascii=False)}`")
        else:
            out.append("- **Runs:** the command")
            out += ["", "  ```sh", f"  {show_argv(s.argv)}", "  ```", ""]
        if s.preconditions:
            out.append("- **Before it runs, check that:**")
            out += [f"  - {pre.describe()}" for pre in s.preconditions]
        if s.timeout is not None:
            out.append(f"- **Timeout:** {_dur(s.timeout)}")
        elif s.argv:
            out.append(f"- **Timeout:** {_dur(DEFAULT_ARGV_TIMEOUT)} (default)")
        if s.retry.attempts > 1:
            out.append(f"- **Retry:** up to {s.retry.attempts} attempts, {_dur(s.retry.delay)} apart")
        if s.confirm:
            out.append("- **Confirmation:** destructive; `rebuild runbook run` asks y/N on a terminal, `--yes` pre-approves")
        out.append("")
    out += [
        "## Running it",
        "",
        "```sh",
        f"rebuild runbook run {_display_path(rb.path)}" + "".join(f" --param {p.name}=..." for p in rb.params if p.required),
        f"rebuild runbook run --dry-run {_display_path(rb.path)}   # shows every step, runs nothing",
        "rebuild runbook resume latest    # after an interruption: continues at the first unfinished step",
        "```",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- run state


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = os.environ.get("USER") or f"uid-{os.getuid()}"
    return {"user": user, "host": socket.gethostname()}


def _git_revision(path: Path) -> dict[str, Any]:
    """The commit of the work tree holding the runbook and whether the file differs from it (optional)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if head.returncode != 0:
            return {}
        status = subprocess.run(
            ["git", "-C", str(path.parent), "status", "--porcelain", "--", path.name],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_revision": head.stdout.strip(), "git_modified": bool(status.stdout.strip())}


def runs_dir(state_dir: Path) -> Path:
    return state_dir / "runbooks" / "runs"


def audit_path(state_dir: Path) -> Path:
    return state_dir / "runbooks" / "audit.jsonl"


def list_runs(state_dir: Path) -> list[dict[str, Any]]:
    """Every recorded run (id, runbook, status, created_at), oldest first."""
    out: list[dict[str, Any]] = []
    base = runs_dir(state_dir)
    if not base.is_dir():
        return out
    for d in base.iterdir():
        try:
            st = json.loads((d / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out.append(
            {
                "run_id": st.get("run_id", d.name),
                "runbook": st.get("runbook", {}).get("name"),
                "status": st.get("status"),
                "created_at": st.get("created_at", ""),
            }
        )
    return sorted(out, key=lambda r: (str(r["created_at"]), str(r["run_id"])))


@dataclass
class StepResult:
    id: str
    title: str
    status: str
    attempts: int
    seconds: float
    error: str
    log: str
    session: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunResult:
    """What a run (or a dry run) did; ``status`` is succeeded, failed, stopped or dry-run."""

    run_id: str
    runbook: str
    path: str
    status: str
    steps: list[StepResult] = field(default_factory=list)
    state_path: str = ""
    audit_path: str = ""
    session: int = 0
    plan: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.status in ("succeeded", "dry-run")

    @property
    def exit_code(self) -> int:
        """0 succeeded (or dry run), 1 a step failed, 2 stopped (declined or interrupted)."""
        return 0 if self.passed else 1 if self.status == "failed" else 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "runbook": self.runbook,
            "path": self.path,
            "status": self.status,
            "session": self.session,
            "steps": [s.to_dict() for s in self.steps],
            "state": self.state_path,
            "audit": self.audit_path,
            "plan": self.plan,
            "error": self.error,
        }

    def text(self) -> str:
        if self.status == "dry-run":
            return "\n".join(self.plan)
        lines = [f"runbook {self.runbook} run {self.run_id}: {self.status.upper()} (session {self.session})"]
        for i, s in enumerate(self.steps, start=1):
            extra = f"  {s.error.splitlines()[0]}" if s.error else ""
            lines.append(f"  {i:2d}. {s.id:<20} {s.status:<9} {s.seconds:7.1f}s  attempts {s.attempts}{extra}")
        lines.append(f"state: {self.state_path}")
        lines.append(f"audit: {self.audit_path}")
        if self.status in ("failed", "stopped"):
            lines.append(f"next: rebuild runbook resume {self.run_id}   (completed steps are not redone)")
        return "\n".join(lines)


def _resolve(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return string.Template(value).substitute(values)
    if isinstance(value, dict):
        return {k: _resolve(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, values) for v in value]
    return value


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


def _stage_failed(out: dict[str, Any]) -> str:
    """A stage fails by raising, or by returning ``ok: false``; without ``ok``, ``passed``/``converged: false`` fail it.

    ``ok`` decides alone when present, so a stage can succeed while reporting a failed
    verdict (the drill stage: the run goes on to write the reports of a failed drill).
    """
    keys = ("ok",) if "ok" in out else ("passed", "converged")
    for key in keys:
        if out.get(key) is False:
            return str(out.get("message") or out.get("error") or f"stage reported {key}: false")
    return ""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _tty_prompt(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


class _Executor:
    """One session of a run: owns the run's lock, its state file and its audit events."""

    def __init__(
        self,
        rb: Runbook,
        state: dict[str, Any],
        run_dir: Path,
        state_dir: Path,
        *,
        stages: Mapping[str, Stage],
        yes: bool,
        can_prompt: bool,
        prompt: Prompt,
        progress: Progress,
    ) -> None:
        self.rb = rb
        self.state = state
        self.run_dir = run_dir
        self.state_dir = state_dir
        self.stages = stages
        self.yes = yes
        self.can_prompt = can_prompt
        self.prompt = prompt
        self.say = progress
        self.audit_file = audit_path(state_dir)
        self.who = _who()
        self.session = len(state["sessions"]) + 1
        self.lock_fd = -1

    # -- persistence
    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    def save(self) -> None:
        self.state["updated_at"] = _now()
        atomic_write(self.state_path, json.dumps(self.state, indent=2, ensure_ascii=False, default=str) + "\n")

    def audit(self, event: str, **fields: Any) -> None:
        record = {
            "ts": _now(),
            "event": event,
            "run_id": self.state["run_id"],
            "session": self.session,
            "pid": os.getpid(),
            **self.who,
            "runbook": self.rb.name,
            "runbook_path": str(self.rb.path),
            "runbook_sha256": self.rb.sha256,
            **{k: v for k, v in self.state["runbook"].items() if k.startswith("git_")},
            **fields,
        }
        append_jsonl(self.audit_file, record, what="the runbook audit log")

    def lock(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            holder = (self.state.get("sessions") or [{}])[-1].get("pid", "?")
            raise RunStateError(
                f"run {self.state['run_id']} is being executed by another process (pid {holder})",
                fix="wait for it to finish, or stop that process before resuming",
            ) from exc
        self.lock_fd = fd

    def unlock(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    # -- the run
    def result(self, error: str = "") -> RunResult:
        return RunResult(
            run_id=self.state["run_id"],
            runbook=self.rb.name,
            path=str(self.rb.path),
            status=self.state["status"],
            steps=[
                StepResult(
                    s["id"],
                    s["title"],
                    s["status"],
                    int(s.get("attempts", 0)),
                    float(s.get("seconds", 0.0)),
                    s.get("error", ""),
                    s.get("log", ""),
                    int(s.get("session", 0)),
                )
                for s in self.state["steps"]
            ],
            state_path=str(self.state_path),
            audit_path=str(self.audit_file),
            session=self.session,
            error=error,
        )

    def execute(self, *, resumed: bool) -> RunResult:
        self.lock()
        try:
            self._stop_orphans()
            self.state["status"] = "running"
            self.state["sessions"].append({"session": self.session, "pid": os.getpid(), "started_at": _now(), **self.who})
            self.save()
            self.audit("run-resume" if resumed else "run-start", params=self.state["params"], resumed=resumed)
            done = [s["id"] for s in self.state["steps"] if s["status"] == "succeeded"]
            if resumed and done:
                self.say(f"resuming run {self.state['run_id']}: {len(done)} step(s) already done ({', '.join(done)})")
            total = len(self.rb.steps)
            for index, step in enumerate(self.rb.steps):
                st = self.state["steps"][index]
                if st["status"] == "succeeded":
                    continue
                try:
                    ok = self._step(index, total, step, st)
                except (ConfirmationRequired, ConfirmationDeclined) as err:
                    self._finish("stopped", str(err))
                    raise
                except KeyboardInterrupt:
                    self._finish("stopped", "interrupted")
                    raise
                if not ok:
                    self._finish("failed", st["error"])
                    return self.result(st["error"])
            self._finish("succeeded", "")
            return self.result()
        finally:
            self.unlock()

    def _finish(self, status: str, error: str) -> None:
        self.state["status"] = status
        self.state["sessions"][-1]["finished_at"] = _now()
        self.state["sessions"][-1]["status"] = status
        self.save()
        self.audit("run-end", result=status, error=error)

    def _stop_orphans(self) -> None:
        """A command left running by a killed executor is stopped before its step runs again."""
        for st in self.state["steps"]:
            child = st.get("child")
            if not child:
                continue
            rec = ProcRecord(st["id"], int(child["pid"]), int(child["start_ticks"]), "")
            if alive(rec):
                self.say(f"step {st['id']}: stopping pid {rec.pid}, left running by the interrupted session")
                _kill_group(rec.pid)
                deadline = time.monotonic() + 10
                while alive(rec) and time.monotonic() < deadline:
                    time.sleep(0.05)
            st["child"] = None

    def _confirm(self, step: Step) -> None:
        if self.yes:
            self.audit("confirm", step=step.id, result="approved", by="--yes")
            return
        if not self.can_prompt:
            self.audit("confirm", step=step.id, result="required", by="no terminal")
            raise ConfirmationRequired(
                f"step {step.id} ({self.rb.path.name}:{step.line}) is destructive and needs confirmation, "
                "but there is no terminal to ask on",
                fix="re-run with --yes to approve it, or run from a terminal",
            )
        ok = self.prompt(f"Step {step.id}: {step.title}\n  runs {step.action()}\n  This step is destructive. Run it? [y/N] ")
        self.audit("confirm", step=step.id, result="approved" if ok else "declined", by=self.who["user"])
        if not ok:
            raise ConfirmationDeclined(
                f"step {step.id} was not confirmed; it and the steps after it did not run",
                fix=f"rebuild runbook resume {self.state['run_id']} when ready",
            )

    def _step(self, index: int, total: int, step: Step, st: dict[str, Any]) -> bool:
        label = f"step {index + 1}/{total} {step.id}"
        if step.confirm:
            self._confirm(step)
        st.update(status="running", session=self.session, started_at=_now(), finished_at="", error="", attempts=0)
        self.audit("step-start", step=step.id, step_index=index + 1, kind=step.kind, action=st["action"])
        self.save()
        self.say(f"{label}: {step.title}")
        t0 = time.monotonic()
        try:
            ok, error, output = self._attempts(index, step, st, label)
        except KeyboardInterrupt:
            st.update(status="failed", error="interrupted", seconds=round(time.monotonic() - t0, 3), finished_at=_now())
            self.save()
            self.audit("step-end", step=step.id, step_index=index + 1, result="interrupted", duration_seconds=st["seconds"])
            raise
        seconds = round(time.monotonic() - t0, 3)
        st.update(status="succeeded" if ok else "failed", error=error, seconds=seconds, finished_at=_now(), output=output)
        self.save()
        self.audit(
            "step-end",
            step=step.id,
            step_index=index + 1,
            result="ok" if ok else "failed",
            duration_seconds=seconds,
            attempts=st["attempts"],
            error=error,
        )
        self.say(f"{label}: {'ok' if ok else 'FAILED'} in {seconds:.1f}s" + (f": {error.splitlines()[0]}" if error else ""))
        return ok

    def _values(self) -> dict[str, str]:
        return {
            **self.state["params"],
            "run_id": self.state["run_id"],
            "state_dir": str(self.state_dir),
            "runbook_dir": str(self.rb.path.parent),
        }

    def _preconditions(self, step: Step) -> str:
        values = self._values()
        cwd = Path(self.state["cwd"])
        for pre in step.preconditions:
            if pre.kind == "env":
                if not os.environ.get(pre.value):
                    return f"precondition not met: environment variable {pre.value} is not set (line {pre.line})"
            elif pre.kind == "file_exists":
                target = cwd / _resolve(pre.value, values)
                if not target.exists():
                    return f"precondition not met: {target} does not exist (line {pre.line})"
            else:
                argv = [str(a) for a in _resolve(list(pre.argv), values)]
                try:
                    proc = subprocess.run(
                        argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PRECONDITION_TIMEOUT, check=False
                    )
                except FileNotFoundError:
                    return f"precondition not met: program {argv[0]!r} not found (line {pre.line})"
                except subprocess.TimeoutExpired:
                    return f"precondition not met: `{shlex.join(argv)}` did not finish in {PRECONDITION_TIMEOUT:.0f}s"
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()[-3:]
                    return f"precondition not met: `{shlex.join(argv)}` exited {proc.returncode}" + (
                        f": {' / '.join(tail)}" if tail else ""
                    )
        return ""

    def _attempts(self, index: int, step: Step, st: dict[str, Any], label: str) -> tuple[bool, str, dict[str, Any]]:
        problem = self._preconditions(step)
        if problem:
            return False, problem, {}
        error, output = "", dict[str, Any]()
        for attempt in range(1, step.retry.attempts + 1):
            st["attempts"] = attempt
            log = self.run_dir / "logs" / f"{index + 1:02d}-{step.id}.s{self.session}.a{attempt}.log"
            st["log"] = str(log)
            self.save()
            if step.argv:
                error = self._run_argv(step, st, log, attempt)
                output = {}
            else:
                error, output = self._run_stage(step, log, attempt)
            if not error:
                return True, "", output
            if attempt < step.retry.attempts:
                self.say(
                    f"{label}: attempt #{attempt}/{step.retry.attempts} failed; will retry in {step.retry.delay:g}s: {error}"
                )
                self.audit("step-retry", step=step.id, attempt=attempt, error=error)
                time.sleep(step.retry.delay)
        return False, error, output

    def _run_stage(self, step: Step, log: Path, attempt: int) -> tuple[str, dict[str, Any]]:
        fn = self.stages[step.stage]
        params = _resolve(step.with_, self._values())
        outputs = {s["id"]: s.get("output") or {} for s in self.state["steps"] if s["status"] == "succeeded"}
        params["_context"] = {
            "run_id": self.state["run_id"],
            "step": step.id,
            "attempt": attempt,
            "state_dir": str(self.state_dir),
            "run_dir": str(self.run_dir),
            "timeout": step.timeout,
            "outputs": outputs,
        }
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = fn(params)
        except Interrupted:
            raise KeyboardInterrupt from None  # the run stops (resumable); it is not a failed attempt
        except RebuildError as err:
            log.write_text(f"stage {step.stage} failed: {err}\n", encoding="utf-8")
            return str(err), {}
        except Exception as exc:  # a stage bug must not leave the run state inconsistent
            log.write_text(traceback.format_exc(), encoding="utf-8")
            return f"stage {step.stage} raised {type(exc).__name__}: {exc} (traceback in {log})", {}
        out = _jsonable(raw if isinstance(raw, dict) else {"value": raw})
        log.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return _stage_failed(out), out

    def _run_argv(self, step: Step, st: dict[str, Any], log: Path, attempt: int) -> str:
        argv = [str(a) for a in _resolve(list(step.argv), self._values())]
        if argv and argv[0] == "rebuild":
            # The same rebuild that runs the runbook (its virtualenv may not be on PATH).
            argv = [sys.executable, "-m", "rebuild.cli", *argv[1:]]
        timeout = step.timeout if step.timeout is not None else DEFAULT_ARGV_TIMEOUT
        env = {
            **os.environ,
            "REBUILD_RUNBOOK_RUN_ID": self.state["run_id"],
            "REBUILD_RUNBOOK_STEP": step.id,
            "REBUILD_RUNBOOK_ATTEMPT": str(attempt),
        }
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.state["cwd"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: a timeout stops its children too
                )
            except FileNotFoundError:
                return f"program {argv[0]!r} not found (check PATH)"
            except OSError as exc:
                return f"`{argv[0]}` could not be started: {exc.strerror}"
            st["child"] = {"pid": proc.pid, "start_ticks": start_ticks(proc.pid)}
            self.save()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid, proc)
                proc.wait()
                st["child"] = None
                return f"timed out after {_dur(timeout)}; output in {log}"
            except BaseException:
                _kill_group(proc.pid, proc)
                proc.wait()
                st["child"] = None
                raise
            st["child"] = None
        if rc != 0:
            last = tail(log, 5).replace("\n", " / ")
            return f"`{shlex.join(argv)}` exited {rc}" + (f": {last}" if last else "") + f" (log: {log})"
        return ""


def _kill_group(pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group, then SIGKILL what is left after 5 seconds.

    ``proc``: our own child leading the group; it is reaped while waiting, since a zombie
    still counts as a member of its group.
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- entry points


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


def dry_run_plan(rb: Runbook, values: Mapping[str, str], *, yes: bool, can_prompt: bool, cwd: Path | None = None) -> list[str]:
    """What ``run`` would do, step by step; runs nothing (env/file preconditions are only looked at)."""
    lines = [f"runbook {rb.name} ({rb.path}, sha256 {rb.sha256[:12]})"]
    shown = {k: v for k, v in values.items() if k not in BUILTIN_PARAMS}
    if shown:
        lines.append("params: " + ", ".join(f"{k}={v!r}" for k, v in shown.items()))
    for i, s in enumerate(rb.steps, start=1):
        lines.append(f"{i:2d}. {s.id}: {s.title}")
        if s.stage:
            resolved = _resolve(s.with_, values)
            lines.append(
                f"      would run stage {s.stage}" + (f" with {json.dumps(resolved, ensure_ascii=False)}" if resolved else "")
            )
        else:
            lines.append(f"      would run: {shlex.join(str(a) for a in _resolve(list(s.argv), values))}")
        timeout = s.timeout if s.timeout is not None else (DEFAULT_ARGV_TIMEOUT if s.argv else None)
        extras = [f"timeout {_dur(timeout)}"] if timeout else []
        if s.retry.attempts > 1:
            extras.append(f"retry {s.retry.attempts}x every {_dur(s.retry.delay)}")
        if extras:
            lines.append("      " + ", ".join(extras))
        for pre in s.preconditions:
            now = ""
            if pre.kind == "env":
                now = " [set now]" if os.environ.get(pre.value) else " [NOT set now]"
            elif pre.kind == "file_exists":
                now = " [exists now]" if ((cwd or Path.cwd()) / _resolve(pre.value, values)).exists() else " [missing now]"
            lines.append(f"      precondition: {pre.describe(values)}{now}")
        if s.confirm:
            how = "approved by --yes" if yes else "will ask y/N" if can_prompt else "NEEDS --yes (no terminal)"
            lines.append(f"      CONFIRM: destructive step, {how}")
    lines.append("dry run: nothing was executed")
    return lines


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
        "runbook": {"name": runbook.name, "path": str(runbook.path), "sha256": runbook.sha256, **_git_revision(runbook.path)},
        "params": values,
        "cwd": str((cwd or Path.cwd()).resolve()),
        "created_at": _now(),
        "status": "pending",
        "sessions": [],
        "steps": [
            {
                "id": s.id,
                "title": s.title,
                "kind": s.kind,
                "action": s.action() if s.stage else shlex.join(str(a) for a in _resolve(list(s.argv), values_all)),
                "status": "pending",
                "attempts": 0,
                "seconds": 0.0,
                "error": "",
            }
            for s in runbook.steps
        ],
    }
    ex = _Executor(
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


def find_run(state_dir: Path, run_id: str = "latest") -> Path:
    """The folder of a run by id (or unique prefix), or of the most recently started one for 'latest'."""
    runs = list_runs(state_dir)
    if not runs:
        raise RunStateError(
            f"no runbook run is recorded under {runs_dir(state_dir)}", fix="start one with `rebuild runbook run FILE`"
        )
    if run_id == "latest":
        return runs_dir(state_dir) / str(runs[-1]["run_id"])
    matches = [r for r in runs if str(r["run_id"]).startswith(run_id)]
    if len(matches) != 1:
        known = ", ".join(str(r["run_id"]) for r in runs[-5:])
        what = "matches no run" if not matches else "matches several runs"
        raise RunStateError(f"run id {run_id!r} {what}", fix=f"use `latest` or a full id (recent: {known})")
    return runs_dir(state_dir) / str(matches[0]["run_id"])


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
    ex = _Executor(
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
