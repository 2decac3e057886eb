"""The click group of the command line: global options, output, errors, exit codes.

Every command group lives in a module of its own (recover.py: plan/up/verify, capture.py,
drills.py: drill and runbook, cluster.py, toolchain.py; main.py registers them all) and does
four things only: parse its options, call one use case, render the result, choose the exit
code. What a command needs from here: :class:`Ctx` (output, config, progress), ``_context``
(the Context of the use cases), ``_revisions`` (--revision values).

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
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rebuild import __version__
from rebuild.core.errors import Interrupted, RebuildError

if TYPE_CHECKING:
    from rebuild.recover.context import Context

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


# --------------------------------------------------------------------------- what commands share


def _context(obj: Ctx, need: str = "read") -> Context:
    """Config and state dir for a command; ``need="cluster"`` for commands that may create one.

    Commands call it through this module (``app._context``) so a test can replace it."""
    from rebuild.recover.context import open_context

    return open_context(obj.config, obj.progress, need)


def _revisions(values: tuple[str, ...], ctx: Context) -> dict[str, str]:
    """--revision SHA (every source) or --revision NAME=SHA."""
    from rebuild.drills.usecases import parse_revisions

    return parse_revisions(values, ctx)
