"""`rebuild plan`: everything `up` would do, changing nothing.

The desired state is loaded and checked exactly as `up` loads it, both stacks are previewed
(the platform stack only once the cluster exists: its kubeconfig is a cluster-stack output),
and the objects are listed in the order they would be applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.core.errors import RebuildError
from rebuild.recover.context import Context
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [s.to_dict() for s in self.desired.sources],
            "objects": len(self.desired.objects),
            "inventory": self.desired.inventory(),
            "order": self.order,
            "stacks": self.previews,
        }


def plan(ctx: Context, revisions: dict[str, str] | None = None, *, pulumi: Pulumi | None = None) -> PlanResult:
    """Everything `up` would do, changing nothing: stack previews, object inventory, order.

    ``pulumi``: the workspace to preview with; None: the state dir's (``ctx.pulumi``).
    """
    desired = load_desired(ctx, revisions)
    order = table(apply_order(desired.objects))
    previews: list[dict[str, Any]] = []
    pulumi = pulumi if pulumi is not None else ctx.pulumi
    cluster_dir = ctx.stacks_dir / "cluster"
    ctx.progress("plan: pulumi preview stacks/cluster")
    res = pulumi.preview(cluster_dir, ctx.stack, cluster_config(ctx))
    previews.append({"stack": "cluster", "changes": res.summary})
    has_cluster = _has_output(pulumi, cluster_dir, ctx.stack, "kubeconfig")
    if has_cluster:
        ctx.progress("plan: pulumi preview stacks/platform")
        pres = pulumi.preview(ctx.stacks_dir / "platform", ctx.stack, platform_config(ctx, desired))
        previews.append({"stack": "platform", "changes": pres.summary})
    else:
        previews.append(
            {
                "stack": "platform",
                "changes": {},
                "note": "previewed after the cluster exists: its kubeconfig is an output of the cluster stack",
            }
        )
    return PlanResult(desired, order, previews)


def _has_output(pulumi: Pulumi, project: Path, stack: str, name: str) -> bool:
    try:
        pulumi.output(project, stack, name)
    except RebuildError:
        return False
    return True
