"""Issue 6, load: capture over 10,000 live objects and `rebuild up` of 1,000 objects while the
API server throttles rebuild, on the real local control plane.

Why it is set up this way: kube-apiserver never throttles system:masters (API priority and
fairness classifies it as exempt, and --max-requests-inflight lets it through), and the local
cluster's admin is in system:masters. So the cluster is started with ``rbac_admin`` (the
kubeconfig rebuild, Flux and Pulumi use is a cluster-admin bound by RBAC, like a real
operator's account) and ``apiserver_args`` lowering the server's concurrency, and a
PriorityLevelConfiguration of one seat (capture: no queue; up: a queue of two) takes every
request of that user. The cluster's own components stay exempt, as they are in a real
cluster with their own priority levels. Objects are created beforehand through the exempt
identity, so the throttle applies to what is measured: rebuild's (and its reconciler's)
requests. Capture first runs while another client holds the only seat, so one request is
refused more often than MAX_ATTEMPTS: sustained throttling, which must not fail it.

Passing means: each command completes with every object accounted for, HTTP 429s were
really served to rebuild's user (the API server's own counter, read from /metrics), and
rebuild waited them out (its "will retry ... HTTP 429" lines).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.rebuild_scale import generate, write_repo
from rebuild.adapters import gitserver
from rebuild.adapters.kube import MAX_ATTEMPTS, Kube
from rebuild.capture.listing import list_live
from rebuild.clusters.local import OPERATOR_USER, LocalCluster
from tests.conftest import unique
from tests.kubectl import kubectl

pytestmark = pytest.mark.integration

# Server concurrency 3 in all (APF shares it among priority levels: 1 seat for ours).
THROTTLE_FLAGS = ("--max-requests-inflight=2", "--max-mutating-requests-inflight=1")
PRIORITY_LEVEL = "rebuild-throttle"
NAMESPACES = 20
CONFIGMAPS_PER_NAMESPACE = 500  # 10,000 ConfigMaps
IN_GIT_PER_NAMESPACE = 10  # git declares 200 of them
PADDING = "x" * 1024  # 1 KiB per ConfigMap: a LIST page holds the seat for a while
RETRY_429 = re.compile(r"^Request attempt #(\d+) failed; will retry in [\d.]+s \(throttled, .*-> HTTP 429", re.M)


def throttle(system: Kube, queue: int = 0) -> None:
    """Every request of the operator user goes to one priority level of one seat, no borrowing,
    and a queue of ``queue`` requests (0: none); a request that finds the seat taken and the
    queue full is answered 429 at once. Returns when the API server applies it."""
    api = "flowcontrol.apiserver.k8s.io/v1"
    level = {
        "apiVersion": api,
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": PRIORITY_LEVEL},
        "spec": {
            "type": "Limited",
            "limited": {
                # With THROTTLE_FLAGS the server has 3 seats in all; 1 share of them rounds up to 1 seat.
                "nominalConcurrencyShares": 1,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": (
                    {"type": "Queue", "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": queue}}
                    if queue
                    else {"type": "Reject"}
                ),
            },
        },
    }
    schema = {
        "apiVersion": api,
        "kind": "FlowSchema",
        "metadata": {"name": PRIORITY_LEVEL},
        "spec": {
            "priorityLevelConfiguration": {"name": PRIORITY_LEVEL},
            "matchingPrecedence": 500,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "User", "user": {"name": OPERATOR_USER}}],
                    "resourceRules": [
                        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True, "namespaces": ["*"]}
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    system.apply(level)
    system.apply(schema)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the API server picks flow control objects up within a second or so
        if level_metric(system, "apiserver_flowcontrol_nominal_limit_seats") == 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"the API server did not apply the priority level {PRIORITY_LEVEL}")


@contextlib.contextmanager
def seat_taken(cluster: LocalCluster, system: Kube, tmp: Path) -> Iterator[None]:
    """Sustained throttling, made deterministic: another client of the operator user holds the
    priority level's only seat with a large LIST whose response it does not read (the API server
    blocks writing it), so every other request of the level is refused until this exits."""
    kc = yaml.safe_load(cluster.kubeconfig().read_text())
    user, server = kc["users"][0]["user"], kc["clusters"][0]["cluster"]
    files = {"crt": user["client-certificate-data"], "key": user["client-key-data"], "ca": server["certificate-authority-data"]}
    for name, data in files.items():
        (tmp / f"hog.{name}").write_bytes(base64.b64decode(data))
    tls = ssl.create_default_context(cafile=str(tmp / "hog.ca"))
    tls.load_cert_chain(str(tmp / "hog.crt"), str(tmp / "hog.key"))
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(server["server"].rsplit(":", 1)[1])))
    with tls.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"GET /api/v1/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        deadline = time.monotonic() + 30
        while level_metric(system, "apiserver_flowcontrol_current_executing_requests") < 1:
            assert time.monotonic() < deadline, "the seat-holding LIST never started executing"
            time.sleep(0.1)
        yield


def metrics(system: Kube) -> str:
    return system.request("GET", "/metrics").text


def level_metric(system: Kube, name: str) -> int:
    """The sum of a flow control metric's samples for the throttling priority level."""
    pattern = re.compile(rf'^{name}\{{[^}}]*priority_level="{PRIORITY_LEVEL}"[^}}]*\}} (\S+)$', re.M)
    return sum(int(float(v)) for v in pattern.findall(metrics(system)))


