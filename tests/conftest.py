"""Shared fixtures. Integration fixtures use the real toolchain (built by `make toolchain`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private REBUILD_STATE_DIR per test, so tests never see each other's clusters or stacks."""
    d = tmp_path / "state"
    d.mkdir()
    monkeypatch.setenv("REBUILD_STATE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def toolchain() -> object:
    """The real, built toolchain. Installing is idempotent (seconds when cached)."""
    from rebuild.toolchain.tools import Toolchain, install

    tc = Toolchain()
    install(tc, progress=lambda m: print(f"[toolchain] {m}"))
    return tc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def cluster_factory(state_dir: Path, toolchain: object) -> Iterator[object]:
    """Create local clusters with unique names; every one is stopped and purged afterwards."""
    from rebuild.clusters.local import LocalCluster

    made: list[LocalCluster] = []

    def make(prefix: str = "t", nodes: int = 1, **kw: object) -> LocalCluster:
        c = LocalCluster(unique(prefix), nodes=nodes, root=state_dir, unsafe_fast_storage=True, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.delete(purge=True)


def cli_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["REBUILD_STATE_DIR"] = str(state_dir)
    return env
