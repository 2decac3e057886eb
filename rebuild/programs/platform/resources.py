"""The platform program's resources (rebuild.programs.platform runs ``build_platform``).

Namespaces, a ConfigMap recording what built the cluster, and the GitOps reconciler's
bootstrap: its CRDs (and, on real clusters, its controllers), the git credentials it
reads the repo with and the SOPS age key it decrypts secrets with (both only as Pulumi
secrets, encrypted in the stack state), and one GitRepository + Kustomization per source.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from rebuild import __version__

PLATFORM_NAMESPACE = "rebuild-system"
PLATFORM_CONFIGMAP = "rebuild-platform"


def kubeconfig_input(cfg: pulumi.Config) -> pulumi.Input[str]:
    ref = cfg.get("clusterStack") or ""
    if ref:
        return pulumi.StackReference(ref).require_output("kubeconfig")
    path = cfg.get("kubeconfig") or ""
    if not path:
        raise pulumi.RunError(
            "stacks/platform needs a cluster: set `rebuild-platform:clusterStack` "
            "(e.g. organization/rebuild-cluster/dev) or `rebuild-platform:kubeconfig` (a file path)"
        )
    try:
        return pulumi.Output.secret(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise pulumi.RunError(f"rebuild-platform:kubeconfig {path!r} cannot be read: {exc.strerror}") from exc


def build_platform(cfg: pulumi.Config) -> dict[str, Any]:
    namespaces: list[str] = cfg.get_object("namespaces") or [PLATFORM_NAMESPACE]
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise pulumi.RunError("rebuild-platform:namespaces must be a list of namespace names")
    if PLATFORM_NAMESPACE not in namespaces:
        namespaces = [PLATFORM_NAMESPACE, *namespaces]
    kubeconfig = kubeconfig_input(cfg)
    provider = k8s.Provider(
        "cluster",
        kubeconfig=kubeconfig,
        enable_server_side_apply=True,
        delete_unreachable=True,
    )
    opts = pulumi.ResourceOptions(provider=provider)
    ns = {
        n: k8s.core.v1.Namespace(
            f"ns-{n}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=n, labels={"app.kubernetes.io/managed-by": "rebuild"}),
            opts=opts,
        )
        for n in namespaces
    }
    cm = k8s.core.v1.ConfigMap(
        "platform",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=PLATFORM_CONFIGMAP, namespace=PLATFORM_NAMESPACE),
        data={
            "cluster": cfg.get("clusterName") or pulumi.get_stack(),
            "stack": f"{pulumi.get_project()}/{pulumi.get_stack()}",
            "namespaces": ",".join(namespaces),
            "rebuild-version": __version__,
        },
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[ns[PLATFORM_NAMESPACE]]),
    )
    pulumi.export("namespaces", namespaces)
    pulumi.export("configmap", f"{PLATFORM_NAMESPACE}/{PLATFORM_CONFIGMAP}")
    reconciler = cfg.get("reconciler") or ""
    out: dict[str, Any] = {"namespaces": ns, "configmap": cm}
    if reconciler == "flux":
        out["flux"] = flux_bootstrap(cfg, provider)
    elif reconciler == "argocd":
        # Argo CD's install manifest leaves namespaces out: a provider whose default is argocd.
        argocd_provider = k8s.Provider(
            "cluster-argocd", kubeconfig=kubeconfig, namespace="argocd", enable_server_side_apply=True, delete_unreachable=True
        )
        out["argocd"] = argocd_bootstrap(cfg, provider, argocd_provider)
    elif reconciler:
        raise pulumi.RunError(f"rebuild-platform:reconciler {reconciler!r} is not supported: use flux or argocd")
    pulumi.export("reconciler", reconciler or "none")
    return out


def _sources(cfg: pulumi.Config) -> list[dict[str, Any]]:
    raw = cfg.get_object("sources") or []
    if not isinstance(raw, list) or not all(isinstance(x, dict) and x.get("name") and x.get("url") for x in raw):
        raise pulumi.RunError("rebuild-platform:sources must be a list of {name, url, branch, path} objects")
    return [dict(x) for x in raw]


def _yaml_files(path: str, what: str) -> list[Path]:
    p = Path(path).expanduser()
    files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise pulumi.RunError(f"{what} {path!r} has no YAML files; run `rebuild toolchain install`")
    return files


def flux_bootstrap(cfg: pulumi.Config, provider: k8s.Provider) -> dict[str, Any]:
    from rebuild.reconcilers import flux

    files = cfg.get_object("fluxCrds") or []
    if not isinstance(files, list) or not files:
        raise pulumi.RunError("rebuild-platform:fluxCrds must list the Flux CRD files (rebuild sets it from its toolchain)")
    crds = [
        k8s.yaml.v2.ConfigFile(f"flux-crd-{Path(str(f)).stem}", file=str(f), opts=pulumi.ResourceOptions(provider=provider))
        for f in files
        for _ in [_yaml_files(str(f), "rebuild-platform:fluxCrds entry")]
    ]
    ns = k8s.core.v1.Namespace(
        "ns-flux-system",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=flux.NAMESPACE, labels={"app.kubernetes.io/managed-by": "rebuild"}),
        opts=pulumi.ResourceOptions(provider=provider),
    )
    deps: list[pulumi.Resource] = [*crds, ns]
    install = cfg.get("fluxInstallManifest") or ""
    if install:  # real clusters: the controllers run in-cluster, from their own release config
        deps.append(
            k8s.yaml.v2.ConfigFile(
                "flux-controllers", file=install, opts=pulumi.ResourceOptions(provider=provider, depends_on=[*crds, ns])
            )
        )
    opts = pulumi.ResourceOptions(provider=provider, depends_on=deps)
    decrypt = False
    key_file = cfg.get("sopsAgeKeyFile") or ""
    if key_file:
        try:
            key = Path(key_file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise pulumi.RunError(f"rebuild-platform:sopsAgeKeyFile {key_file!r} cannot be read: {exc.strerror}") from exc
        k8s.core.v1.Secret(
            "sops-age",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=flux.SOPS_SECRET, namespace=flux.NAMESPACE),
            string_data={"age.agekey": pulumi.Output.secret(key)},
            opts=opts,
        )
        decrypt = True
    creds = cfg.get_secret_object("gitCredentials")
    made: dict[str, Any] = {}
    for s in _sources(cfg):
        src = flux.FluxSource(
            name=str(s["name"]),
            url=str(s["url"]),
            branch=str(s.get("branch") or "main"),
            path=str(s.get("path") or "."),
            revision=str(s.get("revision") or ""),
            interval=str(s.get("interval") or "1m"),
            has_credentials=bool(s.get("hasCredentials")),
            decrypt=decrypt,
            repo_name=str(s.get("repoName") or ""),
            target_namespace=str(s.get("targetNamespace") or ""),
            default_namespace_kinds=tuple(str(k) for k in s.get("defaultNamespaceKinds") or []),
            drop=tuple(tuple(sorted((str(a), str(b)) for a, b in d.items())) for d in s.get("drop") or []),
            charts_repository=str(s.get("chartsRepository") or ""),
            charts_url=str(s.get("chartsUrl") or ""),
        )
        if s.get("objectName"):
            src = dataclasses.replace(src, name=str(s["objectName"]))
        src_deps = list(deps)
        if src.has_credentials:
            secret = k8s.core.v1.Secret(
                f"git-auth-{src.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=src.auth_secret, namespace=flux.NAMESPACE),
                string_data=pulumi.Output.secret(creds).apply(functools.partial(_credentials_of, str(s["name"]))),
                opts=opts,
            )
            src_deps.append(secret)
        made[src.name] = [
            _custom(flux.git_repository(src), provider, src_deps),
            _custom(flux.kustomization(src), provider, src_deps),
        ]
        if src.charts_url:
            made[src.name].append(_custom(flux.helm_repository(src), provider, deps))
    return made


def _credentials_of(source: str, creds: Any) -> dict[str, str]:
    """The git credentials of one source, out of the secret mapping of all of them."""
    return dict((creds or {}).get(source) or {})


def _custom(obj: dict[str, Any], provider: k8s.Provider, deps: list[pulumi.Resource]) -> k8s.apiextensions.CustomResource:
    meta = obj["metadata"]
    return k8s.apiextensions.CustomResource(
        f"{obj['kind'].lower()}-{meta['name']}",
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        metadata=k8s.meta.v1.ObjectMetaArgs(name=meta["name"], namespace=meta.get("namespace"), labels=meta.get("labels")),
        spec=obj["spec"],
        opts=pulumi.ResourceOptions(provider=provider, depends_on=deps),
    )


def argocd_bootstrap(cfg: pulumi.Config, provider: k8s.Provider, ns_provider: k8s.Provider) -> dict[str, Any]:
    """Argo CD's install manifests plus an AppProject and one Application per source.

    The Argo CD controller cannot be built on rebuild's development machines, so this path
    is verified at the API level only (objects accepted, CRDs established); see docs.
    """
    from rebuild.reconcilers import argocd

    ns = k8s.core.v1.Namespace(
        "ns-argocd",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=argocd.NAMESPACE, labels={"app.kubernetes.io/managed-by": "rebuild"}),
        opts=pulumi.ResourceOptions(provider=provider),
    )
    install = k8s.yaml.v2.ConfigFile(
        "argocd-install",
        file=str(_yaml_files(cfg.require("argocdInstallManifest"), "rebuild-platform:argocdInstallManifest")[0]),
        opts=pulumi.ResourceOptions(provider=ns_provider, depends_on=[ns]),
    )
    deps: list[pulumi.Resource] = [ns, install]
    project = _custom(argocd.app_project(), provider, deps)
    apps = {
        str(s["name"]): _custom(
            argocd.application(
                argocd.ArgoSource(
                    name=str(s["name"]),
                    url=str(s["url"]),
                    branch=str(s.get("branch") or "main"),
                    path=str(s.get("path") or "."),
                    revision=str(s.get("revision") or ""),
                )
            ),
            provider,
            [*deps, project],
        )
        for s in _sources(cfg)
    }
    return {"project": project, "applications": apps}
