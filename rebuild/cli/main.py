"""Command line: parse, call one stage, render its result, choose the exit code.

Exit codes (like ``flux diff``): 0 converged / no drift / passed, 1 not converged /
drift found / failed, 2 error (bad input, missing tool, unreachable service). Every
``RebuildError`` becomes one line plus its fix on stderr and exit 2: no tracebacks for
problems a user can act on (set REBUILD_DEBUG=1 to see one anyway).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from rebuild import __version__
from rebuild.core.errors import ConfigError, Interrupted, RebuildError

EXIT_OK, EXIT_FAIL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class Ctx:
    def __init__(self, output: str, config: Path | None, state_dir: Path | None) -> None:
        self.output = output
        self.config = config
        if state_dir is not None:
            self.set_state_dir(state_dir)

    def set_state_dir(self, state_dir: Path) -> None:
        # Through the environment: every stage (and the Pulumi programs rebuild runs) reads it there.
        os.environ["REBUILD_STATE_DIR"] = str(state_dir.expanduser().resolve())

    @property
    def json(self) -> bool:
        return self.output == "json"

    def progress(self, msg: str) -> None:
        """Progress goes to stderr so stdout stays machine-readable; quiet in CI unless asked."""
        if self.json and not sys.stderr.isatty() and os.environ.get("CI"):
            return
        click.echo(f"· {msg}", err=True)

    def emit(self, data: Any, text: Callable[[], str]) -> None:
        if self.json:
            click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
        else:
            click.echo(text())


def fail(err: RebuildError) -> NoReturn:
    click.echo(f"error: {err.message}", err=True)
    if err.fix:
        click.echo(f"  fix: {err.fix}", err=True)
    sys.exit(EXIT_ERROR)


# --------------------------------------------------------------------------- global options
# `-o`, `--config` and `--state-dir` are accepted before the command (options of the group)
# and after it (kubectl and flux style). They are defined once, here: every command added to a
# group of this CLI gets them, and a value given after the command wins over one given before.

_OUTPUT = click.Choice(["text", "json"])
_HELP = {
    "output": "Result format on stdout.",
    "config": "rebuild.yaml (default: ./rebuild.yaml).",
    "state_dir": "Where clusters, stack state and run records live (default $REBUILD_STATE_DIR or ~/.local/state/rebuild).",
}


def _apply_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Callback of a global option given after a command: it overrides the group's value."""
    if value is None or ctx.resilient_parsing:
        return
    obj = ctx.find_object(Ctx)
    if obj is None:  # a command invoked on its own (no group ran before it)
        obj = ctx.obj = Ctx("text", None, None)
    if param.name == "output":
        obj.output = value
    elif param.name == "config":
        obj.config = value
    elif param.name == "state_dir":
        obj.set_state_dir(value)


def global_options() -> list[click.Parameter]:
    """The three global options as a command's own (default None: only a given value overrides)."""
    common: dict[str, Any] = {"default": None, "expose_value": False, "callback": _apply_global}
    return [
        click.Option(["-o", "--output"], type=_OUTPUT, help=_HELP["output"], **common),
        click.Option(["--config"], type=click.Path(path_type=Path), help=_HELP["config"], **common),
        click.Option(["--state-dir"], type=click.Path(path_type=Path), help=_HELP["state_dir"], **common),
    ]


class GlobalOptionsGroup(click.Group):
    """A group whose commands (and sub-groups, recursively) all accept the global options."""

    # sub-groups made with @group.group() are of this same class
    group_class: type[click.Group] | type[type] | None = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        have = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        cmd.params.extend(p for p in global_options() if not have & set(p.opts))
        super().add_command(cmd, name)


