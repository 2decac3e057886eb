"""An interrupted install stops its builds: SIGTERM (or Ctrl-C) must not leave `go build`
processes compiling, nor let the queued builds start afterwards (they used to: leaving the
thread pool waited for every queued build). Real processes, real signals: two builds run
`sleep` in their own process groups (as `go` does with its compiler children), a third waits;
the install is sent SIGTERM; no build process is left and the third never starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = r"""
import os, signal, sys
from pathlib import Path
from rebuild.toolchain import tools
from rebuild.toolchain.recipes import Recipe

def terminate(signum, frame):  # what the CLI does (rebuild/cli/app.py)
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, terminate)
root, marker = Path(sys.argv[1]), os.environ["SLEEP_MARKER"]

def build(b):
    (root / f"started-{b.name}").write_text("")
    # a child of its own, as `go build` runs compile and link
    b.run(["sh", "-c", f"sleep {marker} & sleep {marker}; wait"], cwd=root)
    (root / f"finished-{b.name}").write_text("")

names = ("kubernetes", "pulumi", "kwok")
tc = tools.Toolchain(root=root, versions={n: {"version": "v1"} for n in names})
try:
    tools._run_recipes(tc, [Recipe(n, (), build) for n in names], lambda m: None)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the build processes")
@pytest.mark.parametrize(("jobs", "first"), [(2, {"kubernetes", "pulumi"}), (1, {"kubernetes"})])
def test_sigterm_stops_running_builds_and_starts_no_more(tmp_path: Path, jobs: int, first: set[str]) -> None:
    marker = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"  # unique sleep argument
    env = dict(os.environ, REBUILD_BUILD_JOBS=str(jobs), SLEEP_MARKER=marker)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 30
        while len(_processes_with(marker)) < 2 * jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_processes_with(marker)) == 2 * jobs, "each running build should have its two sleeps"
        assert {p.name for p in tmp_path.glob("started-*")} == {f"started-{n}" for n in first}
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 130
        assert time.monotonic() - t0 < 10
        left = _processes_with(marker)
        assert left == [], f"build processes left running: {left}"
        started = {p.name for p in tmp_path.glob("started-*")}
        assert started == {f"started-{n}" for n in first}, "a queued build started after the interruption"
        assert not list(tmp_path.glob("finished-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)
