"""verify and HelmReleases: Ready at the chart version and values digest git declares, and the
objects the release rendered present and healthy, failures naming the HelmRelease's file:line.

The live objects are shaped the way helm-controller v1.4.3 writes them: field names from its
``api/v2/helmrelease_types.go`` (HelmReleaseStatus) and ``api/v2/snapshot_types.go`` (Snapshot),
condition messages from ``internal/reconcile/install.go`` (``fmtInstallSuccess``,
``fmtInstallFailure``) and ``internal/controller/helmrelease_controller.go`` (``isReady``,
``SourceNotReady``). The release Secret is encoded the way Helm's storage driver does
(``encodeRelease``: JSON, gzip, base64; the API adds a second base64).
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from rebuild.adapters.helmstore import (
    ReleaseDecodeError,
    RenderedObject,
    decode_secret,
    manifest_objects,
    secret_name,
)
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.helm import values_digest
from rebuild.recover.converge import ObjectVerdict, VerifyReport
from rebuild.recover.health import Health
from rebuild.recover.helmverify import (
    ReleaseVerdict,
    latest_snapshot,
    release_health,
    rendered_ref,
    rendered_verdicts,
    version_satisfies,
)
from rebuild.recover.verify import ObjectResult

VALUES = {"replicas": 3, "greeting": "from-values", "image": {"tag": "1.28"}}
SOURCE = Source("apps/web.yaml", 3)
VERSION_LINE = Source("apps/web.yaml", 14)
VALUES_LINE = Source("clusters/prod/web-values.yaml", 9)
INSTALLED = "Helm install succeeded for release apps/web.v1 with chart tiny@0.1.0"  # fmtInstallSuccess
BY = "(rendered by HelmRelease flux-system/web at apps/web.yaml:3)"


def desired(version: str = "0.1.0", values: dict[str, Any] | None = None, **spec: Any) -> DesiredObject:
    body = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "web", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "releaseName": "web",
            "targetNamespace": "apps",
            "chart": {
                "spec": {
                    "chart": "tiny",
                    "version": version,
                    "sourceRef": {"kind": "HelmRepository", "name": "local-charts"},
                }
            },
            "values": VALUES if values is None else values,
            **spec,
        },
    }
    return DesiredObject(
        ObjectRef("helm.toolkit.fluxcd.io", "HelmRelease", "flux-system", "web"),
        "helm.toolkit.fluxcd.io/v2",
        body,
        SOURCE,
        field_sources={("spec", "chart", "spec", "version"): VERSION_LINE, ("spec", "values"): VALUES_LINE},
    )


def snapshot(version: int = 1, chart_version: str = "0.1.0", config_digest: str = "", status: str = "deployed") -> dict[str, Any]:
    """A ``v2.Snapshot`` as helm-controller v1.4.3 serialises it."""
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "digest": "sha256:4b3a6d0c6f1f0e0c27f3a3f6a8f3b55d0c1e9bb2d8a5e2c7a1b0c9d8e7f6a5b4",
        "name": "web",
        "namespace": "apps",
        "version": version,
        "status": status,
        "chartName": "tiny",
        "chartVersion": chart_version,
        "appVersion": "1.27",
        "configDigest": config_digest or values_digest(VALUES),
        "firstDeployed": "2026-12-01T10:42:00Z",
        "lastDeployed": "2026-12-01T10:42:00Z",
    }


def live(
    *,
    generation: int = 1,
    observed: int = 1,
    history: list[dict[str, Any]] | None = None,
    ready: tuple[str, str, str] = (
        "True",
        "InstallSucceeded",
        "Helm install succeeded for release apps/web.v1 with chart tiny@0.1.0",
    ),
    stalled: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A live HelmRelease with the status helm-controller v1.4.3 writes after an install."""
    conditions = [
        {
            "type": "Ready",
            "status": ready[0],
            "reason": ready[1],
            "message": ready[2],
            "observedGeneration": observed,
            "lastTransitionTime": "2026-12-01T10:42:01Z",
        },
        {
            "type": "Released",
            "status": ready[0],
            "reason": ready[1],
            "message": ready[2],
            "observedGeneration": observed,
            "lastTransitionTime": "2026-12-01T10:42:01Z",
        },
    ]
    if stalled:
        conditions.append({"type": "Stalled", "status": "True", "reason": stalled[0], "message": stalled[1]})
    body = desired().body
    return {
        **body,
        "metadata": {**body["metadata"], "generation": generation, "uid": "0b5c5a4e"},
        "status": {
            "observedGeneration": observed,
            "lastAttemptedGeneration": observed,
            "conditions": conditions,
            "helmChart": "flux-system/flux-system-web",
            "storageNamespace": "flux-system",
            "history": [snapshot()] if history is None else history,
            "lastAttemptedReleaseAction": "install",
            "lastAttemptedRevision": "0.1.0",
            "lastAttemptedConfigDigest": values_digest(VALUES),
        },
    }


