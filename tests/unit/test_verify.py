"""Desired vs live, compared the way server-side apply sees ownership."""

from __future__ import annotations

import base64
import copy
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from rebuild.core.config import IgnoreRule
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef, Source
from rebuild.desired import render as desired_mod
from rebuild.recover.verify import (
    LIST_KEYS,
    FieldDiff,
    ObjectResult,
    compare,
    describe,
    message,
    parse_quantity,
    redact,
)

DATA = Path(__file__).parent / "data" / "verify"
CART: FieldPath = ("spec", "template", "spec", "containers", ("name", "cart"))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def desired(body: dict[str, Any], file: str = "apps/cart.yaml", sources: dict[FieldPath, Source] | None = None) -> DesiredObject:
    return DesiredObject(ObjectRef.of(body), str(body["apiVersion"]), body, Source(file, 1), sources or {})


def cart_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "cart"}},
            "template": {
                "metadata": {"labels": {"app": "cart"}},
                "spec": {
                    "containers": [
                        {
                            "name": "cart",
                            "image": "ghcr.io/shop/cart:1.4.0",
                            "args": ["--port=8080", "--metrics"],
                            "ports": [{"containerPort": 8080}],
                            "env": [{"name": "LOG_LEVEL", "value": "info"}],
                            "resources": {"requests": {"cpu": 0.5, "memory": "256Mi"}, "limits": {"memory": "0.5Gi"}},
                        }
                    ]
                },
            },
        },
    }


CART_SOURCES: dict[FieldPath, Source] = {
    ("spec", "replicas"): Source("apps/cart.yaml", 14),
    (*CART, "image"): Source("apps/cart.yaml", 22),
}


def paths(result: ObjectResult) -> dict[str, FieldDiff]:
    return {d.rendered: d for d in result.diffs}


# --------------------------------------------------------------------------- the drifted Deployment


def test_drifted_deployment_reports_exactly_the_human_changes() -> None:
    live = load("deployment_cart_drifted.json")
    result = compare(desired(cart_deployment(), sources=CART_SOURCES), live)
    found = paths(result)
    assert sorted(found) == [
        "metadata.labels.team",
        "spec.replicas",
        "spec.template.spec.containers[name=cart].image",
    ]
    assert not result.ok and result.present
    assert result.suppressed == []

    replicas = found["spec.replicas"]
    assert (replicas.git, replicas.live, replicas.change) == (2, 5, "changed")
    assert replicas.source == Source("apps/cart.yaml", 14)
    assert [(o.manager, o.operation, o.subresource) for o in replicas.owners] == [("kubectl", "Update", "scale")]

    image = found["spec.template.spec.containers[name=cart].image"]
    assert (image.git, image.live) == ("ghcr.io/shop/cart:1.4.0", "ghcr.io/shop/cart:1.5.0-hotfix")
    assert [o.manager for o in image.owners] == ["kubectl-edit"]
    assert image.source == Source("apps/cart.yaml", 22)

    label = found["metadata.labels.team"]
    assert (label.git, label.live, label.change) == (None, "payments", "added")
    assert [o.manager for o in label.owners] == ["kubectl-label"]
    assert label.source == Source("apps/cart.yaml", 1)  # nearest known: the document


def test_message_names_value_source_and_changer() -> None:
    live = load("deployment_cart_drifted.json")
    result = compare(desired(cart_deployment(), sources=CART_SOURCES), live)
    found = paths(result)
    assert message(found["spec.replicas"], result.ref) == (
        "Deployment/shop/cart: field spec.replicas is 5 live, 2 in git (apps/cart.yaml:14); "
        "changed by kubectl (Update, scale) at 2026-11-26T10:42:00Z"
    )
    assert message(found["metadata.labels.team"], result.ref) == (
        "Deployment/shop/cart: field metadata.labels.team is payments live, not in git (apps/cart.yaml:1); "
        "changed by kubectl-label (Update) at 2026-11-26T11:10:40Z"
    )
    assert describe(result) == [message(d, result.ref) for d in result.diffs]


