"""Issue 10: every kustomize feature of the corpus repos (tests/data/repos, written the way public
GitOps repos are written) is traced to the file and line that sets each field, Flux's generated
kustomization and bootstrap layout are read as Flux reads them, and nothing keeps the source
``(kustomize output)``. Runs the real kustomize (kubectl's); no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.core.model import DesiredObject, Source
from rebuild.core.yamlload import LoadedDoc, load_all
from rebuild.desired import fluxtree
from rebuild.desired.render import FluxLayer, Rendered, render
from rebuild.desired.varsub import SubstitutionError, substitute
from rebuild.reconcilers import flux
from tests.conftest import REPO
from tests.unit.test_drift import needs_kustomize

CORPUS = REPO / "tests" / "data" / "repos"
PATHS = {
    "components": ".",
    "guestbook": ".",
    "shop-prefix": ".",
    "generators": "overlays/prod",
    "inline-patches": ".",
    "legacy": "staging",
    "plain": ".",
    "deep": "cluster/eu",
}


def _render(name: str) -> Rendered:
    r = render(CORPUS / name / "repo", PATHS[name])
    assert not r.problems, [str(p) for p in r.problems]
    return r


def _obj(r: Rendered, kind: str, name: str) -> DesiredObject:
    return next(o for o in r.objects if o.ref.kind == kind and o.ref.name == name)


def _src(o: DesiredObject, *path: object) -> Source:
    return o.source_of(tuple(path))  # type: ignore[arg-type]


@needs_kustomize
@pytest.mark.parametrize("name", sorted(PATHS))
def test_no_object_or_field_is_sourced_from_kustomize_output(name: str) -> None:
    r = _render(name)
    assert r.objects
    for o in r.objects:
        assert "(kustomize output)" not in str(o.source)
        assert all("(kustomize output)" not in s.file for s in o.field_sources.values())


@needs_kustomize
def test_component_images_and_nested_component_patches() -> None:
    r = _render("components")
    d = _obj(r, "Deployment", "podinfo")
    assert d.ref.namespace == "podinfo" and d.declared is not None and d.declared.file == "base/deployment.yaml"
    img = _src(d, "spec", "template", "spec", "containers", ("name", "podinfod"), "image")
    assert (img.file, img.line, img.via) == ("components/version/kustomization.yaml", 6, "image")
    ann = _src(d, "spec", "template", "metadata", "annotations", "prometheus.io/scrape")
    assert (ann.file, ann.line, ann.via) == ("components/monitoring/kustomization.yaml", 16, "inline-patch")
    # A field git does not declare goes where its nearest declared parent is. A component's patch
    # owns the values it sets, not the `spec:` around them: the base manifest declares `spec`.
    assert _src(d, "spec", "replicas") == Source("base/deployment.yaml", 7)
    backend = _obj(r, "Deployment", "backend")
    assert _src(backend, "spec", "replicas") == Source("base/backend.yaml", 5)
    assert _src(d, "metadata", "namespace").via == "transformer"


@needs_kustomize
def test_prefix_suffix_labels_and_annotations_map_to_the_transformer_lines() -> None:
    r = _render("shop-prefix")
    d = _obj(r, "Deployment", "acme-cart-v1")
    assert d.declared is not None and d.declared.name == "cart"
    assert _src(d, "metadata", "name") == Source("kustomization.yaml", 4, "transformer")
    assert _src(d, "metadata", "labels", "app.kubernetes.io/part-of") == Source("kustomization.yaml", 7, "transformer")
    assert _src(d, "metadata", "labels", "env") == Source("kustomization.yaml", 12, "transformer")
    assert _src(d, "spec", "template", "metadata", "annotations", "team") == Source("kustomization.yaml", 9, "transformer")
    # The label set without selectors is not in the selector.
    assert "env" not in d.body["spec"]["selector"]["matchLabels"]
    assert _src(d, "spec", "replicas") == Source("base/cart.yaml", 8)


@needs_kustomize
def test_generators_literals_env_lines_files_and_merge() -> None:
    r = _render("generators")
    cm = next(o for o in r.objects if o.ref.kind == "ConfigMap" and o.ref.name.startswith("api-config-"))
    assert cm.declared is None and cm.source.file == "base/kustomization.yaml"
    assert _src(cm, "data", "LOG_LEVEL") == Source(
        "base/kustomization.yaml", 6, "literal", (0, ("configMapGenerator", 0, "literals", 0))
    )
    assert _src(cm, "data", "FEATURE_SEARCH").file == "overlays/prod/kustomization.yaml"  # behavior: merge wins
    assert _src(cm, "data", "DB_POOL") == Source("base/api.env", 3, "env", ("DB_POOL",))
    nginx = next(o for o in r.objects if o.ref.name.startswith("api-nginx-"))
    assert _src(nginx, "data", "nginx.conf") == Source("base/nginx.conf", 1, "file")
    # The Deployment's references follow the hashed names.
    dep = _obj(r, "Deployment", "api")
    assert dep.body["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == nginx.ref.name


@needs_kustomize
def test_inline_json6902_and_smp_patches_and_a_json6902_file() -> None:
    r = _render("inline-patches")
    w = _obj(r, "Deployment", "worker")
    rep = _src(w, "spec", "replicas")
    assert (rep.file, rep.line, rep.via, rep.locator) == (
        "kustomization.yaml",
        12,
        "inline-patch",
        (0, ("patches", 0, "patch"), 0),
    )
    cpu = _src(w, "spec", "template", "spec", "containers", ("name", "worker"), "resources", "requests", "cpu")
    assert (cpu.line, cpu.locator) == (30, (0, ("patches", 1, "patch"), 0))
    q = _obj(r, "Deployment", "queue")
    assert _src(q, "spec", "template", "spec", "containers", ("name", "rabbitmq"), "image") == Source("queue-json6902.yaml", 1)


@needs_kustomize
def test_deprecated_patch_forms_and_bases() -> None:
    r = _render("legacy")
    w = _obj(r, "Deployment", "web")
    assert _src(w, "spec", "replicas").via == "inline-patch"
    env = _src(w, "spec", "template", "spec", "containers", ("name", "web"), "env", ("name", "MODE"), "value")
    assert env == Source("staging/web-env.yaml", 12)
    assert _src(w, "spec", "template", "spec", "containers", ("name", "web"), "image") == Source("staging/web-image.yaml", 1)
    ttl = _src(w, "spec", "template", "spec", "containers", ("name", "web"), "env", ("name", "CACHE_TTL"), "value")
    assert ttl == Source("base/web.yaml", 23)


@needs_kustomize
def test_plain_folder_is_read_like_flux_generates_it() -> None:
    r = _render("plain")
    refs = {str(o.ref) for o in r.objects}
    # List items, multi-document files with comment-only documents, a kustomize sub-folder;
    # no namespace anywhere (they land in `default`); the .json file is not applied by Flux.
    assert refs == {"ConfigMap/blog-theme", "ServiceAccount/blog", "Service/blog", "Deployment/blog", "Deployment/adminer"}
    assert [str(w) for w in r.warnings] == [
        "apps/blog/extra.json: not applied: Flux's generated kustomization includes only .yaml/.yml files; "
        "rename it or list it in a kustomization.yaml"
    ]
    sa = _obj(r, "ServiceAccount", "blog")
    assert sa.declared is not None and sa.declared.prefix == ("items", 1) and sa.source == Source("apps/blog/config.yml", 10)
    assert _obj(r, "Deployment", "blog").source == Source("apps/blog/blog.yaml", 4)


@needs_kustomize
def test_a_deep_base_chain_keeps_every_level() -> None:
    r = _render("deep")
    d = _obj(r, "Deployment", "search-eu")
    assert d.ref.namespace == "deep"
    assert _src(d, "spec", "replicas") == Source("env/prod/kustomization.yaml", 6, "replicas", (0, ("replicas", 0)))
    assert _src(d, "spec", "template", "spec", "containers", ("name", "search"), "image").file == "cluster/eu/kustomization.yaml"
    assert _src(d, "spec", "template", "metadata", "labels", "team") == Source("team/kustomization.yaml", 4, "transformer")


@needs_kustomize
def test_a_patch_targeting_nothing_is_a_problem_with_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [d.yaml]\npatches:\n- path: p.yaml\n")
    (tmp_path / "d.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: missing\ndata: {x: y}\n")
    r = render(tmp_path, ".")
    assert [str(p) for p in r.problems] == [
        "p.yaml:1: kustomize build failed: patch targets ConfigMap/missing, which is not declared"
    ]


# --------------------------------------------------------------------------- flux bootstrap layout


def _fleet() -> fluxtree.Tree:
    root = CORPUS / "fleet" / "repo"
    r = render(root, "clusters/production")
    assert not r.problems, [str(p) for p in r.problems]

    def render_path(path: str, layer: FluxLayer) -> Rendered:
        return render(root, path, flux=layer)

    def load_doc(file: str, doc: int) -> LoadedDoc | None:
        return load_all((root / file).read_bytes())[doc]

    return fluxtree.expand("prod", ".", "clusters/production", r.objects, render_path, load_doc)


@needs_kustomize
def test_flux_bootstrap_layout_is_followed_in_depends_on_order() -> None:
    tree = _fleet()
    assert not tree.problems, [str(p) for p in tree.problems]
    assert (tree.flux_namespace, tree.flux_name, tree.flux_repo) == ("flux-system", "flux-system", "flux-system")
    assert [n.key for n in tree.nodes] == ["", "flux-system/infrastructure", "flux-system/apps"]
    replaced = sorted(str(o.ref) for o, _ in tree.replaced)
    assert "GitRepository/flux-system/flux-system" in replaced and "Deployment/flux-system/source-controller" in replaced
    refs = {str(o.ref): o for o in tree.objects}
    assert "Deployment/flux-system/source-controller" not in refs and "Namespace/flux-system" not in refs
    pod = refs["Deployment/web/podinfo"]
    assert pod.applied_by == "flux-system/apps"
    assert pod.declared is not None and pod.declared.file == "apps/base/podinfo/deployment.yaml"
    # Flux's own fields: targetNamespace and images of the apps Kustomization, the overlay patch.
    image = pod.source_of(("spec", "template", "spec", "containers", ("name", "podinfod"), "image"))
    assert (image.file, image.via) == ("clusters/production/apps.yaml", "image")
    assert pod.body["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/podinfo:6.7.0"
    assert pod.source_of(("spec", "replicas")) == Source("apps/production/podinfo-patch.yaml", 6)
    # postBuild: substitute and substituteFrom (a ConfigMap in git).
    env = pod.body["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
    assert env == "hello from production in eu-west-1"
    msg = pod.source_of(
        ("spec", "template", "spec", "containers", ("name", "podinfod"), "env", ("name", "PODINFO_UI_MESSAGE"), "value")
    )
    assert msg.via == "substitute"
    # Objects appear in dependsOn order: infrastructure's before the apps'.
    order = [o.applied_by for o in tree.objects]
    assert order.index("flux-system/infrastructure") < order.index("flux-system/apps")


def test_the_flux_objects_rebuild_makes_carry_the_namespace_rules() -> None:
    src = flux.FluxSource(
        name="flux-system",
        url="http://127.0.0.1:1/x.git",
        branch="main",
        path="clusters/production",
        repo_name="flux-system",
        default_namespace_kinds=("Deployment", "Service"),
        drop=((("labelSelector", "app.kubernetes.io/part-of=flux"),),),
    )
    k = flux.kustomization(src)
    assert k["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "flux-system"}
    patches = k["spec"]["patches"]
    assert patches[0]["target"] == {"kind": "^(Deployment|Service)$", "namespace": "default"}
    assert patches[1]["target"] == {"labelSelector": "app.kubernetes.io/part-of=flux"}
    assert "targetNamespace" not in k["spec"]
    shop = flux.kustomization(
        flux.FluxSource("apps", "u", "main", ".", target_namespace="shop", default_namespace_kinds=("Service",))
    )
    assert shop["spec"]["targetNamespace"] == "shop" and "patches" not in shop["spec"]


def test_failures_retrying_cannot_fix_are_told_apart() -> None:
    def classify(reason: str, message: str) -> str:
        return flux.classify_failure(flux.Failure(reason, message), defined_kinds={"Widget"})

    assert classify("BuildFailed", "kustomize build failed: accumulating resources") == "permanent"
    assert classify("ReconciliationFailed", "ServiceAccount/x namespace not specified") == "permanent"
    assert (
        classify("ReconciliationFailed", "Deployment/a/b dry-run failed: .spec.foo: field not declared in schema") == "permanent"
    )
    assert classify("DependencyNotReady", "dependency 'flux-system/infra' is not ready") == "transient"
    assert classify("ReconciliationFailed", 'no matches for kind "Widget" in version "x/v1"') == "transient"
    assert classify("ReconciliationFailed", 'no matches for kind "Gadget" in version "x/v1"') == "permanent"
    assert classify("ReconciliationFailed", "something new") == "unknown"
    stale = {
        "kind": "Kustomization",
        "status": {
            "lastAttemptedRevision": "main@sha1:" + "a" * 40,
            "conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed", "message": "x"}],
        },
    }
    assert flux.failure(stale, "b" * 40) is None  # an older revision's failure says nothing yet
    assert flux.failure(stale, "a" * 40) == flux.Failure("BuildFailed", "x")
    # A failure is final only when a requested retry fails the same way (temporary paths aside).
    assert flux.same_failure("build failed: /tmp/kustomization-123/x: bad", "build failed: /tmp/kustomization-987/x: bad")
    assert not flux.same_failure("evalsymlink failure on '/tmp/kustomization-1'", "")


def test_postbuild_substitution_forms() -> None:
    v = {"a": "x", "empty": "", "n": "3"}
    assert substitute("${a} ${missing} ${missing:=d} ${empty:-e} ${empty-f} $${a} $a", v) == "x  d e  ${a} $a"
    assert substitute("${a:0:1}${n/3/4}", {"a": "xyz", "n": "3"}) == "x4"
    with pytest.raises(SubstitutionError):
        substitute("${a}", {"bad-name": "x"})


@needs_kustomize
def test_a_remote_base_is_rendered_and_points_at_the_line_that_lists_it(tmp_path: Path) -> None:
    """A base fetched over git (kustomize's remote URL form), served by rebuild's own git server
    on 127.0.0.1: its objects are desired state; their fields name the `resources:` line."""
    from rebuild.adapters.gitserver import GitServer, publish_dir
    from rebuild.capture.backport import plan_backport
    from rebuild.capture.drift import DriftReport, Finding

    base = tmp_path / "base-src" / "app"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (base / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {a: '1'}\n")
    server = GitServer(tmp_path / "srv")
    (tmp_path / "srv").mkdir()
    publish_dir(tmp_path / "base-src", server.root / "base.git", "base")
    server.start()
    served = server.url
    try:
        repo = tmp_path / "repo"
        repo.mkdir()
        url = f"{served}/base.git//app?ref=main"
        (repo / "kustomization.yaml").write_text(f"namespace: team\nresources:\n  - {url}\n")
        r = render(repo, ".")
    finally:
        server.stop()
    assert not r.problems, [str(p) for p in r.problems]
    (cm,) = r.objects
    assert str(cm.ref) == "ConfigMap/team/shared"
    src = cm.source_of(("data", "a"))
    assert (src.file, src.line, src.via) == ("kustomization.yaml", 3, "remote")
    f = Finding("changed", cm.ref, "v1", ("data", "a"), "1", "2", "kubectl-patch", "Update", "", None, src, "human")
    files = {"kustomization.yaml": (repo / "kustomization.yaml").read_text()}
    b = plan_backport(DriftReport(findings=[f]), {cm.ref: cm}, files, new_objects_dir="captured", include_deletions=False)
    assert not b.edits
    assert b.listed == [
        f"ConfigMap/team/shared data.a: not edited: comes from the remote base {served}/base.git//app/cm.yaml "
        "(listed at kustomization.yaml:3), which this repository does not hold"
    ]


@needs_kustomize
def test_a_kustomization_suspended_in_git_is_listed_not_followed(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "fleet"
    shutil.copytree(CORPUS / "fleet" / "repo", root)
    apps = root / "clusters" / "production" / "apps.yaml"
    apps.write_text(apps.read_text().replace("  interval: 10m\n", "  interval: 10m\n  suspend: true\n", 1))
    r = render(root, "clusters/production")

    def render_path(path: str, layer: FluxLayer) -> Rendered:
        return render(root, path, flux=layer)

    def load_doc(file: str, doc: int) -> LoadedDoc | None:
        return load_all((root / file).read_bytes())[doc]

    tree = fluxtree.expand("prod", ".", "clusters/production", r.objects, render_path, load_doc)
    node = next(n for n in tree.nodes if n.key == "flux-system/apps")
    assert node.suspended and not node.followed and "suspended in git" in node.note
    assert not any(o.applied_by == "flux-system/apps" for o in tree.objects)
