"""rebuild.yaml `stacks:` and `backend:`: validation with file:line, the DAG, resolving user projects."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters.git import Checkout
from rebuild.core.config import SourceSpec, parse
from rebuild.core.errors import ConfigError, StackError
from rebuild.core.model import Phases
from rebuild.core.stackspec import StackSpec, find_cycle, topo_order
from rebuild.recover.context import Context
from rebuild.recover.infra import raise_first, resolve_stacks, run_dag, stack_config
from rebuild.recover.sources import DesiredState, SourceState

HEAD = """\
sources:
  - name: demo
    url: .
cluster: {name: demo}
"""

GOOD = (
    HEAD
    + """\
stacks:
  - cluster
  - name: classes
    source: demo
    path: infra/classes/
    config: {replicas: 2, "aws:region": eu-west-1}
    secrets: {apiToken_env: API_TOKEN, "db:password_file": secret.txt}
    config_from: {"kubernetes:kubeconfig": cluster.kubeconfig}
  - name: facts
    source: demo
    path: infra/facts
    stack: prod
    needs: [classes]
    drill_config: {size: small}
  - platform
"""
)


def _problems(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text, tmp_path / "rebuild.yaml")
    return e.value.message


def test_user_stacks_parse_with_defaults_and_implied_needs(tmp_path: Path) -> None:
    cfg = parse(GOOD, tmp_path / "rebuild.yaml")
    names = [s.name for s in cfg.stacks]
    assert names == ["cluster", "classes", "facts", "platform"]
    classes, facts = cfg.stacks[1], cfg.stacks[2]
    assert classes.path == "infra/classes" and classes.stack == "demo" and classes.line == 7
    assert classes.secrets["apiToken"].env == "API_TOKEN" and classes.secrets["db:password"].file == "secret.txt"
    assert classes.depends_on() == ("cluster",)  # config_from implies needs
    assert facts.stack == "prod" and facts.depends_on() == ("classes",) and facts.drill_config == {"size": "small"}
    assert [s.phase for s in cfg.stacks] == ["cluster", "stack:classes", "stack:facts", "platform"]
    assert [s.name for s in topo_order(cfg.stacks)] == ["cluster", "classes", "platform", "facts"]


def test_bad_stacks_each_named_with_its_line(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
stacks:
  - cluster
  - name: a
    source: demo
    path: infra/a
    needs: [b]
  - name: b
    source: nowhere
    path: ../outside
    needs: [a, ghost]
    secrets: {token: plain-text-value}
    config_from: {x: notaref}
  - platfrom
"""
    )
    msg = _problems(text, tmp_path)
    lines = msg.splitlines()
    assert any(":12: stacks.2.source: source 'nowhere' is not in sources" in ln for ln in lines), msg
    assert any(":13: stacks.2.path: '../outside' must be a folder inside the repository" in ln for ln in lines), msg
    assert any(":15: stacks.2.secrets.token: secret values are not written in rebuild.yaml" in ln for ln in lines), msg
    assert "plain-text-value" not in msg
    assert any(":16: stacks.2.config_from.x: 'notaref' is not <stack>.<output>" in ln for ln in lines), msg
    assert any(":17: stacks.3: 'platfrom' is not a built-in stack" in ln for ln in lines), msg
    assert any(":14: stacks.2.needs.1: stack 'b' needs 'ghost', which is not in stacks" in ln for ln in lines), msg
    assert any("the built-in `platform` stack is missing" in ln for ln in lines), msg
    cyc = next(ln for ln in lines if "cycle" in ln)
    assert "a (line 7) -> b (line 11) -> a (line 7)" in cyc and "(fix: remove one of these needs)" in cyc


def test_backend_needs_a_passphrase_source_off_the_state_dir(tmp_path: Path) -> None:
    msg = _problems(HEAD + "backend: {url: 's3://state?region=x', passphrase: hunter2}\n", tmp_path)
    assert ":5: backend.passphrase: the passphrase is not written in rebuild.yaml" in msg
    assert "needs passphrase_file or passphrase_env" in msg and "hunter2" not in msg
    cfg = parse(HEAD + "backend: {url: 's3://state?region=x', passphrase_env: PP}\n", tmp_path / "rebuild.yaml")
    assert cfg.backend.url.startswith("s3://") and cfg.backend.passphrase_env == "PP"


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) == []
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c"]


