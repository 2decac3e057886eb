"""`rebuild up`: the recovery, as a sequence of timed phases driven by rebuild.yaml.

Each phase is idempotent, so a rerun after a failure simply continues:

    desired     fetch every source at its revision, render, validate (nothing touched yet)
    cluster     pulumi up stacks/cluster   (creates or restarts the cluster)
    platform    pulumi up stacks/platform  (namespaces, reconciler CRDs/config, git credentials, SOPS key)
    reconciler  start/await the reconciler, wait until it is Ready at the expected revision
    verify      every desired object present, as declared, and healthy

Broken desired state stops the run in the first phase with every problem and its
file:line (exit 2), before any cluster is created or changed. The orchestration lives here;
each phase's work lives in its own module (``sources``, ``stacks``, ``reconciler``,
``converge``). The clients (Pulumi, Kube) can be passed in; by default they are built from
the context's state dir, the way the CLI runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.adapters.fs import atomic_write
from rebuild.adapters.kube import Kube
from rebuild.core.errors import Interrupted
from rebuild.core.model import Phases
from rebuild.recover.context import Context, kubeconfig_path
from rebuild.recover.converge import VerifyReport, wait_converged
from rebuild.recover.reconciler import start_reconciler
from rebuild.recover.sources import DesiredState, load_desired
from rebuild.recover.stacks import cluster_config, platform_config

if TYPE_CHECKING:
    from rebuild.adapters.pulumi import Pulumi


@dataclass
class UpResult:
    phases: Phases
    desired: DesiredState | None = None
    report: VerifyReport | None = None
    changed: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def converged(self) -> bool:
        return self.report is not None and self.report.converged

    @property
    def nothing_changed(self) -> bool:
        return bool(self.changed) and all(not v for v in self.changed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "nothing_changed": self.nothing_changed,
            "rto_seconds": round(self.phases.total, 3),
            "phases": self.phases.to_list(),
            "sources": [s.to_dict() for s in self.desired.sources] if self.desired else [],
            "changes": self.changed,
            "verify": self.report.to_dict() if self.report else None,
            "error": self.error,
        }


def _changes(summary: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in summary.items() if k != "same" and v}


def up(
    ctx: Context,
    revisions: dict[str, str] | None = None,
    *,
    verify_timeout: float | None = None,
    phases: Phases | None = None,
    pulumi: Pulumi | None = None,
    kube: Kube | None = None,
    into: UpResult | None = None,
) -> UpResult:
    """The recovery. Phases are recorded into ``phases`` (when given) even if a phase raises.

    ``into``: the result to fill, owned by the caller, so what was done before a failure (the
    phases, the desired state, the changes) is the caller's to report without any help from
    the exception; its ``phases`` are used.

    ``pulumi``: the workspace the stacks run in (None: the state dir's). ``kube``: a client for
    the rebuilt cluster, owned by the caller (None: one from the kubeconfig the cluster stack
    writes, opened after the cluster phase and closed at the end).
    """
    result = into if into is not None else UpResult(phases if phases is not None else Phases())
    phases = result.phases
    try:
        return _up(ctx, result, revisions, verify_timeout, pulumi, kube)
    except KeyboardInterrupt:
        phase = next((p.name for p in reversed(phases.items) if p.status == "interrupted"), "")
        stopped = Interrupted(
            f"rebuild up was interrupted during the {phase or 'first'} phase; what was running stopped cleanly",
            fix="rerun the same command: finished phases are checked and skipped quickly, the interrupted one starts over",
            phase=phase,
        )
        raise stopped from None


PHASES = ("cluster", "platform", "reconciler")


def _up(
    ctx: Context,
    result: UpResult,
    revisions: dict[str, str] | None,
    verify_timeout: float | None,
    pulumi: Pulumi | None,
    given: Kube | None,
) -> UpResult:
    phases = result.phases
    with phases.phase("desired"):
        result.desired = desired = load_desired(ctx, revisions)
    for name in PHASES:
        with phases.phase(name):
            result.changed[name] = run_phase(ctx, name, desired, pulumi=pulumi, kube=given)
    kube = given if given is not None else Kube.from_kubeconfig(kubeconfig_path(ctx))
    try:
        with phases.phase("verify") as ph:
            ctx.progress(f"verify: {len(desired.objects)} objects")
            report = wait_converged(kube, desired.objects, ctx.config.verify, timeout=verify_timeout, progress=ctx.progress)
            result.report = report
            s = report.summary()
            ph.detail = f"{s['verified']}/{s['objects']} verified"
            if not report.converged:
                ph.status = "failed"
    finally:
        if given is None:
            kube.close()
    return result


def run_phase(
    ctx: Context, name: str, desired: DesiredState, *, pulumi: Pulumi | None = None, kube: Kube | None = None
) -> dict[str, Any]:
    """One phase of `up`, idempotent on its own (so a runbook can run, and resume, phase by phase).

    ``pulumi`` and ``kube`` as in :func:`up`; a ``kube`` given is not closed here.
    """
    if name == "cluster":
        pulumi = pulumi if pulumi is not None else ctx.pulumi
        ctx.progress(f"cluster: pulumi up stacks/cluster (stack {ctx.stack}, provider {ctx.config.cluster.provider})")
        # refresh: a cluster whose processes died (or a deleted cluster) is noticed and brought back.
        res = pulumi.up(ctx.stacks_dir / "cluster", ctx.stack, cluster_config(ctx), ctx.progress, refresh=True)
        _write_kubeconfig(pulumi.output(ctx.stacks_dir / "cluster", ctx.stack, "kubeconfig"), kubeconfig_path(ctx))
        return _changes(res.summary)
    if name == "platform":
        pulumi = pulumi if pulumi is not None else ctx.pulumi
        ctx.progress("platform: pulumi up stacks/platform")
        res = pulumi.up(ctx.stacks_dir / "platform", ctx.stack, platform_config(ctx, desired), ctx.progress)
        return _changes(res.summary)
    if name == "reconciler":
        if kube is not None:
            return start_reconciler(ctx, kube, kubeconfig_path(ctx), desired)
        client = Kube.from_kubeconfig(kubeconfig_path(ctx))
        try:
            return start_reconciler(ctx, client, kubeconfig_path(ctx), desired)
        finally:
            client.close()
    raise ValueError(f"unknown phase {name!r}")


def _write_kubeconfig(text: str, path: Path) -> None:
    atomic_write(path, text)
