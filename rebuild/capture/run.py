"""Capture: find what people changed by hand in the live cluster and backport it to git as a PR.

The rebuild that hurts is the one that loses last month's kubectl hotfix. This stage reads
the live state of every object git declares and of every object in the namespaces git
manages (one paginated LIST per kind, concurrently, no client-side rate limit), turns the
differences into attributed findings (``rebuild.capture.drift``), plans the edits of the very
files that declare the drifted fields (``rebuild.capture.backport``), and opens or updates exactly
one pull request on the forge. The objects Flux HelmReleases rendered are read from Helm's record
of each release and compared too; a change to one goes to the HelmRelease's ``values:`` when the
chart maps the field 1:1 (``rebuild.capture.helm``). The same drift opens no second PR; changed drift updates the
open PR's branch. Secret values are never written in clear: SOPS-encrypted documents are compared
by their values decrypted in memory (``rebuild.recover.encrypted``), and a value changed live in
such a file goes to the PR encrypted for the repository's ``.sops.yaml`` age recipients
(``rebuild.capture.backport.sops``), or is listed.

Exit codes (CLI): 0 no drift, 1 drift found (a PR was opened, updated or already open),
2 error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from rebuild.adapters.git import auth_env, scrub
from rebuild.adapters.kube import Kube
from rebuild.capture.backport import Backport, SopsSecrets, plan_backport
from rebuild.capture.drift import DriftReport, find_drift
from rebuild.capture.helm import RenderedRelease, attribute, read_rendered, target_namespace
from rebuild.capture.listing import EarlyListing, complete_listing, paused_gc
from rebuild.core.errors import ConfigError, GitError
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.helm import is_helm_release
from rebuild.desired.helmvalues import values_lookup
from rebuild.recover import encrypted
from rebuild.recover.context import Context
from rebuild.recover.sources import DesiredState, SourceState, load_desired

HEAD_PREFIX = "rebuild/capture-"


def marker(digest: str) -> str:
    from rebuild.adapters.forge import marker as forge_marker

    return forge_marker(digest)


@dataclass
class CaptureResult:
    report: DriftReport
    backport: Backport
    source: str
    diff: str = ""
    pr: dict[str, Any] | None = None
    action: str = "none"  # none | dry-run | created | updated | unchanged
    listed_objects: int = 0

    @property
    def drift(self) -> bool:
        return self.report.has_drift

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift": self.drift,
            "action": self.action,
            "source": self.source,
            "pull_request": self.pr,
            "branch": self.backport.branch if self.drift else None,
            "title": self.backport.title if self.drift else None,
            "files": sorted({*self.backport.edits, *self.backport.new_files}),
            "deleted_files": self.backport.deleted_files,
            "listed": self.backport.listed,
            "live_objects_listed": self.listed_objects,
            "report": self.report.to_dict(),
        }


# --------------------------------------------------------------------------- git


class RepoFiles(Mapping[str, str]):
    """Every YAML file of the checkout, plus the other files the desired state was built from
    (a generator's env files and literal files), which a backport may edit too: the names found
    in one walk, each file read when first asked for (a backport reads a handful of the 10,000
    files a repository may hold; reading them all took a tenth of a second or more per run).

    A file that cannot be read (gone, not UTF-8) or a symlink that leads outside the checkout
    is absent: ``in`` says so and ``[]`` raises KeyError, as for a name never found. Iterating
    names every file found without reading it."""

    def __init__(self, root: Path, also: Sequence[str] = ()) -> None:
        self._top = root.resolve()
        self._check: dict[str, bool] = {}  # name -> resolve it first (a symlink, or named by a kustomization)
        for folder, dirs, names in os.walk(self._top):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            rel_folder = os.path.relpath(folder, self._top)
            for name in sorted(names):
                if name.endswith((".yaml", ".yml")):
                    rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                    self._check[rel] = os.path.islink(os.path.join(folder, name))
        for rel in sorted(set(also)):  # named by a kustomization: check where it leads
            self._check[rel] = True
        self._texts: dict[str, str | None] = {}

    def _read(self, rel: str) -> str | None:
        if rel in self._texts:
            return self._texts[rel]
        text: str | None = None
        if rel in self._check:
            p = self._top / rel
            try:
                if not self._check[rel] or p.resolve().is_relative_to(self._top):
                    text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError, ValueError):
                text = None
        self._texts[rel] = text
        return text

    def __getitem__(self, rel: str) -> str:
        text = self._read(rel)
        if text is None:
            raise KeyError(rel)
        return text

    def __contains__(self, rel: object) -> bool:
        return isinstance(rel, str) and self._read(rel) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._check)

    def __len__(self) -> int:
        return len(self._check)


def _in_repo(obj: DesiredObject, label: str) -> DesiredObject:
    """The object with file names relative to its own repository: with several sources,
    desired state labels them ``<source>:<path>`` (so messages say which repo), but the
    backport edits files of one checkout."""
    prefix = f"{label}:"

    def strip(src: Source) -> Source:
        return dataclasses.replace(src, file=src.file.removeprefix(prefix)) if src.file.startswith(prefix) else src

    if not obj.source.file.startswith(prefix) and not any(f.startswith(prefix) for f, _ in obj.field_source_files()):
        return obj
    declared = obj.declared
    if declared is not None and declared.file.startswith(prefix):
        declared = dataclasses.replace(declared, file=declared.file.removeprefix(prefix))
    return dataclasses.replace(
        obj, source=strip(obj.source), field_sources={k: strip(v) for k, v in obj.field_sources.items()}, declared=declared
    )


def compared_objects(objects: Sequence[DesiredObject], plain: Mapping[ObjectRef, DesiredObject]) -> list[DesiredObject]:
    """The objects drift is computed against: a SOPS-encrypted one replaced by its decrypted
    view's body (:func:`rebuild.recover.encrypted.decrypted`), its files and sources kept, and its
    name (a Secret generated from encrypted files is named by the hash of the decrypted values)."""
    return [dataclasses.replace(o, ref=plain[o.ref].ref, body=plain[o.ref].body) if o.ref in plain else o for o in objects]


def secret_values(report: DriftReport, live: Sequence[dict[str, Any]]) -> dict[ObjectRef, Mapping[str, Any]]:
    """The live Secrets whose values drifted, for the backport to encrypt (kept in memory only)."""
    wanted = {f.ref for f in report.findings if f.secret_value}
    out: dict[ObjectRef, Mapping[str, Any]] = {}
    for obj in live:
        ref = ObjectRef.of(obj)
        if ref in wanted:
            out.setdefault(ref, obj)
    return out


def _source_for(desired: DesiredState, name: str) -> SourceState:
    if not name:
        return desired.sources[0]
    for s in desired.sources:
        if s.spec.name == name:
            return s
    raise ConfigError(f"capture.source {name!r} is not one of the sources", fix="name a sources[].name")


def push_branch(ctx: Context, src: SourceState, branch: str, bp: Backport, base_sha: str) -> str:
    """Commit the backport on ``branch`` (from the rebuilt base commit) and force-push it; returns the new sha."""
    work = ctx.layout.capture_work(src.spec.name)
    creds = src.spec.credentials.resolve(ctx.config.base_dir)
    env = auth_env(creds)
    try:
        if not (work / ".git").exists():
            shutil.rmtree(work, ignore_errors=True)
            work.parent.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(work)
            repo.git.remote("add", "origin", src.url)
        repo = git.Repo(work)
        repo.git.fetch("origin", f"+refs/heads/{src.spec.branch}:refs/remotes/origin/{src.spec.branch}", env=env)
        repo.git.checkout("-B", branch, base_sha, "--force")
        repo.git.clean("-fdx")
        for path, text in {**bp.edits, **bp.new_files}.items():
            target = work / path
            if path in bp.deleted_files:
                repo.git.rm("-q", "--", path)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            repo.git.add("--", path)
        with repo.config_writer() as cw:
            cw.set_value("user", "name", "rebuild capture")
            cw.set_value("user", "email", "rebuild@localhost")
        repo.git.commit("-q", "-m", bp.commit_message)
        repo.git.push("--force", "origin", f"HEAD:refs/heads/{branch}", env=env)
        return str(repo.head.commit.hexsha)
    except git.GitCommandError as exc:
        raise GitError(
            f"pushing branch {branch} of source {src.spec.name} failed: {scrub(str(exc.stderr), creds)[-400:]}",
            fix="check the source's credentials (they need push access) and the git server",
        ) from exc


# --------------------------------------------------------------------------- stage


def capture(ctx: Context, *, dry_run: bool = False, include_deletions: bool = False, kube: Kube | None = None) -> CaptureResult:
    """Find the drift and backport it (see the module docstring). ``kube``: the client to list
    with (default: the cluster rebuild.yaml names)."""
    with paused_gc():
        return _capture(ctx, dry_run=dry_run, include_deletions=include_deletions, kube=kube)


def _capture(ctx: Context, *, dry_run: bool, include_deletions: bool, kube: Kube | None) -> CaptureResult:
    spec = ctx.config.capture
    # The LISTs start while git is fetched and rendered (they need nothing from git but the
    # namespaces, applied afterwards), so capture's wall time is about the slower of the two.
    early = EarlyListing(ctx, spec.kinds, kube)
    given = early.given
    desired = load_desired(ctx)
    src = _source_for(desired, spec.source)
    # The backported source's objects name their files as in its own checkout (see _in_repo).
    # (With one source nothing is labelled: no pass over every object's files.)
    labelled = len(desired.sources) > 1
    stripped = {id(o): _in_repo(o, src.spec.name) if labelled else o for o in src.objects}
    objects = [stripped.get(id(o), o) for o in desired.objects]
    releases = [o for o in objects if is_helm_release(o)]
    # A HelmRelease's objects land in its targetNamespace, often one git declares nothing else in.
    namespaces = list(spec.namespaces) or sorted(
        {o.ref.namespace for o in objects if o.ref.namespace} | {target_namespace(r) for r in releases}
    )
    ctx.progress(f"capture: listing live objects in {', '.join(namespaces)}")
    kube, first = early.result()
    try:
        cluster_kinds = {(o.ref.group, o.ref.kind) for o in objects if not o.ref.namespace}
        listing = complete_listing(kube, first, namespaces, cluster_kinds, spec.kinds)
        live = listing.objects
        # SOPS-encrypted documents are compared by their decrypted values (in memory, as verify does):
        # against the ENC[...] text every value of an encrypted Secret would look changed. (Decrypted
        # before the releases are read: a HelmRelease's valuesFrom may name an encrypted Secret.)
        plain = encrypted.decrypted(ctx.config, ctx.toolchain, desired)
        helm: list[RenderedRelease] = (
            read_rendered(kube, releases, live, values_lookup=values_lookup(objects, plain)) if releases else []
        )
    finally:
        if given is None:
            kube.close()
    rendered = [o for r in helm for o in r.objects]
    if helm:
        ctx.progress(f"capture: {len(rendered)} object(s) rendered by {len(helm)} HelmRelease(s)")
    if plain:
        ctx.progress(f"capture: {len(plain)} object(s) compared with SOPS-encrypted values decrypted in memory")
    report = find_drift(
        [*rendered, *compared_objects(objects, plain)],  # an object git declares itself wins over a chart's copy of it
        live,
        spec=spec,
        managed_namespaces=namespaces,
        listed=listing.listed,
        skipped=listing.skipped,
        helm_problems={r.release.ref: r.problem for r in helm if r.problem},
    )
    attribute(report, helm)
    ctx.progress(f"capture: {len(report.findings)} manual change(s), {len(report.noise)} controller/reconciler change(s) ignored")
    sourced = sorted({f for o in stripped.values() for f, via in o.field_source_files() if via in ("env", "file")})
    files = RepoFiles(src.checkout.path, sourced)
    root_kust = next(
        (
            f"{src.spec.path.strip('/')}/{n}".lstrip("./")
            for n in ("kustomization.yaml", "kustomization.yml")
            if f"{src.spec.path.strip('/')}/{n}".lstrip("./") in files
        ),
        None,
    )
    # Secret values changed live in SOPS-encrypted files go to the PR encrypted (in memory only).
    writer = (
        SopsSecrets(src.checkout.path, encrypted.key_file(ctx.config), ctx.toolchain, secret_values(report, live))
        if plain
        else None
    )
    bp = plan_backport(
        report,
        {
            **{o.ref: o for o in rendered},
            **{o.ref: o for o in stripped.values()},
            # a generated Secret under the name the cluster has (the hash of its decrypted values)
            **{plain[o.ref].ref: o for o in stripped.values() if o.ref in plain and plain[o.ref].ref != o.ref},
        },
        files,
        new_objects_dir=spec.new_objects_dir,
        include_deletions=include_deletions,
        root_kustomization=root_kust,
        generated_root=None if root_kust else src.spec.path,
        sops_secrets=writer,
    )
    result = CaptureResult(report, bp, src.spec.name, diff=bp.diff(files), listed_objects=len(live))
    if not report.has_drift:
        return result
    bp.body = bp.body.rstrip() + "\n\n" + marker(report.digest()) + "\n"
    if dry_run:
        result.action = "dry-run"
        return result
    if bp.empty and not bp.deleted_files:
        # e.g. only Secret values drifted: they are never written to git, so there is no commit
        # to make; the findings stay in the report (and on stdout) for a person to act on.
        result.action = "nothing-to-write"
        ctx.progress("capture: none of the changes can be written to git (listed in the report); no pull request")
        return result
    if not spec.forge.kind:
        raise ConfigError("drift found but capture.forge is not configured", fix="add capture.forge, or use --dry-run")
    from rebuild.adapters import forge as forge_mod

    token = spec.forge.token(ctx.config.base_dir)
    want = marker(report.digest())
    with forge_mod.forge_from_config(spec.forge.kind, spec.forge.url, spec.forge.repo, token) as fg:
        current = forge_mod.current_pull_request(fg, head_prefix=HEAD_PREFIX, base=src.spec.branch, digest=report.digest())
        if current is not None and forge_mod.parse_marker(current.body or "") == report.digest():
            result.action = "unchanged"
            result.pr = _pr_dict(current)
            return result
        branch = current.head if current is not None else bp.branch
        ctx.progress(f"capture: pushing {branch}")
        push_branch(ctx, src, branch, bp, src.checkout.sha)
        pr, action = forge_mod.ensure_pull_request(
            fg, head=branch, base=src.spec.branch, title=bp.title, body=bp.body, head_prefix=HEAD_PREFIX, marker=want
        )
    result.action = action
    result.pr = _pr_dict(pr)
    return result


def _pr_dict(pr: Any) -> dict[str, Any]:
    return {"number": pr.number, "url": pr.url, "head": pr.head, "base": pr.base, "title": pr.title}
