"""Where runs are recorded and what a run reports: run folders, finding a run, the results.

Why a module of its own: the layout under ``<state>/runbooks/`` (one folder per run with its
state.json, the audit log beside them) and the result of a run are read by the executor, by
the entry points and by the CLI; keeping them apart from the executor keeps the on-disk
contract in one place.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.core.state import StateLayout
from rebuild.drills.runbook.model import RunStateError

STATE_VERSION = 1


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = os.environ.get("USER") or f"uid-{os.getuid()}"
    return {"user": user, "host": socket.gethostname()}


def git_revision(path: Path) -> dict[str, Any]:
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
    return StateLayout(state_dir).runbook_runs


def audit_path(state_dir: Path) -> Path:
    return StateLayout(state_dir).runbook_audit


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
