"""The pulumi CLI as the Automation API runs it, and its failures turned into rebuild's errors.

Why apart from the stack driver: how a CLI process is started, interrupted and cleaned up (its
plugins' process group), and how its stderr is classified into
:class:`~rebuild.core.errors.StackLockedError`, :class:`~rebuild.core.errors.StackNotFoundError`,
:class:`~rebuild.core.errors.PluginMissingError`, :class:`~rebuild.core.errors.ProgramError` ...,
are one policy each, whatever the stack operation.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi.automation as auto
from pulumi.automation.errors import create_command_error

from rebuild.core.errors import (
    ConfigError,
    PluginMissingError,
    ProgramError,
    StackError,
    StackLockedError,
    StackNotFoundError,
)
from rebuild.core.procgroup import stop_group


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _interesting(text: str) -> str:
    """The lines of a failed pulumi run that a person needs: errors and a traceback's last lines."""
    lines = []
    for raw in strip_ansi(text).splitlines():
        ln = re.sub(r"^\s*(code|stdout|stderr):\s*", "", raw).strip()
        if not ln or re.match(r"^(\d+|warning: using pulumi-\S+ from \$PATH.*)$", ln):
            continue
        lines.append(ln)
    keep = [ln for ln in lines if ln.startswith("error:")]
    keep = keep or [ln for ln in lines if re.search(r"(error|Error|exception|Exception|failed)", ln)]
    keep = list(dict.fromkeys(keep))  # de-duplicate, keep order
    return "\n".join(keep[-8:]) or "\n".join(lines[-8:])


