"""Verify a HelmRelease: installed at the chart version and values git declares, and every object it rendered healthy.

Why: a HelmRelease that is Ready says helm-controller ran Helm, not that the release is the
one git declares or that what Helm installed still runs. A recovery has to prove both, and a
failing Deployment made by a chart must point at the one place a person can fix it: the
HelmRelease's file:line in git (the chart's templates are not in the repo being rebuilt).

What is checked (helm-controller v1.4.3's ``helm.toolkit.fluxcd.io/v2`` status, field names
from its ``api/v2/helmrelease_types.go`` and ``snapshot_types.go``):

- The HelmRelease's own health by the Flux rules of :mod:`rebuild.recover.health`
  (Ready=True, ``status.observedGeneration`` == ``metadata.generation``, Stalled=True is
  degraded). Ready=False/Stalled messages are helm-controller's own (a chart version the
  repository does not have, a values type the chart's templates reject); a hint with the git
  line to change is added where the reason says which line that is.
- The latest release snapshot (``status.history``, the entry with the highest ``version``,
  helm-controller's ``Snapshots.Latest``) must be ``deployed`` and:
  - its ``chartVersion`` must satisfy ``spec.chart.spec.version`` for a chart from a
    HelmRepository: an exact version must be equal (semver equality, build metadata ignored);
    a range (Masterminds/semver syntax, what source-controller resolves: ``>=``, ``<``, ``!=``,
    ``~``, ``^``, ``x``/``*`` wildcards, ``a - b`` hyphen ranges, ``,``/space for and, ``||``
    for or) must hold; ``*`` or no version: any. Not checked for charts from a GitRepository or
    Bucket (Flux ignores ``version`` there: the chart's Chart.yaml decides) nor for
    ``spec.chartRef`` (the version lives in the OCIRepository or HelmChart), and not for a
    range this parser does not read (the health message says so).
  - its ``configDigest`` must equal the digest of ``spec.values`` that
    :func:`rebuild.desired.helm.values_digest` computes; with ``valuesFrom``, of the values
    composed from the ConfigMaps and Secrets git declares (:mod:`rebuild.desired.helmvalues`;
    not checked, and said so, when one of them is not in git).
- Every object in the release's stored manifest (:mod:`rebuild.adapters.helmstore`, Helm's
  own record) must exist and be healthy by :func:`rebuild.recover.health.assess`. Rendered
  objects are not compared field by field with the manifest: that is capture's job, and
  they carry no git line of their own.

Nothing of the release Secret reaches a result: only object identities and chart versions.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rebuild.adapters.helmstore import ReleaseDecodeError, RenderedObject, StoredRelease, read_release, secret_name
from rebuild.adapters.kube import Kube
from rebuild.core.errors import KubeError
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.helm import HelmReleasePlan, is_helm_release, plan_release
from rebuild.desired.helmvalues import ComposedValues, ValuesLookup, compose_release
from rebuild.recover.health import Health, HealthRule, assess

DEPLOYED = "deployed"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RenderedVerdict:
    """One object a HelmRelease rendered: found live or not, its health, and the release to blame."""

    ref: ObjectRef
    present: bool
    health: Health
    release: str  # "HelmRelease ns/name"
    source: Source  # the HelmRelease's file:line

    @property
    def ok(self) -> bool:
        return self.present and self.health.healthy

    def problem(self) -> str:
        by = f"rendered by {self.release} at {self.source}"
        if not self.present:
            return f"{self.ref}: missing from the cluster ({by})"
        return f"{self.ref}: {self.health} ({by})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "present": self.present,
            "ok": self.ok,
            "health": {"status": self.health.status, "message": self.health.message},
            "release": self.release,
            "source": str(self.source),
        }


@dataclass(frozen=True)
class ReleaseVerdict:
    """A HelmRelease's health (version and values included) and the objects of its release."""

    health: Health
    rendered: tuple[RenderedVerdict, ...] = ()


# --------------------------------------------------------------------------- the HelmRelease itself


