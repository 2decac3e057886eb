"""`rebuild up` of 20 HelmReleases against Helm's own Go library installing the same charts (issue 13).

Usage: .venv/bin/python -m bench.helm_releases [--releases 20] [--charts 4] [--rounds 2] [--json]

A generated repo in a local folder (rebuild's git server publishes it; rebuild.yaml names it
as the source ``bench``) holds a few small charts (``charts/<chart>/``: a Deployment, a Service
and a ConfigMap each; kwok's fake nodes pull no image) and, under ``apps/``, per release a
Namespace and a HelmRelease in it whose chart comes from the source's own GitRepository
(``chart: ./charts/<chart>``, ``sourceRef: {kind: GitRepository, name: bench, namespace:
flux-system}``, the GitRepository rebuild creates), with values of its own.

Each round, on a fresh local cluster (2 kwok nodes, created first, so both sides share it):

1. **floor**: bench/helmfloor (Go, helm.sh/helm/v3 v3.19.0, the Helm helm-controller v1.4.3 is
   built with) installs the same charts with the same values into a parallel set of namespaces
   (``floor-<i>``), one process, as many at a time as rebuild lets helm-controller reconcile
   (its ``--concurrent``, read from rebuild.reconcilers.flux_local.SPEED_ARGS), each with what
   helm-controller sets on ``action.Install``: Wait and WaitForJobs (every Deployment Ready,
   as rebuild's verify requires), a 5 minute timeout, the secret storage driver, the same
   client QPS/burst. Its seconds run from the first install to the last release ready. Then,
   reported only, the same again with every release at once (``wide-<i>`` namespaces): what
   Helm alone needs with no limit on concurrency;
2. ``rebuild up -o json --timeout 600`` as a user runs it (a subprocess of the installed
   command, in the repo folder, ``REBUILD_STATE_DIR`` = the round's state dir).

"The reconciler phase" measured is the JSON's ``reconciler`` plus ``verify`` phases: the
reconciler phase waits until the GitRepository and the Kustomization are Ready at the commit,
which only means the HelmReleases were *applied*; helm-controller's installs (HelmChart built
from the GitRepository artifact, Helm install, wait) go on into the verify phase, which ends
when every HelmRelease is Ready at the values git declares and every object its release
rendered is present and healthy. Together they run from "the platform phase (Pulumi) is done"
to "the releases are installed and verified". Since the local provider starts source-,
kustomize- and helm-controller as soon as the platform stack has created their CRDs
(rebuild.recover.reconciler.EarlyStart, as in-cluster controllers would), their start and
their first steps (the GitRepository fetched, sometimes the Kustomization applied) overlap
Pulumi's last seconds; the timeline shows when they were ready. The earlier phases (desired,
cluster, platform) are not Helm's work and are shown only.

Target (issue 13): reconciler + verify at most 2.0x the floor (the median of the rounds'
ratios), from 20 releases (fewer: a quick run, reported only). Everything started is removed:
``rebuild cluster down --purge`` (it stops the Flux controllers too), the git server stopped,
no process naming the temp folder left.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import CliRun, Target, cli_env, emit, load, run_cli
from bench.stacks import processes_naming
from rebuild.adapters import gitserver
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.core.state import StateLayout
from rebuild.reconcilers.flux_local import SPEED_ARGS
from rebuild.toolchain.registry import cache_root

ROOT = Path(__file__).resolve().parent.parent
FLOOR_SRC = ROOT / "bench" / "helmfloor"
COMMAND = ["up", "-o", "json", "--timeout", "600"]
TARGET = 2.0  # reconciler + verify <= 2.0x the floor (issue 13)
TARGET_AT = 20  # releases from which the target applies
CLUSTER = "helmbench"
NODES = 2
SOURCE = "bench"
CHARTS = ("web", "api", "worker", "cache")
HELM_API = "helm.toolkit.fluxcd.io/v2"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app.kubernetes.io/name: {{ .Chart.Name }}, app.kubernetes.io/instance: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app.kubernetes.io/instance: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: {{ .Chart.Name }}, app.kubernetes.io/instance: {{ .Release.Name }}}
      annotations: {checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}}
    spec:
      containers:
        - name: {{ .Chart.Name }}
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          ports: [{name: http, containerPort: {{ .Values.port }}}]
          envFrom: [{configMapRef: {name: {{ .Release.Name }}-config}}]
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  labels: {app.kubernetes.io/name: {{ .Chart.Name }}, app.kubernetes.io/instance: {{ .Release.Name }}}
spec:
  selector: {app.kubernetes.io/instance: {{ .Release.Name }}}
  ports: [{name: http, port: 80, targetPort: http}]
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  GREETING: {{ .Values.greeting | quote }}
  {{- range $k, $v := .Values.env }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
"""


