"""A real S3-compatible object store on 127.0.0.1 (SeaweedFS), for a non-file Pulumi backend.

Why it exists: rebuild keeps Pulumi state in a file backend under its state dir by default,
but any backend URL can be configured, and "the state survives the loss of the state dir"
is only proven against a real object store. SeaweedFS (Apache-2.0) is one Go binary built by
the toolchain; ``weed server`` runs master, volume server, filer and S3 gateway in one process.
docs/toolchain.md ("seaweedfs: an S3 backend for Pulumi on 127.0.0.1") has the measurements
behind every flag used here.

- Every listener is on 127.0.0.1, each on a port picked free here (eight TCP listeners, no
  UDP); the Iceberg and Lance catalog ports (fixed by default) are off, and so is the
  anonymous usage report. Logs go to ``<data dir>/weed.log``, not to glog files in /tmp.
- The S3 admin identity (access key and secret) reaches the server through its environment
  only, never argv (``/proc/<pid>/cmdline`` is world-readable); the record written beside the
  data (``objectstore.json``, 0600) holds ports and the process, not the keys.
- The bucket is created with ``weed shell`` reading ``s3.bucket.create`` on stdin; ``start``
  returns once a signed S3 ListObjectsV2 on it answers 200 (the gateway knows the bucket and
  accepts the keys), so the first Pulumi call cannot race the setup.
- ``stop``: SIGTERM stops the volume server and filer (their data is flushed), but the master
  and S3 gateway ignore it, so once the filer's and volume server's listeners are closed (or
  after a grace period) the process gets SIGKILL, and the one file SIGKILL leaves behind, the
  master's ``/tmp/seaweedfs-master-grpc-<port>.sock``, is removed.

``list_keys``/``get`` read objects through the S3 API with the same keys (AWS Signature V4,
stdlib only): tests use them to check what Pulumi wrote.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rebuild.adapters import process
from rebuild.adapters.process import ProcRecord
from rebuild.core.errors import StackError
from rebuild.toolchain.tools import Toolchain

HOST = "127.0.0.1"
REGION = "us-east-1"
RECORD = "objectstore.json"
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class ObjectStoreError(StackError):
    """The object store (a Pulumi backend) could not be started, reached or read."""


@dataclass(frozen=True)
class Ports:
    """The eight TCP listeners of one ``weed server``."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    @classmethod
    def pick(cls) -> Ports:
        taken: set[int] = set()
        for _ in range(8):
            taken.add(process.free_port(taken))
        return cls(*sorted(taken))

    def all(self) -> list[int]:
        return [self.master, self.master_grpc, self.volume, self.volume_grpc, self.filer, self.filer_grpc, self.s3, self.s3_grpc]

    def grpc(self) -> dict[str, int]:
        return {"master": self.master_grpc, "volume": self.volume_grpc, "filer": self.filer_grpc, "s3": self.s3_grpc}


def server_argv(weed: Path, data_dir: Path, ports: Ports) -> list[str]:
    """``weed server`` with every listener named on 127.0.0.1 (docs/toolchain.md); no secret in it."""
    return [
        str(weed),
        "-logtostderr",  # glog would otherwise write weed.* files into /tmp
        "server",
        f"-dir={data_dir / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        "-filer",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        "-s3",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=8",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
    ]


