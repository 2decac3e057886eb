"""`rebuild toolchain install|doctor`: build, cache and check the external tools."""

from __future__ import annotations

import sys

import click

from rebuild.cli import app
from rebuild.cli.app import EXIT_ERROR, EXIT_OK, Ctx


@app.main.group()
def toolchain() -> None:
    """Build, cache and check the external tools (pulumi, kube-apiserver, etcd, kwok...)."""


@toolchain.command("install")
@click.option("--only", multiple=True, help="Install only these tools, core or optional (NAME,NAME or repeated).")
@click.option(
    "--with",
    "with_",
    multiple=True,
    help="Also install these optional tools (`optional = true` in versions.toml; 'optional' = all of them).",
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
        if any(r.optional for r in rows):
            lines += ["", "optional tools (not part of a plain install; `--with optional` installs them all):"]
            lines += [line(r, width) for r in rows if r.optional]
        return "\n".join(lines)

    obj.emit({"ok": ok, "tools": [{**r.__dict__, "path": str(r.path)} for r in rows]}, text)
    sys.exit(EXIT_OK if ok else EXIT_ERROR)
