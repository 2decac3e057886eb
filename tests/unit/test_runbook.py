"""Runbooks: validation with file:line, Markdown, and the executor with real processes (no mocks).

The crash test kills a real executor process with SIGKILL in the middle of a step and
resumes in this process: completed steps must not run again, the interrupted one runs
again (after its orphaned command is stopped), and the audit log shows both sessions.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.process import ProcRecord, alive
from rebuild.core.errors import ConfigError
from rebuild.drills import runbook
from tests.conftest import REPO

# A step command that counts its own runs in a marker file (one 'x' per run).
COUNT = (
    "import pathlib, sys, time\n"
    "p = pathlib.Path(sys.argv[1])\n"
    "n = len(p.read_text()) if p.exists() else 0\n"
    "p.write_text('x' * (n + 1))\n"
    "print('run', n + 1, 'of', p.name, flush=True)\n"
    "time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 and n == 0 else 0)\n"
)


def count_step(step_id: str, marker_dir: Path, *, sleep_first: float = 0, **extra: Any) -> dict[str, Any]:
    argv = [sys.executable, "-c", COUNT, str(marker_dir / step_id)]
    if sleep_first:
        argv.append(str(sleep_first))
    return {"id": step_id, "title": f"step {step_id}", "run": {"argv": argv}, **extra}


def runs(marker_dir: Path, step_id: str) -> int:
    p = marker_dir / step_id
    return len(p.read_text()) if p.exists() else 0


def write_runbook(tmp_path: Path, steps: list[dict[str, Any]], params: dict[str, Any] | None = None, name: str = "t") -> Path:
    doc: dict[str, Any] = {"name": name, "description": "test runbook"}
    if params:
        doc["params"] = params
    doc["steps"] = steps
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def audit(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in runbook.audit_path(state).read_text().splitlines()]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    state, markers = tmp_path / "state", tmp_path / "markers"
    state.mkdir()
    markers.mkdir()
    return state, markers


# --------------------------------------------------------------------------- shipped runbooks


@pytest.mark.parametrize("name", ["full-rebuild", "drill", "capture"])
def test_shipped_runbooks_validate_and_render(name: str) -> None:
    rb = runbook.load(REPO / "runbooks" / f"{name}.yaml")
    assert rb.name == name and rb.steps
    md = runbook.render_markdown(rb)
    assert md.startswith(f"# Runbook: {name}")
    for i, step in enumerate(rb.steps, start=1):
        assert f"### {i}. {step.title}" in md
    assert {s.stage for s in rb.steps if s.stage} <= set(runbook.STAGE_NAMES)


def test_full_rebuild_gates_the_destructive_step() -> None:
    rb = runbook.load(REPO / "runbooks" / "full-rebuild.yaml")
    # the first step that creates infrastructure (the cluster phase) asks for confirmation
    cluster = [s for s in rb.steps if s.stage == "cluster"]
    assert cluster and all(s.confirm for s in cluster)
    assert "DESTRUCTIVE" in runbook.render_markdown(rb)


# --------------------------------------------------------------------------- validation


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: Bad Name
            steps:
              - id: one
                title: a shell string
                run: {argv: "kubectl delete ns prod"}
              - id: one
                title: duplicate id and unknown stage
                run: {stage: explode}
              - id: three
                run: {argv: [bash, -c, "rm -rf /"]}
              - id: four
                title: typo and bad timeout
                retyr: {attempts: 3}
                timeout: soon
                run: {argv: [echo, "${nope}"]}
              - id: five
                title: both kinds
                run: {stage: up, argv: [echo]}
                preconditions:
                  - {env: A, file_exists: b}
            """
        )
    )
    with pytest.raises(runbook.RunbookError) as err:
        runbook.load(path)
    msg = str(err.value)
    expected = [
        (1, "not a valid runbook name"),
        (5, "argv must be a list, not a string"),
        (6, "used twice"),
        (8, "unknown stage 'explode'"),
        (9, "title is required"),
        (10, "shell command line"),
        (13, "unknown key 'retyr'"),
        (14, "'soon' is not a duration"),
        (15, "${nope} is not a parameter"),
        (18, "exactly one of stage or argv"),
        (20, "exactly one of argv, file_exists, env"),
    ]
    for line, text in expected:
        assert any(ln.startswith(f"{path}:{line}:") and text in ln for ln in msg.splitlines()), (line, text, msg)
    assert "fix:" in msg and "did you mean 'retry'?" in msg


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsteps:\n  - id: a\n    title: [unclosed\n")
    with pytest.raises(runbook.RunbookError) as err:
        runbook.load(path)
    assert f"{path}:" in str(err.value) and "invalid YAML" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(runbook.RunbookError, match="does not exist"):
        runbook.load(tmp_path / "nope.yaml")


def test_params_required_unknown_and_substituted(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    path = write_runbook(
        tmp_path,
        [count_step("${which}", markers) | {"id": "only"}],
        params={"which": {"description": "marker name"}},
    )
    rb = runbook.load(path)
    with pytest.raises(ConfigError, match="parameter 'which' is required"):
        runbook.run(rb, state_dir=state, stages={})
    with pytest.raises(ConfigError, match="unknown parameter 'other'"):
        runbook.run(rb, state_dir=state, stages={}, params={"which": "a", "other": "b"})
    res = runbook.run(rb, state_dir=state, stages={}, params={"which": "chosen"})
    assert res.status == "succeeded"
    assert runs(markers, "chosen") == 1


# --------------------------------------------------------------------------- executing


def test_run_stages_and_commands_with_state_audit_and_logs(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    calls: list[dict[str, Any]] = []

    def up(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(params)
        return {"ok": True, "cluster": "demo", "rto_seconds": 1.5}

    def report(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(params)
        return {"ok": True, "seen": params["_context"]["outputs"]["rebuild"]["cluster"]}

    path = write_runbook(
        tmp_path,
        [
            count_step("first", markers),
            {"id": "rebuild", "title": "Rebuild", "run": {"stage": "up", "with": {"config": "${config}", "n": 2}}},
            {"id": "report", "title": "Report", "run": {"stage": "report"}},
        ],
        params={"config": {"default": "rebuild.yaml"}},
    )
    lines: list[str] = []
    res = runbook.run(runbook.load(path), state_dir=state, stages={"up": up, "report": report}, progress=lines.append)
    assert res.status == "succeeded" and res.exit_code == 0
    assert [s.status for s in res.steps] == ["succeeded"] * 3
    assert calls[0]["config"] == "rebuild.yaml" and calls[0]["n"] == 2
    assert calls[0]["_context"]["run_id"] == res.run_id
    assert calls[1]["_context"]["outputs"]["rebuild"]["rto_seconds"] == 1.5
    st = json.loads(Path(res.state_path).read_text())
    assert st["status"] == "succeeded" and st["runbook"]["sha256"] == runbook.load(path).sha256
    assert st["steps"][2]["output"] == {"ok": True, "seen": "demo"}
    log = Path(st["steps"][0]["log"])
    assert "run 1 of first" in log.read_text()
    events = [(e["event"], e.get("step")) for e in audit(state)]
    assert events == [
        ("run-start", None),
        ("step-start", "first"),
        ("step-end", "first"),
        ("step-start", "rebuild"),
        ("step-end", "rebuild"),
        ("step-start", "report"),
        ("step-end", "report"),
        ("run-end", None),
    ]
    first = audit(state)[0]
    assert first["user"] and first["host"] and first["runbook"] == "t" and first["runbook_sha256"] == runbook.load(path).sha256
    ends = [e for e in audit(state) if e["event"] == "step-end"]
    assert all(e["result"] == "ok" and e["duration_seconds"] >= 0 for e in ends)
    assert any("step 2/3 rebuild" in m for m in lines)


def test_dry_run_runs_nothing(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    called: list[str] = []
    path = write_runbook(
        tmp_path,
        [
            count_step("first", markers, preconditions=[{"env": "SURELY_NOT_SET_X"}]),
            {"id": "boom", "title": "Destroy", "confirm": True, "run": {"stage": "cluster-down", "with": {"purge": True}}},
        ],
    )

    def down(params: dict[str, Any]) -> dict[str, Any]:
        called.append("x")
        return {}

    res = runbook.run(runbook.load(path), state_dir=state, stages={"cluster-down": down}, dry_run=True)
    assert res.status == "dry-run" and res.exit_code == 0
    text = res.text()
    assert "would run:" in text and str(markers / "first") in text
    assert 'would run stage cluster-down with {"purge": true}' in text
    assert "CONFIRM" in text and "NEEDS --yes" in text
    assert "SURELY_NOT_SET_X" in text and "NOT set now" in text
    assert not called and runs(markers, "first") == 0
    assert not runbook.runs_dir(state).exists() and not runbook.audit_path(state).exists()


def test_confirm_without_yes_and_without_terminal_stops_at_once(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    path = write_runbook(
        tmp_path,
        [count_step("first", markers), count_step("destroy", markers, confirm=True)],
    )
    t0 = time.monotonic()
    with pytest.raises(runbook.ConfirmationRequired) as err:
        runbook.run(runbook.load(path), state_dir=state, stages={}, interactive=False)
    assert time.monotonic() - t0 < 5
    assert "destroy" in str(err.value) and "--yes" in str(err.value)
    assert runs(markers, "first") == 0 and runs(markers, "destroy") == 0


def test_confirm_in_a_real_process_without_a_tty_does_not_hang(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    path = write_runbook(tmp_path, [count_step("destroy", markers, confirm=True)])
    script = (
        "import sys\nfrom pathlib import Path\nfrom rebuild.drills import runbook\n"
        "try:\n"
        "    runbook.run(runbook.load(sys.argv[1]), state_dir=Path(sys.argv[2]), stages={}, interactive=sys.stdin.isatty())\n"
        "except runbook.ConfirmationRequired as e:\n"
        "    print('error:', e, file=sys.stderr); sys.exit(2)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), str(state)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "needs confirmation" in proc.stderr or "need confirmation" in proc.stderr
    assert runs(markers, "destroy") == 0


def test_confirm_prompt_declined_then_resumed_with_yes(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    path = write_runbook(
        tmp_path,
        [count_step("first", markers), count_step("destroy", markers, confirm=True), count_step("last", markers)],
    )
    questions: list[str] = []

    def no(q: str) -> bool:
        questions.append(q)
        return False

    with pytest.raises(runbook.ConfirmationDeclined):
        runbook.run(runbook.load(path), state_dir=state, stages={}, interactive=True, prompt=no)
    assert questions and "destructive" in questions[0]
    assert (runs(markers, "first"), runs(markers, "destroy"), runs(markers, "last")) == (1, 0, 0)
    res = runbook.resume(state, "latest", stages={}, yes=True)
    assert res.status == "succeeded"
    assert (runs(markers, "first"), runs(markers, "destroy"), runs(markers, "last")) == (1, 1, 1)
    confirms = [e for e in audit(state) if e["event"] == "confirm"]
    assert [c["result"] for c in confirms] == ["declined", "approved"]
    assert confirms[1]["by"] == "--yes"


def test_failed_step_is_rerun_on_resume_but_completed_ones_are_not(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    flag = tmp_path / "fixed"
    fail_unless = f"import pathlib, sys\nsys.exit(0 if pathlib.Path({str(flag)!r}).exists() else 3)"
    path = write_runbook(
        tmp_path,
        [
            count_step("first", markers),
            {"id": "flaky", "title": "needs a fix", "run": {"argv": [sys.executable, "-c", fail_unless]}},
            count_step("last", markers),
        ],
    )
    res = runbook.run(runbook.load(path), state_dir=state, stages={})
    assert res.status == "failed" and res.exit_code == 1
    assert "exited 3" in res.steps[1].error and res.steps[2].status == "pending"
    assert "runbook resume" in res.text()
    flag.touch()
    res2 = runbook.resume(state, res.run_id, stages={})
    assert res2.status == "succeeded" and res2.session == 2
    assert runs(markers, "first") == 1 and runs(markers, "last") == 1


def test_retry_policy_retries_then_succeeds(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    third_time = (
        "import pathlib, sys\np = pathlib.Path(sys.argv[1])\nn = len(p.read_text()) if p.exists() else 0\n"
        "p.write_text('x' * (n + 1))\nsys.exit(0 if n >= 2 else 1)"
    )
    path = write_runbook(
        tmp_path,
        [
            {
                "id": "flaky",
                "title": "t",
                "retry": {"attempts": 3, "delay": 0},
                "run": {"argv": [sys.executable, "-c", third_time, str(markers / "f")]},
            }
        ],
    )
    res = runbook.run(runbook.load(path), state_dir=state, stages={})
    assert res.status == "succeeded" and res.steps[0].attempts == 3
    assert len([e for e in audit(state) if e["event"] == "step-retry"]) == 2


def test_timeout_stops_the_command_and_its_children(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    pidfile = markers / "grandchild.pid"
    spawn = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    path = write_runbook(
        tmp_path, [{"id": "slow", "title": "t", "timeout": "3s", "run": {"argv": [sys.executable, "-c", spawn]}}]
    )
    t0 = time.monotonic()
    res = runbook.run(runbook.load(path), state_dir=state, stages={})
    assert time.monotonic() - t0 < 15
    assert res.status == "failed" and "timed out after 3s" in res.steps[0].error
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_preconditions_block_the_step(tmp_path: Path, dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    state, markers = dirs
    monkeypatch.delenv("REBUILD_TEST_PRE", raising=False)
    path = write_runbook(
        tmp_path,
        [
            count_step(
                "a", markers, preconditions=[{"file_exists": "${runbook_dir}/t.yaml"}, {"argv": [sys.executable, "-c", "pass"]}]
            ),
            count_step("b", markers, preconditions=[{"env": "REBUILD_TEST_PRE"}]),
        ],
    )
    res = runbook.run(runbook.load(path), state_dir=state, stages={})
    assert res.status == "failed" and runs(markers, "a") == 1 and runs(markers, "b") == 0
    assert "REBUILD_TEST_PRE is not set" in res.steps[1].error
    monkeypatch.setenv("REBUILD_TEST_PRE", "1")
    assert runbook.resume(state, stages={}).status == "succeeded"
    failing = write_runbook(
        tmp_path, [count_step("c", markers, preconditions=[{"argv": [sys.executable, "-c", "raise SystemExit(4)"]}])], name="u"
    )
    res = runbook.run(runbook.load(failing), state_dir=state, stages={})
    assert res.status == "failed" and "exited 4" in res.steps[0].error and runs(markers, "c") == 0


def test_stage_failures_are_recorded_not_raised(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, _ = dirs

    def not_converged(params: dict[str, Any]) -> dict[str, Any]:
        return {"converged": False, "message": "3 objects missing"}

    def buggy(params: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("oops")

    def drill_ran(params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "passed": False}  # ok decides: the drill ran, its verdict goes to the report step

    path = write_runbook(tmp_path, [{"id": "v", "title": "verify", "run": {"stage": "verify"}}])
    assert runbook.run(runbook.load(path), state_dir=state, stages={"verify": drill_ran}).status == "succeeded"
    res = runbook.run(runbook.load(path), state_dir=state, stages={"verify": not_converged})
    assert res.status == "failed" and res.steps[0].error == "3 objects missing"
    res = runbook.run(runbook.load(path), state_dir=state, stages={"verify": buggy})
    assert res.status == "failed" and "ZeroDivisionError: oops" in res.steps[0].error
    assert "Traceback" in Path(res.steps[0].log).read_text()


def test_unknown_stage_at_run_time_names_the_line(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    path = write_runbook(tmp_path, [{"id": "v", "title": "verify", "run": {"stage": "verify"}}])
    with pytest.raises(runbook.RunbookError, match=r"t\.yaml:4: step v uses stage 'verify'"):
        runbook.run(runbook.load(path), state_dir=state, stages={"up": lambda p: {}})


def test_resume_refuses_a_changed_runbook_and_a_locked_run(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    flag = tmp_path / "go"
    gate = f"import pathlib, sys\nsys.exit(0 if pathlib.Path({str(flag)!r}).exists() else 1)"
    path = write_runbook(
        tmp_path, [count_step("a", markers), {"id": "b", "title": "t", "run": {"argv": [sys.executable, "-c", gate]}}]
    )
    res = runbook.run(runbook.load(path), state_dir=state, stages={})
    assert res.status == "failed"
    with (Path(res.state_path).parent / "lock").open("w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(runbook.RunStateError, match="being executed by another process"):
            runbook.resume(state, res.run_id, stages={})
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(runbook.RunStateError, match="changed since run"):
        runbook.resume(state, res.run_id, stages={})
    flag.touch()
    assert runbook.resume(state, res.run_id, stages={}, allow_changed=True).status == "succeeded"
    assert runs(markers, "a") == 1
    with pytest.raises(runbook.RunStateError, match="matches no run"):
        runbook.resume(state, "nope", stages={})


def test_kill_9_mid_step_then_resume_finishes_without_redoing_completed_steps(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    state, markers = dirs
    path = write_runbook(
        tmp_path,
        [
            count_step("one", markers),
            count_step("two", markers, sleep_first=60, title="platform (slow the first time)"),
            count_step("three", markers),
            count_step("four", markers),
        ],
        name="crash",
    )
    script = (
        "import sys\nfrom pathlib import Path\nfrom rebuild.drills import runbook\n"
        "runbook.run(runbook.load(sys.argv[1]), state_dir=Path(sys.argv[2]), stages={}, yes=True, progress=print)\n"
    )
    executor = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(state)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while runs(markers, "two") == 0:
            assert executor.poll() is None, "the executor ended before step two started"
            assert time.monotonic() < deadline, "step two never started"
            time.sleep(0.05)
        os.kill(executor.pid, signal.SIGKILL)
        assert executor.wait(timeout=10) == -signal.SIGKILL
    finally:
        if executor.poll() is None:
            executor.kill()
            executor.wait()
    run_dir = runbook.find_run(state, "latest")
    before = json.loads((run_dir / "state.json").read_text())
    assert [s["status"] for s in before["steps"]] == ["succeeded", "running", "pending", "pending"]
    orphan = ProcRecord("two", before["steps"][1]["child"]["pid"], before["steps"][1]["child"]["start_ticks"], "")
    assert alive(orphan), "the killed executor's command should still be sleeping"

    res = runbook.resume(state, "latest", stages={}, yes=True)

    assert res.status == "succeeded" and res.session == 2
    assert (runs(markers, "one"), runs(markers, "two"), runs(markers, "three"), runs(markers, "four")) == (1, 2, 1, 1)
    assert not alive(orphan), "the orphaned command of the killed session must be stopped before the step re-runs"
    events = audit(state)
    starts = [(e["session"], e["event"]) for e in events if e["event"] in ("run-start", "run-resume")]
    assert starts == [(1, "run-start"), (2, "run-resume")]
    assert len({e["pid"] for e in events if e["event"] in ("run-start", "run-resume")}) == 2
    step_starts = [(e["session"], e["step"]) for e in events if e["event"] == "step-start"]
    assert step_starts == [(1, "one"), (1, "two"), (2, "two"), (2, "three"), (2, "four")]
    assert not any(e["event"] == "step-end" and e["session"] == 1 and e["step"] == "two" for e in events)
    after = json.loads((run_dir / "state.json").read_text())
    assert [s["session"] for s in after["sessions"]] == [1, 2]
    assert after["steps"][0]["session"] == 1 and after["steps"][1]["session"] == 2
