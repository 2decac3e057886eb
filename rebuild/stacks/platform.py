"""The platform stack's resources, kept in the package so stacks/platform/__main__.py stays tiny.

First cut (issue 2): namespaces and a ConfigMap recording what built the cluster. The
reconciler install and its git credentials join here with the rebuild issue.
"""

from __future__ import annotations

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
        return pulumi.StackReference(ref).require_output("kubeconfig")  # type: ignore[return-value]
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
    namespaces: list[str] = cfg.get_object("namespaces") or [PLATFORM_NAMESPACE]  # type: ignore[assignment]
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise pulumi.RunError("rebuild-platform:namespaces must be a list of namespace names")
    if PLATFORM_NAMESPACE not in namespaces:
        namespaces = [PLATFORM_NAMESPACE, *namespaces]
    provider = k8s.Provider(
        "cluster",
        kubeconfig=kubeconfig_input(cfg),
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
    return {"namespaces": ns, "configmap": cm}
