"""The user's own Pulumi projects through the adapter, against the real engine and language hosts.

A Python project (its requirements.txt installed into a cached virtualenv) and a Pulumi YAML
project (the toolchain's YAML host) in a temporary folder, on a file backend: up, outputs
(secrets flagged), the YAML one reading the Python one's output through a StackReference,
preview's destructive steps, destroy. Then the failure modes a user meets: a program that
raises (file:line in their folder), a plugin the toolchain lacks, requirements pip cannot
install; and the state dir lost while the backend is kept.
"""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.pulumi import Backend, Pulumi, UserProject
from rebuild.core.errors import ConfigError, PluginMissingError, ProgramError
from tests.conftest import unique

pytestmark = pytest.mark.integration

REQUIREMENTS = "pulumi==3.272.0\n"


def _python_project(folder: Path, name: str, requirements: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "Pulumi.yaml").write_text(
        f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: venv\n", encoding="utf-8"
    )
    (folder / "requirements.txt").write_text(requirements, encoding="utf-8")
    (folder / "__main__.py").write_text(
        "import pulumi\n"
        "\n"
        "cfg = pulumi.Config()\n"
        'pulumi.export("greeting", f"hello {cfg.require(\'who\')}")\n'
        'pulumi.export("size", cfg.get_int("size") or 1)\n'
        'pulumi.export("token", cfg.require_secret("token"))\n',
        encoding="utf-8",
    )
    # What the copy must leave out: the repo's own stack file and a virtualenv.
    (folder / "Pulumi.dev.yaml").write_text("config:\n  x:who: from-the-repo\n", encoding="utf-8")
    (folder / "venv").mkdir()
    (folder / "venv" / "pyvenv.cfg").write_text("home = /nowhere\n", encoding="utf-8")
    return folder


