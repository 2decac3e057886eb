"""A recovery drill: rebuild git into a throwaway cluster, prove it, time it, tear it down.

A backup nobody restored is a hope, not a plan. The drill runs the same phases as a real
recovery (``rebuild up``) into a cluster of its own (``drill-<random>``, local provider
unless told otherwise), verifies convergence, and always tears down: on success, on
failure and on Ctrl-C. The result follows the run schema ``rebuild.run/v1``
(docs/reports.md) so reports, history and notifications read one format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.adapters import gitserver, helmrepo
from rebuild.core.errors import ConfigError, Interrupted, RebuildError
from rebuild.core.model import Phases
from rebuild.core.results import Failure, ObjectCounts, RunResult, utc_stamp
from rebuild.core.stackspec import StackSpec, topo_order
from rebuild.core.state import StateLayout
from rebuild.drills.notify import NotifyError
from rebuild.recover.context import Context
from rebuild.recover.encrypted import UndecryptableError
from rebuild.recover.infra import resolve_stacks, user_project
from rebuild.recover.sources import DesiredState, DesiredStateError
from rebuild.recover.up import UpResult, up

if TYPE_CHECKING:
    from rebuild.adapters.pulumi import Pulumi


NOTHING_CREATED = "nothing was created: the drill stopped before its cluster phase"


@dataclasses.dataclass
class DrillResult:
    """The drill while it runs (its phases fill in as they go); ``to_run()`` is its run result."""

    cluster: str
    started_at: str
    phases: Phases
    up: UpResult | None = None
    finished_at: str = ""
    passed: bool = False
    error: str = ""
    failures: list[Failure] = dataclasses.field(default_factory=list)
    uncaptured_changes: int | None = None

    def to_run(self) -> RunResult:
        sources = [s.to_dict() for s in self.up.desired.sources] if self.up and self.up.desired else []
        ages = [time.time() - s["committed_at"] for s in sources if s.get("committed_at")]
        report = self.up.report if self.up else None
        return RunResult(
            kind="drill",
            cluster=self.cluster,
            started_at=self.started_at,
            finished_at=self.finished_at,
            passed=self.passed,
            # the RTO is the time to recover: tearing the throwaway cluster down is not part of it
            rto_seconds=round(self.phases.wall(exclude=("teardown",)), 3),
            revision_age_seconds=round(max(ages), 1) if ages else None,
            uncaptured_changes=self.uncaptured_changes,
            sources=sources,
            phases=RunResult.phases_of(self.phases),
            objects=ObjectCounts.of(report.summary()) if report else ObjectCounts(),
            failures=list(self.failures),
            error=self.error,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_run().to_dict()


def run_drill(
    ctx: Context,
    *,
    revisions: dict[str, str] | None = None,
    name: str | None = None,
    keep: bool = False,
    verify_timeout: float | None = None,
    live: bool = False,
) -> DrillResult:
    """The drill. Never raises for a failed rebuild (that is a failed drill); always tears down.

    ``live``: first count the manual changes in the live cluster of rebuild.yaml that git does
    not have yet (``capture --dry-run``): what a rebuild would lose today, the RPO in changes.
    """
    existing = ctx.config.cluster
    if existing.provider == "kubeconfig":
        # Refused before anything runs: the drill creates its cluster and always tears it down,
        # and rebuild neither creates nor deletes a cluster it is given by a kubeconfig context.
        raise ConfigError(
            f"rebuild drill refuses cluster {existing.name} (provider kubeconfig, context "
            f"{existing.context or '(current)'}): a drill creates a throwaway cluster and tears it down, "
            "and rebuild never creates or deletes an existing cluster; nothing was created or deleted",
            fix="run drills with cluster.provider local (or kind where a container engine exists) in a copy of "
            "rebuild.yaml (--config); use `rebuild up` and `rebuild verify` against the existing cluster",
        )
    name = name or f"drill-{uuid.uuid4().hex[:6]}"
    uncaptured: int | None = None
    if live:
        from rebuild.capture.run import capture

        ctx.progress(f"rpo: looking for uncaptured manual changes in the live cluster {ctx.config.cluster.name}")
        try:
            uncaptured = len(capture(ctx, dry_run=True).report.findings)
        except UndecryptableError as err:
            # the drill would stop on the same file: it fails now, before a cluster exists
            result = DrillResult(name, utc_stamp(), Phases())
            undecryptable(result, err)
            result.phases.skip("teardown", NOTHING_CREATED)
            result.finished_at = utc_stamp()
            return result
    cluster = dataclasses.replace(ctx.config.cluster, name=name, provider=ctx.config.cluster.provider)
    # Every stack of the drill lives in a backend of its own: the user's stacks keep their names
    # (so their StackReferences resolve to the drill's copies) and production state is never read
    # or written.
    dctx = dataclasses.replace(
        ctx, config=dataclasses.replace(ctx.config, cluster=cluster), drill_backend=ctx.layout.drill_backend(name)
    )
    result = DrillResult(name, utc_stamp(), Phases(), uncaptured_changes=uncaptured)
    servers = LocalServers.running(ctx.layout)
    stopped_first = False  # an undecryptable file stopped `up` in its desired phase: nothing exists yet
    try:
        result.up = UpResult(result.phases)  # filled as up goes: kept when it fails
        up(dctx, revisions, verify_timeout=verify_timeout, into=result.up)
        result.passed = result.up.converged
        if result.up.report:
            for v in result.up.report.failing:
                for p in v.problems():
                    result.failures.append(Failure(str(v.desired.ref), str(v.desired.source), p))
    except (KeyboardInterrupt, Interrupted):
        result.error = "interrupted (Ctrl-C); the throwaway cluster was torn down"
        raise
    except DesiredStateError as err:
        result.error = err.message
        result.failures = [Failure("", f"{p.file}:{p.line}", p.message) for p in err.problems]
    except UndecryptableError as err:
        undecryptable(result, err)
        stopped_first = [p.name for p in result.phases.items] == ["desired"]
    except RebuildError as err:
        result.error = str(err)
    finally:
        if keep:
            result.phases.skip("teardown", "--keep: cluster left running")
        elif stopped_first:
            # `up` decrypts every SOPS file before its cluster phase: no cluster, stack or object
            # exists, and destroying stacks that were never created would only cost time
            result.phases.skip("teardown", NOTHING_CREATED)
            servers.stop_started(ctx.layout)  # started to serve a local folder source and its charts
        else:
            try:
                with result.phases.phase("teardown"):
                    ctx.progress(f"teardown: destroying drill cluster {name}")
                    teardown(dctx, servers, desired=result.up.desired if result.up else None)
            except RebuildError as err:
                result.passed = False
                result.error = (result.error + "\n" if result.error else "") + f"teardown: {err}"
        result.finished_at = utc_stamp()
    return result


def undecryptable(result: DrillResult, err: UndecryptableError) -> None:
    """A SOPS file of the desired state that the configured key cannot decrypt: the drill failed
    (exit 1, in its history and reports like any failed drill), with the object, its file:line,
    the key file and the fix as its failure; what `up` would have stopped at (exit 2)."""
    result.passed = False
    result.error = str(err)
    result.failures = [Failure(err.ref, err.source, f"{err.message} (fix: {err.fix})" if err.fix else err.message)]
    if not result.phases.items:  # stopped before `up` ran (drill --live): say where
        result.phases.skip("desired", f"{err.source}: cannot be decrypted")


@dataclass(frozen=True)
class LocalServers:
    """The servers of the state dir a drill found running: it stops only those it started.

    A local folder source is published by rebuild's git server, and a source's ``charts`` folder
    served by a chart repository (one per source); a drill starts them if they are not running
    and leaves nothing of its own behind, but must not stop what production uses.
    """

    gitserver: bool
    charts: frozenset[str]

    @classmethod
    def running(cls, layout: StateLayout) -> LocalServers:
        return cls(gitserver.server_running(layout.gitserver), frozenset(helmrepo.running_repos(layout.chart_repos)))

    def stop_started(self, layout: StateLayout) -> None:
        if not self.gitserver:
            gitserver.stop_server(layout.gitserver)
        helmrepo.stop_repos(layout.chart_repos, keep=self.charts)


def teardown(ctx: Context, servers: LocalServers, *, desired: DesiredState | None = None) -> None:
    """Destroy the drill's stacks (the user's in reverse DAG order, while the cluster still runs),
    then make sure no process of its cluster survives, then remove the drill's own backend."""
    from rebuild.clusters.local import LocalCluster

    pulumi = ctx.pulumi
    problems: list[str] = []
    problems.extend(destroy_user_stacks(ctx, pulumi, desired))
    # The cluster is thrown away whole, so its objects need no graceful deletion (pruning 1,000
    # objects and waiting for namespace finalizers would dominate the drill): stop the cluster,
    # forget the platform stack's state, then destroy the cluster stack (which purges the data).
    if ctx.config.cluster.provider == "local":
        LocalCluster(ctx.config.cluster.name, root=ctx.root).delete()
    for project in ("platform", "cluster"):
        project_dir = ctx.stacks_dir / project
        try:
            if project == "cluster":
                pulumi.destroy(project_dir, ctx.stack)
            pulumi.remove(project_dir, ctx.stack, force=project == "platform")
        except RebuildError as err:
            problems.append(f"{project}: {err.message}")
    if ctx.config.cluster.provider == "local":
        LocalCluster(ctx.config.cluster.name, root=ctx.root).delete(purge=True)  # belt and braces
    servers.stop_started(ctx.layout)
    if ctx.drill_backend is not None and not problems:
        shutil.rmtree(ctx.drill_backend, ignore_errors=True)
        with contextlib.suppress(OSError):
            ctx.drill_backend.parent.rmdir()  # the last drill's: no empty folder left behind
    if problems:
        raise RebuildError("; ".join(problems), fix="run `rebuild cluster down --purge --name <drill cluster>`")


