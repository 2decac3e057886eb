"""The inputs of the built-in stacks: what `plan` previews and `up` applies with Pulumi.

``cluster`` gets the cluster rebuild.yaml names; ``platform`` gets what the reconciler needs in
the new cluster to pull git (namespaces, the source objects, git credentials as Pulumi
secrets, the reconciler's CRDs or install manifest, the SOPS key). Built here from the
rendered desired state, so plan and up pass the very same config.
"""

from __future__ import annotations

from typing import Any

from rebuild.reconcilers import flux_install
from rebuild.recover.context import Context
from rebuild.recover.sources import DesiredState, serve_charts


def cluster_config(ctx: Context) -> dict[str, Any]:
    c = ctx.config.cluster
    return {"name": c.name, "provider": c.provider, "nodes": c.nodes, "context": c.context, "stateDir": str(ctx.root)}


def platform_config(ctx: Context, desired: DesiredState) -> dict[str, Any]:
    import pulumi.automation as auto

    rc = ctx.config.reconciler
    sources = []
    creds: dict[str, Any] = {}
    for s in desired.sources:
        resolved = s.spec.credentials.resolve(ctx.config.base_dir)
        sources.append(
            {
                "name": s.spec.name,
                "objectName": s.flux_name,
                "repoName": s.flux_repo,
                "url": s.url,
                "branch": s.spec.branch,
                "path": s.spec.path,
                "revision": s.checkout.sha if s.spec.revision else "",
                "interval": rc.interval,
                "hasCredentials": bool(resolved),
                "targetNamespace": s.spec.namespace,
                "defaultNamespaceKinds": s.default_namespace_kinds,
                "drop": s.tree.drop if s.tree else [],
            }
        )
        if s.spec.charts:
            sources[-1] |= {"chartsRepository": s.spec.charts_repository, "chartsUrl": s.charts_url or serve_charts(ctx, s)}
        if resolved:
            creds[s.spec.name] = {
                "username": auto.ConfigValue(resolved[0], secret=True),
                "password": auto.ConfigValue(resolved[1], secret=True),
            }
    cfg: dict[str, Any] = {
        "clusterStack": f"organization/rebuild-cluster/{ctx.stack}",
        "clusterName": ctx.config.cluster.name,
        "namespaces": ["rebuild-system", *_source_namespaces(desired)],
        "reconciler": rc.kind,
        "sources": sources,
    }
    if creds:
        cfg["gitCredentials"] = creds
    if rc.kind == "flux":
        cfg["fluxCrds"] = [str(p) for c in flux_install.CONTROLLERS for p in ctx.toolchain.flux_crds(c)]
        if ctx.config.cluster.provider != "local":
            cfg["fluxInstallManifest"] = str(flux_install.render_install(ctx.toolchain))
    else:
        cfg["argocdInstallManifest"] = str(ctx.toolchain.argocd_install_manifest())
    if ctx.config.reconciler.sops_age_key_file:
        cfg["sopsAgeKeyFile"] = str((ctx.config.base_dir / ctx.config.reconciler.sops_age_key_file).resolve())
    return cfg


def _source_namespaces(desired: DesiredState) -> list[str]:
    """Sources' target namespaces that git does not create itself (Flux needs them to exist)."""
    declared = {o.ref.name for o in desired.objects if o.ref.kind == "Namespace" and o.ref.group == ""}
    return sorted({s.spec.namespace for s in desired.sources if s.spec.namespace and s.spec.namespace not in declared})
