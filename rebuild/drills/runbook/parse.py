"""Reading a runbook file: YAML to a validated Runbook, every problem reported at once with file:line.

Why a module of its own: validation is the largest rule set of runbooks (names, params and
their ${references}, run: stage or argv, no shell command lines, preconditions, timeouts,
retry, confirm) and must run completely before anything executes; nothing else needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rebuild.core.config import _Checker, parse_duration
from rebuild.core.yamlload import YamlLoadError, load_all
from rebuild.drills.runbook.model import BUILTIN_PARAMS, STAGE_NAMES, Param, Precondition, Retry, Runbook, RunbookError, Step

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox", "pwsh", "cmd"})
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?$")
STEP_ID_RE = re.compile(r"^[a-z0-9]([-_a-z0-9]{0,62}[a-z0-9])?$")
PARAM_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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
