"""The one progress protocol: a long step reports a line of text, the CLI decides where it goes.

Stages, adapters and cluster providers take a ``Progress`` and call it with one human line per
step ("desired: fetching demo (main)"); the CLI prints it on a terminal (or keeps quiet in
CI), a test collects it, a runbook writes it to its audit log.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_line: str) -> None:
    """A Progress that says nothing."""
