"""PriorityClasses and a StorageClass on the rebuilt cluster, with the Kubernetes provider.

The default provider is used: rebuild sets ``kubernetes:kubeconfig`` (a secret, from the
built-in cluster stack's output); by hand it falls back to $KUBECONFIG or ~/.kube/config.
The names are stack outputs: infra/cluster-facts reads them through a StackReference.
"""

import pulumi
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs
from pulumi_kubernetes.scheduling.v1 import PriorityClass
from pulumi_kubernetes.storage.v1 import StorageClass

config = pulumi.Config()
labels = {"app.kubernetes.io/part-of": "rebuild-demo", "app.kubernetes.io/managed-by": "pulumi"}

# (name, value, preemption, description). shop-critical itself is declared in git
# (infrastructure/priorityclasses.yaml) and applied by Flux; these are the stack's.
CLASSES = [
    ("shop-standard", 50000, "PreemptLowerPriority", "Customer-facing shop tiers (frontend, search): after shop-critical."),
    ("batch-low", -10, "Never", "Batch and best-effort work: never preempts, first to be preempted."),
]

priority_classes = [
    PriorityClass(
        name,
        metadata=ObjectMetaArgs(name=name, labels=labels),
        value=value,
        global_default=False,
        preemption_policy=preemption,
        description=description,
    )
    for name, value, preemption, description in CLASSES
]

# No dynamic provisioner runs in local or drill clusters: a claim of this class waits for a
# consumer and then for a volume someone provides (like infrastructure/storage.yaml's "manual").
storage_class = StorageClass(
    "scratch",
    metadata=ObjectMetaArgs(name=config.get("storageClassName") or "scratch", labels=labels),
    provisioner="rebuild.example/none",
    reclaim_policy="Delete",
    volume_binding_mode="WaitForFirstConsumer",
    allow_volume_expansion=False,
)

pulumi.export("priorityClasses", [pc.metadata.name for pc in priority_classes])
pulumi.export("storageClass", storage_class.metadata.name)