class Group(GlobalOptionsGroup):
    """Turns our errors into exit 2 with one clear line, everywhere."""

    group_class: type[click.Group] | type[type] | None = GlobalOptionsGroup

    def invoke(self, ctx: click.Context) -> Any:
        # A scheduler's (or runbook's) SIGTERM stops a run the way Ctrl-C does: cleanly.
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except Interrupted as err:
            click.echo(f"interrupted: {err.message}", err=True)
            if err.fix:
                click.echo(f"  fix: {err.fix}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except RebuildError as err:
            if os.environ.get("REBUILD_DEBUG"):
                traceback.print_exc()
            fail(err)
        except KeyboardInterrupt:
            click.echo("interrupted: stopped before finishing; nothing was left half-written", err=True)
            click.echo("  fix: rerun the same command to continue", err=True)
            sys.exit(EXIT_INTERRUPTED)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.group(cls=Group, epilog="-o, --config and --state-dir are accepted before or after the command.")
@click.option("-o", "--output", type=_OUTPUT, default="text", help=_HELP["output"])
@click.option("--config", type=click.Path(path_type=Path), default=None, help=_HELP["config"])
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=_HELP["state_dir"])
@click.version_option(__version__, prog_name="rebuild")
@click.pass_context
def main(ctx: click.Context, output: str, config: Path | None, state_dir: Path | None) -> None:
    """rebuild: Kubernetes disaster recovery from git."""
    ctx.obj = Ctx(output, config, state_dir)


# --------------------------------------------------------------------------- toolchain


@main.group()
def toolchain() -> None:
    """Build, cache and check the external tools (pulumi, kube-apiserver, etcd, kwok...)."""


@toolchain.command("install")
@click.option("--only", multiple=True, help="Install only these tools, core or optional (NAME,NAME or repeated).")
@click.option(
    "--with",
    "with_",
    multiple=True,
    help="Also install these optional tools (sops, age, helm-controller, pulumi-language-yaml, seaweedfs; 'optional' = all).",
)
@click.pass_obj
def toolchain_install(obj: Ctx, only: tuple[str, ...], with_: tuple[str, ...]) -> None:
    """Build every pinned core tool that is not cached yet (idempotent; fast when warm).

    Optional tools (``optional = true`` in versions.toml) only with --with or --only."""
    from rebuild.toolchain import tools as tc

    t = tc.Toolchain()
    built = tc.install(t, progress=obj.progress, only=t.select(only, with_))
    obj.emit(
        {"cache": str(t.root), "built": built},
        lambda: f"toolchain ready in {t.root}" + (f" (built: {', '.join(built)})" if built else " (all cached)"),
    )


@toolchain.command("doctor")
@click.pass_obj
def toolchain_doctor(obj: Ctx) -> None:
    """List each tool, version, path and OK/missing; exit 0 only when all are present."""
    from rebuild.toolchain import tools as tc

    t = tc.Toolchain()
    rows = t.status()
    # Optional tools are listed with their state but never make the toolchain "not ok".
    ok = all(r.present for r in rows if not r.optional)

    def line(r: tc.ToolStatus, width: int) -> str:
        state = "OK     " if r.present else ("not installed" if r.optional else "MISSING")
        out = f"{r.name:<{width}}  {r.version:<10}  {state}  {r.path}"
        if r.detail:
            out += f"\n{'':<{width}}  note: {r.detail}"
        if r.optional and not r.present:
            out += f"\n{'':<{width}}  install: {t.install_hint(r.tool)}"
        return out

    def text() -> str:
        width = max(len(r.name) for r in rows)
        lines = [line(r, width) for r in rows if not r.optional]
        lines.append("")
        lines.append("all tools present" if ok else "some tools are missing: run `rebuild toolchain install`")
        lines += ["", "optional tools (not part of a plain install; `--with optional` installs them all):"]
        lines += [line(r, width) for r in rows if r.optional]
        return "\n".join(lines)

    obj.emit({"ok": ok, "tools": [{**r.__dict__, "path": str(r.path)} for r in rows]}, text)
    sys.exit(EXIT_OK if ok else EXIT_ERROR)


# --------------------------------------------------------------------------- cluster


@main.group()
def cluster() -> None:
    """Create, stop and inspect clusters (providers: local, kind, kubeconfig)."""