def test_converged_deployment_is_ok_despite_defaults_and_canonical_quantities() -> None:
    live = load("deployment_cart_drifted.json")
    want = cart_deployment()
    want["spec"]["replicas"] = 5
    want["metadata"]["labels"]["team"] = "payments"
    want["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/shop/cart:1.5.0-hotfix"
    result = compare(desired(want), live)
    assert result.ok, describe(result)


def test_hpa_replicas_are_suppressed_with_a_reason() -> None:
    live = load("deployment_cart_hpa.json")
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "cart"}},
            "template": {
                "metadata": {"labels": {"app": "cart"}},
                "spec": {"containers": [{"name": "cart", "image": "ghcr.io/shop/cart:1.4.0"}]},
            },
        },
    }
    result = compare(desired(body), live)
    assert result.ok
    [s] = result.suppressed
    assert s.diff.rendered == "spec.replicas" and (s.diff.git, s.diff.live) == (2, 4)
    assert s.reason == "owned only by controllers (kube-controller-manager)"

    kept = compare(desired(body), live, controller_owned_ok=lambda path, live: path != ("spec", "replicas"))
    assert [d.rendered for d in kept.diffs] == ["spec.replicas"]


def test_ignore_rules_suppress_by_kind_name_namespace_and_path_prefix() -> None:
    live = load("deployment_cart_drifted.json")
    rules = [IgnoreRule("Deployment", "cart", "shop", "spec.replicas"), IgnoreRule("Deploy*", "*", "*", "metadata.labels")]
    result = compare(desired(cart_deployment()), live, ignore=rules)
    assert [d.rendered for d in result.diffs] == ["spec.template.spec.containers[name=cart].image"]
    assert sorted(s.diff.rendered for s in result.suppressed) == ["metadata.labels.team", "spec.replicas"]
    assert all(s.reason.startswith("ignored by verify.ignore rule") for s in result.suppressed)
    # a prefix only matches at a path boundary
    other = compare(desired(cart_deployment()), live, ignore=[IgnoreRule("*", "*", "*", "spec.replica")])
    assert "spec.replicas" in paths(other)
    # another namespace does not match
    elsewhere = compare(desired(cart_deployment()), live, ignore=[IgnoreRule("*", "*", "prod", "spec")])
    assert len(elsewhere.diffs) == 3


def test_missing_object() -> None:
    result = compare(desired(cart_deployment()), None)
    assert not result.present and not result.ok and result.diffs == []
    assert describe(result) == ["Deployment/shop/cart: not found in the cluster (declared in apps/cart.yaml:1)"]


# --------------------------------------------------------------------------- Service defaults


def service_body() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {"selector": {"app": "cart"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def test_service_with_server_defaults_is_converged() -> None:
    result = compare(desired(service_body(), "apps/svc.yaml"), load("service_cart.json"))
    assert result.ok, describe(result)


def test_service_port_drift_is_addressed_by_port_and_protocol() -> None:
    live = load("service_cart.json")
    live["spec"]["ports"][0]["targetPort"] = 9090
    live["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-edit",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-26T15:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {'k:{"port":80,"protocol":"TCP"}': {"f:targetPort": {}}}}},
        }
    )
    del live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"]['k:{"port":80,"protocol":"TCP"}']["f:targetPort"]
    result = compare(desired(service_body(), "apps/svc.yaml"), live)
    [d] = result.diffs
    assert d.rendered == "spec.ports[port,protocol=80,TCP].targetPort"
    assert (d.git, d.live) == (8080, 9090)
    assert [o.manager for o in d.owners] == ["kubectl-edit"]


def test_service_port_missing_live() -> None:
    body = service_body()
    body["spec"]["ports"].append({"name": "dns", "port": 53, "protocol": "UDP"})
    result = compare(desired(body), load("service_cart.json"))
    [d] = result.diffs
    assert d.rendered == "spec.ports[port,protocol=53,UDP]"
    assert (d.change, d.live, d.owners) == ("missing", None, [])
    assert message(d, result.ref).startswith("Service/shop/cart: field spec.ports[port,protocol=53,UDP] is missing live, ")


# --------------------------------------------------------------------------- ConfigMap kubectl patch