# --------------------------------------------------------------------------- the repo


def chart_files(chart: str) -> dict[str, str]:
    """One small chart: a Deployment, a Service and a ConfigMap, nothing pulled (kwok nodes)."""
    values = {
        "replicas": 1,
        "image": {"repository": "nginx", "tag": "1.27"},
        "port": 8080,
        "greeting": "hello",
        "env": {"LOG_LEVEL": "info"},
    }
    return {
        "Chart.yaml": yaml.safe_dump(
            {"apiVersion": "v2", "name": chart, "version": "0.1.0", "appVersion": "1.27", "description": f"bench chart {chart}"},
            sort_keys=False,
        ),
        "values.yaml": yaml.safe_dump(values, sort_keys=False),
        "templates/deployment.yaml": DEPLOYMENT,
        "templates/service.yaml": SERVICE,
        "templates/configmap.yaml": CONFIGMAP,
    }


def releases(n: int, charts: int) -> list[dict[str, Any]]:
    """n releases over the first ``charts`` charts, each with values of its own."""
    out = []
    for i in range(n):
        chart = CHARTS[i % charts]
        out.append(
            {
                "index": i,
                "name": f"{chart}-{i:02d}",
                "chart": chart,
                "values": {
                    "replicas": 1 + i % 2,
                    "greeting": f"hello from release {i}",
                    "image": {"tag": "1.27.3"},
                    "env": {"LOG_LEVEL": "debug" if i % 3 == 0 else "info", "RELEASE_INDEX": str(i)},
                },
            }
        )
    return out


def helm_release(r: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": HELM_API,
        "kind": "HelmRelease",
        "metadata": {"name": r["name"], "namespace": namespace},
        "spec": {
            "interval": "10m",
            "chart": {
                "spec": {
                    "chart": f"./charts/{r['chart']}",
                    "sourceRef": {"kind": "GitRepository", "name": SOURCE, "namespace": "flux-system"},
                    "interval": "10m",
                }
            },
            "values": r["values"],
        },
    }