def _cluster_opts(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--name", required=True, help="Cluster name (one data folder per name).")(f)
    f = click.option("--provider", default="local", show_default=True, help="local | kind | kubeconfig")(f)
    f = click.option("--context", default=None, help="kubeconfig context (provider kubeconfig; default: the current one).")(f)
    return f


@cluster.command("up")
@_cluster_opts
@click.option("--nodes", default=1, show_default=True, type=int, help="kwok nodes (local) or nodes (kind).")
@click.option("--api-port", type=int, default=None, help="API server port (default: a free one).")
@click.option("--unsafe-fast-storage", is_flag=True, help="etcd without fsync: throwaway clusters only.")
@click.pass_obj
def cluster_up(
    obj: Ctx, name: str, provider: str, nodes: int, api_port: int | None, context: str | None, unsafe_fast_storage: bool
) -> None:
    """Create (or restart) a cluster and wait until it is ready."""
    from rebuild.clusters import get_cluster
    from rebuild.clusters.base import check_state_dir
    from rebuild.core.state import state_root

    if provider == "local":
        check_state_dir(state_root(), "cluster")
    c = get_cluster(provider, name, nodes=nodes, api_port=api_port, context=context, unsafe_fast_storage=unsafe_fast_storage)
    st = c.create(progress=obj.progress)
    obj.emit(
        st.to_dict(),
        lambda: f"cluster {st.name} ({st.provider}) {st.state} at {st.server}\nexport KUBECONFIG={st.kubeconfig}",
    )


@cluster.command("down")
@_cluster_opts
@click.option("--purge", is_flag=True, help="Also delete the cluster's data (etcd, certificates).")
@click.pass_obj
def cluster_down(obj: Ctx, name: str, provider: str, context: str | None, purge: bool) -> None:
    """Stop every process of a cluster (keeps its data unless --purge), and the state dir's
    git server when no other running cluster of the state dir uses it."""
    from rebuild.clusters import get_cluster, release_gitserver

    c = get_cluster(provider, name, context=context)
    c.delete(purge=purge)
    gs = release_gitserver()

    def text() -> str:
        line = f"cluster {name} stopped" + (" and its data deleted" if purge else " (data kept; `up` restarts it)")
        if gs.stopped:
            line += "\ngit server stopped (no running cluster of this state dir uses it)"
        elif gs.used_by:
            line += f"\ngit server kept: still used by cluster(s) {', '.join(gs.used_by)}"
        return line

    obj.emit({"name": name, "provider": provider, "stopped": True, "purged": purge, "gitserver": gs.to_dict()}, text)


@cluster.command("status")
@_cluster_opts
@click.pass_obj
def cluster_status(obj: Ctx, name: str, provider: str, context: str | None) -> None:
    """Show a cluster's state and components; exit 0 only when running."""
    from rebuild.adapters import gitserver
    from rebuild.clusters import get_cluster
    from rebuild.core.state import state_root

    st = get_cluster(provider, name, context=context).status()
    gs = gitserver.server_info(state_root() / "gitserver")

    def text() -> str:
        lines = [f"cluster {st.name} ({st.provider}): {st.state}" + (f" at {st.server}" if st.server else "")]
        for comp in st.components:
            lines.append(f"  {comp.name:<24} {'up  ' if comp.alive else 'down'}  pid={comp.pid or '-'}")
        if gs is not None:
            lines.append(f"git server of the state dir: {'up  ' if gs.alive else 'down'}  pid={gs.pid or '-'}  {gs.url}")
        return "\n".join(lines)

    obj.emit({**st.to_dict(), "gitserver": gs.to_dict() if gs else None}, text)
    sys.exit(EXIT_OK if st.state == "running" else EXIT_FAIL)


# --------------------------------------------------------------------------- plan / up / verify


def _context(obj: Ctx, need: str = "read") -> Any:
    """Config and state dir for a command; ``need="cluster"`` for commands that may create one."""
    from rebuild.clusters.base import check_state_dir
    from rebuild.core import config as cfgmod
    from rebuild.core.state import state_root
    from rebuild.recover.context import Context

    cfg = cfgmod.load(obj.config)
    root = state_root()
    check_state_dir(root, need)
    return Context(cfg, root, progress=obj.progress)


def _revisions(values: tuple[str, ...], ctx: Any) -> dict[str, str]:
    """--revision SHA (every source) or --revision NAME=SHA."""
    out: dict[str, str] = {}
    names = [s.name for s in ctx.config.sources]
    for v in values:
        name, sep, sha = v.partition("=")
        if not sep:
            name, sha = "", v
        if name and name not in names:
            raise ConfigError(f"--revision names source {name!r}, which rebuild.yaml does not have", fix=f"use one of {names}")
        for n in [name] if name else names:
            out[n] = sha
    return out


def _verify_text(report: Any) -> list[str]:
    s = report.summary()
    lines = [
        f"verify: {s['verified']}/{s['objects']} objects verified "
        f"({s['missing']} missing, {s['drifted']} drifted, {s['unhealthy']} not healthy) "
        f"after {report.seconds:.1f}s"
    ]
    for v in report.failing:
        lines.extend(f"  {p}" for p in v.problems())
    return lines


@main.command("plan")
@click.option("--revision", multiple=True, help="Commit to plan for: SHA (all sources) or SOURCE=SHA.")
@click.pass_obj
def plan_cmd(obj: Ctx, revision: tuple[str, ...]) -> None:
    """Show what `up` would do: stack previews, the desired objects by kind and namespace, the order. Changes nothing."""
    from rebuild.recover.plan import plan

    ctx = _context(obj)
    res = plan(ctx, _revisions(revision, ctx))

    def text() -> str:
        lines = ["sources:"]
        for source in res.desired.sources:
            lines += source.describe()
        lines.append("stacks:")
        for p in res.previews:
            lines.append(f"  {p['stack']}: {p.get('note') or p['changes']}")
        lines.append(f"objects: {len(res.desired.objects)}")
        for row in res.desired.inventory():
            lines.append(f"  {row['count']:4d}  {row['kind']:<28} {row['namespace']}")
        lines.append("apply order:")
        for row in res.order:
            lines.append(f"  {row['rank']:2d} {row['phase']:<20} {row['count']:4d}  {row['reason']}")
        return "\n".join(lines)

    obj.emit(res.to_dict(), text)


@main.command("up")
@click.option("--revision", multiple=True, help="Commit to rebuild: SHA (all sources) or SOURCE=SHA (default: branch head).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for convergence (default: verify.timeout).")
@click.pass_obj
def up_cmd(obj: Ctx, revision: tuple[str, ...], timeout: float | None) -> None:
    """Rebuild: cluster stack, platform stack, reconciler bootstrap, verify; every phase timed."""
    from rebuild.recover.up import up

    ctx = _context(obj, "cluster")
    res = up(ctx, _revisions(revision, ctx), verify_timeout=timeout)

    def text() -> str:
        lines = [f"rebuild up {ctx.config.cluster.name}: {'CONVERGED' if res.converged else 'NOT CONVERGED'}"]
        if res.nothing_changed and res.converged:
            lines.append("nothing changed: the cluster already matched git")
        lines.append(res.phases.table())
        if res.report:
            lines += _verify_text(res.report)
        if not res.converged:
            lines.append(f"next: rebuild verify --config {ctx.config.path}   (details per object)")
        return "\n".join(lines)

    obj.emit(res.to_dict(), text)
    sys.exit(EXIT_OK if res.converged else EXIT_FAIL)


@main.command("verify")
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait for convergence (default: verify.timeout; 0: check once)."
)
@click.option("--revision", multiple=True, help="Verify against this commit instead of the branch head.")
@click.pass_obj
def verify_cmd(obj: Ctx, timeout: float | None, revision: tuple[str, ...]) -> None:
    """Is the cluster exactly what git declares, and healthy? Exit 0 converged, 1 not."""
    from rebuild.recover.context import live_kube
    from rebuild.recover.converge import wait_converged
    from rebuild.recover.sources import load_desired

    ctx = _context(obj)
    desired = load_desired(ctx, _revisions(revision, ctx))
    kube = live_kube(ctx)
    try:
        report = wait_converged(kube, desired.objects, ctx.config.verify, timeout=timeout, progress=obj.progress)
    finally:
        kube.close()
    data = {"sources": [s.to_dict() for s in desired.sources], **report.to_dict()}
    obj.emit(data, lambda: "\n".join(_verify_text(report)))
    sys.exit(EXIT_OK if report.converged else EXIT_FAIL)


