"""`rebuild capture --dry-run -o json`, run as a user runs it, against the bare LISTs and `kubectl diff`.

Usage: .venv/bin/python -m bench.capture_scale [--objects 1000 10000] [--variants plain kustomized]
                                              [--rounds 3] [--profile DIR] [--json]

For each variant and size N, on a fresh local cluster (8 kwok nodes, its own state dir):

1. setup (not timed): a generated repo of N objects (Namespaces, ConfigMaps, Services,
   Deployments; bench.rebuild_scale.generate) is written to a local folder, in one of two layouts:
   - ``plain``: one file per app, as in examples/gitops-repo, no kustomization (Flux generates one);
   - ``kustomized`` (issue 10): one kustomization per app folder with ``namespace``,
     ``namePrefix``, ``commonLabels`` and a ``configMapGenerator``, listed by a root
     kustomization (bench.kustomized);
   what Flux would apply (the objects; for ``kustomized`` the `kubectl kustomize` output) is
   server-side applied by one process as field manager kustomize-controller, then five manual
   changes are made with kubectl's field managers (scale, label, patch of a ConfigMap, a
   ConfigMap created, a Service deleted);
2. a rebuild.yaml beside the folder (source: that local folder, path ``apps``; cluster:
   provider local, the bench cluster's name) and ``REBUILD_STATE_DIR`` = the cluster's state dir;
3. one untimed first run of the command (it starts rebuild's git server and clones the
   mirror: reported as "first run"), then ``--rounds`` rounds, alternating, best of each:
   - floor: the bare paginated cluster-wide LISTs of the kinds capture lists (every listable
     namespaced kind plus the cluster-scoped kinds git declares, 16 at a time), in this process;
   - capture: ``rebuild capture --dry-run -o json`` as a subprocess, spawn to exit: config,
     publishing the folder to the git server, git fetch, kustomize render, LIST, drift,
     backport plan, JSON output. The run must find every manual change (exit 1).
4. ``kubectl diff --server-side --force-conflicts -f`` over the same manifests (the objects
   applied in step 1), one invocation, once.

Targets, at 10,000 objects: capture <= 1.5x the LIST floor and kubectl diff >= 20x capture
(issue 14); the kustomized variant's capture/floor ratio <= 1.3x the plain variant's (issue 10).
At 1,000 objects the ratios are reported, not asserted (fixed costs dominate there).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import REBUILD, CliRun, Target, apply_all, cli_env, emit, kubectl_diff, list_floor, load, run_cli, settle
from bench.kustomized import build, write_kustomized_repo
from bench.rebuild_scale import generate, write_repo
from rebuild.adapters import gitserver
from rebuild.adapters.kube import Kube
from rebuild.capture.listing import listed_kinds
from rebuild.clusters.local import LocalCluster
from rebuild.core.model import ObjectRef

CLUSTER = "capbench"
COMMAND = ["capture", "--dry-run", "-o", "json"]
TARGET_AT = 10000  # objects: where issue 14's targets apply
FLOOR_TARGET = 1.5  # capture <= 1.5x the bare LISTs
KDIFF_TARGET = 20.0  # kubectl diff >= 20x capture
KUSTOMIZED_TARGET = 1.3  # kustomized ratio <= 1.3x the plain ratio
# Progress lines the CLI prints on stderr, in order: where its wall time goes.
MARKS = [r"desired: fetching", r"desired: \d+ objects", r"capture: listing", r"capture: \d+ manual"]


def write_config(base: Path, repo: Path) -> Path:
    """The rebuild.yaml a user would keep next to the repo folder."""
    cfg = {
        "sources": [{"name": "bench", "url": str(repo.relative_to(base)), "branch": "main", "path": "apps"}],
        "cluster": {"provider": "local", "name": CLUSTER, "nodes": 8},
        "reconciler": {"kind": "flux", "interval": "1m"},
        "capture": {"new_objects_dir": "apps/captured"},
    }
    path = base / "rebuild.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def manual_changes(kube: Kube, applied: list[dict[str, Any]]) -> set[str]:
    """Five changes a person makes with kubectl; returns the objects capture must report."""
    deployments = [o for o in applied if o["kind"] == "Deployment"]
    cm = next(o for o in applied if o["kind"] == "ConfigMap")
    svc = next(o for o in applied if o["kind"] == "Service")
    ns0 = cm["metadata"]["namespace"]
    kube.patch(deployments[0], {"spec": {"replicas": 3}}, field_manager="kubectl", subresource="scale")
    kube.patch(deployments[1], {"metadata": {"labels": {"team": "x"}}}, field_manager="kubectl-label")
    kube.patch(cm, {"data": {"LOG_LEVEL": "debug"}}, field_manager="kubectl-patch")
    hotfix = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hotfix", "namespace": ns0}, "data": {"k": "v"}}
    kube.create(hotfix, field_manager="kubectl-create")
    kube.delete("v1", "Service", svc["metadata"]["name"], svc["metadata"]["namespace"])
    return {str(ObjectRef.of(o)) for o in (deployments[0], deployments[1], cm, hotfix, svc)}


def check_findings(run: CliRun, expected: set[str]) -> int:
    """The measured run did the whole job: exit 1 (drift) and every manual change found."""
    report = run.data["report"]
    found = {f["object"] for f in report["findings"]}
    missing = expected - found
    if run.returncode != 1 or missing:
        raise RuntimeError(f"capture exit {run.returncode}; manual changes not found: {sorted(missing)}")
    return len(report["findings"])


def phases(run: CliRun) -> dict[str, float]:
    """Where the CLI's wall time went, from its progress lines (seconds)."""
    m = run.marks(MARKS)
    fetch, desired, listing, drift = (m.get(p, 0.0) for p in MARKS)
    return {
        "start_and_publish": fetch,  # interpreter, imports, config, git server check, folder snapshot commit
        "fetch_and_render": round(desired - fetch, 3),  # git fetch + checkout, kustomize build, origins
        "to_list": round(listing - desired, 3),  # kubeconfig, client
        "list_and_drift": round(drift - listing, 3),  # readyz, discovery, LISTs, drift findings
        "backport_and_output": round(run.seconds - drift, 3),  # backport plan, diff, JSON, exit
    }


