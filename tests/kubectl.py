"""Drift as a person makes it: real `kubectl` commands against a cluster rebuild made, so the
tests check attribution against the field managers kubectl really records (issue 14), not
against manager strings a test writes through the API itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, env_extra: dict[str, str] | None = None) -> str:
    """Run `kubectl ARGS` with KUBECONFIG set; fails the test with kubectl's stderr."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), **(env_extra or {}))
    r = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def sed_editor(folder: Path, name: str, *exprs: str) -> dict[str, str]:
    """EDITOR (and KUBE_EDITOR) for `kubectl edit`: a script that runs `sed -i -e EXPR...` on the
    file kubectl hands it. Expressions may use $VARS of kubectl's environment (pass values that
    must not be written to disk that way, through env_extra)."""
    script = folder / f"edit-{name}.sh"
    quoted = " ".join(f'-e "{e}"' for e in exprs)
    script.write_text(f'#!/bin/sh\nexec sed -i {quoted} "$1"\n')
    script.chmod(0o700)
    return {"EDITOR": str(script), "KUBE_EDITOR": str(script)}


def suspend_flux(kubeconfig: Path, name: str = "demo", namespace: str = "flux-system") -> None:
    """What `flux suspend kustomization NAME` does, with kubectl: spec.suspend = true."""
    kubectl(
        kubeconfig,
        "-n",
        namespace,
        "patch",
        "kustomizations.kustomize.toolkit.fluxcd.io",
        name,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )
