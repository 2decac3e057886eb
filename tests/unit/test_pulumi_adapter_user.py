"""The Pulumi adapter's logic for the user's own projects and configurable backends, without the engine:
runtime detection, what the workspace copy leaves out, the virtualenv cache, error messages with
the user's file:line, backends and their passphrases, preview steps."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.pulumi import Backend, Pulumi, UserProject, classify
from rebuild.adapters.pulumi import project as proj
from rebuild.adapters.pulumi.backend import create_passphrase, redact_url, stack_settings
from rebuild.adapters.pulumi.command import child_env, missing_plugin
from rebuild.adapters.pulumi.stack import StackResult, preview_step
from rebuild.core.errors import ConfigError, PluginMissingError, ProgramError, StackError, ToolchainError
from rebuild.toolchain.tools import Toolchain

# ------------------------------------------------------------------------------------ runtimes


@pytest.mark.parametrize(
    ("runtime", "name"),
    [
        ("python", "python"),
        ({"name": "yaml"}, "yaml"),
        ({"name": "Python", "options": {"virtualenv": "v"}}, "python"),
        (None, ""),
    ],
)
def test_runtime_name_from_string_or_mapping(runtime: Any, name: str) -> None:
    assert proj.runtime_name({"name": "p", "runtime": runtime}) == name


@pytest.mark.parametrize("runtime", ["nodejs", "go", "dotnet", "java", None])
def test_unsupported_runtimes_are_config_errors_naming_the_entry(runtime: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        proj.check_runtime("dns", {"name": "p", "runtime": runtime}, Path("/repo/infra/dns/Pulumi.yaml"))
    assert err.value.message.startswith("stack dns: /repo/infra/dns/Pulumi.yaml: runtime ")
    assert "is not supported (python, yaml)" in err.value.message


def test_python_runtime_gets_the_cached_virtualenv_and_no_backend_of_its_own() -> None:
    doc = {
        "name": "p",
        "runtime": {"name": "python", "options": {"virtualenv": "venv", "toolchain": "uv", "typechecker": "mypy"}},
        "backend": {"url": "s3://production"},
    }
    out = proj.workspace_project_doc(doc, "python", Path("/cache/venvs/abc"))
    assert out == {
        "name": "p",
        "runtime": {"name": "python", "options": {"typechecker": "mypy", "virtualenv": "/cache/venvs/abc"}},
    }
    assert doc["backend"] == {"url": "s3://production"}  # the input is not changed
    assert proj.workspace_project_doc({"name": "p", "runtime": "python"}, "python", None)["runtime"] == "python"
    assert proj.workspace_project_doc({"name": "p", "runtime": "python"}, "python", Path("/v"))["runtime"] == {
        "name": "python",
        "options": {"virtualenv": "/v"},
    }


def test_project_file_missing_or_nameless_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no Pulumi\.yaml"):
        proj.load_project(tmp_path)
    (tmp_path / "Pulumi.yml").write_text("runtime: yaml\n")
    with pytest.raises(ConfigError, match="no `name:`"):
        proj.load_project(tmp_path)


# ------------------------------------------------------------------------------- workspace copy


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_copy_leaves_out_vcs_virtualenvs_caches_and_the_repos_stack_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = {
        "Pulumi.yaml": "name: p\n",
        "Pulumi.prod.yaml": "config: {}\n",
        "Pulumi.dev.yml": "config: {}\n",
        "__main__.py": "import lib\n",
        "lib/__init__.py": "",
        "lib/__pycache__/x.cpython-311.pyc": "",
        "lib/Pulumi.nested.yaml": "kept: only the top level holds stack files\n",
        "requirements.txt": "pulumi==3.272.0\n",
        ".git/HEAD": "ref\n",
        "venv/pyvenv.cfg": "home\n",
        ".venv/bin/python": "",
        "env-custom/pyvenv.cfg": "home\n",
        "env-custom/lib/site.py": "",
        "node_modules/x/index.js": "",
        "data/config.json": "{}",
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    before = _tree(src)
    dest = tmp_path / "ws"
    proj.sync_copy(src, dest)
    assert _tree(dest) == ["__main__.py", "data/config.json", "lib/Pulumi.nested.yaml", "lib/__init__.py", "requirements.txt"]
    assert _tree(src) == before  # the user's folder is read only

    # Pulumi's own files at the top of the copy survive a refresh; files gone from the source go.
    (dest / "Pulumi.yaml").write_text("name: p\n")
    (dest / "Pulumi.dev.yaml").write_text("encryptionsalt: x\n")
    (src / "data" / "config.json").unlink()
    (src / "data").rmdir()
    (src / "__main__.py").write_text("import lib  # changed\n")
    os.utime(src / "__main__.py", (time.time() + 5, time.time() + 5))
    proj.sync_copy(src, dest)
    assert _tree(dest) == [
        "Pulumi.dev.yaml",
        "Pulumi.yaml",
        "__main__.py",
        "lib/Pulumi.nested.yaml",
        "lib/__init__.py",
        "requirements.txt",
    ]
    assert (dest / "__main__.py").read_text() == "import lib  # changed\n"
    assert not (dest / "data").exists()


def test_same_size_same_second_edits_are_still_copied(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "ws"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    proj.sync_copy(src, dest)
    mtime = (src / "a.py").stat().st_mtime
    (src / "a.py").write_text("x = 2\n")
    os.utime(src / "a.py", (mtime, mtime))
    proj.sync_copy(src, dest)
    assert (dest / "a.py").read_text() == "x = 2\n"


# ----------------------------------------------------------------------------------- virtualenvs


def test_venv_key_is_the_requirements_hash_for_one_python() -> None:
    a = proj.venv_key(b"pulumi==3.272.0\n", "cpython-3.11")
    assert len(a) == 12 and int(a, 16) >= 0
    assert a == proj.venv_key(b"pulumi==3.272.0\n", "cpython-3.11")
    assert a != proj.venv_key(b"pulumi==3.272.1\n", "cpython-3.11")
    assert a != proj.venv_key(b"pulumi==3.272.0\n", "cpython-3.12")
    assert proj.venv_key(b"x") == proj.venv_key(b"x", f"cpython-{sys.version_info.major}.{sys.version_info.minor}")


class FakeRun:
    """subprocess.run for ensure_venv: `-m venv` makes the folder, pip succeeds or fails."""

    def __init__(self, pip_output: str = "", pip_code: int = 0, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.pip_output, self.pip_code, self.delay = pip_output, pip_code, delay
        self.lock = threading.Lock()

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        with self.lock:
            self.calls.append(list(argv))
        time.sleep(self.delay)
        if argv[1:3] == ["-m", "venv"]:
            (Path(argv[3]) / "bin").mkdir(parents=True)
            return subprocess.CompletedProcess(argv, 0, "", "")
        assert argv[1:4] == ["-m", "pip", "install"] and "-r" in argv
        return subprocess.CompletedProcess(argv, self.pip_code, self.pip_output, "")


def test_venv_is_built_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = tmp_path / "ws" / "requirements.txt"
    req.parent.mkdir()
    req.write_text("pulumi==3.272.0\n")
    fake = FakeRun()
    monkeypatch.setattr(proj.subprocess, "run", fake)
    said: list[str] = []
    venv = proj.ensure_venv("base", req, tmp_path / "venvs", said.append)
    assert venv == tmp_path / "venvs" / proj.venv_key(req.read_bytes())
    assert (venv / proj.VENV_MARK).exists()
    assert [c[1:4] for c in fake.calls] == [["-m", "venv", str(venv)], ["-m", "pip", "install"]]
    assert fake.calls[1][0] == str(venv / "bin" / "python") and fake.calls[1][-1] == str(req)
    assert "--disable-pip-version-check" in fake.calls[1]
    assert said and "installing requirements.txt" in said[0]
    assert proj.ensure_venv("base", req, tmp_path / "venvs") == venv
    assert len(fake.calls) == 2  # nothing installed the second time


def test_venv_half_built_is_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("pulumi==3.272.0\n")
    half = tmp_path / "venvs" / proj.venv_key(req.read_bytes())
    (half / "lib").mkdir(parents=True)  # a build killed before its mark
    monkeypatch.setattr(proj.subprocess, "run", FakeRun())
    assert proj.ensure_venv("base", req, tmp_path / "venvs") == half
    assert not (half / "lib").exists() and (half / proj.VENV_MARK).exists()


def test_two_concurrent_builds_of_one_venv_install_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("pulumi==3.272.0\n")
    fake = FakeRun(delay=0.2)
    monkeypatch.setattr(proj.subprocess, "run", fake)
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(proj.ensure_venv("s", req, tmp_path / "venvs"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got) == 3
    assert len(fake.calls) == 2


def test_pip_failure_names_the_project_the_file_and_pips_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = tmp_path / "ws" / "requirements.txt"
    req.parent.mkdir()
    req.write_text("pulumi==0.0.0\n")
    out = (
        "Collecting pulumi==0.0.0\n"
        "ERROR: Could not find a version that satisfies the requirement pulumi==0.0.0 (from versions: 3.0.0)\n"
        "ERROR: No matching distribution found for pulumi==0.0.0\n"
    )
    monkeypatch.setattr(proj.subprocess, "run", FakeRun(out, 1))
    shown = Path("/checkout/infra/base/requirements.txt")
    with pytest.raises(ConfigError) as err:
        proj.ensure_venv("base", req, tmp_path / "venvs", shown=shown)
    msg = err.value.message
    assert msg.startswith(f"stack base: {shown} could not be installed: ERROR: Could not find a version")
    assert "No matching distribution found for pulumi==0.0.0" in msg and "\n" not in msg
    assert err.value.fix and "pin versions that exist on PyPI" in err.value.fix
    assert not list((tmp_path / "venvs").glob("*/"))  # nothing half-built is left to be reused


def test_python_project_without_requirements_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        proj.requirements_file("base", tmp_path)
    assert "stack base" in err.value.message and str(tmp_path / "requirements.txt") in err.value.message


# ------------------------------------------------------------------------------------ errors

WS = Path("/state/stacks/user/base")
SRC = Path("/state/checkouts/infra/0123abc/stacks/base")


def _failure(stdout: str) -> Exception:
    import pulumi.automation as auto

    return auto.errors.create_command_error(auto.CommandResult(stdout=stdout, stderr="", code=255))


TRACEBACK = f"""Updating (dev):
Diagnostics:
  pulumi:pulumi:Stack (base-dev):
    error: Program failed with an unhandled exception:
    Traceback (most recent call last):
      File "/cache/venvs/abc/lib/python3.11/site-packages/pulumi/runtime/stack.py", line 100, in run
        func()
      File "{WS}/__main__.py", line 4, in <module>
        helper.boom(3)
      File "{WS}/lib/helper.py", line 2, in boom
        raise ValueError(f'bad size {{x}}')
      File "/cache/venvs/abc/lib/python3.11/site-packages/pulumi/config.py", line 9, in require
        raise ConfigMissingError(key)
            ^^^^^^^^^^^^^^^^^^^^^^^
    pulumi.config.ConfigMissingError: Missing required configuration variable 'base:size'
        please set a value using the command `pulumi config set base:size <value>`