# --------------------------------------------------------------------------- the HelmRelease


def test_ready_at_the_declared_version_and_values_is_healthy() -> None:
    h = release_health(desired(), live())
    assert h.healthy, h
    assert "release apps/web v1 deployed, chart tiny 0.1.0" in h.message


def test_a_generation_helm_controller_has_not_seen_is_progressing() -> None:
    h = release_health(desired(), live(generation=2, observed=1))
    assert h.status == "progressing" and "observe generation 2" in h.message


def test_another_chart_version_names_both_versions_the_line_and_the_fix() -> None:
    h = release_health(desired(version="0.2.0"), live())
    assert h.status == "degraded"
    assert "HelmRelease flux-system/web: helm-controller installed chart tiny 0.1.0" in h.message
    assert "git declares version 0.2.0 at apps/web.yaml:14" in h.message
    assert "change spec.chart.spec.version at apps/web.yaml:14" in h.message
    assert "flux reconcile helmrelease -n flux-system web" in h.message


def test_other_values_name_both_digests_where_values_are_set_and_how_to_reconcile() -> None:
    changed = {**VALUES, "replicas": 4}
    h = release_health(desired(values=changed), live())
    assert h.status == "progressing"
    assert f"helm-controller installed values with digest {values_digest(VALUES)}" in h.message
    assert f"git declares {values_digest(changed)} (spec.values at clusters/prod/web-values.yaml:9)" in h.message
    assert "wait for the reconcile or run `flux reconcile helmrelease -n flux-system web`" in h.message


def test_values_from_a_configmap_git_does_not_declare_are_said_not_checked() -> None:
    d = desired(values={"other": 1}, valuesFrom=[{"kind": "ConfigMap", "name": "web-values"}])
    h = release_health(d, live())
    assert h.healthy and "values digest not checked: the ConfigMaps and Secrets of spec.valuesFrom were not given" in h.message
    h = release_health(d, live(), values_lookup=lambda kind, ns, name: None)
    assert h.healthy and "(values digest not checked: ConfigMap flux-system/web-values is not declared in git" in h.message


def test_values_from_git_s_configmap_are_composed_and_compared() -> None:
    cm = {"data": {"values.yaml": "replicas: 3\ngreeting: from-cm\n"}}
    d = desired(values={"replicas": 2}, valuesFrom=[{"kind": "ConfigMap", "name": "web-values"}])
    lookup = {("ConfigMap", "flux-system", "web-values"): cm}
    composed = values_digest({"replicas": 2, "greeting": "from-cm"})
    h = release_health(d, live(history=[snapshot(config_digest=composed)]), values_lookup=lambda *k: lookup.get(k))
    assert h.healthy and "not checked" not in h.message, h
    h = release_health(d, live(), values_lookup=lambda *k: lookup.get(k))  # installed from other values
    assert h.status == "progressing", h
    assert f"installed values with digest {values_digest(VALUES)}; git declares {composed}" in h.message
    assert "(spec.valuesFrom ConfigMap web-values at apps/web.yaml:3 and spec.values at clusters/prod/web-values.yaml:9)" in (
        h.message
    )