def profile(base: Path, env: dict[str, str], out: Path) -> tuple[float, int, str]:
    """The first (warm-up) run of the command, under pyinstrument: wall seconds (never used for
    ratios), exit code, the end of its stderr."""
    exe = shutil.which("pyinstrument", path=str(Path(REBUILD).parent))
    if exe is None:
        raise RuntimeError("--profile needs pyinstrument: .venv/bin/pip install pyinstrument")
    out = out.resolve()  # the command runs in the bench's folder, not here
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [exe, "-r", "text", "-o", str(out), REBUILD, *COMMAND], cwd=base, env=env, capture_output=True, text=True, timeout=7200
    )
    if not out.is_file():  # pyinstrument itself failed: its exit code says nothing about capture
        raise RuntimeError(f"the profiled run wrote no profile to {out}: {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - t0, proc.returncode, proc.stderr[-1500:]


def failed(
    case: dict[str, Any], seconds: float, returncode: int, stderr: str, floor: tuple[float, int], kdiff: float
) -> dict[str, Any]:
    """A capture run that did not do the job (exit other than 1): a result whose targets are missed, with why."""
    floor_s, listed = floor
    lines = [line for line in stderr.splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if line.startswith(("error", "Error"))), lines[-1] if lines else "")
    detail = next((line.strip() for line in lines if "failed" in line and not line.startswith("error")), "")
    ratio = round(seconds / floor_s, 2)
    name = f"{case['variant']}, {case['objects']} objects (the command failed)"
    targets = [
        Target(f"capture/LIST floor, {name}", ratio, "<=", FLOOR_TARGET, "issue 14"),
        Target(f"kubectl diff/capture, {name}", round(kdiff / seconds, 2), ">=", KDIFF_TARGET, "issue 14"),
    ]
    return {
        **case,
        "error": f"`rebuild {' '.join(COMMAND)}` exited {returncode} after {seconds:.1f}s: {error} {detail}".strip(),
        "stderr_tail": lines[-12:],
        "floor_seconds": round(floor_s, 3),
        "live_objects_listed_by_floor": listed,
        "capture_seconds": round(seconds, 3),
        "capture_vs_floor": ratio,
        "kubectl_diff_seconds": round(kdiff, 2),
        "kubectl_diff_vs_capture": round(kdiff / seconds, 2),
        # a command that fails meets no target, whatever its time until it failed
        "targets": [{**t.to_dict(), "passed": False} for t in targets] if case["objects"] >= TARGET_AT else [],
    }


