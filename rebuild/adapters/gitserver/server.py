"""A real git server over smart HTTP on 127.0.0.1, for Flux and for tests.

Why it exists: Flux's GitRepository accepts only http(s) and ssh URLs, so a local cluster
reconciling from a folder on this machine needs git served over the network. ``git
http-backend`` (git's own CGI program) does the protocol; this module is the small HTTP
front that runs it per request: clone, fetch and push (``http.receivepack`` is switched on
through the environment), with optional HTTP basic auth. Credentials come from code or the
environment, never argv, are compared in constant time and are never logged.

This module is the HTTP front itself: in-process (``with GitServer(root) as srv:``, a thread;
tests) and the ``python -m rebuild.adapters.gitserver`` entry point (:func:`main`).
:mod:`.daemon` runs it detached, :mod:`.repos` fills its repositories, :mod:`.auth` holds the
credentials.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from rebuild.adapters.gitserver.auth import ENV_PASSWORD, ENV_USERNAME, Credentials
from rebuild.core.errors import GitError

log = logging.getLogger("rebuild.gitserver")

HOST = "127.0.0.1"
HEALTH_PATH = "/_health"
# Request bodies (pushes, fetch negotiations) are spooled to memory up to this size, then to disk.
_SPOOL_BYTES = 8 * 1024 * 1024


def safe_repo_path(path: str) -> str | None:
    """The URL path as PATH_INFO for http-backend, or None if it tries to leave the root."""
    # partition, not urlsplit: a request path like //host/x is a path here, not a netloc
    decoded = unquote(path.partition("?")[0].partition("#")[0])
    parts = decoded.split("/")
    if any(p in ("..", ".") for p in parts) or "\\" in decoded or "\x00" in decoded:
        return None
    return "/" + "/".join(p for p in parts if p)


def repo_name(name: str) -> str:
    """``demo`` or ``demo.git`` -> ``demo.git``: bare repositories are served as ``<name>.git``."""
    name = name.strip("/")
    return name if name.endswith(".git") else f"{name}.git"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, root: Path, creds: Credentials | None) -> None:
        self.root = root
        self.creds = creds
        self.git = shutil.which("git") or "git"
        super().__init__((HOST, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: every response ends by closing the connection, so http-backend's output can be
    # streamed without knowing its length.
    protocol_version = "HTTP/1.0"
    server_version = "rebuild-gitserver"

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only (method, path, status): never headers, so never credentials.
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._plain(200, "ok\n")
            return
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def _plain(self, code: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self, out: IO[bytes]) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        raise ConnectionError("client closed the connection mid-body")
                    out.write(chunk)
                    remaining -= len(chunk)
                self.rfile.readline()  # CRLF after each chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                out.write(chunk)
                remaining -= len(chunk)
        out.flush()

    def _backend(self) -> None:
        srv = self.server
        user = ""
        if srv.creds is not None:
            if not srv.creds.matches(self.headers.get("Authorization")):
                self._plain(401, "authentication required\n", {"WWW-Authenticate": 'Basic realm="rebuild git"'})
                return
            user = srv.creds.username
        path_info = safe_repo_path(self.path)
        if path_info is None:
            self._plain(400, "bad repository path\n")
            return
        with tempfile.TemporaryFile() as body, tempfile.TemporaryFile() as err:
            self._read_body(body)
            length = body.tell()
            body.seek(0)
            env = self._cgi_env(path_info, length, user)
            proc = subprocess.Popen(
                [srv.git, "http-backend"], stdin=body, stdout=subprocess.PIPE, stderr=err, env=env, close_fds=True
            )
            assert isinstance(proc.stdout, io.BufferedReader)
            try:
                self._relay(proc.stdout)
            except (BrokenPipeError, ConnectionResetError):
                # the client went away mid-response (a cancelled fetch, a probe that read only
                # the headers): nothing to answer; closing the pipe ends the backend too
                log.debug("client of %s %s disconnected", self.command, path_info)
            finally:
                proc.stdout.close()
                rc = proc.wait()
                err.seek(0)
                msg = err.read().decode(errors="replace").strip()
                if rc != 0 or msg:
                    log.warning("git http-backend %s %s exited %d: %s", self.command, path_info, rc, msg[-500:])

    def _cgi_env(self, path_info: str, length: int, user: str) -> dict[str, str]:
        query = self.path.partition("?")[2].partition("#")[0]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_HTTP_MAX_REQUEST_BUFFER": "100M",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": self.server_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
            # push over HTTP, whether or not the server asks for credentials
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
        }
        if user:
            env["REMOTE_USER"] = user
            env["AUTH_TYPE"] = "Basic"
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        # The body was stored as sent; http-backend inflates a gzip'd request itself.
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        return env

    def _relay(self, out: io.BufferedReader) -> None:
        """Turn the CGI response (headers, blank line, body) into an HTTP response."""
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        while True:
            line = out.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            value = value.strip()
            if name.lower() == "status":
                code, _, reason = value.partition(" ")
                status = int(code)
            else:
                headers.append((name.strip(), value))
        self.send_response(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        # read1: forward what the backend has produced so far instead of waiting for 64 KiB
        while chunk := out.read1(65536):
            self.wfile.write(chunk)


class GitServer:
    """git over HTTP for the bare repositories under ``root``, on 127.0.0.1 (a thread)."""

    def __init__(self, root: Path, *, port: int = 0, credentials: Credentials | None = None) -> None:
        self.root = Path(root).resolve()
        self.credentials = credentials
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise GitError("the git server is not started", fix="call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def repo_url(self, name: str) -> str:
        """Clone URL of a repository under root (no credentials in it)."""
        return f"{self.url}/{repo_name(name)}"

    def repo_path(self, name: str) -> Path:
        """Where the bare repository behind :meth:`repo_url` lives."""
        return self.root / repo_name(name)

    def start(self) -> GitServer:
        if shutil.which("git") is None:
            raise GitError("git is not on PATH; the git server runs `git http-backend`", fix="install git")
        if not self.root.is_dir():
            raise GitError(f"repository root {self.root} does not exist", fix="create it (and the bare repos in it)")
        try:
            self._httpd = _Server(self._port, self.root, self.credentials)
        except OSError as exc:
            raise GitError(f"cannot listen on {HOST}:{self._port}: {exc.strerror}", fix="choose a free port") from exc
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"gitserver:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Run in the calling thread until stop() or SIGTERM (the detached mode)."""
        if self._httpd is None:
            self.start()
        assert self._thread is not None
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5) and self._thread.is_alive():
            pass
        self.stop()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rebuild.adapters.gitserver",
        description=f"Serve the bare git repos under --root over HTTP on {HOST}. "
        f"Basic auth when {ENV_USERNAME} and {ENV_PASSWORD} are set in the environment.",
    )
    parser.add_argument("--root", required=True, type=Path, help="folder holding bare repositories (name.git)")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        srv = GitServer(args.root, port=args.port, credentials=Credentials.from_env()).start()
    except GitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("serving %s on %s (auth: %s)", srv.root, srv.url, "basic" if srv.credentials else "none")
    srv.serve_forever()
    return 0
