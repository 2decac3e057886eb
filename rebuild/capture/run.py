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

import concurrent.futures
import dataclasses
import gc
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from rebuild.adapters.git import auth_env, scrub
from rebuild.adapters.kube import Kube, ResourceInfo
from rebuild.capture.backport import Backport, SopsSecrets, plan_backport
from rebuild.capture.drift import DriftReport, find_drift
from rebuild.capture.helm import RenderedRelease, attribute, read_rendered, target_namespace
from rebuild.core.errors import ConfigError, GitError, KubeError
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.helm import is_helm_release
from rebuild.recover import encrypted
from rebuild.recover.context import Context, live_kube
from rebuild.recover.sources import DesiredState, SourceState, load_desired

# Kinds never worth listing for capture (controller output, high churn); drift would
# exclude them anyway, but not listing them keeps capture cheap on busy clusters.
SKIP_LIST = frozenset(
    {
        "Event",
        "Pod",
        "ReplicaSet",
        "ControllerRevision",
        "Endpoints",
        "EndpointSlice",
        "Lease",
        "PodMetrics",
        "Binding",
        "LocalSubjectAccessReview",
        "TokenReview",
        "SelfSubjectReview",
    }
)
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


# --------------------------------------------------------------------------- live state


def listed_kinds(
    kube: Kube, desired_cluster_kinds: set[tuple[str, str]], include_kinds: Sequence[str] = (), *, refresh: bool = True
) -> list[ResourceInfo]:
    """The kinds capture lists: every listable namespaced kind (minus noise), plus the cluster-scoped kinds git declares.
    ``refresh=False`` reuses the client's discovery (one made moments ago by the same command)."""
    disc = kube.discovery(refresh=refresh)
    include = {k.split(".", 1)[0] for k in include_kinds if not k.startswith("-")}
    # One version per group/kind: the first served (discovery lists the preferred one first).
    chosen: dict[tuple[str, str], ResourceInfo] = {}
    for info in disc.values():
        chosen.setdefault((info.group, info.kind), info)
    kinds: list[ResourceInfo] = []
    for (group, kind), info in sorted(chosen.items()):
        if "list" not in info.verbs or (kind in SKIP_LIST and kind not in include):
            continue
        if info.namespaced or (group, kind) in desired_cluster_kinds:
            kinds.append(info)
    return kinds


@dataclass
class Listing:
    """What capture listed: the objects, the kinds it listed, and the kinds it could not list
    (with why). A desired object of a kind that was not listed is *unchecked*, never "deleted"."""

    objects: list[dict[str, Any]]
    listed: set[tuple[str, str]]
    skipped: dict[tuple[str, str], str]
    per_namespace: list[ResourceInfo] = dataclasses.field(default_factory=list)  # refused cluster-wide, not yet listed


def list_cluster(
    kube: Kube,
    namespaces: Sequence[str] | None,
    desired_cluster_kinds: set[tuple[str, str]],
    include_kinds: Sequence[str] = (),
    workers: int = 16,
) -> Listing:
    """Every object of every listable kind in the namespaces (None: in every namespace), plus the
    cluster-scoped kinds git declares."""
    _wait_ready(kube)
    return _list_kinds(kube, listed_kinds(kube, desired_cluster_kinds, include_kinds), namespaces, workers)


def _wait_ready(kube: Kube) -> None:
    # A server that just (re)started answers before its discovery and informers are complete:
    # wait for /readyz first (5xx while starting are retried by the client's policy).
    try:
        kube.request("GET", "/readyz", ok=(200,), what="API server readiness")
    except KubeError as exc:
        if exc.status not in (401, 403, 404):  # not allowed to ask: go on
            raise


