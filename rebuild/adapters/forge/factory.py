"""A forge client from ``capture.forge`` (kind, url, repo), its values checked and named in errors."""

from __future__ import annotations

import urllib.parse

import httpx2 as httpx

from rebuild.adapters.forge.base import log
from rebuild.adapters.forge.gitea import GiteaForge
from rebuild.adapters.forge.github import GITHUB_API, GitHubForge
from rebuild.adapters.forge.gitlab import GITLAB_URL, GitLabForge
from rebuild.adapters.git import scrub
from rebuild.core.errors import ConfigError
from rebuild.core.retry import RetryPolicy


def forge_from_config(
    kind: str,
    url: str,
    repo: str,
    token: str,
    *,
    policy: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> GiteaForge | GitHubForge | GitLabForge:
    """A client from ``capture.forge`` (kind, url, repo) and a token the caller read from an env var or file.

    ``url``: Gitea, the server URL; GitHub, the API URL (empty or https://github.com ->
    https://api.github.com; a bare Enterprise host gets ``/api/v3``); GitLab, the server URL
    (empty -> https://gitlab.com). ``repo``: owner/name (GitLab: the full project path).
    """
    where = "capture.forge"
    if not token:
        raise ConfigError(f"{where}: the forge token is empty", fix="set capture.forge.token_env or token_file")
    parts = [p for p in repo.strip("/").split("/") if p]
    if len(parts) < 2 or (kind != "gitlab" and len(parts) != 2):
        raise ConfigError(
            f"{where}.repo {repo!r} must be owner/name (GitLab: group/.../project)", fix="e.g. `repo: platform/gitops`"
        )
    url = url.strip()
    if url:
        split = urllib.parse.urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ConfigError(f"{where}.url {scrub(url)!r} is not an http(s) URL", fix="e.g. `url: https://gitea.example.com`")
        if split.username or split.password:
            raise ConfigError(
                f"{where}.url contains credentials", fix="remove them; the token comes from token_env or token_file"
            )
        if split.scheme == "http" and split.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("%s.url %s is plain http: the forge token crosses the network unencrypted", where, url)
    if kind == "gitea":
        if not url:
            raise ConfigError(f"{where}.url is required for gitea", fix="e.g. `url: https://gitea.example.com`")
        return GiteaForge(url, token, parts[0], parts[1], policy=policy, transport=transport)
    if kind == "github":
        api = url.rstrip("/") or GITHUB_API
        split = urllib.parse.urlsplit(api)
        if split.hostname in ("github.com", "www.github.com"):
            api = GITHUB_API
        elif split.hostname != "api.github.com" and split.path in ("", "/"):
            api = f"{api}/api/v3"  # GitHub Enterprise Server serves the REST API under /api/v3
        return GitHubForge(api_url=api, token=token, owner=parts[0], repo=parts[1], policy=policy, transport=transport)
    if kind == "gitlab":
        return GitLabForge(url or GITLAB_URL, token, "/".join(parts), policy=policy, transport=transport)
    raise ConfigError(f"{where}.kind {kind!r} is not supported", fix="use gitea, github or gitlab")
