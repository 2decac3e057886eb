"""The real Flux controllers as host processes, reconciling a local cluster.

Why: the ``local`` provider's nodes are kwok fakes, so Pods never execute and Flux's
in-cluster Deployments could never run there. The same source-controller,
kustomize-controller and helm-controller binaries (built by the toolchain from their Go
modules) run fine outside a cluster: they read ``KUBECONFIG`` from the environment and talk
to the API like any client. That makes a drill on a local cluster exercise the real
reconciler, not a stand-in: the real GitRepository fetch over HTTP, the real kustomize build
and server-side apply with pruning, the real Helm install of a HelmRelease.

What ``start`` does: server-side apply this version's CRDs (shipped with the binaries) and
wait until they are established, create the ``flux-system`` namespace, start the three
controllers on 127.0.0.1 free ports (source-controller also serves its artifacts there, and
kustomize-controller and helm-controller download them from that address), and wait for
their ``/readyz``.
Leader election stays off (one replica each). Processes and ports are recorded in
``<state_dir>/flux.json`` (0600) like the cluster's own, so ``stop`` from another CLI call
stops exactly them. Logs: ``<state_dir>/logs/<controller>.log``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rebuild.adapters import process
from rebuild.adapters.kube import Kube
from rebuild.adapters.process import ProcRecord
from rebuild.clusters.base import Component
from rebuild.core.errors import ClusterError
from rebuild.core.progress import Progress
from rebuild.toolchain.tools import Toolchain

NAMESPACE = "flux-system"
CONTROLLERS = ("source-controller", "kustomize-controller", "helm-controller")
# A record written before helm-controller joined lists no "controllers": it started these two.
_RECORDED_BEFORE_HELM = ("source-controller", "kustomize-controller")
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
CRD_API = "apiextensions.k8s.io/v1"

FluxState = Literal["running", "degraded", "stopped", "absent"]


# Flux's client-side limits (50 QPS, burst 300, 4 concurrent SSA operations) are what make a
# restore of thousands of objects slow (client-go#564); a rebuild raises them and lets the
# API server's priority and fairness decide. The same flags go to in-cluster installs.
# helm-controller installs 4 releases at a time and re-checks a release waiting on a
# ``dependsOn`` every 30 s by default: a restore of a platform of charts wants more of both.
# source-controller builds 2 artifacts at a time by default, and a restore asks it for one
# HelmChart per HelmRelease at once (bench/helm_releases: 20 charts queued two by two).
SPEED_ARGS: dict[str, tuple[str, ...]] = {
    "source-controller": ("--kube-api-qps=500", "--kube-api-burst=1000", "--concurrent=8"),
    "kustomize-controller": ("--kube-api-qps=500", "--kube-api-burst=1000", "--concurrent-ssa=16"),
    "helm-controller": ("--kube-api-qps=500", "--kube-api-burst=1000", "--concurrent=8", "--requeue-dependency=5s"),
}


def _noop(_: str) -> None:
    pass


@dataclass(frozen=True)
class FluxStatus:
    state: FluxState
    components: list[Component] = field(default_factory=list)
    artifact_server: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "artifact_server": self.artifact_server,
            "components": [c.__dict__ for c in self.components],
        }


@dataclass
class FluxLocal:
    """source-controller, kustomize-controller and helm-controller for the cluster behind ``kubeconfig``."""

    state_dir: Path
    kubeconfig: Path
    toolchain: Toolchain = field(default_factory=Toolchain)
    namespace: str = NAMESPACE
    log_level: str = "info"

    # ------------------------------------------------------------------ paths and record

    @property
    def record_path(self) -> Path:
        return self.state_dir / "flux.json"

    @property
    def storage_path(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def _log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _load(self) -> dict[str, Any]:
        return process.load_record(self.record_path)

    def _save(self, data: dict[str, Any]) -> None:
        process.save_record(self.record_path, data)

    def _procs(self, data: dict[str, Any] | None = None) -> list[ProcRecord]:
        data = self._load() if data is None else data
        return [ProcRecord.from_dict(p) for p in data.get("processes", [])]

    # ------------------------------------------------------------------ lifecycle

    def status(self) -> FluxStatus:
        data = self._load()
        if not data:
            return FluxStatus("absent")
        ports: dict[str, int] = data.get("ports", {})
        procs = {p.name: p for p in self._procs(data)}
        # the controllers this record started (an older rebuild started only two)
        started = tuple(data.get("controllers") or _RECORDED_BEFORE_HELM)
        comps = [
            Component(
                name,
                procs[name].pid if name in procs else None,
                name in procs and process.alive(procs[name]),
                port=ports.get(f"{name}-health"),
                log=str(self._log(name)),
            )
            for name in started
        ]
        n_alive = sum(c.alive for c in comps)
        state: FluxState
        if n_alive == 0:
            state = "stopped"
        elif (
            set(started) >= set(CONTROLLERS)
            and n_alive == len(started)
            and all(self._healthy(ports[f"{c}-health"]) for c in started)
        ):
            state = "running"
        else:
            state = "degraded"
        storage = f"http://127.0.0.1:{ports['storage']}" if "storage" in ports else None
        return FluxStatus(state, comps, storage)

    def start(
        self, progress: Progress | None = None, timeout: float = 60.0, *, made_by: threading.Event | None = None
    ) -> FluxStatus:
        """Install the CRDs and namespace, start the controllers, wait until they are ready.

        Idempotent: running controllers are left alone; degraded ones (one dead, or a record
        from before helm-controller joined) are restarted. ``made_by``: someone else (the
        platform stack, running now) creates the CRDs and the namespace; wait until they are
        there instead of applying them, unless the event is set (that someone gave up):
        returns the status then, nothing started.
        """
        say = progress or _noop
        current = self.status()
        if current.state == "running":
            say("flux controllers already running")
            return current
        if current.state == "degraded":
            say("flux controllers degraded; restarting them")
            self.stop()
        binaries = {name: self.toolchain.binary(name) for name in CONTROLLERS}
        t0 = time.monotonic()
        kube = Kube.from_kubeconfig(self.kubeconfig)
        try:
            if made_by is not None:
                names = self._crd_names()
                if not self._await_platform(kube, names, made_by):
                    return current
                n = len(names)
                t0 = time.monotonic()  # the start is what follows; the wait was the platform's
            else:
                n = self._install_crds(kube, say)
                kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        finally:
            kube.close()
        say(f"{n} Flux CRDs established; namespace {self.namespace} present")

        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        ports = self._choose_ports()
        data: dict[str, Any] = {
            "kubeconfig": str(self.kubeconfig),
            "controllers": list(CONTROLLERS),
            "ports": ports,
            "processes": [],
        }
        self._save(data)
        started: list[ProcRecord] = []
        try:
            for name in CONTROLLERS:
                say(f"starting {name} (health 127.0.0.1:{ports[name + '-health']})")
                started.append(process.spawn(name, self._argv(name, binaries[name], ports), log=self._log(name), env=self._env()))
                data["processes"] = [p.to_dict() for p in started]
                self._save(data)
            for rec in started:
                self._wait_healthy(rec, ports[f"{rec.name}-health"], timeout)
        except BaseException:
            for rec in reversed(started):
                process.stop(rec, timeout=5)
            data["processes"] = []
            with contextlib.suppress(OSError):
                self._save(data)
            raise
        data["started_seconds"] = round(time.monotonic() - t0, 2)
        data["ready_at"] = round(time.time(), 3)  # wall clock: when the controllers were ready
        self._save(data)
        say(f"flux controllers ready in {data['started_seconds']}s")
        return self.status()

    def ensure_running(self, progress: Progress | None = None, *, made_by: threading.Event | None = None) -> bool:
        """start() unless every controller already runs healthy; True if it started them."""
        if self.status().state == "running":
            return False
        self.start(progress, made_by=made_by)
        # a start that gave up waiting for the platform (``made_by``) recorded no process
        return made_by is None or bool(self.pids())

    def stop(self) -> None:
        """Stop every controller this state folder recorded (never anything else)."""
        data = self._load()
        for rec in reversed(self._procs(data)):
            process.stop(rec)
        if data:
            data["processes"] = []
            with contextlib.suppress(OSError):
                self._save(data)

    def purge(self) -> None:
        """stop() and remove the state folder (artifacts, logs, record)."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs()]

    # ------------------------------------------------------------------ internals

    def _env(self) -> dict[str, str]:
        env = process.inherited_env()
        # The controllers take the kubeconfig from the environment only (no flag).
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["RUNTIME_NAMESPACE"] = self.namespace
        env.setdefault("HOME", str(self.state_dir))
        # Neither variable may redirect them elsewhere: events go nowhere, artifacts are local.
        for key in ("EVENTS_ADDR", "SOURCE_CONTROLLER_LOCALHOST", "STORAGE_ADV_ADDR", "METRICS_ADDR"):
            env.pop(key, None)
        return env

    def _argv(self, name: str, binary: Path, ports: dict[str, int]) -> list[str]:
        argv = [
            str(binary),
            f"--metrics-addr=127.0.0.1:{ports[name + '-metrics']}",
            f"--health-addr=127.0.0.1:{ports[name + '-health']}",
            "--log-encoding=console",
            f"--log-level={self.log_level}",
            "--watch-all-namespaces=true",
            "--enable-leader-election=false",
            *SPEED_ARGS.get(name, ()),
        ]
        if name == "source-controller":
            addr = f"127.0.0.1:{ports['storage']}"
            argv += [f"--storage-path={self.storage_path}", f"--storage-addr={addr}", f"--storage-adv-addr={addr}"]
        return argv

    def _choose_ports(self) -> dict[str, int]:
        keys = [f"{c}-{k}" for c in CONTROLLERS for k in ("metrics", "health")] + ["storage"]
        ports: dict[str, int] = {}
        for key in keys:
            ports[key] = process.free_port(set(ports.values()))
        return ports

    def _crd_docs(self) -> list[dict[str, Any]]:
        return [
            doc
            for controller in CONTROLLERS
            for path in self.toolchain.flux_crds(controller)
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
            if doc
        ]

    def _crd_names(self) -> list[str]:
        return [doc["metadata"]["name"] for doc in self._crd_docs()]

    def _await_platform(self, kube: Kube, crds: list[str], gave_up: threading.Event, poll: float = 0.2) -> bool:
        """Wait until the CRDs named are established and the namespace exists; False if
        ``gave_up`` is set first. One GET per object and poll, no retries: an API server that
        does not answer is "not yet"."""
        pending = list(crds)
        while not gave_up.is_set():
            pending = [n for n in pending if not _established(kube.peek(f"/apis/{CRD_API}/customresourcedefinitions/{n}"))]
            if not pending and kube.peek(f"/api/v1/namespaces/{self.namespace}") is not None:
                return True
            gave_up.wait(poll)
        return False

    def _install_crds(self, kube: Kube, say: Progress, timeout: float = 60.0) -> int:
        names: list[str] = []
        for doc in self._crd_docs():
            kube.apply(doc, field_manager="rebuild-flux")
            names.append(doc["metadata"]["name"])
        say(f"applied {len(names)} Flux CRDs; waiting until established")
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if not _established(kube.get(CRD_API, "CustomResourceDefinition", n))]
            if pending:
                time.sleep(0.2)
        if pending:
            raise ClusterError(
                f"Flux CRDs not established after {timeout:.0f}s: {', '.join(pending)}",
                fix="read the kube-apiserver log",
            )
        kube.discovery(refresh=True)
        return len(names)

    def _healthy(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_healthy(self, rec: ProcRecord, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive(rec):
                raise ClusterError(f"{rec.name} exited during start:\n{process.tail(rec.log)}", fix=f"read {rec.log}")
            if self._healthy(port):
                return
            time.sleep(0.2)
        raise ClusterError(f"{rec.name} not ready (/readyz) after {timeout:.0f}s", fix=f"read {rec.log}")


def _established(crd: dict[str, Any] | None) -> bool:
    for cond in ((crd or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Established" and cond.get("status") == "True":
            return True
    return False


def request_reconcile(kube: Kube, api_version: str, kind: str, name: str, namespace: str = NAMESPACE) -> str:
    """Ask Flux to reconcile an object now (what ``flux reconcile`` does); returns the token set."""
    token = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    ref = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}
    kube.patch(ref, {"metadata": {"annotations": {REQUESTED_AT: token}}}, field_manager="rebuild-flux")
    return token
