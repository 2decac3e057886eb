"""Long-running helper processes (control plane, controllers, servers) that outlive one CLI call.

``rebuild cluster up`` returns while etcd and kube-apiserver keep running; a later
``rebuild cluster down`` (a different process) must stop exactly those. So every
process is started in its own session, recorded as (pid, start time) and, before it is
signalled, checked to still be the same process: a recycled pid is never killed.
Arguments are always argv lists (never a shell string); secrets go through files or the
environment, never argv, because /proc/<pid>/cmdline is world-readable.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.adapters.fs import atomic_write
from rebuild.core.errors import PortInUseError


@dataclass(frozen=True)
class ProcRecord:
    """What is needed to find (and only find) a process again later."""

    name: str
    pid: int
    start_ticks: int
    log: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "start_ticks": self.start_ticks, "log": self.log}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ProcRecord:
        return cls(str(d["name"]), int(str(d["pid"])), int(str(d["start_ticks"])), str(d["log"]))


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a pid, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[19])


def start_ticks(pid: int) -> int:
    st = _stat(pid)
    return st[1] if st else 0


def alive(rec: ProcRecord) -> bool:
    st = _stat(rec.pid)
    if st is None or st[1] != rec.start_ticks:
        return False
    if st[0] in ("Z", "X"):
        _reap(rec.pid)
        return False
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# Names of environment variables that carry credentials (a forge token, a git password, a
# passphrase...). Long-lived daemons never inherit them: /proc/<pid>/environ of a process that
# runs for hours is one more place to read them from, and none of them needs the user's.
SECRET_ENV = re.compile(r"TOKEN|PASSW(OR)?D|SECRET|PASSPHRASE|CREDENTIAL|API_?KEY|PRIVATE_?KEY|AUTH", re.I)


# Set beside TMPDIR when rebuild points Pulumi at a private TMPDIR (adapters/pulumi/tmpdir.py):
# the TMPDIR the user had ("" for none). A daemon started from inside Pulumi (the local cluster
# and Flux, through the cluster stack's provider) gets that one back: the private folder is
# removed when rebuild exits, and the daemons outlive it (source-controller clones into TMPDIR).
OUTER_TMPDIR = "REBUILD_OUTER_TMPDIR"


def inherited_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without credential-like variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k)}
    if OUTER_TMPDIR in env:
        outer = env.pop(OUTER_TMPDIR)
        if outer:
            env["TMPDIR"] = outer
        else:
            env.pop("TMPDIR", None)
    env.update(extra or {})
    return env


def spawn(name: str, argv: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcRecord:
    """Start a detached process (own session, stdin closed, output appended to ``log``).

    ``env`` None: this environment minus credentials (:func:`inherited_env`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = inherited_env() if env is None else env
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    return ProcRecord(name, proc.pid, start_ticks(proc.pid), str(log))


def stop(rec: ProcRecord, timeout: float = 15.0) -> bool:
    """SIGTERM, wait, then SIGKILL. Returns True if it had to be killed."""
    if not alive(rec):
        return False
    try:
        os.kill(rec.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(rec):
            return False
        time.sleep(0.1)
    try:
        os.kill(rec.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    for _ in range(50):
        if not alive(rec):
            break
        time.sleep(0.1)
    return True


def children_of(pid: int) -> list[int]:
    """Direct children of a pid (from /proc), used to prove nothing was left behind."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        if int(rest[1]) == pid:
            out.append(int(entry.name))
    return out


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Could a server listen on the port now? With SO_REUSEADDR, as Go's listeners (kube-apiserver,
    etcd) set it: the TIME_WAIT connections a killed server leaves behind must not cost it its
    port, or a restarted cluster would move to another URL under clients still talking to it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(avoid: set[int] | None = None) -> int:
    """A port the kernel says is free on 127.0.0.1 (and not one we already handed out)."""
    avoid = avoid or set()
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise PortInUseError("could not find a free port on 127.0.0.1", fix="free some ports and retry")


def load_record(path: Path) -> dict[str, Any]:
    """A JSON record of started processes and ports; {} when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_record(path: Path, data: dict[str, Any]) -> None:
    """Write a record atomically, owner-only."""
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def tail(path: str | Path, lines: int = 12) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
