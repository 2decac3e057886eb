from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.core.config import load, parse, parse_duration
from rebuild.core.errors import ConfigError

GOOD = """\
sources:
  - name: demo
    url: .
    path: clusters/demo
cluster: {provider: local, name: demo, nodes: 2}
reconciler: {kind: flux, interval: 30s}
verify:
  timeout: 5m
  ignore:
    - {kind: Deployment, name: search, path: spec.replicas}
capture:
  namespaces: [shop]
"""


def test_good_config_loads(tmp_path: Path) -> None:
    f = tmp_path / "rebuild.yaml"
    f.write_text(GOOD)
    cfg = load(f)
    assert cfg.sources[0].name == "demo" and cfg.sources[0].is_local()
    assert cfg.cluster.nodes == 2 and cfg.reconciler.interval == "30s"
    assert cfg.verify.timeout == 300.0
    assert cfg.verify.ignore[0].matches("Deployment", "shop", "search", "spec.replicas")
    assert not cfg.verify.ignore[0].matches("Deployment", "shop", "cart", "spec.replicas")
    assert [s.name for s in cfg.stacks] == ["cluster", "platform"] and all(s.builtin for s in cfg.stacks)
    assert cfg.backend.url == ""


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    bad = """\
sources:
  - name: demo
    url: https://user:pw@git.example.com/x.git
    path: ../outside
    credentials: {password: hunter2}
cluster:
  provider: minikube
  name: demo
  nodse: 3
reconciler: {kind: flux, interval: soon}
verify:
  timeout: [5]
"""
    with pytest.raises(ConfigError) as err:
        parse(bad, tmp_path / "rebuild.yaml")
    msg = str(err.value)
    assert f"{tmp_path}/rebuild.yaml:3: sources.0.url: the URL contains credentials" in msg
    assert "rebuild.yaml:4: sources.0.path" in msg
    assert "rebuild.yaml:5: sources.0.credentials.password: secrets are not written" in msg
    assert "rebuild.yaml:7: cluster.provider: unknown provider 'minikube'" in msg
    assert "rebuild.yaml:9: cluster.nodse: unknown key 'nodse' (fix: did you mean 'nodes'?)" in msg
    assert "rebuild.yaml:10: reconciler.interval" in msg
    assert "rebuild.yaml:12: verify.timeout" in msg
    assert "hunter2" not in msg and ":pw@" not in msg


def test_wrong_types_and_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse("sources: yes\ncluster: 3\n", tmp_path / "r.yaml")
    assert "r.yaml:1: sources: must be a non-empty list" in str(err.value)
    assert "r.yaml:2: cluster: must be a mapping, not a number" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse("sources: [\n", tmp_path / "r.yaml")
    assert "r.yaml:2: invalid YAML" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse("a: 1\na: 2\n", tmp_path / "r.yaml")
    assert "duplicate key 'a'" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "nope.yaml")
    assert "does not exist" in str(err.value) and err.value.fix


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("1h30m", 5400), ("45s", 45), (90, 90), ("bad", None), ("", None)])
def test_durations(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
