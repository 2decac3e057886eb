"""A Pulumi dynamic resource for a cluster made by one of rebuild's cluster providers.

Why a dynamic resource: the local provider starts processes on this machine and kind
shells out to its CLI; neither has a Pulumi provider, and a Python dynamic provider
needs no extra plugin binary. ``pulumi up`` creates (or restarts) the cluster,
``pulumi destroy`` stops it and removes its data, ``pulumi refresh`` notices a cluster
that is gone. The kubeconfig output is marked secret.

Stack state names ``ClusterProvider`` by this module's path (Pulumi stores the provider as
a dill pickle, which refers to classes by module and name), so a move needs an alias at the
old path: rebuild/stacks/cluster_resource.py is the one for the path before this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from rebuild.clusters import get_cluster


def _cluster(props: dict[str, Any]) -> Any:
    root = Path(props["state_dir"]) if props.get("state_dir") else None
    return get_cluster(
        props["provider"],
        props["name"],
        nodes=int(props.get("nodes") or 1),
        context=props.get("context") or None,
        root=root,
    )


def _outs(props: dict[str, Any], cluster: Any) -> dict[str, Any]:
    st = cluster.status()
    kubeconfig = Path(cluster.kubeconfig()).read_text(encoding="utf-8") if st.state != "absent" else ""
    # `state` makes a refresh notice a stopped or degraded cluster, so the next up restarts it.
    return {**props, "server": st.server or "", "kubeconfig": kubeconfig, "state": st.state}


class ClusterProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        cluster = _cluster(props)
        cluster.create(progress=lambda m: pulumi.log.info(m))
        return CreateResult(id_=f"{props['provider']}/{props['name']}", outs=_outs(props, cluster))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("provider", "name", "context", "state_dir") if olds.get(k) != news.get(k)]
        not_running = olds.get("state", "running") != "running"
        changes = bool(replaces) or olds.get("nodes") != news.get("nodes") or not_running
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        cluster = _cluster(news)
        cluster.create(progress=lambda m: pulumi.log.info(m))
        return UpdateResult(outs=_outs(news, cluster))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        cluster = _cluster(props)
        if cluster.status().state == "absent":
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs=_outs(props, cluster))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("provider") == "kubeconfig":
            return  # an existing cluster: rebuild never deletes it
        _cluster(props).delete(purge=True)


@dataclass
class ClusterArgs:
    provider: str
    name: str
    nodes: int = 1
    context: str = ""
    state_dir: str = ""


class Cluster(Resource):
    cluster_name: pulumi.Output[str]
    provider_name: pulumi.Output[str]
    server: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "provider": args.provider,
            "name": args.name,
            "nodes": args.nodes,
            "context": args.context,
            "state_dir": args.state_dir,
            "server": None,
            "kubeconfig": None,
            "state": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"]))
        super().__init__(ClusterProvider(), name, props, opts)
        self.cluster_name = pulumi.Output.from_input(args.name)
        self.provider_name = pulumi.Output.from_input(args.provider)