def _list_kinds(kube: Kube, kinds: Sequence[ResourceInfo], namespaces: Sequence[str] | None, workers: int) -> Listing:
    wanted = None if namespaces is None else set(namespaces)
    skipped: dict[tuple[str, str], str] = {}
    per_namespace: list[ResourceInfo] = []

    def one(info: ResourceInfo) -> list[dict[str, Any]]:
        # One cluster-wide LIST per kind (a handful of requests, however many namespaces);
        # an identity allowed to read only some namespaces falls back to per-namespace LISTs.
        try:
            items = kube.list(info.api_version, info.kind)
            if wanted is None or not info.namespaced:
                return items
            return [o for o in items if (o.get("metadata") or {}).get("namespace") in wanted]
        except KubeError as exc:
            if exc.status == 403 and info.namespaced:
                if namespaces is None:  # which namespaces is known once git is read: list them then
                    per_namespace.append(info)
                    return []
                out: list[dict[str, Any]] = []
                for ns in namespaces:
                    try:
                        out.extend(kube.list(info.api_version, info.kind, ns))
                    except KubeError as inner:
                        if inner.status not in (403, 404, 405):
                            raise
                        skipped[(info.group, info.kind)] = f"listing {info.kind} in {ns} was refused (HTTP {inner.status})"
                return out
            if exc.status in (403, 404, 405):  # not allowed to list it, or gone: skip, and say so
                skipped[(info.group, info.kind)] = f"listing {info.kind} was refused (HTTP {exc.status})"
                return []
            raise

    out: list[dict[str, Any]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for items in pool.map(one, kinds):
            out.extend(items)
    listed = {(i.group, i.kind) for i in kinds} - set(skipped) - {(i.group, i.kind) for i in per_namespace}
    return Listing(out, listed, skipped, per_namespace)


def early_listing(kube: Kube, include_kinds: Sequence[str] = (), workers: int = 16) -> Listing:
    """The namespaced kinds listed in every namespace, before git says which namespaces matter:
    capture starts it while it fetches and renders, so the LISTs cost no extra wall time."""
    _wait_ready(kube)
    return _list_kinds(kube, listed_kinds(kube, set(), include_kinds), None, workers)


def complete_listing(
    kube: Kube,
    early: Listing,
    namespaces: Sequence[str],
    desired_cluster_kinds: set[tuple[str, str]],
    include_kinds: Sequence[str] = (),
    workers: int = 16,
) -> Listing:
    """:func:`early_listing` narrowed to the namespaces git manages, plus the cluster-scoped kinds
    git declares and the kinds only listable namespace by namespace: what :func:`list_cluster` lists.
    ``kube`` is the client that made ``early`` (its discovery is reused)."""
    wanted = set(namespaces)
    objects = [o for o in early.objects if not (o.get("metadata") or {}).get("namespace") or o["metadata"]["namespace"] in wanted]
    done = early.listed | set(early.skipped)
    rest = [
        i
        # the early listing refreshed discovery when this command started: no second round of
        # discovery requests (about 20) while the main thread waits for the LISTs
        for i in listed_kinds(kube, desired_cluster_kinds, include_kinds, refresh=False)
        if (i.group, i.kind) not in done or i in early.per_namespace
    ]
    more = _list_kinds(kube, rest, namespaces, workers) if rest else Listing([], set(), {})
    return Listing(objects + more.objects, early.listed | more.listed, {**early.skipped, **more.skipped})


def list_live(
    kube: Kube,
    namespaces: Sequence[str],
    desired_cluster_kinds: set[tuple[str, str]],
    include_kinds: Sequence[str] = (),
    workers: int = 16,
) -> list[dict[str, Any]]:
    """The objects of :func:`list_cluster`."""
    return list_cluster(kube, namespaces, desired_cluster_kinds, include_kinds, workers).objects


# --------------------------------------------------------------------------- git


def _repo_files(root: Path, also: Sequence[str] = ()) -> dict[str, str]:
    """Every YAML file of the checkout, plus the other files the desired state was built from
    (a generator's env files and literal files), which a backport may edit too.

    One walk, no per-file path resolution (10,000 files in a fraction of a second): only a
    symlink can lead elsewhere, and one that leads outside the checkout is skipped."""
    top = root.resolve()
    wanted: list[tuple[str, bool]] = []
    for folder, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel_folder = os.path.relpath(folder, top)
        for name in sorted(names):
            if name.endswith((".yaml", ".yml")):
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                wanted.append((rel, os.path.islink(os.path.join(folder, name))))
    wanted += [(rel, True) for rel in sorted(set(also))]  # named by a kustomization: check where it leads
    files: dict[str, str] = {}
    for rel, check in wanted:
        p = top / rel
        try:
            if check and not p.resolve().is_relative_to(top):
                continue
            files[rel] = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError):
            continue
    return files


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
    # Capture builds the live and the desired state of a whole cluster in memory, hundreds of
    # thousands of dicts and lists that live until it returns and hold no cycles. The cyclic
    # garbage collector walked them again at every collection while they grew: the LISTs of
    # 10,000 objects took twice as long (docs/measurements.md). It is paused for the command and
    # put back as it was; reference counting frees everything as usual.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _capture(ctx, dry_run=dry_run, include_deletions=include_deletions, kube=kube)
    finally:
        if was_enabled:
            gc.enable()


def _capture(ctx: Context, *, dry_run: bool, include_deletions: bool, kube: Kube | None) -> CaptureResult:
    spec = ctx.config.capture
    # The LISTs start while git is fetched and rendered (they need nothing from git but the
    # namespaces, applied afterwards), so capture's wall time is about the slower of the two.
    # A daemon thread: if git fails first, its error is reported at once and the LISTs are dropped.
    early: concurrent.futures.Future[tuple[Kube, Listing]] = concurrent.futures.Future()
    given = kube

    def list_early() -> None:
        try:
            client = given if given is not None else live_kube(ctx)
        except BaseException as exc:
            early.set_exception(exc)
            return
        try:
            early.set_result((client, early_listing(client, spec.kinds)))
        except BaseException as exc:
            if given is None:
                client.close()
            early.set_exception(exc)

    threading.Thread(target=list_early, name="capture-list", daemon=True).start()
    desired = load_desired(ctx)
    src = _source_for(desired, spec.source)
    # The backported source's objects name their files as in its own checkout (see _in_repo).
    stripped = {id(o): _in_repo(o, src.spec.name) for o in src.objects}
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
        helm: list[RenderedRelease] = read_rendered(kube, releases, live) if releases else []
    finally:
        if given is None:
            kube.close()
    rendered = [o for r in helm for o in r.objects]
    if helm:
        ctx.progress(f"capture: {len(rendered)} object(s) rendered by {len(helm)} HelmRelease(s)")
    # SOPS-encrypted documents are compared by their decrypted values (in memory, as verify does):
    # against the ENC[...] text every value of an encrypted Secret would look changed.
    plain = encrypted.decrypted(ctx.config, ctx.toolchain, desired)
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
    files = _repo_files(src.checkout.path, sourced)
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