def _yaml_project(folder: Path, name: str, ref: str) -> Path:
    folder.mkdir(parents=True)
    doc = {
        "name": name,
        "runtime": "yaml",
        "resources": {"base": {"type": "pulumi:pulumi:StackReference", "properties": {"name": ref}}},
        "outputs": {"fromBase": '${base.outputs["greeting"]}', "label": "wired"},
    }
    (folder / "Pulumi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return folder


def test_python_and_yaml_projects_up_outputs_reference_and_destroy(tmp_path: Path, state_dir: Path, toolchain: Any) -> None:
    p = Pulumi(root=state_dir, toolchain=toolchain)
    stack = unique("dev")
    py_name, yaml_name = unique("pyproj"), unique("yamlproj")
    # A requirements.txt of its own (a unique comment), so this run builds its virtualenv once.
    requirements = f"# {uuid.uuid4().hex}\n{REQUIREMENTS}"
    py = UserProject("base", _python_project(tmp_path / "repo" / "infra" / "base", py_name, requirements))
    twin = UserProject("twin", _python_project(tmp_path / "repo" / "infra" / "twin", unique("twin"), requirements))
    ym = UserProject("wired", _yaml_project(tmp_path / "repo" / "infra" / "wired", yaml_name, f"organization/{py_name}/{stack}"))
    source_files = sorted(f.relative_to(tmp_path) for f in (tmp_path / "repo").rglob("*"))
    messages: list[str] = []
    venv: Path | None = None
    try:
        # Two projects with the same requirements, at once (as independent stacks run): one
        # virtualenv, built once, and each stack in its own workspace on the shared backend.
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(p.up, py, stack, {"who": "world", "token": _secret("s3cret")}, messages.append),
                pool.submit(p.up, twin, stack, {"who": "twin", "token": _secret("other")}, messages.append),
            ]
            first, second = (r.result() for r in runs)
        assert first.summary == {"create": 1}
        assert first.outputs == {"greeting": "hello world", "size": 1, "token": "[secret]"}
        assert second.outputs["greeting"] == "hello twin"
        assert len([m for m in messages if "installing requirements.txt" in m]) == 1
        assert p.prepare(twin).venv == p.prepare(py).venv
        p.destroy(twin, stack)

        prep = p.prepare(py)
        venv = prep.venv
        assert venv is not None and venv.parent == toolchain.root / "venvs"
        ws = prep.workspace
        assert (ws / "__main__.py").is_file() and not (ws / "venv").exists()
        assert yaml.safe_load((ws / f"Pulumi.{stack}.yaml").read_text())["config"][f"{py_name}:who"] == "world"
        assert not (ws / "Pulumi.dev.yaml").exists()  # the repo's stack file is not used
        assert yaml.safe_load((ws / "Pulumi.yaml").read_text())["runtime"]["options"] == {"virtualenv": str(venv)}
        assert "s3cret" not in (ws / f"Pulumi.{stack}.yaml").read_text()

        # The second run reuses the virtualenv: pip does not run again.
        marker = venv / ".rebuild-complete"
        before = (venv.stat().st_ino, marker.stat().st_mtime_ns, (venv / "bin" / "python").stat().st_ino)
        messages.clear()
        again = p.up(py, stack, {"who": "world", "size": 3, "token": _secret("s3cret")}, messages.append)
        assert not any("installing" in m for m in messages)
        assert (venv.stat().st_ino, marker.stat().st_mtime_ns, (venv / "bin" / "python").stat().st_ino) == before
        assert again.outputs["size"] == 3

        outs = p.outputs(py, stack)
        assert outs["greeting"] == ("hello world", False)
        assert outs["token"] == ("s3cret", True)

        wired = p.up(ym, stack)
        assert wired.outputs["fromBase"] == "hello world"
        assert p.outputs(ym, stack)["label"] == ("wired", False)

        # A preview that would delete a resource says so.
        (ym.dir / "Pulumi.yaml").write_text(
            yaml.safe_dump({"name": yaml_name, "runtime": "yaml", "outputs": {"label": "wired"}}), encoding="utf-8"
        )
        pre = p.preview(ym, stack)
        # (a StackReference is read, not owned: dropping it is a discard; its provider goes with it)
        assert sorted((s["op"], s["type"], s["name"]) for s in pre.steps) == [
            ("delete", "pulumi:providers:pulumi", "default"),
            ("discard", "pulumi:pulumi:StackReference", "base"),
        ]
        assert pre.to_dict()["steps"] == pre.steps

        assert p.destroy(ym, stack).summary == {"delete": 1, "discard": 1}  # the stack; the reference is read, not owned
        assert p.destroy(py, stack).summary.get("delete") == 1
        # No `pulumi login` happened: the shared PULUMI_HOME holds no credentials.
        assert not (toolchain.pulumi_home / "credentials.json").exists()
        # The user's folder was never written to.
        assert sorted(f.relative_to(tmp_path) for f in (tmp_path / "repo").rglob("*")) == source_files
    finally:
        for proj in (ym, py, twin):
            try:
                p.remove(proj, stack, force=True)
            except Exception:
                pass
        if venv is not None:
            shutil.rmtree(venv, ignore_errors=True)
            venv.with_name(f"{venv.name}.lock").unlink(missing_ok=True)


