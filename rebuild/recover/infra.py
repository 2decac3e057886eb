"""Every stack of a rebuild (the built-in cluster and platform, and the user's own Pulumi projects) as one DAG.

Why: a platform team's infrastructure lives as Pulumi programs in their repos. After a
disaster those must run at the manifests' revision, in dependency order, with outputs flowing
from one stack to the next, and independent stacks at the same time (a recovery is timed).
This module resolves each user stack (its folder in the checkout, its config, its secrets) in
the ``desired`` phase, so bad input stops the run before anything is applied, and then runs
the DAG: each stack a timed phase; a failed stack stops its dependants and keeps the others'
results; a rerun runs every stack again, which Pulumi makes a no-op for those already done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.core.errors import ConfigError, RebuildError
from rebuild.core.model import Phases
from rebuild.core.stackspec import BUILTIN, SecretSource, StackSpec, topo_order
from rebuild.recover.context import Context
from rebuild.recover.sources import DesiredState

if TYPE_CHECKING:
    from rebuild.adapters.pulumi import Pulumi, UserProject

MAX_CONCURRENT_STACKS = 4  # each is a pulumi engine with its language host and providers: memory, not CPU, bounds it


@dataclass(frozen=True)
class ResolvedStack:
    """A user stack ready to run: its project folder at the source's commit and its own config."""

    spec: StackSpec
    project_dir: Path
    config: Mapping[str, Any] = field(default_factory=dict)  # plain values and drill overrides
    secrets: Mapping[str, str] = field(default_factory=dict)  # key -> value (held in memory only)


def _where(ctx: Context, spec: StackSpec) -> str:
    return f"{ctx.config.path}:{spec.line}: stack {spec.name}"


def resolve_stacks(ctx: Context, desired: DesiredState) -> dict[str, ResolvedStack]:
    """Check every user stack against the checked-out sources; raise ConfigError listing every problem.

    Called in the ``desired`` phase: a path outside the repo, a missing Pulumi.yaml or a
    missing secret stops the run before any cluster or stack is touched.
    """
    checkouts = {s.spec.name: s.checkout for s in desired.sources}
    out: dict[str, ResolvedStack] = {}
    problems: list[str] = []
    for spec in ctx.config.stacks:
        if spec.builtin:
            continue
        co = checkouts.get(spec.source)
        if co is None:  # rejected when rebuild.yaml was loaded; kept for callers building configs by hand
            problems.append(f"{_where(ctx, spec)}: source {spec.source!r} is not in sources (fix: use a sources[].name)")
            continue
        root = co.path.resolve()
        folder = (co.path / spec.path).resolve()
        shown = f"{spec.path} in source {spec.source} at {co.sha[:12]}"
        if folder != root and root not in folder.parents:
            problems.append(
                f"{_where(ctx, spec)}: path {shown} leads outside the repository (a link?) "
                f"(fix: point `path` at a folder inside the repository)"
            )
            continue
        if not folder.is_dir():
            problems.append(
                f"{_where(ctx, spec)}: path {shown} is not a folder in git (fix: commit the project, or correct `path`)"
            )
            continue
        if not (folder / "Pulumi.yaml").is_file() and not (folder / "Pulumi.yml").is_file():
            problems.append(
                f"{_where(ctx, spec)}: {shown} has no Pulumi.yaml, so it is not a Pulumi project "
                f"(fix: point `path` at the folder holding Pulumi.yaml)"
            )
            continue
        secrets: dict[str, str] = {}
        for key, src in spec.secrets.items():
            try:
                secrets[key] = _read_secret(ctx, src)
            except ConfigError as err:
                problems.append(f"{_where(ctx, spec)}: secret {key}: {err}")
        config = dict(spec.config)
        if ctx.drill_backend is not None:
            config.update(spec.drill_config)
        out[spec.name] = ResolvedStack(spec, folder, config, secrets)
    if problems:
        raise ConfigError("\n".join(problems), fix=f"correct {ctx.config.path.name} or the repository at the places shown")
    return out


