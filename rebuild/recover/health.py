"""Is a live object healthy: ready for the next step of a rebuild, or done?

Why this exists: "the object exists and matches git" is not "the service is back". A
Deployment can match git while its pods crash; a Flux Kustomization can be Ready at an old
commit. Verify waits on this assessment and the drill report times it, so it has to be
explainable in one line and the same everywhere. The rules follow kstatus (the library behind
``flux``'s and ``kubectl wait``'s readiness) closely, in plain Python over plain dicts:

- ``status.observedGeneration < metadata.generation``: progressing (the controller has not
  seen the latest spec yet); this is checked first for every kind.
- Deployment: Available=True, updatedReplicas == replicas == availableReplicas == spec.replicas
  (default 1), no old replicas; ProgressDeadlineExceeded or ReplicaFailure: degraded.
- StatefulSet: readyReplicas == replicas and currentRevision == updateRevision (when set).
- DaemonSet: desiredNumberScheduled == numberReady == updatedNumberScheduled.
- ReplicaSet: readyReplicas == availableReplicas == spec.replicas; ReplicaFailure: degraded.
- Job: Complete=True healthy, Failed=True degraded, suspended healthy (nothing to wait for).
- CustomResourceDefinition: Established=True; NamesAccepted=False degraded.
- Namespace: phase Active. PersistentVolumeClaim: Bound (Lost: degraded).
- Pod: Running and Ready, or Succeeded; Failed or a container in CrashLoopBackOff /
  ImagePullBackOff / ErrImagePull / CreateContainerConfigError: degraded.
- Service: healthy; a LoadBalancer without an ingress address is healthy with a note (local
  clusters have no load-balancer controller, and nothing in a rebuild waits on one).
- Flux (``*.toolkit.fluxcd.io``): Ready=True, Stalled=True is degraded, Reconciling=True is
  progressing unless Ready=True at the observed generation (a routine re-reconcile of what is
  already ready: every Flux reconcile, periodic ones included, marks Reconciling first, so
  kstatus' reading made a one-shot verify fail at random); with ``expected_revision`` a
  Kustomization's ``status.lastAppliedRevision`` or a source's ``status.artifact.revision``
  (``main@sha1:<sha>``) must end with that SHA.
  HelmRelease revisions are chart versions, so they are not checked against a git SHA here:
  :mod:`rebuild.recover.helmverify` checks a HelmRelease's chart version and values digest
  against git and the objects its release rendered (Helm's release record).
- Argo CD Application: sync Synced and health Healthy (and ``status.sync.revision`` equal to
  ``expected_revision`` when given).
- Anything else with a Ready condition: Ready=True; Stalled=True is degraded.
- Everything else is healthy once it exists.

Extra rules from rebuild.yaml (``verify.health``) apply on top: every rule whose kind glob
matches must hold (a condition that must be True, or a dotted field that must equal a value).

Not supported: kstatus' "Terminating" state for every kind (only Namespace), Argo CD health
Lua scripts; ``unknown`` is returned for a value that is not an object.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rebuild.reconcilers.flux import revision_matches

HealthStatus = Literal["healthy", "progressing", "degraded", "unknown"]


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    message: str = ""

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.message else self.status


class HealthRule(Protocol):
    """A rule from rebuild.yaml ``verify.health`` (rebuild.core.config.HealthRuleSpec fits).

    ``condition``: a condition type that must be True; or ``field`` (dotted, with ``[n]``
    indexes, e.g. ``status.phase``) that must equal ``equals`` (compared as text; booleans as
    ``true``/``false``).
    """

    @property
    def kind(self) -> str: ...
    @property
    def condition(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def equals(self) -> str: ...


HEALTHY = Health("healthy")
BAD_WAITING_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
}
FLUX_GROUP_SUFFIX = ".toolkit.fluxcd.io"


def assess(live: Mapping[str, Any], *, expected_revision: str | None = None, rules: Sequence[HealthRule] = ()) -> Health:
    """The health of one live object (see the module docstring for the rules)."""
    if not isinstance(live, Mapping) or not live.get("kind"):
        return Health("unknown", "not a Kubernetes object")
    kind = str(live["kind"])
    group = str(live.get("apiVersion") or "").rpartition("/")[0]
    meta = _map(live.get("metadata"))
    status = _map(live.get("status"))

    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        return Health("progressing", f"waiting for the controller to observe generation {generation} (seen {observed})")

    health = _builtin(kind, group, live, status, expected_revision)
    if health.status != "healthy":
        return health
    for rule in rules:
        if not fnmatch.fnmatchcase(kind, rule.kind):
            continue
        broken = _check_rule(rule, live, status)
        if broken is not None:
            return broken
    return health


def _builtin(kind: str, group: str, live: Mapping[str, Any], status: Mapping[str, Any], rev: str | None) -> Health:
    if group.endswith(FLUX_GROUP_SUFFIX):
        return _flux(kind, status, rev)
    if group == "argoproj.io" and kind == "Application":
        return _argo_application(status, rev)
    check = _BY_KIND.get((group, kind))
    if check is not None:
        return check(live, status)
    return _generic(status)


# --------------------------------------------------------------------------- helpers


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _int(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type"):
            out[str(c["type"])] = c
    return out


def _cond_text(c: Mapping[str, Any]) -> str:
    reason = str(c.get("reason") or "")
    msg = str(c.get("message") or "")
    return ": ".join(x for x in (reason, msg) if x)


def _is(cond: Mapping[str, Any] | None, value: str) -> bool:
    return cond is not None and str(cond.get("status")) == value


def _spec_replicas(live: Mapping[str, Any]) -> int:
    return _int(_map(live.get("spec")).get("replicas"), 1)


# --------------------------------------------------------------------------- workloads


def _deployment(live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    conds = _conditions(status)
    progressing = conds.get("Progressing")
    if _is(progressing, "False") and progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health("degraded", f"rollout stuck: {_cond_text(progressing)}")
    failure = conds.get("ReplicaFailure")
    if _is(failure, "True") and failure is not None:
        return Health("degraded", f"cannot create pods: {_cond_text(failure)}")
    want = _spec_replicas(live)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < want:
        return Health("progressing", f"{updated}/{want} replicas updated")
    if total > updated:
        return Health("progressing", f"{total - updated} old replicas pending termination")
    if available < want:
        return Health("progressing", f"{available}/{want} replicas available")
    if want > 0 and not _is(conds.get("Available"), "True"):
        return Health("progressing", "Available condition is not True")
    return Health("healthy", f"{available}/{want} replicas available")


def _statefulset(live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    want = _spec_replicas(live)
    ready = _int(status.get("readyReplicas"))
    total = _int(status.get("replicas"))
    if ready < want:
        return Health("progressing", f"{ready}/{want} replicas ready")
    if total > want:
        return Health("progressing", f"{total - want} extra replicas pending termination")
    current, update = status.get("currentRevision"), status.get("updateRevision")
    if current and update and current != update:
        updated = _int(status.get("updatedReplicas"))
        return Health("progressing", f"rolling update: {updated}/{want} pods at revision {update}")
    return Health("healthy", f"{ready}/{want} replicas ready")


def _daemonset(_live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    desired = _int(status.get("desiredNumberScheduled"))
    ready = _int(status.get("numberReady"))
    updated = _int(status.get("updatedNumberScheduled"))
    if updated < desired:
        return Health("progressing", f"{updated}/{desired} pods updated")
    if ready < desired:
        return Health("progressing", f"{ready}/{desired} pods ready")
    return Health("healthy", f"{ready}/{desired} pods ready")


def _replicaset(live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    failure = _conditions(status).get("ReplicaFailure")
    if _is(failure, "True") and failure is not None:
        return Health("degraded", f"cannot create pods: {_cond_text(failure)}")
    want = _spec_replicas(live)
    ready = _int(status.get("readyReplicas"))
    available = _int(status.get("availableReplicas"))
    if ready < want:
        return Health("progressing", f"{ready}/{want} replicas ready")
    if available < want:
        return Health("progressing", f"{available}/{want} replicas available")
    return Health("healthy", f"{ready}/{want} replicas ready")


def _job(live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    conds = _conditions(status)
    failed = conds.get("Failed")
    if _is(failed, "True") and failed is not None:
        return Health("degraded", f"job failed: {_cond_text(failed)}")
    if _is(conds.get("Complete"), "True"):
        return Health("healthy", "complete")
    if _map(live.get("spec")).get("suspend") is True:
        return Health("healthy", "suspended")
    return Health("progressing", f"{_int(status.get('succeeded'))} succeeded, {_int(status.get('active'))} active")


def _pod(_live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    phase = str(status.get("phase") or "")
    if phase == "Succeeded":
        return Health("healthy", "succeeded")
    if phase == "Failed":
        return Health("degraded", f"pod failed: {status.get('reason') or status.get('message') or 'Failed'}")
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = _map(_map(_map(cs).get("state")).get("waiting"))
        if waiting.get("reason") in BAD_WAITING_REASONS:
            return Health("degraded", f"container {_map(cs).get('name')}: {waiting['reason']}")
    if phase == "Running":
        if _is(_conditions(status).get("Ready"), "True"):
            return Health("healthy", "running and ready")
        return Health("progressing", "running, not ready")
    return Health("progressing", f"phase {phase or 'unknown'}")


# --------------------------------------------------------------------------- cluster objects


def _crd(_live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    conds = _conditions(status)
    names = conds.get("NamesAccepted")
    if _is(names, "False") and names is not None:
        return Health("degraded", f"names not accepted: {_cond_text(names)}")
    if _is(conds.get("Established"), "True"):
        return Health("healthy", "established")
    return Health("progressing", "not established yet")


def _namespace(_live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    phase = str(status.get("phase") or "")
    if phase == "Active":
        return HEALTHY
    if phase == "Terminating":
        return Health("progressing", "terminating")
    return Health("progressing", f"phase {phase or 'unknown'}")


def _pvc(_live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    phase = str(status.get("phase") or "")
    if phase == "Bound":
        return Health("healthy", "bound")
    if phase == "Lost":
        return Health("degraded", "claim lost its volume")
    return Health("progressing", f"phase {phase or 'Pending'} (waiting for a volume; WaitForFirstConsumer binds with a pod)")


def _service(live: Mapping[str, Any], status: Mapping[str, Any]) -> Health:
    if _map(live.get("spec")).get("type") == "LoadBalancer":
        if not _map(status.get("loadBalancer")).get("ingress"):
            return Health("healthy", "LoadBalancer has no external address (no load-balancer controller); not waited for")
    return HEALTHY


_Check = Callable[[Mapping[str, Any], Mapping[str, Any]], Health]
_BY_KIND: dict[tuple[str, str], _Check] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("", "Pod"): _pod,
    ("", "Namespace"): _namespace,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


# --------------------------------------------------------------------------- reconcilers


def _flux(kind: str, status: Mapping[str, Any], rev: str | None) -> Health:
    conds = _conditions(status)
    stalled = conds.get("Stalled")
    if _is(stalled, "True") and stalled is not None:
        return Health("degraded", f"stalled: {_cond_text(stalled)}")
    reconciling = conds.get("Reconciling")
    ready = conds.get("Ready")
    again = ""
    if _is(reconciling, "True") and reconciling is not None:
        if ready is None or not _is(ready, "True"):
            return Health("progressing", f"reconciling: {_cond_text(reconciling)}")
        # Every Flux reconcile marks Reconciling=True first, the periodic ones of an object that
        # is already Ready included (helm-controller: "Fulfilling prerequisites", Ready left
        # True). Ready=True at the observed generation (checked before) is what the last
        # reconcile left, so it counts; a new revision is caught below, a new chart version or
        # values by rebuild.recover.helmverify. (kstatus says "in progress": a one-shot
        # `verify --timeout 0` then failed whenever a routine reconcile was under way.)
        again = f" (reconciling again: {_cond_text(reconciling)})"
    if ready is None:
        return Health("progressing", "no Ready condition yet")
    if not _is(ready, "True"):
        # Ready=False while a dependency or the first reconcile is still under way is progress.
        hard_fail = _is(ready, "False") and ready.get("reason") not in ("Progressing", "DependencyNotReady")
        state: HealthStatus = "degraded" if hard_fail else "progressing"
        return Health(state, f"not ready: {_cond_text(ready)}")
    if rev and kind != "HelmRelease":
        applied = status.get("lastAppliedRevision") if kind == "Kustomization" else _map(status.get("artifact")).get("revision")
        if not revision_matches(str(applied or ""), rev):
            return Health("progressing", f"ready at revision {applied or 'none'}, waiting for {rev}")
    return Health("healthy", (_cond_text(ready) or "ready") + again)


def _argo_application(status: Mapping[str, Any], rev: str | None) -> Health:
    sync = _map(status.get("sync"))
    health = str(_map(status.get("health")).get("status") or "")
    sync_status = str(sync.get("status") or "")
    if health in ("Degraded", "Missing"):
        return Health("degraded", f"health {health}, sync {sync_status or 'unknown'}")
    if health == "Unknown" or sync_status == "Unknown":
        return Health("unknown", f"health {health or 'unknown'}, sync {sync_status or 'unknown'}")
    if sync_status != "Synced":
        return Health("progressing", f"sync {sync_status or 'not reported'}")
    if health != "Healthy":
        return Health("progressing", f"health {health or 'not reported'}")
    if rev and not revision_matches(str(sync.get("revision") or ""), rev):
        return Health("progressing", f"synced at revision {sync.get('revision') or 'none'}, waiting for {rev}")
    return Health("healthy", "synced and healthy")


def _generic(status: Mapping[str, Any]) -> Health:
    conds = _conditions(status)
    stalled = conds.get("Stalled")
    if _is(stalled, "True") and stalled is not None:
        return Health("degraded", f"stalled: {_cond_text(stalled)}")
    ready = conds.get("Ready")
    if ready is None:
        return HEALTHY
    if _is(ready, "True"):
        return Health("healthy", "ready")
    return Health("progressing", f"not ready: {_cond_text(ready) or ready.get('status')}")


# --------------------------------------------------------------------------- config rules


def _check_rule(rule: HealthRule, live: Mapping[str, Any], status: Mapping[str, Any]) -> Health | None:
    if rule.condition:
        cond = _conditions(status).get(rule.condition)
        if not _is(cond, "True"):
            detail = f" ({_cond_text(cond)})" if cond is not None and _cond_text(cond) else ""
            return Health("progressing", f"condition {rule.condition} is not True{detail} (verify.health rule)")
    if rule.field:
        value = field_value(live, rule.field)
        if _as_text(value) != rule.equals:
            return Health("progressing", f"{rule.field} is {_as_text(value) or 'unset'}, want {rule.equals} (verify.health rule)")
    return None


_SEG = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_value(obj: Mapping[str, Any], dotted: str) -> Any:
    """Follow ``status.conditions[0].type`` (a leading ``.`` is allowed); None when absent."""
    node: Any = obj
    for name, index in _SEG.findall(dotted.lstrip(".")):
        if name:
            node = node.get(name) if isinstance(node, Mapping) else None
        else:
            i = int(index)
            node = node[i] if isinstance(node, list) and 0 <= i < len(node) else None
        if node is None:
            return None
    return node


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
