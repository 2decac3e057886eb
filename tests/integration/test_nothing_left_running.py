"""Nothing left running: after `up` then `cluster down --purge`, no process and no listener of rebuild remain.

Every process is counted, not only the ones rebuild records: each CLI call runs under a small
wrapper that is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so whatever the CLI started
and left behind (detached daemons included) is re-parented to the wrapper and listed when the
CLI exits. On top of that, /proc is scanned for any process whose argv, working directory or
environment names the test's state dir. Listening sockets (TCP, TCP6, unix) are mapped to their
owners through /proc/net/* and /proc/<pid>/fd.

The counting is shown to work, so the final "none left" cannot hold vacuously: after `up` the
same counters must find the control plane, the Flux controllers and the git server, and their
listeners, all on loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rebuild.adapters import gitserver, helmrepo, process
from rebuild.clusters import release_gitserver
from rebuild.clusters.local import LocalCluster

pytestmark = pytest.mark.integration

# Runs argv as a child, then lists every live descendant left when it exits (orphans are
# re-parented to this wrapper because it is a child subreaper), as JSON into the file argv[1].
WRAPPER = r"""
import ctypes, json, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
rc = subprocess.call(sys.argv[2:])
parents = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            raw = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        if rest[0] not in ("Z", "X"):
            parents[int(d)] = int(rest[1])
left, todo = [], [os.getpid()]
while todo:
    p = todo.pop()
    kids = [c for c, pp in parents.items() if pp == p]
    left += kids
    todo += kids