@dataclass
class ObjectStore:
    """One running ``weed server`` holding one bucket; everything lives under ``data_dir``."""

    data_dir: Path
    bucket: str
    access_key: str
    secret_key: str
    ports: Ports
    proc: ProcRecord

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        data_dir: Path,
        bucket: str = "pulumi-state",
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        toolchain: Toolchain | None = None,
        timeout: float = 120.0,
    ) -> ObjectStore:
        """Start the server, create ``bucket``, return once S3 lists it with these keys.

        Keys default to fresh random ones. On any failure the server is stopped before the
        error is raised: nothing is left running."""
        tc = toolchain or Toolchain()
        weed = tc.binary("seaweedfs", "weed")
        data_dir = Path(data_dir).resolve()
        (data_dir / "data").mkdir(parents=True, exist_ok=True)
        access_key = access_key or "rebuild" + secrets.token_hex(6)
        secret_key = secret_key or secrets.token_urlsafe(30)
        ports = Ports.pick()
        env = process.inherited_env({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
        rec = process.spawn("weed", server_argv(weed, data_dir, ports), log=data_dir / "weed.log", env=env, cwd=data_dir)
        store = cls(data_dir, bucket, access_key, secret_key, ports, rec)
        process.save_record(data_dir / RECORD, {"process": rec.to_dict(), "ports": ports.all(), "bucket": bucket})
        try:
            store._create_bucket(weed, time.monotonic() + timeout)
            store._wait_s3(time.monotonic() + timeout)
        except BaseException:
            store.stop()
            raise
        return store

    def stop(self, grace: float = 15.0) -> bool:
        """Stop the server and remove its stale sockets; True if it needed SIGKILL. Idempotent."""
        killed = stop_process(self.proc, self.ports, grace)
        with contextlib.suppress(OSError):
            (self.data_dir / RECORD).unlink()
        return killed

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def alive(self) -> bool:
        return process.alive(self.proc)

    # ------------------------------------------------------------------ what clients need

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def s3_url(self) -> str:
        """The Pulumi backend URL (``pulumi login`` / ``PULUMI_BACKEND_URL``): gocloud.dev's s3blob
        on AWS SDK v2 parameters; ``when_required`` silences the missing-checksum warning."""
        return (
            f"s3://{self.bucket}?endpoint={self.endpoint}&use_path_style=true&region={REGION}"
            "&response_checksum_validation=when_required"
        )

    @property
    def env(self) -> dict[str, str]:
        """The credentials a client (the Pulumi CLI) needs, as environment variables."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION}

    @property
    def log(self) -> Path:
        return Path(self.proc.log)

    # ------------------------------------------------------------------ reading objects (tests)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket under ``prefix`` (S3 ListObjectsV2, all pages), sorted."""
        keys: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            status, body = self._s3("GET", f"/{self.bucket}", query)
            if status != 200:
                raise ObjectStoreError(
                    f"listing s3://{self.bucket}/{prefix}: HTTP {status}: {body[:300]!r}", fix=f"read {self.log}"
                )
            root = ET.fromstring(body)
            keys += [k.text or "" for k in root.iter(f"{_S3_NS}Key")]
            if (root.findtext(f"{_S3_NS}IsTruncated") or "false") != "true":
                return sorted(keys)
            token = root.findtext(f"{_S3_NS}NextContinuationToken")

    def get(self, key: str) -> bytes:
        """One object's bytes; ObjectStoreError naming the key when it is missing."""
        status, body = self._s3("GET", f"/{self.bucket}/{key.lstrip('/')}")
        if status != 200:
            raise ObjectStoreError(f"s3://{self.bucket}/{key}: HTTP {status}", fix="list_keys() shows what the bucket holds")
        return body

    # ------------------------------------------------------------------ internals

    def _create_bucket(self, weed: Path, deadline: float) -> None:
        """``s3.bucket.create`` then ``s3.bucket.list`` through ``weed shell`` on stdin, retried while
        the master and filer come up (an existing bucket is kept). The shell needs
        ``host:port.grpcPort`` (with the HTTP port alone it guesses gRPC = HTTP + 10000)."""
        argv = [str(weed), "-logtostderr", "shell", f"-master={HOST}:{self.ports.master}.{self.ports.master_grpc}"]
        script = f"s3.bucket.create -name {self.bucket}\ns3.bucket.list\nexit\n"
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                out = subprocess.run(
                    argv,
                    input=script,
                    env=process.inherited_env(),
                    cwd=self.data_dir,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                last = "weed shell timed out after 60s"
                continue
            last = (out.stdout + out.stderr).strip()
            if any(line.split()[:1] == [self.bucket] for line in out.stdout.splitlines()):
                return
            time.sleep(0.5)
        raise ObjectStoreError(f"could not create bucket {self.bucket}: {last[-500:]}", fix=f"read {self.log}")

    def _wait_s3(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self._s3("GET", f"/{self.bucket}", {"list-type": "2", "max-keys": "1"})
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except ObjectStoreError as exc:
                last = exc.message
            time.sleep(0.25)
        raise ObjectStoreError(f"S3 on {self.endpoint} did not list bucket {self.bucket}: {last}", fix=f"read {self.log}")

    def _check_alive(self) -> None:
        if not process.alive(self.proc):
            raise ObjectStoreError(f"weed server exited during start:\n{process.tail(self.proc.log)}", fix=f"read {self.log}")

    def _s3(self, method: str, path: str, query: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One S3 request signed with AWS Signature V4 (empty body)."""
        url, headers = sign_v4(method, self.endpoint, path, query or {}, self.access_key, self.secret_key)
        req = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ObjectStoreError(f"S3 on {self.endpoint} unreachable ({exc})", fix=f"read {self.log}") from exc


def sign_v4(
    method: str,
    endpoint: str,
    path: str,
    query: dict[str, str],
    access_key: str,
    secret_key: str,
    now: _dt.datetime | None = None,
) -> tuple[str, dict[str, str]]:
    """(url, headers) of an S3 request with an empty body, signed with AWS Signature V4."""
    now = now or _dt.datetime.now(_dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urllib.parse.urlsplit(endpoint).netloc
    canonical_path = urllib.parse.quote(path, safe="/-_.~")
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, canonical_path, canonical_query, *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    url = f"{endpoint}{canonical_path}" + (f"?{canonical_query}" if canonical_query else "")
    return url, headers


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def stop_process(rec: ProcRecord, ports: Ports, grace: float = 15.0) -> bool:
    """SIGTERM; once the filer and volume server have closed their listeners (their data is
    flushed) or ``grace`` seconds passed, SIGKILL (the master and S3 gateway ignore SIGTERM).
    Then delete the gRPC unix sockets of these ports left in /tmp. True if SIGKILL was sent."""
    killed = False
    if process.alive(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and process.alive(rec):
            if not _listening(ports.filer) and not _listening(ports.volume):
                break
            time.sleep(0.2)
        # process.stop: SIGTERM again (harmless), SIGKILL after a short wait, then wait for the exit.
        killed = process.stop(rec, timeout=0.5)
    # A killed Go process shows as a zombie while its other threads still exit and close their
    # sockets: wait for the listeners to go, so a caller may reuse the ports (or count them).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_listening(p) for p in ports.all()):
        process.alive(rec)  # reaps it once it is gone
        time.sleep(0.1)
    for component, port in ports.grpc().items():
        with contextlib.suppress(OSError):
            Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink()
    return killed


def stop_recorded(data_dir: Path, grace: float = 15.0) -> bool:
    """Stop a server started under ``data_dir`` by another process (from its record); False when
    there is no record or the process is gone."""
    data = process.load_record(Path(data_dir) / RECORD)
    if not data.get("process"):
        return False
    rec = ProcRecord.from_dict(data["process"])
    killed = stop_process(rec, Ports(*[int(p) for p in data["ports"]]), grace)
    with contextlib.suppress(OSError):
        (Path(data_dir) / RECORD).unlink()
    return killed
