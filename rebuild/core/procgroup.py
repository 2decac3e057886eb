"""Stopping a process group: SIGTERM, a grace period, then SIGKILL for what is left.

Why this exists: rebuild starts programs that start programs of their own (``go build`` runs
the compiler and linker, the Pulumi engine its plugins, a runbook step its shell pipeline).
Each runs in a process group of its own so that stopping it stops all of them. The toolchain
install, the Pulumi adapter and the runbook executor all need the same escalation, so it lives
here, in the lowest layer, where each of them can import it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_groups(pgids: Iterable[int], *, reap: Iterable[subprocess.Popen[Any]] = (), grace: float = 5.0) -> None:
    """SIGTERM every group in ``pgids``, wait up to ``grace`` seconds for them to go, then
    SIGKILL what is left. ``reap``: our own children leading those groups; they are polled while
    waiting, since a zombie still counts as a member of its group."""
    groups = list(pgids)
    children = list(reap)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        for child in children:
            child.poll()
        groups = [g for g in groups if _alive(g)]
        if not groups or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for child in children:
        child.poll()


def stop_group(pgid: int, proc: subprocess.Popen[Any] | None = None, grace: float = 5.0) -> None:
    """:func:`stop_groups` for one group (``proc``: our child leading it, reaped while waiting)."""
    stop_groups([pgid], reap=[proc] if proc is not None else [], grace=grace)
