"""`rebuild capture`: manual changes in the live cluster back to git as one pull request."""

from __future__ import annotations

import sys

import click

from rebuild.cli import app
from rebuild.cli.app import EXIT_FAIL, EXIT_OK, Ctx


@app.main.command("capture")
@click.option("--dry-run", is_flag=True, help="Print the diff of the files and the PR text; push nothing.")
@click.option("--include-deletions", is_flag=True, help="Remove objects deleted live from git (default: list them in the PR).")
@click.pass_obj
def capture_cmd(obj: Ctx, dry_run: bool, include_deletions: bool) -> None:
    """Backport manual changes in the live cluster to git as one pull request. Exit 0 no drift, 1 drift."""
    from rebuild.capture.run import capture

    ctx = app._context(obj)
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
