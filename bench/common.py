"""What every benchmark shares: running the `rebuild` CLI as a user runs it, the floors, the targets.

Why a module: the benchmarks must measure the command a user types (a subprocess of the
installed ``rebuild`` entry point, with its interpreter start, imports, config loading, git
fetch and output), compare it with floors measured in the same run on the same cluster, and
state each target explicitly, so ``make bench`` (bench/all.py) can assert them and write the
tables of docs/measurements.md. A bench module's ``--json`` output is a list of results, each
with a ``targets`` list of :class:`Target` dicts.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rebuild.adapters.kube import Kube

# The installed entry point next to this interpreter (.venv/bin/rebuild): what a user runs.
REBUILD = str(Path(sys.executable).parent / "rebuild")


@dataclass(frozen=True)
class Target:
    """One asserted target: ``value <op> limit``, with where it comes from (issue, doc)."""

    name: str
    value: float
    op: str  # "<=" or ">="
    limit: float
    why: str = ""

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def line(self) -> str:
        verdict = "met" if self.passed else "MISSED"
        return f"{self.name}: {self.value:g} (target {self.op} {self.limit:g}) {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class CliRun:
    """One `rebuild ...` invocation: wall seconds, exit code, parsed stdout, timed stderr lines."""

    argv: list[str]
    seconds: float
    returncode: int
    data: Any
    stderr: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)

    def marks(self, patterns: Sequence[str]) -> dict[str, float]:
        """Seconds since start at which the first progress line matching each regex appeared."""
        out: dict[str, float] = {}
        for p in patterns:
            hit = next((t for t, line in self.stderr if re.match(p, line.lstrip("· "))), None)
            if hit is not None:
                out[p] = round(hit, 3)
        return out


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell, with the bench's state dir; CI unset so progress is shown.

    PYTHONDONTWRITEBYTECODE unset too: an installed rebuild has its bytecode (pip compiles the
    wheel's modules), but this machine's shells set it, so every run of the editable checkout
    compiled all of rebuild's modules from source again (0.3 s to 0.4 s of each `rebuild` run
    here). With it unset, each bench's first, untimed run writes the bytecode, as a user's first
    run of a source install would."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONDONTWRITEBYTECODE")}
    env["REBUILD_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def run_cli(args: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float = 3600, ok: Sequence[int] = (0,)) -> CliRun:
    """Run ``rebuild ARGS`` and time it from spawn to exit; stdout parsed as JSON when it is."""
    argv = [REBUILD, *args]
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)  # a hung command is killed, and reported below
    timer.start()
    try:
        assert proc.stdout is not None
        stdout = proc.stdout.read()  # stderr is read by the thread only: one reader per pipe
        proc.wait()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - t0
    reader.join(5)
    if proc.returncode < 0:
        raise RuntimeError(f"`{' '.join(argv)}` was killed after {timeout:.0f}s")
    if proc.returncode not in ok:
        tail = "\n".join(line for _, line in lines[-15:])
        raise RuntimeError(f"`{' '.join(argv)}` exited {proc.returncode} (expected {list(ok)}):\n{tail}\n{stdout[-2000:]}")
    try:
        data: Any = json.loads(stdout)
    except ValueError:
        data = stdout
    return CliRun(argv, seconds, proc.returncode, data, lines)


def settle(kube: Kube, timeout: float = 300) -> None:
    """Wait until the controllers have processed every Deployment, so the timed LISTs compete with nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deps = kube.list("apps/v1", "Deployment")
        if all((d.get("status") or {}).get("observedGeneration") == d["metadata"].get("generation") for d in deps):
            time.sleep(2)
            return
        time.sleep(1)


def apply_all(kube: Kube, objs: Sequence[dict[str, Any]], field_manager: str, workers: int = 16) -> None:
    """Server-side apply, Namespaces first, 16 at a time (what a reconciler would have done)."""
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    rest = [o for o in objs if o["kind"] != "Namespace"]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda o: kube.apply(o, field_manager=field_manager), namespaces))
        list(pool.map(lambda o: kube.apply(o, field_manager=field_manager), rest))


def list_floor(kube: Kube, kinds: Sequence[tuple[str, str]], workers: int = 16) -> tuple[float, int]:
    """The bare paginated cluster-wide LISTs of ``kinds`` (api_version, kind), 16 at a time: seconds, objects."""
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        count = sum(len(items) for items in pool.map(lambda k: kube.list(*k), kinds))
    return time.perf_counter() - t0, count


def kubectl_diff(kubeconfig: Path, manifests: Path, timeout: float = 3600) -> float:
    """`kubectl diff --server-side --force-conflicts -f FILE`, one invocation: seconds (exit 0 or 1 expected)."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["kubectl", "diff", "--server-side", "--force-conflicts", "-f", str(manifests)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"kubectl diff exited {proc.returncode}: {proc.stderr[-1000:]}")
    return seconds


def load() -> list[float]:
    """The machine's 1/5/15-minute load averages (benchmarks share the machine; the tables say so)."""
    return [round(x, 2) for x in os.getloadavg()]


def emit(results: list[dict[str, Any]], as_json: bool, text: str) -> None:
    """Print the results (JSON or text) and exit 1 naming every missed target."""
    missed = [t for r in results for t in r.get("targets", []) if not t["passed"]]
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(text)
    for t in missed:
        print(f"target missed: {Target(t['name'], t['value'], t['op'], t['limit']).line()}", file=sys.stderr)
    if missed:
        sys.exit(1)
