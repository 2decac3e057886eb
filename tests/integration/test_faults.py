"""Faults on the worst day (issue 6): each one on the real components, each with a clear
message and a rerun that completes, nothing lost.

Every test drives the real CLI in its own process group (as a terminal runs it), injects a
real fault into a real component (SIGINT/SIGKILL/SIGSTOP to real processes, a stopped git
server, a TCP proxy that cuts a real git transfer, a read-only or full tmpfs under the
state dir), then checks what a person would: the exit code, one readable error with a fix,
no traceback, no stray process or stack lock left behind, and that rerunning the same
command converges with every object in place. docs/reliability.md lists each case and
maps each of its claims to the assert here that shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import gitserver, process
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.reconcilers import flux_local
from tests.conftest import EXAMPLE_OBJECTS, REPO, example_config
from tests.kubectl import kubectl, suspend_flux
from tests.procs import pending_operations, processes_naming, pulumi_processes, stack_locks, stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"
OBJECTS = EXAMPLE_OBJECTS


def cli_env(state: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment. Without CI: these tests read its progress lines, which `-o json`
    keeps quiet in CI."""
    env = dict(os.environ, REBUILD_STATE_DIR=str(state), **(extra or {}))
    env.pop("CI", None)
    return env


def _as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT and SIGTERM delivered and SIGINT not ignored, as for a
    command typed at a terminal, whatever the test process inherited or blocked (a pytest-xdist
    worker is a long-lived process; the state of its main thread would pass to the child)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """The real CLI in its own session/process group, its stderr read line by line."""

    def __init__(self, args: list[str], state: Path, env_extra: dict[str, str] | None = None) -> None:
        env = cli_env(state, env_extra)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rebuild.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=_as_from_a_terminal,
        )
        self.signals = ""  # the child's signal state when it was interrupted (/proc/<pid>/status)
        self.lines: list[str] = []
        self.stdout = ""
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, prefix: str | re.Pattern[str], timeout: float = 240) -> None:
        """Until a progress line starts with ``prefix`` (or matches it from its start, a pattern)."""
        deadline = time.monotonic() + timeout
        seen = prefix.match if isinstance(prefix, re.Pattern) else lambda ln: ln.startswith(prefix)
        with self._cond:
            while not any(seen(ln) for ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"never saw {prefix!r}:\n{self.text[-3000:]}")
                self._cond.wait(min(left, 0.5))

    def interrupt(self, sig: signal.Signals = signal.SIGINT) -> None:
        """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group (or
        SIGTERM, as a scheduler stopping a job does)."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            wanted = ("SigBlk", "SigIgn", "SigCgt")
            self.signals = " ".join(ln.replace("\t", "") for ln in status.splitlines() if ln.startswith(wanted))
        except OSError:
            self.signals = "(no /proc entry)"
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float = 300) -> int:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()  # (communicate() would also read stderr, which _read owns)
        self.proc.wait(timeout)
        self._reader.join(10)
        return self.proc.returncode

    @property
    def text(self) -> str:
        return "".join(self.lines)

    @property
    def own(self) -> str:
        """rebuild's own lines (a Pulumi program's relayed output is prefixed `· rebuild-<stack>:`,
        or `· <project>:` for the example's own infra projects)."""
        relayed = ("· rebuild-", "· cluster-classes:", "· cluster-facts:")
        return "".join(ln for ln in self.lines if not ln.startswith(relayed))


