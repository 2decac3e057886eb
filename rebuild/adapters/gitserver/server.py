"""A real git server over smart HTTP on 127.0.0.1, for Flux and for tests.

Why it exists: Flux's GitRepository accepts only http(s) and ssh URLs, so a local cluster
reconciling from a folder on this machine needs git served over the network. ``git
http-backend`` (git's own CGI program) does the protocol; this module is the small HTTP
front that runs it per request: clone, fetch and push (``http.receivepack`` is switched on
through the environment), with optional HTTP basic auth. Credentials come from code or the
environment, never argv, are compared in constant time and are never logged.

Two ways to run it:

- in-process: ``with GitServer(root) as srv: srv.repo_url("demo.git")`` (a thread; tests);
- detached: :func:`spawn` starts ``python -m rebuild.adapters.gitserver --root DIR --port P``
  (credentials through ``REBUILD_GIT_USERNAME`` / ``REBUILD_GIT_PASSWORD``), recorded like the
  cluster processes so a later CLI call can stop it; :func:`ensure_server` / :func:`stop_server`
  keep one such server per state folder.

:func:`publish_dir` snapshots a plain folder (e.g. ``examples/gitops-repo``) into a bare
repository as a commit on ``main``; it is idempotent, so publishing unchanged content keeps
the same revision (and Flux sees nothing new).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from rebuild.adapters import process
from rebuild.adapters.fs import atomic_write
from rebuild.adapters.process import ProcRecord
from rebuild.core.errors import GitError

log = logging.getLogger("rebuild.gitserver")

HOST = "127.0.0.1"
ENV_USERNAME = "REBUILD_GIT_USERNAME"
ENV_PASSWORD = "REBUILD_GIT_PASSWORD"  # the variable's name, not a secret
HEALTH_PATH = "/_health"
DEFAULT_BRANCH = "main"
# Request bodies (pushes, fetch negotiations) are spooled to memory up to this size, then to disk.
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """HTTP basic-auth credentials. ``repr`` hides the password so it cannot leak into logs."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"

    def matches(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (constant-time compare)."""
        got = parse_basic_auth(header)
        if got is None:
            return False
        user_ok = hmac.compare_digest(got[0].encode(), self.username.encode())
        pass_ok = hmac.compare_digest(got[1].encode(), self.password.encode())
        return user_ok and pass_ok

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Credentials | None:
        env = os.environ if env is None else env
        user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
        if not user and not password:
            return None
        if not user or not password:
            raise GitError(
                f"only one of {ENV_USERNAME} and {ENV_PASSWORD} is set",
                fix="set both for basic auth, or neither for an open server",
            )
        return cls(user, password)


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from a ``Basic`` Authorization header, or None if absent/malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


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


def git_env(extra: dict[str, str] | None = None, *, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for git subprocesses with extra config passed as GIT_CONFIG_* (git >= 2.31).

    That is how secrets (an ``http.extraHeader`` with credentials) reach git without argv or
    a URL: the environment of a process is readable only by its user.
    """
    env = dict(os.environ if base is None else base)
    env["GIT_TERMINAL_PROMPT"] = "0"
    start = int(env.get("GIT_CONFIG_COUNT", "0") or "0")
    for i, (key, value) in enumerate((extra or {}).items(), start=start):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(start + len(extra or {}))
    return env


def auth_env(creds: Credentials, *, base: dict[str, str] | None = None) -> dict[str, str]:
    """git environment that sends basic auth on every HTTP request (no credential prompt)."""
    return git_env({"http.extraHeader": f"Authorization: {creds.header()}"}, base=base)


# --------------------------------------------------------------------------- HTTP front


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


# --------------------------------------------------------------------------- detached


@dataclass(frozen=True)
class ServerProcess:
    """A detached git server: its process record, port and root."""

    record: ProcRecord
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def repo_url(self, name: str) -> str:
        """Clone URL of a repository under root (no credentials in it)."""
        return f"{self.url}/{repo_name(name)}"

    def repo_path(self, name: str) -> Path:
        """Where the bare repository behind :meth:`repo_url` lives (create it with publish_dir)."""
        return self.root / repo_name(name)

    def alive(self) -> bool:
        return process.alive(self.record)

    def healthy(self) -> bool:
        return self.alive() and _answers(self.url)

    def stop(self, timeout: float = 10.0) -> None:
        process.stop(self.record, timeout=timeout)


def spawn(
    root: Path,
    *,
    log_path: Path,
    port: int | None = None,
    credentials: Credentials | None = None,
    timeout: float = 15.0,
) -> ServerProcess:
    """Start ``python -m rebuild.adapters.gitserver`` detached and wait until it answers."""
    port = port or process.free_port()
    env = process.inherited_env()
    env.pop(ENV_USERNAME, None)
    env.pop(ENV_PASSWORD, None)
    if credentials is not None:
        env[ENV_USERNAME] = credentials.username
        env[ENV_PASSWORD] = credentials.password
    argv = [sys.executable, "-m", "rebuild.adapters.gitserver", "--root", str(Path(root).resolve()), "--port", str(port)]
    rec = process.spawn("gitserver", argv, log=log_path, env=env)
    srv = ServerProcess(rec, port, Path(root).resolve())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive(rec):
            raise GitError(f"the git server exited during start:\n{process.tail(rec.log)}", fix=f"read {rec.log}")
        if _answers(srv.url):
            return srv
        time.sleep(0.1)
    process.stop(rec)
    raise GitError(f"the git server on {srv.url} did not answer in {timeout:.0f}s", fix=f"read {rec.log}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def can_listen(port: int) -> bool:
    """Whether our server could bind the port now. SO_REUSEADDR like the server itself: the
    TIME_WAIT connections a stopped server leaves behind must not cost it its URL."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _record_path(state: Path) -> Path:
    return Path(state) / "gitserver.json"


def ensure_server(state: Path, *, credentials: Credentials | None = None, port: int | None = None) -> ServerProcess:
    """The detached git server for a state folder, started if it is not running.

    Layout: ``<state>/repos/<name>.git`` (bare repos), ``<state>/gitserver.json`` (pid record,
    0600), ``<state>/gitserver.log``. A running server is reused as it is (its credentials were
    fixed when it started); a stopped one is restarted on its previous port when that is free,
    so URLs already handed to Flux keep working.
    """
    state = Path(state).resolve()
    record = _record_path(state)
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(record.read_text())
    if old.get("process"):
        srv = ServerProcess(ProcRecord.from_dict(old["process"]), int(old["port"]), Path(old["root"]))
        if srv.healthy():
            return srv
        srv.stop()
    repos = state / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    prev = old.get("port")
    if port is None and isinstance(prev, int) and can_listen(prev):
        port = prev
    srv = spawn(repos, log_path=state / "gitserver.log", port=port, credentials=credentials)
    data = {"port": srv.port, "root": str(srv.root), "auth": credentials is not None, "process": srv.record.to_dict()}
    atomic_write(record, json.dumps(data, indent=2) + "\n")
    return srv


def server_running(state: Path) -> bool:
    """Whether the detached git server recorded in a state folder is up and answering."""
    try:
        old = json.loads(_record_path(Path(state).resolve()).read_text())
        return (
            bool(old.get("process"))
            and ServerProcess(ProcRecord.from_dict(old["process"]), int(old["port"]), Path(old["root"])).healthy()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class ServerInfo:
    """What ``cluster status`` shows of a state folder's git server."""

    url: str
    pid: int | None
    alive: bool
    log: str

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "pid": self.pid, "alive": self.alive, "log": self.log}


def server_info(state: Path) -> ServerInfo | None:
    """The git server recorded in a state folder (None if none was ever started there)."""
    state = Path(state).resolve()
    try:
        data: dict[str, Any] = json.loads(_record_path(state).read_text())
        url = f"http://{HOST}:{int(data['port'])}"
        rec = ProcRecord.from_dict(data["process"]) if data.get("process") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ServerInfo(url, rec.pid if rec else None, rec is not None and process.alive(rec), str(state / "gitserver.log"))


def stop_server(state: Path) -> bool:
    """Stop the detached git server recorded in a state folder; True if one was running."""
    record = _record_path(Path(state))
    try:
        data: dict[str, Any] = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    raw = data.get("process")
    if not raw:
        return False
    rec = ProcRecord.from_dict(raw)
    was_alive = process.alive(rec)
    process.stop(rec)
    data["process"] = None
    atomic_write(record, json.dumps(data, indent=2) + "\n")
    return was_alive


# --------------------------------------------------------------------------- repositories


def init_bare(path: Path, branch: str = DEFAULT_BRANCH) -> Path:
    """Create a bare repository (if missing) whose HEAD names ``branch``."""
    import git

    path = Path(path)
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        git.Repo.init(path, bare=True)
    repo = git.Repo(path)
    repo.git.symbolic_ref("HEAD", f"refs/heads/{branch}")
    return path


_AUTHOR = {
    "GIT_AUTHOR_NAME": "rebuild",
    "GIT_AUTHOR_EMAIL": "rebuild@localhost",
    "GIT_COMMITTER_NAME": "rebuild",
    "GIT_COMMITTER_EMAIL": "rebuild@localhost",
}


def publish_dir(src_dir: Path, bare_repo: Path, message: str, *, branch: str = DEFAULT_BRANCH) -> str:
    """Commit a snapshot of ``src_dir`` to ``branch`` of ``bare_repo``; return the head commit sha.

    The folder needs no git metadata of its own (its ``.gitignore`` is honoured). When the
    snapshot's tree equals the branch head's tree, nothing is committed and the existing head
    is returned, so publishing is idempotent.
    """
    import git

    src = Path(src_dir).resolve()
    if not src.is_dir():
        raise GitError(f"cannot publish {src}: not a folder", fix="pass the folder holding the manifests")
    init_bare(Path(bare_repo), branch)
    repo = git.Repo(bare_repo)
    ref = f"refs/heads/{branch}"
    try:
        parent: str | None = repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
    except git.GitCommandError:
        parent = None
    # The index of the last snapshot of this folder is kept beside the bare repo: with it, `git
    # add` re-reads only files whose size or mtime changed (a 10,000-object folder: about 0.1 s
    # instead of hashing every file again). Each run works on its own copy, so two runs never
    # contend for one index lock; the copy is kept once it produced a tree.
    kept = Path(bare_repo) / "rebuild-publish" / (hashlib.sha256(str(src).encode()).hexdigest()[:16] + ".index")
    with tempfile.TemporaryDirectory(prefix="rebuild-publish-") as tmp:
        index = Path(tmp) / "index"
        if kept.is_file():
            shutil.copy2(kept, index)  # with its mtime: git's racy-file check depends on it
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(src), **_AUTHOR}
        try:
            with repo.git.custom_environment(**env):
                repo.git.add("--all", ".")
                tree = repo.git.write_tree()
                kept.parent.mkdir(exist_ok=True)
                fresh = kept.with_name(f".{os.getpid()}.{threading.get_ident()}.{kept.name}")
                shutil.copy2(index, fresh)
                os.replace(fresh, kept)
                if parent and repo.git.rev_parse(f"{parent}^{{tree}}") == tree:
                    return parent
                args = [tree, "-m", message] + (["-p", parent] if parent else [])
                sha = str(repo.git.commit_tree(*args))
                # compare-and-swap: a concurrent push in between fails loudly instead of being lost
                repo.git.update_ref(ref, sha, parent or "0" * 40, "-m", f"publish: {message}")
        except git.GitCommandError as exc:
            raise GitError(
                f"publishing {src} to {bare_repo} failed: {str(exc.stderr).strip()}", fix="check the folder and the repository"
            ) from exc
    return sha


# --------------------------------------------------------------------------- CLI


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


if __name__ == "__main__":
    sys.exit(main())
