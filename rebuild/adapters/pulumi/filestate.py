"""Repairs of a Pulumi *file* backend's files: what a write cut short or a killed update leaves behind.

Why apart from the stack driver: these read and fix the backend's folder directly
(``.pulumi/stacks``, ``.pulumi/locks``, ``.pulumi/backups``), which exists only for a file backend;
an object store or Pulumi Cloud keeps its own consistency and is never touched this way. The
driver calls these only when its backend is a file backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STALE_TMP_SECONDS = 2.0  # a backend .tmp older than this belongs to no write in progress


def locks_dir(backend_dir: Path, project: str, stack_name: str) -> Path:
    return backend_dir / ".pulumi" / "locks" / "organization" / project / stack_name


def repair_state_files(backend_dir: Path, project: str, stack_name: str) -> list[str]:
    """Undo what a file-backend write cut short (kill -9, a full disk) leaves behind, before Pulumi reads it.

    Seen here: an empty ``<stack>.json.attrs`` sidecar (Pulumi then fails with "failed to
    load checkpoint: EOF"), and a checkpoint that is empty or not JSON (Pulumi: "could not
    create stack: unexpected end of JSON input"). The sidecar only holds blob metadata and
    is safe to drop. The checkpoint is restored from the newest whole copy Pulumi kept
    (``<stack>.json.bak``, then ``.pulumi/backups``); when there is none, the stack never
    finished its first write, so the broken file is moved aside (kept, never deleted) and
    the stack is created again; its resources are server-side applied, so objects that
    exist already are adopted, not duplicated.
    """
    fixed: list[str] = []
    stacks = backend_dir / ".pulumi" / "stacks" / project
    locks = locks_dir(backend_dir, project, stack_name)
    # Pulumi writes each blob to `<name>.<random>.tmp`, then renames it; a write cut short
    # leaves the .tmp, which Pulumi later reads as a lock ("unexpected end of JSON input").
    # A live write holds its .tmp for milliseconds, so only older ones are removed.
    for tmp in sorted([*stacks.glob(f"{stack_name}.json*.tmp"), *locks.glob("*.tmp")]):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
                fixed.append(f"removed {tmp.name}, left by a write that was cut short")
    for attrs in sorted(stacks.glob(f"{stack_name}.json*.attrs")):
        if not whole_json(attrs):
            attrs.unlink(missing_ok=True)
            fixed.append(f"removed the truncated {attrs.name}")
    checkpoint = stacks / f"{stack_name}.json"
    if not checkpoint.exists() or whole_json(checkpoint):
        return fixed
    backups = sorted(
        (backend_dir / ".pulumi" / "backups" / project / stack_name).glob(f"{stack_name}.*.json"),
        key=lambda f: f.stat().st_mtime,
        reverse=True,
    )
    good = next((c for c in [stacks / f"{stack_name}.json.bak", *backups] if c.exists() and whole_json(c)), None)
    if good is not None:
        shutil.copyfile(good, checkpoint)
        fixed.append(f"restored {checkpoint.name} from {good.name}")
    else:
        aside = checkpoint.with_name(f"{checkpoint.name}.broken-{int(time.time())}")
        checkpoint.rename(aside)
        checkpoint.with_name(checkpoint.name + ".attrs").unlink(missing_ok=True)
        fixed.append(f"moved the unreadable {checkpoint.name} (no whole copy exists) to {aside.name}")
    return fixed


def _locks(backend_dir: Path, project: str, stack_name: str) -> Iterator[tuple[Path, dict[str, Any], int]]:
    """Each readable lock file of the stack with its content and pid (unreadable ones skipped)."""
    for lock in sorted(locks_dir(backend_dir, project, stack_name).glob("*.json")):
        try:
            info = json.loads(lock.read_text())
            pid = int(info.get("pid", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        yield lock, info, pid


def lock_holders(backend_dir: Path, project: str, stack_name: str) -> list[str]:
    """Who holds the stack's lock, as people read it: pid, host, since when, still running or not."""
    out = []
    for lock, info, pid in _locks(backend_dir, project, stack_name):
        host = str(info.get("hostname", "?"))
        here = host == socket.gethostname()
        state = ("still running" if pid_alive(pid) else "no longer running") if here else "on another host"
        out.append(f"held by pid {pid} on {host} since {info.get('timestamp', '?')}, {state}; lock file {lock}")
    return out


def remove_dead_locks(backend_dir: Path, project: str, stack_name: str) -> list[int]:
    """Remove the locks whose pid on this host no longer runs; the pids removed.

    A lock held by a live process, or by another host, is left alone (that is a concurrent
    update: retry).
    """
    removed = []
    for lock, info, pid in _locks(backend_dir, project, stack_name):
        if info.get("hostname") != socket.gethostname() or pid <= 0 or pid_alive(pid):
            continue
        lock.unlink(missing_ok=True)
        lock.with_name(lock.name + ".attrs").unlink(missing_ok=True)
        removed.append(pid)
    return removed


def whole_json(path: Path) -> bool:
    try:
        json.loads(path.read_text() or "x")
    except (OSError, ValueError):
        return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
