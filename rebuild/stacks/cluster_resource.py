"""The cluster's dynamic provider under its old import path. Keep it: stack state names it.

Pulumi stores a dynamic provider in the stack's state as a dill pickle, which names the
class by module path, and later reads (refresh) and deletes (destroy) unpickle the provider
from that state. Stacks created before the programs moved to rebuild.programs (issue 11) name
``rebuild.stacks.cluster_resource.ClusterProvider``; without this alias every refresh or
destroy of such a stack fails with "No module named 'rebuild.stacks'".
"""

from rebuild.programs.cluster.resource import Cluster, ClusterArgs, ClusterProvider

__all__ = ["Cluster", "ClusterArgs", "ClusterProvider"]