def rebuild(
    args: list[str], state: Path, timeout: float = 600, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = cli_env(state, env_extra)
    cmd = [sys.executable, "-m", "rebuild.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def all_verified(objects: list[dict[str, Any]]) -> bool:
    """Every object of the example, each present, as in git and healthy."""
    return len(objects) == OBJECTS and all(o["ok"] and o["present"] and o["health"]["status"] == "healthy" for o in objects)


def up_converged(config: Path, state: Path) -> dict[str, Any]:
    r = rebuild(["-o", "json", "--config", str(config), "up"], state)
    assert r.returncode == 0, r.stderr[-3000:]
    res: dict[str, Any] = json.loads(r.stdout)
    assert res["converged"] is True
    assert all_verified(res["verify"]["objects"])  # nothing lost
    return res


def clean_error(run: Run | subprocess.CompletedProcess[str], *expected: str) -> None:
    """One `error:`/`interrupted:` line and a `fix:`, never a traceback, for a fault rebuild reports."""
    own = run.own if isinstance(run, Run) else run.stderr
    assert "Traceback" not in own, own[-3000:]
    assert "fix: " in own, own[-3000:]
    for e in expected:
        assert e in own, own[-3000:]


def stray_pulumi(state: Path) -> list[str]:
    """Pulumi engine/plugin processes working for this state dir (pids from /proc), the stack
    locks left in its backend, and the pending operations left in its checkpoints."""
    found = [f"pid {pid}: {cmd[:200]}" for pid, cmd in pulumi_processes(state).items()]
    found += [str(p) for p in stack_locks(state)]
    found += [f"{f}: {n} pending operation(s)" for f, n in pending_operations(state).items()]
    return found


def component_pid(cluster: LocalCluster, name: str) -> int:
    pid = next(c.pid for c in cluster.status().components if c.name == name)
    assert pid
    return pid


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_in_every_phase_of_up_then_the_rerun_completes(example: tuple[Path, Path]) -> None:
    config, state = example
    config.write_text(config.read_text().replace("interval: 1m", "interval: 1h"))
    # Each run gets one phase further (the phases before it are idempotent), and is stopped there.
    # (phase to stop in, the progress line that says it is running, seconds to let it work first, signal)
    for phase, line, delay, sig in (
        ("desired", "· desired: fetching", 0.0, signal.SIGINT),
        ("cluster", "· cluster: pulumi up", 1.0, signal.SIGINT),
        ("platform", "· platform: pulumi up", 1.5, signal.SIGINT),
        ("reconciler", "· reconciler:", 0.0, signal.SIGTERM),  # a scheduler stopping the job
    ):
        run = Run(["--config", str(config), "up"], state)
        run.wait_for(line)
        time.sleep(delay)
        run.interrupt(sig)
        assert run.finish() == 130, f"signals at the interrupt: {run.signals}\n{run.text[-3000:]}"
        clean_error(run, f"interrupted: rebuild up was interrupted during the {phase} phase", "rerun the same command")
        assert stray_pulumi(state) == [], run.text[-2000:]  # the update was cancelled, its lock released

    # verify: make it wait on a hand-made scale (Flux's interval is 1h here, so it does not revert it first).
    cluster = LocalCluster("demo", root=state)
    kube = Kube.from_kubeconfig(cluster.kubeconfig())
    try:
        deadline = time.monotonic() + 180  # Flux, left running, finishes applying meanwhile
        while (deploy := kube.get("apps/v1", "Deployment", "frontend", "shop")) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert deploy
        want = deploy["spec"]["replicas"]
        kubectl(cluster.kubeconfig(), "-n", "shop", "scale", "deployment/frontend", f"--replicas={want + 3}")
        run = Run(["--config", str(config), "up"], state)
        # verify is waiting on the drift (other objects may still be settling: the count varies)
        run.wait_for(re.compile(rf"· verify: \d+/{OBJECTS} verified, \d+ missing, [1-9]\d* drifted"))
        run.interrupt()
        assert run.finish() == 130, f"signals at the interrupt: {run.signals}\n{run.text[-3000:]}"
        clean_error(run, "interrupted during the verify phase")
        kubectl(cluster.kubeconfig(), "-n", "shop", "scale", "deployment/frontend", f"--replicas={want}")
    finally:
        kube.close()
    up_converged(config, state)
    assert stray_pulumi(state) == []


def test_ctrl_c_during_a_drill_tears_the_throwaway_cluster_down(example: tuple[Path, Path]) -> None:
    config, state = example
    run = Run(["--config", str(config), "drill", "--name", "drill-ctrlc"], state)
    run.wait_for("· platform: pulumi up")
    time.sleep(1.0)
    run.interrupt()
    assert run.finish() == 130, f"signals at the interrupt: {run.signals}\n{run.text[-3000:]}"
    clean_error(run, "interrupted during the platform phase")
    assert "teardown: destroying drill cluster drill-ctrlc" in run.text
    assert not (state / "clusters" / "drill-ctrlc").exists()  # torn down and purged
    assert processes_naming(state / "clusters" / "drill-ctrlc") == {}  # none of its processes left (pids from /proc)
    assert stray_pulumi(state) == []
    r = rebuild(["-o", "json", "--config", str(config), "drill", "--name", "drill-again"], state)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads(r.stdout)
    assert again["passed"] is True and again["objects"]["verified"] == OBJECTS


# --------------------------------------------------------------------------- control plane and Flux


def kill_etcd(cluster: LocalCluster) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """SIGKILL the cluster's etcd; returns what is needed to start it again on its data."""
    record = process.load_record(cluster.record_path)
    entry = next(p for p in record["processes"] if p["name"] == "etcd")
    argv = [a.decode() for a in Path(f"/proc/{entry['pid']}/cmdline").read_bytes().split(b"\0")[:-1]]
    os.kill(int(entry["pid"]), signal.SIGKILL)
    return argv, entry, record


def start_etcd(cluster: LocalCluster, argv: list[str], entry: dict[str, Any], record: dict[str, Any]) -> None:
    new = process.spawn("etcd", argv, log=Path(entry["log"]), cwd=cluster.dir)
    entry.update(new.to_dict())
    process.save_record(cluster.record_path, record)


def test_etcd_and_apiserver_restarts_are_ridden_through(example: tuple[Path, Path]) -> None:
    config, state = example
    up_converged(config, state)
    cluster = LocalCluster("demo", root=state)

    # etcd is down when `verify` starts; it comes back only once verify has met the outage (a
    # request of verify failed and is being retried), and at least 4 s after it died: verify
    # rides it out and passes.
    down = kill_etcd(cluster)
    killed = time.monotonic()
    run = Run(["-o", "json", "--config", str(config), "verify", "--timeout", "120"], state)
    run.wait_for("Request attempt #", timeout=90)  # verify met the outage: a failed request, retried
    met = [ln for ln in run.lines if ln.startswith("Request attempt #")]
    assert run.proc.poll() is None, run.text[-3000:]  # still running, not given up
    time.sleep(max(0.0, 4.0 - (time.monotonic() - killed)))
    outage = time.monotonic() - killed
    start_etcd(cluster, *down)
    assert run.finish() == 0, run.text[-3000:]
    report = json.loads(run.stdout)
    assert report["converged"] is True and all_verified(report["objects"])  # nothing lost
    print(f"etcd down {outage:.1f}s; verify's first failed request: {met[0].strip()}")

    # kube-apiserver is killed while `capture` runs and is restarted: capture completes.
    os.kill(component_pid(cluster, "kube-apiserver"), signal.SIGKILL)
    run = Run(["-o", "json", "--config", str(config), "capture", "--dry-run"], state)
    run.wait_for("· capture: listing")
    assert cluster.status().state == "degraded"
    cluster.create()  # the provider restarts a degraded cluster's processes on the same etcd data
    rc = run.finish()
    captured = json.loads(run.stdout) if run.stdout.strip() else {}
    assert rc == 0, (run.text[-3000:], captured.get("report", {}).get("findings", [])[:5])
    assert captured["drift"] is False and captured["live_objects_listed"] >= OBJECTS
    assert captured["report"]["unchecked"] == []  # every kind was listed (capture waits for /readyz first)
    assert "will retry" in run.text, run.text[-2000:]
    assert cluster.status().state == "running"


def test_flux_controller_killed_while_up_waits_for_it(example: tuple[Path, Path]) -> None:
    config, state = example
    run = Run(["-o", "json", "--config", str(config), "up"], state)
    # started while the platform phase runs (rebuild.recover.reconciler.EarlyStart), killed before
    # or while the reconciler phase waits for Flux: either way that phase restarts it
    run.wait_for(re.compile(r"· (flux|reconciler): started source-controller, kustomize-controller, helm-controller"))
    flux_record = process.load_record(state / "clusters" / "demo" / "flux" / "flux.json")
    victim = next(p for p in flux_record["processes"] if p["name"] == "kustomize-controller")
    os.kill(int(victim["pid"]), signal.SIGKILL)
    assert run.finish() == 0, run.text[-3000:]
    res = json.loads(run.stdout)
    assert res["converged"] is True and all_verified(res["verify"]["objects"])
    assert "kustomize-controller stopped running; restarting the Flux controllers" in run.text
    again = up_converged(config, state)
    assert again["nothing_changed"] is True
    alive = [
        p
        for p in process.load_record(state / "clusters/demo/flux/flux.json")["processes"]
        if process.alive(process.ProcRecord.from_dict(p))
    ]
    assert sorted(p["name"] for p in alive) == sorted(flux_local.CONTROLLERS)


# --------------------------------------------------------------------------- git server


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a git server that cuts the next ``cuts`` connections
    once more than ``after`` bytes of response went through: a transfer dying mid-pack."""

    def __init__(self, upstream_port: int, after: int = 256 * 1024) -> None:
        self.upstream_port = upstream_port
        self.after = after
        self.cuts = 0
        self.cut_done = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
            sent = 0
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
                    sent += len(data)
                    if count and sent > self.after:
                        with self._lock:
                            cut = self.cuts > 0
                            if cut:
                                self.cuts -= 1
                                self.cut_done += 1
                        if cut:
                            break
            except OSError:
                pass
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

        threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
        pump(upstream, client, True)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A git server that is not rebuild's (its own state folder), serving a copy of the example
    plus 4 MB of incompressible data, so a fetch takes many round trips of the pack."""
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE, work)
    (work / "assets").mkdir()
    (work / "assets" / "blob.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    remote_state = tmp_path / "remote"
    srv = gitserver.ensure_server(remote_state)
    sha = gitserver.publish_dir(work, srv.repo_path("gitops"), "seed")
    state = tmp_path / "state"
    try:
        yield {"srv": srv, "remote_state": remote_state, "work": work, "sha": sha, "state": state, "tmp": tmp_path}
    finally:
        LocalCluster("demo", root=state).delete(purge=True)
        gitserver.stop_server(remote_state)
        stop_servers(state)


def remote_config(tmp: Path, url: str) -> Path:
    cfg = example_config()
    cfg["sources"][0]["url"] = url
    path = tmp / "rebuild.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def mirror_head(state: Path) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(state / "git" / "demo.git"), "rev-parse", "refs/heads/main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_git_server_down_at_start_then_cut_mid_fetch(remote: dict[str, Any]) -> None:
    srv, state, tmp = remote["srv"], remote["state"], remote["tmp"]
    direct = remote_config(tmp, srv.repo_url("gitops"))

    # Down when `up` starts: refused with the source, the URL and a fix, after 4 attempts; no
    # cluster, no stack and no process was created (checked on disk and in /proc).
    gitserver.stop_server(remote["remote_state"])
    r = rebuild(["--config", str(direct), "up"], state)
    assert r.returncode == 2, r.stderr[-3000:]
    clean_error(r, f"fetching branch 'main' of source 'demo' from {srv.repo_url('gitops')} failed", "fix: ")
    for n in (1, 2, 3):
        assert f"Fetch attempt #{n}/4 of source demo failed; will retry" in r.stderr, r.stderr[-3000:]
    assert not (state / "clusters").exists()  # no cluster
    assert not list(state.glob("pulumi/.pulumi/stacks/**/*.json")) and not (state / "stacks").exists()  # no stack
    assert processes_naming(state) == {}  # nothing of this state dir runs
    gitserver.ensure_server(remote["remote_state"])  # back, on the same port
    up = up_converged(direct, state)  # the rerun rebuilds and verifies every object
    assert up["sources"][0]["revision"] == remote["sha"]

    # Cut in the middle of the pack, twice: the fetch is retried and completes.
    (remote["work"] / "assets" / "blob2.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    second = gitserver.publish_dir(remote["work"], srv.repo_path("gitops"), "more data")
    proxy = CuttingProxy(srv.port)
    try:
        via_proxy = remote_config(tmp, f"http://127.0.0.1:{proxy.port}/gitops.git")
        proxy.cuts = 2
        r = rebuild(["-o", "json", "--config", str(via_proxy), "plan"], state)
        assert r.returncode == 0, r.stderr[-3000:]
        assert proxy.cut_done == 2 and "Fetch attempt #2/4 of source demo failed; will retry" in r.stderr, r.stderr[-2000:]
        assert json.loads(r.stdout)["sources"][0]["revision"] == second

        # Cut every time: a clean refusal, and the mirror still holds the last good commit.
        (remote["work"] / "assets" / "blob3.bin").write_bytes(os.urandom(4 * 1024 * 1024))
        third = gitserver.publish_dir(remote["work"], srv.repo_path("gitops"), "even more data")
        proxy.cuts = 100
        r = rebuild(["--config", str(via_proxy), "plan"], state)
        assert r.returncode == 2, r.stderr[-3000:]
        clean_error(r, "of source 'demo' from http://127.0.0.1:")
        assert mirror_head(state) == second  # no partial fetch moved the ref
        proxy.cuts = 0
        r = rebuild(["-o", "json", "--config", str(via_proxy), "plan"], state)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["sources"][0]["revision"] == third == mirror_head(state)
    finally:
        proxy.close()


# --------------------------------------------------------------------------- Pulumi and the state dir


def pulumi_cli_of(run: Run, workspace: str = "") -> int:
    """The pulumi CLI a run started (its child; the CLI leads its own process group); with
    ``workspace``, the one working in that program's folder (stacks run side by side)."""
    for pid in process.children_of(run.proc.pid):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if Path(argv0).name == "pulumi" and (not workspace or Path(cwd).name == workspace):
            return pid
    raise AssertionError(f"no pulumi CLI{' in ' + workspace if workspace else ''} under pid {run.proc.pid}:\n{run.text[-2000:]}")


def test_stack_locked_by_another_update(example: tuple[Path, Path]) -> None:
    config, state = example
    up_converged(config, state)
    locks = state / "pulumi" / ".pulumi" / "locks" / "organization" / "rebuild-platform" / "demo"

    # Another `rebuild up` is in its platform update, holding the stack's lock (frozen there).
    other = Run(["--config", str(config), "up"], state)
    other.wait_for("· platform: pulumi up")
    deadline = time.monotonic() + 60
    while not list(locks.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    cli = pulumi_cli_of(other, "platform")  # not the example's own stack running beside it
    os.kill(cli, signal.SIGSTOP)
    try:
        r = rebuild(["--config", str(config), "up"], state)
        assert r.returncode == 2, r.stderr[-3000:]
        held = next(iter(locks.glob("*.json")))
        clean_error(
            r,
            "stack rebuild-platform/demo is locked by another update",
            f"held by pid {cli} on",
            f"still running; lock file {held}",
        )
    finally:
        # The other run dies without cleaning up (kill -9 of it, its pulumi and the plugins).
        os.killpg(cli, signal.SIGKILL)
        os.killpg(other.proc.pid, signal.SIGKILL)
        other.finish()
    assert list(locks.glob("*.json"))  # its lock is left behind, now stale

    r = rebuild(["-o", "json", "--config", str(config), "up"], state)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "removed the lock of an interrupted update" in r.stderr
    res = json.loads(r.stdout)
    assert res["converged"] is True and all_verified(res["verify"]["objects"])
    assert not list(locks.glob("*.json"))
    # The killed engine's plugins (their own process groups) noticed and exited: nothing left over.
    deadline = time.monotonic() + 15
    while stray_pulumi(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stray_pulumi(state) == []


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int, *options: str) -> Iterator[Path]:
    """A real size-limited (or read-only) filesystem at ``path``; needs CAP_SYS_ADMIN (root here)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size_mb}m", "mode=0700", *options])
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the state-dir faults need one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, *options: str) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(path)], check=True)


def test_state_dir_read_only_then_full(example: tuple[Path, Path]) -> None:
    config, state = example
    with tmpfs(state, 64, "ro"):
        try:
            for cmd in (["up"], ["plan"], ["drill"]):
                r = rebuild(["--config", str(config), *cmd], state)
                assert r.returncode == 2, r.stderr[-3000:]
                clean_error(r, f"the state dir {state} is not writable (Read-only file system)", "--state-dir")
                assert processes_naming(state) == {} and not (state / "clusters").exists()  # nothing started

            # Writable but too small for a cluster: refused before anything starts.
            remount(state, "rw")
            r = rebuild(["--config", str(config), "up"], state)
            assert r.returncode == 2, r.stderr[-3000:]
            clean_error(r, f"the state dir {state} has", "MB free; this command needs at least 256 MB there")
            assert not (state / "clusters").exists() and processes_naming(state) == {}  # nothing started

            # Room at the start, then the disk fills up during the platform phase: a clean failure.
            remount(state, "size=400m")
            run = Run(["--config", str(config), "up"], state)
            run.wait_for("· platform: pulumi up")
            filler = state / "filler"
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
                while out.write(b"\0" * (8 << 20)):  # until ENOSPC: the filesystem is full
                    pass
            assert run.finish() == 2, run.text[-3000:]
            assert "Traceback" not in run.own and "error: " in run.own, run.text[-3000:]
            assert "no space left on device" in run.text.lower(), run.text[-3000:]
            tmp_before = sorted((state / "pulumi" / ".pulumi" / "locks").rglob("*.tmp"))

            # Space again: the rerun completes, and no state file was left half-written.
            filler.unlink()
            up_converged(config, state)
            for f in (state / "pulumi" / ".pulumi" / "stacks").rglob("*.json"):
                json.loads(f.read_text())
            assert sorted((state / "pulumi" / ".pulumi" / "locks").rglob("*.tmp")) == []  # no cut-short write left
            assert stray_pulumi(state) == []  # no lock, pending operation or Pulumi process left
            print(f"lock folder .tmp files left by the full disk: {[str(p) for p in tmp_before]}")
        finally:  # stop what runs on the tmpfs before it goes away
            LocalCluster("demo", root=state).delete(purge=True)
            stop_servers(state)


# --------------------------------------------------------------------------- the forge, through the CLI


@pytest.fixture
def forge_setup(tmp_path: Path, toolchain: Any) -> Iterator[dict[str, Any]]:
    """The example on a real Gitea, `rebuild up` done, the forge reached through a fault proxy."""
    from rebuild.adapters.gitea import Gitea
    from tests.integration.test_forge_gitea import FaultProxy

    forge = Gitea(tmp_path / "gitea", toolchain=toolchain)
    state = tmp_path / "state"
    proxy: FaultProxy | None = None
    try:
        forge.start()
        forge.create_repo("gitops", auto_init=False)
        url = forge.clone_url(forge.admin_user, "gitops")
        work = tmp_path / "seed"
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("rebuild.yaml"))
        genv = forge.git_env()
        for args in (
            ["init", "-q", "-b", "main"],
            ["add", "."],
            ["-c", "user.name=s", "-c", "user.email=s@localhost", "commit", "-qm", "seed"],
            ["push", "-q", url, "main"],
        ):
            subprocess.run(["git", *args], cwd=work, env=genv, check=True, capture_output=True)
        proxy = FaultProxy(forge.url).start()
        cfg = example_config()
        cfg["sources"][0].update(url=url, credentials={"username_env": "GITEA_USER", "password_env": "GITEA_TOKEN"})
        repo = f"{forge.admin_user}/gitops"
        cfg["capture"]["forge"] = {"kind": "gitea", "url": proxy.url, "repo": repo, "token_env": "GITEA_TOKEN"}
        config = tmp_path / "rebuild.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        env = {"GITEA_USER": forge.admin_user, "GITEA_TOKEN": forge.token}
        r = rebuild(["--config", str(config), "up"], state, env_extra=env)
        assert r.returncode == 0, r.stderr[-3000:]
        yield {"forge": forge, "proxy": proxy, "config": config, "state": state, "env": env}
    finally:
        if proxy is not None:
            proxy.stop()
        LocalCluster("demo", root=state).delete(purge=True)
        stop_servers(state)
        forge.stop()


def forge_refs(forge: Any) -> str:
    """Every ref of the forge's repository and its commit, as git sees them (`git ls-remote`)."""
    url = forge.clone_url(forge.admin_user, "gitops")
    r = subprocess.run(["git", "ls-remote", url], capture_output=True, text=True, env=forge.git_env(), check=True)
    return r.stdout


def test_capture_through_forge_errors_and_ctrl_c_leaves_one_pr(forge_setup: dict[str, Any]) -> None:
    from tests.integration.test_forge_gitea import Fault

    forge, proxy, config, state, env = (forge_setup[k] for k in ("forge", "proxy", "config", "state", "env"))
    kubeconfig = state / "clusters/demo/kubeconfig"
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        # Drift as a person makes it: Flux suspended and cart scaled with kubectl.
        suspend_flux(kubeconfig)
        kubectl(kubeconfig, "-n", "shop", "scale", "deployment/cart", "--replicas=5")

        # The forge answers 500 twice, then 429 with Retry-After, on creating the PR: one PR.
        proxy.inject(Fault("status", 500, method="POST", times=2))
        proxy.inject(Fault("status", 429, headers={"Retry-After": "1"}, method="POST"))
        r = rebuild(["-o", "json", "--config", str(config), "capture"], state, env_extra=env)
        assert r.returncode == 1, r.stderr[-3000:]  # 1: drift was found (and a PR opened for it)
        assert json.loads(r.stdout)["action"] == "created"
        posts = [s for s in proxy.seen if s.method == "POST"]
        outcomes = [s.outcome for s in posts]
        assert outcomes[:3] == ["fault 500", "fault 500", "fault 429"], outcomes
        assert posts[3].at - posts[2].at >= 1.0, outcomes  # Retry-After: 1 honoured before the next POST
        assert r.stderr.count("will retry") >= 3, r.stderr[-2000:]
        assert len(forge.list_pull_requests(forge.admin_user, "gitops", "open")) == 1

        # A new manual change; Ctrl-C while the forge hangs on a request: exit 130, nothing half-done.
        kubectl(kubeconfig, "-n", "shop", "scale", "deployment/cart", "--replicas=6")
        refs_before = forge_refs(forge)
        pr_before = forge.list_pull_requests(forge.admin_user, "gitops", "open")
        proxy.inject(Fault("forward_then_drop", method="GET", stall=20.0))
        run = Run(["--config", str(config), "capture"], state, env_extra=env)
        run.wait_for("· capture: 1 manual change(s)")
        time.sleep(1.5)
        run.interrupt()
        assert run.finish() == 130, f"signals at the interrupt: {run.signals}\n{run.text[-3000:]}"
        clean_error(run, "interrupted: stopped before finishing", "rerun the same command")
        # Nothing half-done: no branch pushed or moved on the forge, the PR untouched.
        assert "capture: pushing" not in run.text and forge_refs(forge) == refs_before
        assert forge.list_pull_requests(forge.admin_user, "gitops", "open") == pr_before
        r = rebuild(["-o", "json", "--config", str(config), "capture"], state, env_extra=env)
        assert r.returncode == 1, r.stderr[-3000:]
        assert json.loads(r.stdout)["action"] == "updated"
        prs = forge.list_pull_requests(forge.admin_user, "gitops", "open")
        assert len(prs) == 1  # never a second PR
        with urllib.request.urlopen(f"{forge.url}/{forge.admin_user}/gitops/pulls/{prs[0]['number']}.diff", timeout=30) as resp:
            diff = resp.read().decode()
        assert "+    count: 6" in diff, diff  # the kustomization's replicas entry for cart
    finally:
        kube.close()