def _ctx(tmp_path: Path, text: str = GOOD) -> tuple[Context, DesiredState]:
    cfg = parse(text, tmp_path / "rebuild.yaml")
    co = tmp_path / "checkout"
    (co / "infra" / "classes").mkdir(parents=True)
    (co / "infra" / "classes" / "Pulumi.yaml").write_text("name: classes\nruntime: python\n")
    (co / "infra" / "facts").mkdir(parents=True)
    (co / "infra" / "facts" / "Pulumi.yaml").write_text("name: facts\nruntime: yaml\n")
    (tmp_path / "secret.txt").write_text("s3cret\n")
    state = SourceState(SourceSpec("demo", "."), "http://x", Checkout("demo", ".", "main", "f" * 40, co, 0))
    return Context(cfg, tmp_path / "state"), DesiredState([state])


def test_resolve_reads_secrets_and_applies_drill_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, desired = _ctx(tmp_path)
    monkeypatch.setenv("API_TOKEN", "tok")
    res = resolve_stacks(ctx, desired)
    assert res["classes"].secrets == {"apiToken": "tok", "db:password": "s3cret"}
    assert res["facts"].config == {}
    drill = Context(ctx.config, ctx.root, drill_backend=tmp_path / "drill")
    assert resolve_stacks(drill, desired)["facts"].config == {"size": "small"}
    cfg = stack_config(res["classes"], {"cluster": {"kubeconfig": ("apiVersion: v1", True)}})
    assert cfg["kubernetes:kubeconfig"].secret and cfg["apiToken"].secret and cfg["replicas"] == 2


def test_resolve_reports_every_bad_project_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, desired = _ctx(tmp_path)
    monkeypatch.delenv("API_TOKEN", raising=False)
    co = desired.sources[0].checkout.path
    (co / "infra" / "facts" / "Pulumi.yaml").unlink()
    (co / "infra" / "classes").rename(co / "elsewhere")
    os.symlink(tmp_path, co / "infra" / "classes")  # a link out of the repository
    with pytest.raises(ConfigError) as e:
        resolve_stacks(ctx, desired)
    msg = e.value.message
    assert f"{ctx.config.path}:7: stack classes: path infra/classes in source demo at ffffffffffff leads outside" in msg
    assert f"{ctx.config.path}:13: stack facts: infra/facts in source demo at ffffffffffff has no Pulumi.yaml" in msg
    (co / "infra" / "classes").unlink()
    (co / "elsewhere").rename(co / "infra" / "classes")
    with pytest.raises(ConfigError) as e:
        resolve_stacks(ctx, desired)
    assert "stack classes: secret apiToken: variable $API_TOKEN is not set" in e.value.message


def _specs(*pairs: tuple[str, tuple[str, ...]]) -> tuple[StackSpec, ...]:
    return tuple(StackSpec(n, source="" if n in ("cluster", "platform") else "demo", needs=d) for n, d in pairs)


def test_dag_runs_independent_stacks_at_once_and_in_order() -> None:
    specs = _specs(("cluster", ()), ("a", ("cluster",)), ("b", ("cluster",)), ("c", ("a", "b")), ("platform", ()))
    started: list[str] = []
    both = threading.Barrier(2, timeout=10)  # a and b must be running at the same time to pass it

    def run(spec: StackSpec) -> dict[str, Any]:
        started.append(spec.name)
        if spec.name in ("a", "b"):
            both.wait()
        return {"create": 1}

    phases, changed = Phases(), {}
    dag = run_dag(specs, run, phases, changed)
    assert not dag.errors and set(dag.state.values()) == {"done"}
    assert started.index("cluster") < min(started.index("a"), started.index("b")) < started.index("c")
    assert set(changed) == {"cluster", "stack:a", "stack:b", "stack:c", "platform"}
    assert {p.name for p in phases.items} == set(changed)