def write_repo(root: Path, rels: list[dict[str, Any]], charts: int) -> None:
    """charts/<chart>/ and apps/<namespace>/{namespace,release}.yaml, and rebuild.yaml."""
    for chart in CHARTS[:charts]:
        for rel, text in chart_files(chart).items():
            path = root / "charts" / chart / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for r in rels:
        ns = f"hr-{r['index']:02d}"
        folder = root / "apps" / ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "namespace.yaml").write_text(
            yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, sort_keys=False)
        )
        (folder / "release.yaml").write_text(yaml.safe_dump(helm_release(r, ns), sort_keys=False))
    cfg = {
        "sources": [{"name": SOURCE, "url": ".", "branch": "main", "path": "apps"}],
        "cluster": {"provider": "local", "name": CLUSTER, "nodes": NODES},
        "reconciler": {"kind": "flux", "interval": "1m"},
        "verify": {"timeout": "10m"},
    }
    (root / "rebuild.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def floor_spec(repo: Path, rels: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """The same charts and values for helmfloor, into namespaces ``<prefix>-<i>``."""
    return {
        "releases": [
            {
                "name": r["name"],
                "namespace": f"{prefix}-{r['index']:02d}",
                "chart": str(repo / "charts" / r["chart"]),
                "values": r["values"],
            }
            for r in rels
        ]
    }


# --------------------------------------------------------------------------- the floor program


def go_env() -> dict[str, str]:
    """The toolchain's Go settings (rebuild/toolchain/recipes.py Build.goenv): the machine's Go,
    modules resolved from go.mod (the module cache holds them after helm-controller's build)."""
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "GOWORK": "off"}


def floor_binary() -> Path:
    """bench/helmfloor built once per source digest and Go version, cached like the toolchain's tools."""
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=True, env=go_env()).stdout.strip()
    digest = hashlib.sha256(go.encode())
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((FLOOR_SRC / name).read_bytes())
    out = cache_root() / "bench" / "helmfloor" / digest.hexdigest()[:12] / "helmfloor"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(".helmfloor.partial")
    print(f"bench.helm_releases: building bench/helmfloor ({go}) into {out}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), "."],
        cwd=FLOOR_SRC,
        env=go_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building bench/helmfloor failed:\n{proc.stderr[-3000:]}")
    partial.rename(out)
    print(f"bench.helm_releases: built bench/helmfloor in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    return out


def helm_controller_concurrency() -> int:
    """helm-controller's --concurrent as rebuild starts it (its own default is 4)."""
    for arg in SPEED_ARGS.get("helm-controller", ()):
        if arg.startswith("--concurrent="):
            return int(arg.split("=", 1)[1])
    return 4


def run_floor(binary: Path, kubeconfig: Path, spec: dict[str, Any], concurrency: int, work: Path, label: str) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / f"{label}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    argv = [
        str(binary),
        "--kubeconfig",
        str(kubeconfig),
        "--spec",
        str(spec_path),
        "--concurrency",
        str(concurrency),
        "--cache-dir",
        str(work / f"{label}-discovery"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"helmfloor ({label}) exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    per = [r["seconds"] for r in out["releases"]]
    print(
        f"bench.helm_releases: floor {label}: {len(per)} releases, {concurrency} at a time: {out['seconds']:.2f}s "
        f"(process {wall:.2f}s; per release {min(per):.2f}-{max(per):.2f}s)",
        file=sys.stderr,
        flush=True,
    )
    return {
        "seconds": round(out["seconds"], 2),
        "process_seconds": round(wall, 2),
        "concurrency": concurrency,
        "helm_version": out["helm_version"],
        "release_seconds": {"min": round(min(per), 2), "median": round(statistics.median(per), 2), "max": round(max(per), 2)},
    }


# --------------------------------------------------------------------------- one round


def phases_of(data: dict[str, Any]) -> dict[str, float]:
    return {p["name"]: round(p["seconds"], 2) for p in data["phases"]}


def one_round(r: int, repo: Path, base: Path, binary: Path, rels: list[dict[str, Any]]) -> dict[str, Any]:
    state = base / f"state-{r}"
    cluster = LocalCluster(CLUSTER, nodes=NODES, root=state, unsafe_fast_storage=True)
    concurrency = helm_controller_concurrency()
    load_before = load()
    try:
        print(f"bench.helm_releases: round {r}: creating cluster {CLUSTER}", file=sys.stderr, flush=True)
        cluster.create()  # first, so the floor and `up` share it (up then finds it running)
        kubeconfig = cluster.kubeconfig()
        floor = run_floor(binary, kubeconfig, floor_spec(repo, rels, "floor"), concurrency, base / f"floor-{r}", "floor")
        wide = run_floor(binary, kubeconfig, floor_spec(repo, rels, "wide"), len(rels), base / f"floor-{r}", "wide")
        print(f"bench.helm_releases: round {r}: rebuild {' '.join(COMMAND)}", file=sys.stderr, flush=True)
        spawned = time.time()  # wall clock: the Flux objects' condition times are wall-clock too
        res: CliRun = run_cli(COMMAND, env=cli_env(state), cwd=repo, timeout=1800, ok=(0, 1, 2))
        data = res.data
        if not isinstance(data, dict) or not data.get("converged"):
            tail = "\n".join(line for _, line in res.stderr[-20:])
            why = data.get("error") if isinstance(data, dict) else str(data)[-2000:]
            raise RuntimeError(f"round {r}: rebuild up exited {res.returncode}, not converged: {why}\n{tail}")
        load_after = load()
        phases = phases_of(data)
        measured = round(phases["reconciler"] + phases["verify"], 2)
        flux_record = StateLayout(state).flux_dir(CLUSTER) / "flux.json"
        record = json.loads(flux_record.read_text()) if flux_record.exists() else {}
        controllers_start = record.get("started_seconds")
        summary = data["verify"]["summary"]
        try:
            when: dict[str, Any] = timeline(kubeconfig, spawned, res, phases)
            if record.get("ready_at"):
                when["controllers_ready"] = round(float(record["ready_at"]) - spawned, 2)
        except Exception as exc:  # the breakdown is an extra: never lose the round's numbers to it
            when = {"error": f"{type(exc).__name__}: {exc}"}
        print(
            f"bench.helm_releases: round {r}: reconciler {phases['reconciler']:.2f}s + verify {phases['verify']:.2f}s = "
            f"{measured:.2f}s, floor {floor['seconds']:.2f}s: {measured / floor['seconds']:.2f}x",
            file=sys.stderr,
            flush=True,
        )
        return {
            "round": r,
            "floor": floor,
            "floor_all_at_once": wide,
            "phases": phases,
            "reconciler_and_verify_seconds": measured,
            "controllers_start_seconds": controllers_start,
            "ratio": round(measured / floor["seconds"], 2),
            "ratio_all_at_once": round(measured / wide["seconds"], 2),
            "cli_wall_seconds": round(res.seconds, 2),
            "timeline": when,
            "rto_seconds": round(data["rto_seconds"], 2),
            "verified": f"{summary['verified']}/{summary['objects']} objects, "
            f"{summary.get('rendered_verified', 0)}/{summary.get('rendered', 0)} rendered",
            "load_average": {"before": load_before, "after": load_after},
        }
    finally:
        teardown(repo, state, cluster)


def _ready_at(obj: dict[str, Any]) -> float | None:
    """When the object's Ready condition last became True (wall clock, whole seconds), or None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True" and c.get("lastTransitionTime"):
            stamp = dt.datetime.strptime(str(c["lastTransitionTime"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            return stamp.timestamp()
    return None


def timeline(kubeconfig: Path, spawned: float, res: CliRun, phases: dict[str, float]) -> dict[str, float | None]:
    """Where the reconciler + verify span went, in seconds since `rebuild up` was spawned.

    From the live objects, read before the teardown: when the HelmCharts (source-controller's
    chart builds from the GitRepository artifact) and the HelmReleases (helm-controller's Helm
    install and wait) became Ready. Their ``lastTransitionTime`` has whole seconds only, so each
    of these is +-1 s. The phase boundaries come from the command's stderr and JSON."""
    kube = Kube.from_kubeconfig(kubeconfig)
    try:
        charts = [_ready_at(o) for o in kube.list("source.toolkit.fluxcd.io/v1", "HelmChart")]
        hrs = [_ready_at(o) for o in kube.list(HELM_API, "HelmRelease")]
    finally:
        kube.close()
    verify_start = res.marks([r"verify: \d+ objects"]).get(r"verify: \d+ objects")
    out: dict[str, float | None] = {
        "reconciler_start": None if verify_start is None else round(verify_start - phases["reconciler"], 2),
        "verify_start": verify_start,
        "verify_end": None if verify_start is None else round(verify_start + phases["verify"], 2),
    }
    for name, stamps in (("helmchart", charts), ("helmrelease", hrs)):
        got = [t - spawned for t in stamps if t is not None]
        out[f"first_{name}_ready"] = round(min(got), 1) if got else None
        out[f"last_{name}_ready"] = round(max(got), 1) if got else None
    return out


def teardown(repo: Path, state: Path, cluster: LocalCluster) -> None:
    """`rebuild cluster down --purge` as a user runs it (stops the Flux controllers too), then make sure."""
    try:
        run_cli(["cluster", "down", "--name", CLUSTER, "--purge"], env=cli_env(state), cwd=repo, timeout=300)
    except RuntimeError as exc:
        print(f"bench.helm_releases: teardown: {exc}", file=sys.stderr)
    cluster.delete(purge=True)  # in case `cluster down` failed: nothing left running
    gitserver.stop_server(StateLayout(state).gitserver)


def run(n: int, charts: int, rounds: int) -> dict[str, Any]:
    binary = floor_binary()
    base = Path(tempfile.mkdtemp(prefix="rebuild-bench-helm-"))
    repo = base / "repo"
    rels = releases(n, charts)
    write_repo(repo, rels, charts)
    load_before = load()
    try:
        runs = [one_round(r, repo, base, binary, rels) for r in range(rounds)]
    finally:
        deadline = time.monotonic() + 30
        while processes_naming(base) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = processes_naming(base)
        shutil.rmtree(base, ignore_errors=True)
        if left:
            raise RuntimeError(f"processes left after the teardown: {left}")
    ratio = round(statistics.median(x["ratio"] for x in runs), 2)
    return {
        "bench": "helm_releases",
        "releases": n,
        "charts": charts,
        "rounds": rounds,
        "runs": runs,
        "floor_seconds": round(statistics.median(x["floor"]["seconds"] for x in runs), 2),
        "floor_all_at_once_seconds": round(statistics.median(x["floor_all_at_once"]["seconds"] for x in runs), 2),
        "reconciler_and_verify_seconds": round(statistics.median(x["reconciler_and_verify_seconds"] for x in runs), 2),
        "ratio": ratio,
        "ratio_all_at_once": round(statistics.median(x["ratio_all_at_once"] for x in runs), 2),
        "helm_controller_concurrent": helm_controller_concurrency(),
        "load_average": {"before": load_before, "after": load()},
        "command": f"cd <repo> && REBUILD_STATE_DIR=<bench state> rebuild {' '.join(COMMAND)}",
        "floor_command": "bench/helmfloor --kubeconfig <cluster> --spec <releases.json> --concurrency "
        f"{helm_controller_concurrency()} (and --concurrency {n})",
        "targets": []
        if n < TARGET_AT
        else [
            Target(
                f"`rebuild up` reconciler+verify / Helm library floor, {n} HelmReleases", ratio, "<=", TARGET, "issue 13"
            ).to_dict()
        ],
    }


# --------------------------------------------------------------------------- output


def text(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"{r['releases']} HelmReleases over {r['charts']} charts, {r['rounds']} round(s); "
            f"helm-controller --concurrent={r['helm_controller_concurrent']}"
        )
        for x in r["runs"]:
            lines.append(
                f"  round {x['round']}: floor {x['floor']['seconds']:.2f}s ({x['floor']['concurrency']} at a time; "
                f"all at once {x['floor_all_at_once']['seconds']:.2f}s); up reconciler {x['phases']['reconciler']:.2f}s "
                f"+ verify {x['phases']['verify']:.2f}s = {x['reconciler_and_verify_seconds']:.2f}s = {x['ratio']:.2f}x "
                f"({x['ratio_all_at_once']:.2f}x the all-at-once floor); controllers start {x['controllers_start_seconds']}s; "
                f"verified {x['verified']}; load {x['load_average']['before'][0]:.1f} / {x['load_average']['after'][0]:.1f}"
            )
            lines.append("    up phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in x["phases"].items()))
            lines.append("    timeline (s since spawn): " + json.dumps(x.get("timeline", {})))
        lines.append(f"  median ratio {r['ratio']:.2f}x")
        for t in r["targets"]:
            lines.append("  " + Target(t["name"], t["value"], t["op"], t["limit"]).line())
    return "\n".join(lines)


def block(results: list[dict[str, Any]]) -> str:
    """docs/measurements.md's generated block (bench/all.py calls it)."""
    from bench.all import targets_lines

    (r,) = results
    c = r["helm_controller_concurrent"]
    load_b, load_a = r["load_average"]["before"][0], r["load_average"]["after"][0]
    lines = [
        f"`{r['argv']}`; the measured command: `{r['command']}`; the floor: `{r['floor_command']}`. "
        f"{r['releases']} HelmReleases over {r['charts']} charts from the source's GitRepository; "
        f"machine load (1-min average) before / after: {load_b:.1f} / {load_a:.1f}.",
        "",
        f"| round | floor: Helm library, {c} at a time | Helm library, all {r['releases']} at once "
        "| `up` reconciler + verify | the controllers' start (during the platform phase) | ratio to the floor "
        "| up phases (desired / cluster / platform / reconciler / verify) | verified | load before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        p = x["phases"]
        ph = " / ".join(f"{p.get(k, 0):.2f}" for k in ("desired", "cluster", "platform", "reconciler", "verify"))
        cs = x["controllers_start_seconds"]
        lines.append(
            f"| {x['round']} | {x['floor']['seconds']:.2f} s | {x['floor_all_at_once']['seconds']:.2f} s "
            f"| {x['reconciler_and_verify_seconds']:.2f} s | {'-' if cs is None else f'{cs:.2f} s'} "
            f"| **{x['ratio']:.2f}x** ({x['ratio_all_at_once']:.2f}x all at once) | {ph} s | {x['verified']} "
            f"| {x['load_average']['before'][0]:.1f} / {x['load_average']['after'][0]:.1f} |"
        )
    lines.append(
        f"| **median** | **{r['floor_seconds']:.2f} s** | {r['floor_all_at_once_seconds']:.2f} s "
        f"| **{r['reconciler_and_verify_seconds']:.2f} s** | | **{r['ratio']:.2f}x** ({r['ratio_all_at_once']:.2f}x) | | | |"
    )
    if any("verify_start" in x.get("timeline", {}) for x in r["runs"]):
        lines += [
            "",
            "Where `up`'s span went, in seconds since `rebuild up` was spawned (Ready times from the HelmCharts' and "
            "HelmReleases' Ready conditions, whole seconds, so +-1 s; phase boundaries from the command's stderr and JSON):",
            "",
            "| round | Flux controllers ready (started during the platform phase) | reconciler phase starts "
            "| verify phase starts | HelmCharts Ready (first - last) | HelmReleases Ready (first - last) | verify phase ends |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in r["runs"]:
            t = x.get("timeline", {})

            def f(key: str, t: dict[str, Any] = t) -> str:
                v = t.get(key)
                return "-" if v is None else f"{v:.1f}"

            lines.append(
                f"| {x['round']} | {f('controllers_ready')} | {f('reconciler_start')} | {f('verify_start')} "
                f"| {f('first_helmchart_ready')} - {f('last_helmchart_ready')} "
                f"| {f('first_helmrelease_ready')} - {f('last_helmrelease_ready')} | {f('verify_end')} |"
            )
    lines += ["", *targets_lines(results)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", type=int, default=20)
    ap.add_argument("--charts", type=int, default=4, choices=range(1, len(CHARTS) + 1))
    ap.add_argument("--rounds", type=int, default=2, help="fresh cluster, floor and `up` per round; median ratio asserted")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(args.releases, args.charts, args.rounds)]
    emit(results, args.json, text(results))


if __name__ == "__main__":
    main()