def test_no_values_digest_as_helm_controller_records_an_empty_config() -> None:
    d = desired(values={})
    assert not release_health(d, live()).healthy  # the live release has VALUES
    assert release_health(d, live(history=[snapshot(config_digest=values_digest({}))])).healthy


def test_the_latest_snapshot_is_the_highest_release_version_whatever_the_order() -> None:
    history = [snapshot(1, "0.1.0", status="superseded"), snapshot(3, "0.3.0"), snapshot(2, "0.2.0", status="superseded")]
    latest = latest_snapshot({"history": history})
    assert latest is not None and latest["version"] == 3
    assert release_health(desired(version="0.3.0"), live(history=history)).healthy
    assert latest_snapshot({}) is None


def test_ready_without_history_or_with_a_failed_latest_release_is_not_healthy() -> None:
    assert release_health(desired(), live(history=[])).status == "progressing"
    h = release_health(desired(), live(history=[snapshot(1, status="deployed"), snapshot(2, status="failed")]))
    assert h.status == "progressing" and "release apps/web v2 is failed, not deployed" in h.message


def test_a_chart_version_the_repository_does_not_have_shows_helm_controllers_message_and_the_line() -> None:
    message = (
        "HelmChart 'flux-system/flux-system-web' is not ready: invalid chart reference: failed to get chart version "
        "for remote reference: no 'tiny' chart with version matching '9.9.9' found"
    )
    h = release_health(desired(version="9.9.9"), live(history=[], ready=("False", "SourceNotReady", message)))
    assert h.status == "degraded"
    assert message in h.message
    assert "the chart version 9.9.9 is not in HelmRepository flux-system/local-charts" in h.message
    assert "change spec.chart.spec.version at apps/web.yaml:14" in h.message


def test_helm_controllers_failure_for_a_spec_it_has_not_finished_observing_is_shown() -> None:
    # SourceNotReady returns errWaitForChart: status.observedGeneration stays behind, the Ready
    # condition carries the new generation (fluxcd/pkg conditions.Set).
    message = "HelmChart 'flux-system/flux-system-web' is not ready: no 'tiny' chart with version matching '9.9.9' found"
    hr = live(generation=2, observed=1, ready=("False", "SourceNotReady", message))
    hr["status"]["conditions"][0]["observedGeneration"] = 2
    h = release_health(desired(version="9.9.9"), hr)
    assert h.status == "degraded" and h.message.startswith(f"not ready: SourceNotReady: {message}")
    assert "change spec.chart.spec.version at apps/web.yaml:14" in h.message
    waiting = live(generation=2, observed=1, ready=("Unknown", "Progressing", "reconciliation in progress"))
    assert "observe generation 2" in release_health(desired(), waiting).message


def test_values_of_the_wrong_type_show_helms_error_and_where_the_values_are() -> None:
    helm_error = (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct '
        "field DeploymentSpec.spec.replicas of type int32"
    )
    message = f"Helm install failed for release apps/web with chart tiny@0.1.0: {helm_error}"
    h = release_health(
        desired(values={"replicas": "three"}),
        live(
            history=[],
            ready=("False", "InstallFailed", message),
            stalled=("RetriesExceeded", "Failed to install after 1 attempt(s)"),
        ),
    )
    assert h.status == "degraded"
    assert "RetriesExceeded" in h.message
    assert "spec.values at clusters/prod/web-values.yaml:9" in h.message


