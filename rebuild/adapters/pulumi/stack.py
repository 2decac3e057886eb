"""Drive the Pulumi programs in rebuild/programs/ through the Automation API, offline and predictably.

Why a wrapper: every call must use the toolchain's pulumi binary and plugins (no
downloads), a file backend under rebuild's state dir, a passphrase that never appears in
argv or logs, ``--non-interactive`` semantics, and errors that say what to do. The
Automation API raises a handful of generic exceptions with the CLI's stderr inside;
``classify`` turns them into rebuild's own error classes in one place (:mod:`.command`, with the
CLI runner); this module is the stack driver: workspace, config, up/preview/destroy, state repair.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi.automation as auto

from rebuild.adapters.fs import atomic_write
from rebuild.adapters.pulumi.command import Command, classify, strip_ansi
from rebuild.core.errors import (
    ConfigError,
    StackError,
    StackLockedError,
)
from rebuild.core.progress import Progress
from rebuild.core.state import StateLayout, state_root
from rebuild.toolchain.tools import Toolchain

# The built-in programs (cluster, platform): package data of rebuild.programs, so an installed
# wheel has them as a checkout does. stacks/<name>/ in a checkout are thin entry points to them.
STACKS_DIR = Path(__file__).resolve().parents[2] / "programs"
STALE_TMP_SECONDS = 2.0  # a backend .tmp older than this belongs to no write in progress


def _virtualenv() -> str | None:
    """The virtualenv of the Python running rebuild, None when it runs outside one."""
    return sys.prefix if sys.prefix != sys.base_prefix else None


@dataclass(frozen=True)
class StackResult:
    project: str
    stack: str
    action: str
    seconds: float
    summary: dict[str, int]
    outputs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "action": self.action,
            "seconds": round(self.seconds, 2),
            "summary": self.summary,
            "outputs": {k: ("[secret]" if v == "[secret]" else v) for k, v in self.outputs.items()},
        }


@dataclass
class Pulumi:
    """A file-backend Pulumi workspace rooted in rebuild's state dir."""

    root: Path = field(default_factory=state_root)
    toolchain: Toolchain = field(default_factory=Toolchain)

    @property
    def backend_dir(self) -> Path:
        return StateLayout(self.root).pulumi_backend

    @property
    def passphrase_file(self) -> Path:
        return self.backend_dir / "passphrase"

    def _ensure_backend(self) -> None:
        try:
            self.backend_dir.mkdir(parents=True, exist_ok=True)
            # Stack state holds encrypted secrets and the layout of the infrastructure: owner only.
            self.backend_dir.chmod(0o700)
            if not self.passphrase_file.exists():
                # Encrypts secret outputs (kubeconfigs) in the state files; 0600, never logged.
                atomic_write(self.passphrase_file, secrets.token_urlsafe(32))
        except OSError as exc:
            raise ConfigError(
                f"the Pulumi state folder {self.backend_dir} is not writable ({exc.strerror})",
                fix="set REBUILD_STATE_DIR (or --state-dir) to a writable folder",
            ) from exc

    def env(self) -> dict[str, str]:
        env = self.toolchain.env()
        env["PULUMI_BACKEND_URL"] = self.backend_dir.as_uri()
        env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(self.passphrase_file)
        env.pop("PULUMI_CONFIG_PASSPHRASE", None)
        # The programs and the cluster program's dynamic-provider plugin run with the Python that
        # runs rebuild (which has the rebuild package they import): its virtualenv when it has
        # one (the plugin reads PULUMI_RUNTIME_VIRTUALENV), else the interpreter itself.
        env["PULUMI_PYTHON_CMD"] = sys.executable
        venv = _virtualenv()
        if venv:
            env["PULUMI_RUNTIME_VIRTUALENV"] = venv
        else:
            env.pop("PULUMI_RUNTIME_VIRTUALENV", None)
        return env

    def workspace(self, project_dir: Path) -> Path:
        """A private copy of a program's Pulumi.yaml and entry under the state dir, where Pulumi
        may write its per-stack config files (Pulumi.<stack>.yaml, with encrypted secrets)
        without touching the user's checkout or the installed package, or colliding between
        state dirs. The program runs in rebuild's own Python (see ``env``), whatever virtualenv
        its Pulumi.yaml names for plain ``pulumi up``."""
        import yaml

        dest = StateLayout(self.root).stack_program(project_dir.name)
        dest.mkdir(parents=True, exist_ok=True)
        dest.parent.chmod(0o700)  # Pulumi.<stack>.yaml: encrypted secrets and the encryption salt
        for src in project_dir.iterdir():
            # Not the program's modules (resource.py would shadow the stdlib's `resource` on the
            # program's sys.path): __main__.py imports them from the rebuild package.
            if src.suffix == ".py" and src.name != "__main__.py":
                continue
            if src.is_file() and not re.match(r"Pulumi\..+\.ya?ml$", src.name):
                data = src.read_bytes()
                if src.name == "Pulumi.yaml":
                    doc = yaml.safe_load(data)
                    runtime = doc.get("runtime")
                    if isinstance(runtime, str):  # `runtime: python`
                        runtime = doc["runtime"] = {"name": runtime}
                    if isinstance(runtime, dict):
                        opts = runtime.get("options")
                        opts = opts if isinstance(opts, dict) else {}
                        opts.pop("virtualenv", None)
                        venv = _virtualenv()
                        if venv:
                            opts["virtualenv"] = venv
                        if opts:
                            runtime["options"] = opts
                        else:
                            runtime.pop("options", None)
                    data = yaml.safe_dump(doc, sort_keys=False).encode()
                target = dest / src.name
                if not target.exists() or target.read_bytes() != data:
                    target.write_bytes(data)
        return dest

    def repair_state_files(self, project: str, stack_name: str) -> list[str]:
        """Undo what a file-backend write cut short (kill -9, a full disk) leaves behind, before Pulumi reads it.

        Seen here: an empty ``<stack>.json.attrs`` sidecar (Pulumi then fails with "failed to
        load checkpoint: EOF"), and a checkpoint that is empty or not JSON (Pulumi: "could not
        create stack: unexpected end of JSON input"). The sidecar only holds blob metadata and
        is safe to drop. The checkpoint is restored from the newest whole copy Pulumi kept
        (``<stack>.json.bak``, then ``.pulumi/backups``); when there is none, the stack never
        finished its first write, so the broken file is moved aside (kept, never deleted) and
        the stack is created again; its resources are server-side applied, so objects that
        exist already are adopted, not duplicated.
        """
        fixed: list[str] = []
        stacks = self.backend_dir / ".pulumi" / "stacks" / project
        locks = self.backend_dir / ".pulumi" / "locks" / "organization" / project / stack_name
        # Pulumi writes each blob to `<name>.<random>.tmp`, then renames it; a write cut short
        # leaves the .tmp, which Pulumi later reads as a lock ("unexpected end of JSON input").
        # A live write holds its .tmp for milliseconds, so only older ones are removed.
        for tmp in sorted([*stacks.glob(f"{stack_name}.json*.tmp"), *locks.glob("*.tmp")]):
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
                    fixed.append(f"removed {tmp.name}, left by a write that was cut short")
        for attrs in sorted(stacks.glob(f"{stack_name}.json*.attrs")):
            if not _whole_json(attrs):
                attrs.unlink(missing_ok=True)
                fixed.append(f"removed the truncated {attrs.name}")
        checkpoint = stacks / f"{stack_name}.json"
        if not checkpoint.exists() or _whole_json(checkpoint):
            return fixed
        backups = sorted(
            (self.backend_dir / ".pulumi" / "backups" / project / stack_name).glob(f"{stack_name}.*.json"),
            key=lambda f: f.stat().st_mtime,
            reverse=True,
        )
        good = next((c for c in [stacks / f"{stack_name}.json.bak", *backups] if c.exists() and _whole_json(c)), None)
        if good is not None:
            shutil.copyfile(good, checkpoint)
            fixed.append(f"restored {checkpoint.name} from {good.name}")
        else:
            aside = checkpoint.with_name(f"{checkpoint.name}.broken-{int(time.time())}")
            checkpoint.rename(aside)
            checkpoint.with_name(checkpoint.name + ".attrs").unlink(missing_ok=True)
            fixed.append(f"moved the unreadable {checkpoint.name} (no whole copy exists) to {aside.name}")
        return fixed

    def stack(
        self, project_dir: Path, stack_name: str, config: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> auto.Stack:
        self._ensure_backend()
        for fixed in self.repair_state_files(_project_name(project_dir), stack_name):
            if progress:
                progress(f"{_project_name(project_dir)}: {fixed}")
        project_dir = self.workspace(project_dir)
        pulumi_bin = self.toolchain.binary("pulumi")
        self.toolchain.binary("pulumi-language-python")
        env = self.env()
        cmd = Command(root=str(pulumi_bin.parent.parent), skip_version_check=True)
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(project_dir),
            pulumi_home=str(self.toolchain.pulumi_home),
            env_vars=env,
            pulumi_command=cmd,
        )
        project = _project_name(project_dir)
        try:
            st = auto.create_or_select_stack(stack_name=stack_name, work_dir=str(project_dir), opts=opts)
            if config:
                self._set_config(st, _flatten_config(project, config), pulumi_bin, project_dir, env)
        except auto.errors.CommandError as exc:
            raise classify(exc, stack=stack_name, project=project) from exc
        return st

    def _set_config(
        self, st: auto.Stack, flat: dict[str, auto.ConfigValue], pulumi_bin: Path, work_dir: Path, env: dict[str, str]
    ) -> None:
        """Plain values in one ``pulumi config set-all``; each secret through stdin, never argv.

        Why: the Automation API passes every value as an argument (``set-all --secret
        key=value``), and /proc/<pid>/cmdline is world-readable; ``pulumi config set --secret
        KEY`` reads the value from stdin when stdin is not a terminal (one trailing newline
        is dropped, hence the one added). Found by tests/integration/test_secrets_audit.py.
        """
        plain = {k: v for k, v in flat.items() if not v.secret}
        if plain:
            st.set_all_config(plain, path=True)
        for key, value in flat.items():
            if not value.secret:
                continue
            argv = [str(pulumi_bin), "--non-interactive", "config", "set", "--stack", st.name, "--path", "--secret", key]
            proc = subprocess.run(
                argv,
                input=value.value + "\n",
                cwd=work_dir,
                env={**os.environ, "PULUMI_HOME": str(self.toolchain.pulumi_home), **env},
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                result = auto.CommandResult(stdout=proc.stdout, stderr=proc.stderr, code=proc.returncode)
                raise auto.errors.create_command_error(result)

    def _run(
        self,
        project_dir: Path,
        stack_name: str,
        action: str,
        config: Mapping[str, Any] | None,
        progress: Progress | None,
        refresh: bool = False,
    ) -> StackResult:
        project = _project_name(project_dir)
        st = self.stack(project_dir, stack_name, config, progress)
        self.recover_interrupted(st, project, stack_name, progress)

        def on_output(line: str) -> None:
            if progress and line.strip():
                progress(f"{project}: {strip_ansi(line.rstrip())}")

        t0 = time.monotonic()
        try:
            if action == "up":
                res = st.up(on_output=on_output, color="never", suppress_progress=True, refresh=refresh or None)
                summary = dict(res.summary.resource_changes or {})
            elif action == "preview":
                pres = st.preview(on_output=on_output, color="never", suppress_progress=True)
                summary = dict(pres.change_summary or {})
            elif action == "destroy":
                dres = st.destroy(on_output=on_output, color="never", suppress_progress=True)
                summary = dict(dres.summary.resource_changes or {})
            elif action == "refresh":
                rres = st.refresh(on_output=on_output, color="never", suppress_progress=True)
                summary = dict(rres.summary.resource_changes or {})
            else:
                raise ValueError(action)
            outputs = {k: ("[secret]" if v.secret else v.value) for k, v in st.outputs().items()} if action != "preview" else {}
        except auto.errors.CommandError as exc:
            err = classify(exc, stack=stack_name, project=project)
            if isinstance(err, StackLockedError):
                holders = self.lock_holders(project, stack_name)
                if holders:
                    err.message += f" ({'; '.join(holders)})"
            raise err from exc
        return StackResult(project, stack_name, action, time.monotonic() - t0, {k: int(v) for k, v in summary.items()}, outputs)

    def lock_holders(self, project: str, stack_name: str) -> list[str]:
        """Who holds the stack's lock, as people read it: pid, host, since when, still running or not."""
        locks = self.backend_dir / ".pulumi" / "locks" / "organization" / project / stack_name
        out = []
        for lock in sorted(locks.glob("*.json")):
            try:
                info = json.loads(lock.read_text())
                pid = int(info.get("pid", 0))
            except (OSError, ValueError, TypeError):
                continue
            host = str(info.get("hostname", "?"))
            here = host == socket.gethostname()
            state = ("still running" if _pid_alive(pid) else "no longer running") if here else "on another host"
            out.append(f"held by pid {pid} on {host} since {info.get('timestamp', '?')}, {state}; lock file {lock}")
        return out

    def recover_interrupted(self, st: auto.Stack, project: str, stack_name: str, progress: Progress | None = None) -> bool:
        """Clear what an update killed mid-way (kill -9, a lost machine) leaves behind.

        Its lock file names a pid on this host that no longer runs, and its checkpoint lists
        pending operations; both would block every later update. A lock held by a live
        process, or by another host, is left alone (that is a concurrent update: retry).
        The pending operations are dropped: the next update re-applies those resources
        (server-side apply adopts objects that were created meanwhile).
        """
        locks = self.backend_dir / ".pulumi" / "locks" / "organization" / project / stack_name
        removed = False
        for lock in sorted(locks.glob("*.json")):
            try:
                info = json.loads(lock.read_text())
                pid = int(info.get("pid", 0))
            except (OSError, ValueError, TypeError):
                continue
            if info.get("hostname") != socket.gethostname() or pid <= 0 or _pid_alive(pid):
                continue
            lock.unlink(missing_ok=True)
            lock.with_name(lock.name + ".attrs").unlink(missing_ok=True)
            removed = True
            if progress:
                progress(f"{project}: removed the lock of an interrupted update (pid {pid} is gone)")
        if not removed:
            return False
        try:
            dep = st.export_stack()
            state = dict(dep.deployment or {})
            pending = state.get("pending_operations")
            if pending:
                state["pending_operations"] = []
                st.import_stack(auto.Deployment(version=dep.version, deployment=state))
                if progress:
                    progress(f"{project}: dropped {len(pending)} pending operation(s) of the interrupted update")
        except auto.errors.CommandError as exc:
            raise classify(exc, stack=stack_name, project=project) from exc
        return True

    def up(
        self,
        project_dir: Path,
        stack_name: str,
        config: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        refresh: bool = False,
    ) -> StackResult:
        """`pulumi up`; with refresh, the state is first refreshed from reality (a stopped cluster is noticed)."""
        return self._run(project_dir, stack_name, "up", config, progress, refresh)

    def preview(
        self, project_dir: Path, stack_name: str, config: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> StackResult:
        return self._run(project_dir, stack_name, "preview", config, progress)

    def destroy(self, project_dir: Path, stack_name: str, progress: Progress | None = None) -> StackResult:
        return self._run(project_dir, stack_name, "destroy", None, progress)

    def remove(self, project_dir: Path, stack_name: str, *, force: bool = False) -> None:
        """Remove a stack; ``force`` drops its state even if it still lists resources (they
        must be gone another way, e.g. with the cluster they lived in)."""
        st = self.stack(project_dir, stack_name)
        try:
            st.workspace.remove_stack(stack_name, force=force or None)
        except auto.errors.CommandError as exc:
            raise classify(exc, stack=stack_name, project=_project_name(project_dir)) from exc

    def output(self, project_dir: Path, stack_name: str, name: str) -> Any:
        """One output, secrets included (for the caller's own use, never for printing)."""
        st = self.stack(project_dir, stack_name)
        try:
            outs = st.outputs()
        except auto.errors.CommandError as exc:
            raise classify(exc, stack=stack_name, project=_project_name(project_dir)) from exc
        if name not in outs:
            raise StackError(f"stack {stack_name} has no output {name!r}", fix="run `pulumi up` on it first")
        return outs[name].value


def _flatten_config(project: str, config: Mapping[str, Any]) -> dict[str, auto.ConfigValue]:
    """Config as Pulumi `--path` keys: lists and maps become structured values, not JSON strings."""
    out: dict[str, auto.ConfigValue] = {}

    def walk(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{key}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{key}[{i}]", v)
        else:
            out[key] = value if isinstance(value, auto.ConfigValue) else auto.ConfigValue(value=_scalar(value))

    for k, v in config.items():
        walk(k if ":" in k else f"{project}:{k}", v)
    return out


def _whole_json(path: Path) -> bool:
    try:
        json.loads(path.read_text() or "x")
    except (OSError, ValueError):
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _project_name(project_dir: Path) -> str:
    text = (project_dir / "Pulumi.yaml").read_text(encoding="utf-8")
    m = re.search(r"^name:\s*(\S+)", text, re.M)
    return m.group(1) if m else project_dir.name
