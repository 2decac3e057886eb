"""The one protocol every cluster provider implements, and the values it returns.

``rebuild`` rebuilds *into* a cluster it may have to create first (a drill's throwaway
cluster, a fresh cluster after a disaster) or into one that already exists. Stages and
the CLI only see this protocol, so the local control-plane processes, kind and an
existing kubeconfig context are interchangeable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from rebuild.errors import ConfigError

State = Literal["running", "degraded", "stopped", "absent"]
Progress = Callable[[str], None]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class Component:
    name: str
    pid: int | None
    alive: bool
    port: int | None = None
    log: str | None = None


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    provider: str
    state: State
    server: str | None = None
    kubeconfig: str | None = None
    nodes: int = 0
    components: list[Component] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "provider": self.provider,
            "state": self.state,
            "server": self.server,
            "kubeconfig": self.kubeconfig,
            "nodes": self.nodes,
            "components": [c.__dict__ for c in self.components],
            "message": self.message,
        }


class Cluster(Protocol):
    """create / delete / status / kubeconfig; ``create`` is idempotent, ``delete`` stops everything it started."""

    provider: str
    name: str

    def create(self, progress: Progress | None = None) -> ClusterStatus: ...

    def delete(self, purge: bool = False) -> None: ...

    def status(self) -> ClusterStatus: ...

    def kubeconfig(self) -> Path: ...


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"cluster name {name!r} is not valid",
            fix="use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name


def state_root() -> Path:
    """Where cluster data, stack state and run records live: $REBUILD_STATE_DIR, else XDG state."""
    env = os.environ.get("REBUILD_STATE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return (base / "rebuild").resolve()
