"""The `rebuild` entry point (pyproject's [project.scripts]): the click group with every command group registered.

Each module of rebuild/cli/ adds its commands to the group of app.py when imported; importing
them here (and this module from the package's __init__) makes ``rebuild.cli.main:main``,
``python -m rebuild.cli`` and any ``from rebuild.cli import ...`` see every command.
"""

from __future__ import annotations

from rebuild.cli import capture, cluster, drills, recover, toolchain
from rebuild.cli.app import main

__all__ = ["capture", "cluster", "drills", "main", "recover", "toolchain"]

if __name__ == "__main__":
    main()