Resources:
    1 errored
"""


def test_a_raising_program_names_the_entry_and_its_file_line_in_the_checkout() -> None:
    err = classify(_failure(TRACEBACK), stack="dev", project="base", entry="base", workspace=WS, source=SRC)
    assert isinstance(err, ProgramError)
    assert err.message == (
        f"stack base (base/dev): the program failed at {SRC}/lib/helper.py:2: "
        "pulumi.config.ConfigMissingError: Missing required configuration variable 'base:size'"
    )
    assert err.fix and "rebuild.yaml" in err.fix


def test_chained_exceptions_report_the_last_traceback() -> None:
    text = f"""    Traceback (most recent call last):
      File "{WS}/__main__.py", line 3, in <module>
        int("x")
    ValueError: invalid literal

    During handling of the above exception, another exception occurred:

    Traceback (most recent call last):
      File "{WS}/__main__.py", line 5, in <module>
        raise RuntimeError("wrapped")
    RuntimeError: wrapped
"""
    err = classify(_failure("error: Program failed\n" + text), stack="dev", project="base", entry="e", workspace=WS, source=SRC)
    assert isinstance(err, ProgramError) and f"{SRC}/__main__.py:5: RuntimeError: wrapped" in err.message


def test_no_frame_inside_the_project_still_gives_the_exception_line() -> None:
    text = """    error: Program failed with an unhandled exception:
    Traceback (most recent call last):
      File "/usr/lib/python3.11/runpy.py", line 291, in run_path
        exec(code)
    ModuleNotFoundError: No module named 'pulumi_random'