def destroy_user_stacks(ctx: Context, pulumi: Pulumi, desired: DesiredState | None) -> list[str]:
    """`pulumi destroy` of the user's stacks, dependants first; the problems, one line per stack."""
    user = [s for s in ctx.config.stacks if not s.builtin]
    if not user or desired is None:
        return []
    try:
        resolved = resolve_stacks(ctx, desired)
    except ConfigError:
        return []  # the run stopped before any user stack ran
    problems: list[str] = []
    for spec in reversed(topo_order(ctx.config.stacks)):
        if spec.builtin or spec.name not in resolved:
            continue
        if ctx.drill_backend is not None and only_in_drill_cluster(ctx.drill_backend, spec, resolved[spec.name].project_dir):
            # Like the platform stack's: objects of the throwaway cluster go with it, and the
            # stack goes with the drill's backend folder; no need to delete them one by one.
            ctx.progress(f"teardown: stack {spec.name} holds only objects of the drill cluster: they go with it")
            continue
        ctx.progress(f"teardown: pulumi destroy stack {spec.name} ({spec.stack})")
        try:
            pulumi.destroy(user_project(spec, resolved[spec.name]), spec.stack, ctx.progress)
            pulumi.remove(user_project(spec, resolved[spec.name]), spec.stack)
        except RebuildError as err:
            problems.append(f"stack {spec.name}: {err.message}")
    return problems