def rejected(system: Kube) -> int:
    """Requests of the throttling priority level the API server answered with 429 (all reasons)."""
    return level_metric(system, "apiserver_flowcontrol_rejected_requests_total")


def env_for(state: Path) -> dict[str, str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    env.pop("CI", None)  # keep the progress lines
    return env


def rebuild_cli(args: list[str], state: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env_for(state), timeout=900
    )
    return r, time.monotonic() - t0


def in_pool(fn: Any, items: list[Any], workers: int = 16) -> None:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, items))


@pytest.fixture
def throttled_cluster(tmp_path: Path, toolchain: Any) -> Iterator[tuple[LocalCluster, Kube, Path]]:
    """A local cluster whose kubeconfig user can be throttled; its exempt (system) connection; the state dir."""
    state = tmp_path / "state"
    cluster = LocalCluster(
        unique("load"), nodes=4, root=state, unsafe_fast_storage=True, rbac_admin=True, apiserver_args=THROTTLE_FLAGS
    )
    system: Kube | None = None
    try:
        cluster.create()
        system = Kube.from_kubeconfig(cluster.system_kubeconfig())
        yield cluster, system, state
    finally:
        if system is not None:
            system.close()
        cluster.delete(purge=True)
        gitserver.stop_server(state / "gitserver")


def report(name: str, seconds: float, served: int, retries: list[int]) -> None:
    """The numbers docs/measurements.md quotes (shown with pytest -s)."""
    print(
        f"\n[{name}] {seconds:.1f}s; {served} HTTP 429 served to {OPERATOR_USER}; "
        f"{len(retries)} of them to rebuild itself, each logged and retried "
        f"(most for one request: {max(retries, default=0)})"
    )


def test_capture_over_10000_objects_while_throttled(throttled_cluster: tuple[LocalCluster, Kube, Path], tmp_path: Path) -> None:
    cluster, system, state = throttled_cluster
    namespaces = [f"load-{i}" for i in range(NAMESPACES)]

    def configmap(ns: str, i: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}", "namespace": ns},
            "data": {"LOG_LEVEL": "info", "index": str(i), "settings": PADDING},
        }

    in_git = [configmap(ns, i) for ns in namespaces for i in range(IN_GIT_PER_NAMESPACE)]
    not_in_git = [configmap(ns, i) for ns in namespaces for i in range(IN_GIT_PER_NAMESPACE, CONFIGMAPS_PER_NAMESPACE)]
    ns_objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]

    # The repo: the namespaces and 200 ConfigMaps, one file per namespace.
    repo = tmp_path / "repo"
    for ns, ns_obj in zip(namespaces, ns_objects, strict=True):
        path = repo / "apps" / ns / "objects.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump_all([ns_obj, *(o for o in in_git if o["metadata"]["namespace"] == ns)], sort_keys=False))
    config = repo / "rebuild.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"name": "load", "url": ".", "branch": "main", "path": "apps"}],
                "cluster": {"provider": "local", "name": cluster.name, "nodes": 4},
                "reconciler": {"kind": "flux", "interval": "1m"},
            },
            sort_keys=False,
        )
    )

    # Live: what Flux would have applied, plus 9,800 ConfigMaps its kustomize-controller made
    # that git does not declare (a reconciler's objects: listed, not findings), created fast
    # through the exempt identity; then three changes by hand.
    t0 = time.monotonic()
    in_pool(lambda o: system.apply(o, field_manager="kustomize-controller"), ns_objects)
    in_pool(lambda o: system.apply(o, field_manager="kustomize-controller"), in_git)
    in_pool(lambda o: system.create(o, field_manager="kustomize-controller"), not_in_git)
    created_s = time.monotonic() - t0
    # The three changes by hand, with real kubectl (as the exempt identity, before the throttle).
    admin = cluster.system_kubeconfig()
    cm0, cm1 = (o["metadata"] for o in in_git[:2])
    kubectl(admin, "-n", cm0["namespace"], "patch", f"configmap/{cm0['name']}", "-p", '{"data":{"LOG_LEVEL":"debug"}}')
    kubectl(admin, "-n", cm1["namespace"], "label", f"configmap/{cm1['name']}", "team=oncall")
    kubectl(admin, "-n", namespaces[0], "create", "configmap", "hotfix", "--from-literal=k=v")

    # What capture must see: every object of every kind it lists in those namespaces.
    live_configmaps = [o for o in system.list("v1", "ConfigMap") if o["metadata"]["namespace"] in namespaces]
    assert len(live_configmaps) >= NAMESPACES * CONFIGMAPS_PER_NAMESPACE

    # Sustained throttling first: the only seat is taken until rebuild's first request has been
    # refused more often than MAX_ATTEMPTS (a limit for outages, not for throttling); then rebuild
    # shares the seat with nobody, and its 16 concurrent LISTs still compete for it.
    throttle(system)
    out, err = tmp_path / "capture.out", tmp_path / "capture.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        with seat_taken(cluster, system, tmp_path):
            before = rejected(system)
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "rebuild.cli", "-o", "json", "--config", str(config), "capture", "--dry-run"],
                stdout=stdout,
                stderr=stderr,
                text=True,
                env=env_for(state),
            )
            while rejected(system) - before <= MAX_ATTEMPTS + 1 and proc.poll() is None:
                time.sleep(0.2)
            taken = time.monotonic() - t0
        try:
            proc.wait(900)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - t0
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    served = rejected(system) - before
    retries = [int(n) for n in RETRY_429.findall(r.stderr)]
    report(
        f"capture, {len(live_configmaps)} ConfigMaps (created in {created_s:.1f}s), seat taken for the first {taken:.1f}s",
        seconds,
        served,
        retries,
    )

    assert r.returncode == 1, r.stderr[-3000:]  # 1: drift found (the three changes); 2 would be an error
    res = json.loads(r.stdout)
    assert res["action"] == "dry-run"
    # Every live object was listed: as many as the same LISTs return to the exempt identity.
    expected = len(list_live(system, namespaces, {("", "Namespace")}))
    assert res["live_objects_listed"] == expected, (res["live_objects_listed"], expected)
    assert res["live_objects_listed"] > 10_000
    findings = sorted((f["object"], f["kind"], f["path"], f["manager"]) for f in res["report"]["findings"])
    assert findings == [
        (f"ConfigMap/{namespaces[0]}/cm-0", "changed", "data.LOG_LEVEL", "kubectl-patch"),
        (f"ConfigMap/{namespaces[0]}/cm-1", "added", "metadata.labels.team", "kubectl-label"),
        (f"ConfigMap/{namespaces[0]}/hotfix", "created", None, "kubectl-create"),
    ], findings
    # Throttling really happened, and rebuild waited it out: one request was refused more
    # often than the attempt limit of outages, every refusal was logged as a retry.
    assert served > MAX_ATTEMPTS
    assert max(retries) > MAX_ATTEMPTS, r.stderr[-3000:]
    assert len(retries) == served, (len(retries), served)
    assert "Traceback" not in r.stderr