def run(n: int, variant: str, rounds: int = 3, profile_dir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"rebuild-capture-{variant}-{n}-") as tmp:
        base = Path(tmp)
        repo = base / "repo"
        objs = generate(n, replicas=0)  # no Pods: keep the controllers quiet while measuring
        kustomize_alone: float | None = None  # `kubectl kustomize` of the kustomized repo, timed in setup
        if variant == "plain":
            write_repo(repo, objs, per_app=True)
            (repo / "rebuild.yaml").unlink()  # the bench's own rebuild.yaml lives beside the folder
            applied = objs
        else:
            t0 = time.perf_counter()
            applied = build(write_kustomized_repo(repo, objs))
            kustomize_alone = round(time.perf_counter() - t0, 2)
        manifests = base / "manifests.yaml"
        manifests.write_text(yaml.safe_dump_all(applied, sort_keys=False))
        write_config(base, repo)
        state = base / "state"
        env = cli_env(state)
        cluster = LocalCluster(CLUSTER, nodes=8, root=state, unsafe_fast_storage=True)
        kube: Kube | None = None
        try:
            cluster.create()
            kube = Kube.from_kubeconfig(cluster.kubeconfig())
            apply_all(kube, applied, "kustomize-controller")
            expected = manual_changes(kube, applied)
            settle(kube)
            cluster_kinds = {(ObjectRef.of(o).group, o["kind"]) for o in applied if not o["metadata"].get("namespace")}
            kinds = [(i.api_version, i.kind) for i in listed_kinds(kube, cluster_kinds)]
            load_before = load()
            case: dict[str, Any] = {
                "bench": "capture_scale",
                "variant": variant,
                "objects": n,
                "applied_objects": len(applied),
                "kubectl_kustomize_alone_seconds": kustomize_alone,
                "first_run_profiled": profile_dir is not None,
                "load_average": {"before": load_before},
                "command": f"cd <dir with rebuild.yaml> && REBUILD_STATE_DIR=<bench state> rebuild {' '.join(COMMAND)}",
            }
            # The first run starts rebuild's git server and clones the mirror; with --profile it
            # runs under pyinstrument (its time is then the profiled time).
            if profile_dir is not None:
                first_s, rc, err = profile(base, env, profile_dir / f"capture-{variant}-{n}.txt")
            else:
                first = run_cli(COMMAND, env=env, cwd=base, ok=(0, 1, 2), timeout=7200)
                first_s, rc, err = first.seconds, first.returncode, "\n".join(line for _, line in first.stderr)
            if rc != 1:  # not "drift found": the command failed; rounds would fail the same way
                case["load_average"]["after"] = load()
                floor = list_floor(kube, kinds)
                return failed(case, first_s, rc, err, floor, kubectl_diff(cluster.kubeconfig(), manifests))
            floors: list[tuple[float, int]] = []
            runs: list[CliRun] = []
            for _ in range(rounds):  # alternate: neither side benefits from a warmer cache
                floors.append(list_floor(kube, kinds))
                one = run_cli(COMMAND, env=env, cwd=base, ok=(0, 1, 2), timeout=7200)
                if one.returncode != 1:
                    case["load_average"]["after"] = load()
                    err = "\n".join(line for _, line in one.stderr)
                    kdiff = kubectl_diff(cluster.kubeconfig(), manifests)
                    return failed(case, one.seconds, one.returncode, err, floors[-1], kdiff)
                runs.append(one)
            best = min(runs, key=lambda r: r.seconds)
            findings = check_findings(best, expected)
            floor_s, listed = min(floors)
            t_kdiff = kubectl_diff(cluster.kubeconfig(), manifests)
            load_after = load()
            ratio = best.seconds / floor_s
            result: dict[str, Any] = {
                **case,
                "live_objects_listed_by_floor": listed,
                "live_objects_listed_by_capture": best.data["live_objects_listed"],
                "findings": findings,
                "files_in_diff": len(best.data.get("files", [])),
                "floor_seconds": round(floor_s, 3),
                "floor_all_seconds": [round(f, 3) for f, _ in floors],
                "capture_seconds": round(best.seconds, 3),
                "capture_all_seconds": [round(r.seconds, 3) for r in runs],
                "capture_first_run_seconds": round(first_s, 3),
                "capture_phases_seconds": phases(best),
                "capture_progress": [[round(t, 3), line] for t, line in best.stderr],
                "kubectl_diff_seconds": round(t_kdiff, 2),
                "capture_vs_floor": round(ratio, 2),
                "kubectl_diff_vs_capture": round(t_kdiff / best.seconds, 1),
                "load_average": {"before": load_before, "after": load_after},
                "targets": [],
            }
            if n >= TARGET_AT:
                result["targets"] = [
                    Target(
                        f"capture/LIST floor, {variant}, {n} objects", round(ratio, 2), "<=", FLOOR_TARGET, "issue 14"
                    ).to_dict(),
                    Target(
                        f"kubectl diff/capture, {variant}, {n} objects",
                        round(t_kdiff / best.seconds, 1),
                        ">=",
                        KDIFF_TARGET,
                        "issue 14",
                    ).to_dict(),
                ]
            return result
        finally:
            if kube is not None:
                kube.close()
            cluster.delete(purge=True)
            gitserver.stop_server(state / "gitserver")


