"""Health of live objects, kstatus-style, on realistic status blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rebuild.core.config import HealthRuleSpec
from rebuild.reconcilers.flux import revision_matches
from rebuild.recover.health import Health, assess, field_value

DATA = Path(__file__).parent / "data" / "verify"
SHA = "8f2a41c6b1d04e7a9c3b5d6e7f8091a2b3c4d5e6"


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": "2026-11-26T10:00:00Z"}


def obj(
    api_version: str, kind: str, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "n", **meta}}
    if spec is not None:
        out["spec"] = spec
    if status is not None:
        out["status"] = status
    return out


# --------------------------------------------------------------------------- Deployment


def test_real_deployment_is_healthy() -> None:
    live = json.loads((DATA / "deployment_cart_drifted.json").read_text())
    assert assess(live) == Health("healthy", "5/5 replicas available")


def deployment(want: int | None, generation: int = 2, **status: Any) -> dict[str, Any]:
    spec = {} if want is None else {"replicas": want}
    base = {"observedGeneration": generation, "conditions": [cond("Available", "True", "MinimumReplicasAvailable")]}
    return obj("apps/v1", "Deployment", spec, {**base, **status}, generation=generation)


def test_deployment_states() -> None:
    assert assess(deployment(3, replicas=3, updatedReplicas=3, availableReplicas=3, readyReplicas=3)).healthy
    # replicas defaults to 1
    assert assess(deployment(None, replicas=1, updatedReplicas=1, availableReplicas=1)).healthy
    assert assess(deployment(3, replicas=3, updatedReplicas=1, availableReplicas=3)) == Health(
        "progressing", "1/3 replicas updated"
    )
    assert assess(deployment(3, replicas=4, updatedReplicas=3, availableReplicas=3)) == Health(
        "progressing", "1 old replicas pending termination"
    )
    assert assess(deployment(3, replicas=3, updatedReplicas=3, availableReplicas=2)).status == "progressing"
    # scaled to zero: nothing to wait for, Available is irrelevant
    assert assess(obj("apps/v1", "Deployment", {"replicas": 0}, {"observedGeneration": 1}, generation=1)).healthy


def test_deployment_without_available_condition_is_progressing() -> None:
    live = deployment(1, replicas=1, updatedReplicas=1, availableReplicas=1)
    live["status"]["conditions"] = [cond("Available", "False", "MinimumReplicasUnavailable")]
    assert assess(live) == Health("progressing", "Available condition is not True")


def test_deployment_observed_generation_lags() -> None:
    live = deployment(3, generation=5, replicas=3, updatedReplicas=3, availableReplicas=3)
    live["status"]["observedGeneration"] = 4
    assert assess(live) == Health("progressing", "waiting for the controller to observe generation 5 (seen 4)")


def test_deployment_stuck_rollout_is_degraded() -> None:
    live = deployment(3, replicas=4, updatedReplicas=1, availableReplicas=3)
    live["status"]["conditions"].append(
        cond("Progressing", "False", "ProgressDeadlineExceeded", 'ReplicaSet "cart-6f" has timed out progressing.')
    )
    h = assess(live)
    assert h.status == "degraded" and "ProgressDeadlineExceeded" in h.message
    failing = deployment(3, replicas=0)
    failing["status"]["conditions"].append(cond("ReplicaFailure", "True", "FailedCreate", "exceeded quota"))
    assert assess(failing) == Health("degraded", "cannot create pods: FailedCreate: exceeded quota")


# --------------------------------------------------------------------------- other workloads


def test_statefulset() -> None:
    ok = obj(
        "apps/v1",
        "StatefulSet",
        {"replicas": 2},
        {"replicas": 2, "readyReplicas": 2, "currentRevision": "db-5c9", "updateRevision": "db-5c9", "observedGeneration": 1},
        generation=1,
    )
    assert assess(ok) == Health("healthy", "2/2 replicas ready")
    rolling = json.loads(json.dumps(ok))
    rolling["status"].update(updateRevision="db-7aa", updatedReplicas=1)
    assert assess(rolling) == Health("progressing", "rolling update: 1/2 pods at revision db-7aa")
    not_ready = json.loads(json.dumps(ok))
    not_ready["status"]["readyReplicas"] = 1
    assert assess(not_ready) == Health("progressing", "1/2 replicas ready")
    # revisions not reported yet (OnDelete, kwok): readiness decides
    bare = obj("apps/v1", "StatefulSet", {}, {"replicas": 1, "readyReplicas": 1})
    assert assess(bare).healthy


def test_daemonset() -> None:
    ds = obj("apps/v1", "DaemonSet", {}, {"desiredNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": 3})
    assert assess(ds) == Health("healthy", "3/3 pods ready")
    ds["status"]["numberReady"] = 2
    assert assess(ds) == Health("progressing", "2/3 pods ready")
    ds["status"]["updatedNumberScheduled"] = 1
    assert assess(ds) == Health("progressing", "1/3 pods updated")
    assert assess(obj("apps/v1", "DaemonSet", {}, {"desiredNumberScheduled": 0})).healthy


def test_replicaset() -> None:
    rs = obj("apps/v1", "ReplicaSet", {"replicas": 2}, {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2})
    assert assess(rs).healthy
    rs["status"]["availableReplicas"] = 1
    assert assess(rs).status == "progressing"


def test_job() -> None:
    assert assess(obj("batch/v1", "Job", {}, {"conditions": [cond("Complete", "True")], "succeeded": 1})) == Health(
        "healthy", "complete"
    )
    failed = obj(
        "batch/v1",
        "Job",
        {},
        {"conditions": [cond("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]},
    )
    assert assess(failed) == Health("degraded", "job failed: BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert assess(obj("batch/v1", "Job", {}, {"active": 1})) == Health("progressing", "0 succeeded, 1 active")
    assert assess(obj("batch/v1", "Job", {"suspend": True}, {})) == Health("healthy", "suspended")


def test_pod() -> None:
    running = obj("v1", "Pod", {}, {"phase": "Running", "conditions": [cond("Ready", "True")]})
    assert assess(running) == Health("healthy", "running and ready")
    assert assess(obj("v1", "Pod", {}, {"phase": "Running", "conditions": [cond("Ready", "False")]})).status == "progressing"
    assert assess(obj("v1", "Pod", {}, {"phase": "Succeeded"})).healthy
    assert assess(obj("v1", "Pod", {}, {"phase": "Failed", "reason": "Evicted"})) == Health("degraded", "pod failed: Evicted")
    assert assess(obj("v1", "Pod", {}, {"phase": "Pending"})) == Health("progressing", "phase Pending")
    crashing = obj(
        "v1",
        "Pod",
        {},
        {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "cart",
                    "ready": False,
                    "restartCount": 6,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                }
            ],
        },
    )
    assert assess(crashing) == Health("degraded", "container cart: CrashLoopBackOff")


# --------------------------------------------------------------------------- cluster objects


def test_crd_namespace_pvc_service() -> None:
    crd = "apiextensions.k8s.io/v1"
    assert assess(
        obj(crd, "CustomResourceDefinition", {}, {"conditions": [cond("NamesAccepted", "True"), cond("Established", "True")]})
    ).healthy
    assert (
        assess(obj(crd, "CustomResourceDefinition", {}, {"conditions": [cond("Established", "False")]})).status == "progressing"
    )
    clash = obj(crd, "CustomResourceDefinition", {}, {"conditions": [cond("NamesAccepted", "False", "MultipleNamesNotAllowed")]})
    assert assess(clash).status == "degraded"

    assert assess(obj("v1", "Namespace", {}, {"phase": "Active"})) == Health("healthy")
    assert assess(obj("v1", "Namespace", {}, {"phase": "Terminating"})) == Health("progressing", "terminating")

    assert assess(obj("v1", "PersistentVolumeClaim", {}, {"phase": "Bound"})).healthy
    assert assess(obj("v1", "PersistentVolumeClaim", {}, {"phase": "Pending"})).status == "progressing"
    assert assess(obj("v1", "PersistentVolumeClaim", {}, {"phase": "Lost"})).status == "degraded"

    svc = json.loads((DATA / "service_cart.json").read_text())
    assert assess(svc) == Health("healthy")
    lb = obj("v1", "Service", {"type": "LoadBalancer"}, {"loadBalancer": {}})
    h = assess(lb)
    assert h.healthy and "no external address" in h.message
    assert assess(
        obj("v1", "Service", {"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"ip": "172.18.0.10"}]}})
    ) == Health("healthy")


def test_plain_objects_are_healthy_when_they_exist() -> None:
    assert assess(obj("v1", "ConfigMap")) == Health("healthy")
    assert assess({}) == Health("unknown", "not a Kubernetes object")


# --------------------------------------------------------------------------- reconcilers


def kustomization(*conds: dict[str, Any], revision: str = f"main@sha1:{SHA}", generation: int = 1) -> dict[str, Any]:
    status = {"observedGeneration": generation, "conditions": list(conds), "lastAppliedRevision": revision}
    return obj("kustomize.toolkit.fluxcd.io/v1", "Kustomization", {"path": "./apps"}, status, generation=generation)


def test_flux_kustomization_ready_at_the_expected_revision() -> None:
    ready = cond("Ready", "True", "ReconciliationSucceeded", f"Applied revision: main@sha1:{SHA}")
    assert assess(kustomization(ready), expected_revision=SHA).healthy
    assert assess(kustomization(ready), expected_revision=SHA[:7]).healthy
    old = kustomization(ready, revision="main@sha1:0000000000000000000000000000000000000000")
    h = assess(old, expected_revision=SHA)
    assert h.status == "progressing" and h.message.endswith(f"waiting for {SHA}")
    assert assess(old).healthy  # no revision asked for


def test_flux_not_ready_states() -> None:
    progressing = cond("Ready", "Unknown", "Progressing", "Reconciliation in progress")
    assert assess(kustomization(progressing)).status == "progressing"
    dep = cond("Ready", "False", "DependencyNotReady", "dependency 'flux-system/infra' is not ready")
    assert assess(kustomization(dep)).status == "progressing"
    broken = cond("Ready", "False", "BuildFailed", "kustomize build failed: accumulating resources")
    assert assess(kustomization(broken)) == Health(
        "degraded", "not ready: BuildFailed: kustomize build failed: accumulating resources"
    )
    stalled = cond("Stalled", "True", "InvalidPath", "path not found")
    assert assess(kustomization(stalled, broken)).status == "degraded"
    reconciling = cond("Reconciling", "True", "Progressing", "Fetching manifests")
    assert assess(kustomization(reconciling)).status == "progressing"
    assert assess(kustomization(reconciling, progressing)) == Health(
        "progressing", "reconciling: Progressing: Fetching manifests"
    )


def test_flux_routine_reconcile_of_a_ready_object_is_healthy_but_not_at_an_old_revision() -> None:
    """helm-controller and kustomize-controller mark Reconciling=True at the start of every
    reconcile, the periodic ones too, leaving Ready=True: a one-shot verify must not flag that."""
    again = cond("Reconciling", "True", "Progressing", "Fulfilling prerequisites")
    ready = cond("Ready", "True", "ReconciliationSucceeded", f"Applied revision: main@sha1:{SHA}")
    h = assess(kustomization(again, ready), expected_revision=SHA)
    assert h == Health(
        "healthy",
        f"ReconciliationSucceeded: Applied revision: main@sha1:{SHA} (reconciling again: Progressing: Fulfilling prerequisites)",
    )
    old = kustomization(again, ready, revision="main@sha1:0000000000000000000000000000000000000000")
    assert assess(old, expected_revision=SHA).status == "progressing"  # a new commit being applied
    behind = kustomization(again, ready)
    behind["metadata"]["generation"], behind["status"]["observedGeneration"] = 3, 2
    assert assess(behind).status == "progressing"  # a new spec not seen yet
    hr = obj("helm.toolkit.fluxcd.io/v2", "HelmRelease", {}, {"conditions": [again, cond("Ready", "True", "InstallSucceeded")]})
    assert assess(hr).healthy
    assert assess(kustomization()) == Health("progressing", "no Ready condition yet")


def test_flux_git_repository_artifact_revision() -> None:
    repo = obj(
        "source.toolkit.fluxcd.io/v1",
        "GitRepository",
        {"ref": {"branch": "main"}},
        {"conditions": [cond("Ready", "True", "Succeeded")], "artifact": {"revision": f"main@sha1:{SHA}"}},
    )
    assert assess(repo, expected_revision=SHA).healthy
    assert assess(repo, expected_revision="1" * 40).status == "progressing"


def test_flux_helmrelease_ignores_git_revision() -> None:
    hr = obj(
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        {},
        {"conditions": [cond("Ready", "True", "UpgradeSucceeded")], "lastAttemptedRevision": "1.2.3"},
    )
    assert assess(hr, expected_revision=SHA).healthy


def test_argo_application() -> None:
    def app(sync: str, health: str, revision: str = SHA) -> dict[str, Any]:
        return obj(
            "argoproj.io/v1alpha1",
            "Application",
            {},
            {"sync": {"status": sync, "revision": revision}, "health": {"status": health}},
        )

    assert assess(app("Synced", "Healthy"), expected_revision=SHA) == Health("healthy", "synced and healthy")
    assert assess(app("OutOfSync", "Healthy")) == Health("progressing", "sync OutOfSync")
    assert assess(app("Synced", "Progressing")).status == "progressing"
    assert assess(app("Synced", "Degraded")).status == "degraded"
    assert assess(app("Synced", "Missing")).status == "degraded"
    assert assess(app("Unknown", "Healthy")).status == "unknown"
    assert assess(app("Synced", "Healthy", revision="abc"), expected_revision=SHA).status == "progressing"


def test_generic_ready_condition() -> None:
    cert = obj(
        "cert-manager.io/v1", "Certificate", {}, {"conditions": [cond("Ready", "False", "Issuing", "Issuing certificate")]}
    )
    assert assess(cert) == Health("progressing", "not ready: Issuing: Issuing certificate")
    cert["status"]["conditions"] = [cond("Ready", "True")]
    assert assess(cert).healthy
    stalled = obj("example.com/v1", "Widget", {}, {"conditions": [cond("Stalled", "True", "Bad")]})
    assert assess(stalled).status == "degraded"


# --------------------------------------------------------------------------- config rules


def test_rules_from_config() -> None:
    db = obj("postgresql.cnpg.io/v1", "Cluster", {}, {"phase": "Setting up primary", "conditions": [cond("Ready", "True")]})
    rule_field = HealthRuleSpec("Cluster", field="status.phase", equals="Cluster in healthy state")
    h = assess(db, rules=[rule_field])
    assert h == Health("progressing", "status.phase is Setting up primary, want Cluster in healthy state (verify.health rule)")
    db["status"]["phase"] = "Cluster in healthy state"
    assert assess(db, rules=[rule_field]).healthy

    rule_cond = HealthRuleSpec("Clu*", condition="ContinuousArchiving")
    assert assess(db, rules=[rule_cond]).status == "progressing"
    db["status"]["conditions"].append(cond("ContinuousArchiving", "True"))
    assert assess(db, rules=[rule_cond, rule_field]).healthy
    # a rule for another kind does not apply
    assert assess(obj("v1", "ConfigMap"), rules=[rule_cond]).healthy


def test_rule_fields_compare_as_text() -> None:
    live = obj("example.com/v1", "Widget", {}, {"ready": True, "items": [{"n": 3}]})
    assert assess(live, rules=[HealthRuleSpec("Widget", field=".status.ready", equals="true")]).healthy
    assert assess(live, rules=[HealthRuleSpec("Widget", field="status.items[0].n", equals="3")]).healthy
    assert assess(live, rules=[HealthRuleSpec("Widget", field="status.missing", equals="x")]).status == "progressing"


@pytest.mark.parametrize(
    ("path", "value"),
    [("status.items[0].n", 3), ("status.items[5].n", None), ("spec", {}), ("status.ready.deeper", None)],
)
def test_field_value(path: str, value: Any) -> None:
    live = obj("example.com/v1", "Widget", {}, {"ready": True, "items": [{"n": 3}]})
    assert field_value(live, path) == value


@pytest.mark.parametrize(
    ("revision", "expected", "ok"),
    [
        (f"main@sha1:{SHA}", SHA, True),
        (f"main@sha1:{SHA}", SHA[:7], True),
        (f"main/{SHA}", SHA, True),
        (SHA, SHA[:10], True),
        (f"main@sha1:{SHA}", SHA[:5], False),  # too short to be a commit
        (f"main@sha1:{SHA}", "deadbeef", False),
        ("", SHA, False),
    ],
)
def test_revision_matches(revision: str, expected: str, ok: bool) -> None:
    assert revision_matches(revision, expected) is ok