# --------------------------------------------------------------------------- capture


@main.command("capture")
@click.option("--dry-run", is_flag=True, help="Print the diff of the files and the PR text; push nothing.")
@click.option("--include-deletions", is_flag=True, help="Remove objects deleted live from git (default: list them in the PR).")
@click.pass_obj
def capture_cmd(obj: Ctx, dry_run: bool, include_deletions: bool) -> None:
    """Backport manual changes in the live cluster to git as one pull request. Exit 0 no drift, 1 drift."""
    from rebuild.capture.run import capture

    ctx = _context(obj)
    res = capture(ctx, dry_run=dry_run, include_deletions=include_deletions)
    data = res.to_dict()
    if dry_run:
        data["diff"] = res.diff
        data["body"] = res.backport.body if res.drift else ""

    def text() -> str:
        if not res.drift:
            return f"no drift: the live cluster matches git ({res.report.coverage.summary()})"
        lines = [f.message() for f in res.report.findings]
        if dry_run:
            lines += ["", res.diff, f"title: {res.backport.title}", "", res.backport.body]
        elif res.action == "nothing-to-write":
            lines += [f"not written: {x}" for x in res.backport.listed]
            lines.append("no pull request: none of these changes can be written to git (act on them by hand)")
        else:
            pr = res.pr or {}
            lines.append(f"pull request {res.action}: {pr.get('url', '')} (branch {pr.get('head', '')})")
        lines.append(res.report.coverage.summary())
        return "\n".join(lines)

    obj.emit(data, text)
    sys.exit(EXIT_FAIL if res.drift else EXIT_OK)


