"""Two tools build at once, longest first; a failure stops new builds and is raised after the
running ones finish (rebuild/toolchain/tools.py: _run_recipes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rebuild.core.errors import ConfigError, ToolchainError
from rebuild.toolchain import tools
from rebuild.toolchain.recipes import RECIPES, Recipe


def recipes(*names: str) -> list[Recipe]:
    by = {r.name: r for r in RECIPES}
    return [by[n] for n in names]


def test_longest_first_and_unknown_last() -> None:
    order = [r.name for r in tools.build_order(recipes("kwok", "age", "kubernetes", "helm-controller"))]
    assert order == ["kubernetes", "helm-controller", "kwok", "age"]


@pytest.mark.parametrize(("raw", "ok"), [("1", 1), ("3", 3), ("0", None), ("two", None)])
def test_build_jobs_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, ok: int | None) -> None:
    monkeypatch.setenv("REBUILD_BUILD_JOBS", raw)
    if ok is None:
        with pytest.raises(ConfigError, match="REBUILD_BUILD_JOBS"):
            tools.build_jobs()
    else:
        assert tools.build_jobs() == ok


def test_two_at_once_and_a_failure_stops_the_rest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    running: set[str] = set()
    overlap: list[set[str]] = []
    started: list[str] = []
    lock = threading.Lock()

    def fake_run(tc: object, recipe: Recipe, progress: object) -> None:
        with lock:
            started.append(recipe.name)
            running.add(recipe.name)
            overlap.append(set(running))
        if recipe.name == "kubernetes":
            time.sleep(0.05)
            with lock:
                running.discard(recipe.name)
            raise ToolchainError("building kubernetes failed", fix="read the log")
        time.sleep(0.5)
        with lock:
            running.discard(recipe.name)

    monkeypatch.setattr(tools, "_run_recipe", fake_run)
    monkeypatch.setenv("REBUILD_BUILD_JOBS", "2")
    with pytest.raises(ToolchainError, match="building kubernetes failed"):
        tools._run_recipes(object(), recipes("kwok", "kubernetes", "helm-controller", "age"), lambda m: None)  # type: ignore[arg-type]
    # helm-controller and kubernetes start together. kubernetes fails first: its worker may take
    # the next build (kwok) at once, but nothing starts after the failure is seen (age, the last).
    assert set(started[:2]) == {"helm-controller", "kubernetes"}
    assert max(len(s) for s in overlap) == 2
    assert "age" not in started


def test_all_built_names_come_back_in_build_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "_run_recipe", lambda tc, r, p: time.sleep(0.01))
    monkeypatch.setenv("REBUILD_BUILD_JOBS", "2")
    got = tools._run_recipes(object(), recipes("age", "kwok", "gitea"), lambda m: None)  # type: ignore[arg-type]
    assert got == ["gitea", "kwok", "age"]