def latest_snapshot(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``Snapshots.Latest``: the history entry with the highest release version."""
    history = [s for s in status.get("history") or [] if isinstance(s, Mapping)]
    if not history:
        return None
    return max(history, key=lambda s: s["version"] if isinstance(s.get("version"), int) else -1)


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def release_health(
    desired: DesiredObject,
    live: Mapping[str, Any],
    *,
    rules: Sequence[HealthRule] = (),
    values_lookup: ValuesLookup | None = None,
) -> Health:
    """The health of a live HelmRelease against what git declares for it (see the module docstring).

    ``values_lookup``: the ConfigMaps and Secrets git declares (Secrets decrypted in memory), so
    the values of a release with ``spec.valuesFrom`` are composed as helm-controller composes
    them and their digest compared too (:mod:`rebuild.desired.helmvalues`).
    """
    plan = plan_release(desired)
    who = f"HelmRelease {desired.ref.namespace}/{desired.ref.name}"
    base = assess(live, rules=rules)
    if not isinstance(plan, HelmReleasePlan):
        return base  # `plan` reports the problem with its file:line; the live status says the rest
    if not base.healthy:
        if base.status == "progressing":
            base = _failed_at_current_generation(live) or base
        return Health(base.status, base.message + _hint(desired, plan, live))
    status = _map(live.get("status"))
    snap = latest_snapshot(status)
    reconcile = f"`flux reconcile helmrelease -n {plan.namespace} {plan.name}`"
    if snap is None:
        return Health("progressing", f"Ready, but helm-controller records no release in status.history yet ({desired.source})")
    installed = str(snap.get("chartVersion") or "")
    chart = f"{snap.get('chartName') or plan.chart} {installed}"
    if snap.get("status") != DEPLOYED:
        what = f"release {snap.get('namespace')}/{snap.get('name')} v{snap.get('version')}"
        return Health("progressing", f"{what} is {snap.get('status')}, not deployed")
    if plan.shape == "chart" and plan.source_kind == "HelmRepository" and not plan.latest:
        where = desired.source_of(("spec", "chart", "spec", "version"))
        verdict = version_satisfies(plan.version, installed)
        if verdict is False:
            return Health(
                "degraded",
                f"{who}: helm-controller installed chart {chart}; git declares version {plan.version} at {where}: "
                f"wait for the reconcile or run {reconcile}; if {plan.version} is not in HelmRepository "
                f"{plan.source_namespace}/{plan.source_name}, change spec.chart.spec.version at {where}",
            )
        if verdict is None:
            chart += f" (version constraint {plan.version!r} not checked: not a range this verify reads)"
    want, unchecked = plan.values_digest, ""
    if plan.values_from:
        composed = _composed(desired, plan, values_lookup)
        want, unchecked = composed.digest, composed.unresolved
    if want:
        have = str(snap.get("configDigest") or "")
        if have != want:
            where = plan.values_source or desired.source
            declared = f"spec.values at {where}"
            if plan.values_from:
                refs = ", ".join(str(v) for v in plan.values_from)
                declared = f"spec.valuesFrom {refs} at {desired.source_of(('spec', 'valuesFrom'))}" + (
                    f" and spec.values at {where}" if plan.has_values else ""
                )
            return Health(
                "progressing",
                f"{who}: helm-controller installed values with digest {have or 'none'}; git declares "
                f"{want} ({declared}): wait for the reconcile or run {reconcile}",
            )
    done = f"release {snap.get('namespace')}/{snap.get('name')} v{snap.get('version')} deployed, chart {chart}"
    return Health("healthy", done + (f" (values digest not checked: {unchecked})" if unchecked else ""))


def _composed(desired: DesiredObject, plan: HelmReleasePlan, lookup: ValuesLookup | None) -> ComposedValues:
    if lookup is None:
        return ComposedValues(unresolved="the ConfigMaps and Secrets of spec.valuesFrom were not given")
    return compose_release(desired, plan, lookup)


def _failed_at_current_generation(live: Mapping[str, Any]) -> Health | None:
    """helm-controller's failure for the current spec, even before ``status.observedGeneration`` moves.

    When it waits for the chart (``SourceNotReady``: a version the repository does not have)
    helm-controller does not advance ``status.observedGeneration``, so the generic rule says
    "waiting for the controller to observe generation N"; but fluxcd/pkg's ``conditions.Set``
    stamps each condition with the generation it judged, and that message is the one a person
    needs.
    """
    generation = _map(live.get("metadata")).get("generation")
    conds = {str(c.get("type")): c for c in _map(live.get("status")).get("conditions") or [] if isinstance(c, Mapping)}
    for kind in ("Stalled", "Ready"):
        c = conds.get(kind)
        if c is None or c.get("observedGeneration") != generation or not isinstance(generation, int):
            continue
        text = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        if kind == "Stalled" and c.get("status") == "True":
            return Health("degraded", f"stalled: {text}")
        if kind == "Ready" and c.get("status") == "False":
            settled = c.get("reason") not in ("Progressing", "DependencyNotReady", "SourceNotReady") or _MISSING_VERSION.search(
                text
            )
            return Health("degraded" if settled else "progressing", f"not ready: {text}")
    return None


_MISSING_VERSION = re.compile(r"with version matching|failed to get chart version")


def _hint(desired: DesiredObject, plan: HelmReleasePlan, live: Mapping[str, Any]) -> str:
    """The git line to change for helm-controller's failures that name one."""
    fix = release_fix(desired, plan, live)
    return f"; {fix}" if fix else ""


def release_fix(desired: DesiredObject, plan: HelmReleasePlan, live: Mapping[str, Any]) -> str:
    """What to change in git for helm-controller's failure, with the line ("" when it names none)."""
    status = _map(live.get("status"))
    text = " ".join(
        f"{c.get('reason', '')} {c.get('message', '')}" for c in status.get("conditions") or [] if isinstance(c, Mapping)
    )
    if _MISSING_VERSION.search(text):
        where = desired.source_of(("spec", "chart", "spec", "version"))
        return (
            f"the chart version {plan.version} is not in {plan.source_kind} {plan.source_namespace}/{plan.source_name}: "
            f"change spec.chart.spec.version at {where}"
        )
    if any(r in text for r in ("InstallFailed", "UpgradeFailed", "RetriesExceeded")):
        where = plan.values_source or desired.source
        return (
            f"fix the values the message names (spec.values at {where}) or the chart, then run "
            f"`flux reconcile helmrelease -n {plan.namespace} {plan.name} --force`"
        )
    return ""


_RELEASE_FAILED = {"InstallFailed": "install", "UpgradeFailed": "upgrade"}
# Failures of a Helm action that another attempt can get past without a change in git: the
# cluster was not ready for the release yet (a CRD or namespace another object brings, the API
# server busy, a wait that timed out, a lock another action holds).
_TRANSIENT = re.compile(
    r"no matches for kind|ensure CRDs are installed first|resource mapping not found|namespaces? \S+ not found"
    r"|connection refused|i/o timeout|context deadline exceeded|timed out waiting|TLS handshake timeout"
    r"|the server is currently unable|etcdserver|cluster unreachable|the object has been modified|too many requests"
    r"|another operation \(install/upgrade/rollback\) is in progress",
    re.I,
)


def settled_failure(desired: DesiredObject, live: Mapping[str, Any], *, chart_in_git: bool = False) -> str | None:
    """helm-controller's failure of the current spec that waiting will not heal; None when there is none.

    All judged at ``metadata.generation`` (fluxcd/pkg stamps each condition with the generation
    it judged). Settled:

    - Stalled=True: helm-controller's own "I stopped" (RetriesExceeded once the remediation
      retries are spent, MissingRollbackTarget).
    - Ready=False InstallFailed / UpgradeFailed, unless helm-controller will try again with a
      chance: a failed action that stored a release counts in ``status.installFailures`` /
      ``upgradeFailures`` and is remediated and retried while that count is within
      ``spec.<install|upgrade>.remediation.retries`` (default 0, -1 forever; its
      ``RetriesExhausted``); one that stored nothing (the chart did not render: a values type
      its templates reject, a schema the values break) is retried with the same chart and
      values, so it fails the same way, unless the message says the cluster was not ready yet
      (``_TRANSIENT``: a CRD or namespace still coming, a timeout, a lock).
    - Ready=False with a chart version the repository does not have ("no chart version
      matching"), unless ``chart_in_git``: the preflight found that version in the charts rebuild
      serves, so the HelmRepository's index predates the served one and heals at its next fetch.

    Not settled: SourceNotReady while the chart is fetched, Progressing, DependencyNotReady,
    conditions of an older generation.
    """
    generation = _map(live.get("metadata")).get("generation")
    if not isinstance(generation, int):
        return None
    status = _map(live.get("status"))
    conds = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    current = {k: c for k, c in conds.items() if c.get("observedGeneration") == generation}

    def text(c: Mapping[str, Any]) -> str:
        return ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)

    stalled, ready = current.get("Stalled"), current.get("Ready")
    failed = ready is not None and ready.get("status") == "False"
    if stalled is not None and stalled.get("status") == "True":
        return f"stalled: {text(stalled)}" + (f"; not ready: {text(ready)}" if ready is not None and failed else "")
    if ready is None or not failed:
        return None
    said = text(ready)
    action = _RELEASE_FAILED.get(str(ready.get("reason") or ""))
    if action is not None:
        retries = _map(_map(_map(live.get("spec")).get(action)).get("remediation")).get("retries", 0)
        failures = status.get(f"{action}Failures", 0)
        retries = retries if isinstance(retries, int) else 0
        failures = failures if isinstance(failures, int) else 0
        if failures > 0 and (retries < 0 or failures <= retries):
            return None  # a stored release failed: helm-controller remediates and tries again
        if failures == 0 and _TRANSIENT.search(said):
            return None
        return f"not ready: {said}"
    if str(ready.get("reason")) == "RetriesExceeded" or (not chart_in_git and _MISSING_VERSION.search(said)):
        return f"not ready: {said}"
    return None


