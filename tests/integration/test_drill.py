"""Issue 5 end to end: drills into throwaway clusters with reports and history, a broken
revision, and a DR runbook killed with SIGKILL in the middle of its platform step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import process
from rebuild.clusters.local import LocalCluster
from tests.conftest import EXAMPLE_OBJECTS, REPO, assert_example_phases
from tests.procs import pending_operations, pid_alive, processes_naming, pulumi_processes, stack_locks, stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"


def cli(args: list[str], state: Path, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    env.pop("REBUILD_NOTIFY_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env, timeout=timeout, **kw
    )


def test_ten_drills_pass_with_reports_and_history(tmp_path: Path, toolchain: Any) -> None:
    state = tmp_path / "state"
    config = str(EXAMPLE / "rebuild.yaml")
    last: dict[str, Any] = {}
    try:
        for i in range(10):
            r = cli(["-o", "json", "--config", config, "drill"], state)
            assert r.returncode == 0, f"drill {i}: {r.stderr[-3000:]}"
            last = json.loads(r.stdout)
            assert last["passed"] is True and last["schema"] == "rebuild.run/v1"
            assert processes_naming(state, cmdline_only=True) == {}, f"drill {i} left a process behind"
    finally:
        stop_servers(state)
    reports = {k: Path(v) for k, v in last["reports"].items()}
    assert set(reports) == {"json", "markdown", "junit", "html"} and all(p.exists() for p in reports.values())
    assert_example_phases([p["name"] for p in last["phases"]], then=("teardown",))
    assert last["objects"]["verified"] == EXAMPLE_OBJECTS and last["rto_seconds"] > 0
    suite = ET.parse(reports["junit"]).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) == 0 and int(suite.get("tests", "0")) >= 6
    history = (state / "drills" / "history.jsonl").read_text().splitlines()
    assert len(history) == 10
    html = reports["html"].read_text()
    assert "Trend of past drills" in html and "10 runs, 10 passed" in html
    assert processes_naming(state, cmdline_only=True) == {}


def test_drill_of_a_broken_revision_fails_tears_down_and_names_the_problem(tmp_path: Path, toolchain: Any) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    (repo / "apps/base/cart/widget.yaml").write_text(
        "apiVersion: widgets.example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\n"
    )
    kust = repo / "apps/base/cart/kustomization.yaml"
    kust.write_text(kust.read_text() + "  - widget.yaml\n")
    state = tmp_path / "state"
    try:
        r = cli(["-o", "json", "--config", str(repo / "rebuild.yaml"), "drill"], state)
    finally:
        stop_servers(state)
    assert r.returncode == 1, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["passed"] is False
    assert any(p["name"] == "teardown" and p["status"] == "ok" for p in res["phases"])
    assert not any((state / "clusters").glob("drill-*/cluster.json"))
    want = "apps/base/cart/widget.yaml:1"
    assert any(f["source"] == want and "Widget/shop/w" in f["message"] for f in res["failures"])
    for kind in ("markdown", "junit", "html"):
        text = Path(res["reports"][kind]).read_text()
        assert want in text and "Widget/shop/w" in text, kind
    assert processes_naming(state, cmdline_only=True) == {}


def _kill_mid_platform(repo: Path, state: Path, cluster: str) -> tuple[list[int], dict[str, int], Path]:
    """Run the full-rebuild runbook and SIGKILL it and its Pulumi engine in the middle of the
    platform step, once a pending operation is in the checkpoint; returns the engines killed,
    the pending operations left (empty: the window was missed) and the locks' folder."""
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rebuild.cli",
            "runbook",
            "run",
            str(REPO / "runbooks/full-rebuild.yaml"),
            "--param",
            f"config={repo / 'rebuild.yaml'}",
            "--yes",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    audit = state / "runbooks" / "audit.jsonl"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            events = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
            if any(e.get("step") == "platform" and e.get("event") in ("step-start", "start") for e in events):
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("the platform step never started")
        # In the middle of `pulumi up` of the platform stack: its lock is taken and, when the
        # engine is caught with operations in flight, its checkpoint lists them as pending.
        locks = state / "pulumi" / ".pulumi" / "locks" / "organization" / "rebuild-platform"
        deadline = time.monotonic() + 120
        while not list(locks.rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        engines = [pid for pid in process.children_of(proc.pid) if "pulumi" in Path(f"/proc/{pid}/cmdline").read_text("latin-1")]
        assert engines, "no pulumi CLI under the runbook"
        # The platform's operations take milliseconds each, too short to be caught reliably. The
        # API server is paused (SIGSTOP) so the operation in flight cannot finish: the checkpoint
        # keeps it pending until the kill; the server resumes (SIGCONT) right after.
        apiserver = next(c.pid for c in LocalCluster(cluster, root=state).status().components if c.name == "kube-apiserver")
        assert apiserver
        os.kill(apiserver, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 20
            while not pending_operations(state) and time.monotonic() < deadline:
                time.sleep(0.05)
            # kill -9 of the runbook and of its Pulumi engine (the CLI leads its own process
            # group): nothing of the run gets to clean up, as when the machine running it is lost.
            os.kill(proc.pid, signal.SIGKILL)
            for pid in engines:
                os.killpg(pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            os.kill(apiserver, signal.SIGCONT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return engines, pending_operations(state), locks


def test_runbook_killed_during_platform_step_resumes_without_redoing(tmp_path: Path, toolchain: Any) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    cluster_name = yaml.safe_load((repo / "rebuild.yaml").read_text())["cluster"]["name"]
    # The kill must land while the engine has an operation in flight: a run that misses it (no
    # operation pending within 20 s of the paused API server) is torn down and the scenario
    # re-armed on a new state dir, at most 3 times.
    tried: list[Path] = []
    try:
        for attempt in range(3):
            state = tmp_path / f"state-{attempt}"
            tried.append(state)
            engines, pending_before, locks = _kill_mid_platform(repo, state, cluster_name)
            if pending_before:
                break
            LocalCluster(cluster_name, root=state).delete(purge=True)
            stop_servers(state)
            print(f"attempt {attempt}: the engine was killed with no operation in flight; re-armed")
        else:
            pytest.fail("the engine was killed with no operation in flight in 3 attempts: nothing for resume to clear")
        audit = state / "runbooks" / "audit.jsonl"
        stale = list(locks.rglob("*.json"))
        assert stale, "the killed update left no lock: nothing for resume to clear"
        holders = [int(json.loads(lock.read_text())["pid"]) for lock in stale]
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in holders) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in holders:  # stale: its holder is dead
            assert not pid_alive(pid), (pid, Path(f"/proc/{pid}/cmdline").read_bytes(), engines)

        r = cli(["runbook", "resume", "latest", "--yes"], state)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        said = r.stdout + r.stderr
        assert "rebuild-platform: removed the lock of an interrupted update (pid " in said, said[-3000:]
        for stack, n in pending_before.items():
            assert f"dropped {n} pending operation(s) of the interrupted update" in said, (stack, said[-3000:])
        assert stack_locks(state) == [] and pending_operations(state) == {}
        deadline = time.monotonic() + 15  # the killed engine's plugins notice and exit
        while pulumi_processes(state) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pulumi_processes(state) == {}  # no process of the killed run or of the resume left
        events = [json.loads(x) for x in audit.read_text().splitlines()]
        starts = [e for e in events if e.get("event") in ("step-start", "start") and e.get("step")]
        per_step: dict[str, int] = {}
        for e in starts:
            per_step[e["step"]] = per_step.get(e["step"], 0) + 1
        assert per_step["cluster"] == 1 and per_step["preflight"] == 1 and per_step["plan"] == 1  # not redone
        assert per_step["stacks"] == 1  # the example's own infra stacks, before the platform
        assert per_step["platform"] == 2  # interrupted, then run again
        assert per_step["reconciler"] == 1 and per_step["verify"] == 1 and per_step["report"] == 1
        sessions = {e.get("session") or e.get("pid") for e in events}
        assert len(sessions) >= 2  # the audit log shows both runs
        report = next(state.glob("runbooks/runs/*/report/result.json"))
        result = json.loads(report.read_text())
        assert result["passed"] is True
        assert result["objects"]["verified"] == result["objects"]["objects"] == EXAMPLE_OBJECTS  # every object verified
        print(f"pending operations left by the killed update: {pending_before}")
    finally:
        for tried_state in tried:
            LocalCluster(cluster_name, root=tried_state).delete(purge=True)
            stop_servers(tried_state)
