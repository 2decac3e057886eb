from __future__ import annotations

import os
from pathlib import Path

from rebuild.core.model import ObjectRef, render_path
from rebuild.desired.render import builtin_kinds, check_kinds, render, selector_path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gitops-repo"


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_plain_directory_multi_document_with_lines(tmp_path: Path) -> None:
    write(
        tmp_path,
        "apps/a.yaml",
        "# header\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: x\n"
        "data:\n  k: v\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n",
    )
    write(tmp_path, "apps/notes.txt", "not yaml")
    r = render(tmp_path, "apps")
    assert not r.problems
    refs = {str(o.ref): o for o in r.objects}
    assert set(refs) == {"ConfigMap/x/a", "Namespace/x"}
    cm = refs["ConfigMap/x/a"]
    assert str(cm.source) == "apps/a.yaml:2"
    assert str(cm.source_of(("data", "k"))) == "apps/a.yaml:8"


def test_every_problem_reported_together(tmp_path: Path) -> None:
    write(tmp_path, "d/bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [\n")
    write(tmp_path, "d/noname.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    write(tmp_path, "d/nokind.yaml", "apiVersion: v1\nmetadata:\n  name: z\n")
    write(tmp_path, "d/dup1.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same, namespace: n}\n")
    write(tmp_path, "d/dup2.yaml", "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: same, namespace: n}\n")
    write(
        tmp_path, "d/dupkey.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k, namespace: n}\ndata:\n  a: 1\n  a: 2\n"
    )
    write(tmp_path, "d/cr.yaml", "apiVersion: demo.dev/v1\nkind: Widget\nmetadata: {name: w, namespace: n}\n")
    r = render(tmp_path, "d")
    msgs = [str(p) for p in r.problems]
    assert any(m.startswith("d/bad.yaml:5: invalid YAML") or m.startswith("d/bad.yaml:4: invalid YAML") for m in msgs), msgs
    assert "d/noname.yaml:1: ConfigMap is missing metadata.name" in msgs
    assert "d/nokind.yaml:1: object is missing kind" in msgs
    assert any(m.startswith("d/dup2.yaml:2: ConfigMap/n/same is declared twice (first at d/dup1.yaml:1)") for m in msgs), msgs
    assert any(m.startswith("d/dupkey.yaml:6: duplicate key 'a'") for m in msgs), msgs
    kinds = [str(p) for p in check_kinds(r.objects, builtin_kinds())]
    assert kinds == [
        "d/cr.yaml:1: Widget/n/w: kind Widget (demo.dev/v1) is not defined by Kubernetes, by a "
        "CustomResourceDefinition in git or by the cluster"
    ]


def test_paths_and_symlinks_outside_the_repo_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, "outside/secret.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s, namespace: n}\n")
    write(repo, "k/kustomization.yaml", "resources:\n- ../../outside/secret.yaml\n")
    r = render(repo, "k")
    assert str(r.problems[0]).startswith("k/kustomization.yaml:2: ")
    assert "outside the repository" in str(r.problems[0])
    write(repo, "plain/ok.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok, namespace: n}\n")
    os.symlink(tmp_path / "outside" / "secret.yaml", repo / "plain" / "link.yaml")
    r = render(repo, "plain")
    assert any("symlink" in str(p) and "outside the repository" in str(p) for p in r.problems)
    assert [o.ref.name for o in r.objects] == ["ok"]


def test_example_repo_renders_with_overlay_sources() -> None:
    r = render(EXAMPLE, "clusters/demo")
    assert not r.problems
    assert len(r.objects) >= 40
    by = r.by_ref()
    cart = by[ObjectRef("apps", "Deployment", "shop", "cart")]
    assert cart.source.file == "apps/base/cart/deployment.yaml"
    # replicas set by the overlay's `replicas:` entry, image by its `images:` entry
    assert cart.source_of(("spec", "replicas")).file == "apps/overlays/demo/kustomization.yaml"
    img = ("spec", "template", "spec", "containers", ("name", "cart"), "image")
    assert cart.source_of(img).file == "apps/overlays/demo/kustomization.yaml"
    # a strategic-merge patch field points at the patch file
    mem = ("spec", "template", "spec", "containers", ("name", "cart"), "resources", "limits", "memory")
    assert cart.source_of(mem).file == "apps/overlays/demo/patches/cart-demo-mode.yaml"
    # a field nobody patched points at the base manifest
    port = ("spec", "template", "spec", "containers", ("name", "cart"), "ports")
    assert cart.source_of(port).file == "apps/base/cart/deployment.yaml"


def test_selector_path_uses_merge_keys() -> None:
    data = {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}]}}
    p = selector_path(("spec", "containers", 0, "env", 0, "value"), data)
    assert render_path(p) == "spec.containers[name=app].env[name=A].value"
    p = selector_path(("spec", "containers", 0, "ports", 0, "containerPort"), data)
    assert render_path(p) == "spec.containers[name=app].ports[containerPort,protocol=80,TCP].containerPort"