# --------------------------------------------------------------------------- drill


@main.command("drill")
@click.option("--revision", multiple=True, help="Commit to rebuild: SHA (all sources) or SOURCE=SHA (default: branch head).")
@click.option("--name", default=None, help="Throwaway cluster name (default: drill-<random>).")
@click.option("--keep", is_flag=True, help="Leave the drill cluster running (no teardown).")
@click.option("--live", is_flag=True, help="First count manual changes in the live cluster of rebuild.yaml not yet in git (RPO).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for convergence (default: verify.timeout).")
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write result.json, report.md, junit.xml, report.html (default: <state>/drills/<time>-<cluster>).",
)
@click.option(
    "--history",
    "history_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Drill history, JSON lines (default: <state>/drills/history.jsonl).",
)
@click.option(
    "--notify",
    "notify_url",
    envvar="REBUILD_NOTIFY_URL",
    default=None,
    metavar="URL",
    help="POST a Slack-compatible summary to this webhook (or set $REBUILD_NOTIFY_URL, better in CI).",
)
@click.pass_obj
def drill(
    obj: Ctx,
    revision: tuple[str, ...],
    name: str | None,
    keep: bool,
    timeout: float | None,
    report_dir: Path | None,
    history_file: Path | None,
    notify_url: str | None,
    live: bool,
) -> None:
    """Rebuild git into a throwaway cluster, verify, time every phase, tear down. Exit 0 passed, 1 failed."""
    from rebuild.drills import history
    from rebuild.drills.drill import report_dir as default_report_dir
    from rebuild.drills.drill import run_drill
    from rebuild.drills.notify import NotifyError, notify

    ctx = _context(obj, "cluster")
    res = run_drill(ctx, revisions=_revisions(revision, ctx), name=name, keep=keep, verify_timeout=timeout, live=live)
    data = res.to_dict()
    paths = _write_run_reports(
        obj, data, report_dir or default_report_dir(ctx.root, res), history_file or history.default_path(ctx.root)
    )
    notify_error: NotifyError | None = None
    if notify_url:
        try:
            notify(notify_url, data, report_path=paths["html"], progress=obj.progress)
        except NotifyError as err:
            notify_error = err

    def text() -> str:
        lines = [f"drill {res.cluster}: {'PASSED' if res.passed else 'FAILED'}", res.phases.table()]
        lines.append(f"RTO {data['rto_seconds']:.1f}s; revision age {data['rpo']['revision_age_seconds']}s")
        lines += [f"  {f['object']}  {f['source']}: {f['message']}" for f in res.failures]
        if res.error:
            lines.append(f"error: {res.error}")
        lines.append(f"reports: {paths['markdown']}, {paths['junit']}, {paths['json']}")
        lines.append(f"report: {paths['html']}")  # last line: the page to open
        return "\n".join(lines)

    obj.emit({**data, "reports": {k: str(v) for k, v in paths.items()}}, text)
    if notify_error is not None:
        click.echo(f"error: {notify_error.message}", err=True)
        if notify_error.fix:
            click.echo(f"  fix: {notify_error.fix}", err=True)
    sys.exit(EXIT_ERROR if notify_error is not None and res.passed else EXIT_OK if res.passed else EXIT_FAIL)


