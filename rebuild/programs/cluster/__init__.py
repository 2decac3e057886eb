"""Pulumi program ``rebuild-cluster``: the cluster itself.

The cluster is a Python dynamic resource (rebuild/programs/cluster/resource.py; no extra
provider binary): create starts or creates it through rebuild's cluster providers, delete
tears it down, and the admin kubeconfig is exported as a *secret* output for the platform
program to consume. Runs the same under ``pulumi up`` in stacks/cluster and under rebuild's
Automation API driver.
"""

from __future__ import annotations

import pulumi

from rebuild.programs.cluster.resource import Cluster, ClusterArgs


def main() -> None:
    cfg = pulumi.Config()
    args = ClusterArgs(
        provider=cfg.get("provider") or "local",
        name=cfg.require("name"),
        nodes=cfg.get_int("nodes") or 1,
        context=cfg.get("context") or "",
        state_dir=cfg.get("stateDir") or "",
    )
    cluster = Cluster("cluster", args)

    pulumi.export("name", cluster.cluster_name)
    pulumi.export("provider", cluster.provider_name)
    pulumi.export("server", cluster.server)
    pulumi.export("kubeconfig", pulumi.Output.secret(cluster.kubeconfig))