def test_up_of_1000_objects_while_throttled(throttled_cluster: tuple[LocalCluster, Kube, Path], tmp_path: Path) -> None:
    cluster, system, state = throttled_cluster
    objs = generate(1000)
    config = write_repo(tmp_path / "repo", objs)
    cfg = yaml.safe_load(config.read_text())
    cfg["cluster"]["name"] = cluster.name
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    throttle(system, queue=2)
    before = rejected(system)
    r, seconds = rebuild_cli(["-o", "json", "--config", str(config), "up"], state)
    served = rejected(system) - before
    retries = [int(n) for n in RETRY_429.findall(r.stderr)]
    report("up, 1,000 objects", seconds, served, retries)

    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["converged"] is True
    print("  phases: " + ", ".join(f"{p['name']} {p['seconds']:.1f}s" for p in res["phases"]))
    assert all(p["status"] == "ok" for p in res["phases"]), res["phases"]
    verified = res["verify"]["objects"]
    assert len(verified) == 1000
    failed = [o for o in verified if not (o["ok"] and o["present"] and o["health"]["status"] == "healthy")]
    assert failed == []
    # Every declared object is really there (read back through the exempt identity).
    for kind, api in (("Namespace", "v1"), ("ConfigMap", "v1"), ("Service", "v1"), ("Deployment", "apps/v1")):
        want = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs if o["kind"] == kind}
        have = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in system.list(api, kind)}
        assert want <= have, (kind, sorted(want - have)[:5])
    assert served > 0
    assert "Traceback" not in r.stderr


def test_restart_keeps_the_throttle_and_the_rbac_user(throttled_cluster: tuple[LocalCluster, Kube, Path]) -> None:
    cluster, _, state = throttled_cluster
    api = next(c for c in cluster.status().components if c.name == "kube-apiserver")
    assert api.pid
    os.kill(api.pid, signal.SIGKILL)
    again = LocalCluster(cluster.name, root=state)  # no settings given: the recorded ones
    assert again.status().state == "degraded"
    again.create()
    new = next(c for c in again.status().components if c.name == "kube-apiserver")
    assert new.pid and new.pid != api.pid
    argv = Path(f"/proc/{new.pid}/cmdline").read_bytes().decode().split("\0")
    assert [a for a in argv if a.startswith("--max-")] == list(THROTTLE_FLAGS)
    assert "--bind-address=127.0.0.1" in argv
    kube = Kube.from_kubeconfig(again.kubeconfig())
    try:
        review = kube.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
        ).json()
    finally:
        kube.close()
    info = review["status"]["userInfo"]
    assert info["username"] == OPERATOR_USER and "system:masters" not in info.get("groups", [])
