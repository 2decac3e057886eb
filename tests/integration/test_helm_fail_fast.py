"""HelmReleases that can never install stop rebuild early (issue 13 acceptance: "a chart version
that does not exist, a values key of the wrong type: exit 2 in under 30 s with file:line and the
fix, nothing half-applied"), through the real CLI.

- Preflight: a chart from the charts rebuild serves (``sources[].charts``) at a version git does
  not hold, then values of the wrong type against the chart's values.schema.json (set by an
  overlay patch): ``up``, ``plan`` and ``verify`` exit 2 within seconds naming the line and the
  fix, and no cluster is created.
- Runtime backstop, real local cluster and real helm-controller: a chart from a repository
  rebuild does not serve (one this test serves itself) cannot be preflighted. Values its
  templates cannot read (a string where the chart reads ``.Values.image.repository``) and then a
  chart version that repository lacks end `up`'s verify wait as soon as helm-controller gives up,
  well before the 4-minute timeout, with the HelmRelease's file:line.

The repository is written the way people write it: no namespaces on the HelmRelease, four-space
and two-space indentation mixed, a comment, an inline overlay patch.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import gitserver, helmrepo
from tests.conftest import unique
from tests.integration.test_helm_local import write_chart
from tests.integration.test_sops_verify import assert_fails_fast, rebuild
from tests.procs import processes_naming

pytestmark = pytest.mark.integration

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"replicas": {"type": "integer", "minimum": 1}, "message": {"type": "string"}},
    "required": ["replicas"],
}

HR = """\
# the status page, from the charts rebuild serves (rebuild.yaml: charts)
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
    name: status
spec:
    interval: 5m
    chart:
        spec:
            chart: status-page
            version: "{version}"
            sourceRef:
                kind: HelmRepository
                name: apps-charts
                namespace: flux-system
    values:
        message: all good
"""
VERSION_LINE = 11


def line_of(path: Path, text: str) -> int:
    (n,) = [i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln]
    return n


def write_config(work: Path, cluster: str, *, charts: bool) -> Path:
    source: dict[str, Any] = {"name": "apps", "url": "repo", "branch": "main", "path": "apps"}
    if charts:
        source["charts"] = "charts"
    cfg = {
        "sources": [source],
        "cluster": {"provider": "local", "name": cluster, "nodes": 1},
        "reconciler": {"kind": "flux", "interval": "1m"},
        "verify": {"timeout": "4m"},
    }
    path = work / f"rebuild-{cluster}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_served_repo(repo: Path, version: str, patch_replicas: str) -> None:
    chart = repo / "charts" / "status-page"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: status-page\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("replicas: 1\nmessage: hello\n")
    (chart / "values.schema.json").write_text(json.dumps(SCHEMA, indent=2))
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n"
        "  replicas: {{ .Values.replicas | quote }}\n  message: {{ .Values.message | quote }}\n"
    )
    (repo / "apps").mkdir(parents=True, exist_ok=True)
    (repo / "apps" / "helmrelease.yaml").write_text(HR.format(version=version))
    (repo / "apps" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- helmrelease.yaml\n"
        "patches:\n  - target:\n      kind: HelmRelease\n      name: status\n    patch: |-\n"
        "      apiVersion: helm.toolkit.fluxcd.io/v2\n      kind: HelmRelease\n      metadata:\n        name: status\n"
        f"      spec:\n        values:\n          replicas: {patch_replicas}\n"
    )


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]


def test_a_missing_chart_version_or_values_of_the_wrong_type_stop_before_any_cluster(tmp_path: Path, toolchain: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    state = tmp_path / "state"
    repo = work / "repo"
    cfg = write_config(work, unique("hpre"), charts=True)
    hr_file, kust_file = "apps/helmrelease.yaml", "apps/kustomization.yaml"
    try:
        # -- a chart version the served charts do not hold
        write_served_repo(repo, "9.9.9", "2")
        assert line_of(repo / hr_file, "version:") == VERSION_LINE
        where = f"{hr_file}:{VERSION_LINE}"
        for command in (["-o", "json", "up"], ["plan"], ["verify", "--timeout", "0"]):
            t0 = time.monotonic()
            r = rebuild(["--config", str(cfg), *command], state, timeout=120)
            took = time.monotonic() - t0
            no_traceback(r)
            error, fix = assert_fails_fast(
                r, took, f"{where}: HelmRelease default/status: chart status-page has no version matching 9.9.9"
            )
            assert fix == f"  fix: versions in charts/status-page: 0.1.0; change spec.chart.spec.version at {where}", fix
            print(f"\n{' '.join(c for c in command if c not in ('-o', 'json'))}: exit 2 after {took:.1f}s\n{error}\n{fix}")
            if "up" in command:
                phases = json.loads(r.stdout)["phases"]
                assert [(p["name"], p["status"]) for p in phases] == [("desired", "failed")], phases
            assert list((state / "clusters").glob("*")) == [], "a cluster was created"

        # -- values of the wrong type, set by the overlay patch: the schema says integer
        write_served_repo(repo, "0.1.0", '"two"')
        line = line_of(repo / kust_file, "replicas:")
        t0 = time.monotonic()
        r = rebuild(["--config", str(cfg), "up"], state, timeout=120)
        took = time.monotonic() - t0
        no_traceback(r)
        error, fix = assert_fails_fast(
            r,
            took,
            f"{kust_file}:{line}: HelmRelease default/status: spec.values.replicas is a string, the schema wants integer",
            "charts/status-page/values.schema.json",
        )
        assert fix == f"  fix: give spec.values.replicas a value of type integer at {kust_file}:{line}", fix
        assert '"two"' not in r.stderr and "two" not in error.split("HelmRelease")[1]  # the value is never quoted
        print(f"up with values of the wrong type: exit 2 after {took:.1f}s\n{error}\n{fix}")
        assert list((state / "clusters").glob("*")) == [], "a cluster was created"
    finally:
        gitserver.stop_server(state / "gitserver")  # the only thing these runs started
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"


OUTSIDE_HR = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: web
spec:
  interval: 5m
  chart:
    spec:
      chart: tiny
      version: "{version}"
      sourceRef:
        kind: HelmRepository
        name: outside
  values:
      image: nginx:1.27
"""


