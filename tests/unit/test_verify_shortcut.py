"""verify's shortcut for an unchanged object gives exactly the walk's result.

``_Comparer._unchanged`` skips the field-by-field walk when every value git declares is in the
live object as written. It must never hide a difference the walk reports: every live variant
below (each leaf and each list changed the ways Kubernetes and people change them: equal
quantities written otherwise, IntOrString, bool for int, null, removed, merge-key defaults,
reordered and duplicated list items) is compared with and without the shortcut.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.recover.verify import comparison
from rebuild.recover.verify.comparison import compare

MANAGED = [{"manager": "kustomize-controller", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {}}]

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "finalizers": ["a/b", "c/d"]},
    "spec": {
        "replicas": 2,
        "paused": False,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1",
                        "args": ["--a", "1"],
                        "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": ""}],
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}},
                        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                    },
                    {"name": "side", "image": "busybox", "command": ["sleep", "1"]},
                ],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
                "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}],
                "terminationGracePeriodSeconds": 30,
                "nodeSelector": None,
            },
        },
        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
    },
}
SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "annotations": {"x": "y"}},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "targetPort": 8080}, {"name": "m", "port": 9090, "targetPort": "m"}],
    },
}
CONFIGMAP: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cfg", "namespace": "shop"},
    "data": {"a": "1", "b": ""},
    "binaryData": {},
}
# Duplicate merge keys in git (the API server accepts duplicated env names): the walk compares
# each git item with the first live item of that key, so the shortcut must not pair them in order.
DUPLICATES: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "shop"},
    "spec": {"containers": [{"name": "a", "image": "i", "env": [{"name": "X", "value": "1"}, {"name": "X", "value": "2"}]}]},
}


def _live(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server returns it: bookkeeping, defaults, merge-key defaults."""
    live = copy.deepcopy(body)
    live["metadata"].update(uid="u", resourceVersion="1", managedFields=copy.deepcopy(MANAGED))
    for port in live.get("spec", {}).get("ports", []):
        port.setdefault("protocol", "TCP")
    for c in live.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        c["imagePullPolicy"] = "IfNotPresent"
        for port in c.get("ports", []):
            port.setdefault("protocol", "TCP")
    live["status"] = {"observedGeneration": 1}
    return live


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))


def _equivalents(v: Any) -> list[Any]:
    """Other values for ``v``: some equal to it the Kubernetes way, some not."""
    out: list[Any] = [None, "", 0, False, {}, []]
    if isinstance(v, bool):
        out += [int(v), str(v).lower(), not v]
    elif isinstance(v, int):
        out += [str(v), float(v), v + 1, bool(v), f"{v * 1000}m"]
    elif isinstance(v, str):
        out += [v + "x", v.upper(), "1000m", "1", "1024Mi", "0.5", 1, 80, "TCP", "UDP"]
    elif isinstance(v, list):
        out += [v[::-1], v + v[:1], v[1:], v[:1] + v, [*v, "extra"], [copy.deepcopy(x) for x in v]]
        if v and isinstance(v[0], dict):
            out += [[{k: x for k, x in v[0].items() if k != "protocol"}, *v[1:]], [{**v[0], "protocol": "UDP"}, *v[1:]]]
    elif isinstance(v, dict):
        out += [{**v, "extra": "x"}, {k: v[k] for k in list(v)[1:]}]
    return out


def _variants(live: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield live
    for path in _leaves(live):
        if not path or path[0] in ("status",) or path[:2] == ("metadata", "managedFields"):
            continue
        parent = live
        for seg in path[:-1]:
            parent = parent[seg]
        for new in [*_equivalents(parent[path[-1]]), "<removed>"]:
            v = copy.deepcopy(live)
            node = v
            for seg in path[:-1]:
                node = node[seg]
            if new == "<removed>":
                if isinstance(node, dict):
                    del node[path[-1]]
                else:
                    node.pop(path[-1])
            else:
                node[path[-1]] = copy.deepcopy(new)
            yield v


def _result(desired: DesiredObject, live: dict[str, Any], walk_only: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as m:
        if walk_only:
            never: Callable[[Any], bool] = lambda _self: False  # noqa: E731
            m.setattr(comparison._Comparer, "_unchanged", never)
        r = compare(desired, live, report_additions=False)
    return repr((r.diffs, r.suppressed))


@pytest.mark.parametrize("body", [DEPLOYMENT, SERVICE, CONFIGMAP, DUPLICATES], ids=lambda b: b["kind"])
def test_the_shortcut_finds_exactly_what_the_walk_finds(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    desired = DesiredObject(ObjectRef.of(body), body["apiVersion"], body, Source("apps/x.yaml", 1))
    live = _live(body)
    base = comparison._Comparer(desired, live, None, comparison.DEFAULT_CLASSIFIER, False)
    # the shortcut is taken for the object as applied (not a vacuous test), except on duplicates
    assert base._unchanged() is (body is not DUPLICATES)
    taken = differ = 0
    for variant in _variants(live):
        cmp = comparison._Comparer(desired, variant, None, comparison.DEFAULT_CLASSIFIER, False)
        fast = _result(desired, variant, False, monkeypatch)
        walk = _result(desired, variant, True, monkeypatch)
        assert fast == walk, variant
        taken += cmp._unchanged()
        differ += walk != repr(([], []))
    assert differ > 10 and (taken > 10 or body is DUPLICATES)  # both sides of the shortcut were exercised
