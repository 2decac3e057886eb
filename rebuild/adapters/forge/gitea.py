"""The Gitea (and Forgejo) client: the forge rebuild's tests run against for real."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from rebuild.adapters.forge.base import PullRequest, _Call, _HttpForge, _pull_request, _q
from rebuild.core.retry import RetryPolicy


class GiteaForge(_HttpForge):
    """Gitea (and Forgejo) REST API v1, the forge tested for real here.

    Source: Gitea's Swagger (``/swagger.v1.json``; operations repoListPullRequests,
    repoCreatePullRequest, repoGetPullRequest, repoEditPullRequest), checked against the
    Gitea 1.26 that the toolchain builds. Auth: ``Authorization: token <token>``.
    """

    kind = "gitea"
    page_size = 50  # Gitea's default [api] MAX_RESPONSE_ITEMS

    def __init__(
        self,
        base_url: str,
        token: str,
        owner: str,
        repo: str,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        root = root.removesuffix("/api/v1")
        super().__init__(f"{root}/api/v1", token, f"{owner}/{repo}", policy=policy, transport=transport)
        self.owner, self.name = owner, repo
        self._pulls = f"/repos/{_q(owner)}/{_q(repo)}/pulls"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}

    def _list_call(self, page: int, head: str | None = None) -> _Call:
        # Gitea's list has no head filter (only base_branch, and only since 1.23): filter here.
        params = (("state", "open"), ("page", str(page)), ("limit", str(self.page_size)))
        return _Call("list open pull requests", "GET", self._pulls, params)

    def _create_call(self, head: str, base: str, title: str, body: str) -> _Call:
        return _Call("create pull request", "POST", self._pulls, json={"head": head, "base": base, "title": title, "body": body})

    def _update_call(self, number: int, title: str, body: str) -> _Call:
        return _Call(f"update pull request #{number}", "PATCH", f"{self._pulls}/{number}", json={"title": title, "body": body})

    def _get_call(self, number: int) -> _Call:
        return _Call(f"get pull request #{number}", "GET", f"{self._pulls}/{number}")

    def _same_repo(self, raw: dict[str, Any]) -> bool:
        head, base = raw.get("head") or {}, raw.get("base") or {}
        head_repo, base_repo = head.get("repo_id"), base.get("repo_id")
        return head_repo is None or base_repo is None or head_repo == base_repo

    def _parse(self, raw: dict[str, Any]) -> PullRequest:
        return _pull_request(raw, merged=bool(raw.get("merged")))