def test_charts_from_git_and_chart_refs_are_not_version_checked() -> None:
    git = desired()
    git.body["spec"]["chart"]["spec"] = {"chart": "./charts/tiny", "sourceRef": {"kind": "GitRepository", "name": "charts"}}
    assert release_health(git, live(history=[snapshot(chart_version="0.1.0+0123456789ab")])).healthy
    ref = desired()
    del ref.body["spec"]["chart"]
    ref.body["spec"]["chartRef"] = {"kind": "OCIRepository", "name": "tiny"}
    assert release_health(ref, live(history=[snapshot(chart_version="7.0.0")])).healthy


@pytest.mark.parametrize(
    ("declared", "installed", "ok"),
    [
        ("0.1.0", "0.1.0", True),
        ("v0.1.0", "0.1.0", True),
        ("0.1.0", "0.1.0+build.7", True),  # build metadata is not part of the version's identity
        ("0.1.0", "0.1.1", False),
        ("*", "5.0.0", True),
        ("", "5.0.0", True),
        (">=1.2.0 <2.0.0", "1.9.9", True),
        (">=1.2.0, <2.0.0", "2.0.0", False),
        (">= 1.2", "1.2.0", True),
        ("~1.2.3", "1.2.9", True),
        ("~1.2.3", "1.3.0", False),
        ("~1", "1.9.0", True),
        ("^1.2.3", "1.9.0", True),
        ("^1.2.3", "2.0.0", False),
        ("^0.2.3", "0.3.0", False),
        ("^0.0.3", "0.0.4", False),
        ("1.2.x", "1.2.7", True),
        ("1.2.x", "1.3.0", False),
        (">1.2", "1.2.9", False),
        (">1.2", "1.3.0", True),
        ("<=1.2", "1.2.9", True),
        ("!=1.2.3", "1.2.3", False),
        ("1.0.0 - 1.4.5", "1.4.5", True),
        ("1.0.0 - 1.4.5", "1.4.6", False),
        ("<1.0.0 || >=3.0.0", "3.1.0", True),
        ("<1.0.0 || >=3.0.0", "2.0.0", False),
        (">=1.0.0", "2.0.0-rc.1", False),  # Masterminds: a prerelease needs a prerelease in the constraint
        (">=2.0.0-rc.0", "2.0.0-rc.1", True),
        ("^2.0.0", "2.0.0-rc.1", False),
    ],
)
def test_chart_versions_follow_masterminds_semver(declared: str, installed: str, ok: bool) -> None:
    assert version_satisfies(declared, installed) is ok


def test_a_constraint_this_verify_cannot_read_is_said_not_failed() -> None:
    assert version_satisfies(">=banana", "1.0.0") is None
    h = release_health(desired(version=">=banana"), live())
    assert h.healthy and "not checked" in h.message


# --------------------------------------------------------------------------- the release record


MANIFEST = """---
# Source: tiny/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-settings
data:
  greeting: "from-values"
---
# Source: tiny/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: web-token
  namespace: apps
stringData:
  token: hunter2-rendered
---
# Source: tiny/templates/clusterrole.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: web-reader
---
# Source: tiny/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-web
spec:
  replicas: 3
"""


