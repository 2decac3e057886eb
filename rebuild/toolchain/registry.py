"""Where the pinned tools live and how to run them: the cache layout, versions.toml, the environment.

Why apart from the recipes: everything that runs a tool (the Pulumi driver, the local cluster,
Flux's controllers, Gitea) needs these paths and nothing of how a tool is built, and the build
recipes need them too; :class:`ToolPaths` is the part of :class:`~rebuild.toolchain.tools.Toolchain`
both sides share. No I/O beyond stat.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rebuild.core.errors import ToolchainError

STAMP = ".complete"


def cache_root() -> Path:
    """Where tools are cached: $REBUILD_CACHE, else $XDG_CACHE_HOME/rebuild, else ~/.cache/rebuild."""
    env = os.environ.get("REBUILD_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return (base / "rebuild").resolve()


def langhost_digest() -> str:
    import hashlib

    src = resources.files("rebuild.toolchain").joinpath("langhost", "main.go").read_bytes()
    return hashlib.sha256(src).hexdigest()[:10]


def load_versions() -> dict[str, dict[str, str]]:
    text = resources.files("rebuild").joinpath("versions.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {k: {kk: str(vv) for kk, vv in v.items()} for k, v in data.items()}


@dataclass
class ToolPaths:
    """Paths of installed tools, keyed by pinned version; no I/O beyond stat on construction."""

    root: Path = field(default_factory=cache_root)
    versions: dict[str, dict[str, str]] = field(default_factory=load_versions)

    def tool_dir(self, name: str) -> Path:
        return self.root / "tools" / name / self.cache_key(name)

    def cache_key(self, name: str) -> str:
        """The pinned version; for tools built from rebuild's own sources, plus their hash,
        so an edited source is rebuilt instead of silently reusing the old binary."""
        version = self.versions[name]["version"]
        if name == "pulumi-language-python":
            return f"{version}-{langhost_digest()}"
        return version

    def bin_dir(self, name: str) -> Path:
        return self.tool_dir(name) / "bin"

    @property
    def pulumi_home(self) -> Path:
        return self.root / "pulumi-home"

    def binary(self, tool: str, exe: str | None = None) -> Path:
        path = self.bin_dir(tool) / (exe or tool)
        if not path.exists():
            raise ToolchainError(
                f"{exe or tool} ({tool} {self.versions[tool]['version']}) is not installed at {path}",
                fix=f"run `{self.install_hint(tool)}`",
            )
        return path

    def install_hint(self, tool: str) -> str:
        """The command that installs a tool: optional ones must be asked for by name."""
        return f"rebuild toolchain install --with {tool}" if self.is_optional(tool) else "rebuild toolchain install"

    def kwok_stages(self) -> Path:
        return self.tool_dir("kwok") / "stages.yaml"

    def flux_crds(self, controller: str) -> list[Path]:
        """The CRD manifests shipped with a Flux controller (``source-controller``,
        ``kustomize-controller`` or the optional ``helm-controller``), copied from its
        module's ``config/crd/bases``."""
        crds = sorted((self.tool_dir(controller) / "crds").glob("*.yaml"))
        if not crds:
            raise ToolchainError(
                f"no CRDs for {controller} {self.versions[controller]['version']} under {self.tool_dir(controller) / 'crds'}",
                fix=f"run `{self.install_hint(controller)}`",
            )
        return crds

    def flux_config(self, controller: str) -> Path:
        """The controller's upstream ``config/`` kustomize bases (crd, rbac, manager, default)."""
        return self.tool_dir(controller) / "config"

    def argocd_install_manifest(self) -> Path:
        """Argo CD's ``manifests/install.yaml`` of the pinned version (from its Go module)."""
        path = self.tool_dir("argocd-manifests") / "install.yaml"
        if not path.exists():
            raise ToolchainError(f"Argo CD install manifest missing at {path}", fix="run `rebuild toolchain install`")
        return path

    def gitea_static_root(self) -> Path:
        """Gitea's STATIC_ROOT_PATH: templates/, options/ and public/ copied from its module
        (the binary is built without the ``bindata`` tag, so it reads them from disk)."""
        return self.tool_dir("gitea") / "static"

    def installed(self, name: str) -> bool:
        return (self.tool_dir(name) / STAMP).exists()

    def is_optional(self, name: str) -> bool:
        """Whether versions.toml marks a tool ``optional = true`` (not part of a plain install).
        ``load_versions`` stringifies values, so the TOML boolean arrives as ``"True"``."""
        return self.versions.get(name, {}).get("optional", "").lower() == "true"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for running pulumi and friends offline, with our binaries first on PATH."""
        env = dict(os.environ if base is None else base)
        # Only pulumi's folder: the language host is linked into it (see _bundle_language_host),
        # where the engine looks for bundled plugins first.
        env["PATH"] = os.pathsep.join([str(self.bin_dir("pulumi")), env.get("PATH", "")])
        env["PULUMI_HOME"] = str(self.pulumi_home)
        env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
        env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
        env.setdefault("PULUMI_PYTHON_CMD", sys.executable)
        return env

    def plugin_dir(self) -> Path:
        v = self.versions["pulumi-resource-kubernetes"]["version"]
        return self.pulumi_home / "plugins" / f"resource-kubernetes-v{v}"
