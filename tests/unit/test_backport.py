"""Backport of drift findings into examples/gitops-repo: only the drifted bytes change.

The acceptance scenario of issue 4 (tests/unit/test_drift.py ``scenario()``) against the real
example repository files: each manual change must land in the file and line that produces the
field (base manifest, strategic-merge patch, JSON 6902 operation, ``images:``/``replicas:``
entry), every other line must stay byte-identical, new objects must be clean files, deletions
listed (or removed with ``include_deletions``), and no Secret value may appear anywhere.
"""

from __future__ import annotations

import copy
import difflib
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from rebuild.capture.backport import Backport, clean_manifest, plan_backport
from rebuild.capture.drift import DriftReport, Finding, find_drift
from rebuild.core.config import CaptureSpec
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef, Source
from rebuild.desired.render import render
from tests.unit.test_drift import (
    API,
    CART,
    DEPLOY,
    EXAMPLE,
    NAMESPACES,
    SECRET_VALUES,
    Scenario,
    desired_objects,
    needs_kustomize,
    ref,
    scenario,
)

DATA = Path(__file__).parent / "data" / "backport"
NEW_DIR = "apps/captured"
ROOT_KUSTOMIZATION = "clusters/demo/kustomization.yaml"


def repo_files(root: Path = EXAMPLE) -> dict[str, str]:
    """What the caller reads: every YAML file of the repository, by repo-relative path."""
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".yaml", ".yml")
    }


def plan(s: Scenario, report: DriftReport | None = None, **kw: Any) -> tuple[Backport, dict[str, str]]:
    files = kw.pop("files", None) or repo_files()
    kw.setdefault("include_deletions", False)
    b = plan_backport(report or s.report(), s.by_ref, files, new_objects_dir=kw.pop("new_objects_dir", NEW_DIR), **kw)
    return b, files


def changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines), byte-exact: every line not listed is identical in both texts."""
    removed: list[str] = []
    added: list[str] = []
    for line in difflib.ndiff(old.splitlines(keepends=True), new.splitlines(keepends=True)):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


# Every manual change of the scenario, as the exact lines it must change in the repository.
EXPECTED_EDITS: dict[str, tuple[list[str], list[str]]] = {
    "apps/overlays/demo/kustomization.yaml": (
        ["    count: 3\n", '    newTag: "1.8.3"\n'],
        ["    count: 5\n", '    newTag: "1.8.4"\n'],
    ),
    "apps/base/ledger/ledger.yaml": (
        ["  labels: {app: ledger, tier: api}\n", "          image: ghcr.io/example/ledger:0.9.4\n"],
        ["  labels: {app: ledger, tier: api, oncall: payments-team}\n", "          image: ghcr.io/example/ledger:0.9.5\n"],
    ),
    "apps/base/cart/configmap.yaml": (['        when: "cart.total >= 50"\n'], ['        when: "cart.total >= 40"\n']),
    "apps/overlays/demo/patches/cart-demo-mode.yaml": ([], ["    team: checkout\n"]),
    "apps/overlays/demo/patches/frontend-nginx-cache.yaml": (['  cache-ttl-seconds: "60"\n'], ['  cache-ttl-seconds: "30"\n']),
    "apps/overlays/demo/patches/payments-api-sandbox.json6902.yaml": (
        ['  value: "https://psp.demo.example.com/v2"\n'],
        ['  value: "https://psp.demo.example.com/v3"\n'],
    ),
}


# --------------------------------------------------------------------------- the acceptance scenario


@needs_kustomize
def test_exactly_the_drifted_fields_are_edited_and_every_other_byte_is_kept() -> None:
    b, files = plan(scenario())
    assert set(b.edits) == set(EXPECTED_EDITS)
    for path, expected in EXPECTED_EDITS.items():
        assert changes(files[path], b.edits[path]) == expected, path
    # the label lands where the overlay declares the labels of this object (the patch), in its place
    patch = b.edits["apps/overlays/demo/patches/cart-demo-mode.yaml"]
    assert '    app.kubernetes.io/version: "1.8.3"\n    team: checkout\nspec:\n' in patch
    assert b.deleted_files == []


@needs_kustomize
def test_new_objects_are_clean_manifests_listed_in_their_kustomization() -> None:
    b, _ = plan(scenario())
    assert set(b.new_files) == {
        "apps/captured/kustomization.yaml",
        "apps/captured/shop/configmap-promo-banner.yaml",
        "apps/captured/shop/service-promo.yaml",
    }
    cm = yaml.safe_load(b.new_files["apps/captured/shop/configmap-promo-banner.yaml"])
    assert cm == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "promo-banner", "namespace": "shop"},
        "data": {"BANNER": "Black Friday: -20% on everything | today only", "ENDS": "2026-11-30"},
    }
    svc_text = b.new_files["apps/captured/shop/service-promo.yaml"]
    assert svc_text.startswith("# Captured by `rebuild capture`: created live by kubectl-create (Update) at 2026-11-26T15:01:30Z")
    assert yaml.safe_load(svc_text) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "promo", "namespace": "shop", "labels": {"app": "promo"}},
        "spec": {
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "metrics", "port": 9102}],
            "selector": {"app": "promo"},
            "type": "ClusterIP",
        },
    }
    for text in b.new_files.values():
        for noise in (
            "status",
            "managedFields",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "clusterIP",
            "protocol",
        ):
            assert noise not in text
    assert yaml.safe_load(b.new_files["apps/captured/kustomization.yaml"])["resources"] == [
        "shop/configmap-promo-banner.yaml",
        "shop/service-promo.yaml",
    ]
    # nobody includes apps/captured yet: the PR says so
    assert any("add apps/captured to the resources" in x for x in b.listed)
    assert "### To do by hand" in b.body


@needs_kustomize
def test_a_new_folder_is_added_to_the_root_kustomization_when_known() -> None:
    b, files = plan(scenario(), root_kustomization=ROOT_KUSTOMIZATION)
    assert changes(files[ROOT_KUSTOMIZATION], b.edits[ROOT_KUSTOMIZATION]) == ([], ["  - ../../apps/captured\n"])
    assert not any("add apps/captured" in x for x in b.listed)


@needs_kustomize
def test_an_existing_captured_kustomization_gets_the_new_files() -> None:
    files = repo_files()
    existing = (DATA / "captured-kustomization.yaml").read_text()
    files["apps/captured/kustomization.yaml"] = existing
    b, _ = plan(scenario(), files=files)
    assert "apps/captured/kustomization.yaml" not in b.new_files
    assert changes(existing, b.edits["apps/captured/kustomization.yaml"]) == (
        [],
        ["  - shop/configmap-promo-banner.yaml\n", "  - shop/service-promo.yaml\n"],
    )


@needs_kustomize
def test_deletions_are_listed_unless_asked_for() -> None:
    b, _ = plan(scenario())
    assert "apps/base/frontend/service.yaml" not in b.edits
    assert (
        "Service/shop/frontend: deleted live, still in git (apps/base/frontend/service.yaml:1); "
        "removed only with --include-deletions" in b.listed
    )
    assert "### Deletions" in b.body and "Service/shop/frontend" in b.body.split("### Deletions")[1]


@needs_kustomize
def test_include_deletions_removes_the_file_and_its_resources_entry() -> None:
    b, files = plan(scenario(), include_deletions=True)
    assert b.deleted_files == ["apps/base/frontend/service.yaml"]
    assert b.edits["apps/base/frontend/service.yaml"] == ""
    kust = "apps/base/frontend/kustomization.yaml"
    assert changes(files[kust], b.edits[kust]) == (["- service.yaml\n"], [])
    assert "+++ /dev/null" in b.diff(files)
    assert not any("Service/shop/frontend" in x for x in b.listed)


@needs_kustomize
def test_include_deletions_removes_one_document_of_a_multi_document_file() -> None:
    s = scenario()
    s.live = [o for o in s.live if ObjectRef.of(o) != ref("", "Service", "shop", "cart")]
    b, files = plan(s, include_deletions=True)
    path = "apps/base/cart/deployment.yaml"
    removed, added = changes(files[path], b.edits[path])
    assert added == [] and removed[0] == "---\n" and removed[1:3] == ["apiVersion: v1\n", "kind: Service\n"]
    assert b.edits[path] == files[path][: files[path].index("---\napiVersion: v1\nkind: Service")]
    assert path not in b.deleted_files


@needs_kustomize
def test_deleting_an_object_an_overlay_patches_is_listed_not_done() -> None:
    s = scenario()
    s.live = [o for o in s.live if ObjectRef.of(o) != ref(*DEPLOY, "observability", "prometheus")]
    b, _ = plan(s, include_deletions=True)
    assert "apps/base/prometheus/prometheus.yaml" not in b.edits
    (line,) = [x for x in b.listed if x.startswith("Deployment/observability/prometheus")]
    assert "apps/overlays/demo/patches/observability-resources.yaml also sets its fields" in line


@needs_kustomize
def test_no_secret_value_anywhere() -> None:
    s = scenario()
    report = s.report()
    b, _ = plan(s, report, include_deletions=True, root_kustomization=ROOT_KUSTOMIZATION)
    blob = "\n".join(
        [
            *b.edits.values(),
            *b.new_files.values(),
            *b.listed,
            b.title,
            b.body,
            b.commit_message,
            b.branch,
            json.dumps(report.to_dict()),
        ]
    )
    for raw in SECRET_VALUES:
        assert raw not in blob
    assert "<redacted" not in b.body + b.commit_message  # not even the fingerprint
    assert "apps/base/payments-api/secret.yaml" not in b.edits
    assert not any("promo-api-key" in p for p in b.new_files)
    secrets = b.body.split("### Secrets")[1].split("###")[0]
    assert "Secret/payments/payments-db: the value of key DB_PASSWORD differs live" in secrets
    assert "Secret/shop/promo-api-key: created live by kubectl-client-side-apply (Update) with key API_KEY" in secrets
    assert "SOPS" in secrets


@needs_kustomize
def test_body_names_the_managers_and_the_coverage() -> None:
    s = scenario()
    report = s.report()
    b, _ = plan(s, report)
    for who in (
        "kubectl (Update, scale)",
        "kubectl-edit (Update)",
        "kubectl-set (Update)",
        "kubectl-label (Update)",
        "kubectl-patch (Update)",
    ):
        assert who in b.body
    assert "| kubectl-create (Update) | 2026-11-26T15:00:00Z | `apps/captured/shop/configmap-promo-banner.yaml` |" in b.body
    assert "| object | field | git → live | changed by | when | file:line |" in b.body
    row = next(x for x in b.body.splitlines() if "spec.replicas" in x)
    assert row == (
        "| Deployment/shop/cart | `spec.replicas` | `3` → `5` | kubectl (Update, scale) | 2026-11-26T10:42:00Z "
        "| `apps/overlays/demo/kustomization.yaml:25` |"
    )
    block = next(x for x in b.body.splitlines() if "pricing-rules" in x)
    assert '`line 4: when: "cart.total >= 50"` → `line 4: when: "cart.total >= 40"`' in block
    assert report.coverage.summary() in b.body
    assert "Controller and reconciler changes left out as noise: 2" in b.body
    assert "kube-controller-manager" not in b.body  # the HPA is noise, not a change to merge
    assert b.commit_message.splitlines()[0] == b.title
    assert (
        "- Deployment/shop/cart spec.replicas: 3 -> 5 "
        "(by kubectl at 2026-11-26T10:42:00Z; apps/overlays/demo/kustomization.yaml:25)" in b.commit_message
    )


@needs_kustomize
def test_title_branch_and_text_are_deterministic() -> None:
    s = scenario()
    b1, _ = plan(s)
    s2 = scenario()
    s2.live.reverse()
    b2, _ = plan(s2)
    assert b1 == b2
    assert b1.title == "rebuild capture: 13 manual changes in shop, payments"
    assert b1.branch == f"rebuild/capture-{s.report().digest()}"


@needs_kustomize
def test_merging_the_backport_leaves_only_the_secret_to_do(tmp_path: Path) -> None:
    """Merge the PR, render git again, compare with the same cluster: every manual change is in git."""
    s = scenario()
    b, _ = plan(s, include_deletions=True, root_kustomization=ROOT_KUSTOMIZATION)
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    for path, text in {**b.edits, **b.new_files}.items():
        target = repo / path
        if path in b.deleted_files:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    rendered = render(repo, "clusters/demo")
    assert not rendered.problems, rendered.problems
    again = find_drift(rendered.objects, s.live, spec=s.spec, managed_namespaces=NAMESPACES)
    assert sorted((f.kind, str(f.ref)) for f in again.findings) == [
        ("changed", "Secret/payments/payments-db"),
        ("created", "Secret/shop/promo-api-key"),
    ]
    assert again.coverage.live - again.coverage.rebuildable == 2  # the Secret and the reconciler's leftover


# --------------------------------------------------------------------------- single findings


def _desired() -> dict[ObjectRef, DesiredObject]:
    return {d.ref: d for d in desired_objects()}


def finding(
    desired: dict[ObjectRef, DesiredObject], r: ObjectRef, path: FieldPath | None, git: Any, live: Any, kind: str = "changed"
) -> Finding:
    d = desired.get(r)
    source: Source | None = d.source_of(path) if d is not None and path is not None else (d.source if d else None)
    return Finding(
        kind,  # type: ignore[arg-type]
        r,
        d.api_version if d else "v1",
        path,
        git,
        live,
        "kubectl-edit",
        "Update",
        "",
        "2026-11-26T16:00:00Z",
        source,
        "human",
    )


def one(
    f: Finding, desired: dict[ObjectRef, DesiredObject] | None = None, files: dict[str, str] | None = None, **kw: Any
) -> tuple[Backport, dict[str, str]]:
    files = files if files is not None else repo_files()
    b = plan_backport(
        DriftReport(findings=[f]),
        desired if desired is not None else _desired(),
        files,
        new_objects_dir=NEW_DIR,
        include_deletions=kw.pop("include_deletions", False),
        **kw,
    )
    return b, files


@needs_kustomize
def test_image_entry_gets_new_name_and_digest() -> None:
    d = _desired()
    path = (*CART, "image")
    live = "registry.example.com/shop/cart:1.9.0@sha256:0123abcd"
    b, files = one(finding(d, ref(*DEPLOY, "shop", "cart"), path, "ghcr.io/example/cart:1.8.3", live), d)
    k = "apps/overlays/demo/kustomization.yaml"
    assert changes(files[k], b.edits[k]) == (
        ['    newTag: "1.8.3"\n'],
        ['    newTag: "1.9.0"\n', "    newName: registry.example.com/shop/cart\n", "    digest: sha256:0123abcd\n"],
    )
    # and back to a plain tag on an entry written with a plain (unquoted) tag
    fe = (*("spec", "template", "spec", "containers"), ("name", "nginx"), "image")
    b, files = one(finding(d, ref(*DEPLOY, "shop", "frontend"), fe, "nginx:1.27.4", "nginx:1.28"), d)
    assert changes(files[k], b.edits[k]) == (["    newTag: 1.27.4\n"], ['    newTag: "1.28"\n'])  # 1.28 would read as a number


@needs_kustomize
def test_a_field_in_a_port_selected_by_its_default_protocol() -> None:
    """git writes ports without protocol; the field path names protocol=TCP (the merge key)."""
    d = _desired()
    path = (*CART, "ports", ("containerPort,protocol", "9102,TCP"), "name")
    b, files = one(finding(d, ref(*DEPLOY, "shop", "cart"), path, "metrics", "prom"), d)
    f = "apps/base/cart/deployment.yaml"
    assert changes(files[f], b.edits[f]) == (["            - name: metrics\n"], ["            - name: prom\n"])


@needs_kustomize
def test_an_env_var_added_live_goes_into_the_overlay_patch_that_declares_the_list() -> None:
    d = _desired()
    path = (*CART, "env", ("name", "CHECKOUT_V2"))
    b, files = one(finding(d, ref(*DEPLOY, "shop", "cart"), path, None, {"name": "CHECKOUT_V2", "value": "on"}, kind="added"), d)
    f = "apps/overlays/demo/patches/cart-demo-mode.yaml"
    assert set(b.edits) == {f}
    assert changes(files[f], b.edits[f]) == ([], ["            - name: CHECKOUT_V2\n", '              value: "on"\n'])


@needs_kustomize
def test_an_annotation_added_live_goes_into_the_json6902_operation_that_adds_the_annotations() -> None:
    d = _desired()
    path = ("metadata", "annotations", "oncall")
    b, files = one(finding(d, ref(*DEPLOY, "payments", "payments-api"), path, None, "sre", kind="added"), d)
    f = "apps/overlays/demo/patches/payments-api-sandbox.json6902.yaml"
    assert changes(files[f], b.edits[f]) == ([], ["    oncall: sre\n"])


@needs_kustomize
def test_json6902_append_is_edited_only_when_the_appended_item_changed() -> None:
    d = _desired()
    args = d[ref(*DEPLOY, "payments", "payments-api")].body["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "--demo-mode"
    r = ref(*DEPLOY, "payments", "payments-api")
    b, files = one(finding(d, r, (*API, "args"), args, [*args[:-1], "--demo-mode=full"]), d)
    f = "apps/overlays/demo/patches/payments-api-sandbox.json6902.yaml"
    assert changes(files[f], b.edits[f]) == (["  value: --demo-mode\n"], ["  value: --demo-mode=full\n"])
    b, _ = one(finding(d, r, (*API, "args"), args, ["serve", "--tls-port=9443", *args[2:]]), d)
    assert not b.edits
    assert "add .../-" in b.listed[0]


@needs_kustomize
def test_an_inline_patch_in_kustomization_yaml_is_edited_inside_its_block_scalar() -> None:
    d = _desired()
    r = ref("demo.rebuild.dev", "FeatureFlag", "shop", "new-checkout")
    b, files = one(finding(d, r, ("spec", "rollout", "percentage"), 50, 75), d)
    kpath = "apps/overlays/demo/kustomization.yaml"
    assert set(b.edits) == {kpath} and not b.listed
    old, new = files[kpath].splitlines(True), b.edits[kpath].splitlines(True)
    changed = [(a, c) for a, c in zip(old, new, strict=True) if a != c]
    # One line changes: the operation's value, at the scalar's own indentation.
    assert len(changed) == 1 and changed[0][0].replace("50", "75") == changed[0][1]


@needs_kustomize
def test_a_field_gone_live_is_deleted_from_the_base_but_not_from_a_patch() -> None:
    d = _desired()
    r = ref(*DEPLOY, "shop", "cart")
    b, files = one(finding(d, r, (*CART, "readinessProbe", "initialDelaySeconds"), 2, None), d)
    f = "apps/base/cart/deployment.yaml"
    assert changes(files[f], b.edits[f]) == (["            initialDelaySeconds: 2\n"], [])
    b, _ = one(finding(d, r, (*CART, "resources", "limits", "memory"), "384Mi", None), d)
    assert not b.edits and "would bring back the base value" in b.listed[0]


@needs_kustomize
def test_a_field_set_by_a_transformer_is_listed() -> None:
    """A source naming a file that does not write the field (kustomize namespace:, commonLabels:)."""
    d = _desired()
    r = ref("", "ConfigMap", "shop", "redis-config")
    f = finding(d, r, ("data", "redis.conf"), "x", "y")
    f = Finding(**{**f.__dict__, "source": Source("apps/base/redis/services.yaml", 3)})
    b, _ = one(f, d)
    assert not b.edits and "neither declares" in b.listed[0]
    d[r].body["metadata"]["labels"]["team"] = "cache"
    f2 = finding(d, r, ("metadata", "labels", "team"), "cache", "db")
    b, _ = one(f2, d)
    assert not b.edits and "not written in the file its source names" in b.listed[0]


@needs_kustomize
def test_a_sops_encrypted_document_is_never_edited() -> None:
    d = _desired()
    files = repo_files()
    f = "apps/base/payments-api/secret.yaml"
    files[f] = (DATA / "secret-sops.yaml").read_text()
    r = ref("", "Secret", "payments", "payments-db")
    b, _ = one(finding(d, r, ("metadata", "labels", "tier"), None, "db", kind="added"), d, files)
    assert not b.edits
    assert "encrypted with SOPS" in b.listed[0]


@needs_kustomize
def test_an_edit_yamledit_refuses_is_listed_with_its_reason() -> None:
    d = _desired()
    files = repo_files()
    f = "apps/base/redis/configmap.yaml"
    files[f] = files[f].replace("  labels:\n    app: redis\n", "  labels: &labels\n    app: redis\n")
    r = ref("", "ConfigMap", "shop", "redis-config")
    b, _ = one(finding(d, r, ("metadata", "labels", "app"), "redis", "cache"), d, files)
    assert not b.edits
    assert "anchored node" in b.listed[0]


def test_a_finding_without_desired_object_or_file_is_listed() -> None:
    r = ObjectRef("", "ConfigMap", "shop", "ghost")
    f = Finding("changed", r, "v1", ("data", "a"), "1", "2", "kubectl-edit", "Update", "", None, Source("gone.yaml", 3), "human")
    b = plan_backport(DriftReport(findings=[f]), {}, {}, new_objects_dir=NEW_DIR, include_deletions=False)
    assert b.listed == ["ConfigMap/shop/ghost data.a: not edited: the object is not among the desired objects"]
    assert b.empty and b.title == "rebuild capture: 1 manual change in shop"


def test_no_findings_no_changes() -> None:
    b = plan_backport(DriftReport(), {}, {}, new_objects_dir=NEW_DIR, include_deletions=True)
    assert b.empty and b.listed == [] and b.title == "rebuild capture: no manual changes"
    assert "DR coverage: 0/0 live objects (100.0%) can be rebuilt from git" in b.body


# --------------------------------------------------------------------------- clean manifests


def test_clean_manifest_of_a_kubectl_created_deployment() -> None:
    live = json.loads((DATA / "deployment_kubectl_create.json").read_text())
    assert clean_manifest(live) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "promo-worker", "namespace": "shop", "labels": {"app": "promo-worker"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "promo-worker"}},
            "template": {
                "metadata": {"labels": {"app": "promo-worker"}},
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": "ghcr.io/example/promo-worker:0.3.1",
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "volumeMounts": [{"name": "conf", "mountPath": "/conf"}],
                        },
                        {"name": "sidecar", "image": "busybox", "imagePullPolicy": "IfNotPresent"},
                    ],
                    "volumes": [{"name": "conf", "configMap": {"name": "promo-banner"}}],
                },
            },
        },
    }
    assert live["metadata"]["managedFields"], "clean_manifest must not change its input"


def test_clean_manifest_keeps_non_default_values_and_headless_services() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "h", "namespace": "shop", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "clusterIP": "None",
            "clusterIPs": ["None"],
            "sessionAffinity": "ClientIP",
            "ipFamilyPolicy": "PreferDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}],
        },
        "status": {"loadBalancer": {}},
    }
    assert clean_manifest(copy.deepcopy(svc)) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "h", "namespace": "shop"},
        "spec": {
            "clusterIP": "None",
            "clusterIPs": ["None"],
            "sessionAffinity": "ClientIP",
            "ipFamilyPolicy": "PreferDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}],
        },
    }


def test_created_objects_without_namespace_folder_and_odd_names() -> None:
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a:b", "namespace": "shop"}, "data": {"k": "v"}}
    f = Finding("created", ObjectRef.of(live), "v1", None, None, live, "kubectl-create", "Update", "", None, None, "human")
    b = plan_backport(DriftReport(findings=[f]), {}, {}, new_objects_dir="captured/", include_deletions=False)
    assert set(b.new_files) == {"captured/shop/configmap-a_b.yaml", "captured/kustomization.yaml"}


def test_capture_spec_default_dir_is_a_plain_folder() -> None:
    assert CaptureSpec().new_objects_dir == "captured"


def test_secret_change_of_a_created_secret_body_is_not_written() -> None:
    live = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "shop"},
        "data": {"k": "<redacted sha256:00>"},
    }
    f = Finding("created", ObjectRef.of(live), "v1", None, None, live, "kubectl-create", "Update", "", None, None, "human")
    b = plan_backport(DriftReport(findings=[f]), {}, {}, new_objects_dir=NEW_DIR, include_deletions=False)
    assert b.new_files == {} and b.listed == [
        "Secret/shop/s: created live by kubectl-create (Update) with key k; not written: add it to git encrypted with SOPS"
    ]
