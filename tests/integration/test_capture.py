"""Issue 4 end to end: manual changes in a real cluster become one pull request on a real Gitea,
the PR is idempotent, merging it and rebuilding a fresh cluster loses nothing, controller
noise yields no finding, and a Secret's value never leaves the cluster."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.gitea import Gitea
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from tests.conftest import REPO, example_config
from tests.kubectl import kubectl as kubectl_at
from tests.kubectl import sed_editor, suspend_flux
from tests.procs import stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"
SECRET_VALUE = "s3cr3t-rotated-by-hand-7731"


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def kubectl(state: Path, *args: str, stdin: str | None = None, env_extra: dict[str, str] | None = None) -> str:
    return kubectl_at(state / "clusters/demo/kubeconfig", *args, stdin=stdin, env_extra=env_extra)


def managers(obj: dict[str, Any]) -> set[str]:
    return {str(m.get("manager")) for m in obj["metadata"].get("managedFields", [])}


def rebuild(args: list[str], state: Path, env_extra: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state), **env_extra)
    return subprocess.run([sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def setup(tmp_path: Path, toolchain: Any) -> Iterator[dict[str, Any]]:
    forge = Gitea(tmp_path / "gitea", toolchain=toolchain)
    state = tmp_path / "state"
    try:
        forge.start()
        forge.create_repo("gitops", auto_init=False)
        url = forge.clone_url(forge.admin_user, "gitops")
        work = tmp_path / "seed"
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("rebuild.yaml"))
        env = forge.git_env()
        git("init", "-q", "-b", "main", cwd=work)
        git("add", ".", cwd=work)
        git("-c", "user.name=seed", "-c", "user.email=seed@localhost", "commit", "-qm", "seed", cwd=work)
        git("push", "-q", url, "main", cwd=work, env=env)
        cfg = example_config()
        cfg["sources"][0].update(url=url, credentials={"username_env": "GITEA_USER", "password_env": "GITEA_TOKEN"})
        cfg["capture"]["forge"] = {
            "kind": "gitea",
            "url": forge.url,
            "repo": f"{forge.admin_user}/gitops",
            "token_env": "GITEA_TOKEN",
        }
        config = tmp_path / "rebuild.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        yield {
            "forge": forge,
            "config": config,
            "state": state,
            "url": url,
            "tmp": tmp_path,
            "env": {"GITEA_USER": forge.admin_user, "GITEA_TOKEN": forge.token},
        }
    finally:
        for name in ("demo", "demo-fresh"):
            LocalCluster(name, root=state).delete(purge=True)
        stop_servers(state)
        forge.stop()


def open_prs(forge: Gitea) -> list[Any]:
    return [p for p in forge.list_pull_requests(forge.admin_user, "gitops", "open")]


def test_capture_opens_one_pr_that_brings_everything_back(setup: dict[str, Any]) -> None:
    forge: Gitea = setup["forge"]
    config, state, env = setup["config"], setup["state"], setup["env"]
    r = rebuild(["--config", str(config), "up"], state, env)
    assert r.returncode == 0, r.stderr[-3000:]

    kube = Kube.from_kubeconfig(state / "clusters/demo/kubeconfig")
    tmp: Path = setup["tmp"]
    # Suspend Flux as a person does before changing things by hand (kubectl, not flux-cli).
    suspend_flux(state / "clusters/demo/kubeconfig")
    ks = kube.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "demo", "flux-system") or {}
    assert ks["spec"]["suspend"] is True

    def dep(name: str, ns: str = "shop") -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns}}

    # Controller noise first: an HPA-style replicas change by kube-controller-manager. kubectl
    # cannot make it (it cannot write as another field manager through /scale), so it stays a
    # direct API write under the controller's manager name.
    kube.patch(
        dep("payments-api", "payments"), {"spec": {"replicas": 4}}, field_manager="kube-controller-manager", subresource="scale"
    )
    # The manual changes, made with real kubectl commands.
    kubectl(state, "-n", "shop", "scale", "deployment/cart", "--replicas=5")
    kubectl(state, "-n", "shop", "set", "image", "deployment/frontend", "nginx=nginx:1.27.9")
    kubectl(state, "-n", "shop", "label", "deployment/search", "team=search-oncall")
    kubectl(state, "-n", "shop", "annotate", "deployment/search", "example.com/pager=search-oncall")
    kubectl(state, "-n", "shop", "set", "env", "deployment/search", "SEARCH_DEBUG=1")
    kubectl(state, "-n", "shop", "patch", "configmap/frontend-nginx", "-p", '{"data":{"cache-ttl-seconds":"120"}}')
    kubectl(state, "-n", "shop", "create", "configmap", "hotfix-flags", "--from-literal=DISABLE_RECS=true")
    kubectl(
        state,
        "create",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "debug", "namespace": "shop"},
                "spec": {"selector": {"app": "cart"}, "ports": [{"port": 9000, "targetPort": 9000}]},
            }
        ),
    )
    kubectl(state, "-n", "payments", "delete", "service/ledger")
    # ... and on objects the example's HelmReleases rendered (issue 13): the status page's
    # replicas (git sets them in the demo overlay's values patch) and the worker's image tag
    # (set in the queue-worker HelmRelease's flow-style values)
    kubectl(state, "-n", "shop", "scale", "deployment/status-page", "--replicas=3")
    kubectl(state, "-n", "payments", "set", "image", "deployment/queue-worker", "worker=ghcr.io/example/queue-worker:2.3.2")
    b64_value = base64.b64encode(SECRET_VALUE.encode()).decode()
    kubectl(
        state,
        "-n",
        "payments",
        "edit",
        "secret/payments-db",
        # The value reaches sed through the environment: the script on disk does not hold it.
        env_extra={"NEW_B64": b64_value, **sed_editor(tmp, "secret", r"s/^data:\$/data:\n  password: $NEW_B64/")},
    )

    # What kubectl really records (not what rebuild assumes): one manager per verb.
    cart = kube.get("apps/v1", "Deployment", "cart", "shop") or {}
    assert cart["spec"]["replicas"] == 5
    scale_entries = [m for m in cart["metadata"].get("managedFields", []) if m.get("subresource") == "scale"]
    front = kube.get("apps/v1", "Deployment", "frontend", "shop") or {}
    assert "kubectl-set" in managers(front)
    search = kube.get("apps/v1", "Deployment", "search", "shop") or {}
    assert {"kubectl-label", "kubectl-annotate", "kubectl-set"} <= managers(search)
    assert "kubectl-patch" in managers(kube.get("v1", "ConfigMap", "frontend-nginx", "shop") or {})
    assert "kubectl-create" in managers(kube.get("v1", "ConfigMap", "hotfix-flags", "shop") or {})
    assert "kubectl-create" in managers(kube.get("v1", "Service", "debug", "shop") or {})
    assert "kubectl-edit" in managers(kube.get("v1", "Secret", "payments-db", "payments") or {})
    assert kube.get("v1", "Service", "ledger", "payments") is None

    first = rebuild(["-o", "json", "--config", str(config), "capture"], state, env)
    assert first.returncode == 1, first.stderr[-3000:]
    res = json.loads(first.stdout)
    assert res["action"] == "created"
    prs = open_prs(forge)
    assert len(prs) == 1
    pr = prs[0]
    body = pr["body"]
    for manager in ("kubectl-edit", "kubectl-label", "kubectl-annotate", "kubectl-set", "kubectl-patch", "kubectl-create"):
        assert manager in body, manager
    # kubectl scale (1.32) writes the /scale subresource with no --field-manager: the API server
    # names the manager after the user agent ("kubectl") and, because Flux owned spec.replicas,
    # records the new owner with the subresource and no timestamp. (A replicas field nobody
    # owned gets no entry at all; rebuild then says "set through the scale subresource".)
    assert [(m["manager"], m["operation"], "time" in m) for m in scale_entries] == [("kubectl", "Update", False)], scale_entries
    assert "kubectl (Update, scale)" in body
    # Each change is attributed to the kubectl verb that made it, row by row.
    lines = body.splitlines()
    for obj, fld, who in [
        ("Deployment/shop/cart", "spec.replicas", "kubectl (Update, scale)"),
        ("Deployment/shop/frontend", "spec.template.spec.containers[name=nginx].image", "kubectl-set (Update)"),
        ("Deployment/shop/search", "metadata.labels.team", "kubectl-label (Update)"),
        ("Deployment/shop/search", "metadata.annotations.example.com/pager", "kubectl-annotate (Update)"),
        ("Deployment/shop/search", "spec.template.spec.containers[name=search].env[name=SEARCH_DEBUG]", "kubectl-set (Update)"),
        ("ConfigMap/shop/frontend-nginx", "data.cache-ttl-seconds", "kubectl-patch (Update)"),
        ("Secret/payments/payments-db", "data.password", "kubectl-edit (Update)"),
        ("ConfigMap/shop/hotfix-flags", None, "kubectl-create (Update)"),
        ("Service/shop/debug", None, "kubectl-create (Update)"),
    ]:
        cell = f"| {obj} | `{fld}` |" if fld else f"| {obj} |"
        assert any(ln.startswith(cell) and f"| {who} |" in ln for ln in lines), (obj, fld, who, body)
    assert "Service/payments/ledger" in body and "deleted live" in body
    # Helm-rendered objects: the source is the HelmRelease, the edit a values leaf
    for obj, leaf in (
        ("Deployment/shop/status-page", "values.replicaCount"),
        ("Deployment/payments/queue-worker", "values.image.tag"),
    ):
        assert any(ln.startswith(f"| {obj} |") for ln in lines), (obj, body)
        assert leaf in body, (leaf, body)
    assert "Secret/payments/payments-db" in body and "password" in body
    assert "Deployment/payments/payments-api" not in body  # controller noise: no finding

    # The PR's diff: exactly the drifted fields, everything else byte-identical.
    work = setup["tmp"] / "review"
    git("clone", "-q", setup["url"], str(work), cwd=setup["tmp"], env=forge.git_env())
    git("fetch", "-q", "origin", pr["head"]["ref"], cwd=work, env=forge.git_env())
    diff = git("diff", "--unified=0", "origin/main", "FETCH_HEAD", cwd=work)
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    edits = changed
    assert "-    count: 3" in edits and "+    count: 5" in edits  # overlay replicas: entry
    assert "-    newTag: 1.27.4" in edits and "+    newTag: 1.27.9" in edits  # overlay images: entry
    assert '-  cache-ttl-seconds: "60"' in edits and '+  cache-ttl-seconds: "120"' in edits  # the SMP patch file
    assert "+    team: search-oncall" in edits  # base manifest
    added = [ln for ln in edits if ln.startswith("+")]
    assert any(ln[1:].strip() == "example.com/pager: search-oncall" for ln in added), diff  # kubectl annotate
    assert any("SEARCH_DEBUG" in ln for ln in added), diff  # kubectl set env: a new env entry
    assert "+  - ../../apps/captured" in edits, diff  # the cluster's kustomization includes the new folder
    assert "-    replicaCount: 2" in edits and "+    replicaCount: 3" in edits  # the overlay's values patch
    assert '-        image: {tag: "2.3.1"}' in edits, diff  # the queue-worker HelmRelease's values
    assert any(ln.startswith("+        image: {tag: ") and "2.3.2" in ln for ln in edits), diff
    removed = [ln for ln in changed if ln.startswith("-")]
    assert sorted(removed) == sorted(
        [
            "-    count: 3",
            "-    newTag: 1.27.4",
            '-  cache-ttl-seconds: "60"',
            "-    replicaCount: 2",
            '-        image: {tag: "2.3.1"}',
        ]
    )
    names = git("diff", "--name-status", "origin/main", "FETCH_HEAD", cwd=work)
    assert "A\tapps/captured/shop/configmap-hotfix-flags.yaml" in names
    assert "A\tapps/captured/shop/service-debug.yaml" in names
    git("checkout", "-q", "FETCH_HEAD", cwd=work)
    new_cm = yaml.safe_load((work / "apps/captured/shop/configmap-hotfix-flags.yaml").read_text())
    assert new_cm == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hotfix-flags", "namespace": "shop"},
        "data": {"DISABLE_RECS": "true"},
    }
    new_svc = yaml.safe_load((work / "apps/captured/shop/service-debug.yaml").read_text())
    assert "status" not in new_svc and "clusterIP" not in new_svc["spec"] and "uid" not in new_svc["metadata"]

    # The Secret's value is nowhere: not in the branch, the PR, the JSON, the logs.
    grep = subprocess.run(["git", "grep", "-I", "-l", SECRET_VALUE, "FETCH_HEAD"], cwd=work, capture_output=True, text=True)
    assert grep.stdout == ""
    b64 = base64.b64encode(SECRET_VALUE.encode()).decode()
    for text in (body, first.stdout, first.stderr, git("log", "-p", "FETCH_HEAD", cwd=work)):
        assert SECRET_VALUE not in text and b64 not in text

    # Same drift again: no second PR.
    again = rebuild(["-o", "json", "--config", str(config), "capture"], state, env)
    assert again.returncode == 1 and json.loads(again.stdout)["action"] == "unchanged"
    assert len(open_prs(forge)) == 1

    # One more manual change: the same PR is updated.
    kubectl(state, "-n", "shop", "label", "deployment/cart", "hotfix=INC-4711")
    third = rebuild(["-o", "json", "--config", str(config), "capture"], state, env)
    assert third.returncode == 1 and json.loads(third.stdout)["action"] == "updated", third.stderr[-2000:]
    prs = open_prs(forge)
    assert len(prs) == 1 and prs[0]["number"] == pr["number"] and "INC-4711" in prs[0]["body"]

    # RPO of a drill run now: the manual changes in the live cluster that git does not have yet.
    drill = rebuild(["-o", "json", "--config", str(config), "drill", "--live"], state, env)
    assert drill.returncode == 0, drill.stderr[-3000:]
    assert json.loads(drill.stdout)["rpo"]["uncaptured_changes"] == len(json.loads(third.stdout)["report"]["findings"])

    # Merge it, rebuild a fresh cluster from git, verify: every manual change is there.
    forge.api("POST", f"/repos/{forge.admin_user}/gitops/pulls/{pr['number']}/merge", {"Do": "merge"})
    fresh = yaml.safe_load(config.read_text())
    fresh["cluster"]["name"] = "demo-fresh"
    fresh_config = config.with_name("rebuild-fresh.yaml")
    fresh_config.write_text(yaml.safe_dump(fresh, sort_keys=False))
    up2 = rebuild(["-o", "json", "--config", str(fresh_config), "up"], state, env)
    assert up2.returncode == 0, up2.stderr[-3000:]
    assert json.loads(up2.stdout)["converged"] is True
    k2 = Kube.from_kubeconfig(state / "clusters/demo-fresh/kubeconfig")
    assert (k2.get("apps/v1", "Deployment", "cart", "shop") or {})["spec"]["replicas"] == 5
    assert (k2.get("apps/v1", "Deployment", "cart", "shop") or {})["metadata"]["labels"]["hotfix"] == "INC-4711"
    front = k2.get("apps/v1", "Deployment", "frontend", "shop") or {}
    assert front["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27.9"
    search2 = k2.get("apps/v1", "Deployment", "search", "shop") or {}
    assert search2["metadata"]["labels"]["team"] == "search-oncall"
    assert search2["metadata"]["annotations"]["example.com/pager"] == "search-oncall"
    assert {"name": "SEARCH_DEBUG", "value": "1"} in search2["spec"]["template"]["spec"]["containers"][0]["env"]
    assert (k2.get("v1", "ConfigMap", "frontend-nginx", "shop") or {})["data"]["cache-ttl-seconds"] == "120"
    assert k2.get("v1", "ConfigMap", "hotfix-flags", "shop") is not None
    assert k2.get("v1", "Service", "debug", "shop") is not None
    # the HelmReleases' merged values: Helm installed them into the fresh cluster (verified Ready by up)
    assert (k2.get("apps/v1", "Deployment", "status-page", "shop") or {})["spec"]["replicas"] == 3
    worker = k2.get("apps/v1", "Deployment", "queue-worker", "payments") or {}
    assert worker["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/queue-worker:2.3.2"
