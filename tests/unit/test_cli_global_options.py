"""`-o`, `--config` and `--state-dir` work before or after the command (kubectl and flux style).

Run in-process with click's CliRunner on commands that need no cluster: `plan` with a
missing config (exit 2, naming the file), `runbook show` and `cluster status` of an absent
cluster (their result is printed as text or JSON). A spy on `_context` shows what a command
receives, so "reaches the command" is checked, not inferred from an error message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from rebuild.cli import app as cli
from rebuild.core.errors import ConfigError
from rebuild.core.state import state_root
from tests.conftest import REPO

GLOBAL_OPTS = {"-o", "--output", "--config", "--state-dir"}


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI writes REBUILD_STATE_DIR into os.environ; monkeypatch restores it afterwards."""
    d = tmp_path / "default-state"
    monkeypatch.setenv("REBUILD_STATE_DIR", str(d))
    monkeypatch.delenv("CI", raising=False)
    return d


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli.main, args, catch_exceptions=False)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace `_context` (the first thing `plan`, `up`, `verify`, `capture` do) by a spy that stops the command."""
    calls: list[dict[str, Any]] = []

    def spy(obj: cli.Ctx, need: str = "read") -> Any:
        calls.append({"output": obj.output, "config": obj.config, "state_dir": state_root(), "need": need})
        raise ConfigError("spy: stopped before any work", fix="none needed")

    monkeypatch.setattr(cli, "_context", spy)
    return calls


# --------------------------------------------------------------------------- help


def test_top_level_help_lists_the_global_options() -> None:
    r = invoke(["--help"])
    assert r.exit_code == 0
    for opt in ("-o, --output [text|json]", "--config PATH", "--state-dir PATH"):
        assert opt in r.output
    assert "accepted before or after the command" in r.output


def test_command_help_lists_them_too() -> None:
    r = invoke(["up", "--help"])
    assert r.exit_code == 0
    assert "-o, --output [text|json]" in r.output and "--config PATH" in r.output and "--state-dir PATH" in r.output


def _leaves(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in group.commands.items():
        out.append((prefix + name, cmd))
        if isinstance(cmd, click.Group):
            out += _leaves(cmd, prefix + name + " ")
    return out


def test_every_command_and_subgroup_accepts_them() -> None:
    """Defined once, in the group: a command added later gets them without doing anything."""
    commands = _leaves(cli.main)
    assert {"up", "plan", "verify", "capture", "drill", "cluster status", "toolchain doctor", "runbook run"} <= {
        n for n, _ in commands
    }
    for name, cmd in commands:
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert GLOBAL_OPTS <= opts, f"`rebuild {name}` lacks {sorted(GLOBAL_OPTS - opts)}"


# --------------------------------------------------------------------------- --config


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{cfg}", "plan"],
        ["plan", "--config", "{cfg}"],
        ["-o", "json", "plan", "--config", "{cfg}"],
        ["plan", "-o", "json", "--config", "{cfg}"],
    ],
    ids=["before", "after", "o-before-config-after", "both-after"],
)
def test_plan_with_a_missing_config_names_it_and_exits_2(tmp_path: Path, args: list[str]) -> None:
    cfg = tmp_path / "nowhere" / "rebuild.yaml"
    r = invoke([a.replace("{cfg}", str(cfg)) for a in args])
    assert r.exit_code == 2, r.output
    assert f"error: {cfg} does not exist" in r.stderr
    assert "fix: pass --config PATH" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_config_after_the_command_wins(tmp_path: Path, seen: list[dict[str, Any]]) -> None:
    r = invoke(["--config", str(tmp_path / "group.yaml"), "up", "--config", str(tmp_path / "cmd.yaml")])
    assert r.exit_code == 2 and "spy: stopped" in r.stderr
    assert seen == [{"output": "text", "config": tmp_path / "cmd.yaml", "state_dir": seen[0]["state_dir"], "need": "cluster"}]


# --------------------------------------------------------------------------- -o


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["verify"], "text"),
        (["-o", "json", "verify"], "json"),
        (["verify", "-o", "json"], "json"),
        (["verify", "--output=json"], "json"),
        (["-o", "json", "verify", "-o", "text"], "text"),
        (["-o", "text", "verify", "-o", "json"], "json"),
    ],
)
def test_output_reaches_the_command(args: list[str], expected: str, seen: list[dict[str, Any]]) -> None:
    r = invoke(args)
    assert r.exit_code == 2
    assert [c["output"] for c in seen] == [expected]


@pytest.mark.parametrize("args", [["-o", "json", "runbook", "show", "{rb}"], ["runbook", "show", "{rb}", "-o", "json"]])
def test_runbook_show_prints_json_either_way(args: list[str]) -> None:
    rb = str(REPO / "runbooks" / "drill.yaml")
    r = invoke([a.replace("{rb}", rb) for a in args])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, dict) and data.get("steps")


def test_runbook_show_without_o_is_text() -> None:
    r = invoke(["runbook", "show", str(REPO / "runbooks" / "drill.yaml")])
    assert r.exit_code == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.stdout)


@pytest.mark.parametrize(
    "args", [["cluster", "status", "--name", "gone", "-o", "json"], ["cluster", "-o", "json", "status", "--name", "gone"]]
)
def test_cluster_status_json_after_the_command_and_after_the_subgroup(args: list[str]) -> None:
    r = invoke(args)
    assert r.exit_code == 1  # absent cluster: not running
    assert json.loads(r.stdout)["state"] == "absent"


def test_a_bad_output_value_after_the_command_is_a_usage_error() -> None:
    r = invoke(["plan", "-o", "yaml"])
    assert r.exit_code == 2
    assert "'yaml' is not one of 'text', 'json'" in r.stderr


# --------------------------------------------------------------------------- --state-dir


@pytest.mark.parametrize("where", ["before", "after"])
def test_state_dir_reaches_the_command(tmp_path: Path, where: str, seen: list[dict[str, Any]]) -> None:
    d = tmp_path / "chosen"
    args = ["--state-dir", str(d), "capture"] if where == "before" else ["capture", "--state-dir", str(d)]
    r = invoke(args)
    assert r.exit_code == 2
    assert seen[0]["state_dir"] == d.resolve()


def test_state_dir_after_the_command_wins(tmp_path: Path, seen: list[dict[str, Any]]) -> None:
    r = invoke(["--state-dir", str(tmp_path / "a"), "drill", "--state-dir", str(tmp_path / "b")])
    assert r.exit_code == 2
    assert seen[0]["state_dir"] == (tmp_path / "b").resolve()


def test_state_dir_after_the_command_is_checked_by_the_real_plan(tmp_path: Path) -> None:
    """No spy: a valid config, and a --state-dir (after the command) that is a file, not a folder."""
    cfg = tmp_path / "rebuild.yaml"
    (tmp_path / "manifests").mkdir()
    cfg.write_text("sources: [{name: demo, url: ., branch: main, path: manifests}]\ncluster: {provider: local, name: demo}\n")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    r = invoke(["plan", "--config", str(cfg), "--state-dir", str(blocker)])
    assert r.exit_code == 2, r.output
    assert f"the state dir {blocker} is not writable" in r.stderr
    assert "--state-dir DIR" in r.stderr
