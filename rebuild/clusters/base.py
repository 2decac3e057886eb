"""The one protocol every cluster provider implements, and the values it returns.

``rebuild`` rebuilds *into* a cluster it may have to create first (a drill's throwaway
cluster, a fresh cluster after a disaster) or into one that already exists. Stages and
the CLI only see this protocol, so the local control-plane processes, kind and an
existing kubeconfig context are interchangeable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from rebuild.core.errors import ConfigError
from rebuild.core.progress import Progress

State = Literal["running", "degraded", "stopped", "absent"]

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


def live_processes(cluster_dir: Path) -> list[str]:
    """Names of the processes rebuild started for one cluster that are still running.

    Every process rebuild runs for a cluster is recorded in its folder: ``cluster.json``
    (the control plane) and ``<add-on>/<name>.json`` (e.g. the Flux controllers on the
    host), each with a ``processes`` list of (pid, start time) records.
    """
    from rebuild.adapters import process

    names: list[str] = []
    for record in [cluster_dir / "cluster.json", *sorted(cluster_dir.glob("*/*.json"))]:
        raw = process.load_record(record).get("processes")
        for item in raw if isinstance(raw, list) else []:
            try:
                rec = process.ProcRecord.from_dict(item)
            except (KeyError, ValueError, TypeError):
                continue
            if process.alive(rec):
                names.append(rec.name)
    return names


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"cluster name {name!r} is not valid",
            fix="use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name


# What a run needs free in the state dir before it starts: git mirrors, checkouts and Pulumi
# state are small; a local cluster's etcd preallocates 64 MB WAL segments.
MIN_FREE_MB = {"read": 16, "cluster": 256}


def check_state_dir(root: Path, need: str = "read") -> None:
    """Refuse to start in a state dir that cannot be written or is (nearly) full.

    Why before anything runs: a write failing half-way through a rebuild is an outage of
    its own; one clear refusal up front names the folder and the fix instead. The probe
    creates, fsyncs and removes a file, so read-only mounts are caught even for root.
    """
    import tempfile

    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)  # kubeconfigs, keys and state live here
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=root)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"the state dir {root} is not writable ({exc.strerror})",
            fix="make it writable, or pass --state-dir DIR (or set REBUILD_STATE_DIR) to a writable folder",
        ) from exc
    st = os.statvfs(root)
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    want = MIN_FREE_MB[need]
    if free_mb < want:
        raise ConfigError(
            f"the state dir {root} has {free_mb} MB free; this command needs at least {want} MB there",
            fix="free some space on that filesystem, or pass --state-dir DIR on one with room",
        )
