"""The built-in Pulumi programs: shipped in the package, thin entry points in stacks/, run with
rebuild's own Python, and stack state written before the move still readable."""

from __future__ import annotations

import base64
import pickle
import sys
from pathlib import Path

import dill
import pytest
import yaml
from pulumi.dynamic.dynamic import serialize_provider

from rebuild.adapters.pulumi import STACKS_DIR, Pulumi
from rebuild.programs.cluster.resource import ClusterProvider
from tests.conftest import REPO

PROGRAMS = ("cluster", "platform")


def test_the_driver_runs_the_programs_in_the_package() -> None:
    assert STACKS_DIR == Path(__file__).resolve().parents[2] / "rebuild" / "programs"
    for name in PROGRAMS:
        assert (STACKS_DIR / name / "Pulumi.yaml").is_file()
        assert (STACKS_DIR / name / "__main__.py").is_file()


@pytest.mark.parametrize("name", PROGRAMS)
def test_stacks_folder_is_the_package_program_plus_the_checkout_virtualenv(name: str) -> None:
    """stacks/<name> (plain `pulumi up`, README) declares the same project as the shipped program."""
    shipped = yaml.safe_load((STACKS_DIR / name / "Pulumi.yaml").read_text())
    thin = yaml.safe_load((REPO / "stacks" / name / "Pulumi.yaml").read_text())
    assert thin["runtime"].pop("options") == {"virtualenv": "../../.venv"}
    assert thin == shipped
    entry = (REPO / "stacks" / name / "__main__.py").read_text()
    assert f"from rebuild.programs.{name} import main\n\nmain()\n" in entry
    assert (STACKS_DIR / name / "__main__.py").read_text().endswith(f"from rebuild.programs.{name} import main\n\nmain()\n")


def test_workspace_copies_project_file_and_entry_and_uses_rebuilds_python(tmp_path: Path) -> None:
    p = Pulumi(root=tmp_path)
    for src in (STACKS_DIR / "cluster", REPO / "stacks" / "cluster"):
        ws = p.workspace(src)
        # Not resource.py/__init__.py: the program dir is sys.path[0] when Pulumi runs it.
        assert sorted(f.name for f in ws.iterdir()) == ["Pulumi.yaml", "__main__.py"]
        runtime = yaml.safe_load((ws / "Pulumi.yaml").read_text())["runtime"]
        if sys.prefix != sys.base_prefix:
            assert runtime == {"name": "python", "options": {"virtualenv": sys.prefix}}
        else:
            assert runtime == {"name": "python"}
    env = p.env()
    assert env["PULUMI_PYTHON_CMD"] == sys.executable
    assert env.get("PULUMI_RUNTIME_VIRTUALENV") == (sys.prefix if sys.prefix != sys.base_prefix else None)


def test_cluster_provider_pickled_under_the_old_module_path_still_loads() -> None:
    """Stack state holds the dynamic provider as a dill pickle naming its module; refresh and
    destroy unpickle it, so stacks made before the programs moved must keep working."""
    # What serialize_provider wrote for ClusterProvider when it lived in rebuild/stacks/.
    old = (
        b"\x80\x04\x95:\x00\x00\x00\x00\x00\x00\x00\x8c\x1frebuild.stacks.cluster_resource\x94"
        b"\x8c\x0fClusterProvider\x94\x93\x94)\x81\x94."
    )
    assert isinstance(dill.loads(old), ClusterProvider)
    new = base64.b64decode(serialize_provider(ClusterProvider()))
    assert b"rebuild.programs.cluster.resource" in new
    assert isinstance(pickle.loads(new), ClusterProvider)