# --------------------------------------------------------------------------- chart versions (Masterminds/semver)

_VERSION = re.compile(
    r"^v?(0|[1-9]\d*|[xX*])(?:\.(0|[1-9]\d*|[xX*]))?(?:\.(0|[1-9]\d*|[xX*]))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_EXACT = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_COMPARATOR = re.compile(r"^(=|!=|>=|=>|<=|=<|>|<|~>|~|\^)?\s*(\S+)$")

_Key = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]  # major, minor, patch, 'not a prerelease', prerelease


def _parse(text: str) -> tuple[list[int | None], str] | None:
    """Version parts (None for a wildcard or a missing part) and the prerelease; None if not a version."""
    m = _VERSION.match(text.strip())
    if not m:
        return None
    parts: list[int | None] = []
    for p in m.group(1, 2, 3):
        parts.append(None if p is None or p in "xX*" else int(p))
    return parts, m.group(4) or ""


def _pre_key(pre: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()


def _key(v: tuple[int, int, int, str]) -> _Key:
    # a version without a prerelease sorts after every prerelease of it
    return (v[0], v[1], v[2], 0 if v[3] else 1, _pre_key(v[3]))


def _concrete(text: str) -> tuple[int, int, int, str] | None:
    parsed = _parse(text)
    if parsed is None or any(p is None for p in parsed[0]):
        return None
    major, minor, patch = (p or 0 for p in parsed[0])
    return major, minor, patch, parsed[1]


_Check = Callable[[tuple[int, int, int, str]], bool]


def _comparator(op: str, text: str) -> tuple[_Check, bool] | None:
    """One comparator as a predicate, and whether it names a prerelease."""
    parsed = _parse(text)
    if parsed is None:
        return None
    parts, pre = parsed
    fixed = 0 if parts[0] is None else (1 if parts[1] is None else (2 if parts[2] is None else 3))
    base = [p or 0 for p in parts[:fixed]] + [0] * (3 - fixed)
    low = _key((base[0], base[1], base[2], pre))

    def bump(i: int) -> _Key:
        b = [*base[:i], base[i] + 1, *([0] * (2 - i))]
        return (b[0], b[1], b[2], 0, ())  # below every prerelease of b: `<2.0.0` excludes 2.0.0-rc.1

    def rng(lo: _Key | None, hi: _Key | None) -> _Check:
        return lambda v: (lo is None or _key(v) >= lo) and (hi is None or _key(v) < hi)

    op = {"=>": ">=", "=<": "<=", "~>": "~"}.get(op, op or "=")
    if fixed == 0:
        any_v: _Check = lambda v: op not in ("<", ">", "!=")  # noqa: E731  `*`, `>=*`: everything
        return any_v, bool(pre)
    upper = bump(fixed - 1) if fixed < 3 else None
    if op == "=":
        check = rng(low, upper) if upper else (lambda v: _key(v) == low)
    elif op == "!=":
        check = (lambda v: not rng(low, upper)(v)) if upper else (lambda v: _key(v) != low)
    elif op == ">":
        check = rng(upper, None) if upper else (lambda v: _key(v) > low)
    elif op == ">=":
        check = rng(low, None)
    elif op == "<":
        check = rng(None, low)
    elif op == "<=":
        check = rng(None, upper) if upper else (lambda v: _key(v) <= low)
    elif op == "~":
        check = rng(low, bump(1 if fixed > 1 else 0))
    else:  # ^: the leftmost non-zero part may not change
        first = next((i for i in range(fixed) if base[i] != 0), fixed - 1)
        check = rng(low, bump(first))
    return check, bool(pre)


def version_key(version: str) -> _Key | None:
    """A sort key of a concrete version (semver order, a prerelease before its release); None if not one."""
    have = _concrete(version)
    return _key(have) if have is not None else None


def version_satisfies(declared: str, installed: str) -> bool | None:
    """Does the installed chart version satisfy what git declares? None: not read here.

    An exact version must be equal; a range follows Masterminds/semver v3 (source-controller's
    library): a prerelease satisfies a range only when a comparator of the same ``,``-group
    names a prerelease. ``*`` and ``""``: anything.
    """
    declared = declared.strip()
    have = _concrete(installed)
    if have is None:
        return None
    if declared in ("", "*"):
        return True
    if _EXACT.match(declared):
        want = _concrete(declared)
        return want is not None and _key(want) == _key(have)
    for alternative in declared.split("||"):
        group = _and_group(alternative)
        if group is None:
            return None
        if have[3] and not any(pre for _check, pre in group):
            continue
        if all(check(have) for check, _pre in group):
            return True
    return False


def _and_group(text: str) -> list[tuple[_Check, bool]] | None:
    text = text.strip()
    hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", text)
    if hyphen:
        lo, hi = _comparator(">=", hyphen.group(1)), _comparator("<=", hyphen.group(2))
        return [lo, hi] if lo and hi else None
    # "> 1.2" is one comparator: glue operators to their version, then split on commas and spaces
    glued = re.sub(r"(=|!=|>=|=>|<=|=<|>|<|~>|~|\^)\s+", r"\1", text)
    out: list[tuple[_Check, bool]] = []
    for token in re.split(r"[,\s]+", glued):
        if not token:
            continue
        m = _COMPARATOR.match(token)
        one = _comparator(m.group(1) or "", m.group(2)) if m else None
        if one is None:
            return None
        out.append(one)
    return out or None


# --------------------------------------------------------------------------- rendered objects


def rendered_verdicts(
    stored: StoredRelease,
    live: Mapping[ObjectRef, Mapping[str, Any]],
    namespaced: Callable[[str, str], bool],
    *,
    release: str,
    source: Source,
    rules: Sequence[HealthRule] = (),
) -> tuple[RenderedVerdict, ...]:
    """Each object of the stored release: present and healthy? (pure: live objects are given)."""
    out = []
    for obj in stored.objects:
        ref = rendered_ref(obj, stored.namespace, namespaced)
        found = live.get(ref)
        health = assess(found, rules=rules) if found is not None else Health("unknown", "not found")
        out.append(RenderedVerdict(ref, found is not None, health, release, source))
    return tuple(out)


def rendered_ref(obj: RenderedObject, release_namespace: str, namespaced: Callable[[str, str], bool]) -> ObjectRef:
    """Where Helm put the object: its own namespace, else the release's for a namespaced kind."""
    group = obj.api_version.rsplit("/", 1)[0] if "/" in obj.api_version else ""
    ns = obj.namespace or (release_namespace if namespaced(obj.api_version, obj.kind) else "")
    return ObjectRef(group, obj.kind, ns, obj.name)


# --------------------------------------------------------------------------- I/O: one pass for every HelmRelease


def check_releases(
    kube: Kube,
    pairs: Sequence[tuple[DesiredObject, Mapping[str, Any] | None]],
    *,
    rules: Sequence[HealthRule] = (),
    workers: int = 8,
    values_lookup: ValuesLookup | None = None,
) -> dict[ObjectRef, ReleaseVerdict]:
    """Each live HelmRelease's health and its rendered objects' (one LIST per rendered kind).

    ``values_lookup``: see :func:`release_health`."""
    out: dict[ObjectRef, ReleaseVerdict] = {}
    stored: dict[ObjectRef, tuple[StoredRelease, str, Source]] = {}
    wanted: list[tuple[DesiredObject, str, str, int]] = []  # the release record each live HelmRelease points at
    for desired, live in pairs:
        if live is None or not is_helm_release(desired):
            continue
        health = release_health(desired, live, rules=rules, values_lookup=values_lookup)
        out[desired.ref] = ReleaseVerdict(health)
        status = _map(live.get("status"))
        snap = latest_snapshot(status)
        if snap is None or not isinstance(snap.get("version"), int):
            continue
        spec = _map(live.get("spec"))
        storage_ns = str(status.get("storageNamespace") or spec.get("storageNamespace") or desired.ref.namespace)
        wanted.append((desired, storage_ns, str(snap.get("name") or ""), int(snap["version"])))

    def read(want: tuple[DesiredObject, str, str, int]) -> StoredRelease | ReleaseDecodeError | None:
        try:
            return read_release(kube, want[1], want[2], want[3])
        except ReleaseDecodeError as exc:
            return exc

    # one GET per release, several at a time: verify polls this every pass while a platform of
    # charts installs (bench/helm_releases: 20 releases read one by one added a second a pass)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted)))) as pool:
        records = list(pool.map(read, wanted))
    for (desired, storage_ns, release, revision), rec in zip(wanted, records, strict=True):
        who = f"HelmRelease {desired.ref.namespace}/{desired.ref.name}"
        if isinstance(rec, ReleaseDecodeError):
            out[desired.ref] = ReleaseVerdict(Health("degraded", f"{rec}; the objects of the release cannot be checked"))
            continue
        if rec is None:
            missing = f"Secret {storage_ns}/{secret_name(release, revision)}"
            out[desired.ref] = ReleaseVerdict(
                Health(
                    "degraded",
                    f"Helm's record of release {release} v{revision} ({missing}) is missing, so its objects cannot be "
                    f"checked: run `flux reconcile helmrelease -n {desired.ref.namespace} {desired.ref.name} --force`",
                )
            )
            continue
        stored[desired.ref] = (rec, who, desired.source)
    if not stored:
        return out

    def namespaced(api_version: str, kind: str) -> bool:
        try:
            return kube.info(api_version, kind).namespaced
        except KubeError:
            return True  # a kind the server does not serve: its objects are missing either way

    # one LIST per kind and namespace the releases rendered into (a cluster-wide LIST of Secrets
    # would fetch every Secret of the cluster to find a chart's one)
    lists = sorted(
        {
            (o.api_version, o.kind, rendered_ref(o, rec.namespace, namespaced).namespace)
            for rec, _w, _s in stored.values()
            for o in rec.objects
        }
    )
    live_objs = _list_kinds(kube, lists, workers)
    for ref, (rec, who, source) in stored.items():
        out[ref] = ReleaseVerdict(
            out[ref].health, rendered_verdicts(rec, live_objs, namespaced, release=who, source=source, rules=rules)
        )
    return out


def _list_kinds(kube: Kube, lists: Sequence[tuple[str, str, str]], workers: int) -> dict[ObjectRef, Mapping[str, Any]]:
    def one(what: tuple[str, str, str]) -> list[dict[str, Any]]:
        api_version, kind, namespace = what
        try:
            return kube.list(api_version, kind, namespace or None)
        except KubeError as exc:
            if exc.status == 404:
                return []
            raise

    found: dict[ObjectRef, Mapping[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for items in pool.map(one, lists):
            for item in items:
                found[ObjectRef.of(item)] = _health_view(item)
    return found


def _health_view(obj: dict[str, Any]) -> Mapping[str, Any]:
    """What health needs of a live object; a Secret's data (a chart may render one) is dropped at once."""
    if obj.get("kind") == "Secret":
        return {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata", "type")}
    return obj
