"""A real S3 server on 127.0.0.1 (S3Proxy), for a non-file Pulumi backend.

Why it exists: rebuild keeps Pulumi state in a file backend under its state dir by default,
but any backend URL can be configured, and "the state survives the loss of the state dir"
is only proven against a real object store. S3Proxy (org.gaul:s3proxy, Apache-2.0) is a
production S3 server (Jetty) in front of jclouds' ``filesystem`` provider: buckets are
folders and objects files under ``<data dir>/data``. It is one jar from Maven Central that the
toolchain downloads in about a second (SeaweedFS, which this replaced, took ~17 min to build
cold); it needs Java >= 17. docs/toolchain.md ("s3proxy: an S3 backend for Pulumi on
127.0.0.1") has the measurements behind the choices here.

- One listener, ``s3proxy.endpoint`` on 127.0.0.1 and a port picked free here.
- The keys: S3Proxy reads them from its properties file only (no environment variable; a
  ``-D`` system property would put them in argv, and ``/proc/<pid>/cmdline`` is
  world-readable). The file, ``<data dir>/s3proxy.properties``, is created 0600 and deleted as
  soon as the server answers (it has read it by then), so the keys are on disk for about two
  seconds and never in argv or in the record (``objectstore.json``, 0600: port and process).
- JVM flags (:data:`JVM_FLAGS`) make a small server start fast on 2 busy cores and leave
  nothing in /tmp (no hsperfdata file, ``java.io.tmpdir`` inside the data dir).
- The bucket is created with a signed S3 PUT Bucket (an existing one is kept: S3Proxy answers
  409 BucketAlreadyOwnedByYou); ``start`` returns once a signed ListObjectsV2 on it answers 200,
  so the first Pulumi call cannot race the setup.
- ``stop``: SIGTERM (the JVM's shutdown hook stops Jetty; measured well under a second), SIGKILL
  after a grace period, then wait until the port is closed.

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
import socket
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
from rebuild.core.errors import StackError, ToolchainError
from rebuild.toolchain.recipes import S3PROXY_JAR
from rebuild.toolchain.tools import JAVA_FIX, Toolchain, check_java

HOST = "127.0.0.1"
REGION = "us-east-1"
RECORD = "objectstore.json"
PROPERTIES = "s3proxy.properties"
LOG = "s3proxy.log"
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

# Measured on 2 cores while a Go build used them (docs/toolchain.md): start 2.7 s without flags,
# 1.8 s with these. -XX:+UseSerialGC was tried and left out: no faster, 30 MiB more RSS than G1.
JVM_FLAGS = (
    "-Xmx256m",  # a bound instead of a quarter of the RAM: Pulumi checkpoints are small
    "-XX:TieredStopAtLevel=1",  # C1 only: the whole start-up gain (3.0 s -> 1.8 s); C2's peak never matters here
    "-XX:-UsePerfData",  # no /tmp/hsperfdata_<user>/<pid> (SIGKILL would leave it behind)
    "-XX:+ExitOnOutOfMemoryError",  # fail loudly (the log names it) rather than limp on
)


class ObjectStoreError(StackError):
    """The object store (a Pulumi backend) could not be started, reached or read."""


def _prop(value: str) -> str:
    """A value escaped for java.util.Properties (backslashes, line breaks, a leading space and
    characters outside Latin-1, which the format reads as ``\\uXXXX``)."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if out.startswith(" "):
        out = "\\" + out
    return "".join(c if ord(c) < 0x80 else f"\\u{ord(c):04x}" for c in out)


def properties(data_dir: Path, port: int, access_key: str, secret_key: str) -> str:
    """S3Proxy's configuration: the S3 side (endpoint, SigV2/V4 auth with these keys) and the
    jclouds side (the filesystem provider under ``<data dir>/data``)."""
    lines = {
        "s3proxy.endpoint": f"http://{HOST}:{port}",
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": access_key,
        "s3proxy.credential": secret_key,
        "jclouds.provider": "filesystem",
        "jclouds.filesystem.basedir": str(data_dir / "data"),
    }
    return "".join(f"{k}={_prop(v)}\n" for k, v in lines.items())


