"""Is the cluster exactly what git declares, and healthy? Check once, or wait until it is.

The comparison itself (``rebuild.recover.verify``) and the health rules (``rebuild.recover.health``) are
pure; this module fetches the live objects with one paginated LIST per kind (not one GET
per object: a rebuild of thousands of objects would otherwise spend its time in round
trips) and assembles the report that ``rebuild verify`` and ``rebuild up`` print.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rebuild.adapters.kube import Kube
from rebuild.adapters.sops import is_sops_document
from rebuild.core.config import IgnoreRule, VerifySpec
from rebuild.core.errors import ClusterError, ConfigError, KubeError
from rebuild.core.model import DesiredObject, ObjectRef
from rebuild.core.progress import Progress
from rebuild.core.retry import GaveUp, Retryable, RetryEvent, RetryPolicy, retry
from rebuild.desired.helm import HelmReleasePlan, is_helm_release, plan_release
from rebuild.desired.helmvalues import values_lookup
from rebuild.recover.health import Health, assess
from rebuild.recover.helmverify import RenderedVerdict, check_releases, release_fix, settled_failure
from rebuild.recover.verify import ObjectResult, compare, message


@dataclass
class ObjectVerdict:
    desired: DesiredObject
    result: ObjectResult
    health: Health
    # a HelmRelease: the objects its release installed (rebuild.recover.helmverify); their failures are its own
    rendered: tuple[RenderedVerdict, ...] = ()
    # a HelmRelease helm-controller gave up on for the current spec (helmverify.settled_failure):
    # waiting cannot heal it, so wait_converged stops at once; (what it said, the fix)
    settled: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.result.ok and self.health.healthy and all(r.ok for r in self.rendered)

    def problems(self) -> list[str]:
        ref = self.desired.ref
        if not self.result.present:
            return [f"{ref}: missing from the cluster (declared at {self.desired.source})"]
        out = [message(d, ref) for d in self.result.diffs]
        if not self.health.healthy:
            out.append(f"{ref}: {self.health} (declared at {self.desired.source})")
        out += [r.problem() for r in self.rendered if not r.ok]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = self.result.to_dict()
        d["kind"] = self.desired.ref.kind
        d["namespace"] = self.desired.ref.namespace
        d["name"] = self.desired.ref.name
        d["health"] = {"status": self.health.status, "message": self.health.message}
        d["ok"] = self.ok
        d["problems"] = self.problems()
        if self.rendered:
            d["rendered"] = [r.to_dict() for r in self.rendered]
        return d


@dataclass
class VerifyReport:
    verdicts: list[ObjectVerdict] = field(default_factory=list)
    seconds: float = 0.0
    attempts: int = 0

    @property
    def converged(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def failing(self) -> list[ObjectVerdict]:
        return [v for v in self.verdicts if not v.ok]

    def summary(self) -> dict[str, int]:
        return {
            "objects": len(self.verdicts),
            "verified": sum(v.ok for v in self.verdicts),
            "missing": sum(not v.result.present for v in self.verdicts),
            "drifted": sum(bool(v.result.diffs) for v in self.verdicts),
            # a HelmRelease whose rendered objects are missing or unhealthy is itself not healthy
            "unhealthy": sum(
                v.result.present and not (v.health.healthy and all(r.ok for r in v.rendered)) for v in self.verdicts
            ),
            # objects HelmReleases installed: not declared in git, so counted apart from "objects"
            "rendered": sum(len(v.rendered) for v in self.verdicts),
            "rendered_verified": sum(r.ok for v in self.verdicts for r in v.rendered),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
            "summary": self.summary(),
            "objects": [v.to_dict() for v in self.verdicts],
        }


def fetch_live(kube: Kube, desired: Sequence[DesiredObject], *, workers: int = 8) -> dict[ObjectRef, dict[str, Any]]:
    """Live counterparts of the desired objects: one LIST per kind, run concurrently."""
    kinds = sorted({(o.api_version, o.ref.kind) for o in desired})
    wanted = {o.ref for o in desired}

    def one(api_kind: tuple[str, str]) -> list[dict[str, Any]]:
        api_version, kind = api_kind
        try:
            return kube.list(api_version, kind)
        except KubeError as exc:
            if exc.status == 404:  # the kind is not served (yet): its objects are missing
                return []
            raise

    live: dict[ObjectRef, dict[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for items in pool.map(one, kinds):
            for item in items:
                ref = ObjectRef.of(item)
                if ref in wanted:
                    live[ref] = item
    return live


def check(
    kube: Kube,
    desired: Sequence[DesiredObject],
    spec: VerifySpec,
    *,
    revisions: dict[str, str] | None = None,
    decrypted: Mapping[ObjectRef, DesiredObject] | None = None,
    charts_in_git: Collection[ObjectRef] = (),
) -> VerifyReport:
    """One pass: compare every desired object with the cluster and assess its health.

    ``revisions`` maps a Flux object (``Kind/namespace/name``) to the commit it must be Ready at.
    ``decrypted``: what to compare in place of a SOPS-encrypted object, its values decrypted in
    memory (:func:`rebuild.recover.encrypted.decrypted`); the verdicts keep the desired object.
    ``charts_in_git``: HelmReleases whose chart version the preflight found in git
    (:func:`rebuild.recover.helmpreflight.check`).
    """
    t0 = time.monotonic()
    kube.discovery(refresh=True)  # CRDs may have appeared since the last pass
    plain = decrypted or {}
    # a decrypted copy may carry another name (a Secret generated from SOPS-encrypted files:
    # kustomize's hash suffix of the decrypted values, as in the cluster): look that name up
    live = fetch_live(kube, [plain.get(o.ref, o) for o in desired])
    ignore: Sequence[IgnoreRule] = spec.ignore
    verdicts = []
    for o in desired:
        obj = live.get(plain[o.ref].ref if o.ref in plain else o.ref)
        result = compare(plain.get(o.ref, o), obj, ignore=ignore)
        if obj is None:
            health = Health("unknown", "not found")
        else:
            health = assess(obj, expected_revision=(revisions or {}).get(str(o.ref)), rules=spec.health)
        # the desired object (its body as git holds it), under the name the cluster has
        named = replace(o, ref=plain[o.ref].ref) if o.ref in plain and plain[o.ref].ref != o.ref else o
        verdict = ObjectVerdict(named, result, health)
        if obj is not None and is_helm_release(o):
            verdict.settled = _settled(o, obj, o.ref in charts_in_git)
        verdicts.append(verdict)
    releases = check_releases(
        kube, [(o, live.get(o.ref)) for o in desired], rules=spec.health, values_lookup=values_lookup(desired, plain)
    )
    for v in verdicts:
        got = releases.get(v.desired.ref)
        if got is not None:
            v.health, v.rendered = got.health, got.rendered
    return VerifyReport(verdicts, time.monotonic() - t0, 1)


# What the API server says when a schema does not know a field (strict field validation).
_UNKNOWN_FIELD = ("unknown field", "field not declared in schema", "strict decoding error")


def _refuse_unknown_fields(kube: Kube, report: VerifyReport, probed: set[ObjectRef]) -> None:
    """A field git declares that stays missing live may be one no schema knows: the API server
    drops it on apply (the reconciler reports success) and verify would wait out its timeout.
    Ask the server once per such object, with a strict dry-run apply, and stop at once if so."""
    for v in report.verdicts:
        ref = v.desired.ref
        if ref in probed or not v.result.present or not any(d.change == "missing" for d in v.result.diffs):
            continue
        if is_sops_document(v.desired.body):
            # its git text carries the `sops` metadata no schema knows (Flux drops it when it
            # decrypts), and the fields it encrypts are a Secret's values, never unknown fields
            continue
        probed.add(ref)
        try:
            kube.apply(v.desired.body, field_manager="rebuild-verify", dry_run=True, strict=True)
        except KubeError as exc:
            text = str(exc)
            if exc.status in (400, 422, 500) and any(u in text for u in _UNKNOWN_FIELD):
                missing = [d for d in v.result.diffs if d.change == "missing"]
                where = ", ".join(f"{d.rendered} ({d.source})" for d in missing)
                raise ConfigError(
                    f"{ref}: the API server does not know field(s) {where} and drops them, so the cluster can never "
                    f"match git: {text.splitlines()[0][:300]}",
                    fix="fix the field name in git at the line shown (or remove it) and rerun",
                ) from exc


def _settled(desired: DesiredObject, live: Mapping[str, Any], chart_in_git: bool) -> tuple[str, str] | None:
    said = settled_failure(desired, live, chart_in_git=chart_in_git)
    if said is None:
        return None
    plan = plan_release(desired)
    fix = release_fix(desired, plan, live) if isinstance(plan, HelmReleasePlan) else ""
    return said, fix or f"fix the HelmRelease at {desired.source} (chart, version or values) and rerun"


def _refuse_settled_releases(report: VerifyReport) -> None:
    """A HelmRelease helm-controller will not retry for this spec: waiting out the verify timeout
    would only delay the same answer, so stop now with its file:line and the fix (exit 2)."""
    given_up = [v for v in report.verdicts if v.settled is not None]
    if not given_up:
        return
    lines = []
    for v in given_up:
        assert v.settled is not None
        ref = v.desired.ref
        lines.append(f"{v.desired.source}: HelmRelease {ref.namespace}/{ref.name}: helm-controller gave up: {v.settled[0]}")
    more = "".join(f"\n  also: {line}" for line in lines[1:])
    first = given_up[0].settled
    assert first is not None
    raise ConfigError(
        f"{lines[0]}; waiting would not change it, so verify stopped after {report.seconds:.1f}s{more}", fix=first[1]
    )


def wait_converged(
    kube: Kube,
    desired: Sequence[DesiredObject],
    spec: VerifySpec,
    *,
    timeout: float | None = None,
    interval: float = 0.5,
    progress: Progress | None = None,
    revisions: dict[str, str] | None = None,
    decrypted: Mapping[ObjectRef, DesiredObject] | None = None,
    charts_in_git: Collection[ObjectRef] = (),
) -> VerifyReport:
    """Check until converged or the timeout (default: verify.timeout); returns the last report.

    ``decrypted``, ``charts_in_git``: as in :func:`check`. A HelmRelease helm-controller gave up
    on (:func:`rebuild.recover.helmverify.settled_failure`) ends the wait at once with a
    ConfigError naming its file:line and the fix."""
    limit = spec.timeout if timeout is None else timeout
    t0 = time.monotonic()
    last_note = [""]

    probed: set[ObjectRef] = set()

    def attempt(n: int) -> VerifyReport:
        try:
            report = check(kube, desired, spec, revisions=revisions, decrypted=decrypted, charts_in_git=charts_in_git)
            report.seconds = time.monotonic() - t0
            _refuse_settled_releases(report)
            if n > 1:
                _refuse_unknown_fields(kube, report, probed)
        except ClusterError as exc:
            # The API server stopped answering even after the client's own retries (a restart,
            # etcd down): keep waiting within the verify timeout instead of failing the check.
            raise Retryable(str(exc).splitlines()[0][:160] if str(exc) else "") from exc
        report.attempts = n
        report.seconds = time.monotonic() - t0
        if not report.converged:
            if progress:
                s = report.summary()
                note = (
                    f"verify: {s['verified']}/{s['objects']} verified, {s['missing']} missing, "
                    f"{s['drifted']} drifted, {s['unhealthy']} not healthy yet"
                )
                if note != last_note[0]:
                    progress(note)
                    last_note[0] = note
            raise Retryable("not converged yet", result=report)
        return report

    def outage(event: RetryEvent) -> None:
        if event.cause is not None and progress:
            progress(f"verify: the API server is not answering ({event.error}); still waiting")

    # A poll, not a retry of a failure: the same loop, with a fixed interval and the verify
    # timeout as its deadline; the last report is the answer when the time is up.
    policy = RetryPolicy(attempts=None, backoff_base=interval, backoff_max=interval, max_wait=None, deadline=limit)
    try:
        return retry(attempt, policy, operation="verify", on_retry=outage)
    except GaveUp as gave:
        if isinstance(gave.__cause__, ClusterError):
            raise gave.__cause__ from None
        report: VerifyReport = gave.result
        return report