"""
    err = classify(_failure(text), stack="dev", project="base", entry="base", workspace=WS, source=SRC)
    assert isinstance(err, ProgramError)
    assert err.message == "stack base (base/dev): the program failed: ModuleNotFoundError: No module named 'pulumi_random'"


def test_a_yaml_program_error_names_its_line() -> None:
    text = """    Error: resource or variable named "nope" could not be found
      on Pulumi.yaml line 5:
       5:   x: ${nope.value}
"""
    err = classify(_failure(text), stack="dev", project="facts", entry="facts", workspace=WS, source=SRC)
    assert isinstance(err, ProgramError)
    assert err.message == (
        f"stack facts (facts/dev): the program failed at {SRC}/Pulumi.yaml:5: "
        'resource or variable named "nope" could not be found'
    )


def test_the_built_ins_are_classified_as_before() -> None:
    err = classify(_failure(TRACEBACK), stack="dev", project="rebuild-platform")
    assert isinstance(err, ProgramError) and err.message.startswith("stack rebuild-platform/dev: the program failed:\n")
    assert isinstance(classify(_failure("error: something else"), stack="dev", project="p"), StackError)


@pytest.mark.parametrize(
    "text",
    [
        "error: could not load plugin for kubernetes provider 'default_4_18_0': no resource plugin "
        "'pulumi-resource-kubernetes' found in the workspace at version v4.18.0 or on your $PATH, install the plugin "
        "using `pulumi plugin install resource kubernetes v4.18.0`",
        'Error: error resolving type of resource cm: internal error loading package "kubernetes": no resource plugin '
        "'pulumi-resource-kubernetes' found in the workspace at version v4.18.0 or on your $PATH\n  on Pulumi.yaml line 5:",
    ],
)
def test_a_missing_plugin_names_the_version_what_the_toolchain_has_and_how_to_add_it(text: str, tmp_path: Path) -> None:
    (tmp_path / "plugins" / "resource-kubernetes-v4.25.0").mkdir(parents=True)
    (tmp_path / "plugins" / "resource-kubernetes-v4.25.0.lock").write_text("")
    assert missing_plugin(text) == ("kubernetes", "4.18.0")
    err = classify(_failure(text), stack="dev", project="p", entry="storage", workspace=WS, source=SRC, pulumi_home=tmp_path)
    assert isinstance(err, PluginMissingError)
    assert "stack storage" in err.message and "kubernetes 4.18.0" in err.message and "(it has: 4.25.0)" in err.message
    assert err.fix is not None
    assert "pulumi-kubernetes==4.25.0" in err.fix
    assert f"PULUMI_HOME={tmp_path} pulumi plugin install resource kubernetes 4.18.0 --file" in err.fix


# ------------------------------------------------------------------------------------ backends


def test_a_non_file_backend_with_the_passphrase_provider_needs_a_lasting_passphrase(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Backend("s3://state?endpoint=127.0.0.1:9000")
    assert "passphrase_file" in (err.value.fix or "") and "passphrase_env" in (err.value.fix or "")
    Backend("s3://state", passphrase_env="STACKS_PASSPHRASE")
    Backend("s3://state", passphrase_file=tmp_path / "p")
    Backend("s3://state", secrets_provider="awskms://alias/x")
    Backend(tmp_path.as_uri())  # a file backend makes its own
    with pytest.raises(ConfigError):
        Backend("s3://state", passphrase_file=tmp_path / "p", passphrase_env="X")


def test_passphrase_env_reaches_the_child_env_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACKS_PASSPHRASE", "correct horse")
    b = Backend("s3://state?region=x", passphrase_env="STACKS_PASSPHRASE")
    env = b.env(tmp_path)
    assert env == {"PULUMI_BACKEND_URL": "s3://state?region=x", "PULUMI_CONFIG_PASSPHRASE": "correct horse"}
    p = Pulumi(root=tmp_path, toolchain=Toolchain(root=tmp_path / "cache"), backend=b)
    full = p.env()
    assert full["PULUMI_CONFIG_PASSPHRASE"] == "correct horse" and "PULUMI_CONFIG_PASSPHRASE_FILE" not in full
    assert p.backend_dir is None and p.passphrase_file is None
    monkeypatch.delenv("STACKS_PASSPHRASE")
    with pytest.raises(ConfigError, match=r"\$STACKS_PASSPHRASE"):
        b.env(tmp_path)
    # a cloud secrets provider: no passphrase at all
    assert Backend("s3://state", secrets_provider="awskms://alias/x").env(tmp_path) == {"PULUMI_BACKEND_URL": "s3://state"}


def test_default_backend_is_the_state_dirs_with_a_generated_passphrase(tmp_path: Path) -> None:
    p = Pulumi(root=tmp_path, toolchain=Toolchain(root=tmp_path / "cache"))
    env = p.env()
    assert env["PULUMI_BACKEND_URL"] == (tmp_path / "pulumi").as_uri()
    assert env["PULUMI_CONFIG_PASSPHRASE_FILE"] == str(tmp_path / "pulumi" / "passphrase")
    assert env["PULUMI_PYTHON_CMD"] == sys.executable
    p._ensure_backend()
    assert stat.S_IMODE((tmp_path / "pulumi").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "pulumi" / "passphrase").stat().st_mode) == 0o600
    first = (tmp_path / "pulumi" / "passphrase").read_text()
    p._ensure_backend()
    assert (tmp_path / "pulumi" / "passphrase").read_text() == first and len(first) >= 40
    # the same backend spelled as Backend.file: the same workspaces (state dirs made before keep working)
    same = Pulumi(root=tmp_path, backend=Backend.file(tmp_path / "pulumi"))
    assert same.workspaces == p.workspaces == tmp_path / "stacks"


def test_given_passphrase_file_must_exist(tmp_path: Path) -> None:
    b = Backend("s3://state", passphrase_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="does not exist"):
        b.ensure(tmp_path)
    assert not (tmp_path / "missing").exists()  # never generated for a non-file backend


def test_one_passphrase_when_many_threads_create_it_at_once(tmp_path: Path) -> None:
    path = tmp_path / "passphrase"
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(create_passphrase(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert [f.name for f in tmp_path.iterdir()] == ["passphrase"]  # no temporary file left


def test_workspaces_are_per_backend(tmp_path: Path) -> None:
    root = tmp_path / "state"
    drill = Backend.file(tmp_path / "drill" / "pulumi")
    s3a = Backend("s3://a", passphrase_env="P")
    s3b = Backend("s3://b", passphrase_env="P")
    places = {b.workspaces(root) for b in (Backend(), drill, s3a, s3b)}
    assert len(places) == 4
    assert drill.workspaces(root) == (tmp_path / "drill" / "pulumi" / ".rebuild" / "stacks").resolve()
    assert s3a.workspaces(root).parent == root / "stacks"
    assert Backend("file://~/x").folder(root) == Path.home() / "x"


def test_backend_url_is_redacted_for_messages() -> None:
    assert redact_url("s3://user:pw@host:9000/bucket?access_key=AKIA&secret=x") == "s3://host:9000/bucket"


def test_the_shells_passphrase_does_not_override_the_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "for-my-own-stacks")
    env = child_env({"PULUMI_CONFIG_PASSPHRASE_FILE": "/state/pulumi/passphrase"})
    assert "PULUMI_CONFIG_PASSPHRASE" not in env
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "/elsewhere")
    env = child_env({"PULUMI_CONFIG_PASSPHRASE": "x"})
    assert env["PULUMI_CONFIG_PASSPHRASE"] == "x" and "PULUMI_CONFIG_PASSPHRASE_FILE" not in env


def test_stack_settings_come_back_from_the_checkpoint() -> None:
    assert stack_settings({"type": "passphrase", "state": {"salt": "v1:abc"}}) == {"encryptionsalt": "v1:abc"}
    cloud = {"type": "cloud", "state": {"url": "awskms://alias/x", "encryptedkey": "k=="}}
    assert stack_settings(cloud) == {"secretsprovider": "awskms://alias/x", "encryptedkey": "k=="}
    assert stack_settings(None) == {} and stack_settings({"type": "passphrase"}) == {}


# ------------------------------------------------------------------------------------- preview


def test_preview_steps_keep_what_would_be_replaced_or_deleted() -> None:
    urn = "urn:pulumi:dev::facts::kubernetes:storage.k8s.io/v1:StorageClass::fast"
    assert preview_step("replace", urn, "kubernetes:storage.k8s.io/v1:StorageClass") == {
        "op": "replace",
        "urn": urn,
        "type": "kubernetes:storage.k8s.io/v1:StorageClass",
        "name": "fast",
    }
    for op in ("create", "same", "update", "read", "refresh"):
        assert preview_step(op, urn, "t") is None
    for op in ("delete", "delete-replaced", "create-replacement", "discard"):
        assert preview_step(op, urn, "t") is not None
    res = StackResult("facts", "dev", "preview", 1.0, {"delete": 1}, {}, [preview_step("delete", urn, "t") or {}])
    assert res.to_dict()["steps"][0]["name"] == "fast"
    assert StackResult("p", "s", "up", 0.0, {}, {}).to_dict()["steps"] == []


# --------------------------------------------------------------------------- user workspaces


def _fake_toolchain(tmp_path: Path, *tools: str) -> Toolchain:
    tc = Toolchain(root=tmp_path / "cache")
    for tool in tools:
        b = tc.bin_dir(tool) / tool
        b.parent.mkdir(parents=True, exist_ok=True)
        b.write_text("")
    return tc


def test_a_yaml_project_runs_as_written_and_needs_the_yaml_host(tmp_path: Path) -> None:
    src = tmp_path / "repo" / "facts"
    src.mkdir(parents=True)
    text = "name: facts\nruntime: yaml\n# keep my lines\nbackend:\n  url: s3://prod\noutputs:\n  a: 1\n"
    (src / "Pulumi.yaml").write_text(text)
    with pytest.raises(ToolchainError) as err:
        Pulumi(root=tmp_path / "state", toolchain=_fake_toolchain(tmp_path)).prepare(UserProject("facts", src))
    assert "stack facts" in err.value.message and "YAML language host" in err.value.message
    assert "rebuild toolchain install" in (err.value.fix or "")  # the toolchain's own hint (--with NAME if optional)
    p = Pulumi(root=tmp_path / "state", toolchain=_fake_toolchain(tmp_path, "pulumi-language-yaml"))
    prep = p.prepare(UserProject("facts", src))
    assert prep.workspace == tmp_path / "state" / "stacks" / "user" / "facts"
    assert (prep.workspace / "Pulumi.yaml").read_text() == text  # the host's error lines are the user's lines
    assert (prep.runtime, prep.entry, prep.project, prep.venv) == ("yaml", "facts", "facts", None)
    env = p.env(prep)
    assert "PULUMI_RUNTIME_VIRTUALENV" not in env and "PULUMI_PYTHON_CMD" not in env


def test_a_python_project_runs_in_its_own_virtualenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rebuild.adapters.pulumi.stack as stack_mod

    src = tmp_path / "repo" / "base"
    src.mkdir(parents=True)
    (src / "Pulumi.yaml").write_text("name: base\nruntime:\n  name: python\n  options:\n    virtualenv: venv\n")
    (src / "requirements.txt").write_text("pulumi==3.272.0\n")
    (src / "__main__.py").write_text("import pulumi\n")
    tc = _fake_toolchain(tmp_path)
    seen: list[tuple[str, Path, Path, Path | None]] = []

    def fake_venv(entry: str, req: Path, venvs: Path, progress: Any = None, *, shown: Path | None = None) -> Path:
        seen.append((entry, req, venvs, shown))
        return venvs / "abc"

    monkeypatch.setattr(stack_mod, "ensure_venv", fake_venv)
    a = Pulumi(root=tmp_path / "state", toolchain=tc)
    prep = a.prepare(UserProject("base", src))
    venv = tc.root / "venvs" / "abc"
    assert seen == [("base", prep.workspace / "requirements.txt", tc.root / "venvs", src / "requirements.txt")]
    assert yaml.safe_load((prep.workspace / "Pulumi.yaml").read_text())["runtime"]["options"] == {"virtualenv": str(venv)}
    env = a.env(prep)
    assert env["PULUMI_PYTHON_CMD"] == str(venv / "bin" / "python") and env["PULUMI_RUNTIME_VIRTUALENV"] == str(venv)
    # another backend, another copy: they never share Pulumi.<stack>.yaml
    b = Pulumi(root=tmp_path / "state", toolchain=tc, backend=Backend.file(tmp_path / "drill"))
    assert b.prepare(UserProject("base", src)).workspace != prep.workspace


def test_an_unsupported_runtime_is_refused_before_anything_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "repo" / "web"
    src.mkdir(parents=True)
    (src / "Pulumi.yaml").write_text("name: web\nruntime: nodejs\n")
    p = Pulumi(root=tmp_path / "state", toolchain=_fake_toolchain(tmp_path))
    with pytest.raises(ConfigError, match=r"runtime nodejs is not supported \(python, yaml\)"):
        p.prepare(UserProject("web", src))
    assert not (tmp_path / "state" / "stacks").exists()


def test_file_backend_repairs_run_only_on_file_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rebuild.adapters.pulumi.filestate as filestate

    def never(*_: Any) -> Any:
        raise AssertionError("a file-backend repair ran on an object store")

    for fn in ("repair_state_files", "lock_holders", "remove_dead_locks"):
        monkeypatch.setattr(filestate, fn, never)
    p = Pulumi(root=tmp_path, toolchain=Toolchain(root=tmp_path / "cache"), backend=Backend("s3://b", passphrase_env="P"))
    assert p.repair_state_files("proj", "dev") == [] and p.lock_holders("proj", "dev") == []

    class FakeStack:
        def export_stack(self) -> Any:
            raise AssertionError("not reached")

    assert p._recover_interrupted(FakeStack(), stack_mod_prepared(tmp_path), "dev", None) is False  # type: ignore[arg-type]


def stack_mod_prepared(tmp_path: Path) -> Any:
    from rebuild.adapters.pulumi import Prepared

    return Prepared(tmp_path, "proj", "python")