def test_a_failed_stack_stops_its_dependants_and_keeps_the_others() -> None:
    specs = _specs(("cluster", ()), ("a", ("cluster",)), ("b", ("cluster",)), ("c", ("a",)), ("platform", ()))

    def run(spec: StackSpec) -> dict[str, Any]:
        if spec.name == "a":
            raise StackError("stack a: the program failed", fix="read it")
        return {}

    phases, changed = Phases(), {}
    dag = run_dag(specs, run, phases, changed, max_workers=1)
    assert dag.state == {"cluster": "done", "a": "failed", "b": "done", "c": "skipped", "platform": "done"}
    skipped = next(p for p in phases.items if p.name == "stack:c")
    assert skipped.status == "skipped" and "needs a" in skipped.detail
    assert next(p for p in phases.items if p.name == "stack:a").status == "failed"
    with pytest.raises(StackError, match="stack a: the program failed"):
        raise_first(dag)


def test_overlapping_phases_count_once_in_the_wall_time() -> None:
    from rebuild.core.model import PhaseTiming

    phases = Phases(
        [
            PhaseTiming("desired", 1.0, start=0.0),
            PhaseTiming("stack:a", 4.0, start=1.0),
            PhaseTiming("stack:b", 2.0, start=1.5),  # ran during stack:a
            PhaseTiming("platform", 1.0, start=5.0),
            PhaseTiming("teardown", 3.0, start=6.0),
        ]
    )
    assert phases.total == pytest.approx(9.0)
    assert phases.wall(exclude=("teardown",)) == pytest.approx(6.0)
    assert "start" not in phases.items[0].to_dict()


def _checkpoint(backend: Path, project: str, stack: str, resources: list[dict[str, Any]]) -> None:
    import json

    f = backend / ".pulumi" / "stacks" / project / f"{stack}.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"version": 3, "checkpoint": {"stack": stack, "latest": {"resources": resources}}}))


def test_a_drill_destroys_only_stacks_with_something_outside_its_cluster(tmp_path: Path) -> None:
    from rebuild.drills.drill import only_in_drill_cluster

    project = tmp_path / "proj"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: classes\nruntime: python\n")
    spec = StackSpec("classes", source="demo", stack="demo", config_from={"kubernetes:kubeconfig": "cluster.kubeconfig"})
    default = "urn:pulumi:demo::classes::pulumi:providers:kubernetes::default_4_25_0::0c0f"
    k8s_only = [
        {"type": "pulumi:pulumi:Stack", "urn": "urn:pulumi:demo::classes::pulumi:pulumi:Stack::classes-demo"},
        {"type": "pulumi:providers:kubernetes", "urn": default.rsplit("::", 1)[0]},
        {"type": "pulumi:providers:pulumi", "urn": "urn:pulumi:demo::classes::pulumi:providers:pulumi::default"},
        {"type": "pulumi:pulumi:StackReference", "urn": "urn:pulumi:demo::classes::pulumi:pulumi:StackReference::ref"},
        {"type": "kubernetes:scheduling.k8s.io/v1:PriorityClass", "urn": "urn:x::pc", "provider": default},
    ]
    drill = tmp_path / "drill"
    _checkpoint(drill, "classes", "demo", k8s_only)
    assert only_in_drill_cluster(drill, spec, project)
    # an explicit provider may point at any cluster; a cloud resource lives outside it; no state: unknown
    explicit = "urn:pulumi:demo::classes::pulumi:providers:kubernetes::prod::1"
    other = tmp_path / "other"
    _checkpoint(other, "classes", "demo", [{"type": "kubernetes:core/v1:ConfigMap", "urn": "urn:y", "provider": explicit}])
    assert not only_in_drill_cluster(other, spec, project)
    cloud = tmp_path / "cloud"
    _checkpoint(cloud, "classes", "demo", [*k8s_only, {"type": "aws:s3/bucket:Bucket", "urn": "urn:z"}])
    assert not only_in_drill_cluster(cloud, spec, project)
    assert not only_in_drill_cluster(tmp_path / "none", spec, project)
    unwired = StackSpec("classes", source="demo", stack="demo")
    assert not only_in_drill_cluster(drill, unwired, project)