class Command(auto.PulumiCommand):
    """The toolchain's pulumi CLI, run in its own process group so that Ctrl-C is ours to pass on.

    Why: with the stock command, Ctrl-C reaches the CLI and Python together; Python leaves
    at once, closes the pipes, and the CLI dies mid-cancel: the stack stays locked and its
    plugins keep running as orphans. Here the first interrupt asks the CLI to cancel
    (SIGINT: it finishes the operations in flight, saves its checkpoint and releases the
    lock), a second one terminates it (SIGTERM), a third kills its group. Either way this
    returns only after the CLI has exited and its leftover plugins are stopped, and then
    raises KeyboardInterrupt, which the caller reports as an interruption.
    """

    def run(
        self,
        args: list[str],
        cwd: str,
        additional_env: Mapping[str, str],
        on_output: Callable[[str], Any] | None = None,
        on_error: Callable[[str], Any] | None = None,
    ) -> auto.CommandResult:
        sep = args.index("--") if "--" in args else len(args)
        if "--non-interactive" not in args[:sep]:
            args.insert(0, "--non-interactive")
        env = {**child_env(additional_env), "PULUMI_AUTOMATION_API": "true"}
        if os.path.isabs(self.command):
            env["PATH"] = os.pathsep.join([os.path.dirname(self.command), env.get("PATH", "")])
        out: list[str] = []
        err: list[str] = []

        def consume(stream: Any, callback: Callable[[str], Any] | None, chunks: list[str]) -> None:
            for line in iter(stream.readline, ""):
                stripped = line.rstrip()
                if callback:
                    callback(stripped)
                chunks.append(stripped)
            stream.close()

        proc = subprocess.Popen(
            [self.command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            encoding="utf-8",
            start_new_session=True,
        )
        readers = [
            threading.Thread(target=consume, args=(proc.stdout, on_output, out), daemon=True),
            threading.Thread(target=consume, args=(proc.stderr, on_error, err), daemon=True),
        ]
        for t in readers:
            t.start()
        interrupts = 0
        while True:
            try:
                proc.wait()
                break
            except KeyboardInterrupt:
                interrupts += 1
                _signal_cli(proc, interrupts)
        for t in readers:
            t.join(timeout=10)
        if interrupts:
            stop_group(proc.pid)
            raise KeyboardInterrupt
        result = auto.CommandResult(stdout="\n".join(out), stderr="\n".join(err), code=proc.returncode)
        if proc.returncode != 0:
            raise create_command_error(result)
        return result


def child_env(additional_env: Mapping[str, str]) -> dict[str, str]:
    """rebuild's environment with the stack's variables on top, and only one passphrase source.

    A PULUMI_CONFIG_PASSPHRASE left in the user's shell (for their own stacks) would win over the
    backend's passphrase file, and the reverse; whichever the backend sets, the other is dropped.
    """
    env = {**os.environ, **additional_env}
    if "PULUMI_CONFIG_PASSPHRASE_FILE" in additional_env and "PULUMI_CONFIG_PASSPHRASE" not in additional_env:
        env.pop("PULUMI_CONFIG_PASSPHRASE", None)
    if "PULUMI_CONFIG_PASSPHRASE" in additional_env and "PULUMI_CONFIG_PASSPHRASE_FILE" not in additional_env:
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return env


def _signal_cli(proc: subprocess.Popen[str], interrupts: int) -> None:
    """1st interrupt: SIGINT to the CLI (cancel); 2nd: SIGTERM; then SIGKILL to its whole group."""
    try:
        if interrupts == 1:
            proc.send_signal(signal.SIGINT)
        elif interrupts == 2:
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def classify(
    exc: Exception,
    *,
    stack: str,
    project: str,
    entry: str = "",
    workspace: Path | None = None,
    source: Path | None = None,
    pulumi_home: Path | None = None,
) -> StackError | ConfigError:
    """Map an Automation API error (whose str() carries the CLI's stdout/stderr) to rebuild's error tree.

    For a user's project, ``entry`` is its rebuild.yaml stack name, ``workspace`` the copy that
    ran and ``source`` the folder in the checkout it was copied from (file:line are shown there),
    ``pulumi_home`` the toolchain's (which plugin versions it has).
    """
    text = strip_ansi(str(exc))
    detail = _interesting(text)
    where = f"stack {entry} ({project}/{stack})" if entry else f"stack {project}/{stack}"
    if isinstance(exc, auto.ConcurrentUpdateError) or "the stack is currently locked" in text:
        return StackLockedError(
            f"{where} is locked by another update",
            fix="wait for the other update; if it crashed, remove its lock under <state dir>/pulumi/.pulumi/locks",
        )
    if isinstance(exc, auto.StackNotFoundError) or re.search(r"no stack named|stack .* not found", text):
        return StackNotFoundError(f"{where} does not exist", fix="run `rebuild up` (it creates the stack) or check the name")
    missing = missing_plugin(text)
    if missing is not None:
        return _plugin_error(where, *missing, pulumi_home)
    m = re.search(r"no resource plugin '[^']+'[^\n]*|could not find plugin[^\n]*|failed to load plugin[^\n]*", text)
    if m or ("pulumi-language-python" in text and "executable file not found" in text):
        what = m.group(0) if m else "the Python language host"
        return PluginMissingError(f"{where}: a Pulumi plugin is missing: {what}", fix="run `rebuild toolchain install`")
    if entry:
        raised = program_error(text, workspace, source)
        # A KeyboardInterrupt traceback is the engine stopping the program after something else
        # failed ("Resource monitor has terminated"): that other error is the one to report.
        if raised is not None and not raised[1].startswith("KeyboardInterrupt"):
            at, line = raised
            return ProgramError(
                f"{where}: the program failed{f' at {at}' if at else ''}: {line}",
                fix="correct the program there (or the config rebuild.yaml gives it); "
                "`pulumi preview` in the project folder shows the whole output",
            )
    if re.search(r"validating stack config|must be of type|is not a valid|invalid config|configuration key", text, re.I):
        folder = project.removeprefix("rebuild-")
        return ConfigError(
            f"{where}: bad stack configuration: {detail}",
            fix=f"fix the stack's config in rebuild.yaml (stacks: {entry})"
            if entry
            else f"fix the config in stacks/{folder}/Pulumi.{stack}.yaml",
        )
    if (
        isinstance(exc, auto.CompilationError)
        or re.search(r"Traceback|Program failed|RunError|unhandled (exception|error)|program exited with non-zero", text)
    ) and "Resource monitor has terminated" not in text:
        return ProgramError(
            f"{where}: the program failed:\n{detail}",
            fix="read the error above; `pulumi up` in the stack folder shows the full output",
        )
    return StackError(f"{where}: pulumi failed:\n{detail}", fix="read the error above")


def missing_plugin(text: str) -> tuple[str, str] | None:
    """(name, version) of a resource plugin the engine could not find ("" version when it named none)."""
    m = re.search(
        r"no resource plugin 'pulumi-resource-([\w.-]+)' found in the workspace(?: at version v?([0-9][\w.+-]*))?", text
    )
    if m:
        return m.group(1), (m.group(2) or "").rstrip(".,")
    m = re.search(r"pulumi plugin install resource ([\w.-]+) v?([0-9][\w.+-]*)", text)
    if m:
        return m.group(1), m.group(2).rstrip(".,`")
    return None


def installed_plugin_versions(pulumi_home: Path | None, name: str) -> list[str]:
    """The versions of resource plugin ``name`` in a PULUMI_HOME (``plugins/resource-<name>-v<version>``)."""
    if pulumi_home is None:
        return []
    found = []
    for d in (pulumi_home / "plugins").glob(f"resource-{name}-v*"):
        if d.is_dir():
            found.append(d.name.removeprefix(f"resource-{name}-v"))
    return sorted(found)


def _plugin_error(where: str, name: str, version: str, pulumi_home: Path | None) -> PluginMissingError:
    have = installed_plugin_versions(pulumi_home, name)
    wanted = f"{name} {version}".strip()
    pin = (
        f"pin the version the toolchain has ({name} {', '.join(have)}: e.g. pulumi-{name}=={have[-1]} in requirements.txt, "
        f"or `options: {{version: {have[-1]}}}` in a YAML program), or add "
        if have
        else "add "
    )
    home = f"PULUMI_HOME={pulumi_home} " if pulumi_home else ""
    return PluginMissingError(
        f"{where}: the program needs the Pulumi plugin {wanted}, which the toolchain does not have "
        f"(it has: {', '.join(have) or 'none'}); plugins are never downloaded",
        fix=f"{pin}the plugin: `{home}pulumi plugin install resource {name} {version or '<version>'} "
        f"--file <its pulumi-resource-{name} binary>`",
    )


def program_error(text: str, workspace: Path | None, source: Path | None) -> tuple[str, str] | None:
    """(file:line in the user's folder, the error line) of a program that failed, None if the text shows none.

    Python: the last traceback's last frame inside the project, and its exception line. Pulumi
    YAML: the ``on Pulumi.yaml line N`` its host prints under the error.
    """
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == "Traceback (most recent call last):"]
    if starts:
        return _traceback(lines[starts[-1] :], workspace, source)
    m = re.search(r"(?:error|Error):\s*(.+)\n\s*on (\S+) line (\d+):", text)
    if m:
        return f"{_shown(m.group(2), workspace, source)}:{m.group(3)}", m.group(1).strip()
    return None


