"""Attribution: which differences between git and the live cluster are manual changes, and who made them.

Why this module exists: a difference is only worth a pull request when a person made it. This is
the one place that decides it: it runs :func:`rebuild.recover.verify.compare` (which sees ownership the
way server-side apply does) over everything capture listed, adds the objects git does not know
and the ones that disappeared, classifies each finding by the field manager behind it, and
measures how much of the live cluster git can rebuild (DR coverage).

Classes (:func:`rebuild.core.managedfields.classify_manager`, lists from ``capture.humans``,
``capture.controllers`` and ``capture.reconcilers`` added to the defaults): a ``changed``/
``added`` finding is ``human`` when any owner of the live value is a person (the latest such
owner is "changed by"), ``reconciler`` when only reconcilers own it (the cluster runs another git
revision), ``controller`` when only controllers do. A field nobody owns (the /scale subresource of
a custom resource does not update managedFields, kubernetes#131892) and ``deleted`` objects are
``human`` with an unknown manager: rebuild cannot prove they are noise, so they are shown.
A ``created`` object is classified by its creating manager: the manager of its oldest
managedFields entry (a later server-side apply that takes over every field erases that entry;
then the oldest remaining one is named). Only ``human`` findings are reported; the others go to
``noise`` with a reason, and every live object left out of capture is counted in ``excluded`` by
reason, so nothing is dropped without a word. An ``added`` field whose value is the server's
default (:data:`rebuild.capture.drift.defaults.SERVER_DEFAULTS`) is noise too.

Which live objects count: a live object that matches a desired object is always compared and
always counts as rebuildable. Any other live object is skipped when it lives outside the
captured namespaces, is cluster-scoped (capture lists cluster-scoped objects only when git
declares them), has ``ownerReferences`` (a controller made it and will make it again), matches a
default exclusion or ``capture.kinds`` (:mod:`rebuild.capture.drift.defaults`), or is managed only by
controllers.

DR coverage: of the live objects left after those exclusions, the share that matches a desired
object, and the list of the others with the reason (created by a person, applied by a reconciler
from something the rendered sources do not declare).

Objects a Flux HelmRelease rendered: capture adds them to the desired objects from Helm's own
record of the release (:mod:`rebuild.capture.helm`; their source is the HelmRelease's file:line,
``Source.via`` :data:`~rebuild.capture.drift.findings.RENDERED_BY_HELM`), so they are
compared and attributed like any object git declares and count as rebuildable. A live object
that helm-controller labelled for a HelmRelease git declares (``helm.toolkit.fluxcd.io/name``
and ``/namespace``: its post-renderer's origin labels, and the owner labels of the HelmChart it
applies from ``spec.chart``) but that is not among them (the release record could not be read;
the HelmChart) counts as rebuildable too and is listed in ``unchecked`` with why it was not
compared.

Secrets: :func:`rebuild.recover.verify.compare` already replaces every Secret value in a difference by
``<redacted sha256:xxxxxxxx>``; a created Secret is stored here with each ``data``/``stringData``
value redacted the same way and without its last-applied annotation (which holds the values in
clear). No raw Secret value leaves this module.

Pure: values in, values out (no cluster, no git, no clock).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from rebuild.capture.drift.defaults import KindFilter, exclusion_reason, is_server_default
from rebuild.capture.drift.findings import Coverage, DriftReport, Excluded, Finding, FindingKind, Noise, Uncovered, is_secret
from rebuild.core.config import CaptureSpec
from rebuild.core.managedfields import (
    DEFAULT_CONTROLLERS,
    DEFAULT_HUMANS,
    DEFAULT_RECONCILERS,
    ManagerClass,
    ManagerClassifier,
    Owner,
    latest,
    ownership,
)
from rebuild.core.model import DesiredObject, FieldPath, ObjectRef
from rebuild.recover.verify import LAST_APPLIED, FieldDiff, compare, redact

# Metadata the API server writes; never part of a captured object (nor of its digest).
BOOKKEEPING_META = (
    "managedFields",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def classifier_for(spec: CaptureSpec) -> ManagerClassifier:
    """The defaults plus ``capture.humans`` / ``controllers`` / ``reconcilers``."""
    return ManagerClassifier(
        humans=(*DEFAULT_HUMANS, *spec.humans),
        controllers=(*DEFAULT_CONTROLLERS, *spec.controllers),
        reconcilers=(*DEFAULT_RECONCILERS, *spec.reconcilers),
    )


def _owner_refs(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    if not isinstance(refs, list) or not refs:
        return None
    first = refs[0] if isinstance(refs[0], Mapping) else {}
    return f"{first.get('kind', '?')}/{first.get('name', '?')}"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _captured_body(obj: Mapping[str, Any], ref: ObjectRef) -> dict[str, Any]:
    """The live object without status and server bookkeeping; a Secret's values redacted."""
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for key in BOOKKEEPING_META:
            meta.pop(key, None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            ann.pop(LAST_APPLIED, None)
            if not ann:
                meta.pop("annotations")
    if is_secret(ref):
        for key in ("data", "stringData"):
            values = body.get(key)
            if isinstance(values, dict):
                body[key] = {k: redact(str(v)) for k, v in values.items()}
    return body


# --------------------------------------------------------------------------- main


def find_drift(
    desired: Sequence[DesiredObject],
    live: Sequence[dict[str, Any]],
    *,
    spec: CaptureSpec,
    managed_namespaces: Collection[str],
    listed: Collection[tuple[str, str]] | None = None,
    skipped: Mapping[tuple[str, str], str] | None = None,
    helm_problems: Mapping[ObjectRef, str] | None = None,
) -> DriftReport:
    """Compare what git declares with everything capture listed; see the module docstring.

    ``live`` holds every object listed in ``managed_namespaces`` plus the cluster-scoped objects
    git declares. An empty ``managed_namespaces`` means the namespaces of the desired objects.
    Desired objects in other namespaces are ``unchecked`` (their live state was not listed), and
    so are those of a (group, kind) not in ``listed`` (when given; ``skipped`` says why): a
    kind that could not be listed says nothing about whether its objects were deleted.
    ``helm_problems`` says, per HelmRelease, why the objects it rendered are not among ``desired``.
    """
    classifier = classifier_for(spec)
    kinds = KindFilter.of(spec.kinds)
    namespaces = set(managed_namespaces) or {d.ref.namespace for d in desired if d.ref.namespace}
    report = DriftReport()
    by_ref: dict[ObjectRef, DesiredObject] = {d.ref: d for d in desired}
    seen: set[ObjectRef] = set()
    live_count = rebuildable = 0
    uncovered: list[Uncovered] = []

    scalers = _autoscaled(desired)
    for obj in live:
        ref = ObjectRef.of(obj)
        if ref in seen:
            continue  # listed twice (e.g. two API versions of one kind): compare it once
        seen.add(ref)
        want = by_ref.get(ref)
        if want is not None:
            if ref.namespace and ref.namespace not in namespaces:
                report.unchecked.append(Excluded(ref, f"namespace {ref.namespace} is not captured (capture.namespaces)"))
                continue
            live_count += 1
            rebuildable += 1
            _compare_one(want, obj, classifier, report, scalers.get(ref))
            continue
        if not ref.namespace:
            report.excluded.append(Excluded(ref, "cluster-scoped and not declared in git"))
            continue
        if ref.namespace not in namespaces:
            report.excluded.append(Excluded(ref, f"namespace {ref.namespace} is not captured"))
            continue
        owner = _owner_refs(obj)
        if owner is not None:
            report.excluded.append(Excluded(ref, "owned by another object (ownerReferences)"))
            continue
        release = _rendered_by(obj, by_ref)
        if release is not None:
            # git rebuilds it (helm-controller renders it again from the HelmRelease), so it is
            # covered; but without Helm's record there is nothing to compare it with: say so.
            live_count += 1
            rebuildable += 1
            name = f"HelmRelease {release.ref.namespace}/{release.ref.name}"
            if ref.kind == "HelmChart" and ref.group == "source.toolkit.fluxcd.io":
                made = f"made by helm-controller from spec.chart of {name} ({release.source}), applied again on every reconcile"
            else:
                problem = (helm_problems or {}).get(release.ref) or "it is not in the manifest of the release's latest revision"
                made = f"rendered by {name} ({release.source}), not compared: {problem}"
            report.unchecked.append(Excluded(ref, made))
            continue
        if (_meta(obj).get("labels") or {}).get("app.kubernetes.io/managed-by") == "rebuild":
            report.excluded.append(Excluded(ref, "made by rebuild's platform stack from rebuild.yaml (rebuilt with it)"))
            continue
        why = exclusion_reason(obj, ref, kinds)
        if why is not None:
            report.excluded.append(Excluded(ref, why))
            continue
        entries = ownership(obj).entries
        classes = {classifier(o) for o in entries}
        if entries and classes == {"controller"}:
            report.excluded.append(Excluded(ref, "created and managed only by controllers"))
            continue
        live_count += 1
        finding = _created(obj, ref, entries, classifier)
        if finding.klass == "human":
            who = finding.manager or "an unknown client"
            uncovered.append(Uncovered(ref, f"created live by {who}, not in git", finding.manager, finding.klass))
            report.findings.append(finding)
        else:
            reason = f"applied by {finding.manager} ({finding.klass}) but not declared in the rendered sources"
            uncovered.append(Uncovered(ref, reason, finding.manager, finding.klass))
            report.noise.append(Noise(finding, reason))

    for d in desired:
        if d.ref in seen:
            continue
        if d.ref.namespace and d.ref.namespace not in namespaces:
            report.unchecked.append(Excluded(d.ref, f"namespace {d.ref.namespace} is not captured (capture.namespaces)"))
            continue
        if listed is not None and (d.ref.group, d.ref.kind) not in listed:
            why = (skipped or {}).get((d.ref.group, d.ref.kind)) or f"kind {d.ref.kind} is not served by the API server"
            report.unchecked.append(Excluded(d.ref, f"not listed: {why}"))
            continue
        report.findings.append(
            Finding("deleted", d.ref, d.api_version, None, None, None, None, None, None, None, d.source, "human")
        )

    report.findings.sort(key=Finding.sort_key)
    report.noise.sort(key=lambda n: n.finding.sort_key())
    report.excluded.sort(key=lambda e: _ref_key(e.ref))
    report.unchecked.sort(key=lambda e: _ref_key(e.ref))
    report.coverage = Coverage(live_count, rebuildable, tuple(sorted(uncovered, key=lambda u: _ref_key(u.ref))))
    return report


HELM_GROUP = "helm.toolkit.fluxcd.io"
# helm-controller's post-renderer (internal/postrender/origin_labels.go, v1.4.3) labels every
# object of a release with the HelmRelease's name and namespace.
HELM_NAME_LABEL = f"{HELM_GROUP}/name"
HELM_NAMESPACE_LABEL = f"{HELM_GROUP}/namespace"


def _rendered_by(obj: Mapping[str, Any], by_ref: Mapping[ObjectRef, DesiredObject]) -> DesiredObject | None:
    """The HelmRelease in git whose release rendered ``obj``, by helm-controller's origin labels."""
    labels = _meta(obj).get("labels")
    if not isinstance(labels, Mapping):
        return None
    name, namespace = labels.get(HELM_NAME_LABEL), labels.get(HELM_NAMESPACE_LABEL)
    if not isinstance(name, str) or not isinstance(namespace, str) or not name:
        return None
    return by_ref.get(ObjectRef(HELM_GROUP, "HelmRelease", namespace, name))


def _ref_key(r: ObjectRef) -> tuple[str, str, str, str]:
    return (r.namespace, r.kind, r.name, r.group)


def _created(obj: Mapping[str, Any], ref: ObjectRef, entries: list[Owner], classifier: ManagerClassifier) -> Finding:
    meta = _meta(obj)
    creator = min(entries, key=lambda o: o.time or "") if entries else None
    klass: ManagerClass = classifier(creator) if creator is not None else "human"
    created_at = meta.get("creationTimestamp")
    return Finding(
        "created",
        ref,
        str(obj.get("apiVersion") or ""),
        None,
        None,
        _captured_body(obj, ref),
        creator.manager if creator else None,
        creator.operation if creator else None,
        creator.subresource if creator else None,
        str(created_at) if created_at else (creator.time if creator else None),
        None,
        klass,
        tuple(entries),
    )


_SCALED_KINDS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
# Fields a person sets to operate the reconciler, not to change what the cluster should be:
# `flux suspend` (spec.suspend) and `flux reconcile` (the requestedAt annotation). A pull request
# that suspends a Kustomization in git would stop the rebuilt cluster from ever reconciling.
_FLUX_OPERATIONS: tuple[tuple[FieldPath, str], ...] = (
    (("spec", "suspend"), "suspending reconciliation is an operation (flux suspend/resume), not desired state"),
    (("metadata", "annotations", "reconcile.fluxcd.io/requestedAt"), "a reconcile request (flux reconcile), not desired state"),
)


def _operational(ref: ObjectRef, path: FieldPath) -> str | None:
    if not ref.group.endswith(".toolkit.fluxcd.io"):
        return None
    return next((why for p, why in _FLUX_OPERATIONS if path == p), None)


def _autoscaled(desired: Sequence[DesiredObject]) -> dict[ObjectRef, DesiredObject]:
    """Workloads whose replicas an autoscaler git declares owns (HorizontalPodAutoscaler's scaleTargetRef)."""
    out: dict[ObjectRef, DesiredObject] = {}
    for d in desired:
        if d.ref.kind != "HorizontalPodAutoscaler" or d.ref.group != "autoscaling":
            continue
        target = (d.body.get("spec") or {}).get("scaleTargetRef") or {}
        kind, name = str(target.get("kind") or ""), str(target.get("name") or "")
        api = str(target.get("apiVersion") or "")
        group = api.rsplit("/", 1)[0] if "/" in api else ""
        if kind in _SCALED_KINDS and name:
            out[ObjectRef(group, kind, d.ref.namespace, name)] = d
    return out


def _scaled_without_owner(want: DesiredObject, obj: Mapping[str, Any], result: Any) -> FieldDiff | None:
    """``kubectl scale`` of a workload whose manifest has no replicas, when managedFields kept no
    entry for it (the API server records none for a /scale write to a field nobody owned). The
    server's default is 1; any other value git does not declare was set by someone."""
    path: FieldPath = ("spec", "replicas")
    if want.ref.kind not in _SCALED_KINDS or "replicas" in (want.body.get("spec") or {}):
        return None
    live = (obj.get("spec") or {}).get("replicas") if isinstance(obj.get("spec"), Mapping) else None
    if not isinstance(live, int) or isinstance(live, bool) or live == 1:
        return None
    if any(d.path == path for d in result.diffs) or any(s.diff.path == path for s in result.suppressed):
        return None
    return FieldDiff(path, None, live, want.source_of(path), ownership(obj).of(path), "added")


def _compare_one(
    want: DesiredObject,
    obj: dict[str, Any],
    classifier: ManagerClassifier,
    report: DriftReport,
    scaler: DesiredObject | None = None,
) -> None:
    result = compare(want, obj, classifier=classifier)
    scaled = _scaled_without_owner(want, obj, result)
    if scaled is not None:
        result.diffs.append(scaled)
    for s in result.suppressed:
        f = _from_diff(want, s.diff, classifier)
        report.noise.append(Noise(f, s.reason))
    for d in result.diffs:
        f = _from_diff(want, d, classifier)
        operational = _operational(want.ref, d.path)
        if operational is not None:
            report.noise.append(Noise(f, operational))
        elif scaler is not None and d.path == ("spec", "replicas"):
            # The autoscaler decides replicas; whatever a person set is overwritten on its next sync.
            report.noise.append(Noise(f, f"spec.replicas is owned by {scaler.ref} ({scaler.source}) in git"))
        elif f.klass == "human" and f.kind == "added" and is_server_default(want.ref.kind, d.path, d.live, obj):
            report.noise.append(Noise(f, "the value the API server fills in by default (see drift.SERVER_DEFAULTS)"))
        elif f.klass == "human":
            report.findings.append(f)
        else:
            who = ", ".join(sorted({o.manager for o in d.owners}))
            reason = (
                f"owned only by reconcilers ({who}): the cluster runs another git revision, not a manual change"
                if f.klass == "reconciler"
                else f"owned only by controllers ({who})"
            )
            report.noise.append(Noise(f, reason))


def _from_diff(want: DesiredObject, d: FieldDiff, classifier: ManagerClassifier) -> Finding:
    classes = {o: classifier(o) for o in d.owners}
    humans = [o for o, c in classes.items() if c == "human"]
    if humans:
        klass: ManagerClass = "human"
        who = latest(humans)
    elif not d.owners:
        klass, who = "human", None
    elif "reconciler" in classes.values():
        klass, who = "reconciler", latest(o for o, c in classes.items() if c == "reconciler")
    else:
        klass, who = "controller", latest(d.owners)
    kind: FindingKind = "added" if d.change == "added" else "changed"
    return Finding(
        kind,
        want.ref,
        want.api_version,
        d.path,
        d.git,
        d.live,
        who.manager if who else None,
        who.operation if who else None,
        who.subresource if who else None,
        who.time if who else None,
        d.source,
        klass,
        tuple(d.owners),
    )
