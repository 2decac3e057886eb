"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import gitserver, helmrepo
from rebuild.clusters.local import LocalCluster
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "gitops-repo"


@pytest.fixture
def example(tmp_path: Path, toolchain: Any) -> Iterator[tuple[Path, Path]]:
    """A private copy of the example repo and a state dir; everything started is stopped after."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    state = tmp_path / "state"
    yield repo / "rebuild.yaml", state
    LocalCluster("demo", root=state).delete(purge=True)
    gitserver.stop_server(state / "gitserver")
    helmrepo.stop_repo(state / "charts" / "demo")  # the example's charts/ (sources[0].charts)