def _traceback(lines: list[str], workspace: Path | None, source: Path | None) -> tuple[str, str]:
    indent = len(lines[0]) - len(lines[0].lstrip())
    at = ""
    exc_line = ""
    frame = re.compile(r'^\s*File "([^"]+)", line (\d+)')
    in_frames = True
    for ln in lines[1:]:
        m = frame.match(ln)
        if m:
            in_frames = True
            if _inside(m.group(1), workspace, source):
                at = f"{_shown(m.group(1), workspace, source)}:{m.group(2)}"
            continue
        if in_frames and ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            exc_line = ln.strip()
            in_frames = False
            break
    # No frame inside the project (an import failed before the program ran): no file:line to show.
    return at, exc_line or "an unhandled exception"


def _roots(workspace: Path | None) -> list[str]:
    if workspace is None:
        return []
    return list(dict.fromkeys([str(workspace), str(workspace.resolve())]))


def _inside(path: str, workspace: Path | None, source: Path | None) -> bool:
    roots = _roots(workspace) + _roots(source)
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _shown(path: str, workspace: Path | None, source: Path | None) -> str:
    """A path in the workspace copy as the same file in the user's folder."""
    if source is None:
        return path
    for r in _roots(workspace):
        if path.startswith(r.rstrip("/") + "/"):
            return str(source / path[len(r.rstrip("/")) + 1 :])
    if not os.path.isabs(path):
        return str(source / path)
    return path
