"""The reconciler phase of `up`: the reconciler runs, and is Ready at every source's commit.

The platform stack created the reconciler's objects; this phase makes sure its controllers
run (on the local provider: as host processes, restarted if one dies while we wait) and
waits until Flux reports every source and every Kustomization followed from git Ready at the
revision `up` loaded. What to watch is decided here, from the desired state; the polling
loop itself is ``rebuild.reconcilers.flux_wait``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.adapters.kube import Kube
from rebuild.core.errors import ConfigError
from rebuild.reconcilers import flux
from rebuild.reconcilers.flux_wait import Watched, wait_ready
from rebuild.recover.context import Context
from rebuild.recover.sources import DesiredState

if TYPE_CHECKING:
    from rebuild.reconcilers.flux_local import FluxLocal


class EarlyStart:
    """Starts the local provider's Flux controllers in the background as soon as the cluster
    phase is done, so their start (processes, informer caches: 2 to 3 s) and their first
    reconciles overlap the platform phase instead of following it.

    Why: on a real cluster the controllers are Deployments the platform stack applies, and they
    begin reconciling the moment Pulumi creates the GitRepository, while Pulumi is still
    finishing; host processes started only after the platform phase put that time on the
    recovery time. The reconciler phase :meth:`join` s it and does the rest (a controller that
    died meanwhile is restarted there, an error here is met again there and reported).
    """

    def __init__(self, ctx: Context, kubeconfig: Path) -> None:
        self.ctx, self.kubeconfig = ctx, kubeconfig
        self._thread: threading.Thread | None = None
        self._done = threading.Event()  # the platform phase is over: stop waiting for its CRDs
        self.started = False

    @staticmethod
    def applies(ctx: Context) -> bool:
        return ctx.config.cluster.provider == "local" and ctx.config.reconciler.kind == "flux"

    def begin(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flux-early-start", daemon=False)
            self._thread.start()

    def _run(self) -> None:
        try:
            # the platform stack creates the CRDs and the namespace (Pulumi would refuse to
            # create what already exists); the controllers start once they are there
            self.started = _controllers(self.ctx, self.kubeconfig).ensure_running(made_by=self._done)
        except Exception:  # met again, and reported, by the reconciler phase
            return
        if self.started:
            _started(self.ctx, early=True)

    def join(self) -> bool:
        """Wait for the background start (seconds at most); True if it started the controllers.

        Called once the platform phase is over (done or failed): a start still waiting for the
        platform's CRDs gives up, and the reconciler phase starts the controllers itself."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        return self.started


def _controllers(ctx: Context, kubeconfig: Path) -> FluxLocal:
    from rebuild.reconcilers.flux_local import FluxLocal  # only the local provider needs it

    return FluxLocal(ctx.layout.flux_dir(ctx.config.cluster.name), kubeconfig, toolchain=ctx.toolchain)


def _started(ctx: Context, early: bool = False) -> None:
    from rebuild.reconcilers.flux_local import CONTROLLERS

    if early:  # not a "reconciler:" line: the platform phase is the one running
        ctx.progress(f"flux: started {', '.join(CONTROLLERS)} (host processes, while the platform phase runs)")
    else:
        ctx.progress(f"reconciler: started {', '.join(CONTROLLERS)} (host processes)")


def start_reconciler(
    ctx: Context, kube: Kube, kubeconfig: Path, desired: DesiredState, early: EarlyStart | None = None
) -> dict[str, Any]:
    """Make sure the reconciler runs and is Ready at every source's revision; return what it had to do.

    ``early``: the background start `up` began after the cluster phase (joined here)."""
    rc = ctx.config.reconciler
    if rc.kind != "flux":
        raise ConfigError(
            "reconciler argocd: the Argo CD controller cannot run on this machine, so `up` cannot wait for it to sync",
            fix="use reconciler.kind: flux here; the argocd install and Applications are created by the platform stack",
        )
    did: dict[str, Any] = {}
    watchdog: Callable[[], None] | None = None
    logs: Path | None = None
    if ctx.config.cluster.provider == "local":
        controllers = _controllers(ctx, kubeconfig)
        logs = controllers.logs_dir
        started_early = early.join() if early is not None else False
        if started_early:
            dead = [c.name for c in controllers.status().components if not c.alive]
            if dead:  # died between the early start and now
                ctx.progress(f"reconciler: {', '.join(dead)} stopped running; restarting the Flux controllers")
                did["controllers_restarted"] = 1
        started = controllers.ensure_running()
        did["controllers_started"] = started or started_early
        if started:
            _started(ctx)

        def watchdog() -> None:
            # A controller that dies while we wait (OOM, kill) would turn the wait into a timeout.
            dead = [c.name for c in controllers.status().components if not c.alive]
            if dead:
                ctx.progress(f"reconciler: {', '.join(dead)} stopped running; restarting the Flux controllers")
                controllers.ensure_running()
                did["controllers_restarted"] = did.get("controllers_restarted", 0) + 1

    wait_flux_ready(ctx, kube, desired, did, watchdog=watchdog, logs=logs)
    return {k: v for k, v in did.items() if v}


def _watched(desired: DesiredState) -> list[Watched]:
    """Each source's GitRepository and Kustomization, and every Kustomization git declares under it
    (those of other sources: Ready at any revision; suspended ones: not at all)."""
    out: list[Watched] = []
    for s in desired.sources:
        out.append(Watched(s.checkout.sha, flux.SOURCE_API, "GitRepository", s.flux_repo, s.flux_namespace))
        out.append(Watched(s.checkout.sha, flux.KUSTOMIZE_API, "Kustomization", s.flux_name, s.flux_namespace))
        for node in s.tree.nodes[1:] if s.tree else []:
            assert node.ref is not None
            if node.suspended:
                continue  # git keeps it paused: it will never report Ready
            out.append(
                Watched(
                    s.checkout.sha,
                    flux.KUSTOMIZE_API,
                    "Kustomization",
                    node.ref.name,
                    node.ref.namespace,
                    node.source,
                    not node.followed,
                )
            )
    return out


def wait_flux_ready(
    ctx: Context,
    kube: Kube,
    desired: DesiredState,
    did: dict[str, Any],
    timeout: float = 300,
    watchdog: Callable[[], None] | None = None,
    logs: Path | None = None,
) -> None:
    """Wait for every source of ``desired`` and the Kustomizations followed from it (see
    :func:`rebuild.reconcilers.flux_wait.wait_ready`); ``logs``: the host controllers' logs."""
    watched = _watched(desired)
    revisions = sorted({w.sha[:12] for w in watched})
    if watched:
        ctx.progress(f"reconciler: waiting until {len(watched)} Flux object(s) are Ready at {', '.join(revisions)}")
    wait_ready(kube, watched, desired.objects, did, progress=ctx.progress, timeout=timeout, watchdog=watchdog, logs=logs)
