"""The kind provider for real: needs the kind CLI and a running container engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rebuild.clusters.kind import KindCluster, container_engine

pytestmark = pytest.mark.integration

ENGINE = container_engine()
REASON = (
    "kind needs a running container engine (docker or podman) and the kindest/node image; "
    "this machine has no container engine (`docker info` fails), so kind clusters cannot start here"
)


@pytest.mark.skipif(ENGINE is None or shutil.which("kind") is None, reason=REASON)
def test_kind_cluster_up_and_down(tmp_path: Path) -> None:
    c = KindCluster("rebuild-it", root=tmp_path)
    try:
        st = c.create()
        assert st.state == "running"
        assert c.kubeconfig().exists()
    finally:
        c.delete(purge=True)
    assert c.status().state == "absent"
