"""One session of a run: lock, state file, audit events, confirmation, preconditions, retries, processes.

Why a module of its own: this is the part that touches the world (argv steps run as real
processes in their own process group, stages are called), and the part whose guarantees
matter after a crash: the state file is written atomically before and after each step, the
audit log is fsync'ed, and a command left running by a killed executor is stopped before its
step runs again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rebuild.adapters.fs import atomic_write
from rebuild.adapters.process import ProcRecord, alive, start_ticks, tail
from rebuild.core.errors import Interrupted, RebuildError
from rebuild.core.procgroup import stop_group
from rebuild.core.progress import Progress
from rebuild.core.retry import GaveUp, Retryable, RetryEvent, RetryPolicy, retry
from rebuild.drills.history import append_jsonl
from rebuild.drills.runbook.model import (
    DEFAULT_ARGV_TIMEOUT,
    ConfirmationDeclined,
    ConfirmationRequired,
    Prompt,
    Runbook,
    RunStateError,
    Stage,
    Step,
    resolve,
)
from rebuild.drills.runbook.render import duration_text
from rebuild.drills.runbook.state import RunResult, StepResult, audit_path, utc_now, who

PRECONDITION_TIMEOUT = 60.0
_STEP_RETRY_LINE = "{operation}: attempt #{failures}/{attempts} failed; will retry in {delay:g}s: {error}"


def _stage_failed(out: dict[str, Any]) -> str:
    """A stage fails by raising, or by returning ``ok: false``; without ``ok``, ``passed``/``converged: false`` fail it.

    ``ok`` decides alone when present, so a stage can succeed while reporting a failed
    verdict (the drill stage: the run goes on to write the reports of a failed drill).
    """
    keys = ("ok",) if "ok" in out else ("passed", "converged")
    for key in keys:
        if out.get(key) is False:
            return str(out.get("message") or out.get("error") or f"stage reported {key}: false")
    return ""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Executor:
    """One session of a run: owns the run's lock, its state file and its audit events."""

    def __init__(
        self,
        rb: Runbook,
        state: dict[str, Any],
        run_dir: Path,
        state_dir: Path,
        *,
        stages: Mapping[str, Stage],
        yes: bool,
        can_prompt: bool,
        prompt: Prompt,
        progress: Progress,
    ) -> None:
        self.rb = rb
        self.state = state
        self.run_dir = run_dir
        self.state_dir = state_dir
        self.stages = stages
        self.yes = yes
        self.can_prompt = can_prompt
        self.prompt = prompt
        self.say = progress
        self.audit_file = audit_path(state_dir)
        self.who = who()
        self.session = len(state["sessions"]) + 1
        self.lock_fd = -1

    # -- persistence
    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    def save(self) -> None:
        self.state["updated_at"] = utc_now()
        atomic_write(self.state_path, json.dumps(self.state, indent=2, ensure_ascii=False, default=str) + "\n")

    def audit(self, event: str, **fields: Any) -> None:
        record = {
            "ts": utc_now(),
            "event": event,
            "run_id": self.state["run_id"],
            "session": self.session,
            "pid": os.getpid(),
            **self.who,
            "runbook": self.rb.name,
            "runbook_path": str(self.rb.path),
            "runbook_sha256": self.rb.sha256,
            **{k: v for k, v in self.state["runbook"].items() if k.startswith("git_")},
            **fields,
        }
        append_jsonl(self.audit_file, record, what="the runbook audit log")

    def lock(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            holder = (self.state.get("sessions") or [{}])[-1].get("pid", "?")
            raise RunStateError(
                f"run {self.state['run_id']} is being executed by another process (pid {holder})",
                fix="wait for it to finish, or stop that process before resuming",
            ) from exc
        self.lock_fd = fd

    def unlock(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    # -- the run
    def result(self, error: str = "") -> RunResult:
        return RunResult(
            run_id=self.state["run_id"],
            runbook=self.rb.name,
            path=str(self.rb.path),
            status=self.state["status"],
            steps=[
                StepResult(
                    s["id"],
                    s["title"],
                    s["status"],
                    int(s.get("attempts", 0)),
                    float(s.get("seconds", 0.0)),
                    s.get("error", ""),
                    s.get("log", ""),
                    int(s.get("session", 0)),
                )
                for s in self.state["steps"]
            ],
            state_path=str(self.state_path),
            audit_path=str(self.audit_file),
            session=self.session,
            error=error,
        )

    def execute(self, *, resumed: bool) -> RunResult:
        self.lock()
        try:
            self._stop_orphans()
            self.state["status"] = "running"
            self.state["sessions"].append({"session": self.session, "pid": os.getpid(), "started_at": utc_now(), **self.who})
            self.save()
            self.audit("run-resume" if resumed else "run-start", params=self.state["params"], resumed=resumed)
            done = [s["id"] for s in self.state["steps"] if s["status"] == "succeeded"]
            if resumed and done:
                self.say(f"resuming run {self.state['run_id']}: {len(done)} step(s) already done ({', '.join(done)})")
            total = len(self.rb.steps)
            for index, step in enumerate(self.rb.steps):
                st = self.state["steps"][index]
                if st["status"] == "succeeded":
                    continue
                try:
                    ok = self._step(index, total, step, st)
                except (ConfirmationRequired, ConfirmationDeclined) as err:
                    self._finish("stopped", str(err))
                    raise
                except KeyboardInterrupt:
                    self._finish("stopped", "interrupted")
                    raise
                if not ok:
                    self._finish("failed", st["error"])
                    return self.result(st["error"])
            self._finish("succeeded", "")
            return self.result()
        finally:
            self.unlock()

    def _finish(self, status: str, error: str) -> None:
        self.state["status"] = status
        self.state["sessions"][-1]["finished_at"] = utc_now()
        self.state["sessions"][-1]["status"] = status
        self.save()
        self.audit("run-end", result=status, error=error)

    def _stop_orphans(self) -> None:
        """A command left running by a killed executor is stopped before its step runs again."""
        for st in self.state["steps"]:
            child = st.get("child")
            if not child:
                continue
            rec = ProcRecord(st["id"], int(child["pid"]), int(child["start_ticks"]), "")
            if alive(rec):
                self.say(f"step {st['id']}: stopping pid {rec.pid}, left running by the interrupted session")
                stop_group(rec.pid)
                deadline = time.monotonic() + 10
                while alive(rec) and time.monotonic() < deadline:
                    time.sleep(0.05)
            st["child"] = None

    def _confirm(self, step: Step) -> None:
        if self.yes:
            self.audit("confirm", step=step.id, result="approved", by="--yes")
            return
        if not self.can_prompt:
            self.audit("confirm", step=step.id, result="required", by="no terminal")
            raise ConfirmationRequired(
                f"step {step.id} ({self.rb.path.name}:{step.line}) is destructive and needs confirmation, "
                "but there is no terminal to ask on",
                fix="re-run with --yes to approve it, or run from a terminal",
            )
        ok = self.prompt(f"Step {step.id}: {step.title}\n  runs {step.action()}\n  This step is destructive. Run it? [y/N] ")
        self.audit("confirm", step=step.id, result="approved" if ok else "declined", by=self.who["user"])
        if not ok:
            raise ConfirmationDeclined(
                f"step {step.id} was not confirmed; it and the steps after it did not run",
                fix=f"rebuild runbook resume {self.state['run_id']} when ready",
            )

    def _step(self, index: int, total: int, step: Step, st: dict[str, Any]) -> bool:
        label = f"step {index + 1}/{total} {step.id}"
        if step.confirm:
            self._confirm(step)
        st.update(status="running", session=self.session, started_at=utc_now(), finished_at="", error="", attempts=0)
        self.audit("step-start", step=step.id, step_index=index + 1, kind=step.kind, action=st["action"])
        self.save()
        self.say(f"{label}: {step.title}")
        t0 = time.monotonic()
        try:
            ok, error, output = self._attempts(index, step, st, label)
        except KeyboardInterrupt:
            st.update(status="failed", error="interrupted", seconds=round(time.monotonic() - t0, 3), finished_at=utc_now())
            self.save()
            self.audit("step-end", step=step.id, step_index=index + 1, result="interrupted", duration_seconds=st["seconds"])
            raise
        seconds = round(time.monotonic() - t0, 3)
        st.update(status="succeeded" if ok else "failed", error=error, seconds=seconds, finished_at=utc_now(), output=output)
        self.save()
        self.audit(
            "step-end",
            step=step.id,
            step_index=index + 1,
            result="ok" if ok else "failed",
            duration_seconds=seconds,
            attempts=st["attempts"],
            error=error,
        )
        self.say(f"{label}: {'ok' if ok else 'FAILED'} in {seconds:.1f}s" + (f": {error.splitlines()[0]}" if error else ""))
        return ok

    def _values(self) -> dict[str, str]:
        return {
            **self.state["params"],
            "run_id": self.state["run_id"],
            "state_dir": str(self.state_dir),
            "runbook_dir": str(self.rb.path.parent),
        }

    def _preconditions(self, step: Step) -> str:
        values = self._values()
        cwd = Path(self.state["cwd"])
        for pre in step.preconditions:
            if pre.kind == "env":
                if not os.environ.get(pre.value):
                    return f"precondition not met: environment variable {pre.value} is not set (line {pre.line})"
            elif pre.kind == "file_exists":
                target = cwd / resolve(pre.value, values)
                if not target.exists():
                    return f"precondition not met: {target} does not exist (line {pre.line})"
            else:
                argv = [str(a) for a in resolve(list(pre.argv), values)]
                try:
                    proc = subprocess.run(
                        argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PRECONDITION_TIMEOUT, check=False
                    )
                except FileNotFoundError:
                    return f"precondition not met: program {argv[0]!r} not found (line {pre.line})"
                except subprocess.TimeoutExpired:
                    return f"precondition not met: `{shlex.join(argv)}` did not finish in {PRECONDITION_TIMEOUT:.0f}s"
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()[-3:]
                    return f"precondition not met: `{shlex.join(argv)}` exited {proc.returncode}" + (
                        f": {' / '.join(tail)}" if tail else ""
                    )
        return ""

    def _attempts(self, index: int, step: Step, st: dict[str, Any], label: str) -> tuple[bool, str, dict[str, Any]]:
        problem = self._preconditions(step)
        if problem:
            return False, problem, {}

        def attempt(n: int) -> dict[str, Any]:
            st["attempts"] = n
            log = self.run_dir / "logs" / f"{index + 1:02d}-{step.id}.s{self.session}.a{n}.log"
            st["log"] = str(log)
            self.save()
            if step.argv:
                error, output = self._run_argv(step, st, log, n), dict[str, Any]()
            else:
                error, output = self._run_stage(step, log, n)
            if error:
                raise Retryable(error, result=output)
            return output

        def retrying(event: RetryEvent) -> None:
            self.say(event.line(_STEP_RETRY_LINE))
            self.audit("step-retry", step=step.id, attempt=event.attempt, error=event.error)

        # The runbook's ``retry:`` (user data: attempts, a fixed delay) on the project's one loop.
        delay = step.retry.delay
        policy = RetryPolicy(attempts=step.retry.attempts, backoff_base=delay, backoff_max=delay, max_wait=None)
        try:
            return True, "", retry(attempt, policy, operation=label, on_retry=retrying)
        except GaveUp as gave:
            output: dict[str, Any] = gave.result
            return False, gave.error, output

    def _run_stage(self, step: Step, log: Path, attempt: int) -> tuple[str, dict[str, Any]]:
        fn = self.stages[step.stage]
        params = resolve(step.with_, self._values())
        outputs = {s["id"]: s.get("output") or {} for s in self.state["steps"] if s["status"] == "succeeded"}
        params["_context"] = {
            "run_id": self.state["run_id"],
            "step": step.id,
            "attempt": attempt,
            "state_dir": str(self.state_dir),
            "run_dir": str(self.run_dir),
            "timeout": step.timeout,
            "outputs": outputs,
        }
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = fn(params)
        except Interrupted:
            raise KeyboardInterrupt from None  # the run stops (resumable); it is not a failed attempt
        except RebuildError as err:
            log.write_text(f"stage {step.stage} failed: {err}\n", encoding="utf-8")
            return str(err), {}
        except Exception as exc:  # a stage bug must not leave the run state inconsistent
            log.write_text(traceback.format_exc(), encoding="utf-8")
            return f"stage {step.stage} raised {type(exc).__name__}: {exc} (traceback in {log})", {}
        out = _jsonable(raw if isinstance(raw, dict) else {"value": raw})
        log.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return _stage_failed(out), out

    def _run_argv(self, step: Step, st: dict[str, Any], log: Path, attempt: int) -> str:
        argv = [str(a) for a in resolve(list(step.argv), self._values())]
        if argv and argv[0] == "rebuild":
            # The same rebuild that runs the runbook (its virtualenv may not be on PATH).
            argv = [sys.executable, "-m", "rebuild.cli", *argv[1:]]
        timeout = step.timeout if step.timeout is not None else DEFAULT_ARGV_TIMEOUT
        env = {
            **os.environ,
            "REBUILD_RUNBOOK_RUN_ID": self.state["run_id"],
            "REBUILD_RUNBOOK_STEP": step.id,
            "REBUILD_RUNBOOK_ATTEMPT": str(attempt),
        }
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.state["cwd"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: a timeout stops its children too
                )
            except FileNotFoundError:
                return f"program {argv[0]!r} not found (check PATH)"
            except OSError as exc:
                return f"`{argv[0]}` could not be started: {exc.strerror}"
            st["child"] = {"pid": proc.pid, "start_ticks": start_ticks(proc.pid)}
            self.save()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(proc.pid, proc)
                proc.wait()
                st["child"] = None
                return f"timed out after {duration_text(timeout)}; output in {log}"
            except BaseException:
                stop_group(proc.pid, proc)
                proc.wait()
                st["child"] = None
                raise
            st["child"] = None
        if rc != 0:
            last = tail(log, 5).replace("\n", " / ")
            return f"`{shlex.join(argv)}` exited {rc}" + (f": {last}" if last else "") + f" (log: {log})"
        return ""