json.dump({"rc": rc, "left": left}, open(sys.argv[1], "w"))
"""


@dataclass(frozen=True)
class Proc:
    pid: int
    start_ticks: int
    cmd: str

    def alive(self) -> bool:
        return process.start_ticks(self.pid) == self.start_ticks and _state(self.pid) not in ("Z", "X", "")


@dataclass(frozen=True)
class Listener:
    pid: int
    kind: str  # tcp | tcp6 | unix
    address: str
    loopback: bool


def _state(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return raw[raw.rfind(")") + 2 :].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _proc(pid: int) -> Proc | None:
    ticks = process.start_ticks(pid)
    return Proc(pid, ticks, _cmdline(pid)) if ticks and _state(pid) not in ("Z", "X", "") else None


def pointing_at(state: Path) -> set[Proc]:
    """Every live process whose argv, cwd or environment names the state dir."""
    needle = str(state).encode()
    found: set[Proc] = set()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        pid = int(d)
        hit = False
        with contextlib.suppress(OSError):
            hit = needle in Path(f"/proc/{pid}/cmdline").read_bytes()
        with contextlib.suppress(OSError):
            hit = hit or os.readlink(f"/proc/{pid}/cwd").startswith(str(state))
        with contextlib.suppress(OSError):
            hit = hit or needle in Path(f"/proc/{pid}/environ").read_bytes()
        if hit and (p := _proc(pid)) is not None:
            found.add(p)
    return found


def _listening_inodes() -> dict[int, tuple[str, str, bool]]:
    """socket inode -> (kind, address, loopback) for every listening socket of this network namespace."""
    out: dict[int, tuple[str, str, bool]] = {}
    for kind in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
            f = row.split()
            if f[3] != "0A":  # LISTEN
                continue
            hexip, hexport = f[1].split(":")
            raw = bytes.fromhex(hexip)
            # /proc/net/tcp* hold the address as 32-bit words in host (little-endian) order
            ip_bytes = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(ip_bytes)
            loop = ip.is_loopback or (
                isinstance(ip, ipaddress.IPv6Address) and bool(ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)
            )
            out[int(f[9])] = (kind, f"{ip}:{int(hexport, 16)}", loop)
    for row in Path("/proc/net/unix").read_text().splitlines()[1:]:
        f = row.split()
        if int(f[3], 16) & 0x10000:  # __SO_ACCEPTCON: a listening unix socket
            out[int(f[6])] = ("unix", f[7] if len(f) > 7 else "(unnamed)", True)
    return out


def listeners_of(procs: set[Proc]) -> set[Listener]:
    socks = _listening_inodes()
    found: set[Listener] = set()
    for p in procs:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p.pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{p.pid}/fd/{fd}")
                    if link.startswith("socket:[") and (inode := int(link[8:-1])) in socks:
                        kind, addr, loop = socks[inode]
                        found.add(Listener(p.pid, kind, addr, loop))
    return found


def run_counted(
    args: list[str], state: Path, tmp: Path, timeout: float = 900
) -> tuple[subprocess.CompletedProcess[str], set[Proc]]:
    """Run the CLI under the subreaper wrapper; also return every live process it left behind."""
    out = tmp / f"left-{time.monotonic_ns()}.json"
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    env.pop("CI", None)
    r = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out), sys.executable, "-m", "rebuild.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    data = json.loads(out.read_text())
    r.returncode = int(data["rc"])
    left = {p for pid in data["left"] if (p := _proc(int(pid))) is not None}
    return r, left


def _kill(procs: set[Proc]) -> None:
    for p in procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)


def test_up_then_cluster_down_purge_leaves_no_process_and_no_listener(example: tuple[Path, Path], tmp_path: Path) -> None:
    config, state = example
    seen: set[Proc] = set()
    try:
        before = pointing_at(state)
        assert before == set(), f"processes already point at the fresh state dir: {before}"
        assert listeners_of(before) == set()

        t0 = time.monotonic()
        up, left_by_up = run_counted(["--config", str(config), "up", "-o", "json"], state, tmp_path)
        seen |= left_by_up
        assert up.returncode == 0, up.stderr[-3000:]
        assert json.loads(up.stdout)["converged"] is True
        print(f"up: {time.monotonic() - t0:.1f}s")

        # The counters see what `up` leaves running on purpose (so "none" later means none).
        after_up = pointing_at(state)
        seen |= after_up
        assert left_by_up <= after_up, f"left by up but not found by the state-dir scan: {left_by_up - after_up}"
        cmds = " ".join(p.cmd for p in left_by_up)
        for expected in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            assert expected in cmds, f"{expected} not among the processes `up` left: {cmds[:2000]}"
        for expected in ("source-controller", "kustomize-controller", "rebuild.adapters.gitserver", "rebuild.adapters.helmrepo"):
            assert expected in cmds, f"{expected} not among the processes `up` left"
        listening = listeners_of(after_up)
        gs = gitserver.server_info(state / "gitserver")
        assert gs is not None and gs.alive
        assert any(ls.pid == gs.pid and ls.address == gs.url.removeprefix("http://") for ls in listening), listening
        assert len({ls.pid for ls in listening if ls.kind != "unix"}) >= 6, listening
        remote = [ls for ls in listening if not ls.loopback]
        assert remote == [], f"listeners not on loopback: {remote}"

        # the example's charts/ served as a chart repository (sources[0].charts), on loopback too
        charts = helmrepo.repo_running(state / "charts" / "demo")
        assert charts is not None and any(ls.pid == charts.record.pid for ls in listening), listening

        # `cluster status` lists the git server and the chart repository
        st, _ = run_counted(["cluster", "status", "--name", "demo", "-o", "json"], state, tmp_path)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["gitserver"] == {"url": gs.url, "pid": gs.pid, "alive": True, "log": gs.log}
        assert status["chart_repositories"] == {"demo": charts.url}
        text, _ = run_counted(["cluster", "status", "--name", "demo"], state, tmp_path)
        assert f"git server of the state dir: up    pid={gs.pid}  {gs.url}" in text.stdout
        assert f"chart repository of source demo: up    {charts.url}" in text.stdout

        t1 = time.monotonic()
        down, left_by_down = run_counted(["cluster", "down", "--name", "demo", "--purge", "-o", "json"], state, tmp_path)
        seen |= left_by_down
        assert down.returncode == 0, down.stderr[-3000:]
        assert json.loads(down.stdout)["gitserver"] == {"stopped": True, "used_by": [], "charts_stopped": ["demo"]}
        print(f"cluster down --purge: {time.monotonic() - t1:.1f}s")

        assert left_by_down == set(), f"`cluster down` left processes: {left_by_down}"
        survivors = {p for p in seen if p.alive()}
        assert survivors == set(), f"still running after cluster down --purge: {survivors}"
        remaining = pointing_at(state)
        assert remaining == set(), f"processes still pointing at the state dir: {remaining}"
        assert listeners_of(remaining | survivors) == set()
        # and nothing listens any more on the addresses they had
        still = {addr for _, addr, _ in _listening_inodes().values()} & {ls.address for ls in listening if ls.kind != "unix"}
        assert still == set(), f"addresses still listened on: {still}"

        st2, _ = run_counted(["cluster", "status", "--name", "demo", "-o", "json"], state, tmp_path)
        assert st2.returncode == 1  # absent
        assert json.loads(st2.stdout)["gitserver"]["alive"] is False
        assert json.loads(st2.stdout)["chart_repositories"] == {}
    finally:
        LocalCluster("demo", root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")
        _kill({p for p in seen | pointing_at(state) if p.alive()})


def test_git_server_is_kept_while_another_cluster_of_the_state_dir_runs(tmp_path: Path) -> None:
    """The "uses" rule without a control plane: a live process recorded for a cluster keeps the server."""
    state = tmp_path / "state"
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    srv = None
    try:
        srv = gitserver.ensure_server(state / "gitserver")
        other = state / "clusters" / "other"
        rec = process.ProcRecord("etcd", sleeper.pid, process.start_ticks(sleeper.pid), str(tmp_path / "x.log"))
        process.save_record(other / "cluster.json", {"processes": [rec.to_dict()]})
        (state / "clusters" / "gone").mkdir()  # a purged-then-recreated folder with nothing running

        kept = release_gitserver(state)
        assert kept.stopped is False and kept.used_by == ["other"]
        assert srv.healthy()

        sleeper.terminate()
        sleeper.wait(10)
        released = release_gitserver(state)
        assert released.stopped is True and released.used_by == []
        assert not srv.alive()
        info = gitserver.server_info(state / "gitserver")
        assert info is not None and info.alive is False and info.pid is None
        assert release_gitserver(state).stopped is False  # nothing left to stop
    finally:
        sleeper.kill()
        sleeper.wait(10)
        if srv is not None:
            srv.stop()
