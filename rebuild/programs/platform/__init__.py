"""Pulumi program ``rebuild-platform``: the platform layer of a rebuilt cluster.

Reads the cluster's kubeconfig from the rebuild-cluster stack (a stack reference) or a
file, then creates the namespaces, the ``rebuild-platform`` ConfigMap and the reconciler
bootstrap with pulumi-kubernetes (rebuild/programs/platform/resources.py). Runs the same
under ``pulumi up`` in stacks/platform and under rebuild's Automation API driver.
"""

from __future__ import annotations

import pulumi

from rebuild.programs.platform.resources import build_platform


def main() -> None:
    build_platform(pulumi.Config())
