"""The in-cluster install of the Flux controllers, rendered from their own release config.

For clusters whose nodes run Pods (kind, an existing cluster) the controllers
(source-controller, kustomize-controller and helm-controller: the set ``flux_local.CONTROLLERS``
that runs as host processes on the local provider) run as Deployments, exactly as their
upstream ``config/default`` kustomizations describe them (same version as the binaries rebuild
builds). CRDs and the flux-system Namespace are left out because the platform stack creates
those itself (one owner per object).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from rebuild.adapters.fs import atomic_write
from rebuild.core.errors import ToolchainError
from rebuild.reconcilers import flux_local
from rebuild.reconcilers.flux_local import SPEED_ARGS

if TYPE_CHECKING:
    from rebuild.toolchain.tools import Toolchain

# The same controllers the local provider runs as host processes (the platform stack's fluxCrds too).
CONTROLLERS = flux_local.CONTROLLERS


def render_install(tc: Toolchain) -> Path:
    from rebuild.toolchain.kubectl import kustomize_binary

    versions = "-".join(tc.versions[c]["version"] for c in CONTROLLERS)
    out = tc.root / "tools" / "flux-install" / versions / "install.yaml"
    if out.exists():
        return out
    docs: dict[tuple[str, str, str], dict[str, object]] = {}
    exe = kustomize_binary()
    seen_from: dict[tuple[str, str, str], str] = {}
    for c in CONTROLLERS:
        cfg = tc.flux_config(c)
        if not (cfg / "manager").is_dir():
            raise ToolchainError(f"{c}: no config/manager under {cfg}", fix="run `rebuild toolchain install`")
        # config/default pulls remote files (other controllers' release assets); render only
        # this controller's own RBAC and manager, in flux-system.
        # kustomize refuses absolute resource paths: render from a folder beside config/.
        with tempfile.TemporaryDirectory(dir=cfg.parent, prefix=".render-") as tmp:
            rel = Path("..") / cfg.name
            Path(tmp, "kustomization.yaml").write_text(
                yaml.safe_dump({"namespace": "flux-system", "resources": [str(rel / "rbac"), str(rel / "manager")]}),
                encoding="utf-8",
            )
            argv = [exe, "kustomize", tmp] if exe.endswith("kubectl") else [exe, "build", tmp]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise ToolchainError(f"rendering {c} config failed: {proc.stderr.strip()[-300:]}", fix="check kubectl kustomize")
        for d in yaml.safe_load_all(proc.stdout):
            if not isinstance(d, dict) or d.get("kind") in ("CustomResourceDefinition", "Namespace"):
                continue
            if d.get("kind") == "Deployment":
                for container in d["spec"]["template"]["spec"]["containers"]:
                    if container.get("name") == "manager":
                        container["args"] = [*container.get("args", []), *SPEED_ARGS.get(c, ())]
            meta = d.get("metadata") or {}
            key = (str(d.get("kind")), str(meta.get("namespace", "")), str(meta.get("name")))
            if key in docs and docs[key] != d:
                raise ToolchainError(f"{key[0]}/{key[2]} differs between {seen_from[key]} and {c}", fix="report a bug")
            docs[key] = d
            seen_from[key] = c
    atomic_write(out, yaml.safe_dump_all(list(docs.values()), sort_keys=False), mode=0o644)
    return out