def test_a_helm_release_helm_controller_gives_up_on_ends_the_verify_wait(tmp_path: Path, toolchain: Any) -> None:
    work = tmp_path / "work"
    (work / "repo" / "apps").mkdir(parents=True)
    state = tmp_path / "state"
    name = unique("hback")
    cfg = write_config(work, name, charts=False)
    charts, repo_state = tmp_path / "outside-charts", tmp_path / "outside-repo"
    write_chart(charts / "tiny")  # its Deployment reads .Values.image.repository and .tag; no schema
    served = helmrepo.ensure_repo(repo_state, charts)  # a chart repository rebuild does not serve
    apps = work / "repo" / "apps"
    (apps / "repo.yaml").write_text(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: outside\n"
        f"spec:\n  interval: 1m\n  url: {served.url}\n  timeout: 20s\n"
    )
    (apps / "kustomization.yaml").write_text("resources:\n  - repo.yaml\n  - web.yaml\n")
    hr_file = "apps/web.yaml"
    try:
        # -- values the chart's templates cannot read (a string where it reads image.repository)
        (apps / "web.yaml").write_text(OUTSIDE_HR.format(version="0.1.0"))
        t0 = time.monotonic()
        r = rebuild(["-o", "json", "--config", str(cfg), "up"], state, timeout=600)
        took = time.monotonic() - t0
        no_traceback(r)
        assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
        verify = next(p for p in json.loads(r.stdout)["phases"] if p["name"] == "verify")
        error = next(ln for ln in r.stderr.splitlines() if ln.startswith("error: "))
        fix = r.stderr.splitlines()[r.stderr.splitlines().index(error) + 1]
        print(
            f"\nup, values the templates reject: exit 2 after {took:.1f}s, verify phase {verify['seconds']:.1f}s\n{error}\n{fix}"
        )
        assert verify["status"] == "failed" and verify["seconds"] < 120, verify  # the timeout is 240 s
        assert error.startswith(f"error: {hr_file}:1: HelmRelease default/web: helm-controller gave up: "), error
        assert "InstallFailed" in error and "image" in error, error
        assert fix == (
            f"  fix: fix the values the message names (spec.values at {hr_file}:14) or the chart, then run "
            "`flux reconcile helmrelease -n default web --force`"
        ), fix

        # -- a chart version that repository does not have: helm-controller says so, the wait ends
        (apps / "web.yaml").write_text(OUTSIDE_HR.format(version="9.9.9").replace("image: nginx:1.27", "image: {tag: '1.27'}"))
        t0 = time.monotonic()
        r = rebuild(["-o", "json", "--config", str(cfg), "up"], state, timeout=600)
        took = time.monotonic() - t0
        no_traceback(r)
        assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
        verify = next(p for p in json.loads(r.stdout)["phases"] if p["name"] == "verify")
        error = next(ln for ln in r.stderr.splitlines() if ln.startswith("error: "))
        fix = r.stderr.splitlines()[r.stderr.splitlines().index(error) + 1]
        print(
            f"up, a version the repository lacks: exit 2 after {took:.1f}s, verify phase {verify['seconds']:.1f}s\n{error}\n{fix}"
        )
        assert verify["seconds"] < 120, verify
        assert error.startswith(f"error: {hr_file}:1: HelmRelease default/web: helm-controller gave up: "), error
        assert "9.9.9" in error, error
        assert fix == (
            "  fix: the chart version 9.9.9 is not in HelmRepository default/outside: "
            f"change spec.chart.spec.version at {hr_file}:10"
        ), fix
    finally:
        rebuild(["cluster", "down", "--name", name, "--purge"], state, timeout=180)
        helmrepo.stop_repo(repo_state)
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
