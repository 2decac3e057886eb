"""The git server run detached: started once per state folder, found again and stopped by later calls.

Why apart from the server: this is process management (a pid record beside the state, a health
probe, restarting on the previous port so URLs handed to Flux keep working), not HTTP.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.adapters import process
from rebuild.adapters.fs import atomic_write
from rebuild.adapters.gitserver.auth import ENV_PASSWORD, ENV_USERNAME, Credentials
from rebuild.adapters.gitserver.server import HEALTH_PATH, HOST, repo_name
from rebuild.adapters.process import ProcRecord
from rebuild.core.errors import GitError


@dataclass(frozen=True)
class ServerProcess:
    """A detached git server: its process record, port and root."""

    record: ProcRecord
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def repo_url(self, name: str) -> str:
        """Clone URL of a repository under root (no credentials in it)."""
        return f"{self.url}/{repo_name(name)}"

    def repo_path(self, name: str) -> Path:
        """Where the bare repository behind :meth:`repo_url` lives (create it with publish_dir)."""
        return self.root / repo_name(name)

    def alive(self) -> bool:
        return process.alive(self.record)

    def healthy(self) -> bool:
        return self.alive() and _answers(self.url)

    def stop(self, timeout: float = 10.0) -> None:
        process.stop(self.record, timeout=timeout)


def spawn(
    root: Path,
    *,
    log_path: Path,
    port: int | None = None,
    credentials: Credentials | None = None,
    timeout: float = 15.0,
) -> ServerProcess:
    """Start ``python -m rebuild.adapters.gitserver`` detached and wait until it answers."""
    port = port or process.free_port()
    env = process.inherited_env()
    env.pop(ENV_USERNAME, None)
    env.pop(ENV_PASSWORD, None)
    if credentials is not None:
        env[ENV_USERNAME] = credentials.username
        env[ENV_PASSWORD] = credentials.password
    argv = [sys.executable, "-m", "rebuild.adapters.gitserver", "--root", str(Path(root).resolve()), "--port", str(port)]
    rec = process.spawn("gitserver", argv, log=log_path, env=env)
    srv = ServerProcess(rec, port, Path(root).resolve())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive(rec):
            raise GitError(f"the git server exited during start:\n{process.tail(rec.log)}", fix=f"read {rec.log}")
        if _answers(srv.url):
            return srv
        time.sleep(0.1)
    process.stop(rec)
    raise GitError(f"the git server on {srv.url} did not answer in {timeout:.0f}s", fix=f"read {rec.log}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def can_listen(port: int) -> bool:
    """Whether our server could bind the port now. SO_REUSEADDR like the server itself: the
    TIME_WAIT connections a stopped server leaves behind must not cost it its URL."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _record_path(state: Path) -> Path:
    return Path(state) / "gitserver.json"


def ensure_server(state: Path, *, credentials: Credentials | None = None, port: int | None = None) -> ServerProcess:
    """The detached git server for a state folder, started if it is not running.

    Layout: ``<state>/repos/<name>.git`` (bare repos), ``<state>/gitserver.json`` (pid record,
    0600), ``<state>/gitserver.log``. A running server is reused as it is (its credentials were
    fixed when it started); a stopped one is restarted on its previous port when that is free,
    so URLs already handed to Flux keep working.
    """
    state = Path(state).resolve()
    record = _record_path(state)
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(record.read_text())
    if old.get("process"):
        srv = ServerProcess(ProcRecord.from_dict(old["process"]), int(old["port"]), Path(old["root"]))
        if srv.healthy():
            return srv
        srv.stop()
    repos = state / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    prev = old.get("port")
    if port is None and isinstance(prev, int) and can_listen(prev):
        port = prev
    srv = spawn(repos, log_path=state / "gitserver.log", port=port, credentials=credentials)
    data = {"port": srv.port, "root": str(srv.root), "auth": credentials is not None, "process": srv.record.to_dict()}
    atomic_write(record, json.dumps(data, indent=2) + "\n")
    return srv


def server_running(state: Path) -> bool:
    """Whether the detached git server recorded in a state folder is up and answering."""
    try:
        old = json.loads(_record_path(Path(state).resolve()).read_text())
        return (
            bool(old.get("process"))
            and ServerProcess(ProcRecord.from_dict(old["process"]), int(old["port"]), Path(old["root"])).healthy()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class ServerInfo:
    """What ``cluster status`` shows of a state folder's git server."""

    url: str
    pid: int | None
    alive: bool
    log: str

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "pid": self.pid, "alive": self.alive, "log": self.log}


def server_info(state: Path) -> ServerInfo | None:
    """The git server recorded in a state folder (None if none was ever started there)."""
    state = Path(state).resolve()
    try:
        data: dict[str, Any] = json.loads(_record_path(state).read_text())
        url = f"http://{HOST}:{int(data['port'])}"
        rec = ProcRecord.from_dict(data["process"]) if data.get("process") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ServerInfo(url, rec.pid if rec else None, rec is not None and process.alive(rec), str(state / "gitserver.log"))


def stop_server(state: Path) -> bool:
    """Stop the detached git server recorded in a state folder; True if one was running."""
    record = _record_path(Path(state))
    try:
        data: dict[str, Any] = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    raw = data.get("process")
    if not raw:
        return False
    rec = ProcRecord.from_dict(raw)
    was_alive = process.alive(rec)
    process.stop(rec)
    data["process"] = None
    atomic_write(record, json.dumps(data, indent=2) + "\n")
    return was_alive
