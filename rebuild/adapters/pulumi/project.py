"""The user's own Pulumi projects: a private copy to run, and the language runtime it needs.

Why: a platform team's infrastructure lives as Pulumi projects in their git repos, checked out
by rebuild at the manifests' revision. The checkout is read-only to rebuild, and Pulumi writes
``Pulumi.<stack>.yaml`` next to ``Pulumi.yaml``; so the project runs from a copy under the
state dir (one per backend, see :meth:`~rebuild.adapters.pulumi.backend.Backend.workspaces`),
refreshed from the checkout on every run. Stack settings come from rebuild.yaml, so the
repo's own ``Pulumi.<stack>.yaml`` files are not copied; neither are virtualenvs,
``node_modules``, ``__pycache__`` or ``.git``.

Languages: ``python`` runs in a virtualenv made from the project's ``requirements.txt``,
cached under the toolchain cache by the hash of that file (a second run installs nothing);
``yaml`` runs with the toolchain's YAML language host. Anything else is refused up front.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.core.errors import ConfigError
from rebuild.core.progress import Progress

SUPPORTED_RUNTIMES = ("python", "yaml")
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "venv", ".venv", "__pycache__", "node_modules", ".pulumi"})
_STACK_FILE = re.compile(r"^Pulumi\..+\.ya?ml$")
VENV_MARK = ".rebuild-complete"  # written last: a venv without it is half-built and is rebuilt


@dataclass(frozen=True)
class UserProject:
    """A Pulumi project folder of the user's (``dir``, read-only), run as the rebuild.yaml stack entry ``name``."""

    name: str
    dir: Path


def project_file(folder: Path) -> Path:
    """The folder's Pulumi.yaml (or Pulumi.yml)."""
    for name in ("Pulumi.yaml", "Pulumi.yml"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(
        f"{folder} has no Pulumi.yaml, so it is not a Pulumi project",
        fix="point the stack's `path` at the folder holding Pulumi.yaml",
    )


def load_project(folder: Path) -> dict[str, Any]:
    import yaml

    path = project_file(folder)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read as YAML ({exc})", fix="fix the file (`pulumi up` reads it too)") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ConfigError(
            f"{path}: not a Pulumi project file (no `name:`)", fix="add `name: <project>` and `runtime: python|yaml`"
        )
    return doc


def runtime_name(doc: dict[str, Any]) -> str:
    """``runtime: python`` or ``runtime: {name: python, options: ...}`` → ``python``."""
    runtime = doc.get("runtime")
    if isinstance(runtime, dict):
        runtime = runtime.get("name")
    return str(runtime or "").strip().lower()


def check_runtime(entry: str, doc: dict[str, Any], where: Path) -> str:
    """The project's runtime if rebuild can run it, else a ConfigError naming the stack entry."""
    name = runtime_name(doc)
    if name not in SUPPORTED_RUNTIMES:
        shown = name or "(none)"
        raise ConfigError(
            f"stack {entry}: {where}: runtime {shown} is not supported ({', '.join(SUPPORTED_RUNTIMES)})",
            fix="rebuild runs Pulumi programs written in Python or Pulumi YAML; port the program or run it outside rebuild",
        )
    return name


def workspace_project_doc(doc: dict[str, Any], runtime: str, venv: Path | None) -> dict[str, Any]:
    """The Pulumi.yaml the copy runs with: rebuild's virtualenv for Python, and no ``backend`` of its own.

    The backend comes from rebuild.yaml (PULUMI_BACKEND_URL); a ``backend.url`` left in the
    project file must never send a drill's stacks to production state.
    """
    out = dict(doc)
    out.pop("backend", None)
    raw = out.get("runtime")
    runtime_doc: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {"name": runtime}
    opts = runtime_doc.get("options")
    opts = dict(opts) if isinstance(opts, dict) else {}
    opts.pop("virtualenv", None)
    opts.pop("toolchain", None)  # pip/uv/poetry: rebuild made the environment already
    if runtime == "python" and venv is not None:
        opts["virtualenv"] = str(venv)
    if opts:
        runtime_doc["options"] = opts
    else:
        runtime_doc.pop("options", None)
    # `runtime: python` stays a string unless options were added; a mapping stays a mapping
    out["runtime"] = runtime_doc if isinstance(raw, dict) or set(runtime_doc) != {"name"} else runtime_doc["name"]
    return out


def skipped(rel: Path, is_dir: bool, src: Path) -> bool:
    """Whether the copy leaves this out: VCS folders, virtualenvs, caches, node_modules, the repo's stack files."""
    name = rel.name
    if is_dir:
        return name in SKIP_DIRS or (src / "pyvenv.cfg").exists()
    if len(rel.parts) == 1 and (_STACK_FILE.match(name) or name in ("Pulumi.yaml", "Pulumi.yml")):
        return True  # the project file is written by ``sync_copy``'s caller; stack files come from rebuild.yaml
    return name.endswith((".pyc", ".pyo"))


