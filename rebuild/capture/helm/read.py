"""Read what each HelmRelease of git rendered: the one part of Helm capture that talks to the cluster.

For every HelmRelease git declares and the cluster has, the latest release revision its status
names (``status.history``, as `verify` reads it: :func:`rebuild.recover.helmverify.latest_snapshot`)
is looked up in Helm's storage Secret (``sh.helm.release.v1.<release>.v<revision>`` in
``status.storageNamespace``) with one GET, and its manifest becomes desired objects
(:mod:`.rendered`). A release that cannot be read (not installed yet, record missing, reading
Secrets forbidden) is kept with the reason: its objects still count as covered by git (they
carry helm-controller's origin labels) and are listed as not compared, never silently dropped.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from typing import Any

from rebuild.adapters.helmstore import ReleaseDecodeError, secret_name
from rebuild.adapters.kube import Kube
from rebuild.capture.helm.rendered import RenderedRelease, decode_manifest, rendered_objects, target_namespace
from rebuild.core.errors import KubeError
from rebuild.core.model import DesiredObject, ObjectRef
from rebuild.desired.helm import GROUP, KIND, HelmReleasePlan, plan_release
from rebuild.desired.helmvalues import ValuesLookup, compose_release
from rebuild.recover.helmverify import latest_snapshot


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def stale_values(release: DesiredObject, snapshot: Mapping[str, Any], lookup: ValuesLookup | None = None) -> str:
    """Why the installed release was not made from git's values ("" when it was, or when that
    cannot be told: ``valuesFrom`` objects git does not declare, or no ``lookup`` of them given).

    ``lookup``: the ConfigMaps and Secrets git declares (:func:`rebuild.desired.helmvalues.values_lookup`),
    so values from ``valuesFrom`` are composed as helm-controller composes them."""
    plan = plan_release(release)
    if not isinstance(plan, HelmReleasePlan):
        return ""
    want, where = plan.values_digest, f"spec.values at {plan.values_source or release.source}"
    if plan.values_from:
        want = compose_release(release, plan, lookup).digest if lookup else ""
        where = f"spec.valuesFrom at {release.source_of(('spec', 'valuesFrom'))}"
    have = str(snapshot.get("configDigest") or "")
    if not want or not have or have == want:
        return ""
    return (
        f"the release was installed from other values than git declares (config digest {have[:19]}…, "
        f"{where} {want[:19]}…): run `flux reconcile helmrelease -n "
        f"{release.ref.namespace} {release.ref.name}` and capture again"
    )


def read_rendered(
    kube: Kube,
    releases: Sequence[DesiredObject],
    live: Sequence[Mapping[str, Any]],
    workers: int = 8,
    values_lookup: ValuesLookup | None = None,
) -> list[RenderedRelease]:
    """Each HelmRelease of ``releases`` with the objects its latest release rendered (see the module docstring).

    ``live`` is what capture listed (the live HelmReleases are taken from it, no extra LIST);
    ``values_lookup``: see :func:`stale_values`.
    """
    live_releases = {
        ObjectRef.of(dict(o)): o for o in live if o.get("kind") == KIND and str(o.get("apiVersion") or "").startswith(f"{GROUP}/")
    }

    def namespaced(api_version: str, kind: str) -> bool:
        try:
            return kube.info(api_version, kind).namespaced
        except KubeError:
            return True  # a kind the server does not serve: its objects are not listed either way

    def one(hr: DesiredObject) -> RenderedRelease:
        got = live_releases.get(hr.ref)
        if got is None:  # not listed when capture.namespaces leaves its namespace out: ask for it
            try:
                got = kube.get(hr.api_version, KIND, hr.ref.name, hr.ref.namespace)
            except KubeError as exc:
                if exc.status not in (403, 404):
                    raise
                return RenderedRelease(hr, problem=f"the HelmRelease cannot be read: {exc.message}")
        if got is None:
            return RenderedRelease(hr, problem="the HelmRelease is not in the cluster")
        status = _map(got.get("status"))
        snap = latest_snapshot(status)
        if snap is None or not isinstance(snap.get("version"), int):
            return RenderedRelease(hr, problem="helm-controller records no release for it yet (status.history is empty)")
        storage = str(status.get("storageNamespace") or _map(got.get("spec")).get("storageNamespace") or hr.ref.namespace)
        release, revision = str(snap.get("name") or ""), int(snap["version"])
        where = f"Secret {storage}/{secret_name(release, revision)}"
        try:
            secret = kube.get("v1", "Secret", secret_name(release, revision), storage)
        except KubeError as exc:
            if exc.status != 403:
                raise
            why = f"reading Helm's release record ({where}) is forbidden: allow get on secrets in {storage}"
            return RenderedRelease(hr, revision=revision, problem=why)
        if secret is None:
            why = f"Helm's record of release {release} v{revision} ({where}) is missing"
            return RenderedRelease(hr, revision=revision, problem=why)
        try:
            record = decode_manifest(secret)
            into = record.namespace or str(snap.get("namespace") or "") or target_namespace(hr)
            objects = rendered_objects(hr, record.manifest, into, namespaced)
        except ReleaseDecodeError as exc:
            return RenderedRelease(hr, revision=revision, problem=str(exc))
        finally:
            secret.clear()  # the values and rendered Secrets go no further than this frame
        return RenderedRelease(hr, objects, revision, stale=stale_values(hr, snap, values_lookup))

    if not releases:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(releases))) as pool:
        return list(pool.map(one, releases))
