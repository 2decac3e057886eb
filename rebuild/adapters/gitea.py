"""A real Gitea on 127.0.0.1, started and stopped as a detached process, for tests and demos.

Why it exists: ``rebuild capture`` ends in a pull request, and a PR is only proven against a
real forge. Gitea is one Go binary (built by the toolchain from its module) with SQLite, so
a throwaway forge needs no container: a data folder with an ``app.ini``, ``gitea migrate``,
an admin user and ``gitea web``. It also serves its repositories over smart HTTP, so one
server can be Flux's source and the PR target at once.

Secrets and argv (``/proc/<pid>/cmdline`` is world-readable):

- ``gitea admin user create`` takes a password only as ``--password`` (no env var, no
  stdin). So the admin is created with ``--random-password`` and ``--access-token``: Gitea
  generates both and prints them on stdout, which is read through a pipe and stored in
  files of mode 0600 under ``<root>/secrets/``; neither ever appears in an argv.
- ``app.ini`` (0600) holds SECRET_KEY and INTERNAL_TOKEN, generated here, so Gitea never
  has to write generated secrets back into it.
- git talks to it with ``http.extraHeader`` passed through GIT_CONFIG_* environment
  variables (:meth:`Gitea.git_env`); clone URLs carry no credentials.

It binds 127.0.0.1 only, runs as root only because these machines run everything as root
(``I_AM_BEING_UNSAFE_RUNNING_AS_ROOT``), and is meant for loopback test servers, not for
hosting anyone's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rebuild.adapters import process
from rebuild.adapters.fs import atomic_write
from rebuild.adapters.gitserver import Credentials, auth_env, can_listen
from rebuild.adapters.process import ProcRecord
from rebuild.core.errors import ForgeError
from rebuild.toolchain.tools import Toolchain

HOST = "127.0.0.1"
GiteaState = Literal["running", "degraded", "stopped", "absent"]
_PASSWORD_RE = re.compile(r"generated random password is '([^']+)'")
_TOKEN_RE = re.compile(r"Access token was successfully created\.\.\. (\S+)")


def _write_private(path: Path, text: str) -> None:
    """A secret or record file: owner-only, written atomically; its folder, if new, gets 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, text)


def app_ini(*, work: Path, static: Path, port: int, run_user: str, secret_key: str, internal_token: str) -> str:
    """A headless, offline, loopback-only configuration with SQLite (no install wizard)."""
    return f"""\
APP_NAME = rebuild test forge
RUN_USER = {run_user}
RUN_MODE = prod
WORK_PATH = {work}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = {HOST}
HTTP_PORT = {port}
DOMAIN = {HOST}
ROOT_URL = http://{HOST}:{port}/
LOCAL_ROOT_URL = http://{HOST}:{port}/
STATIC_ROOT_PATH = {static}
APP_DATA_PATH = {work}/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = {work}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {work}/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret_key}
INTERNAL_TOKEN = {internal_token}
PASSWORD_HASH_ALGO = pbkdf2

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_ALLOW_CREATE_ORGANIZATION = true

[oauth2]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[mailer]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[cron]
ENABLED = false

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = {work}/log
"""


@dataclass(frozen=True)
class GiteaStatus:
    state: GiteaState
    url: str | None = None
    pid: int | None = None
    log: str | None = None


