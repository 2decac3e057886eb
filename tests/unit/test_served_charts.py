"""sources[].charts: the HelmRepository rebuild makes for the charts it serves (reconcilers/flux)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.core.config import load as load_config
from rebuild.core.errors import ConfigError
from rebuild.reconcilers import flux


def write(tmp_path: Path, source: str) -> Path:
    cfg = tmp_path / "rebuild.yaml"
    cfg.write_text(f"sources:\n  - {source}\ncluster: {{name: c}}\n")
    return cfg


def test_charts_names_the_helm_repository(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "{name: demo, url: ., charts: charts}"))
    src = cfg.sources[0]
    assert (src.charts, src.charts_repository) == ("charts", "demo-charts")
    assert load_config(write(tmp_path, "{name: demo, url: .}")).sources[0].charts_repository == ""


@pytest.mark.parametrize("bad", ["/abs/charts", "../charts", "charts/../../x"])
def test_charts_outside_the_repository_is_refused_with_its_line(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"{{name: demo, url: ., charts: {bad!r}}}"))
    assert "rebuild.yaml:2: sources.0.charts:" in str(err.value) and "relative path inside the repository" in str(err.value)


def test_helm_repository_object() -> None:
    src = flux.FluxSource(
        name="demo",
        url="http://127.0.0.1:1/demo.git",
        branch="main",
        path=".",
        interval="2m",
        charts_repository="demo-charts",
        charts_url="http://127.0.0.1:4567",
    )
    obj = flux.helm_repository(src)
    assert obj["apiVersion"] == "source.toolkit.fluxcd.io/v1" and obj["kind"] == "HelmRepository"
    assert obj["metadata"]["name"] == "demo-charts" and obj["metadata"]["namespace"] == "flux-system"
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "rebuild"}
    assert obj["spec"] == {"interval": "2m", "url": "http://127.0.0.1:4567", "timeout": "60s"}
