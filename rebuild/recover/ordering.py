"""Apply and teardown order, as a table with a reason for every row.

Restores that apply everything at once fail in known ways: custom resources before their
CRD is Established (velero#3844, #2948, #1633), namespaced objects before their
Namespace, Pods before their ServiceAccount, webhooks that reject everything because their
Service is not up yet. The table below is the order rebuild applies in (and shows in
``plan``); teardown is its reverse. Objects of one rank are independent and may be applied
concurrently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rebuild.core.model import DesiredObject


@dataclass(frozen=True)
class Rank:
    rank: int
    name: str
    kinds: frozenset[str]
    reason: str
    wait: str = ""  # what must hold before the next rank starts


RANKS: tuple[Rank, ...] = (
    Rank(
        0,
        "crds",
        frozenset({"CustomResourceDefinition"}),
        "custom resources can only be created once their CRD exists",
        wait="every CRD Established",
    ),
    Rank(1, "namespaces", frozenset({"Namespace"}), "namespaced objects need their Namespace", wait="Namespaces Active"),
    Rank(
        2,
        "cluster-config",
        frozenset({"PriorityClass", "StorageClass", "RuntimeClass", "IngressClass", "APIService"}),
        "cluster-wide classes are referenced by workloads and volumes",
    ),
    Rank(
        3,
        "identity-and-config",
        frozenset({"ServiceAccount", "Secret", "ConfigMap", "ResourceQuota", "LimitRange"}),
        "Pods fail admission or start without their ServiceAccount, Secrets and ConfigMaps; quotas must precede workloads",
    ),
    Rank(
        4,
        "rbac",
        frozenset({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}),
        "workloads need their permissions from the first start",
    ),
    Rank(5, "storage", frozenset({"PersistentVolume", "PersistentVolumeClaim"}), "volumes must exist before Pods mount them"),
    Rank(
        6,
        "services",
        frozenset({"Service", "Endpoints", "EndpointSlice"}),
        "Services first so DNS and selectors are ready when Pods start",
    ),
    Rank(
        7,
        "workloads",
        frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob", "Pod"}),
        "the applications themselves",
    ),
    Rank(
        8,
        "policies",
        frozenset({"PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler", "Ingress", "PodSecurityPolicy"}),
        "policies and routing that refer to workloads",
    ),
    Rank(9, "other", frozenset(), "built-in kinds without a specific rank"),
    Rank(10, "custom-resources", frozenset(), "custom resources, after their CRDs are Established (rank 0)"),
    Rank(
        11,
        "webhooks",
        frozenset(
            {
                "ValidatingWebhookConfiguration",
                "MutatingWebhookConfiguration",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            }
        ),
        "last, so a webhook whose backend is not up yet cannot block the rest of the restore",
    ),
)

_BY_KIND = {k: r for r in RANKS for k in r.kinds}
_OTHER = RANKS[9]
_CUSTOM = RANKS[10]


def rank_of(obj: DesiredObject, custom_groups: frozenset[tuple[str, str]]) -> Rank:
    if (obj.ref.group, obj.ref.kind) in custom_groups:
        return _CUSTOM
    return _BY_KIND.get(obj.ref.kind, _OTHER)


def custom_kinds(objects: Iterable[DesiredObject]) -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for o in objects:
        if o.ref.kind == "CustomResourceDefinition":
            spec = o.body.get("spec") or {}
            names = spec.get("names") or {}
            if spec.get("group") and names.get("kind"):
                out.add((str(spec["group"]), str(names["kind"])))
    return frozenset(out)


def apply_order(
    objects: Iterable[DesiredObject], extra_custom: frozenset[tuple[str, str]] = frozenset()
) -> list[tuple[Rank, list[DesiredObject]]]:
    """Objects grouped by rank, ranks in apply order, objects sorted by namespace/kind/name within a rank."""
    objs = list(objects)
    custom = custom_kinds(objs) | extra_custom
    groups: dict[int, list[DesiredObject]] = {}
    for o in objs:
        groups.setdefault(rank_of(o, custom).rank, []).append(o)
    return [
        (r, sorted(groups[r.rank], key=lambda o: (o.ref.namespace, o.ref.kind, o.ref.name))) for r in RANKS if r.rank in groups
    ]


def teardown_order(objects: Iterable[DesiredObject]) -> list[tuple[Rank, list[DesiredObject]]]:
    return list(reversed(apply_order(objects)))


def table(groups: list[tuple[Rank, list[DesiredObject]]]) -> list[dict[str, object]]:
    """The order as rows for text and JSON output."""
    return [
        {
            "rank": r.rank,
            "phase": r.name,
            "count": len(objs),
            "kinds": sorted({o.ref.kind for o in objs}),
            "reason": r.reason,
            "wait": r.wait,
        }
        for r, objs in groups
    ]
