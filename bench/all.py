"""`make bench`: every benchmark through the `rebuild` CLI, its targets asserted, docs/measurements.md rewritten.

Usage: .venv/bin/python -m bench.all [--quick] [--doc docs/measurements.md] [--no-doc] [--out DIR]

Runs each bench module as its own process (``python -m bench.X ... --json``; one crash does
not lose the others' numbers), collects their results and :class:`bench.common.Target`
verdicts, rewrites the generated blocks of docs/measurements.md (between
``<!-- bench:NAME begin -->`` and ``<!-- bench:NAME end -->``) with the numbers, the machine
load and the exact commands, writes the raw results to ``--out``/results.json (and the
pyinstrument profiles of `rebuild capture` beside it), and exits 1 naming every missed
target or failed bench. ``--quick`` runs small sizes (for development: no targets apply
there, and the doc is not rewritten unless ``--doc`` is given).

Not run: bench/list_clients.py, a comparison of Kubernetes client libraries (a dependency
choice, not a rebuild command; it needs the ``[bench]`` extras): run it by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import helm_releases

ROOT = Path(__file__).resolve().parent.parent
PY = ".venv/bin/python"

# (module, arguments at full size, arguments with --quick)
STEPS: list[tuple[str, list[str], list[str]]] = [
    # 10,000 objects first (the targets): one timed round after the (profiled) first run, since
    # kustomize's build of 10,000 objects alone takes minutes here (docs/measurements.md says why).
    ("capture_scale", ["--objects", "10000", "--rounds", "1"], ["--objects", "300", "--rounds", "1"]),
    ("capture_scale", ["--objects", "1000", "--rounds", "3"], ["--objects", "200", "--rounds", "2"]),
    ("cluster_start", ["--runs", "5"], ["--runs", "1"]),
    ("rebuild_scale", ["--objects", "200", "1000"], ["--objects", "100"]),
    ("stacks", ["--configmaps", "15", "--rounds", "3"], ["--configmaps", "3", "--rounds", "1"]),
    ("helm_releases", ["--releases", "20", "--rounds", "2"], ["--releases", "4", "--charts", "2", "--rounds", "1"]),
]


def run_step(module: str, args: list[str], out: Path) -> tuple[list[dict[str, Any]], str]:
    """One bench module; its results and an error ("" when it ran; exit 1 = a missed target, still results)."""
    argv = [PY, "-m", f"bench.{module}", *args, "--json"]
    if module == "capture_scale":
        argv += ["--profile", os.path.relpath(out / "profiles", ROOT)]
    print(f"bench: {' '.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    print(f"bench: {module} exit {proc.returncode} after {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    try:
        results = json.loads(proc.stdout)
    except ValueError:
        return [], f"bench.{module} {' '.join(args)} failed (exit {proc.returncode}); see its stderr above"
    for r in results:
        r["argv"] = " ".join(argv)
        r["measured_at"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return results, ""


def _s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f} s"


def _n(x: int) -> str:
    return f"{x:,}"


def _load(r: dict[str, Any]) -> str:
    return f"{r['load_average']['before'][0]:.1f} / {r['load_average']['after'][0]:.1f}"


def block_cluster_start(results: list[dict[str, Any]]) -> str:
    (r,) = results
    lines = [
        f"`{r['argv']}`. Each run: `{r['command']}`, timed from spawn",
        "to exit; then a 3-replica Deployment applied and timed to Available; then `rebuild cluster down",
        f"--purge`. Machine load (1-min average) before / after: {_load(r)}.",
        "",
        "| run | `rebuild cluster up` (spawn to exit) | Deployment (3 replicas) to Available |",
        "|---|---|---|",
    ]
    for i, run in enumerate(r["runs"]):
        lines.append(f"| {i} | {_s(run['start_seconds'])} | {_s(run['deployment_available_seconds'])} |")
    lines.append(f"| **median** | **{_s(r['median_start_seconds'])}** | **{_s(r['median_deployment_available_seconds'])}** |")
    lines.append("")
    lines.append("No target is set for these two numbers; they are reported.")
    return "\n".join(lines)


def block_rebuild_scale(results: list[dict[str, Any]]) -> str:
    lines = [
        f"`{results[0]['argv']}`; the measured command, per size: `{results[0]['command']}`.",
        "",
        "| objects | floor | up phases (desired / cluster / platform / reconciler / verify) | bootstrap to verified "
        "| with platform | `rebuild up` spawn to exit | load before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["phases"]
        ph = " / ".join(f"{p.get(k, 0):.2f}" for k in ("desired", "cluster", "platform", "reconciler", "verify"))
        lines.append(
            f"| {_n(r['objects'])} | {_s(r['floor_seconds'])} | {ph} s | {_s(r['bootstrap_to_verified_seconds'])} = "
            f"**{r['ratio']:.2f}x** | {_s(r['platform_to_verified_seconds'])} = {r['ratio_with_platform']:.2f}x "
            f"| {_s(r['cli_wall_seconds'])} = {r['cli_wall_vs_floor']:.2f}x | {_load(r)} |"
        )
    lines += ["", *targets_lines(results)]
    return "\n".join(lines)


def block_stacks(results: list[dict[str, Any]]) -> str:
    (r,) = results
    f, s, c = r["first_up"], r["second_up"], r["concurrency"]
    names = list(dict.fromkeys([*f["phases"], *s["phases"]]))
    lines = [
        f"`{r['argv']}`; the measured command: `{r['command']}`. Machine load (1-min average) before / after: {_load(r)}.",
        "",
        f"| phase | first `up` (creates the cluster; {f['verified']}/{f['objects']} verified) | second `up` |",
        "|---|---|---|",
    ]
    for name in names:
        a, b = f["phases"].get(name), s["phases"].get(name)
        lines.append(f"| {name} | {_s(a)} | {_s(b)} |")
    lines += [
        f"| **total** (`rto_seconds`, overlapping phases once) | **{_s(f['rto_seconds'])}** | **{_s(s['rto_seconds'])}** |",
        f"| `rebuild up` spawn to exit | {_s(f['cli_wall_seconds'])} | {_s(s['cli_wall_seconds'])} |",
        "",
        f"Second `up` changed nothing: {'yes' if s['nothing_changed'] else 'no: ' + json.dumps(s['changes'])}.",
        "",
        f"Two independent Pulumi YAML stacks of {r['configmaps_per_stack']} ConfigMaps each, on the same cluster "
        f"(median of {r['rounds']} round(s); every round new stack names, so new resources; odd rounds run (b) before (a)):",
        "",
        "| run | stack phase (median) | each round (s) |",
        "|---|---|---|",
    ]
    runs = c["runs"]
    lines.append(
        f"| (a) bench-a alone | {_s(c['a_alone_seconds'])} | "
        + ", ".join(f"{x['a_alone']['phases']['stack:bench-a']:.2f}" for x in runs)
        + " |"
    )
    lines.append(
        f"| (b) bench-b alone | {_s(c['b_alone_seconds'])} | "
        + ", ".join(f"{x['b_alone']['phases']['stack:bench-b']:.2f}" for x in runs)
        + " |"
    )
    lines.append(
        f"| (c) both at once: wall time of the two phases | **{_s(c['together_wall_seconds'])}** "
        f"= **{c['ratio']:.2f}x** the slower alone (their seconds summed: {_s(c['together_sum_seconds'])}) | "
        + ", ".join(f"{x['together']['stacks_wall_seconds']:.2f}" for x in runs)
        + " |"
    )
    if all("ratio" in x["together"] for x in runs):
        lines.append(
            "| (c) / the slower of (a) and (b), round by round | - | "
            + ", ".join(f"{x['together']['ratio']:.2f}x" for x in runs)
            + " |"
        )
    lines += ["", f"(c)'s wall time from: {c['wall_from']}.", "", *targets_lines(results)]
    return "\n".join(lines)


def block_capture_scale(results: list[dict[str, Any]]) -> str:
    results = sorted(results, key=lambda r: (r["objects"], r["variant"] != "plain"))
    argvs = sorted({r["argv"].replace(f"{ROOT}/", "") for r in results})
    lines = [
        "Commands: " + "; ".join(f"`{a}`" for a in argvs) + f". The measured command: `{results[0]['command']}`.",
        "",
        "| layout | objects (live, listed) | LIST floor | `rebuild capture` (best; all runs) | vs floor "
        "| kubectl diff | kubectl diff / capture | first run | load before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            why = next((x.strip() for x in r.get("stderr_tail", []) if "failed:" in x and x.strip() not in r["error"]), "")
            head = f"| {r['variant']} | {_n(r['objects'])} | {_s(r['floor_seconds'], 3)} | **failed**: {r['error']} {why} "
            if "kubectl_diff_seconds" in r:
                tail = (
                    f"| {r['capture_vs_floor']:.0f}x (until it failed) | {_s(r['kubectl_diff_seconds'])} "
                    f"| {r['kubectl_diff_vs_capture']:.2f}x (until it failed) | - | {_load(r)} |"
                )
            else:
                tail = f"| {r['capture_vs_floor']:.0f}x (until it failed) | not run | - | - | {_load(r)} |"
            lines.append(head + tail)
            continue
        first = _s(r["capture_first_run_seconds"]) + (" (profiled)" if r.get("first_run_profiled") else "")
        all_runs = ", ".join(f"{x:.2f}" for x in r["capture_all_seconds"])
        lines.append(
            f"| {r['variant']} | {_n(r['objects'])} ({_n(r['live_objects_listed_by_capture'])}) | {_s(r['floor_seconds'], 3)} "
            f"| {_s(r['capture_seconds'])} ({all_runs}) | **{r['capture_vs_floor']:.1f}x** | {_s(r['kubectl_diff_seconds'])} "
            f"| **{r['kubectl_diff_vs_capture']:.2f}x** | {first} | {_load(r)} |"
        )
    lines += [
        "",
        "Where the command's wall time goes (best run; from the times its progress lines appeared on stderr):",
        "",
        "| layout | objects | start, config, publish the folder | git fetch + kustomize render + origins | client "
        "| LISTs + drift | backport plan + diff + JSON | `kubectl kustomize` alone (setup) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            continue
        p = r["capture_phases_seconds"]
        lines.append(
            f"| {r['variant']} | {_n(r['objects'])} | {_s(p['start_and_publish'])} | {_s(p['fetch_and_render'])} "
            f"| {_s(p['to_list'])} | {_s(p['list_and_drift'])} | {_s(p['backport_and_output'])} "
            f"| {_s(r.get('kubectl_kustomize_alone_seconds'))} |"
        )
    lines += ["", *targets_lines(results)]
    return "\n".join(lines)


def targets_lines(results: list[dict[str, Any]]) -> list[str]:
    ts = [t for r in results for t in r.get("targets", [])]
    if not ts:
        return ["No target applies at these sizes."]
    out = ["| target | measured | required | verdict |", "|---|---|---|---|"]
    for t in ts:
        verdict = "met" if t["passed"] else "**MISSED**"
        out.append(f"| {t['name']} ({t['why']}) | {t['value']:g} | {t['op']} {t['limit']:g} | {verdict} |")
    return out


def block_summary(all_results: list[dict[str, Any]], errors: list[str]) -> str:
    times = sorted(r.get("measured_at", "") for r in all_results if r.get("measured_at"))
    loads = [r["load_average"][w][0] for r in all_results for w in ("before", "after") if "load_average" in r]
    span = f"{times[0]} to {times[-1]}" if times else "(no results)"
    lines = [
        f"Last `make bench`: results measured {span} on {platform.node() or 'this machine'} ({os.cpu_count()} cores);",
        f"1-minute load average during the runs {min(loads, default=0):.1f} to {max(loads, default=0):.1f}: other engineers'",
        "builds and tests were running, so every number carries that noise. Raw results: bench/results/results.json.",
        "",
        *targets_lines(all_results),
    ]
    for e in errors:
        lines.append(f"\nFAILED: {e}")
    return "\n".join(lines)


def rewrite(doc: Path, blocks: dict[str, str]) -> None:
    """Replace each generated block of the doc; a missing marker pair is an error (never a silent skip)."""
    text = doc.read_text()
    for name, body in blocks.items():
        pat = re.compile(rf"(<!-- bench:{name} begin[^>]*-->\n).*?(<!-- bench:{name} end -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"{doc}: no <!-- bench:{name} begin --> ... <!-- bench:{name} end --> markers")
        text = pat.sub(lambda m, b=body: m.group(1) + b.rstrip("\n") + "\n" + m.group(2), text)  # type: ignore[misc]
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (development); the doc is left alone unless --doc")
    ap.add_argument("--doc", type=Path, default=None, help="doc to rewrite (default: docs/measurements.md, not with --quick)")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--only", nargs="+", default=None, help="run only these modules; the others' results are kept from --out/results.json"
    )
    ap.add_argument("--sizes", nargs="+", default=None, help="run only the capture_scale steps of these --objects sizes")
    ap.add_argument("--render-only", action="store_true", help="rewrite the doc from --out/results.json; run nothing")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        "bench: bench.list_clients is not run by make bench (client-library comparison, needs the [bench] extras): "
        "run `.venv/bin/python -m bench.list_clients` by hand",
        file=sys.stderr,
    )
    by_module: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []
    rerun: set[tuple[str, int]] = set()
    for module, full, quick in STEPS:
        if args.render_only or (args.only and module not in args.only):
            continue
        if args.sizes and module == "capture_scale" and full[full.index("--objects") + 1] not in args.sizes:
            continue
        results, error = run_step(module, quick if args.quick else full, args.out)
        by_module.setdefault(module, []).extend(results)
        rerun.update((module, r.get("objects", 0)) for r in results)
        if error:
            errors.append(error)
    if (args.only or args.sizes or args.render_only) and (args.out / "results.json").exists():
        for r in json.loads((args.out / "results.json").read_text()):  # keep the last results of what was not rerun
            if (r["bench"], r.get("objects", 0)) not in rerun:
                by_module.setdefault(r["bench"], []).append(r)
    # issue 10's comparison needs both layouts of the same size: done inside each capture_scale run.
    all_results = [r for rs in by_module.values() for r in rs]
    (args.out / "results.json").write_text(json.dumps(all_results, indent=2) + "\n")
    doc = args.doc or (None if args.quick or args.no_doc else ROOT / "docs" / "measurements.md")
    if doc is not None and not args.no_doc:
        blocks = {"summary": block_summary(all_results, errors)}
        renderers = {
            "cluster_start": block_cluster_start,
            "rebuild_scale": block_rebuild_scale,
            "capture_scale": block_capture_scale,
            "stacks": block_stacks,
            "helm_releases": helm_releases.block,
        }
        for module, results in by_module.items():
            if results:
                blocks[module] = renderers[module](results)
        rewrite(doc, blocks)
        print(f"bench: rewrote {doc}", file=sys.stderr)
    missed = [t for r in all_results for t in r.get("targets", []) if not t["passed"]]
    for t in missed:
        print(f"bench: target missed: {t['name']}: {t['value']:g}, required {t['op']} {t['limit']:g} ({t['why']})")
    for e in errors:
        print(f"bench: {e}")
    met = sum(1 for r in all_results for t in r.get("targets", []) if t["passed"])
    print(f"bench: {met} target(s) met, {len(missed)} missed, {len(errors)} bench(es) failed")
    sys.exit(1 if missed or errors else 0)


if __name__ == "__main__":
    main()
