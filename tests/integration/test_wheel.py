"""Issue 11: rebuild is an installable package. The wheel built from this tree, installed into a
fresh virtualenv outside the checkout, plans and drills a copy of the example from another
folder: the Pulumi programs, the toolchain pins, the language host's source and the built-in
kinds all come from the installed package, never from the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.clusters.local import LocalCluster
from tests.conftest import EXAMPLE_OBJECTS, REPO, assert_example_phases
from tests.procs import processes_naming, stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"
OBJECTS = EXAMPLE_OBJECTS
# Package data the installed rebuild reads at run time (pyproject's [tool.setuptools.package-data]).
DATA = (
    "rebuild/versions.toml",
    "rebuild/toolchain/langhost/main.go",
    "rebuild/data/builtin_kinds.json",
    "rebuild/py.typed",
    "rebuild/programs/cluster/Pulumi.yaml",
    "rebuild/programs/cluster/__main__.py",
    "rebuild/programs/platform/Pulumi.yaml",
    "rebuild/programs/platform/__main__.py",
)


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def away_from_the_checkout(state: Path) -> dict[str, str]:
    """This environment without anything that leads to the checkout or its virtualenv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PULUMI_PYTHON_CMD", "PULUMI_RUNTIME_VIRTUALENV", "REBUILD_NOTIFY_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(REPO)]
    env["PATH"] = os.pathsep.join(path)
    env["REBUILD_STATE_DIR"] = str(state)
    return env


def test_wheel_in_a_fresh_virtualenv_plans_and_drills_the_example_from_another_folder(tmp_path: Path, toolchain: Any) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    state = tmp_path / "state"
    env = away_from_the_checkout(state)

    # Build the wheel from a copy of what the build reads, so the shared checkout gets no
    # build/ or egg-info folder (pip builds in an isolated environment with setuptools from PyPI).
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    shutil.copytree(REPO / "rebuild", src / "rebuild", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src], tmp_path, env, 600)
    (wheel,) = dist.glob("rebuild-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA) <= names, sorted(set(DATA) - names)
    assert not [n for n in names if not n.startswith(("rebuild/", "rebuild-"))], "only the package and its metadata"

    # A fresh virtualenv outside the checkout; dependencies come from the package index.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path, env, 300)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], tmp_path, env, 1200)
    where = run(
        [venv / "bin" / "python", "-c", "import rebuild.adapters.pulumi as p; print(p.__file__); print(p.STACKS_DIR)"],
        tmp_path,
        env,
        60,
    ).stdout.split()
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert where == [str(site / "rebuild" / "adapters" / "pulumi" / "__init__.py"), str(site / "rebuild" / "programs")]

    # A copy of the example in an unrelated folder; rebuild reads ./rebuild.yaml there.
    work = tmp_path / "elsewhere" / "gitops-repo"
    shutil.copytree(EXAMPLE, work)
    rebuild = venv / "bin" / "rebuild"
    try:
        plan = run([rebuild, "plan"], work, env, 600)
        assert f"objects: {OBJECTS}" in plan.stdout and "cluster: 2 to create" in plan.stdout, plan.stdout[-3000:]

        drill = run([rebuild, "-o", "json", "drill"], work, env, 1200)
        res = json.loads(drill.stdout)
        assert res["passed"] is True and res["schema"] == "rebuild.run/v1"
        assert_example_phases([p["name"] for p in res["phases"]], then=("teardown",))
        assert all(p["status"] == "ok" for p in res["phases"]), res["phases"]
        assert res["objects"]["verified"] == OBJECTS and res["rto_seconds"] > 0
        reports = {k: Path(v) for k, v in res["reports"].items()}
        assert set(reports) == {"json", "markdown", "junit", "html"} and all(p.is_relative_to(state) for p in reports.values())
        assert all(p.exists() for p in reports.values())
    finally:
        stop_servers(state)
        for cluster in (state / "clusters").glob("*/"):
            LocalCluster(cluster.name, root=state).delete(purge=True)

    # The programs ran from the installed package, in the fresh virtualenv: the cluster program's
    # workspace from `plan` (the drill ran every stack in a backend of its own, removed with it).
    for program in ("cluster",):
        ws = state / "stacks" / program
        assert yaml.safe_load((ws / "Pulumi.yaml").read_text())["runtime"]["options"] == {"virtualenv": str(venv)}
        assert (ws / "__main__.py").read_text() == (site / "rebuild" / "programs" / program / "__main__.py").read_text()
    assert processes_naming(state, cmdline_only=True) == {}
