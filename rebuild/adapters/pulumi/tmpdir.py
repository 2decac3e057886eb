"""A private TMPDIR for Pulumi and its plugins, removed when rebuild exits.

Why: pulumi-kubernetes writes the kubeconfig it is configured with (client key included) to a
new ``os.CreateTemp("", "kubeconfig")`` file every time a provider is configured, for its Helm
settings, and never removes it (provider.go ``writeKubeconfigToFile``). Every ``pulumi up`` of a
stack with a kubeconfig left one more cluster credential in /tmp: 330 of them after one test
suite on the development machine. Pulumi passes its environment to its plugins, so rebuild runs
Pulumi with ``TMPDIR`` set to a folder of its own under the state dir (owner-only, next to the
kubeconfigs the state dir already holds) and removes it when the process exits; the folder of a
rebuild that was killed is removed by the next one (its pid no longer runs).
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
from pathlib import Path

from rebuild.adapters.process import OUTER_TMPDIR
from rebuild.adapters.pulumi.filestate import pid_alive

PREFIX = "pulumi-"
_lock = threading.Lock()
_mine: set[Path] = set()


def pulumi_tmp_env(root: Path) -> dict[str, str]:
    """``TMPDIR`` for Pulumi, and the user's own beside it for the daemons Pulumi's plugins start
    (:data:`rebuild.adapters.process.OUTER_TMPDIR`); inside such a plugin the outer one is kept."""
    outer = os.environ.get(OUTER_TMPDIR, os.environ.get("TMPDIR", ""))
    return {"TMPDIR": str(private_tmp(root)), OUTER_TMPDIR: outer}


def private_tmp(root: Path) -> Path:
    """``<root>/tmp/pulumi-<pid>`` (0700), created once per process and state root."""
    base = root / "tmp"
    mine = base / f"{PREFIX}{os.getpid()}"
    with _lock:
        if mine in _mine and mine.is_dir():
            return mine
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        base.chmod(0o700)
        remove_stale(base)
        mine.mkdir(mode=0o700, exist_ok=True)
        if mine not in _mine:
            _mine.add(mine)
            atexit.register(shutil.rmtree, mine, True)
    return mine


def remove_stale(base: Path) -> list[Path]:
    """Remove the folders of rebuild processes that no longer run; returns what was removed."""
    removed = []
    for folder in base.glob(f"{PREFIX}*"):
        pid = folder.name.removeprefix(PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