def test_configmap_patch_changed_and_added_keys() -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cart-config", "namespace": "shop"},
        "data": {"FEATURE_X": "false", "LOG_LEVEL": "info"},
    }
    src: dict[FieldPath, Source] = {("data", "LOG_LEVEL"): Source("apps/config.yaml", 7)}
    result = compare(desired(body, "apps/config.yaml", src), load("configmap_patched.json"))
    found = paths(result)
    assert sorted(found) == ["data.LOG_LEVEL", "data.NEW_FLAG"]
    assert (found["data.LOG_LEVEL"].git, found["data.LOG_LEVEL"].live) == ("info", "debug")
    assert (found["data.NEW_FLAG"].change, found["data.NEW_FLAG"].live) == ("added", "on")
    assert {o.manager for d in found.values() for o in d.owners} == {"kubectl-patch"}
    assert message(found["data.LOG_LEVEL"], result.ref) == (
        "ConfigMap/shop/cart-config: field data.LOG_LEVEL is debug live, info in git (apps/config.yaml:7); "
        "changed by kubectl-patch (Update) at 2026-11-26T13:14:15Z"
    )


def test_additions_can_be_turned_off() -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cart-config", "namespace": "shop"}, "data": {}}
    result = compare(desired(body), load("configmap_patched.json"), report_additions=False)
    assert result.ok


# --------------------------------------------------------------------------- Secrets


SECRET_VALUES = ["s3cret-Pa55", "hunter2-live", "tok-9f8e7d"]


def secret_body() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cart-db", "namespace": "shop"},
        "type": "Opaque",
        "stringData": {"user": "cart", "password": "s3cret-Pa55"},
    }


def test_secret_diffs_never_carry_values() -> None:
    live = load("secret_cart_db.json")
    result = compare(desired(secret_body(), "apps/secret.yaml"), live)
    found = paths(result)
    assert sorted(found) == ["data.token", "stringData.password"]

    pw = found["stringData.password"]
    assert pw.git == redact("s3cret-Pa55") and pw.live == redact("hunter2-live")
    assert pw.git != pw.live and pw.git.startswith("<redacted sha256:") and len(pw.git) == len("<redacted sha256:12345678>")
    assert [o.manager for o in pw.owners] == ["kubectl-edit"]
    token = found["data.token"]
    assert (token.change, token.live) == ("added", redact("tok-9f8e7d"))

    everything = json.dumps(result.to_dict()) + "\n".join(describe(result)) + repr(result)
    for secret in SECRET_VALUES:
        assert secret not in everything
        assert base64.b64encode(secret.encode()).decode() not in everything
    assert message(pw, result.ref) == (
        f"Secret/shop/cart-db: field stringData.password is {redact('hunter2-live')} live, "
        f"{redact('s3cret-Pa55')} in git (apps/secret.yaml:1); changed by kubectl-edit (Update) at 2026-11-26T14:00:00Z"
    )


def test_secret_data_in_git_is_compared_decoded() -> None:
    live = load("secret_cart_db.json")
    body = secret_body()
    del body["stringData"]
    body["data"] = {"user": base64.b64encode(b"cart").decode(), "password": base64.b64encode(b"hunter2-live").decode()}
    result = compare(desired(body), live, report_additions=False)
    assert result.ok, describe(result)


def test_secret_key_missing_live_is_redacted_too() -> None:
    live = load("secret_cart_db.json")
    body = secret_body()
    body["stringData"]["api-key"] = "very-secret"
    result = compare(desired(body), live, report_additions=False)
    d = paths(result)["stringData.api-key"]
    assert (d.change, d.git, d.live) == ("missing", redact("very-secret"), None)
    assert "very-secret" not in json.dumps(result.to_dict())


# --------------------------------------------------------------------------- lists


