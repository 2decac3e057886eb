"""Drive the Pulumi programs in stacks/ through the Automation API, offline and predictably.

Why a wrapper: every call must use the toolchain's pulumi binary and plugins (no
downloads), a file backend under rebuild's state dir, a passphrase that never appears in
argv or logs, ``--non-interactive`` semantics, and errors that say what to do. The
Automation API raises a handful of generic exceptions with the CLI's stderr inside;
``classify`` turns them into rebuild's own error classes in one place.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi.automation as auto

from rebuild.adapters.toolchain import Toolchain
from rebuild.clusters.base import state_root
from rebuild.clusters.pki import write_private
from rebuild.errors import (
    ConfigError,
    PluginMissingError,
    ProgramError,
    StackError,
    StackLockedError,
    StackNotFoundError,
)

Progress = Callable[[str], None]

STACKS_DIR = Path(__file__).resolve().parents[2] / "stacks"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _interesting(stderr: str, stdout: str = "") -> str:
    """The lines of a failed pulumi run that a person needs: errors, tracebacks' last line."""
    text = _strip_ansi(stderr + "\n" + stdout)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if re.search(r"(error|Error|exception|failed)", ln)]
    keep = list(dict.fromkeys(keep))  # de-duplicate, keep order
    return "\n".join(keep[-8:]) or "\n".join(lines[-8:])


def classify(exc: Exception, *, stack: str, project: str) -> StackError | ConfigError:
    """Map an Automation API error to rebuild's error tree, with the fix."""
    stderr = str(getattr(exc, "stderr", "") or "")
    stdout = str(getattr(exc, "stdout", "") or "")
    text = _strip_ansi(stderr + "\n" + stdout + "\n" + str(exc))
    where = f"stack {project}/{stack}"
    if isinstance(exc, auto.ConcurrentUpdateError) or "the stack is currently locked" in text:
        return StackLockedError(
            f"{where} is locked by another update",
            fix=f"wait for it, or if it crashed: pulumi cancel / `pulumi stack export | import`; state lock under {project}",
        )
    if isinstance(exc, auto.StackNotFoundError) or re.search(r"no stack named|stack .* not found", text):
        return StackNotFoundError(f"{where} does not exist", fix="run `rebuild up` (it creates the stack) or check the name")
    m = re.search(
        r"no resource plugin '([^']+)'|could not find plugin[^\n]*|failed to load plugin[^\n]*|plugin (\S+) .*not found", text
    )
    if m or ("pulumi-language-python" in text and "executable file not found" in text):
        return PluginMissingError(
            f"{where}: a Pulumi plugin is missing: {m.group(0) if m else 'language host'}", fix="run `rebuild toolchain install`"
        )
    if re.search(r"(is not a valid|could not parse|invalid value|Configuration key|config.*(type|parse))", text, re.I):
        return ConfigError(
            f"{where}: bad stack configuration:\n{_interesting(stderr, stdout)}",
            fix=f"fix the config in stacks/{project.removeprefix('rebuild-')}/Pulumi.{stack}.yaml",
        )
    if isinstance(exc, auto.CompilationError) or "Traceback" in text or "Program failed" in text or "RunError" in text:
        return ProgramError(
            f"{where}: the program failed:\n{_interesting(stderr, stdout)}",
            fix="read the error above; `pulumi up` in the stack folder shows the full output",
        )
    return StackError(f"{where}: pulumi failed:\n{_interesting(stderr, stdout)}", fix="read the error above")


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
        return self.root / "pulumi"

    @property
    def passphrase_file(self) -> Path:
        return self.backend_dir / "passphrase"

    def _ensure_backend(self) -> None:
        try:
            self.backend_dir.mkdir(parents=True, exist_ok=True)
            if not self.passphrase_file.exists():
                # Encrypts secret outputs (kubeconfigs) in the state files; 0600, never logged.
                write_private(self.passphrase_file, secrets.token_urlsafe(32).encode())
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
        # The dynamic-provider plugin (stacks/cluster) runs Python from this virtualenv.
        env["PULUMI_RUNTIME_VIRTUALENV"] = os.environ.get("VIRTUAL_ENV") or sys.prefix
        return env

    def stack(self, project_dir: Path, stack_name: str, config: Mapping[str, Any] | None = None) -> auto.Stack:
        self._ensure_backend()
        pulumi_bin = self.toolchain.binary("pulumi")
        self.toolchain.binary("pulumi-language-python")
        env = self.env()
        cmd = auto.PulumiCommand(root=str(pulumi_bin.parent.parent), skip_version_check=True)
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
                full = {(k if ":" in k else f"{project}:{k}"): _config_value(v) for k, v in config.items()}
                st.set_all_config(full, path=False)
        except auto.errors.CommandError as exc:
            raise classify(exc, stack=stack_name, project=project) from exc
        return st

    def _run(
        self, project_dir: Path, stack_name: str, action: str, config: Mapping[str, Any] | None, progress: Progress | None
    ) -> StackResult:
        project = _project_name(project_dir)
        st = self.stack(project_dir, stack_name, config)

        def on_output(line: str) -> None:
            if progress and line.strip():
                progress(f"{project}: {_strip_ansi(line.rstrip())}")

        t0 = time.monotonic()
        try:
            if action == "up":
                res = st.up(on_output=on_output, color="never", suppress_progress=True)
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
            raise classify(exc, stack=stack_name, project=project) from exc
        return StackResult(project, stack_name, action, time.monotonic() - t0, {k: int(v) for k, v in summary.items()}, outputs)

    def up(
        self, project_dir: Path, stack_name: str, config: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> StackResult:
        return self._run(project_dir, stack_name, "up", config, progress)

    def preview(
        self, project_dir: Path, stack_name: str, config: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> StackResult:
        return self._run(project_dir, stack_name, "preview", config, progress)

    def destroy(self, project_dir: Path, stack_name: str, progress: Progress | None = None) -> StackResult:
        return self._run(project_dir, stack_name, "destroy", None, progress)

    def remove(self, project_dir: Path, stack_name: str) -> None:
        st = self.stack(project_dir, stack_name)
        try:
            st.workspace.remove_stack(stack_name)
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


def _config_value(v: Any) -> auto.ConfigValue:
    if isinstance(v, auto.ConfigValue):
        return v
    if isinstance(v, (list, dict)):
        import json

        return auto.ConfigValue(value=json.dumps(v))
    return auto.ConfigValue(value=str(v))


def _project_name(project_dir: Path) -> str:
    text = (project_dir / "Pulumi.yaml").read_text(encoding="utf-8")
    m = re.search(r"^name:\s*(\S+)", text, re.M)
    return m.group(1) if m else project_dir.name
