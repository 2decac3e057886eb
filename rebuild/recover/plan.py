"""`rebuild plan`: everything `up` would do, changing nothing.

The desired state is loaded and checked exactly as `up` loads it, every stack is previewed in
DAG order (a stack reading another's outputs, like the platform stack reading the cluster's
kubeconfig, once those exist), with what would be replaced or deleted called out, and the
objects are listed in the order they would be applied. Each Flux HelmRelease is shown as the
release it stands for (chart, version, source, values and helm-controller's digest of them, see
:mod:`rebuild.desired.helm`): one object in git, a whole release in the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rebuild.core.errors import RebuildError
from rebuild.core.stackspec import StackSpec, topo_order
from rebuild.desired.helm import HelmPlan, plan_releases
from rebuild.recover import encrypted, helmpreflight
from rebuild.recover.context import Context
from rebuild.recover.infra import ResolvedStack, outputs_reader, resolve_stacks, stack_config, user_project
from rebuild.recover.ordering import apply_order, table
from rebuild.recover.sources import DesiredState, load_desired
from rebuild.recover.stacks import cluster_config, platform_config

if TYPE_CHECKING:
    from rebuild.adapters.pulumi import Pulumi


@dataclass
class PlanResult:
    desired: DesiredState
    order: list[dict[str, Any]]
    previews: list[dict[str, Any]]
    helm: HelmPlan = field(default_factory=HelmPlan)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [s.to_dict() for s in self.desired.sources],
            "objects": len(self.desired.objects),
            "inventory": self.desired.inventory(),
            "order": self.order,
            "stacks": self.previews,
            "helm_releases": [r.to_dict() for r in self.helm.releases],
            "helm_problems": [str(p) for p in self.helm.problems],
        }


def plan(ctx: Context, revisions: dict[str, str] | None = None, *, pulumi: Pulumi | None = None) -> PlanResult:
    """Everything `up` would do, changing nothing: stack previews in DAG order, object inventory, order.

    ``pulumi``: the workspace to preview with; None: the state dir's (``ctx.pulumi``). A stack
    that reads another's outputs is previewed once those exist; until then its entry says so.
    """
    desired = load_desired(ctx, revisions)
    encrypted.check(ctx.config, ctx.toolchain, desired)  # a key `up` could not decrypt with: exit 2 here too
    helmpreflight.check(desired, ctx.progress)  # a chart version or values `up` could not install: the same
    resolved = resolve_stacks(ctx, desired)
    order = table(apply_order(desired.objects))
    pulumi = pulumi if pulumi is not None else ctx.pulumi
    read = outputs_reader(pulumi, ctx, resolved)
    outputs: dict[str, dict[str, tuple[Any, bool]] | None] = {}

    def outputs_of(name: str) -> dict[str, tuple[Any, bool]] | None:
        if name not in outputs:
            try:
                outputs[name] = read(name)
            except RebuildError:
                outputs[name] = None
            if name == "cluster" and outputs[name] and not cluster_running(ctx):
                # The state still holds the cluster of the last `up`, but it is gone (the disaster
                # this plan is for): previewing against it would fail on an unreachable API
                # server; `up` recreates it first (its refresh notices), so preview as before one.
                ctx.progress(f"plan: cluster {ctx.config.cluster.name} of the last `up` is not running; `up` recreates it")
                outputs[name] = None
        return outputs[name]

    previews: list[dict[str, Any]] = []
    for spec in topo_order(ctx.config.stacks):
        previews.append(_preview(ctx, spec, desired, resolved, pulumi, outputs_of))
    return PlanResult(desired, order, previews, plan_releases(desired.objects))


def cluster_running(ctx: Context) -> bool:
    """Whether the cluster rebuild.yaml names runs now, as its provider sees it."""
    from rebuild.clusters import get_cluster

    c = ctx.config.cluster
    return get_cluster(c.provider, c.name, nodes=c.nodes, context=c.context or None, root=ctx.root).status().state == "running"


def _preview(
    ctx: Context,
    spec: StackSpec,
    desired: DesiredState,
    resolved: dict[str, ResolvedStack],
    pulumi: Pulumi,
    outputs_of: Callable[[str], dict[str, tuple[Any, bool]] | None],
) -> dict[str, Any]:
    entry: dict[str, Any] = {"stack": spec.name, "phase": spec.phase}
    if spec.name == "cluster":
        ctx.progress("plan: pulumi preview stacks/cluster")
        # refresh, as `up` does: after a disaster the state still holds the cluster that is gone.
        res = pulumi.preview(ctx.stacks_dir / "cluster", ctx.stack, cluster_config(ctx), refresh=True)
    elif spec.name == "platform":
        cluster = outputs_of("cluster")
        if not cluster or "kubeconfig" not in cluster:
            return entry | {
                "changes": {},
                "note": "previewed after the cluster exists: its kubeconfig is an output of the cluster stack",
            }
        ctx.progress("plan: pulumi preview stacks/platform")
        res = pulumi.preview(ctx.stacks_dir / "platform", ctx.stack, platform_config(ctx, desired))
    else:
        r = resolved[spec.name]
        entry |= {"source": spec.source, "path": spec.path, "pulumi_stack": spec.stack}
        reads: dict[str, dict[str, tuple[Any, bool]]] = {}
        for ref in spec.config_from.values():
            name, _, output = ref.partition(".")
            outs = outputs_of(name)
            if not outs or output not in outs:
                return entry | {"changes": {}, "note": f"previewed once stack {name} exists: its config reads {ref}"}
            reads[name] = outs
        ctx.progress(f"plan: pulumi preview {spec.source}:{spec.path} (stack {spec.stack})")
        res = pulumi.preview(user_project(spec, r), spec.stack, stack_config(r, reads))
    entry["changes"] = res.summary
    entry["replaced_or_deleted"] = list(res.steps)
    return entry
