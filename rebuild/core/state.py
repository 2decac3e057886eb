"""Where rebuild keeps its state: one place that knows the state dir and the paths under it.

Cluster data, stack state, git mirrors and checkouts, the git server, run records and the
render cache all live under one folder per user (or per ``REBUILD_STATE_DIR``), so a test, a
drill or a CI job can keep its own and delete it whole.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_root() -> Path:
    """Where cluster data, stack state and run records live: $REBUILD_STATE_DIR, else XDG state."""
    env = os.environ.get("REBUILD_STATE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return (base / "rebuild").resolve()
