"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rebuild.clusters.local import LocalCluster
from tests.conftest import REPO
from tests.procs import stop_servers

EXAMPLE = REPO / "examples" / "gitops-repo"


@pytest.fixture
def example(tmp_path: Path, toolchain: Any) -> Iterator[tuple[Path, Path]]:
    """A private copy of the example repo and a state dir; everything started is stopped after."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    state = tmp_path / "state"
    yield repo / "rebuild.yaml", state
    LocalCluster("demo", root=state).delete(purge=True)
    stop_servers(state)