def test_the_failures_a_user_meets_name_their_file_and_fix(tmp_path: Path, state_dir: Path, toolchain: Any) -> None:
    p = Pulumi(root=state_dir, toolchain=toolchain)
    stack = unique("bad")
    # A program that raises, two files deep: the error names the helper's line in the user's folder.
    raiser = _python_project(tmp_path / "repo" / "raiser", unique("raiser"), REQUIREMENTS)
    (raiser / "helper.py").write_text("def boom(x):\n    raise ValueError(f'bad size {x}')\n", encoding="utf-8")
    (raiser / "__main__.py").write_text("import pulumi\nimport helper\n\nhelper.boom(3)\n", encoding="utf-8")
    # A YAML program asking for a provider version the toolchain does not have.
    plugin = tmp_path / "repo" / "plugin"
    plugin.mkdir()
    (plugin / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": unique("plugin"),
                "runtime": "yaml",
                "resources": {
                    "cm": {
                        "type": "kubernetes:core/v1:ConfigMap",
                        "properties": {"metadata": {"name": "x"}},
                        "options": {"version": "4.18.0"},
                    }
                },
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    unpinned = _python_project(tmp_path / "repo" / "unpinned", unique("unpinned"), "rebuild-no-such-package-xyz==1.0\n")
    node = tmp_path / "repo" / "node"
    node.mkdir()
    (node / "Pulumi.yaml").write_text("name: node\nruntime: nodejs\n", encoding="utf-8")
    projects = [UserProject("raiser", raiser), UserProject("plugin", plugin)]
    try:
        with pytest.raises(ProgramError) as err:
            p.up(projects[0], stack)
        assert f"{raiser / 'helper.py'}:2" in err.value.message
        assert "ValueError: bad size 3" in err.value.message and "stack raiser" in err.value.message
        assert "\n" not in err.value.message

        with pytest.raises(PluginMissingError) as perr:
            p.preview(projects[1], stack)
        assert "kubernetes 4.18.0" in perr.value.message and "4.25.0" in perr.value.message
        assert perr.value.fix and "pulumi plugin install resource kubernetes 4.18.0" in perr.value.fix

        with pytest.raises(ConfigError) as cerr:
            p.preview(UserProject("unpinned", unpinned), stack)
        assert str(unpinned / "requirements.txt") in cerr.value.message and "rebuild-no-such-package-xyz" in cerr.value.message
        assert cerr.value.fix and "PyPI" in cerr.value.fix

        with pytest.raises(ConfigError) as nerr:
            p.preview(UserProject("node", node), stack)
        assert "runtime nodejs is not supported (python, yaml)" in nerr.value.message
    finally:
        for proj in projects:
            try:
                p.remove(proj, stack, force=True)
            except Exception:
                pass


def test_state_dir_lost_backend_kept(tmp_path: Path, state_dir: Path, toolchain: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend outlives the state dir (workspace copies, Pulumi.<stack>.yaml and its salt):
    the next run reads the stack, its secrets included, and the stack file's salt is the checkpoint's."""
    backend_dir = tmp_path / "backend"
    first = Pulumi(root=state_dir, toolchain=toolchain, backend=Backend.file(backend_dir))
    stack = unique("dr")
    name = unique("saltproj")
    proj = UserProject("base", _python_project(tmp_path / "repo" / "base", name, REQUIREMENTS))
    first.up(proj, stack, {"who": "a", "token": _secret("kept")})
    ws = first.prepare(proj).workspace
    assert ws.is_relative_to(backend_dir)  # a file backend keeps its workspaces
    salt = yaml.safe_load((ws / f"Pulumi.{stack}.yaml").read_text())["encryptionsalt"]

    # Another machine: a copy of the backend only; the passphrase comes from the environment.
    copy = tmp_path / "elsewhere"
    shutil.copytree(backend_dir, copy)
    shutil.rmtree(copy / ".rebuild")
    monkeypatch.setenv("TEST_STACKS_PASSPHRASE", (backend_dir / "passphrase").read_text())
    (copy / "passphrase").unlink()
    second = Pulumi(
        root=tmp_path / "new-state",
        toolchain=toolchain,
        backend=Backend(copy.as_uri(), passphrase_env="TEST_STACKS_PASSPHRASE"),
    )
    assert second.outputs(proj, stack)["token"] == ("kept", True)
    ws2 = second.prepare(proj).workspace
    assert yaml.safe_load((ws2 / f"Pulumi.{stack}.yaml").read_text())["encryptionsalt"] == salt
    res = second.up(proj, stack, {"who": "b", "token": _secret("kept")})
    assert res.outputs["greeting"] == "hello b"
    assert second.outputs(proj, stack)["token"] == ("kept", True)
    assert second.destroy(proj, stack).summary.get("delete") == 1
    second.remove(proj, stack)
    first.remove(proj, stack, force=True)


def _secret(value: str) -> Any:
    import pulumi.automation as auto

    return auto.ConfigValue(value, secret=True)