def compare_variants(results: list[dict[str, Any]]) -> None:
    """Issue 10: at each size >= 10,000 measured in both layouts, kustomized ratio <= 1.3x plain ratio.
    A failed run counts with its time until failure, and the target is missed."""
    by = {(r["variant"], r["objects"]): r for r in results}
    for (variant, n), r in by.items():
        plain = by.get(("plain", n))
        if variant != "kustomized" or plain is None or n < TARGET_AT:
            continue
        rel = r["capture_vs_floor"] / plain["capture_vs_floor"]
        r["kustomized_vs_plain_ratio"] = round(rel, 2)
        broken = [v for v, x in (("plain", plain), ("kustomized", r)) if "error" in x]
        name = f"kustomized/plain capture-to-floor ratio, {n} objects" + (f" ({' and '.join(broken)} failed)" if broken else "")
        t = Target(name, round(rel, 2), "<=", KUSTOMIZED_TARGET, "issue 10")
        r["targets"].append({**t.to_dict(), "passed": t.passed and not broken})


def text(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']} {r['objects']} objects: FAILED: {r['error']}")
        else:
            p = r["capture_phases_seconds"]
            lines.append(
                f"{r['variant']} {r['objects']} objects ({r['live_objects_listed_by_capture']} live objects listed by capture, "
                f"{r['findings']} findings; load {r['load_average']['before']} -> {r['load_average']['after']}):"
            )
            lines.append(
                f"  floor (bare LISTs) {r['floor_seconds']:.3f}s; `rebuild capture` {r['capture_seconds']:.3f}s "
                f"= {r['capture_vs_floor']:.2f}x floor (first run {r['capture_first_run_seconds']:.2f}s)"
            )
            lines.append("  capture wall time: " + ", ".join(f"{k} {v:.3f}s" for k, v in p.items()))
            lines.append(f"  kubectl diff {r['kubectl_diff_seconds']:.2f}s = {r['kubectl_diff_vs_capture']:.1f}x capture")
        for t in r["targets"]:
            lines.append("  " + Target(t["name"], t["value"], t["op"], t["limit"]).line())
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--variants", nargs="+", choices=["plain", "kustomized"], default=["plain", "kustomized"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None, help="run the first (untimed) run under pyinstrument, profile here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    results = [run(n, v, args.rounds, args.profile) for n in args.objects for v in args.variants]
    compare_variants(results)
    emit(results, args.json, text(results) + f"\n({time.monotonic() - t0:.0f}s)")


if __name__ == "__main__":
    main()