def test_associative_lists_ignore_order_and_extra_items_from_others() -> None:
    body = cart_deployment()
    containers = body["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = "ghcr.io/shop/cart:1.5.0-hotfix"
    body["spec"]["replicas"] = 5
    live = load("deployment_cart_drifted.json")
    sidecar = {"name": "istio-proxy", "image": "istio/proxyv2:1.24.0"}
    live["spec"]["template"]["spec"]["containers"].insert(0, sidecar)  # injected, unowned by people
    live["metadata"]["labels"].pop("team")
    assert compare(desired(body), live).ok


def test_container_missing_live_and_env_item_changed() -> None:
    body = cart_deployment()
    body["spec"]["replicas"] = 5
    c = body["spec"]["template"]["spec"]["containers"]
    c[0]["image"] = "ghcr.io/shop/cart:1.5.0-hotfix"
    c[0]["env"][0]["value"] = "warn"
    c.append({"name": "worker", "image": "ghcr.io/shop/cart:1.4.0"})
    result = compare(desired(body), load("deployment_cart_drifted.json"), report_additions=False)
    found = paths(result)
    assert sorted(found) == [
        "spec.template.spec.containers[name=cart].env[name=LOG_LEVEL].value",
        "spec.template.spec.containers[name=worker]",
    ]
    assert found["spec.template.spec.containers[name=worker]"].change == "missing"
    env = found["spec.template.spec.containers[name=cart].env[name=LOG_LEVEL].value"]
    assert (env.git, env.live, [o.manager for o in env.owners]) == ("warn", "info", ["kustomize-controller"])


def test_atomic_scalar_list_is_one_diff_owned_by_its_leaf_owner() -> None:
    body = cart_deployment()
    body["spec"]["replicas"] = 5
    c = body["spec"]["template"]["spec"]["containers"][0]
    c["image"] = "ghcr.io/shop/cart:1.5.0-hotfix"
    c["args"] = ["--port=8080"]
    result = compare(desired(body), load("deployment_cart_drifted.json"), report_additions=False)
    [d] = result.diffs
    assert d.rendered == "spec.template.spec.containers[name=cart].args"
    assert (d.git, d.live) == (["--port=8080"], ["--port=8080", "--metrics"])
    assert [o.manager for o in d.owners] == ["kustomize-controller"]


def pod_spec_object(tolerations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ops"},
        "spec": {"template": {"spec": {"tolerations": tolerations}}},
    }


def test_atomic_list_of_maps_compares_declared_fields_per_element() -> None:
    git = pod_spec_object([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}])
    live = pod_spec_object([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}])
    assert compare(desired(git), live).ok  # a field git does not declare inside an element
    live2 = pod_spec_object([{"key": "other", "operator": "Exists"}])
    [d] = compare(desired(git), live2).diffs
    assert d.rendered == "spec.template.spec.tolerations[0].key"
    live3 = pod_spec_object([])
    [d3] = compare(desired(git), live3).diffs
    assert (d3.rendered, d3.live) == ("spec.template.spec.tolerations", [])


def test_finalizers_are_a_set() -> None:
    git = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shop", "finalizers": ["a.example.com", "b.example.com"]},
    }
    live: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shop", "finalizers": ["b.example.com", "c.example.com"]},
    }
    [d] = compare(desired(git), live).diffs
    assert d.rendered == 'metadata.finalizers[value="a.example.com"]' and d.change == "missing"


def test_list_item_without_its_merge_key_is_compared_as_atomic() -> None:
    git = pod_spec_object([])
    git["spec"]["template"]["spec"] = {"containers": [{"image": "x"}]}
    live = copy.deepcopy(git)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "y"
    [d] = compare(desired(git), live).diffs
    assert d.rendered == "spec.template.spec.containers[0].image"


def test_list_keys_agree_with_desired() -> None:
    for name, keys in desired_mod.LIST_KEYS.items():
        assert LIST_KEYS.get(name) == keys, name


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("0.5", Fraction(1, 2)),
        (0.5, Fraction(1, 2)),
        (1, Fraction(1)),
        ("1", Fraction(1)),
        ("1Gi", Fraction(1073741824)),
        ("1073741824", Fraction(1073741824)),
        ("0.5Gi", Fraction(512 * 1024 * 1024)),
        ("128974848", Fraction(128974848)),
        ("129e6", Fraction(129000000)),
        ("129M", Fraction(129000000)),
        ("123Mi", Fraction(128974848)),
        ("1E", Fraction(10**18)),
        ("1e3", Fraction(1000)),
        ("100u", Fraction(1, 10**4)),
    ],
)
def test_parse_quantity(text: Any, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["abc", "1Xi", "", True, None, [1]])
def test_parse_quantity_rejects(bad: Any) -> None:
    assert parse_quantity(bad) is None


def value_object(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "n"}, "spec": spec}


