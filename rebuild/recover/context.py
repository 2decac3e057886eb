"""What every step of the recover pipeline is given: the config, the state dir, the toolchain, progress.

A :class:`Context` is built once per command (by the CLI, a drill or a runbook step) and passed
down; the steps take their clients from it or as parameters, never from globals, so a step
can be pointed at another state dir or a fake client. The Pulumi adapter (and with it the
Pulumi SDK, about 0.3 s to import) is imported only by the steps that run a stack: `capture`
and `verify` build a Context too and must not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rebuild.adapters.kube import Kube
from rebuild.core.config import Config
from rebuild.core.errors import ConfigError
from rebuild.core.progress import Progress
from rebuild.core.state import StateLayout
from rebuild.desired.render import KindInfo
from rebuild.toolchain.tools import Toolchain

if TYPE_CHECKING:
    from rebuild.adapters.pulumi import Pulumi


def _quiet(_message: str) -> None:
    return None


@dataclass
class Context:
    config: Config
    root: Path
    toolchain: Toolchain = field(default_factory=Toolchain)
    progress: Progress = field(default=_quiet)
    # The built-in Pulumi programs (cluster, platform); None: the ones shipped in the package.
    programs: Path | None = None
    # A drill's throwaway file backend: every stack (the user's under their own names, so their
    # StackReferences resolve to the drill's copies) runs here, never in the production backend.
    drill_backend: Path | None = None

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.root)

    @property
    def stacks_dir(self) -> Path:
        if self.programs is not None:
            return self.programs
        from rebuild.adapters.pulumi import STACKS_DIR

        return STACKS_DIR

    @property
    def pulumi(self) -> Pulumi:
        """A Pulumi workspace on this state dir (a new one each time: it holds no connection)."""
        from rebuild.adapters.pulumi import Backend, Pulumi

        b = self.config.backend
        if self.drill_backend is not None:
            backend: Backend | None = Backend.file(self.drill_backend)
        elif b.url:
            pfile = Path(b.passphrase_file) if b.passphrase_file else None
            if pfile is not None and not pfile.is_absolute():
                pfile = self.config.base_dir / pfile
            backend = Backend(b.url, b.secrets_provider, pfile, b.passphrase_env)
        else:
            backend = None
        return Pulumi(root=self.root, toolchain=self.toolchain, backend=backend)

    @property
    def stack(self) -> str:
        return self.config.cluster.name

    def reconciler_kinds(self) -> dict[tuple[str, str], KindInfo]:
        """Kinds the reconciler's CRDs will define (so git may use them before the cluster has them)."""
        if self.config.reconciler.kind == "flux":
            return {
                ("source.toolkit.fluxcd.io", k): KindInfo(True, "flux")
                for k in ("GitRepository", "OCIRepository", "HelmRepository", "HelmChart", "Bucket", "ExternalArtifact")
            } | {
                ("kustomize.toolkit.fluxcd.io", "Kustomization"): KindInfo(True, "flux"),
                ("helm.toolkit.fluxcd.io", "HelmRelease"): KindInfo(True, "flux"),
            }
        return {("argoproj.io", k): KindInfo(True, "argocd") for k in ("Application", "AppProject", "ApplicationSet")}


def kubeconfig_path(ctx: Context) -> Path:
    """The kubeconfig `up` wrote from the cluster stack's output."""
    return ctx.layout.stack_kubeconfig(ctx.config.cluster.name)


def open_context(config: Path | None, progress: Progress, need: str = "read") -> Context:
    """Config and state dir for a command; ``need="cluster"`` for commands that may create one.
    Light on imports: ``rebuild capture`` starts its LISTs right after it (rebuild/capture/listing.py)."""
    from rebuild.clusters.base import check_state_dir
    from rebuild.core import config as cfgmod
    from rebuild.core.state import state_root

    cfg = cfgmod.load(config)
    root = state_root()
    check_state_dir(root, need)
    return Context(cfg, root, progress=progress)


def live_kube(ctx: Context) -> Kube:
    """A client for the cluster rebuild.yaml names, as its provider reaches it (verify, capture)."""
    from rebuild.clusters import get_cluster

    c = ctx.config.cluster
    cluster = get_cluster(c.provider, c.name, nodes=c.nodes, context=c.context or None, root=ctx.root)
    kubeconfig = cluster.kubeconfig()
    if not kubeconfig.exists():
        raise ConfigError(f"cluster {c.name} has no kubeconfig at {kubeconfig}", fix="run `rebuild up` first")
    return Kube.from_kubeconfig(kubeconfig)
