"""The GitHub client (github.com and Enterprise Server): GitHub's own rate-limit answers included."""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx

from rebuild.adapters.forge.base import PullRequest, _Call, _HttpForge, _pull_request, _q
from rebuild.core.retry import RetryPolicy, parse_retry_after

GITHUB_API = "https://api.github.com"


class GitHubForge(_HttpForge):
    """GitHub (github.com or Enterprise Server ``https://<host>/api/v3``) REST API 2022-11-28.

    Source: docs.github.com "REST API endpoints for pull requests" (List: ``state``, ``head``
    as ``user:ref-name``, ``per_page`` <= 100; Create: ``title``, ``head``, ``base``, ``body``;
    Update: PATCH ``/pulls/{pull_number}`` with ``title``, ``body``) and "Rate limits for the
    REST API" (403 or 429 with ``retry-after``, or ``x-ratelimit-remaining: 0`` until
    ``x-ratelimit-reset``). Auth: ``Authorization: Bearer <token>``. Not exercised against
    the real service in this repository's tests.

    Keyword-only, so ``api_url`` can default to github.com while coming first, as in the config.
    """

    kind = "github"
    page_size = 100

    def __init__(
        self,
        *,
        api_url: str = GITHUB_API,
        token: str,
        owner: str,
        repo: str,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_url, token, f"{owner}/{repo}", policy=policy, transport=transport)
        self.owner, self.name = owner, repo
        self._pulls = f"/repos/{_q(owner)}/{_q(repo)}/pulls"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def _list_call(self, page: int, head: str | None = None) -> _Call:
        params = [("state", "open"), ("per_page", str(self.page_size)), ("page", str(page))]
        if head is not None:  # exact match on the server: owner:branch
            params.insert(1, ("head", f"{self.owner}:{head}"))
        return _Call("list open pull requests", "GET", self._pulls, tuple(params))

    def _create_call(self, head: str, base: str, title: str, body: str) -> _Call:
        return _Call("create pull request", "POST", self._pulls, json={"title": title, "head": head, "base": base, "body": body})

    def _update_call(self, number: int, title: str, body: str) -> _Call:
        return _Call(f"update pull request #{number}", "PATCH", f"{self._pulls}/{number}", json={"title": title, "body": body})

    def _get_call(self, number: int) -> _Call:
        return _Call(f"get pull request #{number}", "GET", f"{self._pulls}/{number}")

    def _same_repo(self, raw: dict[str, Any]) -> bool:
        head_repo = ((raw.get("head") or {}).get("repo") or {}).get("full_name")
        return head_repo is None or str(head_repo).lower() == f"{self.owner}/{self.name}".lower()

    def _rate_limit(self, resp: httpx.Response) -> tuple[bool, float | None]:
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        exhausted = resp.headers.get("x-ratelimit-remaining") == "0"
        if resp.status_code in (403, 429) and (retry_after is not None or exhausted):
            if retry_after is None:
                try:
                    retry_after = max(0.0, float(resp.headers.get("x-ratelimit-reset", "")) - time.time())
                except ValueError:
                    retry_after = None
            return True, retry_after
        return super()._rate_limit(resp)

    def _parse(self, raw: dict[str, Any]) -> PullRequest:
        return _pull_request(raw, merged=bool(raw.get("merged_at") or raw.get("merged")))