@pytest.mark.parametrize(
    ("git", "live", "equal"),
    [
        ({"strategy": {"rollingUpdate": {"maxSurge": 1}}}, {"strategy": {"rollingUpdate": {"maxSurge": "1"}}}, True),
        ({"strategy": {"rollingUpdate": {"maxSurge": "25%"}}}, {"strategy": {"rollingUpdate": {"maxSurge": "25%"}}}, True),
        ({"strategy": {"rollingUpdate": {"maxSurge": "25%"}}}, {"strategy": {"rollingUpdate": {"maxSurge": 1}}}, False),
        ({"paused": True}, {"paused": 1}, False),  # booleans are never numbers
        ({"paused": False}, {}, True),  # omitempty dropped it
        ({"replicas": 1}, {"replicas": "1"}, False),  # strict outside quantities/IntOrString
        ({"minReadySeconds": 5}, {"minReadySeconds": 5.0}, True),
        ({"template": {"metadata": {"annotations": {}}}}, {"template": {"metadata": {}}}, True),
        ({"template": {"spec": {"volumes": []}}}, {"template": {"spec": {}}}, True),
        ({"selector": None}, {"selector": {"matchLabels": {"a": "b"}}}, True),  # null asks for nothing
        ({"replicas": 3}, {}, False),
    ],
)
def test_value_normalisation(git: dict[str, Any], live: dict[str, Any], equal: bool) -> None:
    assert compare(desired(value_object(git)), value_object(live)).ok is equal


def test_quantity_changed_is_reported_in_git_and_live_form() -> None:
    git = value_object({"template": {"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}}})
    live = value_object({"template": {"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1500m"}}}]}}})
    [d] = compare(desired(git), live).diffs
    assert (d.rendered, d.git, d.live) == ("spec.template.spec.containers[name=a].resources.limits.cpu", "1", "1500m")


def test_identity_status_and_bookkeeping_are_not_compared() -> None:
    git = value_object({"replicas": 1})
    git["metadata"].update({"resourceVersion": "1", "uid": "u", "generation": 1, "creationTimestamp": None})
    git["status"] = {"replicas": 9}
    live = value_object({"replicas": 1})
    live["apiVersion"] = "apps/v1beta2"
    live["metadata"].update(
        {"resourceVersion": "77", "uid": "other", "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z"}
    )
    live["status"] = {"replicas": 1}
    assert compare(desired(git), live).ok


def test_type_mismatch_is_a_change() -> None:
    [d] = compare(desired(value_object({"selector": {"a": 1}})), value_object({"selector": "x"})).diffs
    assert (d.rendered, d.change) == ("spec.selector", "changed")


def test_to_dict_is_json_ready() -> None:
    result = compare(desired(cart_deployment(), sources=CART_SOURCES), load("deployment_cart_drifted.json"))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ref"] == "Deployment/shop/cart" and data["ok"] is False
    row = next(d for d in data["diffs"] if d["path"] == "spec.replicas")
    assert row == {
        "path": "spec.replicas",
        "change": "changed",
        "git": 2,
        "live": 5,
        "source": "apps/cart.yaml:14",
        "owners": [{"manager": "kubectl", "operation": "Update", "subresource": "scale", "time": "2026-11-26T10:42:00Z"}],
    }


def test_env_var_added_with_kubectl_set_env_is_one_whole_item() -> None:
    live = load("deployment_cart_drifted.json")
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "DEBUG", "value": "1"})
    live["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-set",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": "2026-11-26T16:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"cart"}': {"f:env": {'k:{"name":"DEBUG"}': {".": {}, "f:name": {}, "f:value": {}}}}
                            }
                        }
                    }
                }
            },
        }
    )
    ignore = [
        IgnoreRule("*", "*", "*", "spec.replicas"),
        IgnoreRule("*", "*", "*", "metadata"),
        IgnoreRule(path="spec.template.spec.containers[name=cart].image"),
    ]
    result = compare(desired(cart_deployment()), live, ignore=ignore)
    [d] = result.diffs
    assert d.rendered == "spec.template.spec.containers[name=cart].env[name=DEBUG]"
    assert (d.change, d.git, d.live) == ("added", None, {"name": "DEBUG", "value": "1"})
    assert [o.manager for o in d.owners] == ["kubectl-set"]
    assert message(d, result.ref) == (
        'Deployment/shop/cart: field spec.template.spec.containers[name=cart].env[name=DEBUG] is {"name":"DEBUG","value":"1"} '
        "live, not in git (apps/cart.yaml:1); changed by kubectl-set (Update) at 2026-11-26T16:00:00Z"
    )
