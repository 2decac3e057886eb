"""Capture's LISTs of the live cluster: which kinds, cluster-wide, started before git is read.

The LISTs need nothing from git but which namespaces to keep, so capture starts them
(:class:`EarlyListing`) in a thread while git is fetched and rendered, then narrows the early
listing to the namespaces git manages and adds the cluster-scoped kinds git declares
(:func:`complete_listing`). One paginated cluster-wide LIST per kind, concurrently, no
client-side rate limit; an identity allowed to read only some namespaces falls back to
per-namespace LISTs, and a kind it may not list at all is reported as skipped, never as deleted.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rebuild.adapters.kube import Kube, ResourceInfo
from rebuild.core.errors import KubeError

if TYPE_CHECKING:
    from rebuild.recover.context import Context

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


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused, then put back as it was.

    Capture builds the live and the desired state of a whole cluster in memory, hundreds of
    thousands of dicts and lists that live until it returns and hold no cycles. The collector
    walked them again at every collection while they grew: the LISTs of 10,000 objects took
    twice as long (docs/measurements.md). Reference counting frees everything as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class EarlyListing:
    """:func:`early_listing` in a daemon thread, started with the client it makes (or is given).

    ``result()`` returns the client and the listing, or raises what the thread raised. A daemon
    thread: if git fails first, its error is reported at once and the LISTs are dropped."""

    def __init__(self, ctx: Context, include_kinds: Sequence[str] = (), kube: Kube | None = None) -> None:
        self._future: concurrent.futures.Future[tuple[Kube, Listing]] = concurrent.futures.Future()
        self._ctx, self._kinds, self.given = ctx, tuple(include_kinds), kube
        threading.Thread(target=self._run, name="capture-list", daemon=True).start()

    def _run(self) -> None:
        from rebuild.recover.context import live_kube

        try:
            client = self.given if self.given is not None else live_kube(self._ctx)
        except BaseException as exc:
            self._future.set_exception(exc)
            return
        try:
            self._future.set_result((client, early_listing(client, self._kinds)))
        except BaseException as exc:
            if self.given is None:
                client.close()
            self._future.set_exception(exc)

    def result(self) -> tuple[Kube, Listing]:
        return self._future.result()