def sync_copy(src: Path, dest: Path) -> None:
    """Make ``dest`` a copy of ``src`` (less what :func:`skipped` leaves out), touching only what changed.

    Files no longer in ``src`` are removed from ``dest``, but not the files Pulumi writes at the
    top of the copy (``Pulumi.yaml`` written by the caller, ``Pulumi.<stack>.yaml``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(src)
        dirnames[:] = sorted(d for d in dirnames if not skipped(rel_dir / d, True, here / d))
        for d in dirnames:
            wanted.add(rel_dir / d)
            (dest / rel_dir / d).mkdir(exist_ok=True)
        for name in sorted(filenames):
            rel = rel_dir / name
            if skipped(rel, False, here / name):
                continue
            s = here / name
            if not s.is_file():  # a dangling link, a socket
                continue
            wanted.add(rel)
            _copy_if_changed(s, dest / rel)
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(dest)
        for name in filenames:
            rel = rel_dir / name
            if rel not in wanted and not (len(rel.parts) == 1 and (_STACK_FILE.match(name) or name == "Pulumi.yaml")):
                (here / name).unlink()
        for name in dirnames:
            rel = rel_dir / name
            if rel not in wanted:
                shutil.rmtree(here / name, ignore_errors=True)


def _copy_if_changed(s: Path, d: Path) -> None:
    st = s.stat()
    with contextlib.suppress(OSError):
        dt = d.stat()
        if dt.st_size == st.st_size and int(dt.st_mtime) == int(st.st_mtime) and d.read_bytes() == s.read_bytes():
            return
    if d.is_symlink() or d.is_dir():
        shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
    shutil.copyfile(s, d)
    os.utime(d, (st.st_atime, st.st_mtime))
    os.chmod(d, (st.st_mode & 0o755) | 0o600)


# ---------------------------------------------------------------------------------- virtualenvs


def requirements_file(entry: str, project_dir: Path) -> Path:
    path = project_dir / "requirements.txt"
    if not path.is_file():
        raise ConfigError(
            f"stack {entry}: {path} does not exist, so the Python program's packages are unknown",
            fix="add a requirements.txt next to Pulumi.yaml, e.g. `pulumi==3.272.0` and `pulumi-kubernetes==4.25.0`",
        )
    return path


def venv_key(requirements: bytes, python: str | None = None) -> str:
    """The cache key of a virtualenv: the sha256 of requirements.txt, with the Python version it is made for."""
    version = python or f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"
    h = hashlib.sha256(requirements)
    h.update(b"\0" + version.encode())
    return h.hexdigest()[:12]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes and between threads (each opens its own descriptor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_venv(
    entry: str, requirements: Path, venvs: Path, progress: Progress | None = None, *, shown: Path | None = None
) -> Path:
    """The virtualenv for ``requirements`` (``<venvs>/<key>``), built once and then reused.

    ``requirements`` is the workspace copy's file (pip resolves ``-r other.txt`` next to it);
    ``shown`` the path the user knows (in their checkout), for messages.

    Built under a file lock (two runs, or two stacks with the same requirements, build it once)
    and marked complete last: a build cut short has no mark and is built again. A virtualenv is
    not relocatable (its scripts name their folder), so it is built in place, not renamed.
    pip runs with no secret in argv: requirements come from the file.
    """
    data = requirements.read_bytes()
    venv = venvs / venv_key(data)
    if (venv / VENV_MARK).exists():
        return venv
    with _file_lock(venvs / f"{venv.name}.lock"):
        if (venv / VENV_MARK).exists():
            return venv  # another run built it while we waited
        if venv.exists():
            shutil.rmtree(venv)
        if progress:
            progress(f"{entry}: installing {requirements.name} into {venv} (once; later runs reuse it)")
        base = getattr(sys, "_base_executable", None) or sys.executable
        steps = [
            [base, "-m", "venv", str(venv)],
            [
                str(venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(requirements),
            ],
        ]
        for argv in steps:
            proc = subprocess.run(
                argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, cwd=requirements.parent
            )
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise ConfigError(
                    f"stack {entry}: {shown or requirements} could not be installed: {pip_error(proc.stdout + proc.stderr)}",
                    fix="pin versions that exist on PyPI (e.g. pulumi==3.272.0, pulumi-kubernetes==4.25.0) and check the names",
                )
        (venv / VENV_MARK).write_text(data.decode("utf-8", "replace"))
    return venv


def pip_error(output: str) -> str:
    """pip's last error lines, on one line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")] or lines[-3:]
    # pip lists every version it saw: thousands of characters that say nothing more
    errors = [re.sub(r" \(from versions: [^)]*\)", "", e) for e in errors]
    return " / ".join(dict.fromkeys(errors[-3:])) or "pip failed with no output"
