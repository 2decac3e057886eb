"""The ``local`` provider: a real control plane as host processes, no containers.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake kubelets
that make scheduled Pods Running/Ready) run on 127.0.0.1 and free ports, one data folder
per cluster name. It exists because drills and tests need a real Kubernetes API on
machines without a container engine; it is also the fastest throwaway cluster anywhere.

Layout of ``<state>/clusters/<name>/``::

    cluster.json      ports, pids (+ start ticks), node count,     0600
                      extra kube-apiserver flags, rbac_admin
    kubeconfig        admin kubeconfig with embedded certs         0600
    system-kubeconfig system:masters kubeconfig of the components  0600
    pki/              CA, serving cert, admin cert, SA key pair    0600
    etcd/             etcd data (kept across down/up; removed by delete --purge)
    logs/<component>.log

``create`` of a stopped cluster restarts its processes on the same data; ``delete``
stops every process it started; ``delete(purge=True)`` also removes the folder.

Load tests need a throttled API server that throttles rebuild: ``apiserver_args`` adds
kube-apiserver flags (e.g. ``--max-requests-inflight=2``), and ``rbac_admin`` makes the
handed-out kubeconfig a user bound to cluster-admin by RBAC instead of a member of
system:masters, which API priority and fairness (and --max-requests-inflight) always exempt.
The cluster's own components keep a system:masters identity (``system-kubeconfig``). Both
settings are recorded, so a restart keeps them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rebuild.adapters import process
from rebuild.adapters.fs import atomic_write
from rebuild.adapters.process import ProcRecord
from rebuild.clusters import pki
from rebuild.clusters.base import ClusterStatus, Component, State, validate_name
from rebuild.core.errors import ClusterError, ConfigError, PortInUseError
from rebuild.core.progress import Progress
from rebuild.core.state import StateLayout, state_root
from rebuild.toolchain.tools import Toolchain

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORT_NAMES = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
# /16: 65k Service IPs (a /24 runs out at 254 Services); 10.0.0.1 stays the API service IP.
SERVICE_CIDR = "10.0.0.0/16"
# kube-apiserver flags apiserver_args may not set: it listens on 127.0.0.1 and the port chosen here.
FIXED_APISERVER_FLAGS = frozenset({"--bind-address", "--secure-port", "--advertise-address"})
# The user of an rbac_admin cluster's kubeconfig (bound to cluster-admin; not in system:masters).
OPERATOR_USER = "rebuild-operator"


def _resync_stage() -> Path:
    """rebuild's kwok Stage that plays the kubelet's pod status resync (see the file's header)."""
    return Path(__file__).resolve().parent.parent / "data" / "kwok-pod-ready-resync.yaml"


def _noop(_: str) -> None:
    pass


@dataclass
class LocalCluster:
    name: str
    nodes: int = 1
    api_port: int | None = None
    root: Path = field(default_factory=state_root)
    toolchain: Toolchain = field(default_factory=Toolchain)
    # etcd without fsync: only for throwaway clusters (tests, drills); never for data you keep.
    unsafe_fast_storage: bool = False
    provider: str = "local"
    # Extra kube-apiserver flags (``--name=value``), e.g. a throttle. None: the recorded ones.
    apiserver_args: tuple[str, ...] | None = None
    # The kubeconfig's user: False "rebuild-admin" in system:masters (never throttled), True
    # OPERATOR_USER bound to cluster-admin by RBAC (throttled like any operator). None: as recorded.
    rbac_admin: bool | None = None

    def __post_init__(self) -> None:
        validate_name(self.name)
        if self.apiserver_args is not None:
            self.apiserver_args = check_apiserver_args(self.apiserver_args, self.name)
        if self.nodes < 1 or self.nodes > 1000:
            raise ConfigError(f"nodes={self.nodes} for cluster {self.name} is out of range", fix="use 1..1000 nodes")
        if self.api_port is not None and not 1 <= self.api_port <= 65535:
            raise ConfigError(f"api port {self.api_port} is not a TCP port", fix="use a port between 1024 and 65535")

    # ------------------------------------------------------------------ paths

    @property
    def dir(self) -> Path:
        return StateLayout(self.root).cluster_dir(self.name)

    @property
    def record_path(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def pki(self) -> pki.PKIPaths:
        return pki.PKIPaths(self.dir / "pki")

    def kubeconfig(self) -> Path:
        return StateLayout(self.root).cluster_kubeconfig(self.name)

    def system_kubeconfig(self) -> Path:
        """The system:masters kubeconfig the cluster's own components use (exempt from throttles)."""
        return self.dir / "system-kubeconfig"

    def _log(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    # ------------------------------------------------------------------ record

    def _load(self) -> dict[str, object]:
        return process.load_record(self.record_path)

    def _save(self, data: dict[str, object]) -> None:
        process.save_record(self.record_path, dict(data))

    def _procs(self, data: dict[str, object] | None = None) -> list[ProcRecord]:
        data = self._load() if data is None else data
        raw = data.get("processes", [])
        assert isinstance(raw, list)
        return [ProcRecord.from_dict(p) for p in raw]

    # ------------------------------------------------------------------ protocol

    def status(self) -> ClusterStatus:
        if not self.dir.exists():
            return ClusterStatus(self.name, self.provider, "absent", message="no such cluster")
        data = self._load()
        ports = data.get("ports", {})
        assert isinstance(ports, dict)
        procs = {p.name: p for p in self._procs(data)}
        comps: list[Component] = []
        for name in COMPONENTS:
            rec = procs.get(name)
            port_key = {"etcd": "etcd", "kube-apiserver": "apiserver"}.get(name)
            comps.append(
                Component(
                    name,
                    rec.pid if rec else None,
                    bool(rec and process.alive(rec)),
                    port=int(ports[port_key]) if port_key and port_key in ports else None,
                    log=str(self._log(name)),
                )
            )
        n_alive = sum(c.alive for c in comps)
        state: State
        if n_alive == 0:
            state = "stopped"
        elif n_alive == len(COMPONENTS) and self._ready():
            state = "running"
        else:
            state = "degraded"
        server = f"https://127.0.0.1:{ports['apiserver']}" if "apiserver" in ports else None
        return ClusterStatus(
            self.name,
            self.provider,
            state,
            server=server,
            kubeconfig=str(self.kubeconfig()) if self.kubeconfig().exists() else None,
            nodes=int(str(data.get("nodes", self.nodes))),
            components=comps,
        )

    def create(self, progress: Progress | None = None) -> ClusterStatus:
        say = progress or _noop
        current = self.status()
        if current.state == "running":
            say(f"cluster {self.name} is already running at {current.server}")
            return current
        if current.state == "degraded":
            say(f"cluster {self.name} is degraded; restarting its processes")
            self.delete()
        binaries = {c: self.toolchain.binary("kubernetes", c) for c in COMPONENTS[:4]}
        binaries["kwok"] = self.toolchain.binary("kwok")
        stages = self.toolchain.kwok_stages()

        fresh = not self.dir.exists()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "logs").mkdir(exist_ok=True)
        except OSError as exc:
            raise ClusterError(
                f"cannot create the cluster folder {self.dir}: {exc.strerror}",
                fix="set REBUILD_STATE_DIR (or --state-dir) to a writable folder",
            ) from exc
        started: list[ProcRecord] = []
        try:
            ports = self._choose_ports()
            extra, rbac_admin = self._settings()
            data: dict[str, object] = {
                "name": self.name,
                "provider": self.provider,
                "nodes": self.nodes,
                "ports": ports,
                "apiserver_args": list(extra),
                "rbac_admin": rbac_admin,
                "processes": [],
            }
            self._save(data)
            pki.generate(self.pki, self.name)
            self._write_kubeconfig(ports["apiserver"], rbac_admin)
            t0 = time.monotonic()
            say(f"starting etcd on 127.0.0.1:{ports['etcd']}")
            started.append(self._start_etcd(binaries["etcd"], ports))
            self._wait_etcd(ports["etcd"], started[-1])
            say(f"starting kube-apiserver on 127.0.0.1:{ports['apiserver']}")
            started.append(self._start_apiserver(binaries["kube-apiserver"], ports, extra))
            self._wait_ready(started[-1], timeout=90)
            if rbac_admin:
                self._bind_operator()
            say("starting kube-controller-manager, kube-scheduler and kwok")
            started.append(self._start_kcm(binaries["kube-controller-manager"], ports))
            started.append(self._start_scheduler(binaries["kube-scheduler"], ports))
            started.append(self._start_kwok(binaries["kwok"], stages))
            data["processes"] = [p.to_dict() for p in started]
            self._save(data)
            self._ensure_nodes(say)
            self._wait_default_sa(started)
            data["started_seconds"] = round(time.monotonic() - t0, 2)
            self._save(data)
        except BaseException:
            for rec in reversed(started):
                process.stop(rec, timeout=5)
            if fresh:
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                data = self._load()
                data["processes"] = []
                with contextlib.suppress(OSError):
                    self._save(data)
            raise
        say(
            f"cluster {self.name} ready in {data['started_seconds']}s "
            f"({self.nodes} kwok node(s)); kubeconfig: {self.kubeconfig()}"
        )
        return self.status()

    def delete(self, purge: bool = False) -> None:
        self._stop_addons()
        data = self._load()
        for rec in reversed(self._procs(data)):
            process.stop(rec)
        if data:
            data["processes"] = []
            with contextlib.suppress(OSError):
                self._save(data)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_addons(self) -> None:
        """Stop processes other components run for this cluster (e.g. Flux controllers on the
        host), recorded as ``<cluster dir>/<addon>/<name>.json`` with a ``processes`` list."""
        for record in sorted(self.dir.glob("*/*.json")):
            try:
                data = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
                continue
            for raw in reversed(data["processes"]):
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    process.stop(ProcRecord.from_dict(raw))

    def _settings(self) -> tuple[tuple[str, ...], bool]:
        """apiserver_args and rbac_admin: the ones given, else the recorded ones (a restart keeps them)."""
        old = self._load()
        if self.apiserver_args is not None:
            extra = self.apiserver_args
        else:
            recorded = old.get("apiserver_args", [])
            extra = check_apiserver_args(recorded if isinstance(recorded, list) else [], self.name)
        rbac_admin = self.rbac_admin if self.rbac_admin is not None else old.get("rbac_admin") is True
        return extra, rbac_admin

    # ------------------------------------------------------------------ ports

    def _choose_ports(self) -> dict[str, int]:
        """Reuse the ports a stopped cluster had (its etcd member knows its peer URL), else free ones."""
        old = self._load().get("ports", {})
        assert isinstance(old, dict)
        ports: dict[str, int] = {}
        taken: set[int] = set()
        if self.api_port is not None:
            if not process.port_free(self.api_port):
                raise PortInUseError(
                    f"port {self.api_port} on 127.0.0.1 (requested for the API server of cluster {self.name}) is in use",
                    fix="choose another --api-port, or omit it to use a free port",
                )
            ports["apiserver"] = self.api_port
            taken.add(self.api_port)
        for key in PORT_NAMES:
            if key in ports:
                continue
            prev = old.get(key)
            if isinstance(prev, int) and prev not in taken and process.port_free(prev):
                ports[key] = prev
            else:
                ports[key] = process.free_port(taken)
            taken.add(ports[key])
        return ports

    # ------------------------------------------------------------------ components

    def _start_etcd(self, binary: Path, ports: dict[str, int]) -> ProcRecord:
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        client = f"http://127.0.0.1:{ports['etcd']}"
        argv = [
            str(binary),
            f"--name={self.name}",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
            "--auto-compaction-retention=1h",
        ]
        if self.unsafe_fast_storage:
            argv.append("--unsafe-no-fsync")
        return process.spawn("etcd", argv, log=self._log("etcd"), cwd=self.dir)

    def _start_apiserver(self, binary: Path, ports: dict[str, int], extra: Sequence[str] = ()) -> ProcRecord:
        p = self.pki
        argv = [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={p.server_crt}",
            f"--tls-private-key-file={p.server_key}",
            f"--client-ca-file={p.ca_crt}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--enable-priority-and-fairness=true",
            *check_apiserver_args(extra, self.name),
        ]
        return process.spawn("kube-apiserver", argv, log=self._log("kube-apiserver"), cwd=self.dir)

    def _start_kcm(self, binary: Path, ports: dict[str, int]) -> ProcRecord:
        p = self.pki
        argv = [
            str(binary),
            f"--kubeconfig={self.system_kubeconfig()}",
            f"--authentication-kubeconfig={self.system_kubeconfig()}",
            f"--authorization-kubeconfig={self.system_kubeconfig()}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}",
            f"--root-ca-file={p.ca_crt}",
            f"--service-account-private-key-file={p.sa_key}",
            f"--cluster-signing-cert-file={p.ca_crt}",
            f"--cluster-signing-key-file={p.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            # Bind static PersistentVolumes within seconds (default 15 s) so StatefulSets start fast.
            "--pvclaimbinder-sync-period=2s",
            "--profiling=false",
        ]
        return process.spawn("kube-controller-manager", argv, log=self._log("kube-controller-manager"), cwd=self.dir)

    def _start_scheduler(self, binary: Path, ports: dict[str, int]) -> ProcRecord:
        argv = [
            str(binary),
            f"--kubeconfig={self.system_kubeconfig()}",
            f"--authentication-kubeconfig={self.system_kubeconfig()}",
            f"--authorization-kubeconfig={self.system_kubeconfig()}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ]
        return process.spawn("kube-scheduler", argv, log=self._log("kube-scheduler"), cwd=self.dir)

    def _start_kwok(self, binary: Path, stages: Path) -> ProcRecord:
        argv = [
            str(binary),
            f"--kubeconfig={self.system_kubeconfig()}",
            f"--config={stages}",
            f"--config={_resync_stage()}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
        ]
        return process.spawn("kwok", argv, log=self._log("kwok"), cwd=self.dir)

    # ------------------------------------------------------------------ waits

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return ctx

    def _api(self, method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, bytes]:
        ports = self._load().get("ports", {})
        assert isinstance(ports, dict)
        url = f"https://127.0.0.1:{ports['apiserver']}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=5) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (urllib.error.URLError, OSError, TimeoutError):
            return 0, b""

    def _ready(self) -> bool:
        if not self.pki.complete() or not self.record_path.exists():
            return False
        return self._api("GET", "/readyz")[0] == 200

    def _wait_etcd(self, port: int, rec: ProcRecord, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive(rec):
                raise ClusterError(
                    f"etcd of cluster {self.name} exited during start:\n{process.tail(rec.log)}",
                    fix=f"read {rec.log}",
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if b"true" in resp.read():
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ClusterError(f"etcd of cluster {self.name} not healthy after {timeout:.0f}s", fix=f"read {rec.log}")

    def _wait_ready(self, rec: ProcRecord, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive(rec):
                raise ClusterError(
                    f"kube-apiserver of cluster {self.name} exited during start:\n{process.tail(rec.log)}",
                    fix=f"read {rec.log}",
                )
            if self._ready():
                return
            time.sleep(0.25)
        raise ClusterError(
            f"kube-apiserver of cluster {self.name} not ready (/readyz) after {timeout:.0f}s",
            fix=f"read {rec.log}",
        )

    def _ensure_nodes(self, say: Progress) -> None:
        for i in range(self.nodes):
            name = f"{self.name}-node-{i}"
            code, _ = self._api("GET", f"/api/v1/nodes/{name}")
            if code == 200:
                continue
            code, body = self._api("POST", "/api/v1/nodes", _node(name))
            if code not in (201, 409):
                raise ClusterError(f"creating node {name} failed: HTTP {code} {body[:300]!r}", fix="read the kube-apiserver log")
        say(f"{self.nodes} kwok node(s) registered")

    def _wait_default_sa(self, started: list[ProcRecord], timeout: float = 60) -> None:
        """Pods cannot be created in a namespace before its default ServiceAccount exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in started:
                if not process.alive(rec):
                    raise ClusterError(
                        f"{rec.name} of cluster {self.name} exited during start:\n{process.tail(rec.log)}",
                        fix=f"read {rec.log}",
                    )
            if self._api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200:
                return
            time.sleep(0.25)
        raise ClusterError(
            f"kube-controller-manager of cluster {self.name} did not create the default ServiceAccount in {timeout:.0f}s",
            fix=f"read {self._log('kube-controller-manager')}",
        )

    def _bind_operator(self) -> None:
        """OPERATOR_USER gets cluster-admin through RBAC (what a real operator's account has)."""
        binding: dict[str, object] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_USER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
        }
        code, body = self._api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        if code not in (201, 409):
            raise ClusterError(
                f"binding {OPERATOR_USER} to cluster-admin failed: HTTP {code} {body[:300]!r}", fix="read the kube-apiserver log"
            )

    def _write_kubeconfig(self, api_port: int, rbac_admin: bool) -> None:
        server = f"https://127.0.0.1:{api_port}"
        write_kubeconfig(self.system_kubeconfig(), self.name, server, self.pki)
        if not rbac_admin:
            write_kubeconfig(self.kubeconfig(), self.name, server, self.pki)
            return
        crt, key = self.pki.dir / "operator.crt", self.pki.dir / "operator.key"
        pki.issue_client(self.pki, crt, key, OPERATOR_USER)
        write_kubeconfig(self.kubeconfig(), self.name, server, self.pki, cert=(crt, key))


def _node(name: str) -> dict[str, object]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "250"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def check_apiserver_args(args: Sequence[object], cluster: str) -> tuple[str, ...]:
    """Extra kube-apiserver flags: each ``--name`` or ``--name=value``, none of FIXED_APISERVER_FLAGS."""
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("--") or arg[2:3] in ("", "-", "="):
            raise ConfigError(
                f"kube-apiserver argument {arg!r} for cluster {cluster} is not a flag",
                fix="pass each flag as one --name=value string",
            )
        if arg.split("=", 1)[0] in FIXED_APISERVER_FLAGS:
            raise ConfigError(
                f"kube-apiserver flag {arg.split('=', 1)[0]} cannot be set for cluster {cluster}: "
                "the API server listens on 127.0.0.1 and the port rebuild chose",
                fix="remove it (use api_port to choose the port)",
            )
    return tuple(str(a) for a in args)


def kubeconfig_text(name: str, server: str, paths: pki.PKIPaths, *, cert: tuple[Path, Path] | None = None) -> str:
    """A kubeconfig for the cluster; the user is the admin, or ``cert`` (certificate, key)."""
    crt, key = cert or (paths.admin_crt, paths.admin_key)
    ctx = f"rebuild-{name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": ctx, "cluster": {"server": server, "certificate-authority-data": _b64(paths.ca_crt)}}],
        "users": [
            {
                "name": ctx,
                "user": {
                    "client-certificate-data": _b64(crt),
                    "client-key-data": _b64(key),
                },
            }
        ],
        "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
        "current-context": ctx,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(path: Path, name: str, server: str, paths: pki.PKIPaths, *, cert: tuple[Path, Path] | None = None) -> None:
    atomic_write(path, kubeconfig_text(name, server, paths, cert=cert).encode())
