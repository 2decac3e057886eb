"""Runbooks for people: the Markdown document (``rebuild runbook show``) and the dry-run plan.

Why a module of its own: both are pure text built from a Runbook, read by someone who must be
able to follow the runbook by hand, or check it before it runs; neither executes anything.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from rebuild.drills.runbook.model import BUILTIN_PARAMS, DEFAULT_ARGV_TIMEOUT, Runbook, resolve, show_argv


def duration_text(s: float | None) -> str:
    if s is None:
        return "none"
    if s >= 3600 and s % 3600 == 0:
        return f"{int(s // 3600)}h"
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{s:g}s"


def _mdcell(s: str) -> str:
    return " ".join(s.replace("|", "\\|").split())


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


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
            out.append(f"- **Timeout:** {duration_text(s.timeout)}")
        elif s.argv:
            out.append(f"- **Timeout:** {duration_text(DEFAULT_ARGV_TIMEOUT)} (default)")
        if s.retry.attempts > 1:
            out.append(f"- **Retry:** up to {s.retry.attempts} attempts, {duration_text(s.retry.delay)} apart")
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


def dry_run_plan(rb: Runbook, values: Mapping[str, str], *, yes: bool, can_prompt: bool, cwd: Path | None = None) -> list[str]:
    """What ``run`` would do, step by step; runs nothing (env/file preconditions are only looked at)."""
    lines = [f"runbook {rb.name} ({rb.path}, sha256 {rb.sha256[:12]})"]
    shown = {k: v for k, v in values.items() if k not in BUILTIN_PARAMS}
    if shown:
        lines.append("params: " + ", ".join(f"{k}={v!r}" for k, v in shown.items()))
    for i, s in enumerate(rb.steps, start=1):
        lines.append(f"{i:2d}. {s.id}: {s.title}")
        if s.stage:
            resolved = resolve(s.with_, values)
            lines.append(
                f"      would run stage {s.stage}" + (f" with {json.dumps(resolved, ensure_ascii=False)}" if resolved else "")
            )
        else:
            lines.append(f"      would run: {shlex.join(str(a) for a in resolve(list(s.argv), values))}")
        timeout = s.timeout if s.timeout is not None else (DEFAULT_ARGV_TIMEOUT if s.argv else None)
        extras = [f"timeout {duration_text(timeout)}"] if timeout else []
        if s.retry.attempts > 1:
            extras.append(f"retry {s.retry.attempts}x every {duration_text(s.retry.delay)}")
        if extras:
            lines.append("      " + ", ".join(extras))
        for pre in s.preconditions:
            now = ""
            if pre.kind == "env":
                now = " [set now]" if os.environ.get(pre.value) else " [NOT set now]"
            elif pre.kind == "file_exists":
                now = " [exists now]" if ((cwd or Path.cwd()) / resolve(pre.value, values)).exists() else " [missing now]"
            lines.append(f"      precondition: {pre.describe(values)}{now}")
        if s.confirm:
            how = "approved by --yes" if yes else "will ask y/N" if can_prompt else "NEEDS --yes (no terminal)"
            lines.append(f"      CONFIRM: destructive step, {how}")
    lines.append("dry run: nothing was executed")
    return lines
