"""Waiting for Flux: every source and Kustomization Ready at its commit, or a reason to stop now.

The readiness of one object is decided in ``rebuild.reconcilers.flux`` (pure functions); this
module is the loop `up` runs over all of them: ask Flux to reconcile now, poll, and end the
wait early on what waiting cannot fix (a suspended Kustomization; a build or validation
error at the expected revision, confirmed by one requested reconcile). It knows objects and
commits only, not rebuild.yaml, so the recover pipeline decides what to watch
(``rebuild.recover.reconciler``) and this loop can be read and tested on its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.adapters.kube import Kube
from rebuild.core.errors import RebuildError
from rebuild.core.model import DesiredObject, Source
from rebuild.core.progress import Progress
from rebuild.desired.render import crd_kinds
from rebuild.reconcilers import flux


@dataclass
class Watched:
    """One Flux object `up` waits for, and how to name it in a message."""

    sha: str  # the commit of its source it must be Ready at
    api: str
    kind: str
    name: str
    namespace: str
    declared: Source | None = None  # file:line in git (nested Kustomizations)
    any_revision: bool = False  # a Kustomization of another source: Ready is enough
    retried: str = ""  # the failure message a confirming reconcile was requested for
    stamp: str = ""

    @property
    def label(self) -> str:
        where = f" ({self.declared})" if self.declared else ""
        return f"{self.kind} {self.namespace}/{self.name}{where}"


def wait_ready(
    kube: Kube,
    watched: list[Watched],
    objects: list[DesiredObject],
    did: dict[str, Any],
    *,
    progress: Progress,
    timeout: float = 300,
    watchdog: Callable[[], None] | None = None,
    logs: Path | None = None,
) -> None:
    """Ask Flux to reconcile now (annotation), then wait for every source, and every Kustomization
    followed from it (in dependsOn order), to be Ready at its commit.

    A failure retrying cannot fix (a build or validation error at the expected revision, a
    dependency git does not declare) ends the wait at once with exit 2, the reconciler's message
    and the file:line of the object it names; a failure that is not known to be permanent is
    confirmed by one requested reconcile that fails the same way. ``watchdog`` runs on every poll
    (on the local provider: restart a controller that died). ``objects`` are the desired
    objects (to name the file:line a failure message points at); ``logs`` the controllers' log
    folder when they run on this machine (named in the timeout's fix), None when in the cluster.
    """
    stamp = str(time.time())
    for w in watched:
        if w.declared is not None:
            continue  # applied by Flux from git: not there yet on a new cluster
        current = kube.get(w.api, w.kind, w.name, w.namespace) or {}
        sha = w.sha
        ready = (flux.source_ready if w.kind == "GitRepository" else flux.kustomization_ready)(current, sha)
        if not ready.ready:
            kube.patch(
                current or {"apiVersion": w.api, "kind": w.kind, "metadata": {"name": w.name, "namespace": w.namespace}},
                {"metadata": {"annotations": {flux.REQUESTED_AT: stamp}}},
                field_manager="rebuild",
            )
            did.setdefault("requested_reconcile", []).append(f"{w.kind}/{w.name}")
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if watchdog is not None:
            watchdog()
        notes: list[str] = []
        paused: list[Watched] = []
        pending = 0
        for w in watched:
            obj = kube.get(w.api, w.kind, w.name, w.namespace)
            sha = "" if w.any_revision else w.sha
            if w.kind == "GitRepository":
                r = flux.source_ready(obj, sha)
            elif w.any_revision:
                r = flux.Readiness(flux.is_ready(obj), flux.ready_message(obj))
            else:
                r = flux.kustomization_ready(obj, sha)
            if r.ready:
                continue
            pending += 1
            notes.append(f"{w.kind.lower()} {w.name}: {r.message}")
            if r.message == "Kustomization is suspended" and w.declared is None:
                paused.append(w)
                continue
            _check_permanent(kube, w, obj, objects, progress)
        if paused:
            # Someone paused reconciliation on purpose; waiting would only end in a timeout.
            names = ", ".join(w.name for w in paused)
            raise RebuildError(
                f"Flux Kustomization(s) {names} in {paused[0].namespace} are suspended, so they cannot converge",
                fix=f"resume them (`flux resume kustomization {paused[0].name} -n {paused[0].namespace}`, "
                "or set spec.suspend: false) and rerun",
            )
        if not pending:
            return
        note = "; ".join(notes)
        if note != last:
            progress(f"reconciler: {note}")
            last = note
        if time.monotonic() > deadline:
            raise RebuildError(
                f"Flux did not become Ready at the expected revision in {timeout:.0f}s: {note}",
                fix=(
                    f"check the controllers' logs ({logs})"
                    if logs is not None
                    else "check the controllers' logs (kubectl -n flux-system logs deploy/source-controller, "
                    "deploy/kustomize-controller)"
                ),
            )
        time.sleep(0.5)


def _check_permanent(
    kube: Kube, w: Watched, obj: dict[str, Any] | None, objects: list[DesiredObject], progress: Progress
) -> None:
    """Raise when ``obj`` failed in a way retrying the same revision cannot fix."""
    if obj is None:
        return
    failure = flux.failure(obj, "" if w.any_revision else w.sha)
    if failure is None:
        return
    verdict = flux.classify_failure(failure, defined_kinds={kind for _, kind in crd_kinds(objects)})
    if verdict == "transient" or (verdict == "unknown" and w.kind == "GitRepository"):
        return  # a fetch can fail for many passing reasons (a cut transfer): only known ones are final
    # Even a known-permanent reason is confirmed by one requested reconcile that fails the same
    # way: a controller's temporary folder removed under it also reads "BuildFailed".
    handled = str((obj.get("status") or {}).get("lastHandledReconcileAt") or "")
    same = flux.same_failure(w.retried, failure.message)
    if not w.retried or not same:
        w.retried, w.stamp = failure.message, str(time.time())
        kube.patch(obj, {"metadata": {"annotations": {flux.REQUESTED_AT: w.stamp}}}, field_manager="rebuild")
        progress(f"reconciler: {w.label} failed; asking Flux to retry once to tell a lasting error from a passing one")
        return
    if handled != w.stamp:
        return  # the retry has not run yet
    where = _locate(failure.message, objects)
    raise RebuildError(
        f"{w.label} cannot apply revision {w.sha[:12]}: {failure.reason}: {failure.message}"
        + (f" (declared at {where})" if where else ""),
        fix=f"fix it in git{' at ' + where if where else ''} and rerun; retrying the same revision cannot fix it",
    )


_OBJECT_IN_MESSAGE = re.compile(r"\b([A-Z][A-Za-z0-9]+)/(?:([a-z0-9][-a-z0-9.]*)/)?([a-z0-9][-a-z0-9.]*)")
_FIELD_IN_MESSAGE = re.compile(r"(?:^|\s)\.((?:[A-Za-z0-9_-]+|\[[^\]]+\])(?:\.(?:[A-Za-z0-9_-]+)|\[[^\]]+\])*)")


def _locate(message: str, objects: list[DesiredObject]) -> str:
    """The file:line of the object (and field) a reconciler's message names, when rebuild knows it."""
    for m in _OBJECT_IN_MESSAGE.finditer(message):
        kind, ns, name = m.group(1), m.group(2) or "", m.group(3)
        for o in objects:
            if o.ref.kind == kind and o.ref.name == name and (not ns or o.ref.namespace == ns):
                f = _FIELD_IN_MESSAGE.search(message[m.end() :])
                if f:
                    path = tuple(p for p in re.split(r"\.(?![^\[]*\])", f.group(1)) if p and not p.startswith("["))
                    return str(o.source_of(path))
                return str(o.source)
    return ""
