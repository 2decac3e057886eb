"""Pulumi program: the platform layer of a rebuilt cluster.

Reads the cluster's kubeconfig from the rebuild-cluster stack (a stack reference) or a
file, then creates the namespaces and the ``rebuild-platform`` ConfigMap with
pulumi-kubernetes. Runs the same under ``pulumi up`` and rebuild's Automation API.
"""

import pulumi

from rebuild.stacks.platform import build_platform

build_platform(pulumi.Config())
