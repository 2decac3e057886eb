"""Drive Pulumi programs through the Automation API, offline and predictably.

Why a wrapper: every call must use the toolchain's pulumi binary and plugins (no downloads), one
backend per rebuild (:mod:`.backend`: the state dir's file backend by default), a passphrase that
never appears in argv or logs, ``--non-interactive`` semantics, and errors that say what to do.
The Automation API raises a handful of generic exceptions with the CLI's stderr inside;
``classify`` turns them into rebuild's own error classes in one place (:mod:`.command`, with the
CLI runner). This module is the stack driver: workspace, config, up/preview/destroy, outputs.
It runs the built-in programs of rebuild/programs/ (with rebuild's own Python) and the user's
own projects (:class:`~.project.UserProject`: a copy of their folder, with the virtualenv of
their requirements.txt or the YAML language host, see :mod:`.project`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi.automation as auto

from rebuild.adapters.pulumi import filestate
from rebuild.adapters.pulumi.backend import Backend, restore_stack_settings
from rebuild.adapters.pulumi.command import Command, child_env, classify, strip_ansi
from rebuild.adapters.pulumi.project import (
    UserProject,
    check_runtime,
    ensure_venv,
    load_project,
    project_file,
    requirements_file,
    sync_copy,
    venv_python,
    workspace_project_doc,
)
from rebuild.adapters.pulumi.tmpdir import pulumi_tmp_env
from rebuild.core.errors import ConfigError, StackError, StackLockedError, ToolchainError
from rebuild.core.progress import Progress
from rebuild.core.state import state_root
from rebuild.toolchain.tools import Toolchain

# The built-in programs (cluster, platform): package data of rebuild.programs, so an installed
# wheel has them as a checkout does. stacks/<name>/ in a checkout are thin entry points to them.
STACKS_DIR = Path(__file__).resolve().parents[2] / "programs"
STALE_TMP_SECONDS = filestate.STALE_TMP_SECONDS
# What a preview calls out: the steps that lose a resource (replace it, or delete it).
DESTRUCTIVE_OPS = ("replace", "create-replacement", "delete", "delete-replaced", "discard", "discard-replaced")

Project = Path | UserProject  # a built-in program's folder, or a user's project


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
    # preview only: the resources that would be replaced or deleted ({op, urn, type, name})
    steps: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "action": self.action,
            "seconds": round(self.seconds, 2),
            "summary": self.summary,
            "outputs": {k: ("[secret]" if v == "[secret]" else v) for k, v in self.outputs.items()},
            "steps": [dict(s) for s in self.steps],
        }


@dataclass(frozen=True)
class Prepared:
    """A project ready to run: its private copy, and how its program runs."""

    workspace: Path
    project: str  # the Pulumi project name (Pulumi.yaml `name`)
    runtime: str  # python | yaml
    entry: str = ""  # the rebuild.yaml stack name of a user's project ("" for the built-ins)
    source: Path | None = None  # the user's folder the copy was made from
    venv: Path | None = None  # the user's Python program's virtualenv (None: rebuild's own Python)


@dataclass
class Pulumi:
    """Pulumi workspaces rooted in rebuild's state dir, on one backend (default: the state dir's file backend)."""

    root: Path = field(default_factory=state_root)
    toolchain: Toolchain = field(default_factory=Toolchain)
    backend: Backend | None = None

    @property
    def _backend(self) -> Backend:
        return self.backend if self.backend is not None else Backend()

    @property
    def backend_dir(self) -> Path | None:
        """The file backend's folder; None for any other backend."""
        return self._backend.folder(self.root)

    @property
    def passphrase_file(self) -> Path | None:
        return self._backend.passphrase_path(self.root)

    @property
    def workspaces(self) -> Path:
        """Where this backend's private program copies live (see :meth:`Backend.workspaces`)."""
        return self._backend.workspaces(self.root)

    def _ensure_backend(self) -> None:
        self._backend.ensure(self.root)

    def env(self, prepared: Prepared | None = None) -> dict[str, str]:
        """The pulumi CLI's environment: the toolchain's, the backend's, and the program's Python.

        The built-in programs and the cluster program's dynamic-provider plugin run with the
        Python that runs rebuild (which has the rebuild package they import): its virtualenv when
        it has one (the plugin reads PULUMI_RUNTIME_VIRTUALENV), else the interpreter itself. A
        user's Python program runs in the virtualenv of its requirements.txt instead.
        """
        env = self.toolchain.env()
        env.pop("PULUMI_CONFIG_PASSPHRASE", None)
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        env.update(self._backend.env(self.root))
        # pulumi-kubernetes leaves a copy of its kubeconfig in TMPDIR at every configure (tmpdir.py)
        env.update(pulumi_tmp_env(self.root))
        if prepared is not None and prepared.entry:
            # After a disaster the cluster a user stack's Kubernetes resources were recorded in is
            # gone, and the refresh reaches it with the provider config in the state (the old
            # address): unreachable. Its resources then leave the state, and the up recreates them
            # in the new cluster (server-side apply adopts any that exist). The built-in platform
            # program sets the same on its provider (deleteUnreachable).
            env["PULUMI_K8S_DELETE_UNREACHABLE"] = "true"
            if prepared.venv is not None:
                env["PULUMI_PYTHON_CMD"] = str(venv_python(prepared.venv))
                env["PULUMI_RUNTIME_VIRTUALENV"] = str(prepared.venv)
            else:
                env.pop("PULUMI_PYTHON_CMD", None)
                env.pop("PULUMI_RUNTIME_VIRTUALENV", None)
            return env
        env["PULUMI_PYTHON_CMD"] = sys.executable
        venv = _virtualenv()
        if venv:
            env["PULUMI_RUNTIME_VIRTUALENV"] = venv
        else:
            env.pop("PULUMI_RUNTIME_VIRTUALENV", None)
        return env

    def workspace(self, project_dir: Path) -> Path:
        """A private copy of a built-in program's Pulumi.yaml and entry under the state dir, where
        Pulumi may write its per-stack config files (Pulumi.<stack>.yaml, with encrypted secrets)
        without touching the user's checkout or the installed package, or colliding between
        state dirs or backends. The program runs in rebuild's own Python (see ``env``), whatever
        virtualenv its Pulumi.yaml names for plain ``pulumi up``."""
        import yaml

        dest = self.workspaces / project_dir.name
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
                    venv = _virtualenv()
                    doc = workspace_project_doc(doc, "python", Path(venv) if venv else None)
                    data = yaml.safe_dump(doc, sort_keys=False).encode()
                _write_if_changed(dest / src.name, data)
        return dest

    def user_workspace(self, project: UserProject, progress: Progress | None = None) -> Prepared:
        """A user's project copied under the state dir (per backend), with its runtime ready.

        Python: the virtualenv of its requirements.txt (built once, cached by its hash) named in
        the copy's Pulumi.yaml; YAML: the toolchain's YAML language host must be installed.
        """
        import yaml

        src = project.dir
        doc = load_project(src)
        pfile = project_file(src)
        runtime = check_runtime(project.name, doc, pfile)
        dest = self.workspaces / "user" / project.name
        dest.mkdir(parents=True, exist_ok=True)
        dest.parent.parent.chmod(0o700)  # Pulumi.<stack>.yaml: encrypted secrets and the encryption salt
        sync_copy(src, dest)
        venv: Path | None = None
        if runtime == "python":
            shown = requirements_file(project.name, src)
            venv = ensure_venv(project.name, dest / "requirements.txt", self.venvs, progress, shown=shown)
            data = yaml.safe_dump(workspace_project_doc(doc, runtime, venv), sort_keys=False).encode()
        else:
            try:
                self.toolchain.binary("pulumi-language-yaml")
            except ToolchainError as exc:
                raise ToolchainError(
                    f"stack {project.name}: a Pulumi YAML program needs the YAML language host: {exc.message}",
                    fix=exc.fix or "run `rebuild toolchain install --with pulumi-language-yaml`",
                ) from exc
            # As written (the host reports errors by its lines); the backend comes from PULUMI_BACKEND_URL,
            # which wins over a `backend:` in the file.
            data = pfile.read_bytes()
        _write_if_changed(dest / "Pulumi.yaml", data)
        return Prepared(dest, str(doc["name"]), runtime, project.name, src, venv)

    @property
    def venvs(self) -> Path:
        """The user projects' virtualenvs, shared by every state dir: ``<toolchain cache>/venvs/<key>``."""
        return self.toolchain.root / "venvs"

    def prepare(self, project: Project, progress: Progress | None = None) -> Prepared:
        if isinstance(project, UserProject):
            return self.user_workspace(project, progress)
        return Prepared(self.workspace(project), _project_name(project), "python")

    def repair_state_files(self, project: str, stack_name: str) -> list[str]:
        """See :func:`.filestate.repair_state_files`; nothing to do for a backend that is not a folder."""
        folder = self.backend_dir
        return filestate.repair_state_files(folder, project, stack_name) if folder is not None else []

    def lock_holders(self, project: str, stack_name: str) -> list[str]:
        folder = self.backend_dir
        return filestate.lock_holders(folder, project, stack_name) if folder is not None else []

    def _classify(self, exc: Exception, prep: Prepared, stack_name: str) -> StackError | ConfigError:
        return classify(
            exc,
            stack=stack_name,
            project=prep.project,
            entry=prep.entry,
            workspace=prep.workspace if prep.entry else None,
            source=prep.source,
            pulumi_home=self.toolchain.pulumi_home,
        )

    def stack(
        self,
        project_dir: Project,
        stack_name: str,
        config: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        create: bool = True,
    ) -> auto.Stack:
        return self._open(project_dir, stack_name, config, progress, create=create)[1]

    def _open(
        self,
        project: Project,
        stack_name: str,
        config: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        create: bool = True,
    ) -> tuple[Prepared, auto.Stack]:
        """Prepare the workspace and select (or create) the stack, one thread at a time per workspace.

        Independent stacks run in threads; two of them may read a third one's outputs at once,
        and both would refresh its copy and select its stack (Pulumi rewrites its workspace file
        in PULUMI_HOME) together.
        """
        with _workspace_lock(self._workspace_of(project)):
            prep = self.prepare(project, progress)
            return prep, self._stack(prep, stack_name, config, progress, create=create)

    def _workspace_of(self, project: Project) -> Path:
        if isinstance(project, UserProject):
            return self.workspaces / "user" / project.name
        return self.workspaces / project.name

    def _stack(
        self,
        prep: Prepared,
        stack_name: str,
        config: Mapping[str, Any] | None,
        progress: Progress | None,
        *,
        create: bool = True,
    ) -> auto.Stack:
        self._ensure_backend()
        for fixed in self.repair_state_files(prep.project, stack_name):
            if progress:
                progress(f"{prep.entry or prep.project}: {fixed}")
        pulumi_bin = self.toolchain.binary("pulumi")
        if prep.runtime == "python":
            self.toolchain.binary("pulumi-language-python")
        env = self.env(prep)
        cmd = Command(root=str(pulumi_bin.parent.parent), skip_version_check=True)
        backend = self._backend
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(prep.workspace),
            pulumi_home=str(self.toolchain.pulumi_home),
            env_vars=env,
            pulumi_command=cmd,
            secrets_provider=None if backend.uses_passphrase else backend.secrets_provider,
        )
        stack_file = prep.workspace / f"Pulumi.{stack_name}.yaml"
        try:
            if create:
                st = auto.create_or_select_stack(stack_name=stack_name, work_dir=str(prep.workspace), opts=opts)
            else:
                st = auto.select_stack(stack_name=stack_name, work_dir=str(prep.workspace), opts=opts)
            if not stack_file.exists():
                restore_stack_settings(st, stack_file)
            if config:
                self._set_config(st, _flatten_config(prep.project, config), pulumi_bin, prep.workspace, env)
        except auto.errors.CommandError as exc:
            raise self._classify(exc, prep, stack_name) from exc
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
                env=child_env({"PULUMI_HOME": str(self.toolchain.pulumi_home), **env}),
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                result = auto.CommandResult(stdout=proc.stdout, stderr=proc.stderr, code=proc.returncode)
                raise auto.errors.create_command_error(result)

    def _run(
        self,
        project_dir: Project,
        stack_name: str,
        action: str,
        config: Mapping[str, Any] | None,
        progress: Progress | None,
        refresh: bool = False,
    ) -> StackResult:
        prep, st = self._open(project_dir, stack_name, config, progress)
        project = prep.project
        label = prep.entry or project
        self._recover_interrupted(st, prep, stack_name, progress)

        def on_output(line: str) -> None:
            if progress and line.strip():
                progress(f"{label}: {strip_ansi(line.rstrip())}")

        steps: list[dict[str, str]] = []

        def on_event(event: auto.EngineEvent) -> None:
            pre = event.resource_pre_event
            if pre is None or pre.metadata is None:
                return
            step = preview_step(pre.metadata.op, pre.metadata.urn, pre.metadata.type)
            if step is not None:
                steps.append(step)

        t0 = time.monotonic()
        try:
            if action == "up":
                res = st.up(on_output=on_output, color="never", suppress_progress=True, refresh=refresh or None)
                summary = dict(res.summary.resource_changes or {})
            elif action == "preview":
                pres = st.preview(
                    on_output=on_output, on_event=on_event, color="never", suppress_progress=True, refresh=refresh or None
                )
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
            err = self._classify(exc, prep, stack_name)
            if isinstance(err, StackLockedError):
                holders = self.lock_holders(project, stack_name)
                if holders:
                    err.message += f" ({'; '.join(holders)})"
            raise err from exc
        return StackResult(
            project,
            stack_name,
            action,
            time.monotonic() - t0,
            {k: int(v) for k, v in summary.items()},
            outputs,
            _unique_steps(steps),
        )

    def recover_interrupted(self, st: auto.Stack, project: str, stack_name: str, progress: Progress | None = None) -> bool:
        """Clear what an update killed mid-way (kill -9, a lost machine) leaves behind, in a file backend.

        Its lock file names a pid on this host that no longer runs, and its checkpoint lists
        pending operations; both would block every later update. A lock held by a live
        process, or by another host, is left alone (that is a concurrent update: retry).
        The pending operations are dropped: the next update re-applies those resources
        (server-side apply adopts objects that were created meanwhile). Another backend keeps
        its own locks (and a lease that expires): nothing is done there.
        """
        return self._recover_interrupted(st, Prepared(Path(st.workspace.work_dir), project, "python"), stack_name, progress)

    def _recover_interrupted(self, st: auto.Stack, prep: Prepared, stack_name: str, progress: Progress | None) -> bool:
        folder = self.backend_dir
        if folder is None:
            return False
        label = prep.entry or prep.project
        removed = filestate.remove_dead_locks(folder, prep.project, stack_name)
        for pid in removed:
            if progress:
                progress(f"{label}: removed the lock of an interrupted update (pid {pid} is gone)")
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
                    progress(f"{label}: dropped {len(pending)} pending operation(s) of the interrupted update")
        except auto.errors.CommandError as exc:
            raise self._classify(exc, prep, stack_name) from exc
        return True

    def up(
        self,
        project_dir: Project,
        stack_name: str,
        config: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        refresh: bool = False,
    ) -> StackResult:
        """`pulumi up`; with refresh, the state is first refreshed from reality (a stopped cluster is noticed)."""
        return self._run(project_dir, stack_name, "up", config, progress, refresh)

    def preview(
        self,
        project_dir: Project,
        stack_name: str,
        config: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        refresh: bool = False,
    ) -> StackResult:
        """`pulumi preview`: the change summary, and in ``steps`` the resources it would replace or delete.

        With refresh, the state is first read from reality (`pulumi preview --refresh`): a cluster
        that is gone shows as one to create, as `up` (which refreshes) will find it.
        """
        return self._run(project_dir, stack_name, "preview", config, progress, refresh)

    def refresh(self, project_dir: Project, stack_name: str, progress: Progress | None = None) -> StackResult:
        return self._run(project_dir, stack_name, "refresh", None, progress)

    def destroy(self, project_dir: Project, stack_name: str, progress: Progress | None = None) -> StackResult:
        return self._run(project_dir, stack_name, "destroy", None, progress)

    def remove(self, project_dir: Project, stack_name: str, *, force: bool = False) -> None:
        """Remove a stack; ``force`` drops its state even if it still lists resources (they
        must be gone another way, e.g. with the cluster they lived in)."""
        prep, st = self._open(project_dir, stack_name)
        try:
            st.workspace.remove_stack(stack_name, force=force or None)
        except auto.errors.CommandError as exc:
            raise self._classify(exc, prep, stack_name) from exc

    def outputs(self, project_dir: Project, stack_name: str) -> dict[str, tuple[Any, bool]]:
        """Every output as (value, is_secret), secrets in clear: for wiring into another stack's
        config (where they stay secret), never for printing. A stack that does not exist is a
        StackNotFoundError (it is not created)."""
        prep, st = self._open(project_dir, stack_name, create=False)
        try:
            outs = st.outputs()
        except auto.errors.CommandError as exc:
            raise self._classify(exc, prep, stack_name) from exc
        return {k: (v.value, bool(v.secret)) for k, v in outs.items()}

    def output(self, project_dir: Project, stack_name: str, name: str) -> Any:
        """One output, secrets included (for the caller's own use, never for printing)."""
        prep, st = self._open(project_dir, stack_name)
        try:
            outs = st.outputs()
        except auto.errors.CommandError as exc:
            raise self._classify(exc, prep, stack_name) from exc
        if name not in outs:
            raise StackError(f"stack {stack_name} has no output {name!r}", fix="run `pulumi up` on it first")
        return outs[name].value


def preview_step(op: Any, urn: str, type_: str) -> dict[str, str] | None:
    """A preview step worth calling out (a resource replaced or deleted), else None."""
    name = op.value if hasattr(op, "value") else str(op)
    if name not in DESTRUCTIVE_OPS:
        return None
    return {"op": name, "urn": urn, "type": type_, "name": urn.rsplit("::", 1)[-1]}


def _unique_steps(steps: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for s in steps:
        key = (s["op"], s["urn"])
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


_locks_guard = threading.Lock()
_locks: dict[Path, threading.Lock] = {}


def _workspace_lock(workspace: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(workspace, threading.Lock())


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


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


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _project_name(project_dir: Path) -> str:
    text = (project_dir / "Pulumi.yaml").read_text(encoding="utf-8")
    m = re.search(r"^name:\s*(\S+)", text, re.M)
    return m.group(1) if m else project_dir.name
