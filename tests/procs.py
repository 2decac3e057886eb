"""What a fault leaves behind, read from /proc and the Pulumi backend (issue 14): the processes
working for a state dir, the stack locks in its backend and the pending operations in its
checkpoints. The fault tests assert these are empty where docs/reliability.md says so, and
that they were not empty before, where the row says something was cleared."""

from __future__ import annotations

import json
from pathlib import Path

from rebuild.core.state import StateLayout


def _proc_text(pid_dir: Path, name: str) -> str:
    return (pid_dir / name).read_bytes().replace(b"\0", b" ").decode(errors="replace")


def processes_naming(path: Path, *, cmdline_only: bool = False) -> dict[int, str]:
    """Every live process whose command line (or environment) names ``path``: pid -> command line."""
    needle = str(path)
    found: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = _proc_text(d, "cmdline")
            env = "" if cmdline_only else _proc_text(d, "environ")
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie runs nothing
            continue
        if needle in cmd or needle in env:
            found[int(d.name)] = cmd[:300]
    return found


def pulumi_processes(state: Path) -> dict[int, str]:
    """Pulumi CLI, engine and plugin processes working for this state dir (it is in their environment)."""
    return {pid: cmd for pid, cmd in processes_naming(state).items() if "pulumi" in cmd}


def stack_locks(state: Path) -> list[Path]:
    """The lock files of every stack in the state dir's Pulumi backend."""
    return sorted((StateLayout(state).pulumi_backend / ".pulumi" / "locks").rglob("*.json"))


def pending_operations(state: Path) -> dict[str, int]:
    """Stack checkpoint -> number of pending operations it lists (only the stacks that list some)."""
    out: dict[str, int] = {}
    for f in sorted((StateLayout(state).pulumi_backend / ".pulumi" / "stacks").rglob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        pending = ((doc.get("checkpoint") or {}).get("latest") or {}).get("pending_operations") or []
        if pending:
            out[str(f.relative_to(state))] = len(pending)
    return out


def pid_alive(pid: int) -> bool:
    """The pid runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_servers(state: Path) -> None:
    """Stop the servers a state dir's commands leave running for its clusters: the git server of
    local-folder sources and the chart repositories of sources' ``charts`` folders (what `cluster
    down` stops when no cluster of the state dir runs)."""
    from rebuild.adapters import gitserver, helmrepo

    gitserver.stop_server(state / "gitserver")
    helmrepo.stop_repos(StateLayout(state).chart_repos)
