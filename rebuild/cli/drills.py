"""`rebuild drill` and `rebuild runbook show|run|resume`: drills and DR runbooks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rebuild.cli import app
from rebuild.cli.app import EXIT_ERROR, EXIT_FAIL, EXIT_OK, Ctx
from rebuild.core.errors import ConfigError


@app.main.command("drill")
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
    from rebuild.drills.drill import drill_and_report

    ctx = app._context(obj, "cluster")
    done = drill_and_report(
        ctx,
        revisions=app._revisions(revision, ctx),
        name=name,
        keep=keep,
        verify_timeout=timeout,
        live=live,
        out=report_dir,
        history_path=history_file,
        notify_url=notify_url,
    )
    res, run, paths = done.drill, done.run, done.reports

    def text() -> str:
        lines = [f"drill {run.cluster}: {run.verdict}", res.phases.table()]
        lines.append(f"RTO {run.rto_seconds:.1f}s; revision age {run.revision_age_seconds}s")
        lines += [f"  {f.object}  {f.source}: {f.message}" for f in run.failures]
        if run.error:
            lines.append(f"error: {run.error}")
        lines.append(f"reports: {paths['markdown']}, {paths['junit']}, {paths['json']}")
        lines.append(f"report: {paths['html']}")  # last line: the page to open
        return "\n".join(lines)

    obj.emit({**run.to_dict(), "reports": {k: str(v) for k, v in paths.items()}}, text)
    if done.notify_error is not None:
        click.echo(f"error: {done.notify_error.message}", err=True)
        if done.notify_error.fix:
            click.echo(f"  fix: {done.notify_error.fix}", err=True)
    sys.exit(EXIT_ERROR if done.notify_error is not None and run.passed else EXIT_OK if run.passed else EXIT_FAIL)


# --------------------------------------------------------------------------- runbook


def _param_pairs(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {v!r} is not NAME=VALUE", fix="e.g. --param config=prod/rebuild.yaml")
        out[name] = value
    return out


@app.main.group()
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
    from rebuild.drills.stages import run_runbook

    res = run_runbook(
        file,
        config=obj.config,
        params=_param_pairs(params),
        yes=yes,
        dry_run=dry_run,
        interactive=sys.stdin.isatty(),
        progress=obj.progress,
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
    from rebuild.drills.stages import resume_runbook

    res = resume_runbook(
        run_id,
        config=obj.config,
        yes=yes,
        interactive=sys.stdin.isatty(),
        allow_changed=allow_changed,
        progress=obj.progress,
    )
    obj.emit(res.to_dict(), res.text)
    sys.exit(res.exit_code)
