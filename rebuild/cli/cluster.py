"""`rebuild cluster up|down|status`: create, stop and inspect clusters."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from rebuild.cli import app
from rebuild.cli.app import EXIT_FAIL, EXIT_OK, Ctx


@app.main.group()
def cluster() -> None:
    """Create, stop and inspect clusters (providers: local, kind, kubeconfig)."""


def _cluster_opts(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--name", default=None, help="Cluster name (one data folder per name); default: rebuild.yaml's cluster.name."
    )(f)
    f = click.option("--provider", default=None, help="local | kind | kubeconfig; default: rebuild.yaml's, else local.")(f)
    f = click.option("--context", default=None, help="kubeconfig context (provider kubeconfig; default: the current one).")(f)
    return f


def _which(obj: Ctx, name: str | None, provider: str | None, context: str | None) -> tuple[str, str, str | None]:
    """(name, provider, context): the options given, else the ``cluster:`` of rebuild.yaml (--config,
    or ./rebuild.yaml), so `rebuild cluster down` where the config is names the cluster `up` made."""
    if name is not None:
        return name, provider or "local", context
    from rebuild.core import config
    from rebuild.core.errors import ConfigError

    try:
        spec = config.load(obj.config).cluster
    except ConfigError as exc:
        if obj.config is not None:
            raise
        raise click.UsageError(
            "Missing option '--name' (or run it where rebuild.yaml is, or give --config, to use its cluster.name)"
        ) from exc
    return spec.name, provider or spec.provider, context or spec.context or None


@cluster.command("up")
@_cluster_opts
@click.option("--nodes", default=1, show_default=True, type=int, help="kwok nodes (local) or nodes (kind).")
@click.option("--api-port", type=int, default=None, help="API server port (default: a free one).")
@click.option("--unsafe-fast-storage", is_flag=True, help="etcd without fsync: throwaway clusters only.")
@click.pass_obj
def cluster_up(
    obj: Ctx,
    name: str | None,
    provider: str | None,
    nodes: int,
    api_port: int | None,
    context: str | None,
    unsafe_fast_storage: bool,
) -> None:
    """Create (or restart) a cluster and wait until it is ready."""
    name, provider, context = _which(obj, name, provider, context)
    from rebuild.clusters import get_cluster
    from rebuild.clusters.base import check_state_dir
    from rebuild.core.state import state_root

    if provider == "local":
        check_state_dir(state_root(), "cluster")
    c = get_cluster(provider, name, nodes=nodes, api_port=api_port, context=context, unsafe_fast_storage=unsafe_fast_storage)
    st = c.create(progress=obj.progress)
    obj.emit(
        st.to_dict(),
        lambda: f"cluster {st.name} ({st.provider}) {st.state} at {st.server}\nexport KUBECONFIG={st.kubeconfig}",
    )


@cluster.command("down")
@_cluster_opts
@click.option("--purge", is_flag=True, help="Also delete the cluster's data (etcd, certificates).")
@click.pass_obj
def cluster_down(obj: Ctx, name: str | None, provider: str | None, context: str | None, purge: bool) -> None:
    """Stop every process of a cluster (keeps its data unless --purge), and the state dir's
    git server when no other running cluster of the state dir uses it."""
    from rebuild.drills.usecases import stop_cluster

    name, provider, context = _which(obj, name, provider, context)
    gs = stop_cluster(provider, name, context=context, purge=purge)

    def text() -> str:
        line = f"cluster {name} stopped" + (" and its data deleted" if purge else " (data kept; `up` restarts it)")
        if gs.stopped:
            line += "\ngit server stopped (no running cluster of this state dir uses it)"
        elif gs.used_by:
            line += f"\ngit server kept: still used by cluster(s) {', '.join(gs.used_by)}"
        return line

    obj.emit({"name": name, "provider": provider, "stopped": True, "purged": purge, "gitserver": gs.to_dict()}, text)


@cluster.command("status")
@_cluster_opts
@click.pass_obj
def cluster_status(obj: Ctx, name: str | None, provider: str | None, context: str | None) -> None:
    """Show a cluster's state and components; exit 0 only when running."""
    name, provider, context = _which(obj, name, provider, context)
    from rebuild.adapters import gitserver, helmrepo
    from rebuild.clusters import get_cluster
    from rebuild.core.state import StateLayout

    st = get_cluster(provider, name, context=context).status()
    layout = StateLayout.default()
    gs = gitserver.server_info(layout.gitserver)
    # the chart repositories served from sources' `charts` folders (answering now)
    served = {source: srv.url for source, srv in helmrepo.running_repos(layout.chart_repos).items()}

    def text() -> str:
        lines = [f"cluster {st.name} ({st.provider}): {st.state}" + (f" at {st.server}" if st.server else "")]
        for comp in st.components:
            lines.append(f"  {comp.name:<24} {'up  ' if comp.alive else 'down'}  pid={comp.pid or '-'}")
        if gs is not None:
            lines.append(f"git server of the state dir: {'up  ' if gs.alive else 'down'}  pid={gs.pid or '-'}  {gs.url}")
        lines += [f"chart repository of source {source}: up    {url}" for source, url in served.items()]
        return "\n".join(lines)

    obj.emit({**st.to_dict(), "gitserver": gs.to_dict() if gs else None, "chart_repositories": served}, text)
    sys.exit(EXIT_OK if st.state == "running" else EXIT_FAIL)