# --------------------------------------------------------------------------- runbook
# (paste into rebuild/cli.py after the drill command; needs only the imports cli.py already has)


def _param_pairs(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {v!r} is not NAME=VALUE", fix="e.g. --param config=prod/rebuild.yaml")
        out[name] = value
    return out


def _write_run_reports(obj: Ctx, result: dict[str, Any], out: Path, history_path: Path | None) -> dict[str, Path]:
    """The four reports of a run; the history (when given) is read for the trend, then appended (once per run)."""
    from rebuild.drills import history, report

    past = history.load(history_path, warn=lambda m: obj.progress(f"history: {m}")) if history_path else []
    problems = report.validate_result(result)
    if problems:  # still reported (reports are lenient), but kept out of the trend
        obj.progress(f"the result does not follow {report.SCHEMA} ({'; '.join(problems[:3])}); not added to the history")
    elif history_path:
        history.append(history_path, result)
    return report.write_reports(result, out, history=past)


def _runbook_stages(obj: Ctx) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """Runbook stage names (docs/runbooks.md) -> the functions behind the commands."""
    from rebuild.core.config import parse_duration

    def ctx_for(p: dict[str, Any]) -> Any:
        return _context(Ctx(obj.output, Path(str(p["config"])) if p.get("config") else obj.config, None))

    def revisions(p: dict[str, Any], ctx: Any) -> dict[str, str]:
        rev = str(p.get("revision") or "")
        return _revisions((rev,) if rev else (), ctx)

    def seconds(p: dict[str, Any], key: str) -> float | None:
        if p.get(key) in (None, ""):
            return None
        value = parse_duration(p[key])
        if value is None:
            raise ConfigError(f"stage parameter {key}={p[key]!r} is not a duration", fix="use e.g. 10m or 600")
        return value

    def output_of(p: dict[str, Any]) -> dict[str, Any]:
        step = str(p.get("from_step") or "")
        out: dict[str, Any] = p["_context"]["outputs"].get(step) or {}
        if step and not out:
            raise RebuildError(f"step {step!r} has no result to use", fix=f"check that step {step} ran and succeeded")
        return out

    def up_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.recover.up import up

        ctx = ctx_for(p)
        res = up(ctx, revisions(p, ctx), verify_timeout=seconds(p, "verify_timeout"))
        return {**res.to_dict(), "ok": res.converged}

    def phase_stage(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def stage(p: dict[str, Any]) -> dict[str, Any]:
            import time as _time

            from rebuild.recover.sources import load_desired
            from rebuild.recover.up import run_phase

            ctx = ctx_for(p)
            t0 = _time.monotonic()
            desired = load_desired(ctx, revisions(p, ctx))
            changes = run_phase(ctx, name, desired)
            return {
                "ok": True,
                "phase": name,
                "seconds": round(_time.monotonic() - t0, 3),
                "changes": changes,
                "sources": [s.to_dict() for s in desired.sources],
                "cluster": ctx.config.cluster.name,
            }

        return stage

    def verify_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.adapters.kube import Kube
        from rebuild.clusters import get_cluster
        from rebuild.recover.converge import wait_converged
        from rebuild.recover.sources import load_desired

        ctx = ctx_for(p)
        desired = load_desired(ctx, revisions(p, ctx))
        c = ctx.config.cluster
        cluster = get_cluster(c.provider, c.name, nodes=c.nodes, context=c.context or None, root=ctx.root)
        kube = Kube.from_kubeconfig(cluster.kubeconfig())
        try:
            timeout = seconds(p, "timeout")
            report = wait_converged(kube, desired.objects, ctx.config.verify, timeout=timeout, progress=obj.progress)
        finally:
            kube.close()
        return {**report.to_dict(), "ok": report.converged, "message": "" if report.converged else "not converged"}

    def drill_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.drills.drill import run_drill

        ctx = ctx_for(p)
        res = run_drill(ctx, revisions=revisions(p, ctx), verify_timeout=seconds(p, "verify_timeout"))
        # ok: the drill ran (passed or not); the report step carries the verdict
        return {**res.to_dict(), "ok": True}

    def cluster_down_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.clusters import get_cluster

        name = str(p.get("name") or output_of(p).get("cluster") or "")
        if not name:
            return {"ok": True, "message": "no cluster named; nothing to stop"}
        from rebuild.clusters import release_gitserver

        get_cluster(str(p.get("provider") or "local"), name).delete(purge=bool(p.get("purge")))
        return {"ok": True, "cluster": name, "gitserver": release_gitserver().to_dict()}

    def report_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.core.state import state_root
        from rebuild.drills import history
        from rebuild.drills.notify import notify

        result = _assemble_run(p) if p.get("from_steps") else output_of(p)
        out = Path(str(p.get("out") or Path(p["_context"]["run_dir"]) / "report"))
        hist = history.default_path(state_root()) if p.get("history") else None
        paths = _write_run_reports(obj, result, out, hist)
        url = os.environ.get(str(p.get("notify_url_env") or ""), "") if p.get("notify_url_env") else ""
        if url:
            notify(url, result, report_path=paths["html"], progress=obj.progress)
        passed = result.get("passed", result.get("converged")) is not False
        return {
            "ok": passed,
            "message": "" if passed else f"the run reported in {paths['html']} did not pass",
            "reports": {k: str(v) for k, v in paths.items()},
        }

    def capture_stage(p: dict[str, Any]) -> dict[str, Any]:
        from rebuild.capture.run import capture

        res = capture(ctx_for(p), dry_run=not p.get("open_pr"), include_deletions=bool(p.get("include_deletions")))
        return {**res.to_dict(), "ok": True}  # drift found is what capture is for, not a failed step

    def _assemble_run(p: dict[str, Any]) -> dict[str, Any]:
        """A rebuild.run/v1 result from the outputs of phase-by-phase steps (cluster, platform, ...)."""
        import datetime as _dt

        outputs = p["_context"]["outputs"]
        steps = [outputs.get(str(s)) or {} for s in p["from_steps"]]
        phases = [{"name": o["phase"], "seconds": o["seconds"], "status": "ok", "detail": ""} for o in steps if o.get("phase")]
        verify = next((o for o in steps if "summary" in o), {})
        if verify:
            phases.append(
                {
                    "name": "verify",
                    "seconds": verify.get("seconds", 0.0),
                    "status": "ok" if verify.get("converged") else "failed",
                    "detail": "",
                }
            )
        first = next((o for o in steps if o.get("sources")), {})
        now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        failures = [
            {"object": o["ref"], "source": o.get("source") or "", "message": m}
            for o in verify.get("objects", [])
            if not o.get("ok")
            for m in o.get("problems", [])
        ]
        return {
            "schema": "rebuild.run/v1",
            "kind": "up",
            "cluster": first.get("cluster", ""),
            "started_at": now,
            "finished_at": now,
            "passed": bool(verify.get("converged")),
            "rto_seconds": round(sum(ph["seconds"] for ph in phases), 3),
            "rpo": {"revision_age_seconds": None, "uncaptured_changes": None},
            "sources": first.get("sources", []),
            "phases": phases,
            "objects": verify.get("summary", {"objects": 0, "verified": 0, "missing": 0, "drifted": 0, "unhealthy": 0}),
            "failures": failures,
            "error": "",
        }

    return {
        "cluster": phase_stage("cluster"),
        "platform": phase_stage("platform"),
        "reconciler": phase_stage("reconciler"),
        "up": up_stage,
        "verify": verify_stage,
        "drill": drill_stage,
        "capture": capture_stage,
        "cluster-down": cluster_down_stage,
        "report": report_stage,
    }


@main.group()
def runbook() -> None:
    """DR runbooks as data: show them, run them (resumable, audited), resume after a crash."""


@runbook.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def runbook_show(obj: Ctx, file: Path) -> None:
    """Render a runbook as Markdown (with -o json: its steps as data). Validates it on the way."""
    from rebuild.drills import runbook as rb

    book = rb.load(file, stages=None)
    obj.emit(book.to_dict(), lambda: rb.render_markdown(book))


@runbook.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A runbook parameter (repeatable).")
@click.option("--yes", is_flag=True, help="Approve every destructive (confirm: true) step without asking.")
@click.option("--dry-run", is_flag=True, help="Show every step, its command or stage and the confirm gates; run nothing.")
@click.pass_obj
def runbook_run(obj: Ctx, file: Path, params: tuple[str, ...], yes: bool, dry_run: bool) -> None:
    """Execute a runbook, keeping a state file and an audit log. Exit 0 done, 1 a step failed, 2 error."""
    from rebuild.clusters.base import check_state_dir
    from rebuild.core.state import state_root
    from rebuild.drills import runbook as rb

    stages = _runbook_stages(obj)
    book = rb.load(file, stages=stages)
    if not dry_run:
        check_state_dir(state_root(), "cluster")
    res = rb.run(
        book,
        state_dir=state_root(),
        stages=stages,
        yes=yes,
        dry_run=dry_run,
        interactive=sys.stdin.isatty(),
        progress=obj.progress,
        params=_param_pairs(params),
    )
    obj.emit(res.to_dict(), res.text)
    sys.exit(res.exit_code)


@runbook.command("resume")
@click.argument("run_id", default="latest")
@click.option("--yes", is_flag=True, help="Approve every remaining destructive step without asking.")
@click.option("--allow-changed", is_flag=True, help="Resume although the runbook file changed since the run started.")
@click.pass_obj
def runbook_resume(obj: Ctx, run_id: str, yes: bool, allow_changed: bool) -> None:
    """Continue a run (default: the latest) at its first unfinished step; completed steps are not redone."""
    from rebuild.clusters.base import check_state_dir
    from rebuild.core.state import state_root
    from rebuild.drills import runbook as rb

    check_state_dir(state_root(), "cluster")
    res = rb.resume(
        state_root(),
        run_id,
        stages=_runbook_stages(obj),
        yes=yes,
        interactive=sys.stdin.isatty(),
        progress=obj.progress,
        allow_changed=allow_changed,
    )
    obj.emit(res.to_dict(), res.text)
    sys.exit(res.exit_code)


if __name__ == "__main__":
    main()
