"""Git, as rebuild reads and writes it: cached mirrors, immutable checkouts, authenticated pushes.

Why a mirror per source: a rebuild during an incident should not re-clone a large repo,
and ``plan`` then ``up`` must read the *same* commit. Each source is mirrored into
``<state>/git/<name>.git`` (bare), fetched on every run, and the resolved commit is
extracted once into ``<state>/checkouts/<name>/<sha>/`` (read-only by convention).

Credentials never appear in argv, URLs or logs: they are passed to git through
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` environment variables as an
``http.extraHeader`` (the same mechanism CI systems use), and error messages are scrubbed.

A fetch that fails on the wire (refused, reset, cut mid-pack, a 5xx from the server) is
retried (FETCH_POLICY, through the one retry loop in rebuild/core/retry.py); an interrupted
fetch never moves a ref, so the mirror stays at its last good state. Anything else (auth, a
missing branch) fails at once.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from rebuild.core.errors import GitError
from rebuild.core.retry import GaveUp, Retryable, RetryPolicy, log_retries, retry
from rebuild.core.state import StateLayout

log = logging.getLogger("rebuild.git")

SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
FETCH_ATTEMPTS = 4
FETCH_BACKOFF = (0.5, 4.0)  # first wait, longest wait (seconds)
FETCH_POLICY = RetryPolicy(attempts=FETCH_ATTEMPTS, backoff_base=FETCH_BACKOFF[0], backoff_max=FETCH_BACKOFF[1], max_wait=None)
_LOG_RETRY = log_retries(log, "Fetch attempt #{failures}/{attempts} of {operation} failed; will retry: {error}")
# What git prints when the transport failed rather than the request: worth another try.
TRANSIENT_GIT = re.compile(
    r"Connection refused|Failed to connect|Could not connect|Connection reset|connection was reset|early EOF|"
    r"unexpected disconnect|RPC failed|transfer closed|timed out|Operation too slow|"
    r"requested URL returned error: 5\d\d|remote end hung up|invalid index-pack output|"
    r"fetch-pack: protocol error|Empty reply from server|SSL_read|gnutls_handshake",
    re.I,
)


def transient(exc: BaseException) -> bool:
    """Did git fail on the wire (retry) rather than on the request (report)?"""
    return isinstance(exc, git.GitCommandError) and bool(TRANSIENT_GIT.search(str(exc.stderr)))


def auth_env(credentials: tuple[str, str] | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a git process: no prompts, and the credential as an HTTP header."""
    env = dict(os.environ if base is None else base)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_ASKPASS"] = "/bin/false"
    if credentials:
        user, secret = credentials
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        n = int(env.get("GIT_CONFIG_COUNT", "0"))
        env[f"GIT_CONFIG_KEY_{n}"] = "http.extraHeader"
        env[f"GIT_CONFIG_VALUE_{n}"] = f"Authorization: Basic {token}"
        env["GIT_CONFIG_COUNT"] = str(n + 1)
    return env


def scrub(text: str, credentials: tuple[str, str] | None = None) -> str:
    """Remove credentials from a message (URL userinfo, the secret itself, its base64 form)."""
    text = re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)
    if credentials:
        user, secret = credentials
        for s in (secret, base64.b64encode(f"{user}:{secret}".encode()).decode()):
            if s:
                text = text.replace(s, "***")
    return text


@dataclass(frozen=True)
class Checkout:
    source: str
    url: str
    branch: str
    sha: str
    path: Path
    committed_at: int  # unix seconds of the commit (for RPO: age of the rebuilt revision)


def _last_line(exc: BaseException | None) -> str:
    text = str(getattr(exc, "stderr", "") or exc or "").strip()
    return text.splitlines()[-1][:300] if text else ""


class Mirrors:
    """Bare mirrors and per-commit checkouts under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _mirror_path(self, name: str) -> Path:
        return StateLayout(self.root).mirror(name)

    def fetch(self, name: str, url: str, branch: str, credentials: tuple[str, str] | None = None) -> git.Repo:
        path = self._mirror_path(name)
        env = auth_env(credentials)
        try:
            if not (path / "HEAD").exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path.parent))
                repo = git.Repo.init(tmp, bare=True)
                repo.git.remote("add", "origin", url)
                tmp.rename(path)  # a half-initialised mirror never takes the real name
            repo = git.Repo(path)
            if repo.remotes.origin.url != url:
                repo.git.remote("set-url", "origin", url)

            def attempt(_n: int) -> None:
                try:
                    repo.git.fetch("origin", f"+refs/heads/{branch}:refs/heads/{branch}", "--prune", "--no-tags", env=env)
                except git.GitCommandError as exc:
                    if not transient(exc):
                        raise
                    raise Retryable(scrub(_last_line(exc), credentials)) from exc

            try:
                retry(attempt, FETCH_POLICY, operation=f"source {name}", on_retry=_LOG_RETRY)
            except GaveUp as gave:
                if isinstance(gave.__cause__, git.GitCommandError):
                    raise gave.__cause__ from None
                raise
            return repo
        except git.GitCommandError as exc:
            raise GitError(
                f"fetching branch {branch!r} of source {name!r} from {scrub(url)} failed: "
                f"{scrub(str(exc.stderr).strip(), credentials)[-400:]}",
                fix="check the URL, the branch and the credentials (password_env/password_file), and that the server is up",
            ) from exc

    def resolve(self, repo: git.Repo, branch: str, revision: str = "") -> str:
        want = revision or f"refs/heads/{branch}"
        try:
            return str(repo.git.rev_parse("--verify", f"{want}^{{commit}}"))
        except git.GitCommandError as exc:
            what = f"revision {revision}" if revision else f"branch {branch}"
            raise GitError(f"{what} not found in {repo.git_dir}", fix="check the revision/branch in rebuild.yaml") from exc

    def checkout(
        self, name: str, url: str, branch: str, revision: str = "", credentials: tuple[str, str] | None = None
    ) -> Checkout:
        """Fetch, resolve and extract; an already extracted commit is reused."""
        repo = self.fetch(name, url, branch, credentials)
        sha = self.resolve(repo, branch, revision)
        dest = StateLayout(self.root).checkout(name, sha)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:8]}-", dir=dest.parent))
            try:
                with tempfile.TemporaryFile() as fh:
                    repo.archive(fh, sha, format="tar")
                    fh.seek(0)
                    with tarfile.open(fileobj=fh) as tar:
                        tar.extractall(tmp, filter="data")  # refuses absolute paths and links out of the tree
                tmp.rename(dest)
            except tarfile.FilterError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                member = getattr(getattr(exc, "tarinfo", None), "name", "?")
                target = getattr(getattr(exc, "tarinfo", None), "linkname", "")
                raise GitError(
                    f"source {name} at {sha[:12]}: {member} is a link to {target or 'a path'} outside the repository; "
                    "nothing was applied",
                    fix=f"remove or replace the link {member} in git",
                ) from exc
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        committed = int(repo.commit(sha).committed_date)
        return Checkout(name, url, branch, sha, dest, committed)