def only_in_drill_cluster(backend: Path, spec: StackSpec, project_dir: Path) -> bool:
    """Whether a user stack in a drill's file backend holds nothing but Kubernetes objects made
    through the default provider, configured (config_from) with the drill cluster's kubeconfig.

    Read from the checkpoint file (no pulumi process). Anything else, a cloud resource, an
    explicit Kubernetes provider (which may point at another cluster), an unreadable state,
    means no: that stack is destroyed with ``pulumi destroy``.
    """
    import json
    import re

    if spec.config_from.get("kubernetes:kubeconfig") != "cluster.kubeconfig":
        return False
    try:
        text = (project_dir / "Pulumi.yaml").read_text(encoding="utf-8")
        m = re.search(r"^name:\s*(\S+)", text, re.M)
        doc = json.loads((backend / ".pulumi" / "stacks" / (m.group(1) if m else "") / f"{spec.stack}.json").read_text())
    except (OSError, ValueError):
        return False
    resources = ((doc.get("checkpoint") or {}).get("latest") or {}).get("resources") or []
    for res in resources:
        kind = str(res.get("type", ""))
        name = str(res.get("urn", "")).rsplit("::", 1)[-1]
        if kind in ("pulumi:pulumi:Stack", "pulumi:pulumi:StackReference", "pulumi:providers:pulumi"):
            continue
        if kind == "pulumi:providers:kubernetes" and name.startswith("default"):
            continue
        if kind.startswith("kubernetes:") and "::pulumi:providers:kubernetes::default" in str(res.get("provider", "")):
            continue
        return False
    return True


def report_dir(root: Path, result: DrillResult) -> Path:
    return StateLayout(root).drill_report(result.started_at, result.cluster)


@dataclasses.dataclass
class ReportedDrill:
    """`rebuild drill`: the drill, its run result, where its reports went, and a webhook failure if any."""

    drill: DrillResult
    run: RunResult
    reports: dict[str, Path]
    notify_error: NotifyError | None = None


def drill_and_report(
    ctx: Context,
    *,
    revisions: dict[str, str] | None = None,
    name: str | None = None,
    keep: bool = False,
    verify_timeout: float | None = None,
    live: bool = False,
    out: Path | None = None,
    history_path: Path | None = None,
    notify_url: str | None = None,
) -> ReportedDrill:
    """The drill, then its reports (default: <state>/drills/<time>-<cluster>), history line and webhook."""
    from rebuild.drills import history
    from rebuild.drills.publish import publish

    res = run_drill(ctx, revisions=revisions, name=name, keep=keep, verify_timeout=verify_timeout, live=live)
    run = res.to_run()  # once: the revision age is measured now
    done = publish(
        run,
        out or report_dir(ctx.root, res),
        history_path=history_path or history.default_path(ctx.root),
        notify_url=notify_url,
        progress=ctx.progress,
    )
    return ReportedDrill(res, run, done.reports, done.notify_error)
