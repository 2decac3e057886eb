"""Shared fixtures. Integration fixtures use the real toolchain (built by `make toolchain`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# The top-level objects examples/gitops-repo declares (`kubectl kustomize clusters/demo`): 54 plain
# manifests, 2 HelmReleases (whose rendered objects verify reports under them) and 2 SOPS Secrets.
EXAMPLE_OBJECTS = 60


def example_config() -> dict[str, Any]:
    """examples/gitops-repo/rebuild.yaml as data, for a test that writes it outside the example's
    folder: the path in it that is relative to that folder (the SOPS age key) made absolute."""
    import yaml

    example = REPO / "examples" / "gitops-repo"
    cfg: dict[str, Any] = yaml.safe_load((example / "rebuild.yaml").read_text())
    reconciler = cfg["reconciler"]
    reconciler["sops_age_key_file"] = str(example / reconciler["sops_age_key_file"])
    return cfg


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


# The phases of `rebuild up` of the bundled example: the built-ins keep their names, its own
# infra stacks are `stack:<name>` (docs/stacks.md).
EXAMPLE_PHASES = (
    "desired",
    "cluster",
    "stack:cluster-classes",
    "platform",
    "stack:cluster-facts",
    "reconciler",
    "verify",
)


def assert_example_phases(names: list[str], *, then: tuple[str, ...] = ()) -> None:
    """The example's phases in an order `up` may start them: the platform stack and cluster-classes
    both wait only for the cluster and run at the same time, so either may start first;
    cluster-facts waits for cluster-classes; the reconciler for every stack."""
    assert sorted(names) == sorted([*EXAMPLE_PHASES, *then]), names
    at = {n: i for i, n in enumerate(names)}
    assert at["desired"] < at["cluster"] < min(at["stack:cluster-classes"], at["platform"]), names
    assert at["stack:cluster-classes"] < at["stack:cluster-facts"] < at["reconciler"] < at["verify"], names
    assert at["platform"] < at["reconciler"], names
    assert names[len(EXAMPLE_PHASES) :] == list(then), names