def release_secret(manifest: str = MANIFEST, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Helm's storage driver's Secret, as the API returns it."""
    rel = {
        "name": "web",
        "namespace": "apps",
        "version": 1,
        "info": {"status": "deployed", "description": "Install complete"},
        "chart": {"metadata": {"name": "tiny", "version": "0.1.0"}, "values": {"replicas": 1}},
        "config": values if values is not None else {"password": "hunter2-values"},
        "manifest": manifest,
        "hooks": [],
    }
    helm = base64.b64encode(gzip.compress(json.dumps(rel).encode()))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {"name": secret_name("web", 1), "namespace": "flux-system", "labels": {"owner": "helm"}},
        "data": {"release": base64.b64encode(helm).decode()},
    }


def test_the_release_secret_gives_object_identities_and_nothing_of_the_values() -> None:
    stored = decode_secret(release_secret())
    assert (stored.name, stored.namespace, stored.revision, stored.chart_version, stored.status) == (
        "web",
        "apps",
        1,
        "0.1.0",
        "deployed",
    )
    assert stored.objects == (
        RenderedObject("v1", "ConfigMap", "web-settings"),
        RenderedObject("v1", "Secret", "web-token", "apps"),
        RenderedObject("rbac.authorization.k8s.io/v1", "ClusterRole", "web-reader"),
        RenderedObject("apps/v1", "Deployment", "web-web"),
    )
    assert "hunter2" not in repr(stored) and "from-values" not in repr(stored)
    assert secret_name("web", 12) == "sh.helm.release.v1.web.v12"


def test_an_uncompressed_release_is_read_as_helm_does() -> None:
    secret = release_secret()
    helm = base64.b64decode(secret["data"]["release"])
    plain = base64.b64encode(gzip.decompress(base64.b64decode(helm)))
    secret["data"]["release"] = base64.b64encode(plain).decode()
    assert len(decode_secret(secret).objects) == 4


def test_a_broken_release_secret_is_an_error_that_quotes_none_of_it() -> None:
    secret = release_secret()
    secret["data"]["release"] = base64.b64encode(b"hunter2-not-helm").decode()
    with pytest.raises(ReleaseDecodeError) as err:
        decode_secret(secret)
    assert "hunter2" not in str(err.value) and "sh.helm.release.v1.web.v1" in str(err.value)
    with pytest.raises(ReleaseDecodeError, match="not YAML"):
        manifest_objects("a: [b")


# --------------------------------------------------------------------------- rendered objects


def namespaced(_api_version: str, kind: str) -> bool:
    return kind not in ("ClusterRole", "Namespace")


def deployment(available: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web-web", "namespace": "apps", "generation": 2},
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 3,
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": "True" if available == 3 else "False"}],
        },
    }


def test_rendered_objects_without_a_namespace_go_to_the_release_namespace_unless_cluster_scoped() -> None:
    assert rendered_ref(RenderedObject("v1", "ConfigMap", "c"), "apps", namespaced) == ObjectRef("", "ConfigMap", "apps", "c")
    assert rendered_ref(RenderedObject("rbac.authorization.k8s.io/v1", "ClusterRole", "r"), "apps", namespaced) == ObjectRef(
        "rbac.authorization.k8s.io", "ClusterRole", "", "r"
    )
    assert rendered_ref(RenderedObject("v1", "Secret", "s", "other"), "apps", namespaced).namespace == "other"


def rendered_live(available: int = 3, *, drop: str = "") -> dict[ObjectRef, dict[str, Any]]:
    objs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-settings", "namespace": "apps"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-token", "namespace": "apps"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "web-reader"}},
        deployment(available),
    ]
    return {ObjectRef.of(o): o for o in objs if o["metadata"]["name"] != drop}


def test_every_rendered_object_present_and_healthy() -> None:
    got = rendered_verdicts(
        decode_secret(release_secret()), rendered_live(), namespaced, release="HelmRelease flux-system/web", source=SOURCE
    )
    assert [str(v.ref) for v in got] == [
        "ConfigMap/apps/web-settings",
        "Secret/apps/web-token",
        "ClusterRole/web-reader",
        "Deployment/apps/web-web",
    ]
    assert all(v.ok for v in got)


def test_a_missing_or_unhealthy_rendered_object_names_the_helmrelease_file_line() -> None:
    stored = decode_secret(release_secret())
    who = "HelmRelease flux-system/web"
    got = rendered_verdicts(stored, rendered_live(drop="web-settings"), namespaced, release=who, source=SOURCE)
    bad = [v.problem() for v in got if not v.ok]
    assert bad == [f"ConfigMap/apps/web-settings: missing from the cluster {BY}"]
    got = rendered_verdicts(stored, rendered_live(available=0), namespaced, release=who, source=SOURCE)
    bad = [v.problem() for v in got if not v.ok]
    assert bad == [f"Deployment/apps/web-web: progressing: 0/3 replicas available {BY}"]


def test_the_verify_report_fails_the_helmrelease_for_a_rendered_object_and_counts_rendered_apart() -> None:
    stored = decode_secret(release_secret())
    rendered = rendered_verdicts(
        stored, rendered_live(drop="web-web"), namespaced, release="HelmRelease flux-system/web", source=SOURCE
    )
    d = desired()
    rv = ReleaseVerdict(Health("healthy", "deployed"), rendered)
    verdict = ObjectVerdict(d, ObjectResult(d.ref, True, source=d.source), rv.health, rv.rendered)
    report = VerifyReport([verdict])
    assert not report.converged
    assert report.summary() == {
        "objects": 1,
        "verified": 0,
        "missing": 0,
        "drifted": 0,
        "unhealthy": 1,
        "rendered": 4,
        "rendered_verified": 3,
    }
    assert verdict.problems() == [f"Deployment/apps/web-web: missing from the cluster {BY}"]
    out = json.dumps(report.to_dict())
    assert '"rendered": [' in out and "hunter2" not in out and "from-values" not in out


# --------------------------------------------------------------------------- one verify pass, the API faked


class FakeKube:
    """The few verbs verify uses, over a dict of live objects; records what was asked."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.lists: list[tuple[str, str, str | None]] = []

    def discovery(self, refresh: bool = False) -> dict[Any, Any]:
        return {}

    def info(self, api_version: str, kind: str) -> Any:
        return type("Info", (), {"namespaced": namespaced(api_version, kind)})()

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        self.lists.append((api_version, kind, namespace))
        return [
            json.loads(json.dumps(o))
            for o in self.objects
            if o["apiVersion"] == api_version
            and o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return next(
            (
                json.loads(json.dumps(o))
                for o in self.objects
                if (o["apiVersion"], o["kind"], o["metadata"]["name"]) == (api_version, kind, name)
                and o["metadata"].get("namespace") == namespace
            ),
            None,
        )


def test_one_verify_pass_reads_the_release_record_and_lists_only_the_namespaces_rendered_into() -> None:
    from rebuild.core.config import VerifySpec
    from rebuild.recover.converge import check

    objects = [live(), release_secret(), *rendered_live(available=0).values()]
    kube = FakeKube(objects)
    report = check(kube, [desired()], VerifySpec())  # type: ignore[arg-type]
    assert not report.converged
    assert report.failing[0].problems() == [f"Deployment/apps/web-web: progressing: 0/3 replicas available {BY}"]
    assert ("v1", "Secret", "apps") in kube.lists and ("v1", "Secret", None) not in kube.lists
    assert ("rbac.authorization.k8s.io/v1", "ClusterRole", None) in kube.lists
    entry = report.to_dict()["objects"][0]
    assert [r["ref"] for r in entry["rendered"]][:2] == ["ConfigMap/apps/web-settings", "Secret/apps/web-token"]
    assert "hunter2" not in json.dumps(report.to_dict())

    kube = FakeKube([live(), release_secret(), *rendered_live().values()])
    report = check(kube, [desired()], VerifySpec())  # type: ignore[arg-type]
    assert report.converged, [p for v in report.failing for p in v.problems()]
    assert report.summary()["rendered_verified"] == 4


def test_a_missing_release_record_fails_the_helmrelease_with_the_command_to_restore_it() -> None:
    from rebuild.core.config import VerifySpec
    from rebuild.recover.converge import check

    report = check(FakeKube([live()]), [desired()], VerifySpec())  # type: ignore[arg-type]
    (line,) = report.failing[0].problems()
    assert "Secret flux-system/sh.helm.release.v1.web.v1" in line and "is missing" in line
    assert "flux reconcile helmrelease -n flux-system web --force" in line
