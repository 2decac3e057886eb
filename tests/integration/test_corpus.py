"""Issue 10 end to end on the corpus (tests/data/repos): repos written the way public GitOps repos
are written, none like our example. One local cluster holds all of them (each repo is its own
source, served by rebuild's git server, applied by the real Flux controllers); each repo's
drift.sh runs real kubectl commands; ``capture --dry-run`` of each repo must report exactly its
expected findings (object, field, manager, operation, subresource, class) and a diff equal, byte
for byte, to its golden diff. The diffs are then applied (the PR merged) and everything rebuilt
into a fresh cluster, where every edited value holds.

Golden files: ``expected-findings.json`` and ``expected.diff`` beside each repo. A missing golden
file fails the test; ``REBUILD_UPDATE_GOLDEN=1`` writes them from the run (review the result).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import gitserver
from rebuild.clusters.local import LocalCluster
from tests.conftest import REPO

pytestmark = pytest.mark.integration

CORPUS = REPO / "tests" / "data" / "repos"
# repo -> (path inside it, namespaces its objects live in)
REPOS: dict[str, tuple[str, list[str]]] = {
    "components": (".", ["podinfo"]),
    "guestbook": (".", ["guestbook"]),
    "shop-prefix": (".", ["shop-prefix"]),
    "generators": ("overlays/prod", ["generators"]),
    "inline-patches": (".", ["inline"]),
    "legacy": ("staging", ["legacy"]),
    "plain": (".", ["default"]),
    "deep": ("cluster/eu", ["deep"]),
    # the flux bootstrap layout: its nested Kustomizations apply apps into `web`
    "fleet": ("clusters/production", ["web", "flux-system"]),
}
UPDATE = os.environ.get("REBUILD_UPDATE_GOLDEN") == "1"
_DEFAULTS = {"protocol": "TCP"}


def rebuild(args: list[str], state: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    env.pop("CI", None)
    return subprocess.run([sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def config(work: Path, cluster: str, capture: str | None = None) -> Path:
    cfg: dict[str, Any] = {
        "sources": [{"name": n, "url": f"repos/{n}", "branch": "main", "path": p} for n, (p, _) in REPOS.items()],
        "cluster": {"provider": "local", "name": cluster, "nodes": 1},
        "reconciler": {"kind": "flux", "interval": "1m"},
        "verify": {"timeout": "4m"},
    }
    name = f"rebuild-{cluster}.yaml"
    if capture is not None:
        cfg["capture"] = {"source": capture, "namespaces": REPOS[capture][1], "new_objects_dir": "captured"}
        name = f"rebuild-{cluster}-{capture}.yaml"
    path = work / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def corpus(tmp_path: Path, toolchain: Any) -> Iterator[tuple[Path, Path]]:
    work = tmp_path / "work"
    for name in REPOS:
        dst = work / "repos" / name
        shutil.copytree(CORPUS / name / "repo", dst)
        git("init", "-q", "-b", "main", cwd=dst)
        git("add", "-A", cwd=dst)
        git("-c", "user.name=corpus", "-c", "user.email=corpus@localhost", "commit", "-qm", "corpus", cwd=dst)
    state = tmp_path / "state"
    try:
        yield work, state
    finally:
        for cluster in ("corpus", "corpus-fresh"):
            LocalCluster(cluster, root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")


def _finding_key(f: dict[str, Any]) -> dict[str, Any]:
    obj = re.sub(r"-[bcdfghkmnt-z2456789]{10}$", "-<hash>", f["object"])  # a generated name's hash
    return {
        "kind": f["kind"],
        "object": obj,
        "path": f["path"],
        "manager": f["manager"],
        "operation": f["operation"],
        "subresource": f["subresource"],
        "class": f["class"],
        "source": re.sub(r"^[\w-]+:", "", f["source"] or "") or None,
    }


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _stable(text: str) -> str:
    """A diff without the moments it was made (a captured file's header says when it was created)."""
    return _TIME.sub("<time>", text)


def _golden(path: Path, actual: str) -> str:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run once with REBUILD_UPDATE_GOLDEN=1 and review it"
    return path.read_text()


def _value(obj: dict[str, Any], segments: list[Any]) -> Any:
    node: Any = obj
    for seg in segments:
        if isinstance(seg, dict):
            pairs = list(zip(seg["key"].split(","), seg["value"].split(","), strict=True))
            node = next((i for i in node or [] if all(str(i.get(k, _DEFAULTS.get(k, ""))) == v for k, v in pairs)), None)
        elif isinstance(seg, int):
            node = node[seg] if isinstance(node, list) and seg < len(node) else None
        else:
            node = node.get(seg) if isinstance(node, dict) else None
    return node


def _live(kubeconfig: Path, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    args = ["kubectl", "get", kind, "-o", "json"] + (["-n", namespace] if namespace else [])
    items = json.loads(subprocess.run(args, capture_output=True, text=True, env=env, check=True).stdout)["items"]
    base = re.sub(r"-[bcdfghkmnt-z2456789]{10}$", "", name)
    for o in items:
        n = o["metadata"]["name"]
        if n == name or (base != name and re.sub(r"-[bcdfghkmnt-z2456789]{10}$", "", n) == base):
            return dict(o)
    return None


def test_corpus_up_drift_capture_merge_rebuild(corpus: tuple[Path, Path]) -> None:
    work, state = corpus
    r = rebuild(["--config", str(config(work, "corpus")), "-o", "json", "up"], state)
    assert r.returncode == 0, r.stderr[-4000:]
    up = json.loads(r.stdout)
    assert up["converged"], up["verify"]
    kubeconfig = state / "clusters" / "corpus" / "kubeconfig"

    results: dict[str, dict[str, Any]] = {}
    for name in REPOS:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        d = subprocess.run(["bash", str(CORPUS / name / "drift.sh")], capture_output=True, text=True, env=env)
        assert d.returncode == 0, f"{name}/drift.sh: {d.stderr}"
    for name in REPOS:
        c = rebuild(["--config", str(config(work, "corpus", name)), "-o", "json", "capture", "--dry-run"], state)
        assert c.returncode == 1, f"{name}: {c.stderr[-3000:]}"
        results[name] = json.loads(c.stdout)

    failures: list[str] = []
    for name, res in results.items():
        findings = [_finding_key(f) for f in res["report"]["findings"]]
        assert findings, name
        for f in findings:
            if f["source"] and "(kustomize output)" in f["source"]:
                failures.append(f"{name}: {f['object']} {f['path']} has the source (kustomize output)")
        got = json.dumps(sorted(findings, key=json.dumps), indent=1) + "\n"
        want = _golden(CORPUS / name / "expected-findings.json", got)
        if got != want:
            failures.append(f"{name}: findings differ from expected-findings.json:\n{got}")
        diff = _golden(CORPUS / name / "expected.diff", _stable(res["diff"]))
        if _stable(res["diff"]) != diff:
            failures.append(f"{name}: diff differs from expected.diff:\n{res['diff']}")
    assert not failures, "\n\n".join(failures)

    # Merge: apply each diff in its repo (git apply checks every context line), rebuild fresh.
    for name, res in results.items():
        repo = work / "repos" / name
        patch = work / f"{name}.diff"
        patch.write_text(res["diff"])
        git("apply", "--whitespace=nowarn", str(patch), cwd=repo)
        git("add", "-A", cwd=repo)
        git("-c", "user.name=corpus", "-c", "user.email=corpus@localhost", "commit", "-qm", "capture", cwd=repo)
    r = rebuild(["--config", str(config(work, "corpus-fresh")), "-o", "json", "up"], state)
    assert r.returncode == 0, r.stderr[-4000:]
    assert json.loads(r.stdout)["converged"]
    fresh = state / "clusters" / "corpus-fresh" / "kubeconfig"
    held = 0
    for name, res in results.items():
        not_written = {m.groups() for row in res["listed"] if (m := re.match(r"^(\S+) (\S+): not edited: ", row))}
        for f in res["report"]["findings"]:
            if f["kind"] not in ("changed", "added") or (f["object"], f["path"]) in not_written:
                continue
            live = _live(fresh, f["object_kind"], f["namespace"], f["name"])
            assert live is not None, f"{name}: {f['object']} is missing after the rebuild"
            assert _value(live, f["path_segments"]) == f["live"], f"{name}: {f['object']} {f['path']} did not hold"
            held += 1
        for f in res["report"]["findings"]:
            if f["kind"] == "created" and f["object_kind"] != "Secret":
                assert _live(fresh, f["object_kind"], f["namespace"], f["name"]) is not None, f"{name}: {f['object']} not rebuilt"
                held += 1
    assert held >= 20


# --------------------------------------------------------------------------- the flux bootstrap layout


def _one_source(tmp: Path, name: str, path: str, cluster: str, **source: Any) -> Path:
    repo = tmp / "repos" / name
    if not repo.exists():
        shutil.copytree(CORPUS / name / "repo", repo)
        git("init", "-q", "-b", "main", cwd=repo)
        git("add", "-A", cwd=repo)
        git("-c", "user.name=corpus", "-c", "user.email=corpus@localhost", "commit", "-qm", "corpus", cwd=repo)
    cfg = {
        "sources": [{"name": name, "url": f"repos/{name}", "branch": "main", "path": path, **source}],
        "cluster": {"provider": "local", "name": cluster, "nodes": 1},
        "reconciler": {"kind": "flux", "interval": "1m"},
        "verify": {"timeout": "3m"},
        "capture": {"new_objects_dir": "captured"},
    }
    out = tmp / f"{cluster}.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


@pytest.fixture
def scratch(tmp_path: Path, toolchain: Any) -> Iterator[tuple[Path, Path]]:
    state = tmp_path / "state"
    try:
        yield tmp_path, state
    finally:
        for cluster in ("fleet", "shop", "broken"):
            LocalCluster(cluster, root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")


def test_flux_bootstrap_layout_converges_and_capture_edits_the_app(scratch: tuple[Path, Path]) -> None:
    tmp, state = scratch
    cfg = _one_source(tmp, "fleet", "clusters/production", "fleet")
    plan = rebuild(["--config", str(cfg), "plan"], state)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "Kustomization flux-system/infrastructure (clusters/production/infrastructure.yaml:1)" in plan.stdout
    assert "Kustomization flux-system/apps (clusters/production/apps.yaml:1)" in plan.stdout
    assert "after flux-system/infrastructure" in plan.stdout
    assert "replaced by rebuild: GitRepository/flux-system/flux-system" in plan.stdout

    r = rebuild(["--config", str(cfg), "-o", "json", "up"], state)
    assert r.returncode == 0, r.stderr[-4000:]
    up = json.loads(r.stdout)
    assert up["converged"]
    verified = {o["ref"] for o in up["verify"]["objects"] if o["ok"]}
    # Every object of every nested Kustomization, in the namespaces Flux put them in.
    for ref in ("Namespace/web", "ResourceQuota/web/web-quota", "Deployment/web/podinfo", "Service/web/podinfo"):
        assert ref in verified, (ref, sorted(verified))
    kubeconfig = state / "clusters" / "fleet" / "kubeconfig"
    live = _live(kubeconfig, "deployment", "web", "podinfo")
    assert live is not None
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/example/podinfo:6.7.0"
    assert container["env"][0]["value"] == "hello from production in eu-west-1"

    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    for cmd in (
        ["kubectl", "-n", "flux-system", "patch", "kustomization", "apps", "--type", "merge", "-p", '{"spec":{"suspend":true}}'],
        ["kubectl", "-n", "web", "scale", "deployment/podinfo", "--replicas=4"],
    ):
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    c = rebuild(["--config", str(cfg), "-o", "json", "capture", "--dry-run"], state)
    assert c.returncode == 1, c.stderr[-3000:]
    res = json.loads(c.stdout)
    findings = [(f["object"], f["path"], f["manager"], f["subresource"], f["source"]) for f in res["report"]["findings"]]
    assert ("Deployment/web/podinfo", "spec.replicas", "kubectl", "scale", "apps/production/podinfo-patch.yaml:6") in findings
    assert res["files"] == ["apps/production/podinfo-patch.yaml"]
    assert "-  replicas: 2\n+  replicas: 4\n" in res["diff"]


def test_namespaceless_manifests_land_in_the_source_namespace(scratch: tuple[Path, Path]) -> None:
    tmp, state = scratch
    cfg = _one_source(tmp, "plain", ".", "shop", namespace="shop")
    r = rebuild(["--config", str(cfg), "-o", "json", "up"], state)
    assert r.returncode == 0, r.stderr[-4000:]
    assert json.loads(r.stdout)["converged"]
    kubeconfig = state / "clusters" / "shop" / "kubeconfig"
    objects = (("deployment", "blog"), ("configmap", "blog-theme"), ("serviceaccount", "blog"), ("deployment", "adminer"))
    for kind, name in objects:
        assert _live(kubeconfig, kind, "shop", name) is not None, (kind, name)
        assert _live(kubeconfig, kind, "default", name) is None, (kind, name)


@pytest.mark.parametrize(
    ("file", "old", "new", "expect"),
    [
        # The API server refuses the object: Flux reports it, rebuild stops waiting at once.
        (
            "apps/base/podinfo/deployment.yaml",
            "      labels:\n        app: podinfo\n    spec:",
            "      labels:\n        app: podinfo-typo\n    spec:",
            [
                "Kustomization flux-system/apps (clusters/production/apps.yaml:1) cannot apply revision",
                "apps/base/podinfo/deployment.yaml:1",
                "retrying the same revision cannot fix it",
            ],
        ),
        # kustomize cannot build a followed Kustomization's path: refused before any cluster exists.
        (
            "apps/production/kustomization.yaml",
            "  - path: podinfo-patch.yaml\n",
            "  - path: podinfo-patch.yaml\n  - patch: |-\n      apiVersion: apps/v1\n      kind: Deployment\n"
            "      metadata:\n        name: podinfo-old\n      spec:\n        replicas: 1\n",
            [
                "apps/production/kustomization.yaml:8: kustomize build failed: patch targets Deployment/podinfo-old, "
                "which is not declared (in Flux Kustomization flux-system/apps, clusters/production/apps.yaml:1)",
                "nothing was applied",
            ],
        ),
        # The API server drops an unknown field (Flux reports success): verify asks it once, strictly.
        (
            "apps/base/podinfo/service.yaml",
            "spec:\n",
            "spec:\n  sessionAffinityy: None\n",
            [
                "Service/web/podinfo: the API server does not know field(s) spec.sessionAffinityy "
                "(apps/base/podinfo/service.yaml:6)"
            ],
        ),
    ],
    ids=["invalid-object", "build-error", "unknown-field"],
)
def test_what_flux_cannot_apply_ends_up_at_once_with_file_and_line(
    scratch: tuple[Path, Path], file: str, old: str, new: str, expect: list[str]
) -> None:
    tmp, state = scratch
    repo = tmp / "repos" / "fleet"
    shutil.copytree(CORPUS / "fleet" / "repo", repo)
    target = repo / file
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new, 1))
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=corpus", "-c", "user.email=corpus@localhost", "commit", "-qm", "typo", cwd=repo)
    cfg = _one_source(tmp, "fleet", "clusters/production", "broken")
    r = rebuild(["--config", str(cfg), "up"], state)
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    for text in expect:
        assert text in r.stderr, (text, r.stderr[-3000:])
    assert "fix: " in r.stderr and "Traceback" not in r.stderr