@dataclass
class Gitea:
    """One Gitea instance whose everything lives under ``root`` (config, SQLite, repos, logs)."""

    root: Path
    toolchain: Toolchain = field(default_factory=Toolchain)
    admin_user: str = "rebuild"
    admin_email: str = "rebuild@localhost"

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    # ------------------------------------------------------------------ paths and record

    @property
    def config(self) -> Path:
        return self.root / "app.ini"

    @property
    def record_path(self) -> Path:
        return self.root / "gitea.json"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "gitea-web.log"

    def _secret(self, name: str) -> Path:
        return self.root / "secrets" / name

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.record_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        _write_private(self.record_path, json.dumps(data, indent=2) + "\n")

    def _proc(self, data: dict[str, Any] | None = None) -> ProcRecord | None:
        raw = (self._load() if data is None else data).get("process")
        return ProcRecord.from_dict(raw) if raw else None

    @property
    def port(self) -> int:
        port = self._load().get("port")
        if not isinstance(port, int):
            raise ForgeError(f"Gitea under {self.root} was never started", fix="call start() first")
        return port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def token(self) -> str:
        """The admin's API token (scope ``all``), read from its 0600 file."""
        try:
            return self._secret("admin-token").read_text().strip()
        except OSError as exc:
            raise ForgeError(f"no admin token under {self.root / 'secrets'}", fix="call start() first") from exc

    def credentials(self) -> Credentials:
        """Basic-auth credentials for git over HTTP: the admin user with the token as password."""
        return Credentials(self.admin_user, self.token)

    def git_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for git commands against this server: auth via http.extraHeader, not argv."""
        return auth_env(self.credentials(), base=base)

    def clone_url(self, owner: str, repo: str) -> str:
        return f"{self.url}/{owner}/{repo}.git"

    # ------------------------------------------------------------------ lifecycle

    def status(self) -> GiteaStatus:
        data = self._load()
        if not data:
            return GiteaStatus("absent")
        rec = self._proc(data)
        if rec is None or not process.alive(rec):
            return GiteaStatus("stopped", log=str(self.log_path))
        url = f"http://{HOST}:{data['port']}"
        state: GiteaState = "running" if _healthy(url) else "degraded"
        return GiteaStatus(state, url, rec.pid, str(self.log_path))

    def start(self, timeout: float = 90.0) -> GiteaStatus:
        """Configure (first time), migrate, create the admin and its token, run ``gitea web``."""
        current = self.status()
        if current.state == "running":
            return current
        if current.state == "degraded":
            self.stop()
        binary = self.toolchain.binary("gitea")
        static = self.toolchain.gitea_static_root()
        self.root.mkdir(parents=True, exist_ok=True)
        data = self._load()
        port = data.get("port") if isinstance(data.get("port"), int) else None
        if port is None or not can_listen(port):  # keep the port across restarts: URLs stay valid
            port = process.free_port()
        self._configure(port, static)
        data.update({"port": port, "process": None, "version": self.toolchain.versions["gitea"]["version"]})
        self._save(data)
        if not self._secret("admin-token").exists():
            self._run(binary, ["migrate"])
            self._create_admin(binary)
        argv = [str(binary), *self._global_args(), "web"]
        rec = process.spawn("gitea", argv, log=self.log_path, env=self._env(), cwd=self.root)
        data["process"] = rec.to_dict()
        self._save(data)
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{port}"
        while time.monotonic() < deadline:
            if not process.alive(rec):
                raise ForgeError(f"gitea exited during start:\n{process.tail(rec.log)}", fix=f"read {rec.log}")
            if _healthy(url):
                return GiteaStatus("running", url, rec.pid, rec.log)
            time.sleep(0.25)
        self.stop()
        raise ForgeError(f"gitea on {url} not healthy (/api/healthz) after {timeout:.0f}s", fix=f"read {rec.log}")

    def stop(self) -> None:
        data = self._load()
        rec = self._proc(data)
        if rec is not None:
            process.stop(rec)
        if data:
            data["process"] = None
            with contextlib.suppress(OSError):
                self._save(data)

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ setup internals

    def _global_args(self) -> list[str]:
        return ["--config", str(self.config), "--work-path", str(self.root)]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in process.inherited_env().items() if not k.startswith("GITEA_")}
        env["GITEA_WORK_DIR"] = str(self.root)
        return env

    def _configure(self, port: int, static: Path) -> None:
        """Write app.ini (0600); the generated secrets are kept across restarts."""
        old = self.config.read_text() if self.config.exists() else ""
        keys = {k: m.group(1) for k in ("SECRET_KEY", "INTERNAL_TOKEN") if (m := re.search(rf"^{k} = (\S+)$", old, re.M))}
        text = app_ini(
            work=self.root,
            static=static,
            port=port,
            run_user=pwd.getpwuid(os.getuid()).pw_name,
            secret_key=keys.get("SECRET_KEY") or secrets.token_urlsafe(32),
            internal_token=keys.get("INTERNAL_TOKEN") or secrets.token_urlsafe(48),
        )
        _write_private(self.config, text)

    def _run(self, binary: Path, args: list[str], redact: tuple[str, ...] = ()) -> str:
        proc = subprocess.run(
            [str(binary), *self._global_args(), *args],
            env=self._env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()
            for s in (*redact, *_PASSWORD_RE.findall(out), *_TOKEN_RE.findall(out)):
                out = out.replace(s, "***")
            raise ForgeError(f"`gitea {' '.join(args[:3])}` failed: {out[-800:]}", fix=f"check {self.config}")
        return proc.stdout

    def _create_admin(self, binary: Path) -> None:
        out = self._run(
            binary,
            [
                "admin",
                "user",
                "create",
                "--admin",
                "--username",
                self.admin_user,
                "--email",
                self.admin_email,
                "--random-password",
                "--must-change-password=false",
                "--access-token",
                "--access-token-name",
                "rebuild",
                "--access-token-scopes",
                "all",
            ],
        )
        password, token = _PASSWORD_RE.search(out), _TOKEN_RE.search(out)
        if not password or not token:
            raise ForgeError("gitea created the admin but printed no password or token", fix=f"read {self.log_path}")
        _write_private(self._secret("admin-password"), password.group(1) + "\n")
        _write_private(self._secret("admin-token"), token.group(1) + "\n")

    # ------------------------------------------------------------------ REST API

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, *, ok: tuple[int, ...] = (200, 201)) -> Any:
        """One call to ``/api/v1`` with the admin token; raises ForgeError naming the call."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = int(exc.code), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ForgeError(f"{method} {path}: Gitea at {self.url} unreachable ({exc})", fix="start it (Gitea.start)") from exc
        if status not in ok:
            raise ForgeError(f"{method} {path}: HTTP {status}: {raw[:300].decode(errors='replace')}", fix="check the request")
        return json.loads(raw) if raw else None

    def create_repo(self, name: str, *, private: bool = False, auto_init: bool = True, default_branch: str = "main") -> Any:
        """A repository owned by the admin; ``auto_init`` commits a README so ``main`` exists."""
        body = {"name": name, "private": private, "auto_init": auto_init, "default_branch": default_branch}
        if auto_init:
            body["readme"] = "Default"
        return self.api("POST", "/user/repos", body)

    def open_pull_request(self, owner: str, repo: str, *, head: str, base: str, title: str, body: str = "") -> Any:
        return self.api(
            "POST",
            f"/repos/{_q(owner)}/{_q(repo)}/pulls",
            {"head": head, "base": base, "title": title, "body": body},
        )

    def list_pull_requests(self, owner: str, repo: str, state: str = "open") -> list[Any]:
        result = self.api("GET", f"/repos/{_q(owner)}/{_q(repo)}/pulls?state={_q(state)}")
        return list(result or [])


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/healthz", timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False
