"""Backport edits on the corpus repos (tests/data/repos): each edit lands where the field is set, in
that place's own form (a generator literal, an env file line, a value inside an inline patch's
block scalar, an images or replicas entry), every other byte is kept, and what a transformer
sets for many objects is listed with its line. Pure: render with the real kustomize, no cluster."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from rebuild.capture.backport import Backport, plan_backport
from rebuild.capture.drift import DriftReport, Finding
from rebuild.core.model import DesiredObject, FieldPath
from rebuild.desired.render import render
from tests.unit.test_desired_corpus import CORPUS, PATHS
from tests.unit.test_drift import needs_kustomize


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _plan(
    repo: str, kind: str, name_start: str, path: FieldPath, git: Any, live: Any, how: str = "changed"
) -> tuple[Backport, str]:
    root = CORPUS / repo / "repo"
    r = render(root, PATHS[repo])
    d: DesiredObject = next(o for o in r.objects if o.ref.kind == kind and o.ref.name.startswith(name_start))
    f = Finding(how, d.ref, d.api_version, path, git, live, "kubectl-patch", "Update", "", None, d.source_of(path), "human")  # type: ignore[arg-type]
    files = _files(root)
    b = plan_backport(
        DriftReport(findings=[f]), {o.ref: o for o in r.objects}, files, new_objects_dir="captured", include_deletions=False
    )
    diff = "".join(
        "".join(difflib.unified_diff(files[p].splitlines(True), b.edits[p].splitlines(True), p, p)) for p in sorted(b.edits)
    )
    return b, diff


@needs_kustomize
def test_a_generator_literal_is_edited_in_place() -> None:
    b, diff = _plan("generators", "ConfigMap", "api-config-", ("data", "LOG_LEVEL"), "info", "debug")
    assert list(b.edits) == ["base/kustomization.yaml"] and not b.listed
    assert "-      - LOG_LEVEL=info\n+      - LOG_LEVEL=debug\n" in diff


@needs_kustomize
def test_a_merged_literal_is_edited_in_the_overlay() -> None:
    b, diff = _plan("generators", "ConfigMap", "api-config-", ("data", "FEATURE_SEARCH"), "on", "off")
    assert list(b.edits) == ["overlays/prod/kustomization.yaml"]
    assert "-      - FEATURE_SEARCH=on\n+      - FEATURE_SEARCH=off\n" in diff


@needs_kustomize
def test_an_env_file_line_is_edited_as_text() -> None:
    b, _ = _plan("generators", "ConfigMap", "api-config-", ("data", "DB_POOL"), "10", "20")
    assert list(b.edits) == ["base/api.env"]
    assert b.edits["base/api.env"] == "# connection settings\nDB_HOST=postgres.db.svc\nDB_POOL=20\n"


@needs_kustomize
def test_a_key_added_to_a_generated_configmap_becomes_a_literal() -> None:
    b, diff = _plan("generators", "ConfigMap", "api-config-", ("data", "NEW_KEY"), None, "yes", how="added")
    assert list(b.edits) == ["base/kustomization.yaml"]
    assert "       - FEATURE_SEARCH=off\n+      - NEW_KEY=yes\n" in diff


@needs_kustomize
def test_inline_json6902_and_smp_values_are_edited_inside_the_block_scalar() -> None:
    b, diff = _plan("inline-patches", "Deployment", "worker", ("spec", "replicas"), 2, 5)
    assert list(b.edits) == ["kustomization.yaml"]
    assert "-      value: 2\n+      value: 5\n" in diff
    cpu: FieldPath = ("spec", "template", "spec", "containers", ("name", "worker"), "resources", "requests", "cpu")
    b, diff = _plan("inline-patches", "Deployment", "worker", cpu, "250m", "500m")
    assert "-                cpu: 250m\n+                cpu: 500m\n" in diff


@needs_kustomize
def test_an_image_set_by_a_component_is_edited_in_the_component() -> None:
    image: FieldPath = ("spec", "template", "spec", "containers", ("name", "podinfod"), "image")
    b, diff = _plan(
        "components", "Deployment", "podinfo", image, "ghcr.io/example/podinfo:6.7.1", "ghcr.io/example/podinfo:6.8.0"
    )
    assert list(b.edits) == ["components/version/kustomization.yaml"]
    assert "-    newTag: 6.7.1\n+    newTag: 6.8.0\n" in diff


@needs_kustomize
def test_a_value_set_by_a_transformer_is_listed_and_an_added_key_goes_to_the_manifest() -> None:
    label: FieldPath = ("metadata", "labels", "env")
    b, _ = _plan("shop-prefix", "Deployment", "acme-cart", label, "prod", "staging")
    assert not b.edits
    assert b.listed == [
        "Deployment/shop-prefix/acme-cart-v1 metadata.labels.env: not edited: set by a transformer at kustomization.yaml:12 "
        "for every object that kustomization builds; change it there if all of them should change, or add a patch for this object"
    ]
    b, diff = _plan("shop-prefix", "Deployment", "acme-cart", ("metadata", "annotations", "oncall"), None, "alice", how="added")
    assert list(b.edits) == ["base/cart.yaml"]
    assert "     app: cart\n+  annotations:\n+    oncall: alice\n" in diff


@needs_kustomize
def test_a_list_item_is_edited_under_its_items_prefix() -> None:
    b, diff = _plan("plain", "ConfigMap", "blog-theme", ("data", "theme"), "casper", "london")
    assert list(b.edits) == ["apps/blog/config.yml"]
    assert "-      theme: casper\n+      theme: london\n" in diff