def server_argv(java: Path, jar: Path, data_dir: Path) -> list[str]:
    """``java ... -jar s3proxy.jar --properties <file>``; no secret in it."""
    return [
        str(java),
        *JVM_FLAGS,
        f"-Djava.io.tmpdir={data_dir / 'tmp'}",  # Jetty's and jclouds' temporary files stay in the data dir
        "-jar",
        str(jar),
        "--properties",
        str(data_dir / PROPERTIES),
    ]


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` 0600 from the start (never briefly world-readable, never an old file's mode)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


@dataclass
class ObjectStore:
    """One running S3Proxy holding one bucket; everything lives under ``data_dir``."""

    data_dir: Path
    bucket: str
    access_key: str
    secret_key: str
    port: int
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
        jar = tc.binary("s3proxy", S3PROXY_JAR)
        try:
            java = check_java()
        except ToolchainError as exc:
            raise ObjectStoreError(exc.message, fix=JAVA_FIX) from exc
        data_dir = Path(data_dir).resolve()
        (data_dir / "data").mkdir(parents=True, exist_ok=True)
        (data_dir / "tmp").mkdir(exist_ok=True)
        access_key = access_key or "rebuild" + secrets.token_hex(6)
        secret_key = secret_key or secrets.token_urlsafe(30)
        port = process.free_port()
        _write_private(data_dir / PROPERTIES, properties(data_dir, port, access_key, secret_key))
        try:
            rec = process.spawn("s3proxy", server_argv(java, jar, data_dir), log=data_dir / LOG, cwd=data_dir)
        except OSError as exc:
            (data_dir / PROPERTIES).unlink(missing_ok=True)
            raise ObjectStoreError(f"could not run {java}: {exc}", fix=JAVA_FIX) from exc
        store = cls(data_dir, bucket, access_key, secret_key, port, rec)
        process.save_record(data_dir / RECORD, {"process": rec.to_dict(), "port": port, "bucket": bucket})
        try:
            deadline = time.monotonic() + timeout
            store._create_bucket(deadline)
            store._wait_s3(deadline)
        except BaseException:
            store.stop()
            raise
        finally:
            # Read once at start-up: from here on the keys live only in the JVM and in this object.
            (data_dir / PROPERTIES).unlink(missing_ok=True)
        return store

    def stop(self, grace: float = 15.0) -> bool:
        """Stop the server; True if it needed SIGKILL. Idempotent."""
        killed = stop_process(self.proc, self.port, grace)
        for name in (RECORD, PROPERTIES):
            with contextlib.suppress(OSError):
                (self.data_dir / name).unlink()
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
        return f"http://{HOST}:{self.port}"

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

    def _create_bucket(self, deadline: float) -> None:
        """Signed PUT Bucket, retried while the JVM starts (connection refused). 200 creates it,
        409 BucketAlreadyOwnedByYou means a restart on the same data: both are fine."""
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self._s3("PUT", f"/{self.bucket}")
            except ObjectStoreError as exc:
                last = exc.message
                time.sleep(0.1)
                continue
            if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
                return
            raise ObjectStoreError(
                f"S3 on {self.endpoint} refused to create bucket {self.bucket}: HTTP {status}: {body[:300]!r}",
                fix=f"read {self.log}",
            )
        raise ObjectStoreError(
            f"S3Proxy did not answer on {self.endpoint} within the start timeout: {last}", fix=f"read {self.log}"
        )

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
            time.sleep(0.1)
        raise ObjectStoreError(f"S3 on {self.endpoint} did not list bucket {self.bucket}: {last}", fix=f"read {self.log}")

    def _check_alive(self) -> None:
        if not process.alive(self.proc):
            raise ObjectStoreError(
                f"S3Proxy exited during start:\n{process.tail(self.proc.log)}",
                fix=f"read {self.log} (an UnsupportedClassVersionError means Java < 17: {JAVA_FIX})",
            )

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


def stop_process(rec: ProcRecord, port: int, grace: float = 15.0) -> bool:
    """SIGTERM (Jetty stops in its shutdown hook), SIGKILL after ``grace`` seconds, then wait
    for the port to close so a caller may reuse it. True if SIGKILL was sent."""
    killed = process.stop(rec, timeout=grace)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _listening(port):
        process.alive(rec)  # reaps it once it is gone
        time.sleep(0.1)
    return killed


def stop_recorded(data_dir: Path, grace: float = 15.0) -> bool:
    """Stop a server started under ``data_dir`` by another process (from its record); False when
    there is no record or the process is gone."""
    data = process.load_record(Path(data_dir) / RECORD)
    if not data.get("process"):
        return False
    rec = ProcRecord.from_dict(data["process"])
    killed = stop_process(rec, int(data["port"]), grace)
    for name in (RECORD, PROPERTIES):
        with contextlib.suppress(OSError):
            (Path(data_dir) / name).unlink()
    return killed
