"""The reconciler phase of `up`: the reconciler runs, and is Ready at every source's commit.

The platform stack created the reconciler's objects; this phase makes sure its controllers
run (on the local provider: as host processes, restarted if one dies while we wait) and
waits until Flux reports every source and every Kustomization followed from git Ready at the
revision `up` loaded. What to watch is decided here, from the desired state; the polling
loop itself is ``rebuild.reconcilers.flux_wait``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rebuild.adapters.kube import Kube
from rebuild.core.errors import ConfigError
from rebuild.reconcilers import flux
from rebuild.reconcilers.flux_wait import Watched, wait_ready
from rebuild.recover.context import Context
from rebuild.recover.sources import DesiredState


def start_reconciler(ctx: Context, kube: Kube, kubeconfig: Path, desired: DesiredState) -> dict[str, Any]:
    """Make sure the reconciler runs and is Ready at every source's revision; return what it had to do."""
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
        from rebuild.reconcilers import flux_local

        controllers = flux_local.FluxLocal(ctx.layout.flux_dir(ctx.config.cluster.name), kubeconfig, toolchain=ctx.toolchain)
        logs = controllers.logs_dir
        started = controllers.ensure_running()
        did["controllers_started"] = started
        if started:
            ctx.progress(f"reconciler: started {', '.join(flux_local.CONTROLLERS)} (host processes)")

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
    wait_ready(
        kube, _watched(desired), desired.objects, did, progress=ctx.progress, timeout=timeout, watchdog=watchdog, logs=logs
    )