def _read_secret(ctx: Context, src: SecretSource) -> str:
    if src.env:
        value = os.environ.get(src.env)
        if not value:
            raise ConfigError(f"variable ${src.env} is not set", fix=f"export {src.env}=... before running rebuild")
        return value
    path = Path(src.file) if Path(src.file).is_absolute() else ctx.config.base_dir / src.file
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"file {path} cannot be read ({exc.strerror})", fix="create it (mode 0600)") from exc


def prepare_stacks(ctx: Context, pulumi: Pulumi, resolved: Mapping[str, ResolvedStack]) -> None:
    """Workspace copy, runtime check and (cached) virtualenv of every user stack, before anything is
    applied: an unsupported runtime or a requirements.txt pip cannot install stops the run here."""
    for r in resolved.values():
        with repo_paths(ctx, r):
            pulumi.prepare(user_project(r.spec, r), ctx.progress)


@contextlib.contextmanager
def repo_paths(ctx: Context, r: ResolvedStack) -> Iterator[None]:
    """Errors of a user stack name files as the user knows them (``demo:infra/x/__main__.py:9``,
    not the extracted commit under the state dir) and the stack's line in rebuild.yaml."""
    try:
        yield
    except RebuildError as err:
        where = f"{r.spec.source}:{r.spec.path}"
        err.message = err.message.replace(str(r.project_dir), where)
        if not err.message.startswith(str(ctx.config.path)):
            err.message = f"{ctx.config.path}:{r.spec.line}: {err.message}"
        raise


def user_project(spec: StackSpec, resolved: ResolvedStack) -> UserProject:
    from rebuild.adapters.pulumi import UserProject

    return UserProject(spec.name, resolved.project_dir)


def stack_config(resolved: ResolvedStack, outputs: Mapping[str, Mapping[str, tuple[Any, bool]]]) -> dict[str, Any]:
    """The config a user stack runs with: plain values, secrets and values read from other stacks' outputs.

    Secrets, and outputs that are secret in their own stack, stay secret (they go to Pulumi on
    stdin and live encrypted in the stack's config).
    """
    import pulumi.automation as auto

    cfg: dict[str, Any] = dict(resolved.config)
    for key, value in resolved.secrets.items():
        cfg[key] = auto.ConfigValue(value, secret=True)
    for key, ref in resolved.spec.config_from.items():
        stack, _, name = ref.partition(".")
        outs = outputs.get(stack, {})
        if name not in outs:
            raise ConfigError(
                f"stack {resolved.spec.name}: config_from {key}: stack {stack} has no output {name!r} "
                f"(it has: {', '.join(sorted(outs)) or 'none'})",
                fix=f"export {name!r} from stack {stack}, or read another output",
            )
        value, secret = outs[name]
        if isinstance(value, (dict, list)):
            import json

            value = json.dumps(value)
        cfg[key] = auto.ConfigValue(str(value) if not isinstance(value, str) else value, secret=secret)
    return cfg


def run_fingerprint(resolved: ResolvedStack, config: Mapping[str, Any]) -> str:
    """What a user stack's run depends on: its program's files, its stack name and its config.

    Secret values are left out (only their keys count), so the digest written to the state dir
    says nothing about them; a changed secret alone does not force a preview. So are the values
    wired from other stacks' outputs (config_from): they change with every new cluster (its
    kubeconfig) without the program or its settings changing.
    """
    import hashlib

    h = hashlib.sha256(f"{resolved.spec.name}\0{resolved.spec.stack}\0".encode())
    for f in sorted(p for p in resolved.project_dir.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(resolved.project_dir)).encode() + b"\0" + f.read_bytes() + b"\0")
    for key in sorted(config):
        value = config[key]
        wired = key in resolved.spec.config_from
        secret = getattr(value, "secret", False) and key in resolved.secrets
        shown = "<wired>" if wired else "<secret>" if secret else getattr(value, "value", value)
        h.update(f"{key}={shown!r}\0".encode())
    return h.hexdigest()


StackRunner = Callable[[StackSpec], dict[str, Any]]


