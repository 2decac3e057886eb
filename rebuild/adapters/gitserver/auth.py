"""HTTP basic-auth credentials and the git environments that carry them.

Shared by the server (which checks them) and every git client (which sends them through
``GIT_CONFIG_*`` variables, never argv or a URL); the password never appears in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from dataclasses import dataclass

from rebuild.core.errors import GitError

ENV_USERNAME = "REBUILD_GIT_USERNAME"
ENV_PASSWORD = "REBUILD_GIT_PASSWORD"  # the variable's name, not a secret


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
