"""managedFields parsing and manager classification, on real-looking live objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rebuild.core.managedfields import (
    ManagerClassifier,
    Owner,
    classify_manager,
    latest,
    owner_of,
    owners,
    ownership,
    parse_segment,
    selector,
)

DATA = Path(__file__).parent / "data" / "verify"
CART = ("spec", "template", "spec", "containers", ("name", "cart"))

KUSTOMIZE = Owner("kustomize-controller", "Apply", "", "2026-11-26T10:00:03Z", "apps/v1")
SCALE = Owner("kubectl", "Update", "scale", "2026-11-26T10:42:00Z", "apps/v1")
EDIT = Owner("kubectl-edit", "Update", "", "2026-11-26T11:05:17Z", "apps/v1")
LABEL = Owner("kubectl-label", "Update", "", "2026-11-26T11:10:40Z", "apps/v1")
KCM = Owner("kube-controller-manager", "Update", "", "2026-11-26T11:05:19Z", "apps/v1")
KCM_STATUS = Owner("kube-controller-manager", "Update", "status", "2026-11-26T11:05:31Z", "apps/v1")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


# --------------------------------------------------------------------------- FieldsV1 keys


def test_segments_of_every_fieldsv1_key_kind() -> None:
    assert parse_segment("f:replicas") == "replicas"
    assert parse_segment('k:{"name":"app"}') == ("name", "app")
    assert parse_segment('k:{"containerPort":80,"protocol":"TCP"}') == ("containerPort,protocol", "80,TCP")
    # key order in the JSON does not matter: keys are sorted
    assert parse_segment('k:{"protocol":"UDP","port":53}') == ("port,protocol", "53,UDP")
    assert parse_segment('v:"finalizer.example.com/cleanup"') == ("value", '"finalizer.example.com/cleanup"')
    assert parse_segment("i:3") == 3


@pytest.mark.parametrize("bad", ["x:foo", "k:[1]", "k:{}", "k:{not json", "i:x"])
def test_unreadable_keys_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_segment(bad)


def test_selector_matches_what_desired_renders() -> None:
    assert selector({"name": "app"}) == ("name", "app")
    assert selector({"protocol": "TCP", "containerPort": 8080}) == ("containerPort,protocol", "8080,TCP")


# --------------------------------------------------------------------------- ownership


def test_owners_lists_leaves_and_intermediate_entries() -> None:
    found = owners(load("deployment_cart_drifted.json"))
    assert found[("spec", "replicas")] == [SCALE]
    assert found[(*CART, "image")] == [EDIT]
    assert found[("metadata", "labels", "team")] == [LABEL]
    # an intermediate path names everyone who owns something beneath it
    assert found[("spec",)] == [KUSTOMIZE, SCALE, EDIT]
    assert set(found[("metadata", "labels")]) == {KUSTOMIZE, LABEL}
    assert found[(*CART, "ports", ("containerPort,protocol", "8080,TCP"), "containerPort")] == [KUSTOMIZE]
    assert found[("status", "conditions", ("type", "Available"), "status")] == [KCM_STATUS]


def test_owner_of_exact_paths() -> None:
    live = load("deployment_cart_drifted.json")
    assert owner_of(live, ("spec", "replicas")) == [SCALE]
    assert owner_of(live, (*CART, "image")) == [EDIT]
    assert owner_of(live, ("metadata", "labels", "team")) == [LABEL]
    # a list item owned via "." is owned by its applier
    assert owner_of(live, CART) == [KUSTOMIZE]
    assert owner_of(live, ("metadata", "annotations", "deployment.kubernetes.io/revision")) == [KCM]


def test_owner_of_follows_atomic_leaves_down() -> None:
    live = load("deployment_cart_drifted.json")
    # f:args: {} owns the whole list, so an element of it belongs to the same manager
    assert owner_of(live, (*CART, "args", 1)) == [KUSTOMIZE]
    # f:selector: {} owns the whole (atomic) selector
    assert owner_of(live, ("spec", "selector", "matchLabels", "app")) == [KUSTOMIZE]


def test_a_dot_claim_does_not_own_the_fields_of_its_item() -> None:
    live = load("deployment_cart_drifted.json")
    # imagePullPolicy is a server default: nobody owns it, although the item is kustomize's
    assert owner_of(live, (*CART, "imagePullPolicy")) == []


def test_owner_of_a_compound_value_falls_back_to_its_parts() -> None:
    live = load("deployment_cart_drifted.json")
    assert set(owner_of(live, (*CART, "resources"))) == {KUSTOMIZE}
    assert set(owner_of(live, ("metadata", "labels"))) == {KUSTOMIZE, LABEL}


def test_introduced_returns_the_shallowest_values_a_manager_added() -> None:
    live = load("deployment_cart_drifted.json")
    own = ownership(live)
    assert own.introduced(("metadata", "labels", "team")) == [(("metadata", "labels", "team"), [LABEL])]
    # the annotations map is only "."-owned; its key is the addition
    assert own.introduced(("metadata", "annotations")) == [
        (("metadata", "annotations", "deployment.kubernetes.io/revision"), [KCM])
    ]
    # a list item owned via "." is reported whole, not field by field
    assert own.introduced(CART)[0] == (CART, [KUSTOMIZE])


def test_hpa_scale_is_owned_by_kube_controller_manager_through_scale() -> None:
    live = load("deployment_cart_hpa.json")
    [hpa] = owner_of(live, ("spec", "replicas"))
    assert (hpa.manager, hpa.operation, hpa.subresource) == ("kube-controller-manager", "Update", "scale")
    assert classify_manager(hpa.manager, hpa.operation, hpa.subresource) == "controller"


def test_malformed_entries_are_skipped_not_fatal() -> None:
    live = {
        "metadata": {
            "managedFields": [
                "garbage",
                {"manager": "old", "operation": "Update", "fieldsType": "FieldsV2", "fieldsV1": {"f:spec": {}}},
                {"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {"x:weird": {}, "f:ok": {}}}},
                {"manager": "nofields", "operation": "Update"},
            ]
        }
    }
    found = owners(live)
    assert [o.manager for o in found[("spec", "ok")]] == ["m"]
    assert all(o.manager != "old" for os in found.values() for o in os)
    assert owners({}) == {}
    assert owners({"metadata": {"managedFields": None}}) == {}


def test_set_items_and_indexes() -> None:
    live = {
        "metadata": {
            "finalizers": ["example.com/cleanup"],
            "managedFields": [
                {
                    "manager": "operator",
                    "operation": "Update",
                    "fieldsV1": {
                        "f:metadata": {"f:finalizers": {".": {}, 'v:"example.com/cleanup"': {}}},
                        "f:spec": {"f:items": {"i:0": {"f:x": {}}}},
                    },
                }
            ],
        }
    }
    found = owners(live)
    assert ("metadata", "finalizers", ("value", '"example.com/cleanup"')) in found
    assert ("spec", "items", 0, "x") in found


def test_latest_owner_by_time() -> None:
    assert latest([KUSTOMIZE, EDIT, SCALE]) == EDIT
    assert latest([]) is None
    assert latest([Owner("a", "Update"), KUSTOMIZE]) == KUSTOMIZE


def test_owner_description() -> None:
    assert SCALE.describe() == "kubectl (Update, scale) at 2026-11-26T10:42:00Z"
    assert str(Owner("kubectl-edit", "Update")) == "kubectl-edit (Update)"


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("manager", "operation", "subresource", "expected"),
    [
        ("kubectl-edit", "Update", "", "human"),
        ("kubectl-patch", "Update", "", "human"),
        ("kubectl-client-side-apply", "Update", "", "human"),
        ("kubectl", "Update", "scale", "human"),  # kubectl scale
        ("kubectl", "Apply", "", "human"),  # kubectl apply --server-side
        ("kubectl-label", "Update", "", "human"),
        ("kubectl-annotate", "Update", "", "human"),
        ("kubectl-set", "Update", "", "human"),
        ("kubectl-rollout", "Update", "", "human"),
        ("Mozilla", "Update", "", "human"),  # a web dashboard
        ("kube-controller-manager", "Update", "scale", "controller"),  # the HPA
        ("kube-controller-manager", "Update", "", "controller"),
        ("kube-scheduler", "Update", "", "controller"),
        ("kubelet", "Update", "status", "controller"),
        ("kwok-controller", "Update", "", "controller"),
        ("cert-manager-cainjector", "Update", "", "controller"),
        ("gotk-source-controller", "Update", "", "controller"),  # Flux in-cluster
        ("source-controller", "Update", "", "controller"),  # Flux as a host process: its finalizer
        ("kustomize-controller", "Apply", "", "reconciler"),
        ("helm-controller", "Apply", "", "reconciler"),
        ("argocd-controller", "Apply", "", "reconciler"),
        ("argocd-application-controller", "Update", "", "reconciler"),
        ("pulumi-kubernetes", "Update", "", "reconciler"),
        ("pulumi-kubernetes-3f0c9a1b", "Apply", "", "reconciler"),
        ("rebuild", "Apply", "", "reconciler"),
        ("kubectl-edit", "Update", "status", "controller"),  # status writes are always controller
    ],
)
def test_classify_manager_defaults(manager: str, operation: str, subresource: str, expected: str) -> None:
    assert classify_manager(manager, operation, subresource) == expected


def test_classify_manager_custom_lists_and_globs() -> None:
    assert classify_manager("helm", humans=["helm"]) == "human"
    assert classify_manager("my-operator", controllers=["my-*"]) == "controller"
    assert classify_manager("kustomize-controller", reconcilers=[]) == "human"
    # an explicit human pattern wins over the default reconcilers
    assert classify_manager("rebuild", humans=["rebuild"]) == "human"
    c = ManagerClassifier(controllers=("kube-*",))
    assert c(Owner("kube-foo", "Update")) == "controller"
    assert c(Owner("kubectl-edit", "Update")) == "human"