@dataclass
class DagRun:
    """What running the DAG did: per stack done / failed / skipped, and the first error."""

    state: dict[str, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)  # stack name -> its error


def run_dag(
    specs: tuple[StackSpec, ...],
    run: StackRunner,
    phases: Phases,
    changed: dict[str, Any],
    *,
    max_workers: int = MAX_CONCURRENT_STACKS,
) -> DagRun:
    """Run every stack once what it depends on has finished; independent ones at the same time.

    ``run`` does one stack and returns its change summary. A stack whose dependency failed is
    recorded as a skipped phase naming that dependency. Returns what happened; the caller
    raises the first error (so the others' results are kept and reported).
    """
    order = topo_order(specs)
    done = DagRun()
    running: dict[Future[dict[str, Any]], StackSpec] = {}

    def timed(spec: StackSpec) -> dict[str, Any]:
        with phases.phase(spec.phase):
            return run(spec)

    with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="stack") as pool:
        while True:
            for spec in order:
                if spec.name in done.state or spec in running.values():
                    continue
                deps = [d for d in spec.depends_on() if d in done.state or any(s.name == d for s in order)]
                blocked = [d for d in deps if done.state.get(d) in ("failed", "skipped")]
                if blocked:
                    done.state[spec.name] = "skipped"
                    phases.skip(spec.phase, f"not run: it needs {', '.join(blocked)}, which did not finish")
                elif all(done.state.get(d) == "done" for d in deps):
                    running[pool.submit(timed, spec)] = spec
            if not running:
                break
            try:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                _interrupted(running, phases)
                raise
            for fut in finished:
                spec = running.pop(fut)
                try:
                    changed[spec.phase] = fut.result()
                    done.state[spec.name] = "done"
                except BaseException as exc:  # recorded; the caller re-raises the first
                    done.state[spec.name] = "failed"
                    done.errors.append(exc)
                    done.failed[spec.name] = exc
    return done


def _interrupted(running: Mapping[Future[dict[str, Any]], StackSpec], phases: Phases) -> None:
    """Ctrl-C while stacks run: their pulumi processes got the signal too and cancel their
    updates; wait for them (a second Ctrl-C stops waiting), then record their phases as
    interrupted, whatever their threads made of the cancellation."""
    for fut, spec in running.items():
        try:
            fut.result()
        except KeyboardInterrupt:
            raise
        except BaseException:  # the cancelled update's error: the interruption is the story
            pass
        for p in reversed(phases.items):
            if p.name == spec.phase:
                p.status = "interrupted"
                p.detail = ""
                break


def raise_first(dag: DagRun) -> None:
    """Raise the DAG's first error; KeyboardInterrupt wins (the user stopped the run)."""
    for exc in dag.errors:
        if isinstance(exc, KeyboardInterrupt):
            raise exc
    if dag.errors:
        # Stacks failing side by side usually share a cause (the cluster went away): name the
        # built-in stack's error first, it is rebuild's own; else the first to fail.
        builtin = [e for n, e in dag.failed.items() if n in BUILTIN]
        first = builtin[0] if builtin else dag.errors[0]
        failed = [n for n, s in dag.state.items() if s == "failed"]
        if len(failed) > 1 and isinstance(first, RebuildError):
            first.message += f" (stacks that failed: {', '.join(failed)})"
        raise first


def outputs_reader(
    pulumi: Pulumi, ctx: Context, resolved: Mapping[str, ResolvedStack]
) -> Callable[[str], dict[str, tuple[Any, bool]]]:
    """Read a finished stack's outputs (secrets included, for wiring only: never printed)."""

    def read(name: str) -> dict[str, tuple[Any, bool]]:
        if name in ("cluster", "platform"):
            return pulumi.outputs(ctx.stacks_dir / name, ctx.stack)
        r = resolved[name]
        return pulumi.outputs(user_project(r.spec, r), r.spec.stack)

    return read


def needed_outputs(specs: tuple[StackSpec, ...]) -> set[str]:
    """The stacks whose outputs another stack reads through config_from."""
    return {ref.split(".", 1)[0] for s in specs for ref in s.config_from.values()}
