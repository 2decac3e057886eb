"""The runbook as data: the dataclasses every other part of rebuild.drills.runbook reads.

Why a module of its own: parsing builds these objects, rendering and the executor only read
them, so the shapes (and the few rules they carry: a step's kind and action, how a
precondition reads, ${param} substitution) live where all of them can import without
importing each other. The constants and errors shared by more than one part are here too.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.core.errors import ConfigError, RebuildError

Stage = Callable[[dict[str, Any]], dict[str, Any]]
Prompt = Callable[[str], bool]

# The stage names the shipped runbooks use; the CLI maps each to a real function.
STAGE_NAMES = ("cluster", "stacks", "platform", "reconciler", "up", "verify", "drill", "capture", "cluster-down", "report")
# Values every runbook may reference without declaring them.
BUILTIN_PARAMS = ("run_id", "state_dir", "runbook_dir")
DEFAULT_ARGV_TIMEOUT = 3600.0


class RunbookError(ConfigError):
    """The runbook file is invalid; the message lists every problem with file:line."""


class ConfirmationRequired(RebuildError):
    """A destructive step needs --yes or a terminal to ask on, and has neither."""


class ConfirmationDeclined(RebuildError):
    """The person at the terminal answered no; the run stops and can be resumed later."""


class RunStateError(RebuildError):
    """A run cannot be found, is being executed elsewhere, or no longer matches its runbook."""


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
            argv = [str(a) for a in resolve(list(self.argv), values)] if values else list(self.argv)
            return f"`{show_argv(argv)}` exits 0"
        if self.kind == "file_exists":
            return f"file `{resolve(self.value, values) if values else self.value}` exists"
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


def resolve(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return string.Template(value).substitute(values)
    if isinstance(value, dict):
        return {k: resolve(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, values) for v in value]
    return value
