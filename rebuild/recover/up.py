"""`rebuild up`: the recovery, as a sequence of timed phases driven by rebuild.yaml.

Each phase is idempotent, so a rerun after a failure simply continues:

    desired       fetch every source at its revision, render, validate, decrypt every SOPS file
                  with the configured age key (in memory), resolve the user's stacks (nothing
                  touched yet)
    cluster       pulumi up stacks/cluster   (creates or restarts the cluster)
    stack:<name>  pulumi up of each of the user's own projects, in DAG order, independent ones at once
    platform      pulumi up stacks/platform  (namespaces, reconciler CRDs/config, git credentials, SOPS key)
    reconciler    start/await the reconciler, wait until it is Ready at the expected revision
    verify      every desired object present, as declared, and healthy

Broken desired state stops the run in the first phase with every problem and its
file:line (exit 2), before any cluster is created or changed; so does a SOPS-encrypted
document that the configured age key cannot decrypt, or no key configured for one
(``encrypted``). The orchestration lives here; each phase's work lives in its own module
(``sources``, ``encrypted``, ``stacks``, ``reconciler``, ``converge``). The clients (Pulumi,
Kube) can be passed in; by default they are built from the context's state dir, the way the
CLI runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.adapters.fs import atomic_write
from rebuild.adapters.kube import Kube
from rebuild.core.errors import Interrupted
from rebuild.core.model import Phases
from rebuild.core.stackspec import StackSpec
from rebuild.recover import encrypted, helmpreflight
from rebuild.recover.context import Context, kubeconfig_path
from rebuild.recover.converge import VerifyReport, wait_converged
from rebuild.recover.infra import (
    ResolvedStack,
    outputs_reader,
    prepare_stacks,
    raise_first,
    repo_paths,
    resolve_stacks,
    run_dag,
    run_fingerprint,
    stack_config,
    user_project,
)
from rebuild.recover.reconciler import EarlyStart, start_reconciler
from rebuild.recover.sources import DesiredState, load_desired, serve_all_charts
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
            # the user stacks' share of the RTO: wall time of the stack:* phases (they overlap)
            "stacks_wall_seconds": round(
                self.phases.wall(exclude=tuple(p.name for p in self.phases.items if not p.name.startswith("stack:"))), 3
            ),
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
        cut = [p.name for p in phases.items if p.status == "interrupted"]
        # stacks run side by side: name a built-in phase first (runbooks resume by those names)
        phase = next((n for n in cut if ":" not in n), cut[-1] if cut else "")
        also = f" (and {', '.join(n for n in cut if n != phase)})" if len(cut) > 1 else ""
        stopped = Interrupted(
            f"rebuild up was interrupted during the {phase or 'first'} phase{also}; what was running stopped cleanly",
            fix="rerun the same command: finished phases are checked and skipped quickly, the interrupted one starts over",
            phase=phase,
        )
        raise stopped from None


PHASES = ("cluster", "platform", "reconciler")  # the built-in phases; user stacks are `stack:<name>`


def _up(
    ctx: Context,
    result: UpResult,
    revisions: dict[str, str] | None,
    verify_timeout: float | None,
    pulumi: Pulumi | None,
    given: Kube | None,
) -> UpResult:
    phases = result.phases
    pulumi = pulumi if pulumi is not None else ctx.pulumi
    with phases.phase("desired"):
        result.desired = desired = load_desired(ctx, revisions)
        secrets = encrypted.check(ctx.config, ctx.toolchain, desired)
        if secrets:
            ctx.progress(f"desired: {secrets} SOPS-encrypted document(s) decrypt with {ctx.config.reconciler.sops_age_key_file}")
        charts_in_git = helmpreflight.check(desired, ctx.progress)  # a chart version or values Helm would refuse
        resolved = resolve_stacks(ctx, desired)
        prepare_stacks(ctx, pulumi, resolved)
        # last in this phase, once nothing in git can refuse the run (nothing of it is left
        # running then), and not inside the platform phase (a stack thread), so a Ctrl-C there
        # finds only Pulumi running
        serve_all_charts(ctx, desired)
    runner = _StackRunner(ctx, desired, resolved, pulumi, given)
    early = EarlyStart(ctx, kubeconfig_path(ctx)) if EarlyStart.applies(ctx) else None

    def run(spec: StackSpec) -> dict[str, Any]:
        out = runner.run(spec)
        if spec.name == "cluster" and early is not None:
            early.begin()  # the Flux controllers start while the platform phase runs
        return out

    try:
        raise_first(run_dag(ctx.config.stacks, run, phases, result.changed))
    except BaseException:
        if early is not None:
            early.join()  # what it started is recorded before anything (a drill's teardown) stops the cluster
        raise
    with phases.phase("reconciler"):
        result.changed["reconciler"] = run_phase(ctx, "reconciler", desired, pulumi=pulumi, kube=given, early=early)
    kube = given if given is not None else Kube.from_kubeconfig(kubeconfig_path(ctx))
    try:
        with phases.phase("verify") as ph:
            ctx.progress(f"verify: {len(desired.objects)} objects")
            plain = encrypted.decrypted(ctx.config, ctx.toolchain, desired)  # in memory, for the comparison only
            report = wait_converged(
                kube,
                desired.objects,
                ctx.config.verify,
                timeout=verify_timeout,
                progress=ctx.progress,
                decrypted=plain,
                charts_in_git=charts_in_git,
            )
            del plain
            result.report = report
            s = report.summary()
            ph.detail = f"{s['verified']}/{s['objects']} verified"
            if not report.converged:
                ph.status = "failed"
    finally:
        if given is None:
            kube.close()
    return result


class _StackRunner:
    """Runs one stack of the DAG: a built-in phase, or `pulumi up` of a user project with its wired config."""

    def __init__(
        self, ctx: Context, desired: DesiredState, resolved: dict[str, ResolvedStack], pulumi: Pulumi, kube: Kube | None
    ) -> None:
        import threading

        self.ctx, self.desired, self.resolved, self.pulumi, self.kube = ctx, desired, resolved, pulumi, kube
        self._read = outputs_reader(pulumi, ctx, resolved)
        self._outputs: dict[str, dict[str, tuple[Any, bool]]] = {}
        self._lock = threading.Lock()

    def outputs(self, name: str) -> dict[str, tuple[Any, bool]]:
        with self._lock:
            cached = self._outputs.get(name)
        if cached is None:
            cached = self._read(name)
            with self._lock:
                self._outputs[name] = cached
        return cached

    def run(self, spec: StackSpec) -> dict[str, Any]:
        if spec.builtin:
            return run_phase(self.ctx, spec.name, self.desired, pulumi=self.pulumi, kube=self.kube)
        r = self.resolved[spec.name]
        reads = {ref.split(".", 1)[0] for ref in spec.config_from.values()}
        cfg = stack_config(r, {name: self.outputs(name) for name in reads})
        project = user_project(spec, r)
        marker = self.ctx.layout.stack_run_marker(spec.name, spec.stack)
        fingerprint = run_fingerprint(r, cfg)
        with repo_paths(self.ctx, r):
            if _read(marker) != fingerprint:
                # A program new to this state dir, changed, or run with other config: preview it
                # first, so one that raises half-way stops with nothing applied (`up` alone would
                # create what it declared before the exception). A program that already ran with
                # this config here (a rerun, a drill after production, a rebuild of a lost
                # cluster) skips it: seconds on the recovery time.
                self.ctx.progress(f"stack:{spec.name}: pulumi preview {spec.source}:{spec.path} (stack {spec.stack})")
                self.pulumi.preview(project, spec.stack, cfg, self.ctx.progress)
            self.ctx.progress(f"stack:{spec.name}: pulumi up {spec.source}:{spec.path} (stack {spec.stack})")
            # refresh first: resources lost with the disaster are noticed, and the up recreates them.
            res = self.pulumi.up(project, spec.stack, cfg, self.ctx.progress, refresh=True)
        atomic_write(marker, fingerprint)
        return _changes(res.summary)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def run_phase(
    ctx: Context,
    name: str,
    desired: DesiredState,
    *,
    pulumi: Pulumi | None = None,
    kube: Kube | None = None,
    early: EarlyStart | None = None,
) -> dict[str, Any]:
    """One phase of `up`, idempotent on its own (so a runbook can run, and resume, phase by phase).

    ``pulumi`` and ``kube`` as in :func:`up`; a ``kube`` given is not closed here. ``early``: the
    reconciler's background start `up` began after the cluster phase. ``stack:<name>``
    runs one of the user's stacks (its config_from outputs read from the stacks it needs),
    ``stacks`` all of them in DAG order (their changes by phase).
    """
    if name == "stacks":  # every user stack, in DAG order (a runbook step between cluster and platform)
        user = tuple(s for s in ctx.config.stacks if not s.builtin)
        if not user:
            return {}
        runner = _StackRunner(ctx, desired, resolve_stacks(ctx, desired), pulumi or ctx.pulumi, kube)
        changed: dict[str, Any] = {}
        raise_first(run_dag(user, runner.run, Phases(), changed))
        return changed
    if name.startswith("stack:"):
        spec = next((s for s in ctx.config.stacks if s.phase == name), None)
        if spec is None:
            raise ValueError(f"unknown phase {name!r}")
        runner = _StackRunner(ctx, desired, resolve_stacks(ctx, desired), pulumi or ctx.pulumi, kube)
        return runner.run(spec)
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
            return start_reconciler(ctx, kube, kubeconfig_path(ctx), desired, early)
        client = Kube.from_kubeconfig(kubeconfig_path(ctx))
        try:
            return start_reconciler(ctx, client, kubeconfig_path(ctx), desired, early)
        finally:
            client.close()
    raise ValueError(f"unknown phase {name!r}")


def _write_kubeconfig(text: str, path: Path) -> None:
    atomic_write(path, text)
